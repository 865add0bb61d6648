"""Train an SD-style text-to-image model on toy-world pictures and captions: a small CLIP text encoder
(CLIP's real tokenizer, 77 tokens) and a UNet of about a million parameters, jointly, on the latents of
the VAE trained by :mod:`training.vae` (frozen), with epsilon prediction and SD's noise schedule
(scaled_linear betas, 1000 steps) and 10% of captions dropped to "" for classifier-free guidance.

``python -m training.sd --out runs/sd --vae runs/vae --steps 4000 --batch 64`` (resumes when
``runs/sd`` holds a state; ``--max-minutes`` saves and stops). ``--measure`` prints the parameters and
the seconds per step of the chosen sizes and exits: run it before a long training to pick sizes that
fit the time budget. EMA copies of both models are kept (``--ema``, 0 for none); export them with
:mod:`training.export`.
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

from training.grounding import (
    AttentionStore,
    TokenCounter,
    grounding_loss,
    record_cross_attention,
    scene_targets,
)
from training.loop import prepare, train
from training.run_folder import read_state, write_config
from training.script import add_common_args, count_parameters, measure_step, model_config, settings
from training.seeding import seed_everything, step_generator
from training.toy_data import toy_batch

#: SD1.x's training noise schedule (and its scheduler settings for sampling).
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}
MAX_LENGTH = 77  # CLIP's tokenizer length; the studio's prompt code reads it from the tokenizer


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split(","))


def build_text_encoder(hidden: int = 64, layers: int = 3, heads: int = 4) -> Any:
    """A CLIPTextModel with CLIP's vocabulary and special tokens, ``hidden`` wide."""
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = 49408
    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=MAX_LENGTH,
        hidden_act="quick_gelu",
        projection_dim=hidden,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
    )
    return CLIPTextModel(config)


def build_unet(
    channels: tuple[int, ...] = (32, 64),
    layers: int = 1,
    cross_attention_dim: int = 64,
    head_dim: int = 8,
    groups: int = 16,
    sample_size: int = 8,
) -> Any:
    """An SD-style UNet with cross-attention at every resolution."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(channels),
        layers_per_block=layers,
        down_block_types=("CrossAttnDownBlock2D",) * len(channels),
        up_block_types=("CrossAttnUpBlock2D",) * len(channels),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=head_dim,
        norm_num_groups=groups,
    )


def load_vae(path: Path, device: torch.device) -> Any:
    """The trained VAE: a run folder of :mod:`training.vae` (its ``vae/``) or a diffusers VAE folder."""
    from diffusers import AutoencoderKL

    path = Path(path)
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
    return vae.to(device).eval().requires_grad_(False)


class Tokens:
    """Caption -> CLIP token ids (padded to 77 with <|endoftext|>, as SD1.x), cached per caption."""

    def __init__(self) -> None:
        from models.tokenizer import clip_tokenizer

        self.tokenizer = clip_tokenizer()
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        for text in set(captions) - set(self.cache):
            self.cache[text] = self.tokenizer(
                text, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt"
            ).input_ids[0]
        return torch.stack([self.cache[text] for text in captions])


def sd_step(
    unet: Any,
    text_encoder: Any,
    vae: Any,
    tokens: Tokens,
    args: argparse.Namespace,
    device: torch.device,
    store: AttentionStore | None = None,
) -> Any:
    """The step function: noise the VAE latents of the step's batch at random timesteps and train the
    UNet (with the text encoder's states) to predict the noise; backward; returns the metrics. With a
    ``store`` (the UNet's recorded cross-attention, :func:`training.grounding.record_cross_attention`)
    the loss adds ``args.ground`` x the grounding loss of each shape's color and kind words."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(SD_SCHEDULER_CONFIG)
    factor = float(vae.config.scaling_factor)
    count = TokenCounter(tokens.tokenizer)
    train_text = any(p.requires_grad for p in text_encoder.parameters())

    def step_fn(step: int) -> dict[str, float]:
        batch = toy_batch(
            step,
            args.batch,
            args.seed,
            args.size,
            background_p=args.background_p,
            drop_p=args.drop,
            bare_p=getattr(args, "bare_p", None) or 0.0,
        )
        generator = step_generator(args.seed, step, device)
        with torch.no_grad():
            latents = vae.encode(batch.images.to(device)).latent_dist.sample(generator=generator) * factor
        noise = torch.randn(latents.shape, generator=generator, device=device)
        timesteps = torch.randint(
            0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator, device=device
        )
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with torch.set_grad_enabled(train_text):
            states = text_encoder(tokens(batch.captions).to(device))[0]
        if store is not None:
            store.start()
        prediction = unet(noisy, timesteps, states).sample
        loss = F.mse_loss(prediction, noise)
        metrics = {"denoise": loss.item()}
        if store is not None:
            targets, weights = scene_targets(batch.scenes, batch.captions, count, MAX_LENGTH)
            ground = grounding_loss(store.take(), targets.to(device), weights.to(device))
            loss = loss + args.ground * ground
            metrics["ground"] = ground.item()
        loss.backward()
        return {"loss": loss.item(), **metrics}

    return step_fn


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.sd", description=__doc__)
    add_common_args(parser, steps=4000, batch=64, lr=1e-3)
    parser.add_argument(
        "--vae", type=Path, required=True, help="the VAE run folder (or a diffusers VAE folder)"
    )
    parser.add_argument("--channels", type=ints, default=(32, 64), help="UNet block channels")
    parser.add_argument("--layers", type=int, default=1, help="UNet layers per block")
    parser.add_argument("--head-dim", type=int, default=8, help="UNet attention head size")
    parser.add_argument("--groups", type=int, default=16, help="UNet group-norm groups")
    parser.add_argument("--text-hidden", type=int, default=64, help="text encoder width")
    parser.add_argument("--text-layers", type=int, default=3)
    parser.add_argument("--text-heads", type=int, default=4)
    parser.add_argument(
        "--drop", type=float, default=0.1, help="caption dropout (for classifier-free guidance)"
    )
    parser.add_argument(
        "--background-p", type=float, default=0.5, help="share of captions naming the background"
    )
    parser.add_argument(
        "--bare-p",
        type=float,
        default=None,
        help='share of captions without position words ("a red circle and a blue square"; default none)',
    )
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay (0: no EMA copies)")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from an exported SD folder's UNet and text encoder (e.g. models/checkpoints/toy-sd); "
        "their sizes then replace the size options",
    )
    parser.add_argument(
        "--freeze-text", action="store_true", help="train the UNet only (the text encoder stays as it is)"
    )
    parser.add_argument(
        "--ground",
        type=float,
        default=0.0,
        help="weight of the grounding loss that ties each shape's color and kind words to its mask "
        "through the UNet's cross-attention (training.grounding; 0: none)",
    )
    return parser.parse_args(argv)


def build(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any]:
    seed_everything(args.seed)
    if args.init is not None:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        folder = Path(args.init)
        unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"), local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True)
        return unet.float().to(device).train(), text_encoder.float().to(device).train()
    text_encoder = build_text_encoder(args.text_hidden, args.text_layers, args.text_heads)
    unet = build_unet(
        args.channels, args.layers, args.text_hidden, args.head_dim, args.groups, args.size // 4
    )
    return unet.to(device).train(), text_encoder.to(device).train()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = prepare(args)
    unet, text_encoder = build(args, device)
    if args.measure and not Path(args.vae).exists():  # sizes only: an untrained VAE costs the same
        from training.vae import build_vae

        vae = build_vae(size=args.size).to(device).eval().requires_grad_(False)
    else:
        vae = load_vae(args.vae, device)
        summary = Path(args.vae) / "summary.json"
        if summary.is_file() and json.loads(summary.read_text()).get("status") != "done":
            print(f"warning: the VAE in {args.vae} did not finish its training", file=sys.stderr)
    latent = args.size // 2 ** (len(vae.config.block_out_channels) - 1)
    if latent != unet.config.sample_size:
        unet.register_to_config(sample_size=latent)
    if args.freeze_text:
        text_encoder.requires_grad_(False).eval()
    params = [p for p in list(unet.parameters()) + list(text_encoder.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    store = record_cross_attention(unet) if args.ground else None
    step_fn = sd_step(unet, text_encoder, vae, Tokens(), args, device, store)
    if args.measure:
        seconds = measure_step(step_fn, optimizer)
        print(
            json.dumps(
                {
                    "model": "sd",
                    "unet_parameters": count_parameters(unet),
                    "text_encoder_parameters": count_parameters(text_encoder),
                    "text_encoder_parameters_without_token_embedding": count_parameters(text_encoder)
                    - text_encoder.get_input_embeddings().weight.numel(),
                    "latent": latent,
                    "batch": args.batch,
                    "device": str(device),
                    "threads": torch.get_num_threads(),
                    "seconds_per_step": round(seconds, 3),
                }
            )
        )
        return 0
    modules: dict[str, torch.nn.Module] = {"unet": unet, "text_encoder": text_encoder}
    ema: dict[str, tuple[str, float]] = {}
    if args.ema:
        for name in ("unet", "text_encoder"):
            modules[f"ema_{name}"] = copy.deepcopy(modules[name]).requires_grad_(False)
            ema[f"ema_{name}"] = (name, args.ema)
    run = Path(args.out)
    config = {
        **settings(args),
        "vae": str(Path(args.vae).resolve()),
        "models": {"unet": model_config(unet), "text_encoder": model_config(text_encoder)},
        "scheduler": SD_SCHEDULER_CONFIG,
    }
    write_config(run, config, read_state(run) is not None)
    state = train(args, modules, optimizer, step_fn, ema=ema)
    print(f"SD ({state.status}, step {state.step}) in {run}; export it with python -m training.export")
    return 0


if __name__ == "__main__":
    sys.exit(main())
