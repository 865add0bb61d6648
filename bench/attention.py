"""Our Triton attention kernel against PyTorch's SDPA on diffusion models' attention shapes.

    .venv/bin/python bench/attention.py [--dtype fp16|bf16] [--cases sd15,sdxl,sd3,sd35,flux]
                                        [--all-sdpa-backends] [--no-compile-check]
    .venv/bin/python bench/attention.py --tiny      # CPU check of the bench itself (see below)

Needs a CUDA GPU and Triton; elsewhere it prints one ``skipped`` line and exits 0. Do not
set ``TRITON_INTERPRET``: the interpreter is for tests only (``--tiny`` sets it itself).

Shapes: SD1.5 (head dims 40 / 80 / 160) and SDXL (64), self- and cross-attention; the DiT
models' joint attention over image + text tokens at 1024 px: SD3 medium (4096 + 333 tokens,
24 heads of 64), SD3.5 large (38 heads of 64), SD3.5 medium's image-only second attention
(4096 tokens), and Flux (4096 + 512 tokens, 24 heads of 128; also 512 px: 1024 + 512).

Prints one JSON line per figure: ``bench``, ``case``, ``shape`` (batch x heads x query
tokens x key tokens x head dim), ``backend`` ("triton", or "sdpa" pinned to the backend SDPA
chooses for that input by itself, named in ``sdpa_backend``), ``ms`` (median of
``triton.testing.do_bench``), ``tflops`` (4 * b * h * n_q * n_k * head_dim, the true head
dimension, never the padded one), ``ratio_to_sdpa`` (SDPA's ms / this ms: above 1 is
faster than SDPA), ``cosine`` and ``rel_l1`` against fp32 attention of the same inputs, and
for our kernel the issue's ``goal`` ratio and whether it is met. Inputs are laid out as
diffusers' processors hand them over: (batch, tokens, heads * head_dim) projections,
viewed and transposed, not contiguous. A last line checks the kernel under
``torch.compile(fullgraph=True)`` (accuracy and ms), then a summary of the goals.

``--tiny``: every case scaled down (2 heads, query and self-attention lengths / 64, at least
16; head dims and text lengths kept) on the CPU in fp32, the kernel run by Triton's
interpreter, SDPA pinned the same way, timed with the wall clock (medians of 3). The times
mean nothing; it checks that the bench runs and that the kernel is accurate on every case.

Goals (issue 5, on an H100, ratios to SDPA in the same run): at least 1.15x at head dim 40
and 4096 tokens, at least 1.0x at head dims 64 and 80, nowhere below 0.95x. The DiT cases
(issue 11) are held to the same: 1.0x for SD3's head dim 64, 0.95x for Flux's 128.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

BENCH = "attention"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The kernel, imported on first use: ``--tiny`` must set ``TRITON_INTERPRET`` before."""
    from kernels.attention import attention as kernel

    return kernel(q, k, v)


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    heads: int
    n_q: int
    n_k: int
    head_dim: int
    self_attention: bool

    @property
    def shape(self) -> str:
        return f"{self.batch}x{self.heads}x{self.n_q}x{self.n_k}x{self.head_dim}"

    @property
    def flops(self) -> int:
        return 4 * self.batch * self.heads * self.n_q * self.n_k * self.head_dim

    @property
    def goal(self) -> float:
        if self.head_dim == 40 and self.n_q == 4096 and self.self_attention:
            return 1.15
        if self.head_dim in (64, 80):
            return 1.0
        return 0.95


def cases() -> list[Case]:
    """Batch 2 is classifier-free guidance; Flux (guidance-distilled) runs batch 1."""
    out: list[Case] = []
    # SD1.5 at 512 px: 8 heads; 64x64, 32x32, 16x16 and 8x8 (mid) latents.
    for tokens, head_dim in ((4096, 40), (1024, 80), (256, 160), (64, 160)):
        out.append(Case(f"sd15-self-{tokens}-d{head_dim}", 2, 8, tokens, tokens, head_dim, True))
        out.append(Case(f"sd15-cross77-{tokens}-d{head_dim}", 2, 8, tokens, 77, head_dim, False))
    # SDXL at 1024 px: head dim 64, 10 heads at 64x64, 20 heads at 32x32.
    for tokens, heads in ((4096, 10), (1024, 20)):
        out.append(Case(f"sdxl-self-{tokens}-d64", 2, heads, tokens, tokens, 64, True))
        out.append(Case(f"sdxl-cross77-{tokens}-d64", 2, heads, tokens, 77, 64, False))
    # SD3 medium at 1024 px: joint attention over 4096 image + 333 text tokens (77 CLIP + 256 T5),
    # 24 heads of 64; SD3.5 large: 38 heads; SD3.5 medium's dual layers also attend over the
    # 4096 image tokens alone.
    out.append(Case("sd3-joint-4429-d64", 2, 24, 4429, 4429, 64, True))
    out.append(Case("sd35-large-joint-4429-d64", 2, 38, 4429, 4429, 64, True))
    out.append(Case("sd35-medium-dual-4096-d64", 2, 24, 4096, 4096, 64, True))
    # Flux at 1024 px: 4096 image + 512 text tokens, 24 heads of 128 (double and single blocks
    # alike); at 512 px 1024 + 512.
    out.append(Case("flux-joint-4608-d128", 1, 24, 4608, 4608, 128, True))
    out.append(Case("flux-joint-1536-d128", 1, 24, 1536, 1536, 128, True))
    return out


def tiny(case: Case) -> Case:
    """The case scaled down for the interpreter: 2 heads, batch 1, long sequences / 64."""
    n_q = max(16, case.n_q // 64)
    n_k = n_q if case.self_attention else case.n_k
    return replace(case, name=case.name + "-tiny", batch=1, heads=2, n_q=n_q, n_k=n_k)


def diffusers_views(
    case: Case, dtype: torch.dtype, device: str = "cuda"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(0)
    inner = case.heads * case.head_dim

    def project(tokens: int) -> torch.Tensor:
        x = torch.randn(case.batch, tokens, inner, device=device, dtype=dtype, generator=gen)
        return x.view(case.batch, tokens, case.heads, case.head_dim).transpose(1, 2)

    return project(case.n_q), project(case.n_k), project(case.n_k)


def accuracy(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    out = out.float().flatten()
    ref = ref.flatten()
    cosine = F.cosine_similarity(out, ref, dim=0).item()
    rel_l1 = ((out - ref).abs().sum() / ref.abs().sum()).item()
    return cosine, rel_l1


def sdpa_choice(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Any:
    from torch.nn.attention import SDPBackend

    return SDPBackend(torch._fused_sdp_choice(q, k, v))


def median_ms(fn: Callable[[], Any], cuda: bool) -> float:
    """``triton.testing.do_bench``'s median on the GPU; on the CPU (``--tiny``) the wall clock's, of 3."""
    if cuda:
        import triton.testing

        return triton.testing.do_bench(fn, return_mode="median")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def time_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: Any) -> tuple[float, torch.Tensor]:
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel([backend]):
        out = F.scaled_dot_product_attention(q, k, v)
        ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v), q.is_cuda)
    return ms, out


def run_case(
    case: Case, dtype: torch.dtype, all_backends: bool, device: str = "cuda"
) -> list[dict[str, Any]]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = diffusers_views(case, dtype, device)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())

    chosen = sdpa_choice(q, k, v)
    sdpa_ms, sdpa_out = time_sdpa(q, k, v, chosen)
    ours_out = attention(q, k, v)  # first call autotunes
    ours_ms = median_ms(lambda: attention(q, k, v), q.is_cuda)

    def line(backend: str, ms: float, out: torch.Tensor, **extra: Any) -> dict[str, Any]:
        cosine, rel_l1 = accuracy(out, ref)
        return {
            "bench": BENCH,
            "case": case.name,
            "shape": case.shape,
            "dtype": str(dtype).removeprefix("torch."),
            "backend": backend,
            "ms": round(ms, 5),
            "tflops": round(case.flops / ms / 1e9, 2),
            "ratio_to_sdpa": round(sdpa_ms / ms, 3),
            "sdpa_backend": chosen.name,
            "cosine": round(cosine, 7),
            "rel_l1": float(f"{rel_l1:.3g}"),
            **extra,
        }

    ratio = sdpa_ms / ours_ms
    lines = [
        line("sdpa", sdpa_ms, sdpa_out),
        line("triton", ours_ms, ours_out, goal=case.goal, meets_goal=ratio >= case.goal),
    ]
    if all_backends:
        for backend in (
            SDPBackend.FLASH_ATTENTION,
            SDPBackend.EFFICIENT_ATTENTION,
            SDPBackend.CUDNN_ATTENTION,
        ):
            if backend == chosen:
                continue
            try:
                ms, out = time_sdpa(q, k, v, backend)
            except RuntimeError as exc:  # this backend refuses these inputs
                reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                lines.append(
                    {
                        "bench": BENCH,
                        "case": case.name,
                        "backend": f"sdpa-{backend.name}",
                        "unsupported": reason,
                    }
                )
                continue
            lines.append(line(f"sdpa-{backend.name}", ms, out))
    return lines


def compile_check(dtype: torch.dtype) -> dict[str, Any]:
    """The kernel inside ``torch.compile(fullgraph=True)`` (Inductor sees the ``triton_op``)."""
    import triton.testing

    case = Case("torch-compile-sd15-1024-d80", 2, 8, 1024, 1024, 80, True)
    q, k, v = diffusers_views(case, dtype)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())

    def block(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = attention(q * 1.0, k, v)
        return out.transpose(1, 2).reshape(case.batch, case.n_q, case.heads * case.head_dim)

    record: dict[str, Any] = {"bench": BENCH, "case": case.name, "shape": case.shape, "backend": "triton"}
    try:
        compiled = torch.compile(block, fullgraph=True)
        out = compiled(q, k, v)
        ms = triton.testing.do_bench(lambda: compiled(q, k, v), return_mode="median")
    except Exception as exc:  # noqa: BLE001 -- a failure to compile is a result to report, not a crash
        return {**record, "compiled": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    out = out.view(case.batch, case.n_q, case.heads, case.head_dim).transpose(1, 2)
    cosine, rel_l1 = accuracy(out, ref)
    return {
        **record,
        "compiled": True,
        "ms": round(ms, 5),
        "cosine": round(cosine, 7),
        "rel_l1": float(f"{rel_l1:.3g}"),
    }


def skip(reason: str) -> None:
    print(json.dumps({"bench": BENCH, "skipped": reason}))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--no-compile-check", action="store_true", help="skip the torch.compile check")
    parser.add_argument("--cases", default="", help="comma-separated prefixes of case names (default: all)")
    parser.add_argument(
        "--all-sdpa-backends",
        action="store_true",
        help="also time every other SDPA backend that accepts the inputs",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="scaled-down cases on the CPU (interpreter), fp32"
    )
    args = parser.parse_args()

    if args.tiny:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernel is first imported
    from kernels.attention import interpreted, triton_available

    if not triton_available():
        skip("Triton is not installed")
        return 0
    if args.tiny and not interpreted():
        skip("--tiny needs the kernel under TRITON_INTERPRET=1, but it was imported without it")
        return 0
    if not args.tiny:
        if not torch.cuda.is_available():
            skip("no CUDA device (--tiny checks the bench on the CPU)")
            return 0
        if interpreted():
            skip("TRITON_INTERPRET=1 is set; benchmarks need the compiled kernel")
            return 0

    prefixes = [p for p in args.cases.split(",") if p]
    selected = [c for c in cases() if not prefixes or any(c.name.startswith(p) for p in prefixes)]
    if args.tiny:
        selected = [tiny(c) for c in selected]
    dtype = torch.float32 if args.tiny else DTYPES[args.dtype]
    device = "cpu" if args.tiny else "cuda"
    import triton

    header = {
        "bench": BENCH,
        "device": "cpu (Triton interpreter)" if args.tiny else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "dtype": str(dtype).removeprefix("torch."),
    }
    print(json.dumps(header), flush=True)
    met = 0
    worst = float("inf")
    for case in selected:
        if not args.tiny:
            torch.cuda.empty_cache()
        for record in run_case(case, dtype, args.all_sdpa_backends, device):
            if args.tiny:  # CPU times: no goals to meet
                record.pop("goal", None)
                record.pop("meets_goal", None)
            print(json.dumps(record), flush=True)
            if record.get("backend") == "triton":
                met += bool(record.get("meets_goal"))
                worst = min(worst, record["ratio_to_sdpa"])
    if not args.no_compile_check and not args.tiny:  # tests cover torch.compile on the CPU
        print(json.dumps(compile_check(dtype)), flush=True)
    summary = {
        "bench": BENCH,
        "case": "summary",
        "goals_met": None if args.tiny else met,
        "goals_total": None if args.tiny else len(selected),
        "worst_ratio_to_sdpa": worst if selected else None,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
