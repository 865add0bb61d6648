"""The toy world as a training stream: batches that depend only on (seed, step), drawn from the
"train" split only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, H, W) float32 in [-1, 1]
    captions: list[str]
    scenes: list[Any]


def toy_batch(
    step: int,
    batch: int,
    seed: int,
    size: int = 32,
    *,
    background_p: float = 0.5,
    drop_p: float = 0.0,
    bare_p: float = 0.0,
) -> Batch:
    """Step ``step``'s batch of toy-world training pictures: item i is drawn from the generator seeded
    by (seed, step, i), from the "train" split only (held-out combinations never appear). The caption
    names the background with probability ``background_p`` and is "" with probability ``drop_p``
    (caption dropout for classifier-free guidance); with ``bare_p`` > 0 a caption leaves the places out
    ("a red circle and a blue square") with that probability (drawn after the others, so the stream of a
    run without it stays as it was)."""
    from toyworld import caption, random_scene, render, split_of

    images, captions, scenes = [], [], []
    for i in range(batch):
        rng = np.random.default_rng([seed, step, i])
        scene = random_scene(rng, size=size, split="train")
        if split_of(scene) != "train":  # random_scene guarantees it; a training set must never leak
            raise AssertionError("a held-out scene reached the training stream")
        with_background = bool(rng.random() < background_p)
        dropped = rng.random() < drop_p
        bare = bare_p > 0 and rng.random() < bare_p
        text = "" if dropped else caption(scene, background=with_background, positions=not bare)
        images.append(render(scene))
        captions.append(text)
        scenes.append(scene)
    array = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return Batch(torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), captions, scenes)


def toy_images(n: int, seed: int, size: int = 32, split: str = "train") -> torch.Tensor:
    """``n`` pictures of one split as a (n, 3, H, W) tensor in [-1, 1] (for evaluation and calibration)."""
    from toyworld import dataset

    array = np.stack([image for image, _, _ in dataset(n, seed=seed, size=size, split=split)])
    return torch.from_numpy(array.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()
