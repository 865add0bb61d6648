"""Mask nodes: masks from images and back, threshold, invert, combine, and a solid mask.

A MASK is a float32 array (batch, height, width) in [0, 1]; 1 marks the region an
operation should change (see :mod:`nodes.types`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imaging.luma import luminance
from nodes import types as T
from nodes.base import Context, Input, Node, Output
from nodes.image_inputs import as_image, as_mask, batch_size_of, check_same_size, repeat_batch
from nodes.limits import MAX_SIZE, check_pixel_budget

CHANNELS = ("red", "green", "blue", "luminance")


class ImageToMask(Node):
    display_name = "Convert Image to Mask"
    category = "mask/convert"
    description = "Make a mask from one channel of an image, or from its luminance (BT.601)."
    inputs = (
        Input("image", T.IMAGE),
        Input("channel", T.STRING, default="luminance", choices=CHANNELS, accepts="constant"),
    )
    outputs = (Output("mask", T.MASK),)

    def run(self, ctx: Context, image: np.ndarray, channel: str) -> dict[str, Any]:
        image = as_image("image", image)
        if channel == "luminance":
            mask = luminance(image)
        else:
            mask = image[..., CHANNELS.index(channel)]
        return {"mask": np.ascontiguousarray(np.clip(mask, 0.0, 1.0), dtype=np.float32)}


class MaskToImage(Node):
    display_name = "Convert Mask to Image"
    category = "mask/convert"
    description = "Show a mask as a gray image (white where the mask is 1)."
    inputs = (Input("mask", T.MASK),)
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, mask: np.ndarray) -> dict[str, Any]:
        mask = as_mask("mask", mask)
        return {"image": np.ascontiguousarray(np.repeat(mask[..., None], 3, axis=-1), dtype=np.float32)}


class MaskThreshold(Node):
    category = "mask"
    description = "Make a mask hard: 1 where the value is at least the threshold, 0 elsewhere."
    inputs = (
        Input("mask", T.MASK),
        Input(
            "threshold",
            T.FLOAT,
            default=0.5,
            min=0.0,
            max=1.0,
            step=0.01,
            description="Values equal to the threshold become 1.",
        ),
    )
    outputs = (Output("mask", T.MASK),)

    def run(self, ctx: Context, mask: np.ndarray, threshold: float) -> dict[str, Any]:
        mask = as_mask("mask", mask)
        return {"mask": (mask >= threshold).astype(np.float32)}


class MaskInvert(Node):
    display_name = "Invert Mask"
    category = "mask"
    description = "Swap the masked and unmasked regions (1 - mask)."
    inputs = (Input("mask", T.MASK),)
    outputs = (Output("mask", T.MASK),)

    def run(self, ctx: Context, mask: np.ndarray) -> dict[str, Any]:
        mask = as_mask("mask", mask)
        return {"mask": np.clip(1.0 - mask, 0.0, 1.0).astype(np.float32)}


COMBINE_OPERATIONS: dict[str, Any] = {
    "union": np.maximum,
    "intersection": np.minimum,
    "subtract": lambda a, b: a - b,
    "add": lambda a, b: a + b,
    "difference": lambda a, b: np.abs(a - b),
}


class MaskCombine(Node):
    category = "mask"
    description = "Combine two masks of the same size: union, intersection, subtract, add or difference."
    inputs = (
        Input("mask_a", T.MASK),
        Input("mask_b", T.MASK),
        Input(
            "operation",
            T.STRING,
            default="union",
            choices=tuple(COMBINE_OPERATIONS),
            accepts="constant",
            description="union: the larger value; intersection: the smaller; subtract: a - b; "
            "add: a + b; difference: |a - b|. Results are clipped to [0, 1].",
        ),
    )
    outputs = (Output("mask", T.MASK),)

    def run(self, ctx: Context, mask_a: np.ndarray, mask_b: np.ndarray, operation: str) -> dict[str, Any]:
        a = as_mask("mask_a", mask_a)
        b = as_mask("mask_b", mask_b)
        check_same_size("mask_b", a, b, "mask_a", "mask_b", "make both masks from images of the same size")
        batch = batch_size_of("mask_b", a, b)
        result = COMBINE_OPERATIONS[operation](repeat_batch(a, batch), repeat_batch(b, batch))
        return {"mask": np.clip(result, 0.0, 1.0).astype(np.float32)}


def _hard(mask: np.ndarray) -> np.ndarray:
    """A mask as booleans, each value rounded (0.5 and below is off), for the logical operations."""
    return np.round(mask) != 0


#: MaskComposite's operations, ComfyUI's: the destination's region and the source's piece.
COMPOSITE_OPERATIONS: dict[str, Any] = {
    "multiply": lambda d, s: d * s,
    "add": lambda d, s: d + s,
    "subtract": lambda d, s: d - s,
    "and": lambda d, s: (_hard(d) & _hard(s)).astype(np.float32),
    "or": lambda d, s: (_hard(d) | _hard(s)).astype(np.float32),
    "xor": lambda d, s: (_hard(d) ^ _hard(s)).astype(np.float32),
}


class MaskComposite(Node):
    category = "mask/compose"
    description = (
        "Combine source into destination at x, y (cut off at the edges); outside the source the "
        "destination is kept. Results are clipped to [0, 1]."
    )
    inputs = (
        Input("destination", T.MASK),
        Input("source", T.MASK),
        Input("x", T.INT, default=0, min=0, max=MAX_SIZE, step=1, description="Left edge, in pixels."),
        Input("y", T.INT, default=0, min=0, max=MAX_SIZE, step=1, description="Top edge, in pixels."),
        Input(
            "operation",
            T.STRING,
            default="multiply",
            choices=tuple(COMPOSITE_OPERATIONS),
            accepts="constant",
            description="multiply, add, subtract (destination - source); and, or, xor on the rounded "
            "values (0 or 1).",
        ),
    )
    outputs = (Output("mask", T.MASK),)

    def run(
        self, ctx: Context, destination: np.ndarray, source: np.ndarray, x: int, y: int, operation: str
    ) -> dict[str, Any]:
        dest = as_mask("destination", destination)
        src = as_mask("source", source)
        batch = batch_size_of("source", dest, src)
        out = repeat_batch(dest, batch).copy()
        dest_h, dest_w = dest.shape[1:3]
        right, bottom = min(x + src.shape[2], dest_w), min(y + src.shape[1], dest_h)
        if x < right and y < bottom:
            piece = repeat_batch(src, batch)[:, : bottom - y, : right - x]
            region = out[:, y:bottom, x:right]
            out[:, y:bottom, x:right] = COMPOSITE_OPERATIONS[operation](region, piece)
        return {"mask": np.clip(out, 0.0, 1.0).astype(np.float32)}


class SolidMask(Node):
    category = "mask"
    description = "A mask of one value everywhere."
    inputs = (
        Input("width", T.INT, default=512, min=1, max=MAX_SIZE, step=8),
        Input("height", T.INT, default=512, min=1, max=MAX_SIZE, step=8),
        Input("value", T.FLOAT, default=1.0, min=0.0, max=1.0, step=0.01),
        Input("batch_size", T.INT, default=1, min=1, max=64, step=1),
    )
    outputs = (Output("mask", T.MASK),)

    def run(self, ctx: Context, width: int, height: int, value: float, batch_size: int) -> dict[str, Any]:
        check_pixel_budget("batch_size", batch_size, height, width, channels=1)
        return {"mask": np.full((batch_size, height, width), value, dtype=np.float32)}


NODES = (ImageToMask, MaskToImage, MaskThreshold, MaskInvert, MaskCombine, MaskComposite, SolidMask)
