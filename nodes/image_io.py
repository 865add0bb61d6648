"""Loading, saving and previewing images.

SaveImage writes PNGs that carry the workflow and the run's seed as text chunks,
so ``python app.py run picture.png`` (or dropping it on the studio) brings the
workflow back. Files are never overwritten: each save takes the next free name,
written to a temporary file first so no half-written PNG ever appears. Saved files
get the usual mode (0666 less the process umask, so 0644 under umask 022).

Both stay in their folders: LoadImage reads only files inside an input folder
(see :func:`nodes.base.find_input_file`), SaveImage writes only inside the output
folder, with symbolic links followed, and neither takes a name with a part that
starts with a dot (the studio keeps its own files, such as ``.studio``, there).
Pictures larger than the pixel budget (:mod:`nodes.limits`) are refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from graph.workflow import PNG_SEED_KEY, PNG_WORKFLOW_KEY
from nodes import limits
from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings, find_input_file
from nodes.image_inputs import as_image
from nodes.saving import output_folder, to_uint8, write_png_exclusive


class LoadImage(Node):
    display_name = "Load Image"
    category = "image/io"
    description = "Load an image file (PNG, JPEG, WebP, ...) from the input folder."
    inputs = (
        Input(
            "path",
            T.STRING,
            default="",
            accepts="constant",
            description="File name inside the input folder (or an absolute path when running headless).",
            input_file=True,
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
                width, height = opened.size
                if width * height > limits.MAX_PIXELS:
                    raise NodeInputError(
                        "path",
                        f"{path!r} is {width}x{height} pixels, more than the {limits.MAX_PIXELS:,} "
                        "a picture may have; use a smaller image",
                    )
                picture = ImageOps.exif_transpose(opened)
                picture.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise NodeInputError("path", f"{path!r} is too large to load: {limits.bomb_text(exc)}") from None
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


class SaveImage(Node):
    display_name = "Save Image"
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
        folder, prefix = output_folder(ctx.settings, filename_prefix)
        text = {PNG_SEED_KEY: str(ctx.seed)}
        if ctx.settings.workflow_json is not None:
            text[PNG_WORKFLOW_KEY] = ctx.settings.workflow_json
        for pixels in to_uint8(images):
            ctx.check_cancelled()
            ctx.add_file(write_png_exclusive(folder, prefix, pixels, text))
        return {}


class PreviewImage(Node):
    display_name = "Preview Image"
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
