"""ComfyUI's InpaintModelConditioning and ConditioningSetTimestepRange, against independent oracles.

InpaintModelConditioning must inpaint as diffusers' StableDiffusionInpaintPipeline does, with a
9-channel inpainting model (noise mask on or off: the model sees its mask either way) and with an
ordinary model (the noise mask keeps the unmasked part); off, an ordinary model redraws the whole
picture as image-to-image does. A timestep range must switch prompts exactly as two
KSamplerAdvanced windows do.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tests.fixtures.models_root import SIZE  # noqa: E402
from tests.helpers import link  # noqa: E402
from tests.test_diffusion import (  # noqa: E402
    PROMPT,
    as_uint8,
    assert_same,
    image_of,
    img2img_nodes,
    pipeline,
    run_graph,
    txt2img,
)

pytestmark = pytest.mark.slow


def inpaint_nodes(ckpt: str, seed: int, steps: int, noise_mask: bool) -> dict:
    """txt2img whose sampler takes InpaintModelConditioning's prompts and latent."""
    nodes = txt2img(ckpt, seed=seed, steps=steps)
    nodes["img"] = {"type": "LoadImage", "inputs": {"path": "shapes.png"}}
    nodes["m"] = {"type": "LoadImage", "inputs": {"path": "mask.png"}}
    nodes["mm"] = {"type": "ImageToMask", "inputs": {"image": link("m", "image"), "channel": "red"}}
    nodes["imc"] = {
        "type": "InpaintModelConditioning",
        "inputs": {
            "positive": link("pos", "conditioning"),
            "negative": link("neg", "conditioning"),
            "vae": link("ck", "vae"),
            "pixels": link("img", "image"),
            "mask": link("mm", "mask"),
            "noise_mask": noise_mask,
        },
    }
    nodes["s"]["inputs"].update(
        positive=link("imc", "positive"), negative=link("imc", "negative"), latent=link("imc", "latent")
    )
    del nodes["lat"]
    return nodes


def inpaint_pipeline(models_root, ckpt: str, seed: int, steps: int) -> np.ndarray:
    pipe = pipeline("StableDiffusionInpaintPipeline", models_root / "checkpoints" / ckpt, "euler")
    return pipe(
        PROMPT,
        image=Image.open(models_root / "inputs" / "shapes.png"),
        mask_image=Image.open(models_root / "inputs" / "mask.png"),
        strength=1.0,
        num_inference_steps=steps,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    ).images


def test_inpaint_model_conditioning_with_a_nine_channel_model_matches_inpaint_pipeline(models_root, manager):
    theirs = as_uint8(inpaint_pipeline(models_root, "tiny-inpaint", seed=11, steps=6))
    for noise_mask in (True, False):  # the inpainting model sees its mask either way
        ours = image_of(run_graph(inpaint_nodes("tiny-inpaint", 11, 6, noise_mask), models_root, manager))
        assert_same(ours, theirs)


def test_inpaint_model_conditioning_noise_mask_keeps_the_rest_with_an_ordinary_model(models_root, manager):
    kept = image_of(run_graph(inpaint_nodes("tiny-sd", 7, 10, True), models_root, manager))
    assert_same(kept, as_uint8(inpaint_pipeline(models_root, "tiny-sd", seed=7, steps=10)))
    # without the noise mask an ordinary model redraws the whole picture: image-to-image at denoise 1
    redrawn = image_of(run_graph(inpaint_nodes("tiny-sd", 7, 10, False), models_root, manager))
    assert np.array_equal(redrawn, image_of(run_graph(img2img_nodes(1.0), models_root, manager)))
    assert not np.array_equal(redrawn, kept)


OTHER = "a blue square at the bottom right"


def ranged_nodes(sampler: str, first: tuple[float, float], second: tuple[float, float] | None) -> dict:
    """Two prompts, each limited to a range (``second`` None: the first prompt alone), 10 steps."""
    nodes = txt2img(sampler=sampler, seed=3, steps=10)
    nodes["r1"] = {
        "type": "ConditioningSetTimestepRange",
        "inputs": {"conditioning": link("pos", "conditioning"), "start": first[0], "end": first[1]},
    }
    positive = link("r1", "conditioning")
    if second is not None:
        nodes["pos2"] = {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": OTHER}}
        nodes["r2"] = {
            "type": "ConditioningSetTimestepRange",
            "inputs": {"conditioning": link("pos2", "conditioning"), "start": second[0], "end": second[1]},
        }
        nodes["both"] = {
            "type": "ConditioningCombine",
            "inputs": {"conditioning_a": positive, "conditioning_b": link("r2", "conditioning")},
        }
        positive = link("both", "conditioning")
    nodes["s"]["inputs"]["positive"] = positive
    return nodes


def two_windows(sampler: str) -> dict:
    """The oracle: the first prompt for steps 0-5 (handing on its noisy latent), the other for 5-10."""
    nodes = txt2img(sampler=sampler, seed=3, steps=10)
    nodes["pos2"] = {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": OTHER}}
    common = {"model": link("ck", "model"), "negative": link("neg", "conditioning")}
    common.update(seed=3, steps=10, cfg=7.5, sampler=sampler)
    nodes["s"] = {
        "type": "SamplerAdvanced",
        "inputs": {
            **common,
            "positive": link("pos", "conditioning"),
            "latent": link("lat", "latent"),
            "add_noise": True,
            "start_at_step": 0,
            "end_at_step": 5,
            "return_with_leftover_noise": True,
        },
    }
    nodes["s2"] = {
        "type": "SamplerAdvanced",
        "inputs": {
            **common,
            "positive": link("pos2", "conditioning"),
            "latent": link("s", "latent"),
            "add_noise": False,
            "start_at_step": 5,
            "end_at_step": 10000,
            "return_with_leftover_noise": False,
        },
    }
    nodes["d"]["inputs"]["latent"] = link("s2", "latent")
    return nodes


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_timestep_ranges_switch_prompts_as_two_sampler_windows_do(models_root, manager, sampler):
    switched = image_of(run_graph(ranged_nodes(sampler, (0.0, 0.5), (0.5, 1.0)), models_root, manager))
    assert_same(switched, image_of(run_graph(two_windows(sampler), models_root, manager)))
    first_only = image_of(run_graph(ranged_nodes(sampler, (0.0, 1.0), None), models_root, manager))
    assert not np.array_equal(switched, first_only)  # the second prompt did act


def test_a_full_range_is_no_range(models_root, manager):
    plain = image_of(run_graph(txt2img(seed=3, steps=10), models_root, manager))
    assert np.array_equal(
        image_of(run_graph(ranged_nodes("euler", (0.0, 1.0), None), models_root, manager)), plain
    )


def test_a_side_with_no_conditioning_in_range_predicts_a_clean_zero_latent():
    from models.per_step import TimestepRanges
    from models.sampling import to_clean
    from models.schedules import ModelLevels
    from models.values import Cond

    levels = ModelLevels(torch.linspace(0.03, 14.6, 1000))
    x_in = torch.randn(1, 4, 8, 8)
    late = Cond(torch.zeros(1, 77, 32), timestep_range=(0.6, 1.0))
    t = 900.0  # early in sampling: a high noise level, before the conditioning's range starts
    sigma = levels.sigma(t)
    assert sigma > TimestepRanges(levels, "epsilon").level(0.6)
    for prediction in ("epsilon", "v_prediction", "sample"):
        side = TimestepRanges(levels, prediction).combiner(x_in, t)
        pred = side(torch.randn(1, 4, 8, 8), [late], 1)
        assert torch.allclose(to_clean(pred, x_in, sigma, prediction), torch.zeros_like(x_in), atol=1e-5)
    # in range, the conditioning's own prediction, untouched
    own = torch.randn(1, 4, 8, 8)
    assert torch.equal(TimestepRanges(levels, "epsilon").combiner(x_in, 100.0)(own, [late], 1), own)


def test_flow_models_leave_conditionings_out_by_their_own_levels():
    from models.per_step import TimestepRanges
    from models.schedules import FlowLevels
    from models.values import Cond

    ranges = TimestepRanges(FlowLevels(3.0), "flow")
    early = Cond(torch.zeros(1, 77, 32), timestep_range=(0.0, 0.1))
    assert ranges.acts(early, 1.0) and not ranges.acts(early, 0.5)
    x = torch.randn(1, 16, 4, 4)
    velocity = ranges.combiner(x, 500.0)(torch.randn(1, 16, 4, 4), [early], 1)
    assert torch.allclose(x - 0.5 * velocity, torch.zeros_like(x), atol=1e-6)  # a clean zero latent
