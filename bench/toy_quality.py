"""Quality of the bundled toy models, read by the toy world's analyzer on held-out prompts.

    .venv/bin/python bench/toy_quality.py [--n 100] [--tasks text_to_image,captioning,...] [--models DIR]

Each task runs workflows through the studio's executor with the shipped models (models/checkpoints/toy-sd,
toy-sd3, toy-ip2p, models/controlnet/toy-edges, models/captioners/toy-blip) on scenes of the held-out
split, with fixed seeds (see training/quality.py), and prints one JSON line per task with its figures, its
goals and whether they are met. Exit status 0 when every goal is met, 1 otherwise.

``text_to_image_dit`` runs the example workflow ``workflows/txt2img-sd3.json`` (toy-sd3, the SD3-style
MMDiT) with the held-out captions and seeds of ``text_to_image`` (toy-sd's UNet), so the two lines compare
the models side by side on the same prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DIT_EXAMPLE = REPO / "workflows" / "txt2img-sd3.json"


def dit_nodes(prompt: str, seed: int) -> dict[str, Any]:
    """The toy-sd3 example workflow with ``prompt`` and ``seed``, its picture shown instead of saved."""
    nodes = json.loads(DIT_EXAMPLE.read_text())["nodes"]
    nodes["pos"]["inputs"]["text"] = prompt
    nodes["s"]["inputs"]["seed"] = seed
    nodes["show"] = {"type": "PreviewImage", "inputs": {"images": nodes.pop("save")["inputs"]["images"]}}
    return nodes


def text_to_image_dit(studio: Any, n: int, seed: int = 1) -> dict[str, Any]:
    """``text_to_image`` for toy-sd3: the same held-out captions and seeds, through the DiT example."""
    from toyworld import caption
    from training.quality import attribute_scores, held_out_scenes

    scenes = held_out_scenes(n, seed)
    pictures = [studio.picture(dit_nodes(caption(s), seed + i), seed + i) for i, s in enumerate(scenes)]
    return {"task": "text_to_image_dit", "n": n, **attribute_scores(list(zip(scenes, pictures, strict=True)))}


#: Tasks kept in modules of their own: task name -> ("module:function", {figure: goal}). Each function
#: takes (studio, n) like training.quality's tasks and returns its figures with "task" and "n".
MORE_TASKS: dict[str, tuple[str, dict[str, float]]] = {
    # boxes at beta 1.0 (as workflows/gligen.json), with regions measured in the same run: "better than
    # regions" is the share of shapes with kind, color and cell all right, by at least 1 in 100
    "gligen": ("training.quality_gligen:gligen", {"position": 0.9, "all_vs_regions": 0.01}),
    "regions": ("training.quality_gligen:regions", {}),
    "concept": ("training.quality_concept:concept", {"lora_top_left": 0.7, "embedding_top_left": 0.7}),
    "attend_excite": ("training.quality_attend_excite:attend_excite", {}),
}


def _load(target: str) -> Callable[..., dict[str, Any]]:
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def all_tasks() -> tuple[dict[str, Callable[..., dict[str, Any]]], dict[str, dict[str, float]]]:
    """(task name -> function, task name -> goals): training.quality's, the DiT's (same goals) and
    ``MORE_TASKS``."""
    from training.quality import GOALS, TASKS

    tasks = dict(TASKS)
    at = list(tasks).index("text_to_image") + 1 if "text_to_image" in tasks else len(tasks)
    items = list(tasks.items())
    tasks = dict([*items[:at], ("text_to_image_dit", text_to_image_dit), *items[at:]])
    goals = {**GOALS, "text_to_image_dit": GOALS["text_to_image"]}
    for name, (target, task_goals) in MORE_TASKS.items():
        tasks[name] = lambda studio, n, _target=target: _load(_target)(studio, n)
        goals[name] = task_goals
    return tasks, goals


def main(argv: list[str] | None = None) -> int:
    from training.quality import LIMITS, Studio

    tasks_by_name, goals = all_tasks()

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100, help="held-out scenes (or edits) per task")
    parser.add_argument(
        "--tasks", default=",".join(tasks_by_name), help="comma-separated: " + ", ".join(tasks_by_name)
    )
    parser.add_argument(
        "--models", type=Path, default=None, help="the models folder to measure (default: models/)"
    )
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in tasks_by_name]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(tasks_by_name)}")
    studio = Studio(models=args.models)
    all_met = True
    for task in tasks:
        start = time.perf_counter()
        figures = tasks_by_name[task](studio, args.n)
        met = all(figures[k] >= v for k, v in goals.get(task, {}).items()) and all(
            figures[k] <= v for k, v in LIMITS.get(task, {}).items()
        )
        all_met &= met
        figures.update(
            at_least=goals.get(task, {}),
            at_most=LIMITS.get(task, {}),
            met=met,
            seconds=round(time.perf_counter() - start, 1),
        )
        print(json.dumps(figures), flush=True)
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
