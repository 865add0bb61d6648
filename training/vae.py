"""Train a small AutoencoderKL on toy-world pictures: 32 px in, 8x8x4 latents (it downsamples by 4).

``python -m training.vae --out runs/vae --steps 3000 --batch 64`` (resumes when ``runs/vae`` holds a
state; ``--max-minutes`` saves and stops; ``--measure`` prints seconds per step and exits). The loss is
L1 + L2 reconstruction plus a small KL term. At the end the VAE is saved as a diffusers folder in
``<out>/vae`` with its ``scaling_factor`` set to 1 / (standard deviation of its latents), as SD's was,
and ``<out>/summary.json`` records sizes, steps, time, loss and reconstruction PSNR.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from training.loop import prepare, train
from training.run_folder import read_state, recent_loss, write_config
from training.script import add_common_args, count_parameters, measure_step, model_config, settings
from training.seeding import step_generator
from training.toy_data import toy_batch, toy_images

EXPORT = "vae"
SUMMARY = "summary.json"


def build_vae(
    channels: tuple[int, ...] = (32, 64, 64), layers: int = 1, groups: int = 16, size: int = 32
) -> Any:
    """An AutoencoderKL with 4 latent channels that shrinks pictures by 2 ** (len(channels) - 1)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=tuple(channels),
        layers_per_block=layers,
        latent_channels=4,
        norm_num_groups=groups,
        sample_size=size,
    )


def gradient_l1(recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """L1 distance of the horizontal and vertical pixel differences: a blurred outline costs here even
    where its average color is right, which keeps small shapes' corners sharp."""
    dx = F.l1_loss(recon.diff(dim=-1), images.diff(dim=-1))
    dy = F.l1_loss(recon.diff(dim=-2), images.diff(dim=-2))
    return dx + dy


def vae_step(vae: Any, args: argparse.Namespace, device: torch.device) -> Any:
    """The step function: reconstruction (L1 + L2) + ``kl`` * KL, backward; returns the metrics."""

    def step_fn(step: int) -> dict[str, float]:
        images = toy_batch(step, args.batch, args.seed, args.size, background_p=0.0).images.to(device)
        posterior = vae.encode(images).latent_dist
        latents = posterior.sample(generator=step_generator(args.seed, step, device))
        recon = vae.decode(latents).sample
        l1 = F.l1_loss(recon, images)
        l2 = F.mse_loss(recon, images)
        kl = posterior.kl().mean() / images[0].numel()  # per pixel value, like the reconstruction terms
        edge = gradient_l1(recon, images)
        loss = l1 + l2 + args.kl * kl + args.edge * edge
        loss.backward()
        return {"loss": loss.item(), "l1": l1.item(), "l2": l2.item(), "kl": kl.item(), "edge": edge.item()}

    return step_fn


@torch.no_grad()
def latent_std(vae: Any, images: torch.Tensor, batch: int = 64) -> float:
    """Standard deviation of the latents (posterior samples, seed 0) of ``images``."""
    generator = step_generator(0, 0, images.device, stream=7)
    latents = [
        vae.encode(images[i : i + batch]).latent_dist.sample(generator=generator)
        for i in range(0, len(images), batch)
    ]
    return float(torch.cat(latents).std())


@torch.no_grad()
def psnr(vae: Any, images: torch.Tensor, batch: int = 64) -> float:
    """Reconstruction PSNR (dB, pictures in [0, 1]) through the posterior means."""
    errors = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        errors.append(((recon - x) / 2).pow(2).mean(dim=(1, 2, 3)))
    mse = float(torch.cat(errors).mean())
    return 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()


@torch.no_grad()
def analyzer_accuracy(vae: Any, n: int, seed: int, size: int, split: str = "test") -> dict[str, float]:
    """How often the toy world's analyzer reads the shapes of ``n`` reconstructed pictures right (kind,
    color, position): the ceiling of what a diffusion model drawing through this VAE can reach."""
    import numpy as np

    from toyworld import dataset, score

    data = dataset(n, seed=seed, size=size, split=split)
    device = next(vae.parameters()).device
    images = torch.from_numpy(np.stack([d[0] for d in data]).astype(np.float32) / 127.5 - 1.0)
    recon = vae.decode(vae.encode(images.permute(0, 3, 1, 2).to(device)).latent_dist.mode()).sample
    pictures = ((recon.clamp(-1, 1).permute(0, 2, 3, 1).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)
    scores = [score(scene, picture) for (_, _, scene), picture in zip(data, pictures, strict=True)]
    return {key: round(float(np.mean([s[key] for s in scores])), 3) for key in ("kind", "color", "position")}


def export_vae(vae: Any, run: Path, args: argparse.Namespace, n_eval: int = 256) -> Path:
    """Save the VAE as a diffusers folder in ``run/vae`` with its scaling factor, and the summary."""
    vae.eval()
    device = next(vae.parameters()).device
    train = toy_images(n_eval, seed=args.seed + 1, size=args.size, split="train").to(device)
    test = toy_images(n_eval, seed=args.seed + 2, size=args.size, split="test").to(device)
    factor = 1.0 / latent_std(vae, train)
    vae.register_to_config(scaling_factor=factor)
    folder = run / EXPORT
    vae.to("cpu").save_pretrained(str(folder), safe_serialization=True)
    vae.to(device)
    state = read_state(run)
    summary = {
        "model": "AutoencoderKL",
        "parameters": count_parameters(vae),
        "channels": list(args.channels),
        "layers_per_block": args.layers,
        "norm_num_groups": args.groups,
        "size": args.size,
        "latent": [4, args.size // 2 ** (len(args.channels) - 1), args.size // 2 ** (len(args.channels) - 1)],
        "steps": state.step if state else 0,
        "status": state.status if state else "new",
        "batch": args.batch,
        "seed": args.seed,
        "lr": args.lr,
        "warmup": args.warmup,
        "kl_weight": args.kl,
        "edge_weight": args.edge,
        "init": str(args.init) if args.init else None,
        "decoder_only": args.decoder_only,
        "seconds": round(state.elapsed, 1) if state else 0.0,
        "loss_last_100": recent_loss(run),
        "scaling_factor": factor,
        "psnr_train": round(psnr(vae, train), 2),
        "psnr_test": round(psnr(vae, test), 2),
        "analyzer_test": analyzer_accuracy(vae, n_eval, args.seed + 3, args.size),
    }
    (run / SUMMARY).write_text(json.dumps(summary, indent=1))
    return folder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.vae", description=__doc__)
    add_common_args(parser, steps=3000, batch=64, lr=1e-3)
    parser.add_argument(
        "--channels", type=lambda s: tuple(int(c) for c in s.split(",")), default=(32, 64, 64)
    )
    parser.add_argument("--layers", type=int, default=1, help="layers per block")
    parser.add_argument("--groups", type=int, default=16, help="group-norm groups")
    parser.add_argument(
        "--eval-images", type=int, default=256, help="pictures per split for PSNR and scaling"
    )
    parser.add_argument(
        "--edge", type=float, default=1.0, help="weight of the L1 loss on pixel differences (sharp outlines)"
    )
    parser.add_argument(
        "--decoder-only",
        action="store_true",
        help="train only the decoder (with --init: sharpen a VAE whose latents a diffusion model uses)",
    )
    parser.add_argument(
        "--init", type=Path, default=None, help="start from this VAE run's (or diffusers folder's) weights"
    )
    parser.add_argument(
        "--kl", type=float, default=1e-4, help="weight of the KL term (per value, against per-value L1 + L2)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = prepare(args)
    vae = build_vae(args.channels, args.layers, args.groups, args.size)
    if args.init and read_state(Path(args.out)) is None:
        from training.sd import load_vae

        vae.load_state_dict(load_vae(args.init, torch.device("cpu")).state_dict())
    vae = vae.to(device).train()
    if args.decoder_only:  # the latents stay as they were: a diffusion model trained on them still fits
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    trained = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    step_fn = vae_step(vae, args, device)
    if args.measure:
        seconds = measure_step(step_fn, optimizer)
        print(
            json.dumps(
                {
                    "model": "vae",
                    "parameters": count_parameters(vae),
                    "batch": args.batch,
                    "device": str(device),
                    "seconds_per_step": round(seconds, 3),
                }
            )
        )
        return 0
    run = Path(args.out)
    resuming = read_state(run) is not None
    write_config(run, {**settings(args), "models": {"vae": model_config(vae)}}, resuming)
    state = train(args, {"vae": vae}, optimizer, step_fn)
    folder = export_vae(vae, run, args, args.eval_images)
    print(f"VAE ({state.status}, step {state.step}) saved in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
