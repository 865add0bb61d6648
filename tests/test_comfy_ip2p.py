"""ComfyUI's instruction editing: InstructPixToPixConditioning (the picture travels on the prompts)
and DualCFGGuider (two scales over three prompts), with any sampler.

Oracles: diffusers' StableDiffusionInstructPix2PixPipeline with the same tiny editing model, seed
and noise levels; the studio's own InstructPix2Pix node; and the guidance formulas written out here
over direct calls of the UNet. ComfyUI's example wiring (cond1 and cond2 from
InstructPixToPixConditioning, the bare negative prompt as negative, "regular") is the pipeline's
three-way guidance, so one test covers both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from cli.comfy import convert  # noqa: E402
from comfy_import.files import read_file  # noqa: E402
from graph.validate import validate  # noqa: E402
from models.dual_cfg import DualGuidance  # noqa: E402
from models.sampling import GuidedModel, SampleJob  # noqa: E402
from models.values import Cond, Latent  # noqa: E402
from nodes.registry import default_registry  # noqa: E402
from tests.fixtures.models_root import SIZE  # noqa: E402
from tests.fixtures.tiny_models import SD_SCHEDULER_CONFIG, tiny_sd_unet  # noqa: E402
from tests.helpers import assert_same, link, run_graph  # noqa: E402
from tests.test_diffusion import PROMPT, as_uint8, image_of, pipeline  # noqa: E402

CORPUS_EDIT = (
    Path(__file__).parent
    / "data"
    / "comfy"
    / "corpus"
    / "comfyui_examples"
    / "edit_models__sdxl_edit_model.png"
)


# --------------------------------------------------------------------------- graphs


def edit_nodes(ckpt: str = "tiny-ip2p") -> dict[str, Any]:
    """A checkpoint, the instruction and an empty negative, and the picture on both prompts."""
    return {
        "ck": {"type": "CheckpointLoader", "inputs": {"ckpt_name": ckpt}},
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": PROMPT}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": ""}},
        "img": {"type": "LoadImage", "inputs": {"path": "shapes.png"}},
        "ip2p": {
            "type": "InstructPixToPixConditioning",
            "inputs": {
                "positive": link("pos", "conditioning"),
                "negative": link("neg", "conditioning"),
                "vae": link("ck", "vae"),
                "pixels": link("img", "image"),
            },
        },
    }


def decoded(nodes: dict[str, Any], latent: dict[str, str]) -> dict[str, Any]:
    nodes["d"] = {"type": "VAEDecode", "inputs": {"vae": link("ck", "vae"), "latent": latent}}
    nodes["show"] = {"type": "PreviewImage", "inputs": {"images": link("d", "image")}}
    return nodes


def custom(nodes: dict[str, Any], guider: dict[str, Any], latent: dict[str, str]) -> dict[str, Any]:
    """SamplerCustomAdvanced with ``guider``: Euler over 4 Karras levels, noise seed 5."""
    nodes["g"] = guider
    nodes["sel"] = {"type": "SamplerSelect", "inputs": {"sampler_name": "euler"}}
    nodes["sch"] = {
        "type": "BasicScheduler",
        "inputs": {"model": link("ck", "model"), "scheduler": "karras", "steps": 4, "denoise": 1.0},
    }
    nodes["noise"] = {"type": "RandomNoise", "inputs": {"noise_seed": 5}}
    nodes["sca"] = {
        "type": "SamplerCustomAdvanced",
        "inputs": {
            "noise": link("noise", "noise"),
            "guider": link("g", "guider"),
            "sampler": link("sel", "sampler"),
            "sigmas": link("sch", "sigmas"),
            "latent": latent,
        },
    }
    return decoded(nodes, link("sca", "output"))


def dual_guider(style: str = "regular", cfg_conds: float = 7.5, cfg_image: float = 1.5) -> dict[str, Any]:
    """ComfyUI's example wiring: the two prompts with the picture, and the bare negative prompt."""
    return {
        "type": "DualCFGGuider",
        "inputs": {
            "model": link("ck", "model"),
            "cond1": link("ip2p", "positive"),
            "cond2": link("ip2p", "negative"),
            "negative": link("neg", "conditioning"),
            "cfg_conds": cfg_conds,
            "cfg_cond2_negative": cfg_image,
            "style": style,
        },
    }


def karras_levels(steps: int) -> list[float]:
    """SD's Karras levels for ``steps`` (rho 7) from its scaled-linear betas, written out here."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    levels = np.sqrt((1 - np.cumprod(1 - betas)) / np.cumprod(1 - betas))
    low, high = levels[0] ** (1 / 7), levels[-1] ** (1 / 7)
    return [float((high + r * (low - high)) ** 7) for r in np.linspace(0, 1, steps)] + [0.0]


# --------------------------------------------------------------------------- against the pipeline


@pytest.mark.slow
def test_dual_cfg_guider_equals_the_instruct_pix2pix_pipeline(models_root, manager):
    nodes = custom(edit_nodes(), dual_guider(), link("ip2p", "latent"))
    ours = image_of(run_graph(nodes, models_root, manager))

    pipe = pipeline(
        "StableDiffusionInstructPix2PixPipeline", models_root / "checkpoints" / "tiny-ip2p", "euler"
    )
    own_levels = pipe.scheduler.set_timesteps
    sigmas = karras_levels(4)
    pipe.scheduler.set_timesteps = lambda steps, device=None: own_levels(device=device, sigmas=sigmas)
    theirs = pipe(
        PROMPT,
        image=Image.open(models_root / "inputs" / "shapes.png"),
        num_inference_steps=4,
        guidance_scale=7.5,
        image_guidance_scale=1.5,
        generator=torch.Generator("cpu").manual_seed(5),
        output_type="np",
    ).images
    assert_same(ours, as_uint8(theirs))


@pytest.mark.slow
def test_ksampler_with_the_picture_equals_instruct_pix2pix_at_image_guidance_1(models_root, manager):
    """A plain sampler's two-way CFG with the picture on both prompts is the three-way formula with
    image guidance 1: ``uncond + t * (text - image) + 1 * (image - uncond) = image + t * (text - image)``."""
    nodes = edit_nodes()
    nodes["s"] = {
        "type": "Sampler",
        "inputs": {
            "model": link("ck", "model"),
            "positive": link("ip2p", "positive"),
            "negative": link("ip2p", "negative"),
            "latent": link("ip2p", "latent"),
            "seed": 3,
            "steps": 4,
            "cfg": 6.0,
            "sampler": "euler",
        },
    }
    ours = image_of(run_graph(decoded(nodes, link("s", "latent")), models_root, manager))
    own = edit_nodes()
    own["s"] = {
        "type": "InstructPix2Pix",
        "inputs": {
            "model": link("ck", "model"),
            "positive": link("pos", "conditioning"),
            "negative": link("neg", "conditioning"),
            "vae": link("ck", "vae"),
            "image": link("img", "image"),
            "seed": 3,
            "steps": 4,
            "cfg": 6.0,
            "image_cfg": 1.0,
            "sampler": "euler",
        },
    }
    del own["ip2p"]
    theirs = image_of(run_graph(decoded(own, link("s", "latent")), models_root, manager))
    assert_same(ours, theirs)


# --------------------------------------------------------------------------- the formulas, one model call


@pytest.fixture(scope="module")
def editor() -> Any:
    return tiny_sd_unet(seed=2, in_channels=8).eval()


def prompt(seed: int, picture: torch.Tensor | None) -> Cond:
    embeds = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(seed))
    return Cond(embeds, concat_image=picture)


def one_call(
    unet: Any, positive: Cond, negative: Cond, cfg: float, dual: DualGuidance | None = None
) -> tuple:
    """The guided prediction of one GuidedModel call, and the model input and timestep it was given."""
    job = SampleJob(
        unet=unet,
        scheduler_config=dict(SD_SCHEDULER_CONFIG),
        positive=(positive,),
        negative=(negative,),
        latent=Latent(torch.zeros(1, 4, 8, 8)),
        seed=0,
        steps=4,
        cfg=cfg,
        sampler="euler",
        dual=dual,
    )
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    t = torch.tensor(500)
    return GuidedModel(job, "cpu", torch.float32)(x, t, 0, 4), x, t


def unet_with(unet: Any, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
    """The UNet's prediction for one prompt, its picture (or zeros) concatenated to the input."""
    picture = cond.concat_image if cond.concat_image is not None else torch.zeros_like(x)
    with torch.no_grad():
        return unet(torch.cat([x, picture], dim=1), t, encoder_hidden_states=cond.embeds).sample


PICTURE = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))


def test_ksampler_guidance_is_two_way_cfg_with_the_picture_in_both(editor):
    positive, negative = prompt(1, PICTURE), prompt(2, PICTURE)
    ours, x, t = one_call(editor, positive, negative, cfg=5.0)
    uncond, cond = unet_with(editor, x, t, negative), unet_with(editor, x, t, positive)
    assert torch.allclose(ours, uncond + 5.0 * (cond - uncond), atol=1e-5)


@pytest.mark.parametrize(
    ("style", "cfg1", "cfg2"), [("regular", 7.5, 1.5), ("nested", 4.0, 2.0), ("regular", 3.0, 1.0)]
)
def test_dual_cfg_combines_three_predictions_as_comfyui(editor, style, cfg1, cfg2):
    positive, middle, negative = prompt(1, PICTURE), prompt(2, PICTURE), prompt(2, None)
    dual = DualGuidance((middle,), cfg2, nested=style == "nested")
    ours, x, t = one_call(editor, positive, negative, cfg=cfg1, dual=dual)
    pos, mid, neg = (unet_with(editor, x, t, c) for c in (positive, middle, negative))
    if style == "nested":  # ComfyUI's Guider_DualCFG, nested
        text = mid + cfg1 * (pos - mid)
        expected = neg + cfg2 * (text - neg)
    else:  # regular: the InstructPix2Pix pipeline's formula, text scale cfg1, image scale cfg2
        expected = neg + cfg2 * (mid - neg) + cfg1 * (pos - mid)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_a_picture_is_fitted_to_the_latent_grid_and_batch(editor):
    """A picture of another size is cut to the grid's aspect about the centre and resized (ComfyUI's
    "center" upscale), and a batch of one serves every row."""
    from models.concat_image import concat_inputs

    wide = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(3))
    fitted = concat_inputs([prompt(1, wide), prompt(2, None)], 2, (8, 8), "cpu", torch.float32)
    assert fitted.shape == (4, 4, 8, 8)
    assert torch.equal(fitted[0], wide[0, :, :, 4:12]) and torch.equal(fitted[1], wide[0, :, :, 4:12])
    assert not fitted[2:].any()


# --------------------------------------------------------------------------- refusals


@pytest.mark.slow
def test_a_picture_given_to_a_model_that_cannot_see_it_is_refused(models_root, manager):
    nodes = edit_nodes("tiny-sd")
    nodes["s"] = {
        "type": "Sampler",
        "inputs": {
            "model": link("ck", "model"),
            "positive": link("ip2p", "positive"),
            "negative": link("ip2p", "negative"),
            "latent": link("ip2p", "latent"),
            "seed": 1,
            "steps": 2,
            "cfg": 5.0,
            "sampler": "euler",
        },
    }
    result = run_graph(decoded(nodes, link("s", "latent")), models_root, manager)
    assert result.status == "failed" and result.error.input == "positive"
    assert "not an instruction-editing model" in result.error.message

    guided = custom(edit_nodes("tiny-sd"), dual_guider(), link("ip2p", "latent"))
    result = run_graph(guided, models_root, manager)
    assert result.status == "failed" and result.error.input == "guider"
    assert "not an instruction-editing model" in result.error.message


@pytest.mark.slow
def test_an_editing_model_without_a_picture_says_to_add_the_conditioning(models_root, manager):
    nodes = edit_nodes()
    nodes["lat"] = {
        "type": "EmptyLatent",
        "inputs": {"width": SIZE, "height": SIZE, "vae": link("ck", "vae")},
    }
    nodes["s"] = {
        "type": "Sampler",
        "inputs": {
            "model": link("ck", "model"),
            "positive": link("pos", "conditioning"),
            "negative": link("neg", "conditioning"),
            "latent": link("lat", "latent"),
            "seed": 1,
            "steps": 2,
            "cfg": 5.0,
            "sampler": "euler",
        },
    }
    result = run_graph(decoded(nodes, link("s", "latent")), models_root, manager)
    assert result.status == "failed" and result.error.input == "positive"
    assert "add InstructPixToPixConditioning" in result.error.message


# --------------------------------------------------------------------------- import


def test_comfyuis_edit_example_imports_as_our_nodes():
    result = convert(read_file(CORPUS_EDIT), CORPUS_EDIT.name)
    assert result.complete and result.warnings == []
    nodes = result.workflow["nodes"]
    assert nodes["37:6"]["type"] == "InstructPixToPixConditioning"
    assert nodes["37:6"]["inputs"] == {
        "positive": link("6", "conditioning"),
        "negative": link("7", "conditioning"),
        "vae": link("4", "vae"),
        "pixels": link("38", "image"),  # ComfyUI's picture scaled to a megapixel first
    }
    guider = nodes["37:7"]
    assert guider["type"] == "DualCFGGuider"
    assert guider["inputs"] == {
        "model": link("4", "model"),
        "cond1": link("37:6", "positive"),
        "cond2": link("37:6", "negative"),
        "negative": link("7", "conditioning"),
        "cfg_conds": 5.0,
        "cfg_cond2_negative": 1.5,
    }
    assert nodes["37:8"]["inputs"]["guider"] == link("37:7", "guider")
    assert nodes["37:8"]["inputs"]["latent"] == link("37:6", "latent")
    issues = validate(result.workflow, default_registry()).issues
    assert [(i.node_id, i.input) for i in issues] == [("4", "ckpt_name")]  # CosXL is not installed here


def test_an_api_workflow_with_the_nested_style_imports_it():
    from cli.comfy import read_prompt

    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "edit.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "make it snow", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "13": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "20": {
            "class_type": "InstructPixToPixConditioning",
            "inputs": {"positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["13", 0]},
        },
        "21": {
            "class_type": "DualCFGGuider",
            "inputs": {
                "model": ["4", 0],
                "cond1": ["20", 0],
                "cond2": ["20", 1],
                "negative": ["7", 0],
                "cfg_conds": 4.0,
                "cfg_cond2_negative": 2.0,
                "style": "nested",
            },
        },
        "22": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "positive": ["20", 0],
                "negative": ["20", 1],
                "latent_image": ["20", 2],
                "seed": 1,
                "steps": 4,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "23": {"class_type": "VAEDecode", "inputs": {"samples": ["22", 0], "vae": ["4", 2]}},
        "24": {"class_type": "PreviewImage", "inputs": {"images": ["23", 0]}},
    }
    result = convert(read_prompt(prompt), "edit.json")
    assert result.complete
    nodes = result.workflow["nodes"]
    assert nodes["21"]["inputs"]["style"] == "nested" and nodes["21"]["inputs"]["cfg_conds"] == 4.0
    assert nodes["22"]["inputs"]["latent"] == link("20", "latent")
    assert nodes["22"]["inputs"]["positive"] == link("20", "positive")


def test_flow_models_refuse_the_picture_and_the_dual_guider():
    """The flow sampler (SD3, Flux) neither feeds a picture to the model nor guides over three prompts."""
    from types import SimpleNamespace

    from models.concat_image import EditInputError, check
    from models.schedules import GuiderSpec, NoiseSpec, SamplerSpec
    from nodes.base import NodeInputError
    from nodes.sampling_custom import _sample_custom
    from tests.helpers import make_ctx

    with pytest.raises(EditInputError, match="not to flux models"):
        check(SimpleNamespace(config=SimpleNamespace(in_channels=128)), "flux", 64, [prompt(1, PICTURE)])
    check(SimpleNamespace(config=SimpleNamespace(in_channels=64)), "flux", 64, [prompt(1, None)])

    flux = SimpleNamespace(checkpoint=SimpleNamespace(family="flux"))
    cond = (prompt(1, None),)
    guider = GuiderSpec(flux, cond, cond, 3.0, middle=cond, middle_cfg=2.0)
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    latent = Latent(torch.zeros(1, 16, 8, 8))
    with pytest.raises(NodeInputError) as refused:
        _sample_custom(make_ctx(), guider, SamplerSpec("euler"), sigmas, latent, NoiseSpec(1), False)
    assert refused.value.input_name == "guider" and "DualCFGGuider runs UNet models" in str(refused.value)
