"""Image nodes: resize, crop, pad, blend, invert, grayscale, composite and a blank image.

Every IMAGE here is a float32 array (batch, height, width, 3) in [0, 1]; every
MASK is float32 (batch, height, width) in [0, 1] (see :mod:`nodes.types`).
Where two batches meet, a batch of one is repeated to match the other.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from imaging.luma import luminance
from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output
from nodes.image_inputs import as_image, as_mask, batch_size_of, check_same_size, repeat_batch, size_text
from nodes.limits import MAX_PIXELS, MAX_SIZE, check_pixel_budget  # noqa: F401 - the budget lives there


def _finish(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(image, 0.0, 1.0), dtype=np.float32)


# -- resize ---------------------------------------------------------------------------------

RESIZE_METHODS = ("nearest", "bilinear", "bicubic", "lanczos")
RESIZE_MODES = ("stretch", "fit", "fill")


def _resample(method: str) -> Any:
    from PIL import Image

    return {
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "lanczos": Image.Resampling.LANCZOS,
        "box": Image.Resampling.BOX,
    }[method]


def resize_image(
    image: np.ndarray,
    width: int,
    height: int,
    method: str,
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Resize every channel of every image with Pillow in float ("F") mode.

    ``box`` is the region of the source (left, top, right, bottom, in pixels, may be
    fractional) to scale to ``width`` x ``height``; the whole image when ``None``.
    Bicubic and lanczos may overshoot a little, so the result is clipped to [0, 1].
    """
    from PIL import Image

    resample = _resample(method)
    out = np.empty((image.shape[0], height, width, image.shape[3]), dtype=np.float32)
    for b in range(image.shape[0]):
        for c in range(image.shape[3]):
            channel = Image.fromarray(np.ascontiguousarray(image[b, :, :, c], dtype=np.float32), mode="F")
            out[b, :, :, c] = np.asarray(channel.resize((width, height), resample, box=box))
    return _finish(out)


def fit_size(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int]:
    """The largest size inside ``width`` x ``height`` with the aspect ratio of the source."""
    if src_w * height >= src_h * width:  # the source is wider than the box: width limits
        return width, max(1, min(height, round(width * src_h / src_w)))
    return max(1, min(width, round(height * src_w / src_h))), height


def fill_box(src_w: int, src_h: int, width: int, height: int) -> tuple[float, float, float, float]:
    """The centred region of the source with the aspect ratio of ``width`` x ``height``."""
    if src_w * height >= src_h * width:  # the source is wider: cut its sides
        crop_w, crop_h = src_h * width / height, float(src_h)
    else:  # the source is taller: cut top and bottom
        crop_w, crop_h = float(src_w), src_w * height / width
    left = (src_w - crop_w) / 2
    top = (src_h - crop_h) / 2
    return (left, top, left + crop_w, top + crop_h)


class ImageResize(Node):
    display_name = "Resize Image"
    category = "image/transform"
    description = "Scale images: stretched to a size, fitted inside it, or filling it with a centre crop."
    inputs = (
        Input("image", T.IMAGE),
        Input("width", T.INT, default=512, min=1, max=MAX_SIZE, step=8),
        Input("height", T.INT, default=512, min=1, max=MAX_SIZE, step=8),
        Input(
            "method",
            T.STRING,
            default="lanczos",
            choices=RESIZE_METHODS,
            accepts="constant",
            description="How new pixels are computed; lanczos is sharpest, nearest keeps hard edges.",
        ),
        Input(
            "mode",
            T.STRING,
            default="stretch",
            choices=RESIZE_MODES,
            accepts="constant",
            description="stretch: exactly width x height; fit: the largest size inside it keeping "
            "the aspect ratio; fill: cover it keeping the aspect ratio, then crop the centre.",
        ),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(
        self, ctx: Context, image: np.ndarray, width: int, height: int, method: str, mode: str
    ) -> dict[str, Any]:
        image = as_image("image", image)
        check_pixel_budget("width", image.shape[0], height, width)
        src_h, src_w = image.shape[1:3]
        if mode == "fit":
            out_w, out_h = fit_size(src_w, src_h, width, height)
            return {"image": resize_image(image, out_w, out_h, method)}
        if mode == "fill":
            box = fill_box(src_w, src_h, width, height)
            return {"image": resize_image(image, width, height, method, box=box)}
        return {"image": resize_image(image, width, height, method)}


#: ComfyUI's scaling methods and the resize_image method each stands for ("area" averages the
#: pixels each new one covers, which is Pillow's box filter).
SCALE_METHODS = {
    "nearest-exact": "nearest",
    "bilinear": "bilinear",
    "area": "box",
    "bicubic": "bicubic",
    "lanczos": "lanczos",
}


def scaled_size(width: int, height: int, scale_by: float) -> tuple[int, int]:
    """``width`` x ``height`` times ``scale_by``, rounded, at least one pixel each way."""
    return max(1, round(width * scale_by)), max(1, round(height * scale_by))


class ImageScaleBy(Node):
    display_name = "Upscale Image By"
    category = "image/transform"
    description = "Scale images by a factor (2 doubles the width and the height), keeping their shape."
    inputs = (
        Input("image", T.IMAGE),
        Input(
            "upscale_method",
            T.STRING,
            default="nearest-exact",
            choices=tuple(SCALE_METHODS),
            accepts="constant",
            description="How new pixels are computed; lanczos is sharpest, nearest-exact keeps hard "
            "edges, area averages (good for shrinking).",
        ),
        Input(
            "scale_by",
            T.FLOAT,
            default=1.0,
            min=0.01,
            max=8.0,
            step=0.01,
            description="The new width and height over the old (rounded to whole pixels).",
        ),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, image: np.ndarray, upscale_method: str, scale_by: float) -> dict[str, Any]:
        image = as_image("image", image)
        width, height = scaled_size(image.shape[2], image.shape[1], scale_by)
        check_pixel_budget("scale_by", image.shape[0], height, width)
        return {"image": resize_image(image, width, height, SCALE_METHODS[upscale_method])}


def total_pixels_size(width: int, height: int, megapixels: float, steps: int = 1) -> tuple[int, int]:
    """``width`` x ``height`` scaled to about ``megapixels`` (of 1024 x 1024 pixels each), keeping
    the aspect ratio; each side rounded to a multiple of ``steps``, at least ``steps``."""
    scale = math.sqrt(megapixels * 1024 * 1024 / (width * height))
    return (
        max(steps, round(width * scale / steps) * steps),
        max(steps, round(height * scale / steps) * steps),
    )


class ImageScaleToTotalPixels(Node):
    display_name = "Scale Image to Total Pixels"
    category = "image/transform"
    description = (
        "Scale images to about a number of megapixels (1 = 1024 x 1024 pixels), keeping their shape; "
        "the size a model was trained at, whatever the picture's."
    )
    inputs = (
        Input("image", T.IMAGE),
        Input(
            "upscale_method",
            T.STRING,
            default="nearest-exact",
            choices=tuple(SCALE_METHODS),
            accepts="constant",
            description="How new pixels are computed; lanczos is sharpest, nearest-exact keeps hard "
            "edges, area averages (good for shrinking).",
        ),
        Input(
            "megapixels",
            T.FLOAT,
            default=1.0,
            min=0.01,
            max=16.0,
            step=0.01,
            description="The number of pixels wanted, in units of 1024 x 1024.",
        ),
        Input(
            "resolution_steps",
            T.INT,
            default=1,
            min=1,
            max=256,
            description="Each side is rounded to a multiple of this (e.g. 8 or 64 for a model's grid).",
        ),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(
        self,
        ctx: Context,
        image: np.ndarray,
        upscale_method: str,
        megapixels: float,
        resolution_steps: int = 1,
    ) -> dict[str, Any]:
        image = as_image("image", image)
        width, height = total_pixels_size(image.shape[2], image.shape[1], megapixels, resolution_steps)
        check_pixel_budget("megapixels", image.shape[0], height, width)
        return {"image": resize_image(image, width, height, SCALE_METHODS[upscale_method])}


class GetImageSize(Node):
    category = "image"
    description = "The width, height and batch size of images, to size other nodes by."
    inputs = (Input("image", T.IMAGE),)
    outputs = (
        Output("width", T.INT),
        Output("height", T.INT),
        Output("batch_size", T.INT),
    )

    def run(self, ctx: Context, image: np.ndarray) -> dict[str, Any]:
        image = as_image("image", image)
        batch, height, width = image.shape[:3]
        return {"width": int(width), "height": int(height), "batch_size": int(batch)}


# -- crop and pad ---------------------------------------------------------------------------


class ImageCrop(Node):
    category = "image/transform"
    description = "Cut out a rectangle of the images, given its top-left corner and size."
    inputs = (
        Input("image", T.IMAGE),
        Input("x", T.INT, default=0, min=0, max=MAX_SIZE, step=1, description="Left edge, in pixels."),
        Input("y", T.INT, default=0, min=0, max=MAX_SIZE, step=1, description="Top edge, in pixels."),
        Input("width", T.INT, default=512, min=1, max=MAX_SIZE, step=8),
        Input("height", T.INT, default=512, min=1, max=MAX_SIZE, step=8),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, image: np.ndarray, x: int, y: int, width: int, height: int) -> dict[str, Any]:
        image = as_image("image", image)
        img_h, img_w = image.shape[1:3]
        size = f"the image is {img_w}x{img_h} (width x height)"
        if x >= img_w:
            raise NodeInputError("x", f"x = {x} is past the right edge: {size}; use an x below {img_w}")
        if y >= img_h:
            raise NodeInputError("y", f"y = {y} is past the bottom edge: {size}; use a y below {img_h}")
        if x + width > img_w:
            raise NodeInputError(
                "width",
                f"x + width = {x + width} goes past the right edge: {size}; "
                f"use a width of at most {img_w - x} or a smaller x",
            )
        if y + height > img_h:
            raise NodeInputError(
                "height",
                f"y + height = {y + height} goes past the bottom edge: {size}; "
                f"use a height of at most {img_h - y} or a smaller y",
            )
        return {"image": np.ascontiguousarray(image[:, y : y + height, x : x + width, :])}


PAD_FILLS = ("black", "white", "edge", "reflect")


class ImagePad(Node):
    display_name = "Pad Image"
    category = "image/transform"
    description = "Add a border around the images; the mask marks the new border (for outpainting)."
    inputs = (
        Input("image", T.IMAGE),
        Input("left", T.INT, default=0, min=0, max=8192, step=8),
        Input("top", T.INT, default=0, min=0, max=8192, step=8),
        Input("right", T.INT, default=0, min=0, max=8192, step=8),
        Input("bottom", T.INT, default=0, min=0, max=8192, step=8),
        Input(
            "fill",
            T.STRING,
            default="black",
            choices=PAD_FILLS,
            accepts="constant",
            description="black or white; edge repeats the outermost pixels; "
            "reflect mirrors the image at its border (the edge pixel itself is not repeated).",
        ),
    )
    outputs = (
        Output("image", T.IMAGE),
        Output("mask", T.MASK, description="1 on the added border, 0 on the original image."),
    )

    def run(
        self, ctx: Context, image: np.ndarray, left: int, top: int, right: int, bottom: int, fill: str
    ) -> dict[str, Any]:
        image = as_image("image", image)
        check_pixel_budget(
            "right", image.shape[0], image.shape[1] + top + bottom, image.shape[2] + left + right
        )
        widths = ((0, 0), (top, bottom), (left, right), (0, 0))
        if fill == "edge":
            padded = np.pad(image, widths, mode="edge")
        elif fill == "reflect":
            # numpy mirrors again and again when a border is wider than the image; an image
            # one pixel across has nothing to mirror, so that side repeats its edge instead.
            padded = np.pad(image, widths, mode="reflect" if min(image.shape[1:3]) > 1 else "edge")
        else:
            padded = np.pad(image, widths, mode="constant", constant_values=1.0 if fill == "white" else 0.0)
        img_h, img_w = image.shape[1:3]
        mask = np.ones(padded.shape[:3], dtype=np.float32)
        mask[:, top : top + img_h, left : left + img_w] = 0.0
        return {"image": np.ascontiguousarray(padded, dtype=np.float32), "mask": mask}


# -- blend, invert, grayscale -----------------------------------------------------------------


def _overlay(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(a < 0.5, 2.0 * a * b, 1.0 - 2.0 * (1.0 - a) * (1.0 - b))


BLEND_MODES: dict[str, Any] = {
    "normal": lambda a, b: b,
    "multiply": lambda a, b: a * b,
    "screen": lambda a, b: 1.0 - (1.0 - a) * (1.0 - b),
    "overlay": _overlay,
    "add": lambda a, b: np.minimum(a + b, 1.0),
    "subtract": lambda a, b: np.maximum(a - b, 0.0),
    "difference": lambda a, b: np.abs(a - b),
    "lighten": np.maximum,
    "darken": np.minimum,
}


class ImageBlend(Node):
    category = "image/compose"
    description = "Mix image_b into image_a with a blend mode; factor 0 keeps a, 1 gives the full blend."
    inputs = (
        Input("image_a", T.IMAGE, description="The base image."),
        Input("image_b", T.IMAGE, description="The image blended onto the base; the same size."),
        Input("factor", T.FLOAT, default=0.5, min=0.0, max=1.0, step=0.01),
        Input(
            "mode",
            T.STRING,
            default="normal",
            choices=tuple(BLEND_MODES),
            accepts="constant",
            description="overlay uses image_a as the base layer.",
        ),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(
        self, ctx: Context, image_a: np.ndarray, image_b: np.ndarray, factor: float, mode: str
    ) -> dict[str, Any]:
        a = as_image("image_a", image_a)
        b = as_image("image_b", image_b)
        check_same_size("image_b", a, b, "image_a", "image_b")
        batch = batch_size_of("image_b", a, b)
        a, b = repeat_batch(a, batch), repeat_batch(b, batch)
        blended = BLEND_MODES[mode](a, b)
        return {"image": _finish(a * (1.0 - factor) + blended * factor)}


class ImageInvert(Node):
    display_name = "Invert Image"
    category = "image/adjust"
    description = "Turn every colour into its opposite (1 - value)."
    inputs = (Input("image", T.IMAGE),)
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, image: np.ndarray) -> dict[str, Any]:
        return {"image": _finish(1.0 - as_image("image", image))}


class ImageGrayscale(Node):
    category = "image/adjust"
    description = "Make images gray by luminance (ITU-R BT.601 weights), kept as three channels."
    inputs = (Input("image", T.IMAGE),)
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, image: np.ndarray) -> dict[str, Any]:
        gray = luminance(as_image("image", image))
        return {"image": _finish(np.repeat(gray[..., None], 3, axis=-1))}


# -- composite ---------------------------------------------------------------------------------


class ImageComposite(Node):
    category = "image/compose"
    description = "Paste source onto destination at x, y (cut off at the edges), optionally through a mask."
    inputs = (
        Input("destination", T.IMAGE),
        Input("source", T.IMAGE),
        Input(
            "x",
            T.INT,
            default=0,
            min=-MAX_SIZE,
            max=MAX_SIZE,
            step=1,
            description="Where the source's left edge goes; may be negative.",
        ),
        Input(
            "y",
            T.INT,
            default=0,
            min=-MAX_SIZE,
            max=MAX_SIZE,
            step=1,
            description="Where the source's top edge goes; may be negative.",
        ),
        Input(
            "mask",
            T.MASK,
            optional=True,
            description="The size of source; 1 takes the source, 0 keeps the destination.",
        ),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(
        self,
        ctx: Context,
        destination: np.ndarray,
        source: np.ndarray,
        x: int,
        y: int,
        mask: np.ndarray | None = None,
    ) -> dict[str, Any]:
        dest = as_image("destination", destination)
        src = as_image("source", source)
        batch = batch_size_of("source", dest, src)
        if mask is not None:
            mask = as_mask("mask", mask)
            if mask.shape[1:3] != src.shape[1:3]:
                raise NodeInputError(
                    "mask",
                    f"the mask is {size_text(mask)} but source is {size_text(src)} (width x height); "
                    "they must be the same size: resize or crop the mask",
                )
            batch = batch_size_of("mask", dest, src, mask)
        check_pixel_budget("source", batch, dest.shape[1], dest.shape[2])
        out = repeat_batch(dest, batch).copy()
        dest_h, dest_w = dest.shape[1:3]
        src_h, src_w = src.shape[1:3]
        # The overlap, in destination coordinates, and where it starts in the source.
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + src_w, dest_w), min(y + src_h, dest_h)
        if x0 >= x1 or y0 >= y1:
            return {"image": out}  # the source lies wholly outside: nothing to paste
        sx, sy = x0 - x, y0 - y
        piece = src[:, sy : sy + (y1 - y0), sx : sx + (x1 - x0), :]
        region = out[:, y0:y1, x0:x1, :]
        if mask is None:
            region[...] = piece
        else:
            weight = np.clip(mask[:, sy : sy + (y1 - y0), sx : sx + (x1 - x0), None], 0.0, 1.0)
            region[...] = region * (1.0 - weight) + piece * weight
        return {"image": _finish(out)}


# -- a blank image -------------------------------------------------------------------------------

_HEX = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


def parse_hex_color(name: str, text: str) -> tuple[float, float, float]:
    """``#rrggbb`` (or ``#rgb``; the ``#`` may be left out) as red, green, blue in [0, 1]."""
    match = _HEX.fullmatch(text.strip())
    if match is None:
        raise NodeInputError(
            name, f"{text!r} is not a colour: write it as #rrggbb in hexadecimal, e.g. #ff8800 for orange"
        )
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    r, g, b = (int(digits[i : i + 2], 16) / 255.0 for i in (0, 2, 4))
    return r, g, b


class EmptyImage(Node):
    category = "image"
    description = "A batch of images of one solid colour."
    inputs = (
        Input("width", T.INT, default=512, min=1, max=MAX_SIZE, step=8),
        Input("height", T.INT, default=512, min=1, max=MAX_SIZE, step=8),
        Input("batch_size", T.INT, default=1, min=1, max=64, step=1),
        Input(
            "color", T.STRING, default="#000000", description="Hexadecimal #rrggbb, e.g. #ffffff for white."
        ),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, width: int, height: int, batch_size: int, color: str) -> dict[str, Any]:
        rgb = np.asarray(parse_hex_color("color", color), dtype=np.float32)
        check_pixel_budget("batch_size", batch_size, height, width)
        image = np.empty((batch_size, height, width, 3), dtype=np.float32)
        image[...] = rgb
        return {"image": image}


NODES = (
    ImageResize,
    ImageScaleBy,
    ImageScaleToTotalPixels,
    GetImageSize,
    ImageCrop,
    ImagePad,
    ImageBlend,
    ImageInvert,
    ImageGrayscale,
    ImageComposite,
    EmptyImage,
)
