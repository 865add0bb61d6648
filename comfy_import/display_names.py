"""The names ComfyUI users know nodes by, as aliases of the studio nodes the importer makes.

A ComfyUI user searching the studio's node list types what ComfyUI shows: its class
names (``KSampler``, ``CheckpointLoaderSimple``) or its display names (``Load
Checkpoint``, ``CLIP Text Encode (Prompt)``). :func:`comfy_aliases` gives, for each
studio node type, every ComfyUI class that :data:`~comfy_import.rules.RULES` turns into
it and those classes' display names (:data:`COMFY_DISPLAY_NAMES`, from ComfyUI's
``NODE_DISPLAY_NAME_MAPPINGS`` in ``nodes.py`` and ``comfy_extras``; a class without
an entry there is shown by ComfyUI under its class name). Names ComfyUI marks
deprecated are left out: nobody searches for them.
"""

from __future__ import annotations

from comfy_import.rules import RULES

#: ComfyUI's display names of the classes the importer converts (those that have one).
COMFY_DISPLAY_NAMES: dict[str, str] = {
    # sampling
    "KSampler": "KSampler",
    "KSamplerAdvanced": "KSampler (Advanced)",
    # loaders
    "CheckpointLoader": "Load Checkpoint With Config (DEPRECATED)",
    "CheckpointLoaderSimple": "Load Checkpoint",
    "unCLIPCheckpointLoader": "Load unCLIP Checkpoint",
    "VAELoader": "Load VAE",
    "LoraLoader": "Load LoRA",
    "LoraLoaderModelOnly": "Load LoRA (Model Only)",
    "CLIPLoader": "Load CLIP",
    "ControlNetLoader": "Load ControlNet Model",
    "DiffControlNetLoader": "Load ControlNet Model (diff)",
    "CLIPVisionLoader": "Load CLIP Vision",
    "UpscaleModelLoader": "Load Upscale Model",
    "UNETLoader": "Load Diffusion Model",
    "DualCLIPLoader": "DualCLIPLoader",
    "TripleCLIPLoader": "TripleCLIPLoader",
    "ImageOnlyCheckpointLoader": "Image Only Checkpoint Loader (img2vid model)",
    "IPAdapterModelLoader": "IPAdapter Model Loader",
    "IPAdapter": "IPAdapter",
    "IPAdapterAdvanced": "IPAdapter Advanced",
    "SaveAnimatedWEBP": "SaveAnimatedWEBP",
    "SaveAnimatedPNG": "SaveAnimatedPNG",
    # conditioning
    "CLIPVisionEncode": "CLIP Vision Encode",
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "CLIPSetLastLayer": "CLIP Set Last Layer",
    "ConditioningCombine": "Conditioning (Combine)",
    "ConditioningAverage": "Conditioning (Average)",
    "ConditioningConcat": "Conditioning (Concat)",
    "ConditioningSetArea": "Conditioning (Set Area)",
    "ConditioningSetAreaPercentage": "Conditioning (Set Area with Percentage)",
    "ControlNetApply": "Apply ControlNet (OLD)",
    "ControlNetApplyAdvanced": "Apply ControlNet",
    # latent
    "VAEEncodeForInpaint": "VAE Encode (for Inpainting)",
    "SetLatentNoiseMask": "Set Latent Noise Mask",
    "VAEDecode": "VAE Decode",
    "VAEEncode": "VAE Encode",
    "VAEDecodeTiled": "VAE Decode (Tiled)",
    "VAEEncodeTiled": "VAE Encode (Tiled)",
    "LatentCrop": "Crop Latent",
    "EmptyLatentImage": "Empty Latent Image",
    "LatentUpscale": "Upscale Latent",
    "LatentUpscaleBy": "Upscale Latent By",
    "LatentComposite": "Latent Composite",
    "LatentBlend": "Latent Blend",
    "RepeatLatentBatch": "Repeat Latent Batch",
    # image
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "LoadImage": "Load Image",
    "ImageScale": "Upscale Image",
    "ImageScaleBy": "Upscale Image By",
    "ImageUpscaleWithModel": "Upscale Image (using Model)",
    "ImageInvert": "Invert Image",
    "ImagePadForOutpaint": "Pad Image for Outpainting",
    "ImageBlend": "Image Blend",
    "ImageScaleToTotalPixels": "Scale Image to Total Pixels",
    "GetImageSize": "Get Image Size",
    # masks
    "ImageToMask": "Convert Image to Mask",
    "MaskToImage": "Convert Mask to Image",
    # logic
    "ComfySwitchNode": "Switch",
}


def _current(name: str) -> bool:
    return "DEPRECATED" not in name.upper()


def comfy_aliases() -> dict[str, list[str]]:
    """``{studio type: sorted ComfyUI class and display names that import to it}`` (the studio
    type's own name left out)."""
    found: dict[str, set[str]] = {}
    for comfy_type, rule in RULES.items():
        names = {comfy_type, COMFY_DISPLAY_NAMES.get(comfy_type, comfy_type)}
        for part in rule.parts:
            found.setdefault(part.type, set()).update(n for n in names if _current(n) and n != part.type)
    return {studio_type: sorted(names) for studio_type, names in found.items() if names}
