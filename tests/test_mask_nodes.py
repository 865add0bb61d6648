"""Tests of the mask nodes (nodes/mask.py), each against an oracle computed here."""

from __future__ import annotations

import numpy as np
import pytest

from graph.executor import Executor
from graph.validate import validate
from nodes.base import NodeInputError
from nodes.mask import ImageToMask, MaskCombine, MaskInvert, MaskThreshold, MaskToImage, SolidMask
from nodes.registry import default_registry
from tests.helpers import run_node

H, W = 8, 12


def rand_image(batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, H, W, 3), dtype=np.float32)


def rand_mask(batch: int = 1, height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, height, width), dtype=np.float32)


def assert_mask(mask: np.ndarray, shape: tuple[int, ...]) -> None:
    assert isinstance(mask, np.ndarray)
    assert mask.dtype == np.float32
    assert mask.shape == shape
    assert mask.min() >= 0.0 and mask.max() <= 1.0


# -- ImageToMask, MaskToImage ---------------------------------------------------------------------


@pytest.mark.parametrize(("channel", "index"), [("red", 0), ("green", 1), ("blue", 2)])
def test_image_to_mask_channel(channel: str, index: int) -> None:
    image = rand_image(batch=2)
    mask = run_node(ImageToMask, image=image, channel=channel)["mask"]
    assert_mask(mask, (2, H, W))
    np.testing.assert_array_equal(mask, image[:, :, :, index])


def test_image_to_mask_luminance_per_pixel() -> None:
    image = rand_image(seed=4)
    mask = run_node(ImageToMask, image=image, channel="luminance")["mask"]
    assert_mask(mask, (1, H, W))
    for y, x in [(0, 0), (2, 5), (7, 11), (4, 0)]:
        r, g, b = (float(v) for v in image[0, y, x])
        assert mask[0, y, x] == pytest.approx(0.299 * r + 0.587 * g + 0.114 * b, abs=1e-6)


def test_mask_to_image_and_back() -> None:
    mask = rand_mask(batch=2)
    image = run_node(MaskToImage, mask=mask)["image"]
    assert image.dtype == np.float32 and image.shape == (2, H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], mask)
    back = run_node(ImageToMask, image=image, channel="luminance")["mask"]
    np.testing.assert_allclose(back, mask, atol=1e-6)


# -- MaskThreshold, MaskInvert ---------------------------------------------------------------------


def test_threshold_is_at_least() -> None:
    mask = np.array([[[0.0, 0.49, 0.5, 0.51, 1.0]]], dtype=np.float32)
    out = run_node(MaskThreshold, mask=mask, threshold=0.5)["mask"]
    assert out.dtype == np.float32
    assert out.tolist() == [[[0.0, 0.0, 1.0, 1.0, 1.0]]]
    assert run_node(MaskThreshold, mask=mask, threshold=0.0)["mask"].min() == 1.0
    assert run_node(MaskThreshold, mask=mask, threshold=1.0)["mask"].tolist() == [[[0, 0, 0, 0, 1]]]


def test_threshold_random() -> None:
    mask = rand_mask(batch=2)
    out = run_node(MaskThreshold, mask=mask, threshold=0.3)["mask"]
    assert_mask(out, mask.shape)
    np.testing.assert_array_equal(out, np.where(mask >= 0.3, 1.0, 0.0))


def test_invert() -> None:
    mask = rand_mask(batch=3)
    out = run_node(MaskInvert, mask=mask)["mask"]
    assert_mask(out, mask.shape)
    np.testing.assert_allclose(out, 1.0 - mask, atol=1e-7)


# -- MaskCombine ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "a", "b", "expected"),
    [
        ("union", 0.3, 0.8, 0.8),
        ("intersection", 0.3, 0.8, 0.3),
        ("subtract", 0.8, 0.3, 0.5),
        ("subtract", 0.3, 0.8, 0.0),
        ("add", 0.3, 0.4, 0.7),
        ("add", 0.7, 0.8, 1.0),
        ("difference", 0.3, 0.8, 0.5),
    ],
)
def test_combine_values(operation: str, a: float, b: float, expected: float) -> None:
    mask_a = np.full((1, 2, 3), a, dtype=np.float32)
    mask_b = np.full((1, 2, 3), b, dtype=np.float32)
    out = run_node(MaskCombine, mask_a=mask_a, mask_b=mask_b, operation=operation)["mask"]
    assert_mask(out, (1, 2, 3))
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_combine_per_pixel_and_broadcast() -> None:
    a = rand_mask(batch=2, seed=1)
    b = rand_mask(batch=1, seed=2)
    out = run_node(MaskCombine, mask_a=a, mask_b=b, operation="union")["mask"]
    assert out.shape == (2, H, W)
    for n in range(2):
        for y, x in [(0, 0), (3, 9), (7, 11)]:
            assert out[n, y, x] == max(a[n, y, x], b[0, y, x])


def test_combine_errors_name_mask_b() -> None:
    with pytest.raises(NodeInputError) as excinfo:
        run_node(MaskCombine, mask_a=rand_mask(), mask_b=rand_mask(height=4, width=5))
    assert excinfo.value.input_name == "mask_b"
    assert "5x4" in excinfo.value.message and "12x8" in excinfo.value.message
    with pytest.raises(NodeInputError) as excinfo:
        run_node(MaskCombine, mask_a=rand_mask(batch=2), mask_b=rand_mask(batch=3))
    assert excinfo.value.input_name == "mask_b"


# -- SolidMask ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.0, 0.25, 1.0])
def test_solid_mask(value: float) -> None:
    out = run_node(SolidMask, width=7, height=3, value=value, batch_size=2)["mask"]
    assert_mask(out, (2, 3, 7))
    assert np.all(out == np.float32(value))


def test_solid_mask_defaults() -> None:
    out = run_node(SolidMask)["mask"]
    assert_mask(out, (1, 512, 512))
    assert out.min() == 1.0


# -- registry and a real run -----------------------------------------------------------------------


def test_nodes_are_registered() -> None:
    registry = default_registry()
    assert not registry.problems
    for name in ["ImageToMask", "MaskToImage", "MaskThreshold", "MaskInvert", "MaskCombine", "SolidMask"]:
        cls = registry.get(name)
        assert cls is not None, name
        assert cls.category.startswith("mask") and cls.description


def test_outpaint_mask_workflow() -> None:
    """Pad an image, grow the padding mask by a solid region, threshold, invert and show it."""
    registry = default_registry()
    workflow = {
        "version": 1,
        "nodes": {
            "empty": {"type": "EmptyImage", "inputs": {"width": 4, "height": 4, "color": "#808080"}},
            "pad": {
                "type": "ImagePad",
                "inputs": {"image": {"node": "empty", "output": "image"}, "right": 2},
            },
            "gray": {"type": "ImageToMask", "inputs": {"image": {"node": "pad", "output": "image"}}},
            "combine": {
                "type": "MaskCombine",
                "inputs": {
                    "mask_a": {"node": "pad", "output": "mask"},
                    "mask_b": {"node": "gray", "output": "mask"},
                    "operation": "add",
                },
            },
            "threshold": {
                "type": "MaskThreshold",
                "inputs": {"mask": {"node": "combine", "output": "mask"}, "threshold": 0.9},
            },
            "invert": {"type": "MaskInvert", "inputs": {"mask": {"node": "threshold", "output": "mask"}}},
            "image": {"type": "MaskToImage", "inputs": {"mask": {"node": "invert", "output": "mask"}}},
        },
    }
    validated = validate(workflow, registry, require_outputs=False)
    assert validated.ok, validated.issues
    assert validated.workflow is not None
    result = Executor(registry).run(validated.workflow, targets=["image", "combine"], seed=0)
    assert result.status == "done", result.error
    combined = result.outputs["combine"]["mask"]
    np.testing.assert_allclose(combined[0, :, :4], 128 / 255, atol=1e-6)
    np.testing.assert_allclose(combined[0, :, 4:], 1.0)
    image = result.outputs["image"]["image"]
    assert image.shape == (1, 4, 6, 3)
    np.testing.assert_array_equal(image[0, :, :4], 1.0)  # original area: keep
    np.testing.assert_array_equal(image[0, :, 4:], 0.0)  # padding: change


def test_solid_mask_refuses_more_than_the_pixel_budget_before_allocating():
    """16384 x 16384 x 2 once ran and took 2 GiB; now it is refused at once, naming batch_size."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(NodeInputError) as err:
            run_node(SolidMask, width=16384, height=16384, batch_size=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.input_name == "batch_size" and "at most 268,435,456 pixels" in err.value.message
    assert peak < 2**20
    assert run_node(SolidMask, width=16384, height=16, batch_size=2)["mask"].shape == (2, 16, 16384)
