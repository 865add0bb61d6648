"""The table's entries for the model families after SD1/SDXL and the adapters: SD3, Flux and
other DiT models, Stable Video Diffusion, CLIP vision and unCLIP, IP-Adapter, GLIGEN."""

from __future__ import annotations

from comfy_import.rules.base import Rule, one, same
from comfy_import.rules.values import (
    clean_prefix,
    ipadapter_simple_weight_type,
    ipadapter_weight_type,
    unet_weight_dtype,
)

FAMILY_RULES: dict[str, Rule] = {
    # SD3, Flux and other DiT models
    "DualCLIPLoader": one(
        "DualCLIPLoader",
        same("clip_name1", "clip_name2", "type"),
        ("clip",),
        consumed=("device",),
        widgets=("clip_name1", "clip_name2", "type", "device"),
    ),
    "TripleCLIPLoader": one(
        "TripleCLIPLoader",
        same("clip_name1", "clip_name2", "clip_name3"),
        ("clip",),
        widgets=("clip_name1", "clip_name2", "clip_name3"),
    ),
    "UNETLoader": one(
        "UNETLoader",
        same("unet_name", "weight_dtype"),
        ("model",),
        values={"weight_dtype": unet_weight_dtype},
        widgets=("unet_name", "weight_dtype"),
    ),
    "EmptySD3LatentImage": one(
        "EmptySD3LatentImage",
        same("width", "height", "batch_size"),
        ("latent",),
        widgets=("width", "height", "batch_size"),
    ),
    "ModelSamplingSD3": one("ModelSamplingSD3", same("model", "shift"), ("model",), widgets=("shift",)),
    "ModelSamplingFlux": one(
        "ModelSamplingFlux",
        same("model", "max_shift", "base_shift", "width", "height"),
        ("model",),
        widgets=("max_shift", "base_shift", "width", "height"),
    ),
    "FluxGuidance": one(
        "FluxGuidance", same("conditioning", "guidance"), ("conditioning",), widgets=("guidance",)
    ),
    "CLIPTextEncodeSD3": one(
        "CLIPTextEncodeSD3",
        same("clip", "clip_l", "clip_g", "t5xxl", "empty_padding"),
        ("conditioning",),
        widgets=("clip_l", "clip_g", "t5xxl", "empty_padding"),
    ),
    "CLIPTextEncodeFlux": one(
        "CLIPTextEncodeFlux",
        same("clip", "clip_l", "t5xxl", "guidance"),
        ("conditioning",),
        widgets=("clip_l", "t5xxl", "guidance"),
    ),
    "SkipLayerGuidanceSD3": one(
        "SkipLayerGuidanceSD3",
        same("model", "layers", "scale", "start_percent", "end_percent"),
        ("model",),
        widgets=("layers", "scale", "start_percent", "end_percent"),
    ),
    # Stable Video Diffusion and animated pictures
    "ImageOnlyCheckpointLoader": one(
        "ImageOnlyCheckpointLoader",
        same("ckpt_name"),
        ("model", "clip_vision", "vae"),
        widgets=("ckpt_name",),
    ),
    "SVD_img2vid_Conditioning": one(
        "SVD_img2vid_Conditioning",
        same(
            "clip_vision",
            "init_image",
            "vae",
            "width",
            "height",
            "video_frames",
            "motion_bucket_id",
            "fps",
            "augmentation_level",
        ),
        ("positive", "negative", "latent"),
        widgets=("width", "height", "video_frames", "motion_bucket_id", "fps", "augmentation_level"),
    ),
    "VideoLinearCFGGuidance": one(
        "VideoLinearCFGGuidance", same("model", "min_cfg"), ("model",), widgets=("min_cfg",)
    ),
    "VideoTriangleCFGGuidance": one(
        "VideoTriangleCFGGuidance", same("model", "min_cfg"), ("model",), widgets=("min_cfg",)
    ),
    "SaveAnimatedWEBP": one(
        "SaveAnimatedWEBP",
        same("images", "filename_prefix", "fps", "lossless", "quality", "method"),
        (),
        values={"filename_prefix": clean_prefix},
        widgets=("filename_prefix", "fps", "lossless", "quality", "method"),
    ),
    "SaveAnimatedPNG": one(
        "SaveAnimatedPNG",
        same("images", "filename_prefix", "fps", "compress_level"),
        (),
        values={"filename_prefix": clean_prefix},
        widgets=("filename_prefix", "fps", "compress_level"),
    ),
    # CLIP vision and unCLIP
    "CLIPVisionLoader": one("CLIPVisionLoader", same("clip_name"), ("clip_vision",), widgets=("clip_name",)),
    "CLIPVisionEncode": one(  # files before ComfyUI added crop have no widget: ours defaults to center
        "CLIPVisionEncode",
        same("clip_vision", "image", "crop"),
        ("clip_vision_output",),
        widgets=("crop",),
    ),
    "unCLIPConditioning": one(
        "unCLIPConditioning",
        same("conditioning", "clip_vision_output", "strength", "noise_augmentation"),
        ("conditioning",),
        widgets=("strength", "noise_augmentation"),
    ),
    "unCLIPCheckpointLoader": one(
        "unCLIPCheckpointLoader",
        same("ckpt_name"),
        ("model", "clip", "vae", "clip_vision"),
        widgets=("ckpt_name",),
    ),
    # IP-Adapter
    "IPAdapterModelLoader": one(
        "IPAdapterModelLoader", same("ipadapter_file"), ("ipadapter",), widgets=("ipadapter_file",)
    ),
    "IPAdapter": one(
        "IPAdapter",
        same("model", "ipadapter", "image", "weight", "start_at", "end_at", "weight_type"),
        ("model",),
        values={"weight_type": ipadapter_simple_weight_type},
        widgets=("weight", "start_at", "end_at", "weight_type"),
    ),
    "IPAdapterAdvanced": one(
        "IPAdapterAdvanced",
        same(
            "model",
            "ipadapter",
            "image",
            "weight",
            "weight_type",
            "combine_embeds",
            "start_at",
            "end_at",
            "embeds_scaling",
            "image_negative",
            "clip_vision",
        ),
        ("model",),
        values={"weight_type": ipadapter_weight_type},
        widgets=("weight", "weight_type", "combine_embeds", "start_at", "end_at", "embeds_scaling"),
    ),
    # GLIGEN
    "GLIGENLoader": one("GLIGENLoader", same("gligen_name"), ("gligen",), widgets=("gligen_name",)),
    "GLIGENTextBoxApply": one(
        "GLIGENTextBoxApply",
        same("conditioning_to", "clip", "gligen_textbox_model", "text", "width", "height", "x", "y"),
        ("conditioning",),
        fixed={"beta": 1.0},  # ComfyUI keeps the boxes on at every step
        widgets=("text", "width", "height", "x", "y"),
    ),
}
