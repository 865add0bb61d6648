"""The Triton flash-attention forward kernel. Use it through ``kernels.attention``.

This module imports Triton unconditionally; ``kernels.attention`` guards the import so that
the package still loads on machines without Triton.

``TRITON_INTERPRET=1`` must be in the environment *before* this module is imported: the
``@triton.jit`` decorators below read it once, when they run, to choose between compiling
for the GPU and interpreting on the CPU (numpy). ``INTERPRETED`` records what they chose.

How the kernel fits diffusion's shapes:

- Head dimensions that are not a power of two are split into two power-of-two pieces
  (``split_head_dim``): 40 = 32 + 16 (8 of them masked padding), 80 = 64 + 16,
  160 = 128 + 32. Both matmuls (Q @ K^T and P @ V) run piece by piece, so the tensor cores
  do 48/40 of the true work at head dim 40, 80/80 at 80 and 160/160 at 160, where a
  kernel that rounds up to a power of two or to FlashAttention's sizes does 64/40, 96/80
  and 160 (or 256)/160. A piece is never narrower than 16, the smallest ``tl.dot`` operand.
- Keys are walked in tiles with an online softmax (running max and sum in fp32). All full
  key tiles run without masks; only the last, partial tile (77 text tokens, odd lengths)
  is masked.
- Any strides: each of q, k, v and out is addressed through its own four strides, so the
  ``.view(b, s, h, d).transpose(1, 2)`` views diffusers hands over are read in place. When
  every stride is a multiple of 16 bytes the launcher says so (``ALIGN``), so loads
  vectorize and pipeline even where Triton's own stride specialization (multiples of 16
  elements) cannot see it, as with head dim 40's head stride of 40.
- fp16 and bf16 inputs go to the tensor cores and accumulate in fp32; fp32 inputs use
  IEEE fp32 dots (no TF32) so that fp32 results are exact enough to test against.
"""

from __future__ import annotations

import os
from typing import Any

import triton
import triton.language as tl

INTERPRETED: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

LOG2_E = 1.4426950408889634
MIN_PIECE = 16  # tl.dot needs every operand dimension >= 16
MAX_HEAD_DIM = 256


def next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def split_head_dim(head_dim: int) -> tuple[int, int]:
    """The two power-of-two pieces a head dimension is computed in: (main, tail).

    ``main`` is the largest power of two not above ``head_dim``; ``tail`` covers the rest,
    rounded up to a power of two of at least 16 (0 when ``head_dim`` is a power of two).
    """
    if not MIN_PIECE <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim must be in [{MIN_PIECE}, {MAX_HEAD_DIM}], got {head_dim}")
    main = 1 << (head_dim.bit_length() - 1)
    rest = head_dim - main
    tail = 0 if rest == 0 else max(MIN_PIECE, next_power_of_2(rest))
    return main, tail


@triton.jit
def _attend_tile(
    acc0,
    acc1,
    m_i,
    l_i,
    q0,
    q1,
    k_ptrs0,
    k_ptrs1,
    v_ptrs0,
    v_ptrs1,
    start_n,
    offs_n,
    offs_d1,
    n_keys,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    D1: tl.constexpr,
    MASK_N: tl.constexpr,
    TAIL_PADDED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One key tile: scores, online-softmax update, and P @ V into the accumulators."""
    if MASK_N:
        n_valid = (start_n + offs_n) < n_keys
        k0 = tl.load(k_ptrs0, mask=n_valid[:, None], other=0.0)
        v0 = tl.load(v_ptrs0, mask=n_valid[:, None], other=0.0)
    else:
        k0 = tl.load(k_ptrs0)
        v0 = tl.load(v_ptrs0)
    s = tl.dot(q0, tl.trans(k0), input_precision=DOT_PRECISION)
    if D1 > 0:
        if MASK_N:
            if TAIL_PADDED:
                kv_mask = n_valid[:, None] & (offs_d1[None, :] < HEAD_DIM)
            else:
                kv_mask = n_valid[:, None]
            k1 = tl.load(k_ptrs1, mask=kv_mask, other=0.0)
            v1 = tl.load(v_ptrs1, mask=kv_mask, other=0.0)
        elif TAIL_PADDED:
            d_valid = offs_d1[None, :] < HEAD_DIM
            k1 = tl.load(k_ptrs1, mask=d_valid, other=0.0)
            v1 = tl.load(v_ptrs1, mask=d_valid, other=0.0)
        else:
            k1 = tl.load(k_ptrs1)
            v1 = tl.load(v_ptrs1)
        s = tl.dot(q1, tl.trans(k1), s, input_precision=DOT_PRECISION)
    s = s * qk_scale
    if MASK_N:
        s = tl.where(n_valid[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.math.exp2(s - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    p = p.to(v0.dtype)
    acc0 = tl.dot(p, v0, acc0 * alpha[:, None], input_precision=DOT_PRECISION)
    if D1 > 0:
        acc1 = tl.dot(p, v1, acc1 * alpha[:, None], input_precision=DOT_PRECISION)
    return acc0, acc1, m_new, l_i


@triton.jit
def _attention_fwd(
    Q,
    K,
    V,
    Out,
    qk_scale,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_ob,
    stride_oh,
    stride_om,
    stride_od,
    n_heads,
    N_Q,
    N_K,
    HEAD_DIM: tl.constexpr,
    D0: tl.constexpr,
    D1: tl.constexpr,
    IEEE_FP32: tl.constexpr,
    ALIGN: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Non-causal attention forward. Grid: (query tiles, batch * heads).

    ``qk_scale`` is the softmax scale times log2(e) (the kernel uses exp2). ``IEEE_FP32`` is
    set for fp32 inputs: their dots run in full fp32 rather than TF32. ``ALIGN`` (elements) divides
    every batch, head and sequence stride: the launcher sets it so that rows start 16-byte
    aligned (head dim 40 gives a head stride of 40, which Triton's own specialization, by 16
    elements, cannot see is aligned), letting loads vectorize and pipeline.
    """
    TAIL_PADDED: tl.constexpr = D0 + D1 != HEAD_DIM
    DOT_PRECISION: tl.constexpr = "ieee" if IEEE_FP32 else "tf32"  # ignored for fp16 / bf16 inputs
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // n_heads).to(tl.int64)
    off_h = (pid_bh % n_heads).to(tl.int64)
    q_off = off_b * stride_qb + off_h * stride_qh
    k_off = off_b * stride_kb + off_h * stride_kh
    v_off = off_b * stride_vb + off_h * stride_vh
    o_off = off_b * stride_ob + off_h * stride_oh
    if ALIGN > 1:
        q_off = tl.multiple_of(q_off, ALIGN)
        k_off = tl.multiple_of(k_off, ALIGN)
        v_off = tl.multiple_of(v_off, ALIGN)
        o_off = tl.multiple_of(o_off, ALIGN)
        stride_qm = tl.multiple_of(stride_qm, ALIGN)
        stride_kn = tl.multiple_of(stride_kn, ALIGN)
        stride_vn = tl.multiple_of(stride_vn, ALIGN)
        stride_om = tl.multiple_of(stride_om, ALIGN)
    q_base = Q + q_off
    k_base = K + k_off
    v_base = V + v_off
    o_base = Out + o_off

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d0 = tl.arange(0, D0)
    m_valid = offs_m < N_Q

    q0 = tl.load(
        q_base + offs_m[:, None] * stride_qm + offs_d0[None, :] * stride_qd, mask=m_valid[:, None], other=0.0
    )
    k_ptrs0 = k_base + offs_n[:, None] * stride_kn + offs_d0[None, :] * stride_kd
    v_ptrs0 = v_base + offs_n[:, None] * stride_vn + offs_d0[None, :] * stride_vd
    acc0 = tl.zeros([BLOCK_M, D0], dtype=tl.float32)
    if D1 > 0:
        offs_d1 = D0 + tl.arange(0, D1)
        q_mask = m_valid[:, None]
        if TAIL_PADDED:
            q_mask = q_mask & (offs_d1[None, :] < HEAD_DIM)
        q1 = tl.load(
            q_base + offs_m[:, None] * stride_qm + offs_d1[None, :] * stride_qd, mask=q_mask, other=0.0
        )
        k_ptrs1 = k_base + offs_n[:, None] * stride_kn + offs_d1[None, :] * stride_kd
        v_ptrs1 = v_base + offs_n[:, None] * stride_vn + offs_d1[None, :] * stride_vd
        acc1 = tl.zeros([BLOCK_M, D1], dtype=tl.float32)
    else:
        # Placeholders: the tail piece does not exist, these are never read.
        offs_d1 = offs_d0
        q1 = q0
        k_ptrs1 = k_ptrs0
        v_ptrs1 = v_ptrs0
        acc1 = acc0
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    n_full = (N_K // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc0, acc1, m_i, l_i = _attend_tile(
            acc0, acc1, m_i, l_i, q0, q1,
            k_ptrs0 + start_n * stride_kn, k_ptrs1 + start_n * stride_kn,
            v_ptrs0 + start_n * stride_vn, v_ptrs1 + start_n * stride_vn,
            start_n, offs_n, offs_d1, N_K, qk_scale,
            HEAD_DIM, D1, False, TAIL_PADDED, DOT_PRECISION,
        )  # fmt: skip
    if n_full < N_K:
        acc0, acc1, m_i, l_i = _attend_tile(
            acc0, acc1, m_i, l_i, q0, q1,
            k_ptrs0 + n_full * stride_kn, k_ptrs1 + n_full * stride_kn,
            v_ptrs0 + n_full * stride_vn, v_ptrs1 + n_full * stride_vn,
            n_full, offs_n, offs_d1, N_K, qk_scale,
            HEAD_DIM, D1, True, TAIL_PADDED, DOT_PRECISION,
        )  # fmt: skip

    inv_l = 1.0 / l_i
    out0 = (acc0 * inv_l[:, None]).to(Out.dtype.element_ty)
    tl.store(o_base + offs_m[:, None] * stride_om + offs_d0[None, :] * stride_od, out0, mask=m_valid[:, None])
    if D1 > 0:
        out1 = (acc1 * inv_l[:, None]).to(Out.dtype.element_ty)
        tl.store(o_base + offs_m[:, None] * stride_om + offs_d1[None, :] * stride_od, out1, mask=q_mask)


def _autotune_configs() -> list[triton.Config]:
    """The tiles autotuning may try; ``_prune_configs`` drops those that cannot fit a call.

    Head dims 64 (SDXL, SD3, SD3.5) and 128 (Flux) were compiled ahead of time for sm_90 at
    SD3's and Flux's 1024 px shapes (``python -m kernels.aot``), fp16 and bf16. Kept at head
    dim 128 (shared memory, registers per thread, no spills): 128x64 8 warps 3 stages
    (128 KiB, 177), 4 stages (160 KiB, 177), 128x128 8 warps 2 stages (160 KiB, 250) and
    3 stages (224 KiB, 248), 64x128 4 warps (144 / 208 KiB, 254), 64x64 and 128x32 4 warps.
    At head dim 64 every tile fits (at most 112 KiB) and 128x128 needs 8 warps.
    """
    shapes = [
        # BLOCK_M, BLOCK_N, num_warps, num_stages
        (128, 64, 4, 3),
        (128, 64, 8, 3),
        (128, 128, 8, 3),
        (128, 128, 8, 2),
        (128, 32, 4, 3),
        (128, 64, 4, 4),
        (128, 64, 8, 4),
        (64, 64, 4, 3),
        (64, 128, 4, 3),
        (64, 128, 4, 2),
        (64, 32, 4, 2),
        (64, 16, 4, 2),
        (128, 16, 4, 2),
    ]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)
        for bm, bn, warps, stages in shapes
    ]


# Bytes: what one block may opt in to on sm_90 (H100, H200: 227 KiB). The estimate below is
# exactly what Triton allocates, so a tile that fits here launches.
SHARED_MEMORY_BUDGET = 227 * 1024
# fp32 accumulator plus score values each thread holds: BLOCK_M * (head width + BLOCK_N)
# spread over the block's threads. Above this, sm_90 compiles spill registers (checked at
# head dims 40 to 128: 128x64 with 4 warps at 128 wide spills, 64x128 does not).
FP32_VALUES_PER_THREAD = 160


def fp32_values_per_thread(block_m: int, block_n: int, num_warps: int, width: int) -> float:
    """The output accumulator (BLOCK_M x width) and scores (BLOCK_M x BLOCK_N) per thread."""
    return block_m * (width + block_n) / (32 * num_warps)


def shared_memory_estimate(block_m: int, block_n: int, num_stages: int, width: int, elem_bytes: int) -> int:
    """Bytes of shared memory the kernel needs: K and V tiles per pipeline stage, plus Q.

    Matches what Triton 3.9 allocates for sm_90 (checked with ahead-of-time compiles).
    """
    return (num_stages * block_n * 2 + block_m) * width * elem_bytes


def _prune_configs(
    configs: list[triton.Config], named_args: dict[str, Any], **kwargs: Any
) -> list[triton.Config]:
    """Drop tiles far larger than the sequences, tiles that cannot fit in shared memory, and
    tiles that spill registers at wide head dims (seen in ahead-of-time sm_90 compiles)."""
    n_q = named_args["N_Q"]
    n_k = named_args["N_K"]
    width = kwargs.get("D0", named_args.get("D0", 64)) + kwargs.get("D1", named_args.get("D1", 0))
    elem_bytes = 4 if kwargs.get("IEEE_FP32", named_args.get("IEEE_FP32", False)) else 2
    kept = []
    for config in configs:
        bm = config.kwargs["BLOCK_M"]
        bn = config.kwargs["BLOCK_N"]
        if bn > max(MIN_PIECE, next_power_of_2(n_k)) or bm > max(64, next_power_of_2(n_q)):
            continue
        if bn == MIN_PIECE and n_k > 128:
            continue  # tiny key tiles only pay off for short (text) key sequences
        if shared_memory_estimate(bm, bn, config.num_stages, width, elem_bytes) > SHARED_MEMORY_BUDGET:
            continue
        if fp32_values_per_thread(bm, bn, config.num_warps, width) > FP32_VALUES_PER_THREAD:
            continue
        if width > 128 and (bm * bn >= 128 * 128 or (bm == 128 and config.num_warps < 8)):
            continue
        kept.append(config)
    return kept or configs[:1]


if INTERPRETED:
    # The interpreter cannot autotune; callers pick the tiles.
    attention_fwd_autotuned = None
else:
    attention_fwd_autotuned = triton.autotune(
        configs=_autotune_configs(),
        key=["N_Q", "N_K", "HEAD_DIM", "IEEE_FP32"],
        prune_configs_by={"early_config_prune": _prune_configs},
    )(_attention_fwd)

attention_fwd = _attention_fwd
