"""The evaluation metrics on the toy world: do they rank a degraded toy model below the bundled one?

    .venv/bin/python bench/evaluation.py [--prompts 32] [--batch 4] [--steps 20] [--references 128]

Draws the same held-out prompts and seeds with the bundled toy-sd and with a copy whose UNet
tensors got Gaussian noise (0.5 x each tensor's std), measures both against rendered held-out
scenes with every metric (toy CLIP features), and prints one JSON line per metric: both values,
their ratio (degraded / bundled) and whether the metric ranks the models the right way round.
Exit status 1 when one does not, recall excepted: recall measures variety, and a model drawing
noisy pictures can cover more of the reference's spread than a good one (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: (metric, figure, whether higher is better, whether it must rank the degraded model lower)
FIGURES = (
    ("fid", "value", False, True),
    ("kid", "value", False, True),
    ("cmmd", "value", False, True),
    ("precision_recall", "precision", True, True),
    ("precision_recall", "recall", True, False),
    ("clip", "value", True, True),
    ("analyzer", "value", True, True),
)


def main(argv: list[str] | None = None) -> int:
    from training.quality_evaluation import compare

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=32, help="held-out prompts")
    parser.add_argument("--batch", type=int, default=4, help="pictures per prompt")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--references", type=int, default=128, help="rendered reference scenes")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        results = compare(Path(workdir), args.prompts, args.batch, args.steps, args.references)
    right = True
    for metric, figure, higher, judged in FIGURES:
        good = results["bundled"].get(metric, {}).get(figure)
        bad = results["degraded"].get(metric, {}).get(figure)
        if good is None or bad is None:
            print(json.dumps({"metric": metric, "figure": figure, "skipped": True}), flush=True)
            continue
        ranks_right = good > bad if higher else good < bad
        right &= ranks_right or not judged
        print(
            json.dumps(
                {
                    "metric": metric,
                    "figure": figure,
                    "bundled": round(good, 4),
                    "degraded": round(bad, 4),
                    "ratio_degraded_to_bundled": round(bad / good, 3) if good else None,
                    "higher_is_better": higher,
                    "ranks_right": ranks_right,
                    "judged": judged,
                    "pictures_per_model": args.prompts * args.batch,
                    "references": args.references,
                }
            ),
            flush=True,
        )
    print(json.dumps({"seconds": round(time.perf_counter() - start, 1)}), flush=True)
    return 0 if right else 1


if __name__ == "__main__":
    sys.exit(main())
