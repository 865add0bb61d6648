"""Loading, saving and previewing images.

SaveImage writes PNGs that carry the workflow and the run's seed as text chunks,
so ``python app.py run picture.png`` (or dropping it on the studio) brings the
workflow back. Files are never overwritten: each save takes the next free name,
written to a temporary file first so no half-written PNG ever appears.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from graph.workflow import PNG_SEED_KEY, PNG_WORKFLOW_KEY
from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings, find_input_file
from nodes.image import as_image

_PREFIX = re.compile(r"^[\w\- .]+(/[\w\- .]+)*$")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """IMAGE (batch, h, w, 3) float in [0, 1] to uint8, rounding to nearest."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class LoadImage(Node):
    category = "image/io"
    description = "Load an image file (PNG, JPEG, WebP, ...) from the input folder."
    inputs = (
        Input(
            "path",
            T.STRING,
            default="",
            accepts="constant",
            description="File name inside the input folder (or an absolute path when running headless).",
        ),
    )
    outputs = (
        Output("image", T.IMAGE),
        Output("mask", T.MASK, "1 where the image is transparent (0 for opaque images)."),
    )

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        try:
            stat = find_input_file(settings, "path", inputs.get("path") or "").stat()
        except (NodeInputError, OSError):
            return "missing"
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def run(self, ctx: Context, path: str) -> dict[str, Any]:
        from PIL import Image, ImageOps, UnidentifiedImageError

        file = ctx.find_input_file("path", path)
        try:
            with Image.open(file) as opened:
                picture = ImageOps.exif_transpose(opened)
                picture.load()
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise NodeInputError("path", f"{path!r} is not an image that can be read ({exc})") from None
        if picture.mode in ("I;16", "I;16B", "I;16L", "I"):
            gray = np.asarray(picture, dtype=np.float32) / 65535.0
            rgba = np.concatenate([np.repeat(gray[..., None], 3, axis=-1), np.ones_like(gray)[..., None]], -1)
        else:
            rgba = np.asarray(picture.convert("RGBA"), dtype=np.float32) / 255.0
        image = np.ascontiguousarray(rgba[None, ..., :3])
        mask = np.ascontiguousarray(1.0 - rgba[None, ..., 3])
        return {"image": image, "mask": mask}


def next_free_path(folder: Path, prefix: str, suffix: str = ".png") -> tuple[Path, int]:
    """The first ``prefix_00001.png``-style name that does not exist yet in ``folder``."""
    stem = Path(prefix).name
    numbers = []
    if folder.is_dir():
        pattern = re.compile(re.escape(stem) + r"_(\d+)" + re.escape(suffix) + "$")
        for existing in folder.iterdir():
            match = pattern.match(existing.name)
            if match:
                numbers.append(int(match.group(1)))
    counter = max(numbers, default=0) + 1
    return folder / f"{stem}_{counter:05d}{suffix}", counter


def write_png_exclusive(folder: Path, prefix: str, pixels: np.ndarray, text: dict[str, str]) -> Path:
    """Write a PNG under the next free name; never replaces an existing file."""
    from PIL import Image, PngImagePlugin

    folder.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    fd, tmp_name = tempfile.mkstemp(prefix=".saving-", suffix=".png", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            Image.fromarray(pixels).save(handle, format="PNG", pnginfo=info, compress_level=4)
        while True:
            target, _ = next_free_path(folder, prefix)
            try:
                os.link(tmp, target)  # atomic, and fails if the name was taken meanwhile
                return target
            except FileExistsError:
                continue
    finally:
        tmp.unlink(missing_ok=True)


class SaveImage(Node):
    category = "image/io"
    description = "Save images as PNG in the output folder, with the workflow embedded."
    output_node = True
    inputs = (
        Input("images", T.IMAGE),
        Input(
            "filename_prefix",
            T.STRING,
            default="image",
            accepts="constant",
            description="Start of the file name; may name a sub-folder, as in 'portraits/face'.",
        ),
    )
    outputs = ()

    def run(self, ctx: Context, images: np.ndarray, filename_prefix: str) -> dict[str, Any]:
        images = as_image("images", images)
        prefix = filename_prefix.strip()
        if not _PREFIX.match(prefix) or any(part in ("..", ".") for part in prefix.split("/")):
            raise NodeInputError(
                "filename_prefix",
                f"{filename_prefix!r} is not a usable name: use letters, digits, '-', '_' "
                "and '/' for sub-folders, without '..'",
            )
        folder = ctx.settings.output_dir / Path(prefix).parent
        text = {PNG_SEED_KEY: str(ctx.seed)}
        if ctx.settings.workflow_json is not None:
            text[PNG_WORKFLOW_KEY] = ctx.settings.workflow_json
        for pixels in to_uint8(images):
            ctx.check_cancelled()
            ctx.add_file(write_png_exclusive(folder, prefix, pixels, text))
        return {}


class PreviewImage(Node):
    category = "image/io"
    description = "Show images in the studio without saving them."
    output_node = True
    inputs = (Input("images", T.IMAGE),)
    outputs = (Output("images", T.IMAGE),)

    def run(self, ctx: Context, images: np.ndarray) -> dict[str, Any]:
        images = as_image("images", images)
        ctx.preview(images)
        return {"images": images}


NODES = (LoadImage, SaveImage, PreviewImage)
