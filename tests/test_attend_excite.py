"""Attend-and-Excite (models/attend_excite.py, nodes/attend_excite.py).

The oracle is diffusers' ``StableDiffusionAttendAndExcitePipeline`` with the same tiny model (a UNet whose
first block's cross-attention works at 16x16, the pipeline's default resolution), prompt, subject tokens,
sampler and seed: our workflow (AttendAndExcite -> KSampler) must draw the same picture to uint8 rounding,
with the iterative refinement triggered. With our Triton attention installed (run by its interpreter on the
CPU) the picture matches the stock run and the cached UNet keeps its processors, after an error too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from graph.executor import Executor
from graph.validate import validate
from models.manager import ModelManager
from nodes.base import RunSettings
from nodes.registry import default_registry
from tests.fixtures.services import services_over
from tests.helpers import as_uint8

PROMPT = "a cat and a frog"
SUBJECTS = "cat, frog"
LATENT = 16  # latent side: the first block's cross-attention maps are 16x16
SCALE = 8  # the tiny VAE's pixels per latent cell
STEPS = 5
THRESHOLDS = {0: 0.05, 2: 0.5}
MAX_ITER = 4  # the last step is not altered
SEED = 3


def link(node: str, output: str) -> dict[str, str]:
    return {"node": node, "output": output}


def tiny_unet() -> Any:
    """Cross-attention in the first down block and the last up block (16x16 on 16x16 latents) and in
    the middle (8x8); heads of 16 and 32 numbers, which our kernel takes."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=LATENT,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=32,
    ).eval()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.tiny_models import save_tiny_sd_folder, tiny_sd_components

    base = tmp_path_factory.mktemp("attend-excite")
    components = {**tiny_sd_components(), "unet": tiny_unet()}
    save_tiny_sd_folder(base / "models" / "checkpoints" / "tiny-ae", components)
    return base


def workflow(
    *, excite: bool = True, size: int = LATENT * SCALE, steps: int = STEPS, **excite_inputs: Any
) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        "ck": {"type": "CheckpointLoader", "inputs": {"ckpt_name": "tiny-ae"}},
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": PROMPT}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": ""}},
        "lat": {"type": "EmptyLatent", "inputs": {"width": size, "height": size, "vae": link("ck", "vae")}},
        "s": {
            "type": "Sampler",
            "inputs": {
                "model": link("ck", "model"),
                "positive": link("pos", "conditioning"),
                "negative": link("neg", "conditioning"),
                "latent": link("lat", "latent"),
                "seed": SEED,
                "steps": steps,
                "cfg": 7.5,
                "sampler": "dpmpp_2m",
            },
        },
        "d": {"type": "VAEDecode", "inputs": {"vae": link("ck", "vae"), "latent": link("s", "latent")}},
        "show": {"type": "PreviewImage", "inputs": {"images": link("d", "image")}},
    }
    if excite:
        inputs = {
            "model": link("ck", "model"),
            "clip": link("ck", "clip"),
            "text": PROMPT,
            "subjects": SUBJECTS,
            "max_iter_to_alter": MAX_ITER,
            "thresholds": ", ".join(f"{k}: {v}" for k, v in THRESHOLDS.items()),
            **excite_inputs,
        }
        nodes["ae"] = {"type": "AttendAndExcite", "inputs": inputs}
        nodes["s"]["inputs"]["model"] = link("ae", "model")
        nodes["s"]["inputs"]["positive"] = link("ae", "conditioning")
    return nodes


def run(nodes: dict[str, Any], root: Path, manager: ModelManager) -> Any:
    services = services_over(root / "models", manager=manager)
    registry = default_registry(services=services)
    checked = validate({"version": 1, "nodes": nodes}, registry)
    assert checked.ok, [str(i) for i in checked.issues]
    settings = RunSettings(services=services, output_dir=root / "out")
    return Executor(registry).run(checked.workflow, settings=settings)


def drawn(nodes: dict[str, Any], root: Path, manager: ModelManager) -> np.ndarray:
    result = run(nodes, root, manager)
    assert result.status == "done", result.error
    return as_uint8(result.outputs["show"]["images"])


def largest_difference(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def cached_unet(root: Path, manager: ModelManager) -> Any:
    """The UNet the manager holds for tiny-ae (loaded by an earlier run)."""
    (checkpoint,) = [e.value for e in manager._entries.values() if hasattr(e.value, "unet")]
    return checkpoint.unet


@pytest.fixture()
def refinements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the iterative refinements our sampler runs."""
    from models import attend_excite

    calls: list[int] = []
    original = attend_excite.Exciter.refine

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(attend_excite.Exciter, "refine", counted)
    return calls


# --------------------------------------------------------------------------- against diffusers


@pytest.mark.slow
def test_matches_the_attend_and_excite_pipeline(root: Path, refinements: list[int]) -> None:
    from diffusers import StableDiffusionAttendAndExcitePipeline

    from models.sampling import make_scheduler

    manager = ModelManager(device="cpu", attention="sdpa")
    ours = drawn(workflow(), root, manager)
    assert refinements, "the refinement at step 0 should have run (random weights attend weakly)"
    plain = drawn(workflow(excite=False), root, manager)

    pipe = StableDiffusionAttendAndExcitePipeline.from_pretrained(
        str(root / "models" / "checkpoints" / "tiny-ae"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        local_files_only=True,
    )
    pipe.scheduler = make_scheduler("dpmpp_2m", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    tokens = pipe.get_indices(PROMPT)
    indices = [i for i, t in tokens.items() if t in ("cat</w>", "frog</w>")]
    assert indices == [2, 5]
    out = pipe(
        prompt=PROMPT,
        token_indices=indices,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(SEED),
        max_iter_to_alter=MAX_ITER,
        thresholds=THRESHOLDS,
        attn_res=(LATENT, LATENT),
        output_type="np",
    )
    theirs = as_uint8(out.images)
    assert largest_difference(ours, theirs) <= 1
    assert largest_difference(ours, plain) > 4  # it did change the picture

    # With the pipeline's own arithmetic in every layer (it computes all attention explicitly), the
    # pictures are identical: the only difference above is SDPA's rounding in the layers not read.
    from diffusers.models.attention_processor import AttnProcessor

    cached_unet(root, manager).set_attn_processor(AttnProcessor())
    assert largest_difference(drawn(workflow(), root, manager), theirs) == 0


def test_token_positions_work_as_words(root: Path) -> None:
    manager = ModelManager(device="cpu", attention="sdpa")
    by_words = drawn(workflow(steps=2, max_iter_to_alter=1, thresholds=""), root, manager)
    by_positions = drawn(
        workflow(steps=2, max_iter_to_alter=1, thresholds="", subjects="2, 5"), root, manager
    )
    assert largest_difference(by_words, by_positions) == 0


def test_euler_samplers_excite_in_the_model_input_space(root: Path) -> None:
    """Sigma-space samplers (Euler) take the step on the scaled model input, and the picture changes."""
    manager = ModelManager(device="cpu", attention="sdpa")
    pictures = []
    for excite in (False, True):
        settings = {"max_iter_to_alter": 2, "thresholds": "0: 0.05"} if excite else {}
        nodes = workflow(excite=excite, steps=2, **settings)
        nodes["s"]["inputs"]["sampler"] = "euler"
        pictures.append(drawn(nodes, root, manager))
    assert np.isfinite(pictures[1].astype(float)).all()
    assert largest_difference(*pictures) > 0


# --------------------------------------------------------------------------- our attention processors


@pytest.mark.slow
def test_with_the_triton_processors_installed(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel (interpreted) runs the plain passes, SDPA the gradient passes; the picture matches the
    stock run and the cached UNet's processors stay as installed."""
    pytest.importorskip("triton")
    from kernels import processor
    from kernels.attention import interpreted

    if not interpreted():
        pytest.skip("kernels.attention was imported before TRITON_INTERPRET=1 was set")
    calls: list[bool] = []
    kernel = processor.attention

    def counted(q: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(torch.is_grad_enabled() and q.requires_grad)
        return kernel(q, *args, **kwargs)

    monkeypatch.setattr(processor, "attention", counted)
    small = dict(size=8 * SCALE, steps=2, max_iter_to_alter=1, thresholds="0: 0.05", attention_res=8)
    stock = drawn(workflow(**small), root, ModelManager(device="cpu", attention="sdpa"))
    assert not calls
    manager = ModelManager(device="cpu", attention="triton")
    ours = drawn(workflow(**small), root, manager)
    assert calls and not any(calls), "the kernel ran the plain passes, never a gradient pass"
    unet = cached_unet(root, manager)
    before = dict(unet.attn_processors)
    assert all(isinstance(p, processor.TritonAttnProcessor) for p in before.values())
    assert largest_difference(ours, stock) <= 2

    failing = workflow(**{**small, "attention_res": 8})
    failing["lat"]["inputs"]["width"] = 4 * SCALE  # 4x4 latents: no 8x8 maps, the sampler fails
    failing["lat"]["inputs"]["height"] = 4 * SCALE
    result = run(failing, root, manager)
    assert result.status == "failed"
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_cancel_leaves_the_unet_as_it_was(root: Path) -> None:
    from models.attend_excite import PROMPT_TOKENS, ExciteSettings
    from models.loading import load_checkpoint
    from models.sampling import ATTEND_EXCITE, SampleJob, sample
    from models.values import Cond, Latent

    checkpoint = load_checkpoint(root / "models" / "checkpoints" / "tiny-ae", device="cpu")
    unet = checkpoint.unet
    before = dict(unet.attn_processors)
    settings = ExciteSettings(indices=(2,), prompt_ids=(1, 2, 3))
    embeds = torch.randn(1, 77, 32)
    job = SampleJob(
        unet=unet,
        scheduler_config=checkpoint.scheduler_config,
        positive=[Cond(embeds, extra={PROMPT_TOKENS: (1, 2, 3)})],
        negative=[Cond(torch.zeros_like(embeds))],
        latent=Latent(torch.zeros(1, 4, LATENT, LATENT)),
        seed=0,
        steps=3,
        cfg=5.0,
        sampler="ddim",
        extra={ATTEND_EXCITE: settings},
    )
    steps: list[int] = []

    def cancel() -> None:
        steps.append(1)
        if len(steps) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample(job, cancel)
    after = unet.attn_processors
    assert all(after[k] is before[k] for k in before)


# --------------------------------------------------------------------------- errors in plain words


def test_subjects_must_be_words_of_the_prompt(root: Path) -> None:
    manager = ModelManager(device="cpu", attention="sdpa")
    result = run(workflow(subjects="cat, horse"), root, manager)
    assert result.status == "failed"
    message = str(result.error)
    assert "subjects" in message and "'horse' is not a word of the prompt" in message
    assert "1: a, 2: cat, 3: and, 4: a, 5: frog" in message
    result = run(workflow(subjects="9"), root, manager)
    assert "token 9 is not in the prompt" in str(result.error)
    result = run(workflow(thresholds="0 0.05"), root, manager)
    assert result.status == "failed" and "thresholds" in str(result.error)
    result = run(workflow(text="   "), root, manager)
    assert result.status == "failed" and "the prompt is empty" in str(result.error)


def test_the_positive_prompt_must_be_the_nodes(root: Path) -> None:
    nodes = workflow()
    nodes["s"]["inputs"]["positive"] = link("pos", "conditioning")
    result = run(nodes, root, ModelManager(device="cpu", attention="sdpa"))
    assert result.status == "failed"
    assert "positive" in str(result.error) and "AttendAndExcite" in str(result.error)


def test_attention_resolution_must_exist(root: Path) -> None:
    result = run(workflow(attention_res=5, steps=1), root, ModelManager(device="cpu", attention="sdpa"))
    assert result.status == "failed"
    assert "16x16, 8x8" in str(result.error)


def test_automatic_resolution() -> None:
    from types import SimpleNamespace

    from models.attend_excite import attention_grid, cross_attention_sizes

    sd15 = SimpleNamespace(
        config=SimpleNamespace(
            down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            mid_block_type="UNetMidBlock2DCrossAttn",
        )
    )
    assert cross_attention_sizes(sd15, 64, 64) == [(64, 64), (32, 32), (16, 16), (8, 8)]
    assert attention_grid(sd15, 64, 64, 0) == (16, 16)  # the pipeline's 16 at 512 px
    toy = SimpleNamespace(
        config=SimpleNamespace(
            down_block_types=["CrossAttnDownBlock2D"] * 2,
            up_block_types=["CrossAttnUpBlock2D"] * 2,
            mid_block_type="UNetMidBlock2DCrossAttn",
        )
    )
    assert attention_grid(toy, 8, 8, 0) == (8, 8)
    assert attention_grid(toy, 8, 8, 4) == (4, 4)


def test_thresholds_parse() -> None:
    from models.attend_excite import parse_thresholds

    assert parse_thresholds("10: 0.5, 0: 0.05") == ((0, 0.05), (10, 0.5))
    assert parse_thresholds("") == ()
    with pytest.raises(ValueError, match="between 0 and 1"):
        parse_thresholds("0: 2")
