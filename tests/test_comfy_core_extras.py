"""The last small ComfyUI core nodes: LatentCrop, ComfySwitchNode (Switch), PreviewAny (ShowValue),
ImageScaleToTotalPixels, MaskComposite, GetImageSize and Canny (CannyEdges), each against a formula
written here or Pillow / OpenCV, and their import from ComfyUI's formats."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from cli.comfy import convert, read_prompt
from graph.executor import Executor
from graph.validate import validate
from models.values import Latent
from nodes.base import NodeInputError
from nodes.control import CannyEdges
from nodes.image import GetImageSize, ImageScaleToTotalPixels
from nodes.latent import LatentCrop
from nodes.mask import MaskComposite
from nodes.registry import default_registry
from tests.helpers import link, node, run_node, valid


def fake_vae(scale: int) -> SimpleNamespace:
    """A VAE handle as the nodes see it, for a VAE that shrinks pictures by ``scale``."""
    levels = int(math.log2(scale)) + 1
    model = SimpleNamespace(config=SimpleNamespace(block_out_channels=(8,) * levels))
    return SimpleNamespace(get=lambda: model)


def comfy(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


# --- LatentCrop -----------------------------------------------------------------------------------


def comfy_latent_crop(samples: torch.Tensor, width: int, height: int, x: int, y: int) -> torch.Tensor:
    """ComfyUI's LatentCrop as its docs say: cells = pixels // 8, x and y at most 8 cells from
    the far edges, the region cut off at the edges."""
    left, top = min(x // 8, samples.shape[3] - 8), min(y // 8, samples.shape[2] - 8)
    return samples[:, :, top : top + height // 8, left : left + width // 8]


@pytest.mark.parametrize(
    ("width", "height", "x", "y"),
    [(64, 64, 0, 0), (128, 64, 64, 32), (256, 256, 128, 128), (64, 64, 160, 150), (512, 512, 8, 16)],
)
def test_latent_crop_matches_comfyui(width, height, x, y):
    samples = torch.randn(2, 4, 20, 24, generator=torch.Generator().manual_seed(1))
    mask = torch.rand(2, 1, 20, 24, generator=torch.Generator().manual_seed(2))
    latent = Latent(samples, std=samples.abs(), noise_mask=mask)
    out = run_node(LatentCrop, latent=latent, width=width, height=height, x=x, y=y)["latent"]
    expected = comfy_latent_crop(samples, width, height, x, y)
    assert torch.equal(out.samples, expected)
    assert torch.equal(out.std, expected.abs())
    assert torch.equal(out.noise_mask, comfy_latent_crop(mask, width, height, x, y))


def test_latent_crop_counts_pixels_for_its_vae():
    samples = torch.arange(40 * 48, dtype=torch.float32).reshape(1, 1, 40, 48)
    out = run_node(LatentCrop, latent=Latent(samples), width=64, height=32, x=40, y=20, vae=fake_vae(4))
    # a 4x VAE: 64x32 pixels are 16x8 cells from cell (10, 5)
    assert torch.equal(out["latent"].samples, samples[:, :, 5:13, 10:26])
    # x past the edge is held 64 pixels (16 cells) from it, as ComfyUI holds it 8 cells of 8
    held = run_node(LatentCrop, latent=Latent(samples), width=64, height=64, x=1000, y=0, vae=fake_vae(4))
    assert torch.equal(held["latent"].samples, samples[:, :, 0:16, 32:48])
    with pytest.raises(NodeInputError) as err:
        run_node(LatentCrop, latent=Latent(samples), width=2, height=64, x=0, y=0, vae=fake_vae(4))
    assert err.value.input_name == "width"


def test_latent_crop_import_gets_the_vae_and_keeps_the_pixels():
    prompt = {
        "4": comfy("CheckpointLoaderSimple", ckpt_name="toy.safetensors"),
        "5": comfy("EmptyLatentImage", width=512, height=512, batch_size=1),
        "6": comfy("LatentCrop", samples=["5", 0], width=256, height=128, x=64, y=0),
        "8": comfy("VAEDecode", samples=["6", 0], vae=["4", 2]),
    }
    result = convert(read_prompt(prompt), "test.json")
    crop = result.workflow["nodes"]["6"]
    assert crop["type"] == "LatentCrop"
    assert crop["inputs"] == {
        "latent": link("5", "latent"),
        "width": 256,
        "height": 128,
        "x": 64,
        "y": 0,
        "vae": link("4", "vae"),
    }
    assert result.complete and result.warnings == []


# --- ComfySwitchNode and GetImageSize ----------------------------------------------------------------


@pytest.mark.parametrize(("switch", "size"), [(True, (64, 32, 1)), (False, (16, 8, 3))])
def test_switch_and_get_image_size_run_after_import(switch, size):
    prompt = {
        "1": comfy("EmptyImage", width=64, height=32, batch_size=1, color=0),
        "2": comfy("EmptyImage", width=16, height=8, batch_size=3, color=0xFFFFFF),
        "3": comfy("ComfySwitchNode", switch=switch, on_true=["1", 0], on_false=["2", 0]),
        "4": comfy("GetImageSize", image=["3", 0]),
    }
    result = convert(read_prompt(prompt), "test.json")
    assert result.complete and result.warnings == []
    nodes = result.workflow["nodes"]
    assert nodes["3"]["type"] == "Switch"
    assert nodes["3"]["inputs"] == {
        "select": switch,
        "on_true": link("1", "image"),
        "on_false": link("2", "image"),
    }
    for name in ("width", "height", "batch_size"):
        nodes[f"show_{name}"] = node("ShowValue", value=link("4", name))
    registry = default_registry()
    run = Executor(registry).run(valid(result.workflow, registry))
    assert run.status == "done", run.error
    shown = tuple(run.outputs[f"show_{name}"]["text"] for name in ("width", "height", "batch_size"))
    assert shown == tuple(str(v) for v in size)
    assert ("2" if switch else "1") not in run.executed  # only the chosen branch ran


@pytest.mark.parametrize("select", [True, False])
def test_switch_takes_constants_as_its_branches(select):
    """ComfyUI templates switch between texts typed into primitives, which import as constants."""
    workflow = {
        "s": node("Switch", select=select, on_true="yes", on_false="no"),
        "show": node("ShowValue", value=link("s", "value")),
    }
    registry = default_registry()
    run = Executor(registry).run(valid({"version": 1, "nodes": workflow}, registry))
    assert run.status == "done", run.error
    assert run.outputs["show"]["text"] == ("'yes'" if select else "'no'")


def test_switch_ui_widget_order():
    ui = {
        "last_node_id": 3,
        "last_link_id": 2,
        "nodes": [
            {"id": 1, "type": "EmptyImage", "inputs": [], "widgets_values": [64, 64, 1, 0], "outputs": []},
            {
                "id": 2,
                "type": "ComfySwitchNode",
                "inputs": [
                    {"name": "on_false", "type": "*", "link": 1},
                    {"name": "on_true", "type": "*", "link": 2},
                ],
                "widgets_values": [False],
                "outputs": [],
            },
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 1, 0, 2, 1, "IMAGE"]],
        "version": 0.4,
    }
    result = convert(read_prompt(ui), "test.json")
    assert result.workflow["nodes"]["2"]["inputs"]["select"] is False


def test_preview_any_shows_its_value_after_import():
    """ComfyUI's PreviewAny (UI format, its three preview widgets saved as nulls) becomes ShowValue,
    which shows the value it is given."""
    ui = {
        "last_node_id": 2,
        "last_link_id": 1,
        "nodes": [
            {"id": 1, "type": "GetImageSize", "inputs": [{"name": "image", "type": "IMAGE", "link": 2}]},
            {"id": 3, "type": "EmptyImage", "inputs": [], "widgets_values": [48, 16, 1, 0], "outputs": []},
            {
                "id": 2,
                "type": "PreviewAny",
                "inputs": [{"name": "source", "type": "*", "link": 1}],
                "outputs": [{"name": "STRING", "type": "STRING", "links": None}],
                "widgets_values": [None, None, None],
            },
        ],
        "links": [[1, 1, 0, 2, 0, "INT"], [2, 3, 0, 1, 0, "IMAGE"]],
        "version": 0.4,
    }
    result = convert(read_prompt(ui), "test.json")
    assert result.complete and result.warnings == []
    shown = result.workflow["nodes"]["2"]
    assert (shown["type"], shown["inputs"]) == ("ShowValue", {"value": link("1", "width")})
    registry = default_registry()
    run = Executor(registry).run(valid(result.workflow, registry))
    assert run.status == "done", run.error
    assert run.outputs["2"]["text"] == "48"


# --- ImageScaleToTotalPixels --------------------------------------------------------------------------


def test_image_scale_to_total_pixels_size_and_pixels():
    rng = np.random.default_rng(0)
    image = rng.random((1, 30, 50, 3), dtype=np.float32)
    out = run_node(ImageScaleToTotalPixels, image=image, upscale_method="lanczos", megapixels=0.01)["image"]
    # ComfyUI: scale = sqrt(megapixels * 1024**2 / (w h)), each side rounded
    scale = math.sqrt(0.01 * 1024 * 1024 / (50 * 30))
    assert out.shape == (1, round(30 * scale), round(50 * scale), 3) == (1, 79, 132, 3)
    as_bytes = Image.fromarray((image[0] * 255 + 0.5).astype(np.uint8))
    oracle = np.asarray(as_bytes.resize((132, 79), Image.Resampling.LANCZOS), dtype=np.float32) / 255
    assert np.abs(out[0] - oracle).mean() < 2 / 255
    stepped = run_node(
        ImageScaleToTotalPixels, image=image, upscale_method="bilinear", megapixels=0.01, resolution_steps=16
    )["image"]
    assert (
        stepped.shape == (1, round(30 * scale / 16) * 16, round(50 * scale / 16) * 16, 3) == (1, 80, 128, 3)
    )


def test_image_scale_to_total_pixels_keeps_to_the_pixel_budget():
    image = np.zeros((64, 8, 8, 3), dtype=np.float32)
    with pytest.raises(NodeInputError) as err:
        run_node(ImageScaleToTotalPixels, image=image, upscale_method="nearest-exact", megapixels=16.0)
    assert err.value.input_name == "megapixels"


def test_image_scale_to_total_pixels_imports_old_and_new_widgets():
    for widgets, steps in ((["nearest-exact", 1], None), (["lanczos", 1, 8], 8)):
        ui = {
            "nodes": [{"id": 7, "type": "ImageScaleToTotalPixels", "inputs": [], "widgets_values": widgets}],
            "links": [],
            "version": 0.4,
        }
        inputs = convert(read_prompt(ui), "test.json").workflow["nodes"]["7"]["inputs"]
        assert inputs["upscale_method"] == widgets[0] and inputs["megapixels"] == 1
        assert inputs.get("resolution_steps") == steps


# --- MaskComposite -----------------------------------------------------------------------------------


def composite_oracle(dest: np.ndarray, src: np.ndarray, x: int, y: int, operation: str) -> np.ndarray:
    """Pixel by pixel: inside the pasted source, the operation; elsewhere the destination."""
    out = dest.copy()
    for b in range(out.shape[0]):
        for row in range(y, min(y + src.shape[1], dest.shape[1])):
            for col in range(x, min(x + src.shape[2], dest.shape[2])):
                d, s = float(dest[b, row, col]), float(src[b, row - y, col - x])
                hard_d, hard_s = round(d) == 1, round(s) == 1
                out[b, row, col] = {
                    "multiply": d * s,
                    "add": d + s,
                    "subtract": d - s,
                    "and": float(hard_d and hard_s),
                    "or": float(hard_d or hard_s),
                    "xor": float(hard_d != hard_s),
                }[operation]
    return np.clip(out, 0.0, 1.0)


@pytest.mark.parametrize("operation", ["multiply", "add", "subtract", "and", "or", "xor"])
@pytest.mark.parametrize(("x", "y"), [(0, 0), (3, 2), (7, 9)])
def test_mask_composite_matches_the_formula(operation, x, y):
    rng = np.random.default_rng(3)
    dest = rng.random((2, 10, 9), dtype=np.float32)
    src = rng.random((2, 4, 5), dtype=np.float32)
    out = run_node(MaskComposite, destination=dest, source=src, x=x, y=y, operation=operation)["mask"]
    assert out.shape == dest.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, composite_oracle(dest, src, x, y, operation), atol=1e-6)


def test_mask_composite_outside_keeps_the_destination_and_repeats_a_batch_of_one():
    dest = np.full((1, 4, 4), 0.25, dtype=np.float32)
    src = np.ones((3, 2, 2), dtype=np.float32)
    out = run_node(MaskComposite, destination=dest, source=src, x=10, y=0, operation="add")["mask"]
    assert out.shape == (3, 4, 4) and np.all(out == 0.25)
    with pytest.raises(NodeInputError):
        run_node(MaskComposite, destination=np.zeros((2, 4, 4)), source=src, x=0, y=0, operation="add")


# --- GetImageSize, Canny ----------------------------------------------------------------------------


def test_get_image_size():
    out = run_node(GetImageSize, image=np.zeros((3, 17, 29, 3), dtype=np.float32))
    assert out == {"width": 29, "height": 17, "batch_size": 3}


def test_canny_import_scales_thresholds_and_warns():
    prompt = {"1": comfy("Canny", low_threshold=0.4, high_threshold=0.8)}
    result = convert(read_prompt(prompt), "test.json")
    converted = result.workflow["nodes"]["1"]
    assert converted["type"] == "CannyEdges"
    assert converted["inputs"] == {"low_threshold": 102, "high_threshold": 204}
    assert ["kornia" in w for w in result.warnings] == [True]
    # the converted thresholds give OpenCV's Canny of the luma
    rng = np.random.default_rng(5)
    image = cv2.GaussianBlur(rng.random((40, 40, 3), dtype=np.float32), (0, 0), 2)[None]
    out = run_node(CannyEdges, image=image, **converted["inputs"])["image"]
    luma = (np.clip(image[0] @ np.float32([0.299, 0.587, 0.114]), 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(out[0, ..., 0] * 255, cv2.Canny(luma, 102, 204).astype(np.float32))


def test_imported_nodes_validate():
    prompt = {
        "1": comfy("LoadImage", image="a.png"),
        "2": comfy("ImageScaleToTotalPixels", image=["1", 0], upscale_method="area", megapixels=0.5),
        "3": comfy("Canny", image=["2", 0], low_threshold=0.1, high_threshold=0.3),
        "4": comfy("SolidMask", value=1.0, width=64, height=64),
        "5": comfy("MaskComposite", destination=["4", 0], source=["1", 1], x=8, y=0, operation="xor"),
        "6": comfy("PreviewImage", images=["3", 0]),
        "7": comfy("MaskToImage", mask=["5", 0]),
        "8": comfy("PreviewImage", images=["7", 0]),
    }
    result = convert(read_prompt(prompt), "test.json")
    assert result.complete
    issues = validate(result.workflow, default_registry()).issues
    assert [i.code for i in issues if i.code != "missing_file"] == [], [str(i) for i in issues]
