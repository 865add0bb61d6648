"""Editing helpers around generation: colorization keeps the original's luminance."""

from __future__ import annotations

from typing import Any

import numpy as np

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output
from nodes.image import as_image, check_same_size, luminance

#: BT.601 chroma (YCbCr) matrices, full range.
_TO_CBCR = np.asarray([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32)


def recombine(luma: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """RGB from BT.601 Y, Cb, Cr (each (b, h, w)).

    Where the colour would leave [0, 1], its chroma is scaled down (not clipped), so the
    luminance of the result is exactly ``luma``.
    """
    offsets = np.stack([1.402 * cr, -0.344136 * cb - 0.714136 * cr, 1.772 * cb], axis=-1)
    y = np.clip(luma, 0.0, 1.0)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(offsets > 0, (1.0 - y) / offsets, np.where(offsets < 0, -y / offsets, np.inf))
    scale = np.clip(room.min(axis=-1, keepdims=True), 0.0, 1.0)
    return np.clip(y + scale * offsets, 0.0, 1.0).astype(np.float32)


class Colorize(Node):
    category = "image/edit"
    description = (
        "Colour a grayscale photo: colours from a generated image, luminance kept from the original."
    )
    inputs = (
        Input("grayscale", T.IMAGE, description="The original (gray) photo; its luminance is kept."),
        Input("colors", T.IMAGE, description="A coloured version of it, e.g. from image-to-image."),
        Input("saturation", T.FLOAT, default=1.0, min=0.0, max=4.0, step=0.05),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(
        self, ctx: Context, grayscale: np.ndarray, colors: np.ndarray, saturation: float
    ) -> dict[str, Any]:
        gray = as_image("grayscale", grayscale)
        colors = as_image("colors", colors)
        check_same_size("colors", gray, colors, "grayscale", "colors")
        if colors.shape[0] != gray.shape[0] and 1 not in (colors.shape[0], gray.shape[0]):
            raise NodeInputError("colors", "needs one image per grayscale image, or a single one")
        chroma = colors @ _TO_CBCR.T * saturation
        luma = np.broadcast_to(luminance(gray), chroma.shape[:-1])
        return {"image": recombine(luma, chroma[..., 0], chroma[..., 1])}


NODES = (Colorize,)
