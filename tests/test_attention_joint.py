"""The joint-attention processors for SD3 / SD3.5 and Flux, on the CPU through Triton's interpreter.

What must hold: with our processors installed (backend "triton", the kernel interpreted) an
SD3, SD3.5 (qk-norm, dual attention) and Flux transformer compute what they compute with
diffusers' stock processors, every attention layer goes through the kernel, at the head
dimensions those models use (SD3: 64, Flux: 128) and at joint sequence lengths that are not
a multiple of any tile (image + text tokens); ``install_attention`` reports what it swapped,
"sdpa" puts the stock classes back, and processors it does not know stay where they are.

``TRITON_INTERPRET=1`` is set before ``kernels`` is imported, as in test_attention_kernel.py;
if the kernel was compiled earlier in this process every test here skips and
``test_whole_file_in_a_fresh_process`` runs the file again in a fresh process.

Oracles: the stock processors (whole models and single layers, allclose at fp32 tolerance)
and SDPA in fp32 for the kernel itself (cosine >= 0.9999, relative L1 <= 1e-3).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers.models.attention_processor import (  # noqa: E402
    Attention,
    FusedJointAttnProcessor2_0,
    JointAttnProcessor2_0,
)
from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor  # noqa: E402

from kernels import joint, processor  # noqa: E402
from kernels.attention import attention, interpreted  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RERUN = "test_whole_file_in_a_fresh_process"
FP32 = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(autouse=True)
def _needs_the_interpreter(request: pytest.FixtureRequest) -> None:
    if not interpreted() and request.node.originalname != RERUN:
        pytest.skip(f"kernels.attention was imported before TRITON_INTERPRET=1 was set; see {RERUN}")


def test_whole_file_in_a_fresh_process() -> None:
    if interpreted():
        pytest.skip("the kernel is interpreted in this process: the tests ran here")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        cwd=REPO,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def assert_matches_sdpa(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).double().flatten()
    got = out.double().flatten()
    assert torch.isfinite(got).all()
    cosine = F.cosine_similarity(got, ref, dim=0).item()
    rel_l1 = ((got - ref).abs().sum() / ref.abs().sum()).item()
    assert cosine >= 0.9999, f"cosine {cosine}"
    assert rel_l1 <= 1e-3, f"relative L1 {rel_l1}"


class CountingAttention:
    """Stands in for ``kernels.joint.attention``: counts kernel calls, records head dims and lengths."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []  # (tokens, head_dim)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> Any:
        self.calls.append((q.shape[2], q.shape[3]))
        return attention(q, k, v, scale=scale)


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> CountingAttention:
    counting = CountingAttention()
    monkeypatch.setattr(joint, "attention", counting)
    return counting


# --- the kernel at the DiT head dims, on joint sequences ----------------------------------------

# (image tokens, text tokens): none of the sums is a multiple of a tile.
JOINT_LENGTHS = ((64, 77), (16, 7), (36, 333 // 9))


@pytest.mark.parametrize("dtype", (torch.float32, torch.float16), ids=("float32", "float16"))
@pytest.mark.parametrize("head_dim", (64, 128))
@pytest.mark.parametrize(("image", "text"), JOINT_LENGTHS, ids=[f"{i}+{t}" for i, t in JOINT_LENGTHS])
def test_kernel_on_joint_sequences(image: int, text: int, head_dim: int, dtype: torch.dtype) -> None:
    """Two streams projected apart and concatenated, as both processors hand them over."""
    gen = torch.Generator().manual_seed(image * 1000 + text + head_dim)
    batch, heads = 2, 2

    def stream(tokens: int) -> torch.Tensor:
        x = torch.randn(batch, tokens, heads * head_dim, generator=gen).to(dtype)
        return x.view(batch, tokens, heads, head_dim)

    # SD3: (batch, heads, seq, d) views concatenated image-first along the sequence.
    sd3 = [torch.cat([stream(image).transpose(1, 2), stream(text).transpose(1, 2)], dim=2) for _ in "qkv"]
    out = attention(*sd3)
    assert out.dtype == dtype
    assert_matches_sdpa(out, *sd3)
    # Flux: (batch, seq, heads, d) concatenated text-first, read through transposed views.
    flux = [torch.cat([stream(text), stream(image)], dim=1).transpose(1, 2) for _ in "qkv"]
    assert not flux[0].is_contiguous()
    assert_matches_sdpa(attention(*flux), *flux)


@pytest.mark.parametrize("head_dim", (64, 128))
@pytest.mark.parametrize(("block_m", "block_n"), [(16, 16), (64, 32), (16, 128)])
def test_kernel_tiles_at_dit_head_dims(block_m: int, block_n: int, head_dim: int) -> None:
    """Several full key tiles, a masked partial one, and query tiles past the end (16 + 77 + 7)."""
    gen = torch.Generator().manual_seed(head_dim + block_m)
    q, k, v = (torch.randn(1, 2, 100, head_dim, generator=gen).half() for _ in range(3))
    assert_matches_sdpa(attention(q, k, v, block_m=block_m, block_n=block_n), q, k, v)


def test_autotune_table_fits_dit_shapes() -> None:
    """At 1024 px every kept tile fits an H100/H200 block's shared memory and its registers."""
    from kernels import _flash_attention as fa

    configs = fa._autotune_configs()
    for n_tokens, head_dim in ((4429, 64), (4608, 128)):
        d0, d1 = fa.split_head_dim(head_dim)
        assert (d0, d1) == (head_dim, 0)  # one piece, no padding
        kept = fa._prune_configs(configs, {"N_Q": n_tokens, "N_K": n_tokens}, D0=d0, D1=d1)
        tiles = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps) for c in kept}
        assert (128, 64, 8) in tiles and (128, 128, 8) in tiles
        for config in kept:
            bm, bn = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
            smem = fa.shared_memory_estimate(bm, bn, config.num_stages, head_dim, 2)
            assert smem <= 227 * 1024
            assert fa.fp32_values_per_thread(bm, bn, config.num_warps, head_dim) <= fa.FP32_VALUES_PER_THREAD
    # 128x64 tiles with 4 warps hold 192 fp32 values per thread at head dim 128: they spill on sm_90.
    kept = fa._prune_configs(configs, {"N_Q": 4608, "N_K": 4608}, D0=128, D1=0)
    assert not any(
        c.kwargs["BLOCK_M"] == 128 and c.num_warps == 4 and c.kwargs["BLOCK_N"] >= 64 for c in kept
    )


# --- single layers at the real head dims --------------------------------------------------------


def sd3_layer(head_dim: int, qk_norm: str | None, context_pre_only: bool) -> Attention:
    torch.manual_seed(0)
    dim = 2 * head_dim
    return Attention(
        query_dim=dim,
        added_kv_proj_dim=dim,
        dim_head=head_dim,
        heads=2,
        out_dim=dim,
        context_pre_only=context_pre_only,
        bias=True,
        processor=JointAttnProcessor2_0(),
        qk_norm=qk_norm,
        eps=1e-6,
    ).eval()


@pytest.mark.parametrize(
    ("qk_norm", "context_pre_only"), [(None, False), ("rms_norm", False), ("rms_norm", True)]
)
def test_sd3_layer_at_head_dim_64(
    counter: CountingAttention, qk_norm: str | None, context_pre_only: bool
) -> None:
    layer = sd3_layer(64, qk_norm, context_pre_only)
    gen = torch.Generator().manual_seed(3)
    image = torch.randn(2, 16, 128, generator=gen)
    text = torch.randn(2, 7, 128, generator=gen)
    with torch.no_grad():
        expected = layer(image, encoder_hidden_states=text)
        layer.set_processor(joint.TritonJointAttnProcessor())
        out = layer(image, encoder_hidden_states=text)
        # SD3.5's dual attention (attn2) and SD3's single blocks: image tokens only.
        alone = layer(image)
        layer.set_processor(JointAttnProcessor2_0())
        expected_alone = layer(image)
    assert counter.calls == [(23, 64), (16, 64)]
    for got, want in zip(out, expected, strict=True):
        torch.testing.assert_close(got, want, **FP32)
    torch.testing.assert_close(alone, expected_alone, **FP32)


def flux_rotary(tokens: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    ids = torch.stack([torch.zeros(tokens), torch.arange(tokens) // 4, torch.arange(tokens) % 4], dim=-1)
    return FluxPosEmbed(theta=10000, axes_dim=[head_dim // 4, head_dim // 4, head_dim // 2])(ids)


@pytest.mark.parametrize("fused", [False, True], ids=["separate-qkv", "fused-qkv"])
def test_flux_layers_at_head_dim_128(counter: CountingAttention, fused: bool) -> None:
    torch.manual_seed(0)
    dim = 256
    double = FluxAttention(
        query_dim=dim, added_kv_proj_dim=dim, dim_head=128, heads=2, out_dim=dim,
        context_pre_only=False, bias=True, eps=1e-6,
    ).eval()  # fmt: skip
    single = FluxAttention(
        query_dim=dim, dim_head=128, heads=2, out_dim=dim, bias=True, eps=1e-6, pre_only=True
    )
    single.eval()
    if fused:
        double.fuse_projections()
        single.fuse_projections()
    gen = torch.Generator().manual_seed(4)
    image = torch.randn(1, 16, dim, generator=gen)
    text = torch.randn(1, 7, dim, generator=gen)
    rotary = flux_rotary(23, 128)
    with torch.no_grad():
        expected = double(image, encoder_hidden_states=text, image_rotary_emb=rotary)
        expected_single = single(torch.cat([text, image], dim=1), image_rotary_emb=rotary)
        double.set_processor(joint.TritonFluxAttnProcessor())
        single.set_processor(joint.TritonFluxAttnProcessor())
        out = double(image, encoder_hidden_states=text, image_rotary_emb=rotary)
        out_single = single(torch.cat([text, image], dim=1), image_rotary_emb=rotary)
    assert counter.calls == [(23, 128), (23, 128)]
    for got, want in zip(out, expected, strict=True):
        torch.testing.assert_close(got, want, **FP32)
    torch.testing.assert_close(out_single, expected_single, **FP32)


def test_flux_processor_leaves_masks_and_chosen_backends_to_diffusers(counter: CountingAttention) -> None:
    torch.manual_seed(0)
    layer = FluxAttention(query_dim=32, dim_head=16, heads=2, out_dim=32, bias=True, pre_only=True).eval()
    x = torch.randn(2, 9, 32)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[:, 6:] = False
    ours = joint.TritonFluxAttnProcessor()
    with torch.no_grad():
        expected = layer(x, attention_mask=mask)
        layer.set_processor(ours)
        torch.testing.assert_close(layer(x, attention_mask=mask), expected)
        assert counter.calls == []  # masked: diffusers' dispatcher
        ours._attention_backend = "native"  # what model.set_attention_backend("native") sets
        layer(x)
        assert counter.calls == []
        ours._attention_backend = None
        layer(x)
        assert counter.calls == [(9, 16)]


def test_processors_fall_back_when_autograd_needs_a_backward(counter: CountingAttention) -> None:
    layer = sd3_layer(16, None, False)
    image = torch.randn(1, 5, 32, requires_grad=True)
    layer.set_processor(joint.TritonJointAttnProcessor())
    out, _ = layer(image, encoder_hidden_states=torch.randn(1, 3, 32))
    out.sum().backward()
    assert counter.calls == [] and image.grad is not None


# --- whole tiny transformers ----------------------------------------------------------------------


def tiny_sd3(sd35: bool) -> torch.nn.Module:
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    extra: dict[str, Any] = {"qk_norm": "rms_norm", "dual_attention_layers": (0,)} if sd35 else {}
    return SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=32,
        pooled_projection_dim=32, out_channels=4, pos_embed_max_size=8, **extra,
    ).eval()  # fmt: skip


def sd3_inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {
        "hidden_states": torch.randn(2, 4, 8, 8, generator=gen),
        "encoder_hidden_states": torch.randn(2, 7, 32, generator=gen),
        "pooled_projections": torch.randn(2, 32, generator=gen),
        "timestep": torch.tensor([10.0, 500.0]),
    }


def tiny_flux() -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
    ).eval()  # fmt: skip


def flux_inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    side = 4
    img_ids = torch.zeros(side, side, 3)
    img_ids[..., 1] = torch.arange(side)[:, None]
    img_ids[..., 2] = torch.arange(side)[None, :]
    return {
        "hidden_states": torch.randn(1, side * side, 4, generator=gen),
        "encoder_hidden_states": torch.randn(1, 7, 32, generator=gen),
        "pooled_projections": torch.randn(1, 32, generator=gen),
        "timestep": torch.tensor([0.5]),
        "img_ids": img_ids.reshape(-1, 3),
        "txt_ids": torch.zeros(7, 3),
    }


def run(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).sample


@pytest.mark.parametrize("sd35", [False, True], ids=["sd3", "sd35-qknorm-dual"])
def test_tiny_sd3_transformer(counter: CountingAttention, sd35: bool) -> None:
    model = tiny_sd3(sd35)
    inputs = sd3_inputs()
    expected = run(model, inputs)
    layers = len(model.attn_processors)
    assert layers == (3 if sd35 else 2)

    report = processor.swap_attention(model, "triton")
    assert report.backend == "triton"
    assert report.swapped == {"JointAttnProcessor2_0 -> TritonJointAttnProcessor": layers}
    assert not report.kept and not report.unchanged
    out = run(model, inputs)
    torch.testing.assert_close(out, expected, **FP32)
    # every attention layer went through the kernel: joint (64 + 7 tokens), SD3.5's attn2 (64)
    assert sorted(counter.calls) == sorted([(71, 16)] * 2 + ([(64, 16)] if sd35 else []))

    assert processor.install_attention(model, "triton") == "triton"  # idempotent
    report = processor.swap_attention(model, "sdpa")
    assert report.swapped == {"TritonJointAttnProcessor -> JointAttnProcessor2_0": layers}
    assert all(type(p) is JointAttnProcessor2_0 for p in model.attn_processors.values())
    torch.testing.assert_close(run(model, inputs), expected, rtol=0, atol=0)


def test_tiny_sd3_skip_layer_guidance_passes_through(counter: CountingAttention) -> None:
    model = tiny_sd3(False)
    inputs = {**sd3_inputs(), "skip_layers": [0]}
    expected = run(model, inputs)
    processor.install_attention(model, "triton")
    torch.testing.assert_close(run(model, inputs), expected, **FP32)
    assert counter.calls == [(71, 16)]  # the skipped block never attends


def test_tiny_flux_transformer(counter: CountingAttention) -> None:
    model = tiny_flux()
    inputs = flux_inputs()
    expected = run(model, inputs)

    report = processor.swap_attention(model, "triton")
    assert report.swapped == {"FluxAttnProcessor -> TritonFluxAttnProcessor": 2}
    out = run(model, inputs)
    torch.testing.assert_close(out, expected, **FP32)
    assert counter.calls == [(23, 16), (23, 16)]  # double block, then single block: 7 text + 16 image

    report = processor.swap_attention(model, "sdpa")
    assert report.swapped == {"TritonFluxAttnProcessor -> FluxAttnProcessor": 2}
    assert all(type(p) is FluxAttnProcessor for p in model.attn_processors.values())
    torch.testing.assert_close(run(model, inputs), expected, rtol=0, atol=0)


def test_install_rule_on_dit_models() -> None:
    """Unknown processors stay; diffusers' backend choice survives a swap both ways."""
    model = tiny_sd3(False)
    model.fuse_qkv_projections()  # diffusers sets its fused joint processor: not ours to replace
    report = processor.swap_attention(model, "triton")
    assert report.kept == {"FusedJointAttnProcessor2_0": 2} and not report.swapped
    assert all(type(p) is FusedJointAttnProcessor2_0 for p in model.attn_processors.values())

    flux = tiny_flux()
    for module in flux.modules():
        if isinstance(module, FluxAttention):
            module.processor._attention_backend = "native"
    processor.install_attention(flux, "triton")
    procs = list(flux.attn_processors.values())
    assert all(type(p) is joint.TritonFluxAttnProcessor and p._attention_backend == "native" for p in procs)
    processor.install_attention(flux, "sdpa")
    procs = list(flux.attn_processors.values())
    assert all(type(p) is FluxAttnProcessor and p._attention_backend == "native" for p in procs)


def test_auto_means_sdpa_on_cpu_for_dit_models() -> None:
    model = tiny_flux()
    report = processor.swap_attention(model, "auto")
    assert report.backend == "sdpa" and report.unchanged == {"FluxAttnProcessor": 2}
    assert "unchanged FluxAttnProcessor x2" in report.summary()
