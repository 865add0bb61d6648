"""Our Triton attention kernel against PyTorch's SDPA on diffusion models' attention shapes.

    .venv/bin/python bench/attention.py [--dtype fp16|bf16] [--cases sd15,sdxl] [--all-sdpa-backends]
                                        [--no-compile-check]

Needs a CUDA GPU and Triton; elsewhere it prints one ``skipped`` line and exits 0. Do not
set ``TRITON_INTERPRET``: the interpreter is for tests only.

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

Goals (issue 5, on an H100, ratios to SDPA in the same run): at least 1.15x at head dim 40
and 4096 tokens, at least 1.0x at head dims 64 and 80, nowhere below 0.95x.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kernels.attention import attention, interpreted, triton_available  # noqa: E402

BENCH = "attention"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


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
    # SD3 medium at 1024 px: joint attention over 4096 image + 333 text tokens, 24 heads of 64.
    out.append(Case("sd3-joint-4429-d64", 2, 24, 4429, 4429, 64, True))
    # Flux at 1024 px: 4096 image + 512 text tokens, 24 heads of 128.
    out.append(Case("flux-joint-4608-d128", 1, 24, 4608, 4608, 128, True))
    return out


def diffusers_views(case: Case, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    inner = case.heads * case.head_dim

    def project(tokens: int) -> torch.Tensor:
        x = torch.randn(case.batch, tokens, inner, device="cuda", dtype=dtype, generator=gen)
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


def time_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: Any) -> tuple[float, torch.Tensor]:
    import triton.testing
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel([backend]):
        out = F.scaled_dot_product_attention(q, k, v)
        ms = triton.testing.do_bench(lambda: F.scaled_dot_product_attention(q, k, v), return_mode="median")
    return ms, out


def run_case(case: Case, dtype: torch.dtype, all_backends: bool) -> list[dict[str, Any]]:
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = diffusers_views(case, dtype)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())

    chosen = sdpa_choice(q, k, v)
    sdpa_ms, sdpa_out = time_sdpa(q, k, v, chosen)
    ours_out = attention(q, k, v)  # first call autotunes
    ours_ms = triton.testing.do_bench(lambda: attention(q, k, v), return_mode="median")

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
    args = parser.parse_args()

    if not torch.cuda.is_available():
        skip("no CUDA device")
        return 0
    if not triton_available():
        skip("Triton is not installed")
        return 0
    if interpreted():
        skip("TRITON_INTERPRET=1 is set; benchmarks need the compiled kernel")
        return 0

    prefixes = [p for p in args.cases.split(",") if p]
    selected = [c for c in cases() if not prefixes or any(c.name.startswith(p) for p in prefixes)]
    import triton

    header = {
        "bench": BENCH,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "dtype": args.dtype,
    }
    print(json.dumps(header), flush=True)
    met = 0
    worst = float("inf")
    for case in selected:
        torch.cuda.empty_cache()
        for record in run_case(case, DTYPES[args.dtype], args.all_sdpa_backends):
            print(json.dumps(record), flush=True)
            if record.get("backend") == "triton":
                met += bool(record["meets_goal"])
                worst = min(worst, record["ratio_to_sdpa"])
    if not args.no_compile_check:
        print(json.dumps(compile_check(DTYPES[args.dtype])), flush=True)
    summary = {
        "bench": BENCH,
        "case": "summary",
        "goals_met": met,
        "goals_total": len(selected),
        "worst_ratio_to_sdpa": worst if selected else None,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
