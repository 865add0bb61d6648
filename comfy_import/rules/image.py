"""The table's entries for image and mask nodes: load, save, scale, pad, blend, Canny, masks."""

from __future__ import annotations

from comfy_import.rules.base import Rule, one, same
from comfy_import.rules.values import (
    blend_mode,
    canny_checks,
    canny_threshold,
    clean_prefix,
    crop_mode,
    hex_color,
    image_name,
    mask_channel,
    pad_checks,
    scale_checks,
    scale_method,
)

IMAGE_RULES: dict[str, Rule] = {
    # images
    "SaveImage": one(
        "SaveImage",
        same("images", "filename_prefix"),
        (),
        values={"filename_prefix": clean_prefix},
        widgets=("filename_prefix",),
    ),
    "PreviewImage": one("PreviewImage", same("images"), ()),
    "LoadImage": one(
        "LoadImage",
        {"image": "path"},
        ("image", "mask"),
        values={"image": image_name},
        consumed=("upload",),
        widgets=("image", "upload"),
    ),
    "ImageScale": one(
        "ImageResize",
        {"image": "image", "upscale_method": "method", "width": "width", "height": "height", "crop": "mode"},
        ("image",),
        values={"upscale_method": scale_method, "crop": crop_mode},
        adjust=scale_checks,
        widgets=("upscale_method", "width", "height", "crop"),
    ),
    "ImageScaleBy": one(
        "ImageScaleBy",
        same("image", "upscale_method", "scale_by"),
        ("image",),
        widgets=("upscale_method", "scale_by"),
    ),
    "ImageInvert": one("ImageInvert", same("image"), ("image",)),
    "ImageBlend": one(
        "ImageBlend",
        {"image1": "image_a", "image2": "image_b", "blend_factor": "factor", "blend_mode": "mode"},
        ("image",),
        values={"blend_mode": blend_mode},
        widgets=("blend_factor", "blend_mode"),
    ),
    "ImagePadForOutpaint": one(
        "ImagePad",
        same("image", "left", "top", "right", "bottom"),
        ("image", "mask"),
        fixed={"fill": "edge"},
        consumed=("feathering",),
        adjust=pad_checks,
        widgets=("left", "top", "right", "bottom", "feathering"),
    ),
    "EmptyImage": one(
        "EmptyImage",
        same("width", "height", "batch_size", "color"),
        ("image",),
        values={"color": hex_color},
        widgets=("width", "height", "batch_size", "color"),
    ),
    "UpscaleModelLoader": one(
        "UpscaleModelLoader", same("model_name"), ("upscale_model",), widgets=("model_name",)
    ),
    "ImageUpscaleWithModel": one("ImageUpscaleWithModel", same("upscale_model", "image"), ("image",)),
    "ImageScaleToTotalPixels": one(  # files before ComfyUI added resolution_steps: ours defaults to 1
        "ImageScaleToTotalPixels",
        same("image", "upscale_method", "megapixels", "resolution_steps"),
        ("image",),
        widgets=("upscale_method", "megapixels", "resolution_steps"),
    ),
    "GetImageSize": one("GetImageSize", same("image"), ("width", "height", "batch_size")),
    "Canny": one(
        "CannyEdges",
        same("image", "low_threshold", "high_threshold"),
        ("image",),
        values={"low_threshold": canny_threshold, "high_threshold": canny_threshold},
        adjust=canny_checks,
        widgets=("low_threshold", "high_threshold"),
    ),
    # masks
    "SolidMask": one(
        "SolidMask", same("value", "width", "height"), ("mask",), widgets=("value", "width", "height")
    ),
    "InvertMask": one("MaskInvert", same("mask"), ("mask",)),
    "MaskToImage": one("MaskToImage", same("mask"), ("image",)),
    "ImageToMask": one(
        "ImageToMask",
        same("image", "channel"),
        ("mask",),
        values={"channel": mask_channel},
        widgets=("channel",),
    ),
    "MaskComposite": one(
        "MaskComposite",
        same("destination", "source", "x", "y", "operation"),
        ("mask",),
        widgets=("x", "y", "operation"),
    ),
}
