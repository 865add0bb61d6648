"""Whole UNets, sampling speed with our attention kernel against SDPA.

    .venv/bin/python bench/unet.py [--models sd15,sdxl] [--steps 20] [--runs 5] [--compile]

Needs a CUDA GPU and Triton; elsewhere it prints one ``skipped`` line and exits 0. The DiT
models (SD3, SD3.5, Flux) have their own bench, ``bench/transformer.py``.

Full-size SD1.5 (512 px, 64x64 latents) and SDXL (1024 px, 128x128 latents) UNets are
built from the config-only folders in ``models/configs/*/unet`` with random weights (speed
does not depend on the weights), in fp16. A denoising loop of ``--steps`` steps runs with
classifier-free guidance (UNet batch 2) and a fixed seed, prompt embedding and timesteps.
Each backend is warmed up twice (our kernel autotunes then), then the two backends are
timed alternately, ``--runs`` times each (at least 5), with CUDA events around the whole
loop; the figure is the median. Each backend has its own copy of the model (same weights),
set up once by ``install_attention``, so a compiled model never sees its processors change.

Prints one JSON line per figure: ``bench``, ``case``, ``shape`` (UNet input), ``backend``,
``ms`` (per step), ``it_s`` (steps per second), ``ratio_to_sdpa`` (our it/s over SDPA's),
``sdpa_backend`` (what SDPA picks for the model's largest self-attention), ``cosine`` and
``rel_l1`` of one UNet output against SDPA's, and the issue's goal (SD1.5 at 512 px at
least 1.05x SDPA on an H100).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kernels.attention import interpreted, triton_available  # noqa: E402

BENCH = "unet"
CONFIGS = REPO / "models" / "configs"
GUIDANCE = 7.5


@dataclass(frozen=True)
class Model:
    name: str
    config: Path
    latent: int  # latent side, pixels / 8
    text_dim: int
    largest_attention: tuple[int, int, int, int]  # (batch, heads, tokens, head_dim)
    goal: float | None


MODELS = {
    "sd15": Model("sd15-512", CONFIGS / "sd15/unet/config.json", 64, 768, (2, 8, 4096, 40), 1.05),
    "sdxl": Model("sdxl-1024", CONFIGS / "sdxl/unet/config.json", 128, 2048, (2, 10, 4096, 64), None),
}


def build_unet(model: Model) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    config = json.loads(model.config.read_text())
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel.from_config(config)
    return unet.to(torch.float16).eval()


def conditioning(model: Model, unet: torch.nn.Module) -> dict[str, Any]:
    """Text embeddings (negative, positive) and, for SDXL, the added time/text conditioning."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    cond: dict[str, Any] = {
        "encoder_hidden_states": torch.randn(2, 77, model.text_dim, device="cuda", generator=gen).half()
    }
    if getattr(unet.config, "addition_embed_type", None) == "text_time":
        side = model.latent * 8
        time_ids = torch.tensor([side, side, 0, 0, side, side], device="cuda", dtype=torch.float16)
        cond["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, 1280, device="cuda", generator=gen).half(),
            "time_ids": time_ids.repeat(2, 1),
        }
    return cond


def denoise(
    unet: Callable[..., Any], latents: torch.Tensor, cond: dict[str, Any], timesteps: list[int]
) -> torch.Tensor:
    """A guided sampling loop with a plain Euler-like update: the UNet is the cost."""
    for t in timesteps:
        both = unet(torch.cat([latents, latents]), t, **cond).sample
        uncond, text = both.chunk(2)
        eps = uncond + GUIDANCE * (text - uncond)
        latents = latents - 0.02 * eps
    return latents


def timed(fn: Callable[[], Any]) -> float:
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def accuracy(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    out = out.float().flatten()
    ref = ref.float().flatten()
    cosine = F.cosine_similarity(out, ref, dim=0).item()
    rel_l1 = ((out - ref).abs().sum() / ref.abs().sum()).item()
    return cosine, rel_l1


def sdpa_choice(batch: int, heads: int, tokens: int, head_dim: int) -> str:
    from torch.nn.attention import SDPBackend

    q = torch.empty(batch, tokens, heads, head_dim, device="cuda", dtype=torch.float16).transpose(1, 2)
    return SDPBackend(torch._fused_sdp_choice(q, q, q)).name


def bench_model(model: Model, steps: int, runs: int, compile_unet: bool) -> list[dict[str, Any]]:
    from kernels.processor import install_attention

    unet = build_unet(model)
    cond = conditioning(model, unet)
    gen = torch.Generator(device="cuda").manual_seed(2)
    latents = torch.randn(1, 4, model.latent, model.latent, device="cuda", generator=gen).half()
    timesteps = torch.linspace(999, 1, steps).round().int().tolist()
    # One copy per backend (same weights): processors never change under a compiled model.
    unets = {"sdpa": unet, "triton": copy.deepcopy(unet)}

    forward: dict[str, Callable[..., Any]] = {}
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for backend, module in unets.items():
            if install_attention(module, backend) != backend:
                raise RuntimeError(f"could not install the {backend} attention backend")
            forward[backend] = torch.compile(module) if compile_unet else module
            outputs[backend] = forward[backend](torch.cat([latents, latents]), timesteps[0], **cond).sample
            for _ in range(2):  # warm-up: autotuning, compilation, allocator
                denoise(forward[backend], latents, cond, timesteps)
            torch.cuda.synchronize()

        times: dict[str, list[float]] = {b: [] for b in unets}
        for _ in range(runs):
            for backend in unets:  # alternate, so drift hits both alike
                times[backend].append(timed(lambda b=backend: denoise(forward[b], latents, cond, timesteps)))

    shape = f"2x4x{model.latent}x{model.latent}"
    sdpa_backend = sdpa_choice(*model.largest_attention)
    sdpa_ms = statistics.median(times["sdpa"]) / steps
    lines = []
    for backend in unets:
        ms = statistics.median(times[backend]) / steps
        cosine, rel_l1 = accuracy(outputs[backend], outputs["sdpa"])
        line: dict[str, Any] = {
            "bench": BENCH,
            "case": model.name + ("-compiled" if compile_unet else ""),
            "shape": shape,
            "backend": backend,
            "ms": round(ms, 4),
            "it_s": round(1000 / ms, 3),
            "tflops": None,
            "ratio_to_sdpa": round(sdpa_ms / ms, 4),
            "sdpa_backend": sdpa_backend,
            "cosine": round(cosine, 7),
            "rel_l1": float(f"{rel_l1:.3g}"),
            "steps": steps,
            "runs_ms_per_step": [round(t / steps, 4) for t in times[backend]],
        }
        if backend == "triton" and model.goal is not None and not compile_unet:
            line["goal"] = model.goal
            line["meets_goal"] = sdpa_ms / ms >= model.goal
        lines.append(line)
    return lines


def skip(reason: str) -> None:
    print(json.dumps({"bench": BENCH, "skipped": reason}))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="sd15,sdxl", help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet for both backends")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}")
    if args.runs < 5:
        parser.error("--runs must be at least 5")

    if not torch.cuda.is_available():
        skip("no CUDA device")
        return 0
    if not triton_available():
        skip("Triton is not installed")
        return 0
    if interpreted():
        skip("TRITON_INTERPRET=1 is set; benchmarks need the compiled kernel")
        return 0

    header = {"bench": BENCH, "device": torch.cuda.get_device_name(), "torch": torch.__version__}
    print(json.dumps(header), flush=True)
    for name in names:
        for line in bench_model(MODELS[name], args.steps, args.runs, args.compile):
            print(json.dumps(line), flush=True)
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
