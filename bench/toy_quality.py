"""Quality of the bundled toy models, read by the toy world's analyzer on held-out prompts.

    .venv/bin/python bench/toy_quality.py [--n 100] [--tasks text_to_image,captioning,...] [--models DIR]

Each task runs workflows through the studio's executor with the shipped models (models/checkpoints/toy-sd,
toy-ip2p, models/controlnet/toy-edges, models/captioners/toy-blip) on scenes of the held-out split, with
fixed seeds (see training/quality.py), and prints one JSON line per task with its figures, its goals and
whether they are met. Exit status 0 when every goal is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    from training.quality import GOALS, LIMITS, TASKS, Studio, goals_met

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100, help="held-out scenes (or edits) per task")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: " + ", ".join(TASKS))
    parser.add_argument(
        "--models", type=Path, default=None, help="the models folder to measure (default: models/)"
    )
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    studio = Studio(models=args.models)
    all_met = True
    for task in tasks:
        start = time.perf_counter()
        figures = TASKS[task](studio, args.n)
        met = goals_met(task, figures)
        all_met &= met
        figures.update(
            at_least=GOALS.get(task, {}),
            at_most=LIMITS.get(task, {}),
            met=met,
            seconds=round(time.perf_counter() - start, 1),
        )
        print(json.dumps(figures), flush=True)
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
