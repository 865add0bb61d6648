"""IP-Adapter image prompts: load an adapter, and apply pictures to a MODEL through it.

ComfyUI_IPAdapter_plus's node and input names, so its workflows import: IPAdapterModelLoader,
IPAdapter (the simple one) and IPAdapterAdvanced. Each apply node adds an image prompt to the
MODEL (models/ip_adapter.py does the work while sampling); chain them for several adapters, or
several pictures with one adapter, and give one node a batch of pictures to prompt with all of
them. The CLIP vision model comes from the node's ``clip_vision`` input, or from the one bundled
with the adapter by IPAdapterModelLoader's ``clip_vision`` (ComfyUI's IPAdapterUnifiedLoader
bundles it the same way; the studio has no preset loader, since presets name files by pattern).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.support import checkpoint_for, file_state, find_model, manager_of, model_fingerprint, model_input

#: The weight curves the studio applies (ComfyUI_IPAdapter_plus's per-layer curves, such as
#: "ease in" or "style transfer", are not supported yet: the import says so).
WEIGHT_TYPES = ("linear",)
#: The simple node's names for them ("standard" is linear).
SIMPLE_WEIGHT_TYPES = ("standard",)
COMBINE_EMBEDS = ("concat", "add", "subtract", "average", "norm average")
EMBEDS_SCALINGS = ("V only", "K+V", "K+V w/ C penalty", "K+mean(V) w/ C penalty")
#: The model families IP-Adapters exist for (UNet models).
FAMILIES = ("sd1", "sd2", "sdxl")


@dataclass(frozen=True, eq=False)
class IPAdapterHandle:
    """IPADAPTER: an adapter in the model manager (``weights.get()`` gives its
    ``models.ip_adapter.IPAdapterWeights``), and the CLIP vision model bundled with it, if any."""

    weights: Any
    name: str
    clip_vision: Any = None

    def cache_size(self) -> int:
        return 256


class IPAdapterModelLoader(Node):
    display_name = "Load IPAdapter Model"
    category = "loaders"
    description = (
        "Load an IP-Adapter (ip-adapter_sd15, ip-adapter-plus_sd15, ip-adapter-plus-face_sd15, "
        "ip-adapter_sdxl_vit-h, ...) from models/ipadapter, to prompt with pictures."
    )
    inputs = (
        model_input("ipadapter_file", "ipadapter", "A .safetensors IP-Adapter in models/ipadapter."),
        Input(
            "clip_vision",
            T.CLIP_VISION,
            optional=True,
            description="The CLIP vision model the adapter was trained with (ViT-H/14 for most), "
            "so the IPAdapter nodes need none of their own.",
        ),
    )
    outputs = (Output("ipadapter", T.IPADAPTER),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "ipadapter", inputs.get("ipadapter_file"))

    def run(self, ctx: Context, ipadapter_file: str, clip_vision: Any) -> dict[str, Any]:
        from models.ip_adapter import IPAdapterError, load_ip_adapter
        from models.safety import PickleRefused, UnsafeOrBrokenFile
        from models.values import ModuleRef

        path = find_model(ctx, "ipadapter", "ipadapter_file", ipadapter_file, what="the IP-Adapter file")
        manager = manager_of(ctx)
        key = ("ipadapter", str(path.resolve()), file_state(path))

        def load() -> Any:
            return load_ip_adapter(path, manager.allow_pickle)

        try:
            manager.get(key, load)
        except (IPAdapterError, PickleRefused, UnsafeOrBrokenFile) as exc:
            raise NodeInputError("ipadapter_file", str(exc)) from None
        return {"ipadapter": IPAdapterHandle(ModuleRef(key, manager, load), path.name, clip_vision)}


def image_prompt_model(
    ctx: Context,
    model: Any,
    ipadapter: Any,
    image: np.ndarray,
    *,
    weight: float,
    start_at: float,
    end_at: float,
    combine_embeds: str = "concat",
    embeds_scaling: str = "V only",
    clip_vision: Any = None,
    image_negative: np.ndarray | None = None,
) -> Any:
    """``model`` with one more image prompt: the pictures encoded by the CLIP vision model, checked
    against the adapter and the model (errors name the input to change)."""
    from models.clip_vision import encode_blank, encode_images
    from models.ip_adapter import (
        ImagePrompt,
        IPAdapterError,
        check_features,
        check_fits,
        combine_features,
    )
    from nodes.image_inputs import as_image

    if not isinstance(ipadapter, IPAdapterHandle):
        raise NodeInputError("ipadapter", "connect the output of an IPAdapterModelLoader node")
    if end_at < start_at:
        raise NodeInputError(
            "end_at", f"is {end_at}, before start_at ({start_at}): the window would be empty"
        )
    vision = clip_vision if clip_vision is not None else ipadapter.clip_vision
    if vision is None:
        raise NodeInputError(
            "clip_vision",
            "no CLIP vision model: connect a CLIPVisionLoader (e.g. CLIP-ViT-H-14-laion2B-s32B-b79K"
            ".safetensors) here or to IPAdapterModelLoader's clip_vision",
        )
    checkpoint = checkpoint_for(model, ctx)
    family = checkpoint.family
    if family not in FAMILIES or not hasattr(checkpoint.unet, "_load_ip_adapter_weights"):
        raise NodeInputError(
            "model", f"is a {family} model: IP-Adapters work with SD 1.x and SDXL (UNet) models"
        )
    adapter = ipadapter.weights.get()
    try:
        check_fits(adapter, checkpoint.unet, family)
    except IPAdapterError as exc:
        raise NodeInputError("ipadapter", str(exc)) from None
    tower = vision.get()
    pictures = as_image("image", image)
    encoded = encode_images(tower, pictures, "center")
    positive = _features(encoded, adapter.uses_hidden_states)
    try:
        check_features(adapter, int(positive.shape[-1]))
    except IPAdapterError as exc:
        raise NodeInputError("clip_vision", str(exc)) from None
    if image_negative is not None:
        negative_pictures = as_image("image_negative", image_negative)
        negative = _features(encode_images(tower, negative_pictures, "center"), adapter.uses_hidden_states)
    elif adapter.uses_hidden_states:
        negative = _features(encode_blank(tower, positive.shape[0]), True)
    else:
        negative = positive.new_zeros(positive.shape)
    negative = _to_count(negative, positive.shape[0])
    combined = combine_features(positive, combine_embeds)
    if combined.shape[0] != positive.shape[0]:
        negative = negative[:1]  # ComfyUI_IPAdapter_plus keeps the first unconditional picture
    prompt = ImagePrompt(
        adapter=ipadapter.weights.get,
        positive=combined,
        negative=negative,
        weight=float(weight),
        start=float(start_at),
        end=float(end_at),
        scaling=embeds_scaling,
    )
    return model.with_(image_prompts=(*model.image_prompts, prompt))


def _features(encoded: Any, hidden_states: bool) -> Any:
    """What an adapter reads from a CLIP vision output: penultimate hidden states or image embeds."""
    return encoded.penultimate_hidden_states if hidden_states else encoded.image_embeds


def _to_count(features: Any, count: int) -> Any:
    """``features`` with ``count`` rows: cut, or the last one repeated (as ComfyUI_IPAdapter_plus)."""
    import torch

    if features.shape[0] >= count:
        return features[:count]
    extra = features[-1:].repeat(count - features.shape[0], *([1] * (features.dim() - 1)))
    return torch.cat([features, extra])


WEIGHT = Input(
    "weight",
    T.FLOAT,
    default=1.0,
    min=-1.0,
    max=5.0,
    step=0.05,
    description="How much the pictures count (the image attention's scale); 0 turns the adapter off.",
)
START_AT = Input(
    "start_at",
    T.FLOAT,
    default=0.0,
    min=0.0,
    max=1.0,
    step=0.001,
    description="Where in the steps (a fraction) the pictures start to count.",
)
END_AT = Input(
    "end_at",
    T.FLOAT,
    default=1.0,
    min=0.0,
    max=1.0,
    step=0.001,
    description="Where in the steps (a fraction) they stop counting.",
)
CLIP_VISION = Input(
    "clip_vision",
    T.CLIP_VISION,
    optional=True,
    description="The CLIP vision model to encode the pictures with (else the one bundled with the adapter).",
)


class IPAdapter(Node):
    display_name = "IPAdapter"
    category = "conditioning/ipadapter"
    description = "Prompt with pictures: the model draws what the pictures show, beside the text prompt."
    inputs = (
        Input("model", T.MODEL),
        Input("ipadapter", T.IPADAPTER),
        Input("image", T.IMAGE, description="One picture, or a batch: all of them prompt together."),
        WEIGHT,
        START_AT,
        END_AT,
        Input(
            "weight_type",
            T.STRING,
            default="standard",
            choices=SIMPLE_WEIGHT_TYPES,
            description="standard: the same weight in every layer.",
        ),
        CLIP_VISION,
    )
    outputs = (Output("model", T.MODEL),)

    def run(
        self,
        ctx: Context,
        model: Any,
        ipadapter: Any,
        image: np.ndarray,
        weight: float,
        start_at: float,
        end_at: float,
        weight_type: str,
        clip_vision: Any,
    ) -> dict[str, Any]:
        prompted = image_prompt_model(
            ctx,
            model,
            ipadapter,
            image,
            weight=weight,
            start_at=start_at,
            end_at=end_at,
            clip_vision=clip_vision,
        )
        return {"model": prompted}


class IPAdapterAdvanced(Node):
    display_name = "IPAdapter Advanced"
    category = "conditioning/ipadapter"
    description = (
        "Prompt with pictures, with a negative picture, how several pictures combine and how the "
        "image attention is scaled."
    )
    inputs = (
        Input("model", T.MODEL),
        Input("ipadapter", T.IPADAPTER),
        Input("image", T.IMAGE, description="One picture, or a batch (see combine_embeds)."),
        WEIGHT,
        Input(
            "weight_type",
            T.STRING,
            default="linear",
            choices=WEIGHT_TYPES,
            description="linear: the same weight in every layer.",
        ),
        Input(
            "combine_embeds",
            T.STRING,
            default="concat",
            choices=COMBINE_EMBEDS,
            description="How a batch of pictures joins: concat attends to all of them side by side; "
            "add, subtract (the first minus the mean of the others), average and norm average merge "
            "their CLIP features first.",
        ),
        START_AT,
        END_AT,
        Input(
            "embeds_scaling",
            T.STRING,
            default="V only",
            choices=EMBEDS_SCALINGS,
            description="V only scales the image attention's output (the paper's rule); K+V scales its "
            "keys and values, the C penalty variants less in narrow layers.",
        ),
        Input(
            "image_negative",
            T.IMAGE,
            optional=True,
            description="A picture to steer away from (else a blank one, as diffusers does).",
        ),
        CLIP_VISION,
    )
    outputs = (Output("model", T.MODEL),)

    def run(
        self,
        ctx: Context,
        model: Any,
        ipadapter: Any,
        image: np.ndarray,
        weight: float,
        weight_type: str,
        combine_embeds: str,
        start_at: float,
        end_at: float,
        embeds_scaling: str,
        image_negative: np.ndarray | None,
        clip_vision: Any,
    ) -> dict[str, Any]:
        prompted = image_prompt_model(
            ctx,
            model,
            ipadapter,
            image,
            weight=weight,
            start_at=start_at,
            end_at=end_at,
            combine_embeds=combine_embeds,
            embeds_scaling=embeds_scaling,
            clip_vision=clip_vision,
            image_negative=image_negative,
        )
        return {"model": prompted}


NODES = (IPAdapterModelLoader, IPAdapter, IPAdapterAdvanced)
