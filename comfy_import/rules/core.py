"""The table's entries for ComfyUI's core Stable Diffusion nodes: checkpoints, CLIP, LoRA, the
VAE and latents, ControlNet, conditioning."""

from __future__ import annotations

from comfy_import.rules.base import Part, Rule, one, same

_CONTROL_ADVANCED_INPUTS = {
    "control_net": "control_net",
    "image": "image",
    "strength": "strength",
    "start_percent": "start",
    "end_percent": "end",
}
_AREA = ("width", "height", "x", "y", "strength")
_TILED = ("tile_size", "overlap", "temporal_size", "temporal_overlap")

CORE_RULES: dict[str, Rule] = {
    # loaders, text encoding, model sampling
    "CheckpointLoaderSimple": one(
        "CheckpointLoader", same("ckpt_name"), ("model", "clip", "vae"), widgets=("ckpt_name",)
    ),
    "CheckpointLoader": one(
        "CheckpointLoader",
        same("ckpt_name"),
        ("model", "clip", "vae"),
        consumed=("config_name",),  # the studio finds the configuration itself
        widgets=("config_name", "ckpt_name"),
    ),
    "CLIPTextEncode": one("CLIPTextEncode", same("text", "clip"), ("conditioning",), widgets=("text",)),
    "CLIPSetLastLayer": one(
        "CLIPSetLastLayer", same("clip", "stop_at_clip_layer"), ("clip",), widgets=("stop_at_clip_layer",)
    ),
    "CLIPTextEncodeSDXL": one(
        "CLIPTextEncodeSDXL",
        same(
            "clip", "width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l"
        ),
        ("conditioning",),
        widgets=("width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l"),
    ),
    "CLIPTextEncodeSDXLRefiner": one(
        "CLIPTextEncodeSDXLRefiner",
        same("clip", "ascore", "width", "height", "text"),
        ("conditioning",),
        widgets=("ascore", "width", "height", "text"),
    ),
    "CLIPLoader": one(
        "CLIPLoader",
        same("clip_name", "type"),
        ("clip",),
        consumed=("device",),
        widgets=("clip_name", "type", "device"),
    ),
    "VAELoader": one("VAELoader", same("vae_name"), ("vae",), widgets=("vae_name",)),
    "LoraLoader": one(
        "LoraLoader",
        same("model", "clip", "lora_name", "strength_model", "strength_clip"),
        ("model", "clip"),
        widgets=("lora_name", "strength_model", "strength_clip"),
    ),
    "LoraLoaderModelOnly": one(
        "LoraLoaderModelOnly",
        same("model", "lora_name", "strength_model"),
        ("model",),
        widgets=("lora_name", "strength_model"),
    ),
    "HypernetworkLoader": one(
        "HypernetworkLoader",
        same("model", "hypernetwork_name", "strength"),
        ("model",),
        widgets=("hypernetwork_name", "strength"),
    ),
    "ModelSamplingDiscrete": one(
        "ModelSamplingDiscrete", same("model", "sampling", "zsnr"), ("model",), widgets=("sampling", "zsnr")
    ),
    # latents and the VAE
    "EmptyLatentImage": one(
        "EmptyLatent",
        same("width", "height", "batch_size"),
        ("latent",),
        widgets=("width", "height", "batch_size"),
    ),
    "VAEDecode": one("VAEDecode", {"samples": "latent", "vae": "vae"}, ("image",)),
    "VAEEncode": one("VAEEncode", {"pixels": "image", "vae": "vae"}, ("latent",)),
    "VAEDecodeTiled": one(
        "VAEDecode", {"samples": "latent", "vae": "vae"}, ("image",), consumed=_TILED, widgets=_TILED
    ),
    "VAEEncodeTiled": one(
        "VAEEncode", {"pixels": "image", "vae": "vae"}, ("latent",), consumed=_TILED, widgets=_TILED
    ),
    "VAEEncodeForInpaint": one(
        "InpaintEncode",
        {"pixels": "image", "vae": "vae", "mask": "mask", "grow_mask_by": "grow_mask_by"},
        ("latent",),
        widgets=("grow_mask_by",),
    ),
    "SetLatentNoiseMask": one("SetLatentNoiseMask", {"samples": "latent", "mask": "mask"}, ("latent",)),
    "InpaintModelConditioning": one(
        "InpaintModelConditioning",
        same("positive", "negative", "vae", "pixels", "mask", "noise_mask"),
        ("positive", "negative", "latent"),
        widgets=("noise_mask",),
    ),
    # the picture to edit travels on the prompts, for instruction-editing (8-channel) models
    "InstructPixToPixConditioning": one(
        "InstructPixToPixConditioning",
        same("positive", "negative", "vae", "pixels"),
        ("positive", "negative", "latent"),
    ),
    "DifferentialDiffusion": one(
        "DifferentialDiffusion", same("model", "strength"), ("model",), widgets=("strength",)
    ),
    "LatentUpscale": one(
        "LatentUpscale",
        {"samples": "latent", **same("upscale_method", "width", "height", "crop")},
        ("latent",),
        widgets=("upscale_method", "width", "height", "crop"),
    ),
    "LatentUpscaleBy": one(
        "LatentUpscaleBy",
        {"samples": "latent", **same("upscale_method", "scale_by")},
        ("latent",),
        widgets=("upscale_method", "scale_by"),
    ),
    "LatentComposite": one(
        "LatentComposite",
        same("samples_to", "samples_from", "x", "y", "feather"),
        ("latent",),
        widgets=("x", "y", "feather"),
    ),
    "LatentBlend": one(
        "LatentBlend",
        same("samples1", "samples2", "blend_factor"),
        ("latent",),
        consumed=("blend_mode",),  # older ComfyUI: always "normal"
        widgets=("blend_factor", "blend_mode"),
    ),
    "RepeatLatentBatch": one(
        "RepeatLatentBatch", {"samples": "latent", "amount": "amount"}, ("latent",), widgets=("amount",)
    ),
    "LatentCrop": one(
        "LatentCrop",
        {"samples": "latent", **same("width", "height", "x", "y")},
        ("latent",),
        widgets=("width", "height", "x", "y"),
    ),
    # ControlNet
    "ControlNetLoader": one(
        "ControlNetLoader", same("control_net_name"), ("control_net",), widgets=("control_net_name",)
    ),
    "ControlNetApply": one(
        "ControlNetApply",
        same("conditioning", "control_net", "image", "strength"),
        ("conditioning",),
        widgets=("strength",),
    ),
    "ControlNetApplyAdvanced": Rule(
        parts=(
            Part(
                "ControlNetApply",
                {"positive": "conditioning", **_CONTROL_ADVANCED_INPUTS},
                suffix="_pos",
                title_suffix=" (positive)",
            ),
            Part(
                "ControlNetApply",
                {"negative": "conditioning", **_CONTROL_ADVANCED_INPUTS},
                suffix="_neg",
                title_suffix=" (negative)",
            ),
        ),
        outputs=(("_pos", "conditioning"), ("_neg", "conditioning")),
        consumed=frozenset({"vae"}),
        widgets=("strength", "start_percent", "end_percent"),
    ),
    "DiffControlNetLoader": one(
        "DiffControlNetLoader",
        same("model", "control_net_name"),
        ("control_net",),
        widgets=("control_net_name",),
    ),
    # conditioning
    "ConditioningCombine": one(
        "ConditioningCombine",
        {"conditioning_1": "conditioning_a", "conditioning_2": "conditioning_b"},
        ("conditioning",),
    ),
    "ConditioningSetArea": one(
        "ConditioningSetArea", same("conditioning", *_AREA), ("conditioning",), widgets=_AREA
    ),
    "ConditioningSetAreaPercentage": one(
        "ConditioningSetAreaPercentage", same("conditioning", *_AREA), ("conditioning",), widgets=_AREA
    ),
    "ConditioningSetAreaStrength": one(
        "ConditioningSetAreaStrength",
        same("conditioning", "strength"),
        ("conditioning",),
        widgets=("strength",),
    ),
    "ConditioningAverage": one(
        "ConditioningAverage",
        same("conditioning_to", "conditioning_from", "conditioning_to_strength"),
        ("conditioning",),
        widgets=("conditioning_to_strength",),
    ),
    "ConditioningConcat": one(
        "ConditioningConcat", same("conditioning_to", "conditioning_from"), ("conditioning",)
    ),
    "ConditioningZeroOut": one("ConditioningZeroOut", same("conditioning"), ("conditioning",)),
    "ConditioningSetTimestepRange": one(
        "ConditioningSetTimestepRange",
        same("conditioning", "start", "end"),
        ("conditioning",),
        widgets=("start", "end"),
    ),
    # logic
    "ComfySwitchNode": one(
        "Switch",
        {"switch": "select", "on_true": "on_true", "on_false": "on_false"},
        ("value",),
        widgets=("switch",),
    ),
    # its widgets are the page's own preview boxes, not inputs
    "PreviewAny": one("ShowValue", {"source": "value"}, ("text",)),
}
