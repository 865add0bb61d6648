"""Whole DiT transformers (SD3, SD3.5, Flux): denoising speed with our joint-attention kernel against SDPA.

    .venv/bin/python bench/transformer.py [--models sd3,sd35l,sd35m,flux] [--steps 8] [--runs 5]
    .venv/bin/python bench/transformer.py --tiny     # CPU check of the bench itself (see below)

Full size needs a CUDA GPU and Triton; elsewhere it prints one ``skipped`` line and exits 0.
The transformers are built from the config-only folders ``models/configs/<name>/transformer``
(the published configs; the same values are written below for when a folder is missing) with
random weights (speed does not depend on them): SD3 medium, SD3.5 large and SD3.5 medium
(qk-norm, dual attention) in fp16, Flux.1 dev in bf16, its native dtype. At 1024 px: SD3's
joint attention is 4096 image + 333 text tokens (77 CLIP + 256 T5), 24 or 38 heads of 64,
batch 2 (classifier-free guidance); Flux's 4096 image + 512 text tokens, 24 heads of 128,
batch 1 (guidance-distilled, guidance 3.5 as an input).

Each model runs a fixed-seed flow-matching Euler loop of ``--steps`` steps, once with
diffusers' stock processors ("sdpa") and once with ours ("triton"), swapped in place by
``kernels.processor.swap_attention`` on one copy of the weights. Both are warmed up twice (our
kernel autotunes then), then timed alternately, ``--runs`` times each (at least 5), with CUDA
events around the whole loop; the figure is the median. SDPA is pinned, for both backends, to
the backend it picks by itself for the model's largest attention (logged as ``sdpa_backend``).

Prints one JSON line per figure: ``bench``, ``case``, ``shape`` (batch x tokens x heads x head
dim of the joint attention), ``backend``, ``ms`` (per step), ``it_s``, ``attention_tflops``
(the attention FLOPs of one step, 4 * b * h * n^2 * d summed over layers with the true head
dim, over the step time), ``ratio_to_sdpa`` (our it/s over SDPA's), ``sdpa_backend``,
``cosine`` / ``rel_l1`` / ``finite`` of one transformer output against the stock one, and
``kernel_calls`` / ``attention_layers`` (how many layers actually ran our kernel in that
forward).

``--tiny``: the same code on the CPU with scaled-down models (2 heads, a 16-token image, 7
text tokens, the real head dims 64 and 128) in fp32, our kernel run by Triton's interpreter
(``TRITON_INTERPRET=1`` is set before the kernel is imported), timed with the wall clock.
Its times mean nothing; it checks that the bench builds, swaps, runs and compares.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

BENCH = "transformer"
CONFIGS = REPO / "models" / "configs"
SD3_GUIDANCE = 7.0
FLUX_GUIDANCE = 3.5

_SD3_MEDIUM = {
    "_class_name": "SD3Transformer2DModel",
    "attention_head_dim": 64,
    "caption_projection_dim": 1536,
    "in_channels": 16,
    "joint_attention_dim": 4096,
    "num_attention_heads": 24,
    "num_layers": 24,
    "out_channels": 16,
    "patch_size": 2,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 192,
    "sample_size": 128,
}
_FLUX_DEV = {
    "_class_name": "FluxTransformer2DModel",
    "attention_head_dim": 128,
    "axes_dims_rope": [16, 56, 56],
    "guidance_embeds": True,
    "in_channels": 64,
    "joint_attention_dim": 4096,
    "num_attention_heads": 24,
    "num_layers": 19,
    "num_single_layers": 38,
    "patch_size": 1,
    "pooled_projection_dim": 768,
}
PUBLISHED: dict[str, dict[str, Any]] = {
    "sd3-medium": _SD3_MEDIUM,
    "sd35-large": {
        **_SD3_MEDIUM,
        "caption_projection_dim": 2432,
        "num_attention_heads": 38,
        "num_layers": 38,
        "qk_norm": "rms_norm",
        "dual_attention_layers": [],
    },
    "sd35-medium": {
        **_SD3_MEDIUM,
        "pos_embed_max_size": 384,
        "qk_norm": "rms_norm",
        "dual_attention_layers": list(range(13)),
    },
    "flux-dev": _FLUX_DEV,
}


@dataclass(frozen=True)
class Model:
    name: str
    folder: str  # under models/configs
    family: str  # "sd3" or "flux"
    text_tokens: int
    batch: int  # transformer batch: 2 with classifier-free guidance
    dtype: torch.dtype
    image_px: int = 1024


MODELS = {
    "sd3": Model("sd3-medium-1024", "sd3-medium", "sd3", 333, 2, torch.float16),
    "sd35l": Model("sd35-large-1024", "sd35-large", "sd3", 333, 2, torch.float16),
    "sd35m": Model("sd35-medium-1024", "sd35-medium", "sd3", 333, 2, torch.float16),
    "flux": Model("flux-dev-1024", "flux-dev", "flux", 512, 1, torch.bfloat16),
}


def model_config(model: Model, tiny: bool) -> dict[str, Any]:
    """The shipped config (or the published values), scaled down to 2 heads and 2 blocks for ``--tiny``."""
    path = CONFIGS / model.folder / "transformer" / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else dict(PUBLISHED[model.folder])
    if not tiny:
        return config
    head_dim = config["attention_head_dim"]  # kept: the point is the real head dims
    small = {"num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32}
    if model.family == "sd3":
        small |= {
            "num_layers": 2,
            "caption_projection_dim": 2 * head_dim,
            "sample_size": 8,
            "pos_embed_max_size": 8,
        }
        if config.get("dual_attention_layers"):
            small["dual_attention_layers"] = [0]
    else:
        small |= {"num_layers": 1, "num_single_layers": 1}
    return {**config, **small}


def build(model: Model, config: dict[str, Any], device: str, dtype: torch.dtype) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    cls = SD3Transformer2DModel if model.family == "sd3" else FluxTransformer2DModel
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in the target dtype: Flux in fp32 would need 48 GB
    try:
        with torch.device(device):
            transformer = cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    finally:
        torch.set_default_dtype(default)
    tensors = [*transformer.parameters(), *transformer.buffers()]
    if any(t.is_floating_point() and t.dtype != dtype for t in tensors):
        transformer = transformer.to(dtype)
    return transformer.eval()


@dataclass
class Inputs:
    """A latent and its fixed conditioning; ``velocity(latents, sigma)`` is one guided transformer call."""

    latents: torch.Tensor
    velocity: Callable[[torch.Tensor, float], torch.Tensor]
    image_tokens: int


def make_inputs(model: Model, config: dict[str, Any], transformer: torch.nn.Module, tiny: bool) -> Inputs:
    device = next(transformer.parameters()).device
    dtype = next(transformer.parameters()).dtype
    gen = torch.Generator(device=device).manual_seed(1)
    text_tokens = 7 if tiny else model.text_tokens
    latent_side = 8 if tiny else model.image_px // 8

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, generator=gen).to(dtype)

    text = randn(model.batch, text_tokens, config["joint_attention_dim"])
    pooled = randn(model.batch, config["pooled_projection_dim"])
    if model.family == "sd3":
        latents = randn(1, config["in_channels"], latent_side, latent_side)

        def sd3_velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
            timestep = torch.full((model.batch,), sigma * 1000, device=device, dtype=dtype)
            both = transformer(
                hidden_states=torch.cat([x] * model.batch),
                encoder_hidden_states=text,
                pooled_projections=pooled,
                timestep=timestep,
            ).sample
            uncond, cond = both.chunk(2)
            return uncond + SD3_GUIDANCE * (cond - uncond)

        image_tokens = (latent_side // config["patch_size"]) ** 2
        return Inputs(latents, sd3_velocity, image_tokens)

    side = latent_side // 2  # Flux packs 2x2 latent patches of 16 channels into 64
    latents = randn(1, side * side, config["in_channels"])
    img_ids = torch.zeros(side, side, 3, device=device)
    img_ids[..., 1] = torch.arange(side, device=device)[:, None]
    img_ids[..., 2] = torch.arange(side, device=device)[None, :]
    img_ids = img_ids.reshape(-1, 3)
    txt_ids = torch.zeros(text_tokens, 3, device=device)
    guidance = torch.full((1,), FLUX_GUIDANCE, device=device) if config.get("guidance_embeds") else None

    def flux_velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return transformer(
            hidden_states=x,
            encoder_hidden_states=text,
            pooled_projections=pooled,
            timestep=torch.full((1,), sigma, device=device, dtype=dtype),
            img_ids=img_ids,
            txt_ids=txt_ids,
            guidance=guidance,
        ).sample

    return Inputs(latents, flux_velocity, side * side)


def denoise(inputs: Inputs, steps: int) -> torch.Tensor:
    """Flow-matching Euler from sigma 1 to 0: the transformer is the cost."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
    latents = inputs.latents
    for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:], strict=True):
        latents = latents + (next_sigma - sigma) * inputs.velocity(latents, sigma)
    return latents


def timed(fn: Callable[[], Any], cuda: bool) -> float:
    """Milliseconds: CUDA events on the GPU, the wall clock on the CPU."""
    if not cuda:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1000
    begin = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    begin.record()
    fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end)


def accuracy(out: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    out = out.double().flatten()
    ref = ref.double().flatten()
    cosine = F.cosine_similarity(out, ref, dim=0).item()
    rel_l1 = ((out - ref).abs().sum() / ref.abs().sum()).item()
    finite = bool(torch.isfinite(out).all() and torch.isfinite(ref).all())
    return {"cosine": round(cosine, 7), "rel_l1": float(f"{rel_l1:.3g}"), "finite": finite}


@contextmanager
def counting_kernel_calls() -> Iterator[list[int]]:
    """Counts calls of the kernel from the joint processors while the block runs."""
    from kernels import joint

    calls: list[int] = []
    original = joint.attention

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)

    joint.attention = counted
    try:
        yield calls
    finally:
        joint.attention = original


def sdpa_choice(batch: int, heads: int, tokens: int, head_dim: int, device: str, dtype: torch.dtype) -> Any:
    from torch.nn.attention import SDPBackend

    q = torch.empty(batch, tokens, heads, head_dim, device=device, dtype=dtype).transpose(1, 2)
    return SDPBackend(torch._fused_sdp_choice(q, q, q))


def attention_flops(config: dict[str, Any], batch: int, image_tokens: int, text_tokens: int) -> int:
    """FLOPs of one transformer call's attention, with the true head dim: 4 * b * h * n^2 * d per layer."""
    heads, head_dim = config["num_attention_heads"], config["attention_head_dim"]
    joint_n = image_tokens + text_tokens
    per_layer = 4 * batch * heads * head_dim
    if "num_single_layers" in config:  # Flux: every block attends over the joint sequence
        return per_layer * joint_n**2 * (config["num_layers"] + config["num_single_layers"])
    dual = len(config.get("dual_attention_layers") or ())
    return per_layer * (config["num_layers"] * joint_n**2 + dual * image_tokens**2)


def bench_model(model: Model, steps: int, runs: int, tiny: bool) -> list[dict[str, Any]]:
    from torch.nn.attention import sdpa_kernel

    from kernels.processor import swap_attention

    cuda = not tiny
    device = "cuda" if cuda else "cpu"
    dtype = torch.float32 if tiny else model.dtype
    config = model_config(model, tiny)
    transformer = build(model, config, device, dtype)
    inputs = make_inputs(model, config, transformer, tiny)
    text_tokens = 7 if tiny else model.text_tokens
    tokens = inputs.image_tokens + text_tokens
    heads, head_dim = config["num_attention_heads"], config["attention_head_dim"]
    pinned = sdpa_choice(model.batch, heads, tokens, head_dim, device, dtype)
    backends = ("sdpa", "triton")

    outputs: dict[str, torch.Tensor] = {}
    kernel_calls: dict[str, int] = {}
    layers = len(transformer.attn_processors)
    times: dict[str, list[float]] = {b: [] for b in backends}
    with torch.inference_mode(), sdpa_kernel([pinned]):
        for backend in backends:
            if swap_attention(transformer, backend).backend != backend:
                raise RuntimeError(f"could not install the {backend} attention backend")
            with counting_kernel_calls() as calls:
                outputs[backend] = inputs.velocity(inputs.latents, 1.0)
            kernel_calls[backend] = len(calls)
            for _ in range(2):  # warm-up: autotuning, allocator
                denoise(inputs, steps)
        for _ in range(runs):
            for backend in backends:  # alternate, so drift hits both alike
                swap_attention(transformer, backend)
                times[backend].append(timed(lambda: denoise(inputs, steps), cuda))

    # Per transformer call; SD3 makes one call (batch 2) per step, as does Flux (batch 1).
    flops = attention_flops(config, model.batch, inputs.image_tokens, text_tokens)
    sdpa_ms = statistics.median(times["sdpa"]) / steps
    lines = []
    for backend in backends:
        ms = statistics.median(times[backend]) / steps
        lines.append(
            {
                "bench": BENCH,
                "case": model.name + ("-tiny" if tiny else ""),
                "shape": f"{model.batch}x{tokens}x{heads}x{head_dim}",
                "dtype": str(dtype).removeprefix("torch."),
                "backend": backend,
                "ms": round(ms, 4),
                "it_s": round(1000 / ms, 3),
                "attention_tflops": round(flops / ms / 1e9, 2),
                "ratio_to_sdpa": round(sdpa_ms / ms, 4),
                "sdpa_backend": pinned.name,
                **accuracy(outputs[backend], outputs["sdpa"]),
                "kernel_calls": kernel_calls[backend],
                "attention_layers": layers,
                "steps": steps,
                "runs_ms_per_step": [round(t / steps, 4) for t in times[backend]],
            }
        )
    return lines


def skip(reason: str) -> None:
    print(json.dumps({"bench": BENCH, "skipped": reason}))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default="sd3,sd35l,sd35m,flux", help=f"comma-separated, from {', '.join(MODELS)}"
    )
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 8; --tiny: 2)")
    parser.add_argument(
        "--runs", type=int, default=None, help="timed runs per backend (default 5; --tiny: 1)"
    )
    parser.add_argument("--tiny", action="store_true", help="scaled-down models on the CPU (interpreter)")
    args = parser.parse_args()
    steps = args.steps or (2 if args.tiny else 8)
    runs = args.runs or (1 if args.tiny else 5)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}")
    if runs < 5 and not args.tiny:
        parser.error("--runs must be at least 5")

    if args.tiny:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernel is imported (below)
    from kernels.attention import interpreted, triton_available

    if not triton_available():
        skip("Triton is not installed")
        return 0
    if args.tiny and not interpreted():
        skip("--tiny needs the kernel under TRITON_INTERPRET=1, but it was imported without it")
        return 0
    if not args.tiny:
        if not torch.cuda.is_available():
            skip("no CUDA device: full-size SD3/Flux transformers need a GPU; --tiny checks the bench on CPU")
            return 0
        if interpreted():
            skip("TRITON_INTERPRET=1 is set; benchmarks need the compiled kernel")
            return 0

    device = "cpu (Triton interpreter)" if args.tiny else torch.cuda.get_device_name()
    print(json.dumps({"bench": BENCH, "device": device, "torch": torch.__version__}), flush=True)
    for name in names:
        for line in bench_model(MODELS[name], steps, runs, args.tiny):
            print(json.dumps(line), flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
