"""The Triton attention kernel against SDPA, on the CPU through Triton's interpreter.

``TRITON_INTERPRET=1`` is set below before ``kernels.attention`` is imported: the kernel's
``@triton.jit`` decorators read it when they run. If another module imported
``kernels.attention`` earlier in this process without it (say, a test module collected
first imports the model manager, which imports the processor), the kernel here is the
compiled one and cannot run on the CPU: then every test below skips and
``test_whole_file_in_a_fresh_process`` runs this file again in a fresh process instead.

Oracle: SDPA in fp32 (for fp16 inputs, SDPA of those fp16 values cast to fp32);
cosine >= 0.9999 and relative L1 <= 1e-3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kernels import attention as attention_module  # noqa: E402
from kernels.attention import attention, head_dim_pieces, interpreted, unsupported_reason  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RERUN = "test_whole_file_in_a_fresh_process"


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


HEAD_DIMS = (40, 64, 80, 128, 160)
DTYPES = (torch.float32, torch.float16)
# (name, query length, key length, self-attention?)
SHAPES = (
    ("self-37", 37, 37, True),
    ("self-70", 70, 70, True),
    ("cross-77", 70, 77, False),
    ("cross-5", 37, 5, False),
)


def metrics(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    out = out.double().flatten()
    ref = ref.double().flatten()
    cosine = F.cosine_similarity(out, ref, dim=0).item()
    rel_l1 = ((out - ref).abs().sum() / ref.abs().sum()).item()
    return cosine, rel_l1


def assert_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    cosine, rel_l1 = metrics(out, ref)
    assert cosine >= 0.9999, f"cosine {cosine}"
    assert rel_l1 <= 1e-3, f"relative L1 {rel_l1}"


def sdpa_fp32(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=scale)


def diffusers_qkv(
    batch: int, heads: int, n_q: int, n_k: int, head_dim: int, dtype: torch.dtype, self_attention: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as diffusers' processors hand them over: projections viewed and transposed."""
    gen = torch.Generator().manual_seed(n_q * 1000 + n_k * 10 + head_dim)
    inner = heads * head_dim

    def project(n: int) -> torch.Tensor:
        x = torch.randn(batch, n, inner, generator=gen).to(dtype)
        return x.view(batch, n, heads, head_dim).transpose(1, 2)

    q = project(n_q)
    k = project(n_q if self_attention else n_k)
    v = project(n_q if self_attention else n_k)
    return q, k, v


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize(("name", "n_q", "n_k", "is_self"), SHAPES, ids=[s[0] for s in SHAPES])
def test_matches_sdpa(
    name: str, n_q: int, n_k: int, is_self: bool, head_dim: int, dtype: torch.dtype
) -> None:
    q, k, v = diffusers_qkv(2, 2, n_q, n_k, head_dim, dtype, is_self)
    assert not q.is_contiguous() and q.stride(-1) == 1
    out = attention(q, k, v)
    assert out.dtype == dtype
    assert_close(out, sdpa_fp32(q, k, v))


@pytest.mark.parametrize(("block_m", "block_n"), [(16, 16), (16, 64), (64, 16)])
@pytest.mark.parametrize("head_dim", (40, 80))
def test_tile_sizes(block_m: int, block_n: int, head_dim: int) -> None:
    """Several full key tiles plus a masked partial one, and query tiles past the end."""
    q, k, v = diffusers_qkv(1, 2, 45, 77, head_dim, torch.float16, False)
    assert_close(attention(q, k, v, block_m=block_m, block_n=block_n), sdpa_fp32(q, k, v))


def test_any_strides() -> None:
    """Head dimension not innermost, batch and heads permuted in memory."""
    base = torch.randn(3, 40, 2, 33, dtype=torch.float16)  # (heads, head_dim, batch, seq)
    q = base.permute(2, 0, 3, 1)  # (batch, heads, seq, head_dim), stride along head_dim = 66
    kv = torch.randn(2, 2, 19, 3, 40, dtype=torch.float16)  # (k/v, batch, seq, heads, head_dim)
    k, v = (t.transpose(1, 2) for t in kv.unbind(0))
    assert q.stride(-1) != 1
    assert_close(attention(q, k, v), sdpa_fp32(q, k, v))


def test_peaked_softmax_and_custom_scale() -> None:
    """Large logits change the running max between tiles: the online rescaling must hold."""
    q, k, v = diffusers_qkv(1, 2, 40, 70, 64, torch.float32, False)
    q = q * 6
    assert_close(attention(q, k, v, block_n=16), sdpa_fp32(q, k, v))
    assert_close(attention(q, k, v, scale=0.05), sdpa_fp32(q, k, v, scale=0.05))


def test_alignment_hint() -> None:
    """The kernel is told rows start 16-byte aligned only when every stride says so."""
    q, k, v = diffusers_qkv(2, 8, 16, 16, 40, torch.float16, True)
    assert attention_module._alignment(q, k, v) == 8  # head stride 40: aligned, though not by 16
    assert attention_module._alignment(q.float(), k.float(), v.float()) == 4
    odd = torch.randn(2, 16, 3 * 40 + 1, dtype=torch.float16)[..., :120].view(2, 16, 3, 40).transpose(1, 2)
    assert attention_module._alignment(odd, odd, odd) == 1
    assert_close(attention(odd, odd, odd), sdpa_fp32(odd, odd, odd))


def test_output_layout_makes_the_processor_reshape_free() -> None:
    q, k, v = diffusers_qkv(2, 3, 21, 21, 40, torch.float32, True)
    out = attention(q, k, v)
    assert out.shape == (2, 3, 21, 40)
    assert out.transpose(1, 2).is_contiguous()


def test_head_dim_pieces_avoid_most_padding() -> None:
    assert head_dim_pieces(40) == (32, 16)
    assert head_dim_pieces(80) == (64, 16)
    assert head_dim_pieces(160) == (128, 32)
    assert head_dim_pieces(64) == (64, 0)
    assert head_dim_pieces(128) == (128, 0)
    for head_dim in (40, 64, 80, 128, 160):
        assert sum(head_dim_pieces(head_dim)) <= 1.2 * head_dim


def test_unsupported_inputs_are_refused() -> None:
    q = torch.randn(1, 2, 8, 8)
    assert unsupported_reason(q, q, q) is not None  # head_dim 8 < 16
    q = torch.randn(1, 2, 8, 32, dtype=torch.bfloat16)
    assert "interpreter" in (unsupported_reason(q, q, q) or "")
    q = torch.randn(1, 2, 8, 32, requires_grad=True)
    assert "backward" in (unsupported_reason(q, q, q) or "")
    with torch.no_grad():
        assert unsupported_reason(q, q, q) is None
    with pytest.raises(ValueError, match="shapes"):
        attention(torch.randn(1, 2, 8, 32), torch.randn(1, 3, 8, 32), torch.randn(1, 3, 8, 32))
    with pytest.raises(ValueError, match="block_n"):
        attention(torch.randn(1, 2, 8, 32), torch.randn(1, 2, 8, 32), torch.randn(1, 2, 8, 32), block_n=24)


def test_autotune_pruning_keeps_fitting_tiles() -> None:
    fa = attention_module._fa
    configs = fa._autotune_configs()
    for n_q, n_k, d0, d1 in ((4096, 4096, 32, 16), (4096, 77, 64, 16), (64, 77, 128, 32), (16, 5, 64, 0)):
        kept = fa._prune_configs(configs, {"N_Q": n_q, "N_K": n_k}, D0=d0, D1=d1)
        assert kept
        for config in kept:
            assert config.kwargs["BLOCK_N"] <= max(16, fa.next_power_of_2(n_k))


# --- torch.compile -------------------------------------------------------------------------


def test_registered_operator_and_fake() -> None:
    q, k, v = diffusers_qkv(1, 2, 20, 9, 40, torch.float32, False)
    out = torch.ops.studio.flash_attention(q, k, v, 40**-0.5, 16, 16)
    assert_close(out, sdpa_fp32(q, k, v))
    torch.library.opcheck(
        torch.ops.studio.flash_attention.default,
        (q, k, v, 40**-0.5, 16, 16),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_torch_compile_traces_the_kernel_in_one_graph() -> None:
    graphs: list[torch.fx.GraphModule] = []

    def recording_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        graphs.append(gm)
        return gm.forward

    def block(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        q, k, v = (x @ w).view(batch, seq, 3, 2, 40).unbind(2)
        out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2).reshape(batch, seq, 80) * 2

    x = torch.randn(2, 37, 80)
    w = torch.randn(80, 240) * 0.1
    expected = block(x, w)
    torch._dynamo.reset()
    out = torch.compile(block, backend=recording_backend, fullgraph=True)(x, w)
    assert len(graphs) == 1
    assert any("flash_attention" in str(node.target) for node in graphs[0].graph.nodes)
    torch.testing.assert_close(out, expected)
    out = torch.compile(block, backend="aot_eager", fullgraph=True)(x, w)
    torch.testing.assert_close(out, expected)


# --- the processor and a whole UNet ---------------------------------------------------------


def tiny_unet(block_out_channels: tuple[int, int], heads: int) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=block_out_channels,
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=heads,  # diffusers' legacy name: the number of heads
        norm_num_groups=8,
    ).eval()


def unet_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, 8, 8, generator=gen)
    timestep = torch.tensor([10, 500])
    text = torch.randn(2, 77, 32, generator=gen)
    return sample, timestep, text


class CountingAttention:
    """Wraps ``kernels.processor.attention`` to count kernel calls and record head dims."""

    def __init__(self) -> None:
        self.head_dims: list[int] = []

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> Any:
        self.head_dims.append(q.shape[-1])
        return attention(q, k, v, scale=scale)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("channels", "heads", "head_dims"),
    [((32, 64), 2, {16, 32}), ((40, 80), 1, {40, 80})],
    ids=["dims-16-32", "dims-40-80"],
)
def test_tiny_unet_matches_sdpa(
    monkeypatch: pytest.MonkeyPatch, channels: tuple[int, int], heads: int, head_dims: set[int]
) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    from kernels import processor

    unet = tiny_unet(channels, heads)
    sample, timestep, text = unet_inputs()
    unet.set_attn_processor(AttnProcessor2_0())
    with torch.no_grad():
        expected = unet(sample, timestep, encoder_hidden_states=text).sample

    counter = CountingAttention()
    monkeypatch.setattr(processor, "attention", counter)
    assert processor.install_attention(unet, "triton") == "triton"
    assert all(isinstance(p, processor.TritonAttnProcessor) for p in unet.attn_processors.values())
    with torch.no_grad():
        out = unet(sample, timestep, encoder_hidden_states=text).sample
    # every attention layer (self and cross, down, mid and up) went through the kernel
    assert len(counter.head_dims) == len(unet.attn_processors)
    assert set(counter.head_dims) == head_dims
    assert_close(out, expected)


def test_install_rule_keeps_custom_processors(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from kernels import processor

    class MapRecorder(AttnProcessor2_0):
        """Stands in for prompt-to-prompt: a custom processor on the cross-attention layers."""

        calls = 0

        def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            MapRecorder.calls += 1
            return super().__call__(*args, **kwargs)

    unet = tiny_unet((32, 64), 2)
    names = list(unet.attn_processors)
    cross = [n for n in names if ".attn2." in n]
    recorder = MapRecorder()
    unet.set_attn_processor({n: recorder if n in cross else AttnProcessor() for n in names})

    counter = CountingAttention()
    monkeypatch.setattr(processor, "attention", counter)
    assert processor.install_attention(unet, "triton") == "triton"
    procs = unet.attn_processors
    assert all(procs[n] is recorder for n in cross)
    assert all(isinstance(procs[n], processor.TritonAttnProcessor) for n in names if n not in cross)

    sample, timestep, text = unet_inputs()
    with torch.no_grad():
        unet(sample, timestep, encoder_hidden_states=text)
    assert MapRecorder.calls == len(cross)
    assert len(counter.head_dims) == len(names) - len(cross)

    # saving and restoring the dict (what a map-reading tool does) puts our processor back
    saved = unet.attn_processors
    unet.set_attn_processor(MapRecorder())
    unet.set_attn_processor(saved)
    assert isinstance(unet.attn_processors[names[0]], processor.TritonAttnProcessor)

    assert processor.install_attention(unet, "sdpa") == "sdpa"
    procs = unet.attn_processors
    assert all(procs[n] is recorder for n in cross)
    assert all(type(procs[n]) is AttnProcessor2_0 for n in names if n not in cross)


def test_backend_choice_on_cpu() -> None:
    from kernels import processor

    unet = tiny_unet((32, 64), 2)
    assert processor.install_attention(unet, "auto") == "sdpa"  # auto never picks the interpreter
    assert processor.resolve_backend("sdpa") == "sdpa"
    with pytest.raises(ValueError, match="unknown attention backend"):
        processor.resolve_backend("flash")


def test_processor_falls_back_to_sdpa_with_a_mask() -> None:
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from kernels.processor import TritonAttnProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=80, heads=2, dim_head=40).eval()
    x = torch.randn(2, 11, 80)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[:, 7:] = False
    processor = TritonAttnProcessor()
    q = torch.randn(2, 2, 11, 40)
    assert processor.use_kernel(q, q, q, None)
    assert not processor.use_kernel(q, q, q, torch.zeros(2, 2, 11, 11))
    with torch.no_grad():
        attn.set_processor(AttnProcessor2_0())
        expected = attn(x, attention_mask=mask)
        attn.set_processor(processor)
        out = attn(x, attention_mask=mask)
    torch.testing.assert_close(out, expected)


# --- without the interpreter, and without Triton -----------------------------------------------

WITHOUT_INTERPRETER = """
import torch
from kernels.attention import interpreted, kernel_device_ok, triton_available
from kernels.processor import TritonAttnProcessor, install_attention, resolve_backend
assert triton_available() and not interpreted()
assert not kernel_device_ok(torch.device("cpu"))
q = torch.randn(1, 2, 9, 40)
assert not TritonAttnProcessor().use_kernel(q, q, q, None)
expected = "triton" if torch.cuda.is_available() else "sdpa"
assert resolve_backend("auto") == expected and resolve_backend("triton") == expected
print("ok")
"""

WITHOUT_TRITON = """
import sys
sys.modules["triton"] = None  # makes `import triton` raise ImportError
import torch
from kernels.attention import attention, triton_available
from kernels.processor import resolve_backend
assert not triton_available()
assert resolve_backend("auto") == "sdpa" and resolve_backend("triton") == "sdpa"
try:
    attention(torch.randn(1, 1, 4, 16), torch.randn(1, 1, 4, 16), torch.randn(1, 1, 4, 16))
except ValueError as exc:
    assert "Triton is not installed" in str(exc)
else:
    raise AssertionError("attention ran without Triton")
print("ok")
"""


def without_interpreter() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


AOT_HEAD_DIMS = "40,64,80,128,160"  # SD1.x 40/80/160, SDXL and SD3 64, Flux 128


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_kernel_compiles_for_h100(dtype: str) -> None:
    """The interpreter never runs Triton's GPU compiler: compile for sm_90 ahead of time
    (the first tile autotuning keeps for each shape, SD3's joint 4429 tokens and Flux's 4608 included)."""
    result = subprocess.run(
        [sys.executable, "-m", "kernels.aot", "--arch", "90", "--dtype", dtype, "--head-dims", AOT_HEAD_DIMS],
        cwd=REPO,
        env=without_interpreter(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {r["shape"].split("x")[-1] for r in reports} == set(AOT_HEAD_DIMS.split(","))
    for report in reports:
        assert report["wgmma"] > 0, report  # Hopper tensor-core instructions
        assert report["align"] == 8, report  # head dim 40's rows are known to be 16-byte aligned
        assert report.get("spill_bytes", 0) == 0, report


@pytest.mark.slow
@pytest.mark.parametrize("script", [WITHOUT_INTERPRETER, WITHOUT_TRITON], ids=["no-interpreter", "no-triton"])
def test_fallbacks_in_a_fresh_process(script: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=without_interpreter(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
