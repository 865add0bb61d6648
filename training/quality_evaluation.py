"""The evaluation metrics on the toy world: the bundled toy-sd against a deliberately degraded copy.

The same held-out prompts and seeds are drawn by both models through the studio's txt2img workflow
and measured against rendered held-out scenes with every metric of ``evaluation/`` (FID, KID, CMMD,
precision and recall, CLIP score, the analyzer). A metric that is worth its name ranks the degraded
model below the bundled one. ``bench/evaluation.py`` prints the figures; tests/test_evaluation.py
checks the ranking at a small size.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
METRICS = ("fid", "kid", "cmmd", "precision_recall", "clip", "analyzer")


def degraded_models(folder: Path, noise: float = 0.5, seed: int = 0) -> Path:
    """A models folder holding a copy of toy-sd whose UNet tensors each got Gaussian noise of
    ``noise`` x their std."""
    import torch
    from safetensors.torch import load_file, save_file

    target = folder / "checkpoints" / "toy-sd"
    shutil.copytree(REPO / "models" / "checkpoints" / "toy-sd", target)
    weights = target / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    generator = torch.Generator().manual_seed(seed)
    for key, tensor in state.items():
        if tensor.is_floating_point() and tensor.numel() > 1:
            t = tensor.float()
            state[key] = (t + noise * t.std() * torch.randn(t.shape, generator=generator)).to(tensor.dtype)
    save_file(state, str(weights))
    return folder


def generate(studio: Any, prompts: list[str], batch: int, steps: int, seed: int = 100) -> list[np.ndarray]:
    """``batch`` pictures of each prompt (uint8), prompt k with seed ``seed + k``."""
    from training.quality import txt2img_nodes

    pictures = []
    for i, prompt in enumerate(prompts):
        nodes = txt2img_nodes(prompt, seed=seed + i)
        nodes["s"]["inputs"]["steps"] = steps
        nodes["lat"]["inputs"]["batch_size"] = batch
        images = studio.run(nodes, seed=seed + i)["show"]["images"]
        pictures += [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in images]
    return pictures


def compare(
    workdir: Path, prompts: int, batch: int, steps: int, references: int, features: Any = None
) -> dict[str, dict[str, Any]]:
    """{"bundled": metrics, "degraded": metrics}: each model's figures (evaluation.Evaluation.metrics)
    on ``prompts`` held-out captions x ``batch`` pictures against ``references`` rendered scenes."""
    from evaluation.evaluate import evaluate
    from evaluation.features import load_features
    from evaluation.images import from_arrays
    from toyworld.world import caption, render
    from training.quality import Studio, held_out_scenes

    model = features if features is not None else load_features()
    texts = [caption(s) for s in held_out_scenes(prompts, seed=21)]
    prompt_of = {k * batch + j: p for k, p in enumerate(texts) for j in range(batch)}
    reference = from_arrays([render(s) for s in held_out_scenes(references, seed=22)])
    results = {}
    for name, models in (("bundled", None), ("degraded", degraded_models(workdir / "models"))):
        studio = Studio(models=models, folder=workdir / name)
        images = from_arrays(generate(studio, texts, batch, steps), prompt_of)
        results[name] = evaluate(images, reference, METRICS, model).metrics
    return results
