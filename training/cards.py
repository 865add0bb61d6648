"""What the toy models' exporters share: reading a run's trained weights back, checking an exported
folder's weights against them, scoring pictures with the analyzer, and the lines of a model card
that every card has (the weights, the evaluation table, paths as commands show them)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.run_folder import load_module_weights

#: The analyzer's figures a card's evaluation table shows, in order.
SCORE_KEYS = ("kind", "color", "position", "all", "exact", "count")


def shown(path: str | Path) -> str:
    """A path as the commands in a model card show it: relative to the working folder when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_trained(
    run: Path, config: dict[str, Any], modules: dict[str, torch.nn.Module], use_ema: bool
) -> None:
    """Load each of ``modules`` (run name -> module) with the run's latest weights: the EMA copies when
    asked for and the run kept them. Records which in ``config["exported_weights"]``."""
    ema = use_ema and bool(config.get("ema"))
    for name, module in modules.items():
        module.load_state_dict(load_module_weights(run, f"ema_{name}" if ema else name))
        module.eval()
    config["exported_weights"] = "EMA" if ema else "raw"


def same_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> bool:
    """Whether ``theirs`` (loaded from an exported folder) holds ``ours`` as float16 stores them."""
    a, b = ours.state_dict(), theirs.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k].half().float(), b[k].float()) for k in a)


def split_scores(
    n: int,
    seed: int,
    draw: Callable[[list[str], int], list[np.ndarray]],
    splits: Sequence[str],
    size: int = 32,
) -> dict[str, dict[str, float]]:
    """For each split, ``n`` scenes' captions drawn by ``draw(captions, seed)`` and scored by the toy
    world's analyzer: {split: {figure: share}} over :data:`SCORE_KEYS`."""
    from toyworld import caption, random_scene, score

    results = {}
    for split in splits:
        scenes = [random_scene(np.random.default_rng([seed, i]), size=size, split=split) for i in range(n)]
        images = draw([caption(s) for s in scenes], seed)
        scores = [score(s, image) for s, image in zip(scenes, images, strict=True)]
        results[split] = {key: round(float(np.mean([s[key] for s in scores])), 3) for key in SCORE_KEYS}
    return results


def weights_line(config: dict[str, Any]) -> str:
    """The card's "Weights" bullet: raw or EMA, float16, when exported."""
    ema = config["exported_weights"] == "EMA"
    return (
        f"- **Weights**: {config['exported_weights']}"
        + (f" (EMA decay {config['ema']})" if ema else "")
        + f", stored as float16; exported {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
    )


def score_table(evaluation: dict[str, Any], splits: Sequence[str] = ("train", "test")) -> list[str]:
    """The card's evaluation table: one row of the analyzer's figures per split."""
    lines = ["| split | " + " | ".join(SCORE_KEYS) + " |", "|---" * (len(SCORE_KEYS) + 1) + "|"]
    for split in splits:
        lines.append(f"| {split} | " + " | ".join(str(evaluation[split][k]) for k in SCORE_KEYS) + " |")
    return [*lines, ""]
