"""Tests of the image nodes (nodes/image.py), each against an oracle computed here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from graph.executor import Executor
from graph.validate import validate
from nodes.base import NodeInputError
from nodes.image import (
    EmptyImage,
    ImageBlend,
    ImageComposite,
    ImageCrop,
    ImageGrayscale,
    ImageInvert,
    ImagePad,
    ImageResize,
)
from nodes.registry import default_registry
from tests.helpers import run_node

H, W = 8, 12  # every test image is 12 wide and 8 high


def rand_image(batch: int = 1, height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, height, width, 3), dtype=np.float32)


def pillow_resize(image: np.ndarray, size: tuple[int, int], method: int) -> np.ndarray:
    """Resize one batch of IMAGE channel by channel with Pillow in float mode."""
    out = []
    for b in range(image.shape[0]):
        channels = [
            np.asarray(Image.fromarray(image[b, :, :, c].copy(), mode="F").resize(size, method))
            for c in range(3)
        ]
        out.append(np.stack(channels, axis=-1))
    return np.clip(np.stack(out), 0.0, 1.0)


def assert_image(result: np.ndarray, shape: tuple[int, ...]) -> None:
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float32
    assert result.shape == shape
    assert result.min() >= 0.0 and result.max() <= 1.0


def input_error(excinfo: pytest.ExceptionInfo[NodeInputError]) -> tuple[str, str]:
    return excinfo.value.input_name, excinfo.value.message


# -- ImageResize ---------------------------------------------------------------------------------

METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("size", [(5, 7), (24, 16), (12, 3)])
def test_resize_stretch_matches_pillow(method: str, size: tuple[int, int]) -> None:
    image = rand_image(batch=2)
    out = run_node(ImageResize, image=image, width=size[0], height=size[1], method=method, mode="stretch")
    assert_image(out["image"], (2, size[1], size[0], 3))
    np.testing.assert_allclose(out["image"], pillow_resize(image, size, METHODS[method]), atol=1e-6)


def test_resize_nearest_by_halves_and_doubles_picks_pixels() -> None:
    image = rand_image()
    half = run_node(ImageResize, image=image, width=W // 2, height=H // 2, method="nearest")["image"]
    # Pillow samples at pixel centres: output pixel i reads source pixel floor((i + 0.5) * 2) = 2i + 1.
    np.testing.assert_array_equal(half, image[:, 1::2, 1::2, :])
    double = run_node(ImageResize, image=image, width=W * 2, height=H * 2, method="nearest")["image"]
    np.testing.assert_array_equal(double, np.repeat(np.repeat(image, 2, axis=1), 2, axis=2))


@pytest.mark.parametrize("method", list(METHODS))
def test_resize_keeps_float_precision(method: str) -> None:
    value = 0.5 + 1e-4  # 8-bit would round this to 128/255 = 0.50196
    image = np.full((1, H, W, 3), value, dtype=np.float32)
    out = run_node(ImageResize, image=image, width=20, height=9, method=method)["image"]
    np.testing.assert_allclose(out, value, atol=1e-6)


def test_resize_clips_overshoot() -> None:
    image = np.zeros((1, H, W, 3), dtype=np.float32)
    image[:, :, W // 2 :, :] = 1.0  # a hard edge makes lanczos ring past 0 and 1
    raw = pillow_resize(image, (40, 8), Image.Resampling.LANCZOS)
    out = run_node(ImageResize, image=image, width=40, height=8, method="lanczos")["image"]
    assert_image(out, (1, 8, 40, 3))
    np.testing.assert_allclose(out, raw, atol=1e-6)


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ((6, 6), (6, 4)),  # wider than the box: width limits
        ((100, 4), (6, 4)),  # height limits
        ((24, 100), (24, 16)),  # scales up
        ((3, 3), (3, 2)),
        ((12, 8), (12, 8)),  # same aspect
    ],
)
def test_resize_fit_keeps_aspect(box: tuple[int, int], expected: tuple[int, int]) -> None:
    image = rand_image()
    out = run_node(ImageResize, image=image, width=box[0], height=box[1], method="bilinear", mode="fit")
    assert_image(out["image"], (1, expected[1], expected[0], 3))
    oracle = pillow_resize(image, expected, Image.Resampling.BILINEAR)
    np.testing.assert_allclose(out["image"], oracle, atol=1e-6)


def test_resize_fit_tall_image() -> None:
    image = rand_image(height=12, width=4)
    out = run_node(ImageResize, image=image, width=64, height=6, method="bicubic", mode="fit")["image"]
    assert out.shape == (1, 6, 2, 3)


@pytest.mark.parametrize("size", [(6, 6), (4, 8), (30, 5), (12, 8)])
@pytest.mark.parametrize("method", ["nearest", "lanczos"])
def test_resize_fill_matches_pillow_imageops_fit(size: tuple[int, int], method: str) -> None:
    image = rand_image(batch=2, seed=3)
    out = run_node(ImageResize, image=image, width=size[0], height=size[1], method=method, mode="fill")
    oracle = np.stack(
        [
            np.stack(
                [
                    np.asarray(
                        ImageOps.fit(
                            Image.fromarray(image[b, :, :, c].copy(), mode="F"), size, METHODS[method]
                        )
                    )
                    for c in range(3)
                ],
                axis=-1,
            )
            for b in range(2)
        ]
    )
    assert_image(out["image"], (2, size[1], size[0], 3))
    np.testing.assert_allclose(out["image"], np.clip(oracle, 0, 1), atol=1e-6)


def test_resize_fill_is_cover_then_centre_crop() -> None:
    image = rand_image()
    # 12x8 to cover 4x4 scales by a half to 6x4 and crops one column off each side.
    out = run_node(ImageResize, image=image, width=4, height=4, method="nearest", mode="fill")["image"]
    np.testing.assert_array_equal(out, image[:, 1::2, 1::2, :][:, :, 1:5, :])


# -- ImageCrop ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("x", "y", "w", "h"), [(0, 0, W, H), (3, 2, 5, 4), (11, 7, 1, 1), (0, 5, 12, 3)])
def test_crop_matches_slicing(x: int, y: int, w: int, h: int) -> None:
    image = rand_image(batch=2)
    out = run_node(ImageCrop, image=image, x=x, y=y, width=w, height=h)["image"]
    assert_image(out, (2, h, w, 3))
    np.testing.assert_array_equal(out, image[:, y : y + h, x : x + w, :])


@pytest.mark.parametrize(
    ("x", "y", "w", "h", "name"),
    [(12, 0, 1, 1, "x"), (0, 8, 1, 1, "y"), (4, 0, 9, 1, "width"), (0, 3, 1, 6, "height")],
)
def test_crop_outside_names_the_input(x: int, y: int, w: int, h: int, name: str) -> None:
    with pytest.raises(NodeInputError) as excinfo:
        run_node(ImageCrop, image=rand_image(), x=x, y=y, width=w, height=h)
    input_name, message = input_error(excinfo)
    assert input_name == name
    assert "12x8" in message


# -- ImagePad ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fill", ["edge", "reflect"])
@pytest.mark.parametrize("pads", [(1, 2, 3, 4), (0, 0, 0, 0), (5, 0, 0, 7), (20, 9, 15, 11)])
def test_pad_matches_numpy(fill: str, pads: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = pads
    image = rand_image(batch=2)
    out = run_node(ImagePad, image=image, left=left, top=top, right=right, bottom=bottom, fill=fill)
    expected = np.pad(image, ((0, 0), (top, bottom), (left, right), (0, 0)), mode=fill)
    assert_image(out["image"], expected.shape)
    np.testing.assert_array_equal(out["image"], expected)


@pytest.mark.parametrize(("fill", "value"), [("black", 0.0), ("white", 1.0)])
def test_pad_constant_fill_and_mask(fill: str, value: float) -> None:
    image = rand_image()
    out = run_node(ImagePad, image=image, left=2, top=1, right=3, bottom=4, fill=fill)
    padded, mask = out["image"], out["mask"]
    assert_image(padded, (1, H + 5, W + 5, 3))
    assert mask.dtype == np.float32 and mask.shape == (1, H + 5, W + 5)
    np.testing.assert_array_equal(padded[:, 1 : 1 + H, 2 : 2 + W, :], image)
    np.testing.assert_array_equal(mask[:, 1 : 1 + H, 2 : 2 + W], 0.0)
    border = mask == 1.0
    assert border.sum() == (H + 5) * (W + 5) - H * W
    assert np.all(padded[border] == value)
    assert set(np.unique(mask)) == {0.0, 1.0}
    # Specific border pixels.
    assert mask[0, 0, 0] == 1.0 and mask[0, 1, 2] == 0.0 and mask[0, 1, 1] == 1.0 and mask[0, H, W + 2] == 1.0


def test_pad_reflect_on_a_one_pixel_image_repeats_the_edge() -> None:
    image = rand_image(height=1, width=1)
    out = run_node(ImagePad, image=image, left=2, top=2, right=2, bottom=2, fill="reflect")["image"]
    np.testing.assert_array_equal(out, np.broadcast_to(image, (1, 5, 5, 3)))


# -- ImageBlend ---------------------------------------------------------------------------------


def solid(value: float, batch: int = 1) -> np.ndarray:
    return np.full((batch, 2, 3, 3), value, dtype=np.float32)


@pytest.mark.parametrize(
    ("mode", "a", "b", "blend"),
    [
        ("normal", 0.2, 0.6, 0.6),
        ("multiply", 0.2, 0.6, 0.12),
        ("screen", 0.2, 0.6, 0.68),
        ("add", 0.2, 0.6, 0.8),
        ("add", 0.7, 0.6, 1.0),
        ("subtract", 0.7, 0.2, 0.5),
        ("subtract", 0.2, 0.6, 0.0),
        ("difference", 0.2, 0.6, 0.4),
        ("difference", 0.9, 0.25, 0.65),
        ("overlay", 0.2, 0.6, 0.24),
        ("overlay", 0.7, 0.6, 0.76),
        ("lighten", 0.2, 0.6, 0.6),
        ("darken", 0.2, 0.6, 0.2),
    ],
)
@pytest.mark.parametrize("factor", [0.0, 0.25, 1.0])
def test_blend_modes(mode: str, a: float, b: float, blend: float, factor: float) -> None:
    out = run_node(ImageBlend, image_a=solid(a), image_b=solid(b), factor=factor, mode=mode)["image"]
    assert_image(out, (1, 2, 3, 3))
    np.testing.assert_allclose(out, a * (1 - factor) + blend * factor, atol=1e-6)


def test_blend_per_pixel_against_formula() -> None:
    a, b = rand_image(seed=1), rand_image(seed=2)
    out = run_node(ImageBlend, image_a=a, image_b=b, factor=0.3, mode="screen")["image"]
    for y, x, c in [(0, 0, 0), (3, 7, 1), (7, 11, 2)]:
        va, vb = float(a[0, y, x, c]), float(b[0, y, x, c])
        assert out[0, y, x, c] == pytest.approx(va * 0.7 + (1 - (1 - va) * (1 - vb)) * 0.3, abs=1e-6)


def test_blend_broadcasts_a_batch_of_one() -> None:
    a = rand_image(batch=3, seed=1)
    b = rand_image(batch=1, seed=2)
    out = run_node(ImageBlend, image_a=a, image_b=b, factor=1.0, mode="multiply")["image"]
    assert out.shape == (3, H, W, 3)
    np.testing.assert_allclose(out, a * b, atol=1e-6)
    out = run_node(ImageBlend, image_a=b, image_b=a, factor=0.5, mode="normal")["image"]
    np.testing.assert_allclose(out, (a + b) / 2, atol=1e-6)


def test_blend_size_mismatch_names_image_b() -> None:
    with pytest.raises(NodeInputError) as excinfo:
        run_node(ImageBlend, image_a=rand_image(), image_b=rand_image(height=5, width=6))
    input_name, message = input_error(excinfo)
    assert input_name == "image_b"
    assert "6x5" in message and "12x8" in message and "ImageResize" in message


def test_blend_batch_mismatch_names_image_b() -> None:
    with pytest.raises(NodeInputError) as excinfo:
        run_node(ImageBlend, image_a=rand_image(batch=2), image_b=rand_image(batch=3))
    assert excinfo.value.input_name == "image_b"


# -- ImageInvert, ImageGrayscale ------------------------------------------------------------------


def test_invert() -> None:
    image = rand_image(batch=2)
    out = run_node(ImageInvert, image=image)["image"]
    assert_image(out, image.shape)
    np.testing.assert_allclose(out, 1.0 - image, atol=1e-7)
    np.testing.assert_allclose(run_node(ImageInvert, image=out)["image"], image, atol=1e-6)


def test_grayscale_per_pixel() -> None:
    image = rand_image(batch=2, seed=5)
    out = run_node(ImageGrayscale, image=image)["image"]
    assert_image(out, image.shape)
    for b in range(2):
        for y in range(H):
            for x in range(W):
                r, g, bl = (float(v) for v in image[b, y, x])
                expected = 0.299 * r + 0.587 * g + 0.114 * bl
                assert out[b, y, x].tolist() == pytest.approx([expected] * 3, abs=1e-6)


@pytest.mark.parametrize(("rgb", "gray"), [((1, 0, 0), 0.299), ((0, 1, 0), 0.587), ((0, 0, 1), 0.114)])
def test_grayscale_primaries(rgb: tuple[int, int, int], gray: float) -> None:
    image = np.broadcast_to(np.asarray(rgb, dtype=np.float32), (1, 2, 2, 3)).copy()
    out = run_node(ImageGrayscale, image=image)["image"]
    np.testing.assert_allclose(out, gray, atol=1e-6)
    white = run_node(ImageGrayscale, image=np.ones((1, 2, 2, 3), dtype=np.float32))["image"]
    np.testing.assert_allclose(white, 1.0, atol=1e-6)


# -- ImageComposite ---------------------------------------------------------------------------------


def numbered_source(height: int = 3, width: int = 4) -> np.ndarray:
    values = (np.arange(height * width, dtype=np.float32) + 1) / (height * width + 1)
    return np.repeat(values.reshape(1, height, width, 1), 3, axis=-1)


def test_composite_inside() -> None:
    dest = np.zeros((1, H, W, 3), dtype=np.float32)
    src = numbered_source()
    out = run_node(ImageComposite, destination=dest, source=src, x=2, y=1)["image"]
    assert_image(out, dest.shape)
    assert out[0, 1, 2, 0] == src[0, 0, 0, 0]
    assert out[0, 3, 5, 1] == src[0, 2, 3, 1]
    assert out[0, 2, 4, 2] == src[0, 1, 2, 2]
    for y, x in [(0, 2), (1, 1), (4, 5), (1, 6)]:  # just outside each edge
        assert out[0, y, x, 0] == 0.0
    assert np.count_nonzero(out[..., 0]) == 12
    assert np.all(dest == 0.0)  # the input is not changed


def test_composite_clips_at_every_border() -> None:
    dest = np.zeros((1, H, W, 3), dtype=np.float32)
    src = numbered_source()
    # Top-left: the source starts 2 left and 1 above the image.
    out = run_node(ImageComposite, destination=dest, source=src, x=-2, y=-1)["image"]
    assert out[0, 0, 0, 0] == src[0, 1, 2, 0]
    assert out[0, 1, 1, 0] == src[0, 2, 3, 0]
    assert np.count_nonzero(out[..., 0]) == 2 * 2
    # Bottom-right: only the top-left 2x1 of the source lands.
    out = run_node(ImageComposite, destination=dest, source=src, x=W - 2, y=H - 1)["image"]
    assert out[0, H - 1, W - 2, 0] == src[0, 0, 0, 0]
    assert out[0, H - 1, W - 1, 0] == src[0, 0, 1, 0]
    assert np.count_nonzero(out[..., 0]) == 2


@pytest.mark.parametrize(("x", "y"), [(W, 0), (0, H), (-4, 0), (0, -3), (-16384, 16384)])
def test_composite_wholly_outside_leaves_destination(x: int, y: int) -> None:
    dest = rand_image()
    out = run_node(ImageComposite, destination=dest, source=numbered_source(), x=x, y=y)["image"]
    np.testing.assert_array_equal(out, dest)


def test_composite_with_mask() -> None:
    dest = np.full((1, H, W, 3), 0.2, dtype=np.float32)
    src = np.full((1, 3, 4, 3), 0.6, dtype=np.float32)
    mask = np.zeros((1, 3, 4), dtype=np.float32)
    mask[0, 0, 0] = 1.0
    mask[0, 1, 1] = 0.25
    out = run_node(ImageComposite, destination=dest, source=src, x=1, y=2, mask=mask)["image"]
    assert out[0, 2, 1, 0] == pytest.approx(0.6)
    assert out[0, 3, 2, 0] == pytest.approx(0.2 * 0.75 + 0.6 * 0.25)
    assert out[0, 2, 2, 0] == pytest.approx(0.2)  # mask 0 keeps the destination
    assert out[0, 0, 0, 0] == pytest.approx(0.2)
    # The mask moves with the source when it is clipped.
    out = run_node(ImageComposite, destination=dest, source=src, x=-1, y=-1, mask=mask)["image"]
    assert out[0, 0, 0, 0] == pytest.approx(0.2 * 0.75 + 0.6 * 0.25)


def test_composite_broadcasts_batches() -> None:
    dest = rand_image(batch=1)
    src = np.stack([np.full((2, 2, 3), v, dtype=np.float32) for v in (0.1, 0.9)])
    out = run_node(ImageComposite, destination=dest, source=src, x=0, y=0)["image"]
    assert out.shape == (2, H, W, 3)
    assert out[0, 0, 0, 0] == pytest.approx(0.1) and out[1, 1, 1, 2] == pytest.approx(0.9)
    np.testing.assert_array_equal(out[:, 2:, :, :], np.repeat(dest, 2, axis=0)[:, 2:, :, :])


def test_composite_errors_name_the_input() -> None:
    with pytest.raises(NodeInputError) as excinfo:
        run_node(
            ImageComposite,
            destination=rand_image(),
            source=numbered_source(),
            mask=np.ones((1, 4, 4), dtype=np.float32),
        )
    input_name, message = input_error(excinfo)
    assert input_name == "mask"
    assert "4x4" in message and "4x3" in message
    with pytest.raises(NodeInputError) as excinfo:
        run_node(ImageComposite, destination=rand_image(batch=2), source=rand_image(batch=3))
    assert excinfo.value.input_name == "source"


# -- EmptyImage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("color", "rgb"),
    [
        ("#000000", (0, 0, 0)),
        ("#ffffff", (255, 255, 255)),
        ("#FF8000", (255, 128, 0)),
        ("#12ab9c", (0x12, 0xAB, 0x9C)),
        ("#abc", (0xAA, 0xBB, 0xCC)),
        ("336699", (0x33, 0x66, 0x99)),
    ],
)
def test_empty_image_colour(color: str, rgb: tuple[int, int, int]) -> None:
    out = run_node(EmptyImage, width=5, height=3, batch_size=2, color=color)["image"]
    assert_image(out, (2, 3, 5, 3))
    for channel, value in enumerate(rgb):
        np.testing.assert_allclose(out[..., channel], value / 255, atol=1e-7)


@pytest.mark.parametrize("color", ["", "red", "#12345", "#1234567", "#gg0000", "# 000000"])
def test_empty_image_bad_colour(color: str) -> None:
    with pytest.raises(NodeInputError) as excinfo:
        run_node(EmptyImage, width=4, height=4, color=color)
    input_name, message = input_error(excinfo)
    assert input_name == "color"
    assert "#rrggbb" in message


def test_empty_image_defaults() -> None:
    out = run_node(EmptyImage)["image"]
    assert_image(out, (1, 512, 512, 3))
    assert not out.any()


# -- registry and a real run -----------------------------------------------------------------------


def test_nodes_are_registered() -> None:
    registry = default_registry()
    assert not registry.problems
    for name in [
        "ImageResize",
        "ImageCrop",
        "ImagePad",
        "ImageBlend",
        "ImageInvert",
        "ImageGrayscale",
        "ImageComposite",
        "EmptyImage",
    ]:
        cls = registry.get(name)
        assert cls is not None, name
        assert cls.category.startswith("image") and cls.description
        assert cls.describe()["type"] == name


def test_workflow_runs_through_validator_and_executor() -> None:
    registry = default_registry()
    workflow = {
        "version": 1,
        "nodes": {
            "empty": {"type": "EmptyImage", "inputs": {"width": 8, "height": 6, "color": "#336699"}},
            "pad": {
                "type": "ImagePad",
                "inputs": {
                    "image": {"node": "empty", "output": "image"},
                    "left": 2,
                    "bottom": 3,
                    "fill": "white",
                },
            },
            "gray": {"type": "ImageGrayscale", "inputs": {"image": {"node": "pad", "output": "image"}}},
            "blend": {
                "type": "ImageBlend",
                "inputs": {
                    "image_a": {"node": "pad", "output": "image"},
                    "image_b": {"node": "gray", "output": "image"},
                    "factor": 1.0,
                    "mode": "difference",
                },
            },
            "crop": {
                "type": "ImageCrop",
                "inputs": {
                    "image": {"node": "blend", "output": "image"},
                    "x": 1,
                    "y": 0,
                    "width": 4,
                    "height": 7,
                },
            },
            "show": {"type": "ShowValue", "inputs": {"value": {"node": "crop", "output": "image"}}},
        },
    }
    validated = validate(workflow, registry)
    assert validated.ok, validated.issues
    assert validated.workflow is not None
    result = Executor(registry).run(validated.workflow, targets=["crop", "pad", "show"], seed=0)
    assert result.status == "done", result.error
    assert result.outputs["show"]["text"] == "ndarray of shape (1, 7, 4, 3)"
    mask = result.outputs["pad"]["mask"]
    assert mask.shape == (1, 9, 10)
    assert mask[:, :6, 2:].sum() == 0 and mask.sum() == 9 * 10 - 6 * 8
    r, g, b = 0x33 / 255, 0x66 / 255, 0x99 / 255
    gray = 0.299 * r + 0.587 * g + 0.114 * b
    crop = result.outputs["crop"]["image"]
    assert crop.shape == (1, 7, 4, 3)
    # Column 0 of the crop is padding (white, so gray 1 and difference 0); the rest is colour.
    np.testing.assert_allclose(crop[0, :, 0, :], 0.0, atol=1e-6)
    np.testing.assert_allclose(
        crop[0, :6, 1, :], np.abs(np.array([r, g, b]) - gray)[None, :].repeat(6, axis=0), atol=1e-6
    )
    np.testing.assert_allclose(crop[0, 6, :, :], 0.0, atol=1e-6)  # the white bottom border


def test_failing_node_in_a_run_names_its_input() -> None:
    registry = default_registry()
    workflow = {
        "version": 1,
        "nodes": {
            "empty": {"type": "EmptyImage", "inputs": {"width": 8, "height": 6}},
            "crop": {
                "type": "ImageCrop",
                "inputs": {"image": {"node": "empty", "output": "image"}, "x": 4, "width": 5, "height": 2},
            },
        },
    }
    validated = validate(workflow, registry, require_outputs=False)
    assert validated.ok and validated.workflow is not None
    result = Executor(registry).run(validated.workflow, targets=["crop"], seed=0)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.node_id == "crop" and result.error.input == "width"
    assert "8x6" in result.error.message


def test_validator_rejects_out_of_range_constants() -> None:
    registry = default_registry()
    workflow = {
        "version": 1,
        "nodes": {
            "empty": {"type": "EmptyImage", "inputs": {"width": 0, "batch_size": 65, "color": 3}},
            "resize": {
                "type": "ImageResize",
                "inputs": {"image": {"node": "empty", "output": "image"}, "method": "cubic"},
            },
        },
    }
    validated = validate(workflow, registry, require_outputs=False)
    flagged = {(issue.node_id, issue.input) for issue in validated.issues}
    assert flagged == {("empty", "width"), ("empty", "batch_size"), ("empty", "color"), ("resize", "method")}


def test_outputs_too_large_for_memory_are_refused_by_name():
    from nodes.limits import MAX_PIXELS

    side = 16384
    batch = MAX_PIXELS // (side * side) + 1
    with pytest.raises(NodeInputError) as empty:
        run_node(EmptyImage, width=side, height=side, batch_size=batch)
    assert empty.value.input_name == "batch_size" and "GiB" in empty.value.message
    small = np.zeros((batch, 4, 4, 3), dtype=np.float32)
    with pytest.raises(NodeInputError) as resized:
        run_node(ImageResize, image=small, width=side, height=side)
    assert resized.value.input_name == "width"
    with pytest.raises(NodeInputError) as padded:
        run_node(ImagePad, image=small, left=8192, right=8192, top=8192, bottom=8192)
    assert padded.value.input_name == "right"


class _FakeVae:
    """A VAE handle for VAEDecode: shrinks by 8, decodes to a gray picture."""

    def get(self) -> _FakeVae:
        return self

    config = type("Config", (), {"block_out_channels": (1, 1, 1, 1), "scaling_factor": 1.0})
    device, dtype = "cpu", None

    def decode(self, latents, return_dict: bool = False):
        import torch

        batch, _, height, width = latents.shape
        return (torch.zeros(batch, 3, height * 8, width * 8),)


def _pixel_makers() -> list[tuple[type, dict, str]]:
    """Every node that makes pixels, asked for 32x32 (1,024 pixels), and the input it names."""
    import torch

    from models.values import Latent
    from nodes.diffusion import EmptyLatent, VAEDecode
    from nodes.mask import SolidMask

    one = rand_image(1, 4, 4)
    return [
        (EmptyImage, {"width": 32, "height": 32, "batch_size": 1}, "batch_size"),
        (SolidMask, {"width": 32, "height": 32, "batch_size": 1}, "batch_size"),
        (EmptyLatent, {"width": 32, "height": 32, "batch_size": 1, "vae": None}, "batch_size"),
        (VAEDecode, {"vae": _FakeVae(), "latent": Latent(torch.zeros(1, 4, 4, 4))}, "latent"),
        (ImageResize, {"image": one, "width": 32, "height": 32}, "width"),
        (ImagePad, {"image": one, "left": 14, "right": 14, "top": 14, "bottom": 14}, "right"),
        # the destination (16x16 = 256 pixels) repeated to the source's batch of 4
        (ImageComposite, {"destination": rand_image(1, 16, 16), "source": rand_image(4, 1, 1)}, "source"),
    ]


@pytest.mark.parametrize(("cls", "inputs", "name"), _pixel_makers(), ids=lambda v: getattr(v, "type", None))
def test_every_node_that_makes_pixels_keeps_to_the_one_budget(cls, inputs, name, monkeypatch):
    import nodes.limits

    monkeypatch.setattr(nodes.limits, "MAX_PIXELS", 1000)
    with pytest.raises(NodeInputError) as err:
        run_node(cls, **inputs)
    assert err.value.input_name == name and "at most 1,000 pixels" in err.value.message
    monkeypatch.setattr(nodes.limits, "MAX_PIXELS", 1024)
    run_node(cls, **inputs)  # exactly the budget is fine
