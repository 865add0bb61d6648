"""SD3 / SD3.5 and Flux.1 nodes against StableDiffusion3Pipeline and FluxPipeline.

Tiny random models saved as diffusers folders (tests/fixtures/tiny_dit.py) are loaded by
Load Checkpoint and sampled by the ordinary KSampler; each graph must draw what the matching
pipeline draws from the same folder, prompt, seed, steps and guidance, to uint8 rounding.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from models.manager import ModelManager  # noqa: E402
from tests.helpers import assert_same, link, run_graph  # noqa: E402

pytestmark = pytest.mark.slow
PROMPT = "a red cube on a blue floor"
NEGATIVE = "blurry"
SIZE = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with tiny SD3 (with and without T5) and Flux (dev- and schnell-like) folders."""
    from tests.fixtures.tiny_dit import save_tiny_flux_folder, save_tiny_sd3_folder

    root = tmp_path_factory.mktemp("dit-models")
    checkpoints = root / "checkpoints"
    save_tiny_sd3_folder(checkpoints / "tiny-sd3")
    save_tiny_sd3_folder(checkpoints / "tiny-sd3-not5", t5=False)
    save_tiny_flux_folder(checkpoints / "tiny-flux-dev", guidance=True)
    save_tiny_flux_folder(checkpoints / "tiny-flux-schnell", guidance=False)
    inputs = root / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    picture = np.zeros((SIZE, SIZE, 3), np.uint8)
    picture[8:40, 16:56] = (220, 40, 30)
    picture += rng.integers(0, 20, picture.shape, dtype=np.uint8)
    Image.fromarray(picture).save(inputs / "cube.png")
    return root


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(device="cpu")


def image_of(result: Any) -> np.ndarray:
    assert result.status == "done", result.error
    return (np.clip(result.outputs["show"]["images"], 0, 1) * 255).round().astype(np.uint8)


def as_uint8(images: np.ndarray) -> np.ndarray:
    return (images * 255).round().astype(np.uint8)


def graph(
    ckpt: str,
    *,
    steps: int = 4,
    cfg: float = 4.5,
    sampler: str = "euler",
    seed: int = 7,
    width: int = SIZE,
    height: int = SIZE,
    denoise: float = 1.0,
    model: dict | None = None,
    positive: dict | None = None,
) -> dict:
    """Checkpoint -> CLIPTextEncode (+ negative) -> EmptySD3LatentImage -> KSampler -> VAEDecode."""
    nodes: dict[str, Any] = {
        "ck": {"type": "CheckpointLoader", "inputs": {"ckpt_name": ckpt}},
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": PROMPT}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": NEGATIVE}},
        "lat": {
            "type": "EmptySD3LatentImage",
            "inputs": {"width": width, "height": height, "batch_size": 1, "vae": link("ck", "vae")},
        },
        "s": {
            "type": "Sampler",
            "inputs": {
                "model": link("ck", "model"),
                "positive": link("pos", "conditioning"),
                "negative": link("neg", "conditioning"),
                "latent": link("lat", "latent"),
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "sampler": sampler,
                "denoise": denoise,
            },
        },
        "d": {"type": "VAEDecode", "inputs": {"vae": link("ck", "vae"), "latent": link("s", "latent")}},
        "show": {"type": "PreviewImage", "inputs": {"images": link("d", "image")}},
    }
    if model is not None:
        nodes["m"] = model
        nodes["s"]["inputs"]["model"] = link("m", "model")
    if positive is not None:
        nodes["g"] = positive
        nodes["s"]["inputs"]["positive"] = link("g", "conditioning")
    return nodes


def pipeline(cls_name: str, folder: Path, scheduler: Any = None) -> Any:
    import diffusers

    index = json.loads((folder / "model_index.json").read_text())
    absent = {name: None for name, value in index.items() if value == [None, None]}  # saved without T5
    pipe = getattr(diffusers, cls_name).from_pretrained(str(folder), local_files_only=True, **absent)
    if scheduler is not None:
        pipe.scheduler = scheduler(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def draw(pipe: Any, seed: int = 7, **kwargs: Any) -> np.ndarray:
    kwargs.setdefault("num_inference_steps", 4)
    kwargs.setdefault("height", SIZE)
    kwargs.setdefault("width", SIZE)
    generator = torch.Generator("cpu").manual_seed(seed)
    return as_uint8(pipe(PROMPT, generator=generator, output_type="np", **kwargs).images)


def ranged(nodes: dict, ranges: list[tuple[float, float]]) -> dict:
    """``nodes`` with the positive prompt as copies limited to ``ranges`` (ConditioningSetTimestepRange),
    combined."""
    positive = None
    for i, (start, end) in enumerate(ranges):
        nodes[f"r{i}"] = {
            "type": "ConditioningSetTimestepRange",
            "inputs": {"conditioning": link("pos", "conditioning"), "start": start, "end": end},
        }
        if positive is None:
            positive = link(f"r{i}", "conditioning")
        else:
            nodes[f"c{i}"] = {
                "type": "ConditioningCombine",
                "inputs": {"conditioning_a": positive, "conditioning_b": link(f"r{i}", "conditioning")},
            }
            positive = link(f"c{i}", "conditioning")
    nodes["s"]["inputs"]["positive"] = positive
    return nodes


@pytest.mark.parametrize("ckpt", ["tiny-sd3", "tiny-flux-dev"])
def test_flow_models_honour_timestep_ranges(root: Path, manager: ModelManager, ckpt: str) -> None:
    """The prompt split into two halves of the schedule acts at every step once, as the prompt
    alone does; the prompt limited to the second half leaves the first half's steps without it."""
    nodes = flux_graph(ckpt) if ckpt.startswith("tiny-flux") else graph(ckpt)
    plain = image_of(run_graph(nodes, root, manager))
    halves = image_of(run_graph(ranged(copy.deepcopy(nodes), [(0.0, 0.5), (0.5, 1.0)]), root, manager))
    assert_same(halves, plain)
    late = image_of(run_graph(ranged(copy.deepcopy(nodes), [(0.5, 1.0)]), root, manager))
    assert np.abs(late.astype(int) - plain.astype(int)).max() > 8


# --------------------------------------------------------------------------- SD3


@pytest.mark.parametrize("ckpt", ["tiny-sd3", "tiny-sd3-not5"])
def test_sd3_txt2img_matches_the_pipeline(root: Path, manager: ModelManager, ckpt: str) -> None:
    ours = image_of(run_graph(graph(ckpt), root, manager))
    pipe = pipeline("StableDiffusion3Pipeline", root / "checkpoints" / ckpt)
    # Without T5 the joint sequence is the 77 CLIP tokens only (ComfyUI's rule, decided for the
    # studio); the pipeline gives exactly that with max_sequence_length=0 (no zero T5 block).
    extra = {} if ckpt == "tiny-sd3" else {"max_sequence_length": 0}
    assert_same(ours, draw(pipe, negative_prompt=NEGATIVE, guidance_scale=4.5, **extra))


def test_sd3_img2img_matches_the_img2img_pipeline(root: Path, manager: ModelManager) -> None:
    nodes = graph("tiny-sd3", steps=5, denoise=0.6)
    nodes["img"] = {"type": "LoadImage", "inputs": {"path": "cube.png"}}
    nodes["lat"] = {"type": "VAEEncode", "inputs": {"vae": link("ck", "vae"), "image": link("img", "image")}}
    ours = image_of(run_graph(nodes, root, manager))
    pipe = pipeline("StableDiffusion3Img2ImgPipeline", root / "checkpoints" / "tiny-sd3")
    image = Image.open(root / "inputs" / "cube.png").convert("RGB")
    generator = torch.Generator("cpu").manual_seed(7)
    theirs = pipe(
        PROMPT,
        image=image,
        strength=0.6,
        num_inference_steps=5,
        negative_prompt=NEGATIVE,
        guidance_scale=4.5,
        generator=generator,
        output_type="np",
    ).images
    assert_same(ours, as_uint8(theirs))


def test_model_sampling_sd3_shift_matches_the_pipeline_with_that_shift(
    root: Path, manager: ModelManager
) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    shifted = {"type": "ModelSamplingSD3", "inputs": {"model": link("ck", "model"), "shift": 1.5}}
    ours = image_of(run_graph(graph("tiny-sd3", model=shifted), root, manager))
    default = image_of(run_graph(graph("tiny-sd3"), root, manager))
    pipe = pipeline(
        "StableDiffusion3Pipeline",
        root / "checkpoints" / "tiny-sd3",
        lambda config: FlowMatchEulerDiscreteScheduler.from_config(config, shift=1.5),
    )
    assert_same(ours, draw(pipe, negative_prompt=NEGATIVE, guidance_scale=4.5))
    assert np.abs(ours.astype(int) - default.astype(int)).max() > 1  # the shift changes the picture


def test_skip_layer_guidance_matches_the_pipelines_skip_guidance_layers(
    root: Path, manager: ModelManager
) -> None:
    slg = {
        "type": "SkipLayerGuidanceSD3",
        "inputs": {
            "model": link("ck", "model"),
            "layers": "1",
            "scale": 2.8,
            "start_percent": 0.01,
            "end_percent": 0.6,
        },
    }
    ours = image_of(run_graph(graph("tiny-sd3", steps=5, model=slg), root, manager))
    plain = image_of(run_graph(graph("tiny-sd3", steps=5), root, manager))
    pipe = pipeline("StableDiffusion3Pipeline", root / "checkpoints" / "tiny-sd3")
    theirs = draw(
        pipe,
        num_inference_steps=5,
        negative_prompt=NEGATIVE,
        guidance_scale=4.5,
        skip_guidance_layers=[1],
        skip_layer_guidance_scale=2.8,
        skip_layer_guidance_start=0.01,
        skip_layer_guidance_stop=0.6,
    )
    assert_same(ours, theirs)
    assert np.abs(ours.astype(int) - plain.astype(int)).max() > 1


@pytest.mark.parametrize(
    ("sampler", "scheduler_class", "settings"),
    [
        ("dpmpp_2m", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        ("unipc", "UniPCMultistepScheduler", {}),
    ],
)
def test_sd3_flow_solvers_match_the_pipeline_with_them(
    root: Path, manager: ModelManager, sampler: str, scheduler_class: str, settings: dict
) -> None:
    import diffusers

    ours = image_of(run_graph(graph("tiny-sd3", sampler=sampler), root, manager))
    flow = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0, **settings}
    scheduler = getattr(diffusers, scheduler_class).from_config({"num_train_timesteps": 1000, **flow})
    pipe = pipeline("StableDiffusion3Pipeline", root / "checkpoints" / "tiny-sd3", lambda config: scheduler)
    assert_same(ours, draw(pipe, negative_prompt=NEGATIVE, guidance_scale=4.5))


def test_clip_text_encode_sd3_matches_plain_encode_for_the_same_text(
    root: Path, manager: ModelManager
) -> None:
    sd3 = {
        "type": "CLIPTextEncodeSD3",
        "inputs": {
            "clip": link("ck", "clip"),
            "clip_l": PROMPT,
            "clip_g": PROMPT,
            "t5xxl": PROMPT,
            "empty_padding": "none",
        },
    }
    ours = image_of(run_graph(graph("tiny-sd3", positive=sd3), root, manager))
    assert_same(ours, image_of(run_graph(graph("tiny-sd3"), root, manager)))


# --------------------------------------------------------------------------- Flux


def flux_graph(ckpt: str, guidance: float | None = None, **kwargs: Any) -> dict:
    positive = None
    if guidance is not None:
        positive = {
            "type": "FluxGuidance",
            "inputs": {"conditioning": link("pos", "conditioning"), "guidance": guidance},
        }
    return graph(ckpt, cfg=1.0, positive=positive, **kwargs)


def test_flux_dev_with_flux_guidance_matches_the_pipeline(root: Path, manager: ModelManager) -> None:
    ours = image_of(run_graph(flux_graph("tiny-flux-dev", guidance=6.0), root, manager))
    pipe = pipeline("FluxPipeline", root / "checkpoints" / "tiny-flux-dev")
    assert_same(ours, draw(pipe, guidance_scale=6.0))
    default = image_of(run_graph(flux_graph("tiny-flux-dev"), root, manager))  # 3.5, the pipeline's default
    assert_same(default, draw(pipe, guidance_scale=3.5))


def test_clip_text_encode_flux_carries_its_guidance(root: Path, manager: ModelManager) -> None:
    flux = {
        "type": "CLIPTextEncodeFlux",
        "inputs": {"clip": link("ck", "clip"), "clip_l": PROMPT, "t5xxl": PROMPT, "guidance": 6.0},
    }
    ours = image_of(run_graph(graph("tiny-flux-dev", cfg=1.0, positive=flux), root, manager))
    assert_same(ours, image_of(run_graph(flux_graph("tiny-flux-dev", guidance=6.0), root, manager)))


def test_flux_schnell_matches_the_pipeline(root: Path, manager: ModelManager) -> None:
    ours = image_of(run_graph(flux_graph("tiny-flux-schnell"), root, manager))
    pipe = pipeline("FluxPipeline", root / "checkpoints" / "tiny-flux-schnell")
    assert_same(ours, draw(pipe, guidance_scale=0.0))


def test_flux_true_cfg_matches_the_pipelines_true_cfg_scale(root: Path, manager: ModelManager) -> None:
    ours = image_of(run_graph(graph("tiny-flux-schnell", cfg=2.0), root, manager))
    pipe = pipeline("FluxPipeline", root / "checkpoints" / "tiny-flux-schnell")
    assert_same(ours, draw(pipe, negative_prompt=NEGATIVE, true_cfg_scale=2.0))


@pytest.mark.parametrize(("width", "height"), [(64, 64), (128, 64)])
def test_flux_resolution_dependent_shift_matches_the_pipeline(
    root: Path, manager: ModelManager, width: int, height: int
) -> None:
    ours = image_of(run_graph(flux_graph("tiny-flux-dev", width=width, height=height), root, manager))
    pipe = pipeline("FluxPipeline", root / "checkpoints" / "tiny-flux-dev")
    assert_same(ours, draw(pipe, guidance_scale=3.5, width=width, height=height))
    # ModelSamplingFlux for the same size fixes the same shift
    fixed = {
        "type": "ModelSamplingFlux",
        "inputs": {
            "model": link("ck", "model"),
            "max_shift": 1.15,
            "base_shift": 0.5,
            "width": width,
            "height": height,
        },
    }
    nodes = flux_graph("tiny-flux-dev", width=width, height=height, model=fixed)
    assert_same(image_of(run_graph(nodes, root, manager)), ours)


def test_the_shift_depends_on_the_resolution() -> None:
    from models.flow_sampling import calculate_shift
    from tests.fixtures.tiny_dit import FLUX_DEV_SCHEDULER_CONFIG

    small, large = (
        calculate_shift(256, FLUX_DEV_SCHEDULER_CONFIG),
        calculate_shift(4096, FLUX_DEV_SCHEDULER_CONFIG),
    )
    assert (small, large) == pytest.approx((0.5, 1.15))


# --------------------------------------------------------------------------- loop details and errors


def test_sampler_window_hands_over_like_one_run(root: Path, manager: ModelManager) -> None:
    """KSamplerAdvanced: steps 0-2 with leftover noise, then 2-4 without adding noise, is one run."""
    from models.loading import load_checkpoint
    from models.sampling import SampleJob, sample
    from models.values import Cond, Latent

    checkpoint = load_checkpoint(root / "checkpoints" / "tiny-sd3")
    embeds, pooled = torch.randn(1, 77, 96), torch.randn(1, 96)
    steps: list[tuple[int, int]] = []

    def job(**kw: Any) -> SampleJob:
        base = {
            "unet": checkpoint.unet,
            "scheduler_config": checkpoint.scheduler_config,
            "positive": [Cond(embeds, pooled=pooled)],
            "negative": [Cond(embeds * 0, pooled=pooled * 0)],
            "latent": Latent(torch.zeros(1, 4, 8, 8)),
            "seed": 3,
            "steps": 4,
            "cfg": 3.0,
            "sampler": "euler",
            "family": "sd3",
            "on_step": lambda i, n, x: steps.append((i, n)),
        }
        return SampleJob(**{**base, **kw})

    whole = sample(job())
    first = sample(job(end_step=2, leftover_noise=True))
    second = sample(job(latent=Latent(first), start_step=2, add_noise=False))
    assert torch.allclose(whole, second, atol=1e-5)
    assert steps[:4] == [(1, 4), (2, 4), (3, 4), (4, 4)] and steps[4:] == [(1, 2), (2, 2), (1, 2), (2, 2)]

    cancelled = []

    def cancel() -> None:
        if len(cancelled) == 1:
            raise KeyboardInterrupt
        cancelled.append(1)

    with pytest.raises(KeyboardInterrupt):
        sample(job(), cancel)


def test_a_sampler_that_does_not_apply_names_those_that_do(root: Path, manager: ModelManager) -> None:
    result = run_graph(graph("tiny-sd3", sampler="ddim", steps=2), root, manager)
    assert result.status == "failed"
    assert result.error.input == "sampler"
    assert "euler" in result.error.message and "dpmpp_2m" in result.error.message


def test_sd_prompt_nodes_refuse_a_flux_clip(root: Path, manager: ModelManager) -> None:
    nodes = flux_graph("tiny-flux-schnell", steps=1)
    nodes["pos"] = {
        "type": "CLIPTextEncodeSDXL",
        "inputs": {"clip": link("ck", "clip"), "text_g": PROMPT, "text_l": PROMPT},
    }
    result = run_graph(nodes, root, manager)
    assert result.status == "failed" and "flux" in str(result.error)
    nodes["pos"] = {
        "type": "CLIPTextEncodeSD3",
        "inputs": {"clip": link("ck", "clip"), "clip_l": PROMPT, "clip_g": PROMPT, "t5xxl": PROMPT},
    }
    result = run_graph(nodes, root, manager)
    assert result.status == "failed" and "flux" in str(result.error) and "SD3" in str(result.error)


def test_previews_of_16_channel_latents() -> None:
    from nodes.support import latent_preview

    picture = latent_preview(torch.randn(2, 16, 8, 8))
    assert picture.shape == (1, 8, 8, 3) and np.isfinite(picture).all()


def test_the_vae_shift_round_trips(root: Path, manager: ModelManager) -> None:
    """Encode applies (x - shift) * scale and decode undoes it: a decoded picture re-encodes to
    latents that decode to the same picture (to the VAE's own error)."""
    from models.loading import load_checkpoint

    vae = load_checkpoint(root / "checkpoints" / "tiny-sd3").vae
    assert vae.config.shift_factor
    nodes = {
        "ck": {"type": "CheckpointLoader", "inputs": {"ckpt_name": "tiny-sd3"}},
        "img": {"type": "LoadImage", "inputs": {"path": "cube.png"}},
        "e": {"type": "VAEEncode", "inputs": {"vae": link("ck", "vae"), "image": link("img", "image")}},
        "d": {"type": "VAEDecode", "inputs": {"vae": link("ck", "vae"), "latent": link("e", "latent")}},
        "show": {"type": "PreviewImage", "inputs": {"images": link("d", "image")}},
    }
    ours = image_of(run_graph(nodes, root, manager))
    pixels = torch.from_numpy(np.asarray(Image.open(root / "inputs" / "cube.png"), np.float32) / 127.5 - 1)
    with torch.no_grad():
        mean = vae.encode(pixels.permute(2, 0, 1)[None]).latent_dist.mean
        theirs = vae.decode(mean).sample
    assert_same(ours, as_uint8((theirs / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()))


def test_a_noise_mask_keeps_the_known_part(root: Path) -> None:
    """Inpainting with any flow model: after every step the unmasked part is the image noised to
    the next level, so the result keeps it exactly; the masked part is drawn anew."""
    from models.loading import load_checkpoint
    from models.sampling import SampleJob, sample
    from models.values import Cond, Latent

    checkpoint = load_checkpoint(root / "checkpoints" / "tiny-flux-schnell")
    image = torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1.0  # repaint the right half
    job = SampleJob(
        unet=checkpoint.unet,
        scheduler_config=checkpoint.scheduler_config,
        positive=[Cond(torch.randn(1, 512, 32), pooled=torch.randn(1, 32))],
        negative=[],
        latent=Latent(image, noise_mask=mask),
        seed=1,
        steps=3,
        cfg=1.0,
        sampler="euler",
        family="flux",
    )
    result = sample(job)
    assert torch.equal(result[..., :4], image[..., :4])
    assert not torch.allclose(result[..., 4:], image[..., 4:], atol=1e-2)
