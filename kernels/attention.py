"""Flash attention for diffusion models' shapes, in Triton.

    from kernels.attention import attention, triton_available
    out = attention(q, k, v)          # (batch, heads, seq, head_dim), any strides

What it covers: non-causal attention, no mask, fp16 / bf16 (fp32 accumulation) and fp32,
head dimensions 16 to 256 (40, 80 and 160 computed as power-of-two pieces, not padded to
64 / 96 / 256), any query and key lengths (77 text tokens, odd lengths), and inputs with any
strides (diffusers' ``.view(b, s, h, d).transpose(1, 2)`` views are read in place, never
copied). The output is a (batch, heads, seq, head_dim) view of a (batch, seq, heads,
head_dim) buffer, so the processor's ``transpose(1, 2).reshape(b, s, h * d)`` costs nothing.
There is no backward: it is for sampling.

Where it runs: on CUDA tensors, compiled by Triton. On the CPU only under Triton's
interpreter, which is for tests: ``TRITON_INTERPRET=1`` must be set in the environment
before this module is first imported (the ``@triton.jit`` decorators read it when they
run), and bf16 dots are not trustworthy there.

torch.compile: the kernel is registered as the operator ``torch.ops.studio.flash_attention``.
On the GPU it is a ``torch.library.triton_op``, so Inductor sees and schedules the Triton
kernel itself; under the interpreter (where ``triton_op`` cannot trace the kernel) it is a
``torch.library.custom_op`` with a fake implementation. In eager mode ``attention`` launches
the kernel directly, skipping the operator dispatch.

Without Triton this module still imports; ``triton_available()`` is then False and
``attention`` raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

try:
    import triton

    from kernels import _flash_attention as _fa
except ImportError:  # Triton missing (CPU-only installs): everything falls back to SDPA
    triton = None  # type: ignore[assignment]
    _fa = None  # type: ignore[assignment]

OP_NAME = "studio::flash_attention"
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INTERPRETER_BLOCK = 32  # tile size under the interpreter, where autotuning does not work


def triton_available() -> bool:
    """Whether Triton is installed and the kernel is defined (compiled or interpreted)."""
    return _fa is not None


def interpreted() -> bool:
    """Whether the kernel was defined under ``TRITON_INTERPRET=1`` (runs on CPU tensors)."""
    return _fa is not None and _fa.INTERPRETED


def kernel_device_ok(device: torch.device) -> bool:
    """Whether the kernel can run on tensors on ``device``: CUDA compiled, CPU interpreted."""
    if _fa is None:
        return False
    return device.type == ("cpu" if _fa.INTERPRETED else "cuda")


def head_dim_pieces(head_dim: int) -> tuple[int, int]:
    """The power-of-two pieces the kernel computes a head dimension in, e.g. 40 -> (32, 16)."""
    if _fa is None:
        raise RuntimeError("Triton is not installed")
    return _fa.split_head_dim(head_dim)


def unsupported_reason(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """Why the kernel cannot take these inputs, or None when it can."""
    if _fa is None:
        return "Triton is not installed"
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return "q, k and v must be 4-D (batch, heads, seq, head_dim)"
    batch, heads, n_q, head_dim = q.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[1] != heads or k.shape[3] != head_dim:
        return f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if q.dtype not in SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"dtypes must be one of fp16, bf16, fp32 and equal, got {q.dtype}, {k.dtype}, {v.dtype}"
    if _fa.INTERPRETED and q.dtype == torch.bfloat16:
        return "bf16 dots give wrong results under the Triton interpreter"
    if not _fa.MIN_PIECE <= head_dim <= _fa.MAX_HEAD_DIM:
        return f"head_dim {head_dim} outside [{_fa.MIN_PIECE}, {_fa.MAX_HEAD_DIM}]"
    if n_q == 0 or k.shape[2] == 0 or batch * heads == 0:
        return "empty inputs"
    if not (q.device == k.device == v.device) or not kernel_device_ok(q.device):
        where = "CPU tensors (interpreter)" if _fa.INTERPRETED else "CUDA tensors"
        return f"the kernel runs on {where}, got {q.device}, {k.device}, {v.device}"
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return "the kernel has no backward"
    return None


def kernel_preferred(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> bool:
    """Whether an attention processor should call ``attention`` here rather than SDPA.

    Yes when the kernel can take the inputs (``unsupported_reason``), there is no mask, and
    they are not fp32 on the GPU: SDPA's fp32 paths beat IEEE fp32 dots there, so fp32 goes
    through the kernel only under the interpreter (tests). Every processor in ``kernels`` asks
    this one question, so the rule lives in one place.
    """
    if attention_mask is not None:
        return False
    if q.dtype == torch.float32 and not interpreted():
        return False
    return unsupported_reason(q, k, v) is None


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """softmax(q @ k^T * scale) @ v for (batch, heads, seq, head_dim) tensors of any strides.

    ``scale`` defaults to ``head_dim ** -0.5``. ``block_m`` / ``block_n`` pin the tile sizes
    (powers of two, at least 16) instead of autotuning; tests use them to exercise tiling.
    """
    reason = unsupported_reason(q, k, v)
    if reason is not None:
        raise ValueError(f"flash attention cannot run: {reason}")
    for name, block in (("block_m", block_m), ("block_n", block_n)):
        if block is not None and (block < 16 or block & (block - 1)):
            raise ValueError(f"{name} must be a power of two >= 16, got {block}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if torch.compiler.is_compiling():
        return torch.ops.studio.flash_attention(q, k, v, scale, block_m or 0, block_n or 0)
    return _launch(q, k, v, scale, block_m or 0, block_n or 0, _direct)


def _direct(kernel: Any) -> Any:
    return kernel


def _empty_out(q: torch.Tensor) -> torch.Tensor:
    batch, heads, n_q, head_dim = q.shape
    return q.new_empty((batch, n_q, heads, head_dim)).transpose(1, 2)


def _alignment(*tensors: torch.Tensor) -> int:
    """Elements that divide every batch, head and sequence stride: 16 bytes' worth, or 1."""
    align = 16 // tensors[0].element_size()
    strides_aligned = all(s % align == 0 for t in tensors for s in t.stride()[:3])
    return align if strides_aligned else 1


def _launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    block_m: int,
    block_n: int,
    wrap: Callable[[Any], Any],
) -> torch.Tensor:
    """Allocate the output and launch the kernel through ``wrap`` (``wrap_triton`` when traced)."""
    batch, heads, n_q, _ = q.shape
    head_dim = int(q.shape[-1])  # a compile-time constant of the kernel (specializes if symbolic)
    n_k = k.shape[2]
    out = _empty_out(q)
    d0, d1 = _fa.split_head_dim(head_dim)
    args = (
        q, k, v, out, scale * _fa.LOG2_E,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        heads, n_q, n_k,
    )  # fmt: skip
    meta = {
        "HEAD_DIM": head_dim,
        "D0": d0,
        "D1": d1,
        "IEEE_FP32": q.dtype == torch.float32,
        "ALIGN": _alignment(q, k, v, out),
    }
    if _fa.INTERPRETED or block_m or block_n:
        bm = block_m or INTERPRETER_BLOCK
        bn = block_n or INTERPRETER_BLOCK
        grid = (triton.cdiv(n_q, bm), batch * heads)
        extra = {} if _fa.INTERPRETED else {"num_warps": 4 if bm <= 64 else 8, "num_stages": 2}
        wrap(_fa.attention_fwd)[grid](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, **extra)
    else:

        def grid(config: dict[str, Any]) -> tuple[int, int]:
            return (triton.cdiv(n_q, config["BLOCK_M"]), batch * heads)

        wrap(_fa.attention_fwd_autotuned)[grid](*args, **meta)
    return out


def _flash_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, block_m: int, block_n: int
) -> torch.Tensor:
    return _launch(q, k, v, scale, block_m, block_n, torch.library.wrap_triton)


def _flash_attention_fake(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, block_m: int, block_n: int
) -> torch.Tensor:
    return _empty_out(q)


def _register_op() -> None:
    if _fa is None:
        return
    if not _fa.INTERPRETED:
        torch.library.triton_op(OP_NAME, _flash_attention_op, mutates_args=())
        return
    # triton_op would trace the interpreted kernel as plain Python; an opaque op is honest here.
    op = torch.library.custom_op(OP_NAME, _flash_attention_op, mutates_args=())
    op.register_fake(_flash_attention_fake)


_register_op()
