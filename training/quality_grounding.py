"""How well a toy SD's cross-attention ties words to places: the probe behind Attend-and-Excite's
limits on the toy model (docs/toy-models.md).

    .venv/bin/python -m training.quality_grounding --checkpoint models/checkpoints/toy-sd --n 50

For held-out two-shape scenes, each caption's picture is encoded by the model's VAE, noised at a few
timesteps, and denoised once by the UNet with its cross-attention recorded
(:mod:`training.grounding`). For each shape's color and kind words the probe reports:

- ``inside``: the share of the word's attention (averaged over heads, then over layers) that falls in
  the cells its shape touches; ``even`` is that share for attention spread evenly over the cells, so
  ``inside`` near ``even`` means the word does not know where its shape is;
- ``peak``: the word's highest attention probability at any cell of the highest-resolution layers,
  what Attend-and-Excite strengthens (an even spread over 77 tokens gives 0.013).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

TIMESTEPS = (250, 500, 750)


@torch.no_grad()
def grounding_probe(
    folder: Path, n: int = 50, seed: int = 8, timesteps: tuple[int, ...] = TIMESTEPS
) -> dict[str, Any]:
    """The probe's figures for the exported SD folder ``folder`` (see the module's docstring)."""
    from diffusers import DDPMScheduler

    from toyworld import caption, render
    from training.frozen import load_frozen_sd, to_tensor
    from training.grounding import (
        TokenCounter,
        caption_groundings,
        inside_shares,
        masks_at,
        record_cross_attention,
        scene_targets,
        token_maps,
    )
    from training.quality import held_out_scenes
    from training.sd import SD_SCHEDULER_CONFIG

    device = torch.device("cpu")
    sd = load_frozen_sd(Path(folder), device)
    store = record_cross_attention(sd.unet)
    count = TokenCounter(sd.tokens.tokenizer)
    scenes = held_out_scenes(n, seed, shapes=2)
    captions = [caption(s) for s in scenes]
    targets, weights = scene_targets(scenes, captions, count)
    kinds = torch.zeros_like(weights)
    for b, (scene, text) in enumerate(zip(scenes, captions, strict=True)):
        for position, _ in caption_groundings(scene, text, count, attributes=("kind",)):
            kinds[b, position] = 1.0
    latents = sd.vae.encode(to_tensor([render(s) for s in scenes])).latent_dist.mode() * sd.factor
    states = sd.text_states(captions, device)
    scheduler = DDPMScheduler.from_config(SD_SCHEDULER_CONFIG)
    generator = torch.Generator().manual_seed(seed)
    inside, even, peak = [], [], []
    for t in timesteps:
        noise = torch.randn(latents.shape, generator=generator)
        steps = torch.full((n,), t, dtype=torch.long)
        store.start()
        sd.unet(scheduler.add_noise(latents, noise, steps), steps, states)
        maps = store.take()
        inside.append(torch.stack(inside_shares(maps, targets)).mean(0))
        even.append(torch.stack([masks_at(targets, m.shape[1]).mean(-1) for m in maps]).mean(0))
        finest = max(m.shape[1] for m in maps)
        peak.append(torch.stack([token_maps(m, n).amax(-1) for m in maps if m.shape[1] == finest]).mean(0))

    def average(values: list[torch.Tensor], chosen: torch.Tensor) -> float:
        stacked = torch.stack(values).mean(0)
        return round(float((stacked * chosen).sum() / chosen.sum()), 4)

    return {
        "task": "grounding",
        "checkpoint": str(folder),
        "n": n,
        "timesteps": list(timesteps),
        "inside": average(inside, weights),
        "even": average(even, weights),
        "inside_kind": average(inside, kinds),
        "peak_kind": average(peak, kinds),
        "peak_color": average(peak, weights - kinds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.quality_grounding", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=Path("models/checkpoints/toy-sd"))
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    np.random.seed(args.seed)
    print(json.dumps(grounding_probe(args.checkpoint, args.n, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
