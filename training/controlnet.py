"""Train an edge ControlNet for the toy SD: given white outlines on black, the SD draws shapes there.

``python -m training.controlnet --out runs/controlnet --sd models/checkpoints/toy-sd --steps 1500``
(resumes when ``runs/controlnet`` holds a state; ``--max-minutes`` saves and stops; ``--measure``
prints seconds per step) and then ``--export models/controlnet/toy-edges`` writes the diffusers folder
with a model card. The ControlNet starts as a copy of the SD UNet's encoder (``ControlNetModel.from_unet``,
zero convolutions at the outputs) and learns, with the SD frozen, to predict the noise of the step's
pictures from their edge maps. Half the hints are the toy world's own outlines
(:func:`toyworld.edges`), half OpenCV's Canny edges of the picture as the studio's CannyEdges node makes
them, so both work as hints; 30% of captions are dropped so the edges alone carry the shapes.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.frozen import DEFAULT_SD, FrozenSD, load_frozen_sd, to_tensor
from training.loop import prepare, train
from training.run_folder import read_config, read_state, recent_loss, write_config
from training.script import (
    add_common_args,
    count_parameters,
    halve_weights,
    measure_step,
    model_config,
    settings,
    staging,
    swap_in,
)
from training.seeding import step_generator
from training.toy_data import toy_batch

DEFAULT_EXPORT = Path("models/controlnet/toy-edges")


def canny(image: np.ndarray) -> np.ndarray:
    """Canny edges (100, 200) of an RGB uint8 picture, as the studio's CannyEdges node draws them."""
    from imaging.edges import canny_edges

    return canny_edges(np.asarray(image, dtype=np.float32) / 255.0, 100, 200)


def hints(scenes: list[Any], pictures: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One edge map per scene (uint8, (N, H, W)): the world's outlines or Canny's, half and half."""
    from toyworld import edges

    return np.stack(
        [edges(s) if rng.random() < 0.5 else canny(p) for s, p in zip(scenes, pictures, strict=True)]
    )


def build_controlnet(unet: Any, embedding: tuple[int, ...]) -> Any:
    """A ControlNet copied from the UNet's encoder; the hint embedding shrinks pictures by
    2 ** (len(embedding) - 1), which must match the VAE's factor."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embedding)


def controlnet_step(controlnet: Any, sd: FrozenSD, args: argparse.Namespace, device: torch.device) -> Any:
    from toyworld import render

    def step_fn(step: int) -> dict[str, float]:
        batch = toy_batch(step, args.batch, args.seed, args.size, background_p=0.5, drop_p=args.drop)
        rng = np.random.default_rng([args.seed, step, 1])
        hint = to_tensor(hints(batch.scenes, [render(s) for s in batch.scenes], rng), low=0.0).to(device)
        generator = step_generator(args.seed, step, device)
        latents = sd.latents(batch.images.to(device), generator)
        noisy, noise, timesteps = sd.noised(latents, generator)
        states = sd.text_states(batch.captions, device)
        down, mid = controlnet(
            noisy, timesteps, encoder_hidden_states=states, controlnet_cond=hint, return_dict=False
        )
        prediction = sd.unet(
            noisy,
            timesteps,
            states,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
        loss = F.mse_loss(prediction, noise)
        loss.backward()
        return {"loss": loss.item()}

    return step_fn


# --------------------------------------------------------------------------- evaluation


def edge_iou(generated: np.ndarray, hint: np.ndarray, tolerance: int = 1) -> float:
    """IoU of the generated picture's outlines with the hint's, each dilated by ``tolerance`` pixels
    (an outline one pixel off is still on the edge). Outlines of the picture are read from the analyzer's
    shape masks, so a faint or wrongly colored shape still counts if it is there."""
    import cv2

    from toyworld.analyzer import foreground

    mask = foreground(generated).astype(np.uint8)
    inner = cv2.erode(mask, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    outline = (mask - inner) > 0
    kernel = np.ones((2 * tolerance + 1,) * 2, np.uint8)
    a = cv2.dilate(outline.astype(np.uint8), kernel) > 0
    b = cv2.dilate((hint > 127).astype(np.uint8), kernel) > 0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def export(controlnet: Any, run: Path, out: Path) -> Path:
    """Write the ControlNet folder (float16 weights) and its model card to ``out``, swapped in once
    it loads back as the trained model (to float16 rounding)."""
    from diffusers import ControlNetModel

    out = Path(out)
    tmp = staging(out)
    controlnet = controlnet.to("cpu").eval()
    controlnet.save_pretrained(str(tmp), safe_serialization=True)
    halve_weights(tmp)
    back = ControlNetModel.from_pretrained(str(tmp), local_files_only=True, torch_dtype=torch.float32)
    ours, theirs = controlnet.state_dict(), back.state_dict()
    if ours.keys() != theirs.keys() or any(not torch.allclose(ours[k], theirs[k], atol=1e-2) for k in ours):
        raise RuntimeError(f"{tmp} does not load back as the trained ControlNet")
    (tmp / "README.md").write_text(model_card(controlnet, run))
    return swap_in(tmp, out)


def model_card(controlnet: Any, run: Path) -> str:
    config = read_config(run)
    state = read_state(run)
    steps_done = state.step if state else 0
    loss = recent_loss(run)
    embedding = list(controlnet.config.conditioning_embedding_out_channels)
    minutes = (state.elapsed if state else 0) / 60
    return "\n".join(
        [
            "# toy-edges: an edge ControlNet for toy-sd",
            "",
            "A diffusers `ControlNetModel` for the toy world's SD (`models/checkpoints/toy-sd`). The hint is",
            "white outlines on black (the toy world's own, or the studio's CannyEdges node) and the SD draws",
            "its shapes on them. It knows nothing but the toy world.",
            "",
            "## How it was made",
            "",
            "- Copied from toy-sd's UNet encoder (`ControlNetModel.from_unet`, zero convolutions at the",
            f"  outputs), {count_parameters(controlnet):,} parameters, hint embedding channels {embedding};",
            "  weights stored as float16.",
            "- Trained with the SD frozen, on toy-world training scenes (held-out combinations never seen);",
            f"  half the hints are the world's outlines, half Canny edges; {config['drop']:.0%} of captions",
            f"  dropped. Epsilon MSE, AdamW lr {config['lr']} ({config['warmup']} warm-up steps), batch",
            f"  {config['batch']}, seed {config['seed']}: {state.step if state else 0} steps in {minutes:.1f}"
            f" minutes on {config['device']} ({config['threads']} threads)"
            + (f"; mean loss of the last 100 steps {loss:.4f}." if loss is not None else "."),
            f"- Exported {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
            "",
            "## Reproducing it",
            "",
            "```bash",
            f"python -m training.controlnet --out runs/controlnet --sd {config['sd']}"
            f" --steps {steps_done} --batch {config['batch']} --lr {config['lr']}"
            f" --seed {config['seed']} --drop {config['drop']}"
            " --export models/controlnet/toy-edges",
            "```",
            "",
            "`python bench/toy_quality.py` measures it: the IoU of generated pictures' outlines with",
            "held-out hints.",
            "",
        ]
    )


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.controlnet", description=__doc__)
    add_common_args(parser, steps=1500, batch=32, lr=5e-4)
    parser.add_argument("--sd", type=Path, default=DEFAULT_SD, help="the exported toy SD folder")
    parser.add_argument(
        "--embedding",
        type=lambda s: tuple(int(c) for c in s.split(",")),
        default=(16, 32, 32),
        help="hint embedding channels (3 entries for a VAE that shrinks by 4)",
    )
    parser.add_argument("--drop", type=float, default=0.3, help="caption dropout")
    parser.add_argument(
        "--export", type=Path, default=None, help="write the diffusers folder here at the end"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = prepare(args)
    sd = load_frozen_sd(args.sd, device)
    controlnet = build_controlnet(copy.deepcopy(sd.unet).cpu(), args.embedding).to(device).train()
    controlnet.requires_grad_(True)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=args.lr, weight_decay=0.0)
    step_fn = controlnet_step(controlnet, sd, args, device)
    if args.measure:
        seconds = measure_step(step_fn, optimizer)
        print(
            json.dumps(
                {
                    "model": "controlnet",
                    "parameters": count_parameters(controlnet),
                    "seconds_per_step": round(seconds, 3),
                }
            )
        )
        return 0
    run = Path(args.out)
    config = {
        **settings(args),
        "export": str(args.export),
        "models": {"controlnet": model_config(controlnet)},
    }
    write_config(run, config, read_state(run) is not None)
    state = train(args, {"controlnet": controlnet}, optimizer, step_fn)
    print(f"ControlNet ({state.status}, step {state.step}) in {run}")
    if args.export:
        folder = export(controlnet, run, args.export)
        print(f"exported {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
