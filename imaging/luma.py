"""Luminance: the BT.601 luma of RGB pictures, as float32 or as 8-bit gray."""

from __future__ import annotations

import numpy as np

#: ITU-R BT.601 luma weights for red, green and blue.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luminance(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB pictures (..., height, width, 3): float32 (..., height, width)."""
    r, g, b = LUMA_WEIGHTS
    return (image[..., 0] * r + image[..., 1] * g + image[..., 2] * b).astype(np.float32)


def gray_uint8(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB pictures in [0, 1] as uint8 0..255 (..., height, width), rounded."""
    weights = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    return (np.clip(image @ weights, 0, 1) * 255 + 0.5).astype(np.uint8)
