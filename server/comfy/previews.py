"""Latent previews as ComfyUI sends them: PNG pictures in binary websocket frames.

ComfyUI reads ``extra_data.preview_method`` per prompt; a prompt that asks gets
the samplers' intermediate pictures, each as one binary message: 4 bytes
big-endian event type (1: a preview image), 4 bytes image format (2: PNG), then
the PNG.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from typing import Any

#: ComfyUI's binary websocket frame: event 1 (a preview image), format 2 (PNG).
_PREVIEW_IMAGE, _PNG = 1, 2


def wants_previews(extra_data: Mapping[str, Any]) -> bool:
    """ComfyUI's per-prompt ``preview_method``: anything but absent, ``none`` or ``default`` asks."""
    method = extra_data.get("preview_method")
    return isinstance(method, str) and method.strip().lower() not in ("", "none", "default")


def png(image: Any) -> bytes:
    """The first picture of an IMAGE batch (floats in [0, 1]) as PNG bytes."""
    import numpy as np
    from PIL import Image

    array = np.asarray(image, dtype=np.float32)
    array = array[0] if array.ndim == 4 else array
    pixels = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., :3] if pixels.ndim == 3 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def preview_frame(png_bytes: bytes) -> bytes:
    """ComfyUI's binary preview message: event type 1 and image format 2 (PNG), big-endian, then the PNG."""
    return struct.pack(">II", _PREVIEW_IMAGE, _PNG) + png_bytes
