"""Edge maps of pictures (OpenCV): what edge ControlNets are trained and run on."""

from __future__ import annotations

import numpy as np

from imaging.luma import gray_uint8


def canny_edges(image: np.ndarray, low_threshold: int = 100, high_threshold: int = 200) -> np.ndarray:
    """Canny edges (uint8 0/255, (..., H, W)) of the luma of RGB images in [0, 1] (..., H, W, 3)."""
    import cv2

    gray = gray_uint8(image)
    flat = gray.reshape(-1, *gray.shape[-2:])
    edges = [cv2.Canny(g, low_threshold, high_threshold) for g in flat]
    return np.stack(edges).reshape(gray.shape)
