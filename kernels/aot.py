"""Compile the attention kernel for a GPU ahead of time, on a machine without one.

    .venv/bin/python -m kernels.aot [--arch 90] [--head-dims 40,80] [--all-configs]

Triton's interpreter (what the CPU tests run) executes the kernel as numpy code, so it never
meets the GPU compiler. This compiles the real thing for an NVIDIA target (sm_90 = H100 by
default) with the specializations Triton's JIT would make for diffusers' inputs (pointers
16-byte aligned, strides of 1 as constants, strides divisible by 16 marked so) and prints
one JSON line per kernel: tensor-core instructions in the PTX, shared memory, and, where
Triton's bundled ``ptxas`` can assemble it, registers and spill bytes. It needs Triton but no
GPU and no CUDA driver; ``TRITON_INTERPRET`` must not be set.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if os.environ.get("TRITON_INTERPRET") == "1":
    raise SystemExit("kernels.aot compiles for the GPU: unset TRITON_INTERPRET")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from kernels import _flash_attention as fa  # noqa: E402

POINTERS = ("Q", "K", "V", "Out")
DTYPE_NAMES = {"fp16": ("fp16", 2), "bf16": ("bf16", 2), "fp32": ("fp32", 4)}


@dataclass(frozen=True)
class Shape:
    """An attention call as diffusers makes it: (batch, seq, heads * head_dim) projections, viewed."""

    batch: int
    heads: int
    n_q: int
    n_k: int
    head_dim: int

    def scalar_args(self) -> dict[str, int]:
        inner = self.heads * self.head_dim
        q = (self.n_q * inner, self.head_dim, inner, 1)
        k = (self.n_k * inner, self.head_dim, inner, 1)
        values = [*q, *k, *k, *q, self.heads, self.n_q, self.n_k]
        return dict(zip(fa._attention_fwd.arg_names[5:24], values, strict=True))


def compile_kernel(
    shape: Shape, config: triton.Config, dtype: str = "fp16", arch: int = 90
) -> dict[str, Any]:
    """Compile one specialization; returns what the PTX and ptxas say about it."""
    type_name, elem_bytes = DTYPE_NAMES[dtype]
    names = fa._attention_fwd.arg_names
    scalars = shape.scalar_args()
    signature: dict[str, str] = {}
    constants: dict[tuple[int, ...], Any] = {}
    attrs: dict[tuple[int, ...], list[list[Any]]] = {}
    for index, name in enumerate(names):
        if name in POINTERS:
            signature[name] = "*" + type_name
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif name == "qk_scale":
            signature[name] = "fp32"
        elif name in scalars:
            value = scalars[name]
            if value == 1:
                signature[name] = "constexpr"
                constants[(index,)] = 1
            else:
                signature[name] = "i32"
                if value % 16 == 0:
                    attrs[(index,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "constexpr"
    d0, d1 = fa.split_head_dim(shape.head_dim)
    strides = [v for n, v in scalars.items() if n.startswith("stride") and not n.endswith("d")]
    align = 16 // elem_bytes
    meta = {
        "HEAD_DIM": shape.head_dim,
        "D0": d0,
        "D1": d1,
        "IEEE_FP32": dtype == "fp32",
        "ALIGN": align if all(s % align == 0 for s in strides) else 1,
        **config.kwargs,
    }
    for name, value in meta.items():
        constants[(names.index(name),)] = value
    source = ASTSource(fa._attention_fwd, signature, constexprs=constants, attrs=attrs)
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    ptx = kernel.asm["ptx"]
    report: dict[str, Any] = {
        "shape": f"{shape.batch}x{shape.heads}x{shape.n_q}x{shape.n_k}x{shape.head_dim}",
        "dtype": dtype,
        "block_m": config.kwargs["BLOCK_M"],
        "block_n": config.kwargs["BLOCK_N"],
        "num_warps": config.num_warps,
        "num_stages": config.num_stages,
        "align": meta["ALIGN"],
        "wgmma": ptx.count("wgmma.mma_async"),
        "mma_sync": ptx.count("mma.sync"),
        "cp_async": ptx.count("cp.async"),
        "shared_bytes": kernel.metadata.shared,
    }
    report.update(ptxas_usage(ptx, arch))
    return report


def ptxas_usage(ptx: str, arch: int) -> dict[str, Any]:
    """Registers and spill bytes from the newest ptxas bundled with Triton (empty if none can)."""
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for candidate in sorted(bin_dir.glob("ptxas*"), reverse=True):
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as handle:
            handle.write(ptx)
        try:
            result = subprocess.run(
                [
                    str(candidate),
                    f"-arch=sm_{arch}{'a' if arch >= 90 else ''}",
                    "-v",
                    handle.name,
                    "-o",
                    os.devnull,
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            os.unlink(handle.name)
        registers = re.search(r"Used (\d+) registers", result.stderr)
        if result.returncode == 0 and registers:
            spills = re.search(r"(\d+) bytes spill stores", result.stderr)
            return {
                "registers": int(registers.group(1)),
                "spill_bytes": int(spills.group(1)) if spills else 0,
            }
    return {}


def default_shapes() -> list[Shape]:
    return [
        Shape(2, 8, 4096, 4096, 40),
        Shape(2, 8, 4096, 77, 40),
        Shape(2, 8, 1024, 1024, 80),
        Shape(2, 8, 256, 256, 160),
        Shape(2, 10, 4096, 4096, 64),
        Shape(2, 24, 4429, 4429, 64),  # SD3 medium, 1024 px: 4096 image + 333 text tokens
        Shape(1, 24, 4608, 4608, 128),  # Flux, 1024 px: 4096 image + 512 text tokens
    ]


def configs_for(shape: Shape, all_configs: bool) -> list[triton.Config]:
    d0, d1 = fa.split_head_dim(shape.head_dim)
    named = {"N_Q": shape.n_q, "N_K": shape.n_k}
    kept = fa._prune_configs(fa._autotune_configs(), named, D0=d0, D1=d1)
    return kept if all_configs else kept[:1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100), 80 (A100)")
    parser.add_argument("--dtype", choices=sorted(DTYPE_NAMES), default="fp16")
    parser.add_argument("--head-dims", default="", help="comma-separated filter, e.g. 40,80")
    parser.add_argument("--all-configs", action="store_true", help="every autotune config the pruning keeps")
    args = parser.parse_args(argv)
    wanted = {int(d) for d in args.head_dims.split(",") if d}
    for shape in default_shapes():
        if wanted and shape.head_dim not in wanted:
            continue
        for config in configs_for(shape, args.all_configs):
            print(json.dumps(compile_kernel(shape, config, args.dtype, args.arch)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
