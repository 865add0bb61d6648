"""Train a small SD3-style MMDiT (diffusers ``SD3Transformer2DModel``) with flow matching on toy-world
pictures and captions, on the frozen VAE and the frozen text encoder of the exported toy SD.

The text conditioning is the one the studio builds for an SD3 model without T5 (ComfyUI's way, see
``models/dit_prompts.py``): the toy SD's CLIP text encoder plays both CLIP-L and CLIP-G, so the joint
text sequence is the 77 tokens' penultimate hidden states of each, concatenated (CLIP-L ‖ CLIP-G, no
block of zero T5 tokens), and the pooled vector is the two pooled projections concatenated (the
exported encoders' projections are the identity). Flow matching as SD3 trains: ``x_t = (1 - t) x0 + t
noise``, the target is ``noise - x0``, ``t`` is drawn logit-normal (``--timesteps uniform`` for
uniform) and the model's timestep is ``t * 1000``; 10% of captions are dropped to "" for
classifier-free guidance. Only training-split scenes are seen.

``python -m training.dit --out runs/dit --sd models/checkpoints/toy-sd --steps 4000 --batch 64``
(resumes when ``runs/dit`` holds a state; ``--max-minutes`` saves and stops; Ctrl-C too).
``--measure`` prints the parameters and the seconds per step of the chosen sizes and exits. An EMA copy
of the transformer is kept (``--ema``, 0 for none); export with :mod:`training.export_dit`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from training.loop import prepare, train
from training.run_folder import read_state, write_config
from training.script import add_common_args, count_parameters, measure_step, model_config, settings
from training.sd import MAX_LENGTH, Tokens
from training.seeding import seed_everything, step_generator
from training.toy_data import toy_batch

DEFAULT_SD = Path("models/checkpoints/toy-sd")
#: Sampling settings of the exported scheduler (FlowMatchEulerDiscreteScheduler); ``shift`` is set
#: at export from what was measured to sample best.
FLOW_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 1.0}


def build_transformer(
    hidden: int = 128,
    layers: int = 3,
    head_dim: int = 64,
    text_dim: int = 128,
    pooled_dim: int = 128,
    latent: int = 8,
    channels: int = 4,
) -> Any:
    """An SD3 MMDiT over ``latent`` x ``latent`` latents in patches of 1 (one token per latent pixel),
    ``hidden`` wide (``hidden / head_dim`` heads), with joint attention over text and image tokens."""
    from diffusers import SD3Transformer2DModel

    if hidden % head_dim:
        raise ValueError(f"--hidden {hidden} must be a multiple of --head-dim {head_dim}")
    return SD3Transformer2DModel(
        sample_size=latent,
        patch_size=1,
        in_channels=channels,
        num_layers=layers,
        attention_head_dim=head_dim,
        num_attention_heads=hidden // head_dim,
        joint_attention_dim=text_dim,
        caption_projection_dim=hidden,
        pooled_projection_dim=pooled_dim,
        out_channels=channels,
        pos_embed_max_size=latent,
    )


class FrozenText:
    """The toy SD's text encoder, frozen, as the two CLIPs of an SD3 model without T5: captions ->
    (joint sequences (B, 77, 2 x hidden), pooled (B, 2 x hidden)). A step's captions are encoded
    together; the batch depends only on (seed, step), so a resumed run computes the same numbers."""

    def __init__(self, text_encoder: Any, device: torch.device) -> None:
        self.text_encoder = text_encoder.to(device, torch.float32).eval().requires_grad_(False)
        self.device = device
        self.tokens = Tokens()

    @property
    def width(self) -> int:
        return 2 * int(self.text_encoder.config.hidden_size)

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.text_encoder(self.tokens(captions).to(self.device), output_hidden_states=True)
        hidden = out.hidden_states[-2]  # the penultimate layer, as SD3 with clip_skip None
        pooled = out.pooler_output  # == text_embeds of the exported identity projection
        return torch.cat([hidden, hidden], dim=-1), torch.cat([pooled, pooled], dim=-1)  # CLIP-L ‖ CLIP-G


def load_frozen_parts(folder: Path, device: torch.device) -> tuple[Any, Any]:
    """(VAE, text encoder) of the exported toy SD folder, frozen."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder} is not an exported SD folder (no model_index.json)")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
    return vae.to(device, torch.float32).eval().requires_grad_(False), text_encoder


def flow_times(
    n: int, kind: str, generator: torch.Generator, device: torch.device, mean: float = 0.0, std: float = 1.0
) -> torch.Tensor:
    """``n`` flow times t in (0, 1): logit-normal (SD3's default, weighting the middle) or uniform."""
    if kind == "uniform":
        return torch.rand(n, generator=generator, device=device)
    return torch.sigmoid(torch.randn(n, generator=generator, device=device) * std + mean)


def dit_step(
    transformer: Any, vae: Any, text: FrozenText, args: argparse.Namespace, device: torch.device
) -> Any:
    """The step function: the step's batch as VAE latents x0, noised to ``x_t = (1 - t) x0 + t noise``
    at flow times t; the transformer learns the velocity ``noise - x0``; backward; returns the metrics."""
    factor = float(vae.config.scaling_factor)
    shift = float(vae.config.get("shift_factor") or 0.0)

    def step_fn(step: int) -> dict[str, float]:
        batch = toy_batch(
            step, args.batch, args.seed, args.size, background_p=args.background_p, drop_p=args.drop
        )
        generator = step_generator(args.seed, step, device)
        with torch.no_grad():
            latents = vae.encode(batch.images.to(device)).latent_dist.sample(generator=generator)
            latents = (latents - shift) * factor
        noise = torch.randn(latents.shape, generator=generator, device=device)
        t = flow_times(len(latents), args.timesteps, generator, device)
        tt = t.view(-1, 1, 1, 1)
        noisy = (1.0 - tt) * latents + tt * noise
        embeds, pooled = text(batch.captions)
        prediction = transformer(
            hidden_states=noisy,
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            timestep=t * 1000.0,
        ).sample
        loss = F.mse_loss(prediction, noise - latents)
        loss.backward()
        return {"loss": loss.item()}

    return step_fn


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.dit", description=__doc__)
    add_common_args(parser, steps=6000, batch=64, lr=6e-4)
    parser.add_argument(
        "--sd", type=Path, default=DEFAULT_SD, help="the exported toy SD (its VAE and text encoder, frozen)"
    )
    parser.add_argument("--hidden", type=int, default=128, help="transformer width")
    parser.add_argument("--layers", type=int, default=3, help="transformer (joint) blocks")
    parser.add_argument("--head-dim", type=int, default=64, help="attention head size")
    parser.add_argument(
        "--timesteps", choices=("logit-normal", "uniform"), default="logit-normal", help="flow-time law"
    )
    parser.add_argument(
        "--drop", type=float, default=0.1, help="caption dropout (for classifier-free guidance)"
    )
    parser.add_argument(
        "--background-p", type=float, default=0.5, help="share of captions naming the background"
    )
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay (0: no EMA copy)")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = prepare(args)
    vae, text_encoder = load_frozen_parts(args.sd, device)
    text = FrozenText(text_encoder, device)
    latent = args.size // 2 ** (len(vae.config.block_out_channels) - 1)
    seed_everything(args.seed)
    transformer = build_transformer(
        args.hidden, args.layers, args.head_dim, text.width, text.width, latent, vae.config.latent_channels
    )
    transformer = transformer.to(device).train()
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step_fn = dit_step(transformer, vae, text, args, device)
    if args.measure:
        seconds = measure_step(step_fn, optimizer)
        print(
            json.dumps(
                {
                    "model": "dit",
                    "transformer_parameters": count_parameters(transformer),
                    "hidden": args.hidden,
                    "layers": args.layers,
                    "head_dim": args.head_dim,
                    "tokens": latent * latent + MAX_LENGTH,
                    "batch": args.batch,
                    "device": str(device),
                    "threads": torch.get_num_threads(),
                    "seconds_per_step": round(seconds, 3),
                }
            )
        )
        return 0
    modules: dict[str, torch.nn.Module] = {"transformer": transformer}
    ema: dict[str, tuple[str, float]] = {}
    if args.ema:
        modules["ema_transformer"] = copy.deepcopy(transformer).requires_grad_(False)
        ema["ema_transformer"] = ("transformer", args.ema)
    run = Path(args.out)
    config = {
        **settings(args),
        "sd": str(Path(args.sd)),
        "models": {"transformer": model_config(transformer)},
        "scheduler": FLOW_SCHEDULER_CONFIG,
    }
    write_config(run, config, read_state(run) is not None)
    state = train(args, modules, optimizer, step_fn, ema=ema)
    print(f"DiT ({state.status}, step {state.step}) in {run}; export it with python -m training.export_dit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
