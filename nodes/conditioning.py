"""Conditioning nodes ComfyUI users rely on: clip skip, SDXL's size-aware prompts, areas,
average and concat, and text encoder files.

Names and inputs follow ComfyUI's, so imported workflows keep their meaning. torch is
imported inside ``run`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.support import (
    embeddings_fingerprint,
    file_state,
    find_model,
    manager_of,
    model_fingerprint,
    model_input,
    prompt_encoders,
)

#: Largest size in pixels ComfyUI's size inputs take.
MAX_RESOLUTION = 16384
STRENGTH = Input(
    "strength",
    T.FLOAT,
    default=1.0,
    min=0.0,
    max=10.0,
    step=0.01,
    description="How much this conditioning counts where it applies, against the others.",
)


class CLIPSetLastLayer(Node):
    category = "conditioning"
    description = (
        "Clip skip: take the prompt's meaning from an earlier layer of the text encoder. -1 is the "
        "last layer, -2 the one before (what 'clip skip 2' means in other tools; many anime "
        "models want it). Prompts encoded with the CLIP this gives use that layer."
    )
    inputs = (
        Input("clip", T.CLIP),
        Input(
            "stop_at_clip_layer",
            T.INT,
            default=-1,
            min=-24,
            max=-1,
            step=1,
            description="-1 the last layer, -2 the penultimate, ...",
        ),
    )
    outputs = (Output("clip", T.CLIP),)

    def run(self, ctx: Context, clip: Any, stop_at_clip_layer: int) -> dict[str, Any]:
        from models.prompts import LayerError, check_layer

        checkpoint = clip.checkpoint.get()
        try:
            check_layer(checkpoint.family, stop_at_clip_layer, checkpoint.text_encoders)
        except LayerError as exc:
            raise NodeInputError("stop_at_clip_layer", str(exc)) from None
        return {"clip": clip.with_(layer=int(stop_at_clip_layer))}


def _size(name: str, default: int, description: str = "") -> Input:
    return Input(name, T.INT, default=default, min=0, max=MAX_RESOLUTION, step=1, description=description)


class CLIPTextEncodeSDXL(Node):
    category = "conditioning"
    description = (
        "An SDXL prompt with SDXL's size hints: text_l goes to the CLIP-L encoder, text_g to "
        "CLIP-G (usually the same text), and the model is told the picture's original size, the "
        "crop's top-left corner and the target size (1024, 0, 1024 look like a clean full picture)."
    )
    inputs = (
        Input("clip", T.CLIP),
        _size("width", 1024, "Original width the model should imagine the picture had."),
        _size("height", 1024, "Original height."),
        _size("crop_w", 0, "Left edge of the crop, in pixels (0: not cropped)."),
        _size("crop_h", 0, "Top edge of the crop, in pixels (0: not cropped)."),
        _size("target_width", 1024, "Width of the picture being made."),
        _size("target_height", 1024, "Height of the picture being made."),
        Input("text_g", T.STRING, default="", multiline=True, description="For the CLIP-G encoder."),
        Input("text_l", T.STRING, default="", multiline=True, description="For the CLIP-L encoder."),
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return embeddings_fingerprint(inputs, ("text_g", "text_l"), settings)

    def run(
        self,
        ctx: Context,
        clip: Any,
        width: int,
        height: int,
        crop_w: int,
        crop_h: int,
        target_width: int,
        target_height: int,
        text_g: str,
        text_l: str,
    ) -> dict[str, Any]:
        from models.conditioning import SizeConditioning

        size = SizeConditioning(
            width=width,
            height=height,
            crop_left=crop_w,
            crop_top=crop_h,
            target_width=target_width,
            target_height=target_height,
        )
        return {"conditioning": (_encode_sdxl(ctx, clip, text_l, text_g, size),)}


class CLIPTextEncodeSDXLRefiner(Node):
    category = "conditioning"
    description = (
        "A prompt for an SDXL refiner, with its aesthetic score (about 6 for the positive prompt, "
        "2.5 for the negative) and the picture's original size."
    )
    inputs = (
        Input("clip", T.CLIP),
        Input("ascore", T.FLOAT, default=6.0, min=0.0, max=1000.0, step=0.01, description="Aesthetic score."),
        _size("width", 1024, "Original width."),
        _size("height", 1024, "Original height."),
        Input("text", T.STRING, default="", multiline=True),
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return embeddings_fingerprint(inputs, ("text",), settings)

    def run(
        self, ctx: Context, clip: Any, ascore: float, width: int, height: int, text: str
    ) -> dict[str, Any]:
        from models.conditioning import SizeConditioning

        size = SizeConditioning(width=width, height=height, aesthetic_score=float(ascore))
        return {"conditioning": (_encode_sdxl(ctx, clip, text, text, size),)}


def _encode_sdxl(ctx: Context, clip: Any, text_l: str, text_g: str, size: Any) -> Any:
    """One SDXL conditioning: CLIP-L gets ``text_l``, CLIP-G ``text_g`` (a refiner has only G)."""
    from models.prompts import LayerError, encode_texts
    from models.values import Cond

    checkpoint, tokenizers, encoders, texts = prompt_encoders(ctx, clip, [text_l, text_g], "text_g")
    if checkpoint.family != "sdxl":
        raise NodeInputError(
            "clip", f"is a {checkpoint.family} text encoder; SDXL prompts need an SDXL checkpoint's CLIP"
        )
    per_encoder = texts if len(encoders) == 2 else texts[1:]  # a refiner: CLIP-G only
    try:
        embeds, pooled = encode_texts(
            "sdxl", tokenizers, encoders, per_encoder, layer=clip.layer, device=manager_of(ctx).device
        )
    except LayerError as exc:
        raise NodeInputError("clip", f"its stop_at_clip_layer {exc}") from None
    return Cond(embeds, pooled=pooled, size=size)


_AREA_NOTE = (
    " Each conditioning's prediction is made for the whole picture and weighted by its area and "
    "strength (ComfyUI predicts on the cropped area instead), so areas blend with no seams."
)


class ConditioningSetArea(Node):
    display_name = "Conditioning (Set Area)"
    category = "conditioning"
    description = (
        "Limit a prompt to a box given in pixels, e.g. 'a cat' in the left half; combine it with a "
        "prompt for the whole picture. The box snaps down to the latent grid (8 pixels for most "
        "models, 4 for the toy one); a box partly outside is cut to the "
        "picture; one entirely outside is an error when sampling." + _AREA_NOTE
    )
    inputs = (
        Input("conditioning", T.CONDITIONING),
        Input("width", T.INT, default=64, min=64, max=MAX_RESOLUTION, step=8),
        Input("height", T.INT, default=64, min=64, max=MAX_RESOLUTION, step=8),
        Input("x", T.INT, default=0, min=0, max=MAX_RESOLUTION, step=8, description="Left edge in pixels."),
        Input("y", T.INT, default=0, min=0, max=MAX_RESOLUTION, step=8, description="Top edge in pixels."),
        STRENGTH,
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(
        self, ctx: Context, conditioning: Any, width: int, height: int, x: int, y: int, strength: float
    ) -> dict[str, Any]:
        from models.conditioning import Area

        area = Area("pixels", x, y, width, height)
        return {"conditioning": tuple(c.with_(area=area, strength=strength) for c in conditioning)}


def _fraction(name: str, default: float, description: str) -> Input:
    return Input(name, T.FLOAT, default=default, min=0.0, max=1.0, step=0.01, description=description)


class ConditioningSetAreaPercentage(Node):
    display_name = "Conditioning (Set Area with Percentage)"
    category = "conditioning"
    description = (
        "Limit a prompt to a box given as fractions of the picture (0.5 = half), so it fits any "
        "size; combine it with a prompt for the whole picture." + _AREA_NOTE
    )
    inputs = (
        Input("conditioning", T.CONDITIONING),
        _fraction("width", 1.0, "Width of the box, as a fraction of the picture's."),
        _fraction("height", 1.0, "Height of the box, as a fraction of the picture's."),
        _fraction("x", 0.0, "Left edge, as a fraction of the width."),
        _fraction("y", 0.0, "Top edge, as a fraction of the height."),
        STRENGTH,
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(
        self,
        ctx: Context,
        conditioning: Any,
        width: float,
        height: float,
        x: float,
        y: float,
        strength: float,
    ) -> dict[str, Any]:
        from models.conditioning import Area

        area = Area("fraction", x, y, width, height)
        return {"conditioning": tuple(c.with_(area=area, strength=strength) for c in conditioning)}


class ConditioningSetAreaStrength(Node):
    display_name = "Conditioning (Set Area Strength)"
    category = "conditioning"
    description = "Change how much a conditioning counts against the others it is combined with."
    inputs = (Input("conditioning", T.CONDITIONING), STRENGTH)
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(self, ctx: Context, conditioning: Any, strength: float) -> dict[str, Any]:
        return {"conditioning": tuple(c.with_(strength=strength) for c in conditioning)}


def _first(conditioning: Any, input_name: str) -> Any:
    if not conditioning:
        raise NodeInputError(input_name, "is empty; connect a prompt's conditioning")
    return conditioning[0]


def _check_widths(to: Any, source: Any) -> None:
    from models.conditioning import check_widths

    for cond in to:
        problem = check_widths(cond.embeds, source.embeds)
        if problem:
            raise NodeInputError("conditioning_from", problem)


class ConditioningAverage(Node):
    display_name = "Conditioning (Average)"
    category = "conditioning"
    description = (
        "Blend two prompts: conditioning_to_strength 1 keeps conditioning_to, 0 gives "
        "conditioning_from (its first prompt), between mixes their token vectors (and SDXL's "
        "pooled vectors) in proportion."
    )
    inputs = (
        Input("conditioning_to", T.CONDITIONING),
        Input("conditioning_from", T.CONDITIONING),
        Input("conditioning_to_strength", T.FLOAT, default=1.0, min=0.0, max=1.0, step=0.01),
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(
        self, ctx: Context, conditioning_to: Any, conditioning_from: Any, conditioning_to_strength: float
    ) -> dict[str, Any]:
        from models.conditioning import average

        source = _first(conditioning_from, "conditioning_from")
        _check_widths(conditioning_to, source)
        strength = float(conditioning_to_strength)
        return {"conditioning": tuple(average(c, source, strength) for c in conditioning_to)}


class ConditioningConcat(Node):
    display_name = "Conditioning (Concat)"
    category = "conditioning"
    description = (
        "Join two prompts into one sequence: the tokens of conditioning_from (its first prompt) "
        "are appended to each of conditioning_to's, so both are attended to at once."
    )
    inputs = (Input("conditioning_to", T.CONDITIONING), Input("conditioning_from", T.CONDITIONING))
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(self, ctx: Context, conditioning_to: Any, conditioning_from: Any) -> dict[str, Any]:
        from models.conditioning import concat

        source = _first(conditioning_from, "conditioning_from")
        _check_widths(conditioning_to, source)
        return {"conditioning": tuple(concat(c, source) for c in conditioning_to)}


#: CLIPLoader's types (ComfyUI's names) the studio loads.
CLIP_TYPES = ("stable_diffusion", "sd3")


class CLIPLoader(Node):
    display_name = "Load CLIP"
    category = "loaders"
    description = (
        "Load a CLIP-L text encoder file (SD 1.x) from models/text_encoders or models/clip, to "
        "encode prompts with it instead of a checkpoint's own; type sd3 takes one of SD3's encoders "
        "(CLIP-L, CLIP-G or T5-XXL; the missing ones give zeros)."
    )
    inputs = (
        model_input(
            "clip_name",
            "text_encoders",
            "A .safetensors text encoder (transformers keys, with or without 'text_model.').",
        ),
        Input(
            "type",
            T.STRING,
            default="stable_diffusion",
            choices=CLIP_TYPES,
            accepts="constant",
            description="Which model family the encoder belongs to.",
        ),
    )
    outputs = (Output("clip", T.CLIP),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "text_encoders", inputs.get("clip_name"))

    def run(self, ctx: Context, clip_name: str, type: str) -> dict[str, Any]:  # noqa: A002 - ComfyUI's name
        from models.loading import CheckpointError
        from models.safety import PickleRefused, UnsafeOrBrokenFile
        from models.text_encoders import TYPES, load_text_encoder
        from models.values import CheckpointRef, ClipRef

        path = find_model(ctx, "text_encoders", "clip_name", clip_name, "models/text_encoders or models/clip")
        manager = manager_of(ctx)
        key = ("text_encoder", str(path.resolve()), file_state(path), type)

        def load() -> Any:
            return load_text_encoder(
                path, type, device=manager.device, dtype=manager.dtype, allow_pickle=manager.allow_pickle
            )

        try:
            manager.get(key, load)
        except (CheckpointError, PickleRefused, UnsafeOrBrokenFile) as exc:
            raise NodeInputError("clip_name", str(exc)) from None
        return {"clip": ClipRef(CheckpointRef(key, manager, load, TYPES[type]))}


class ConditioningZeroOut(Node):
    category = "conditioning"
    description = (
        "Zero a conditioning's text embeddings (and SDXL's pooled one), keeping the rest: the empty "
        "prompt SDXL revision workflows pair with a picture's embedding."
    )
    inputs = (Input("conditioning", T.CONDITIONING),)
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(self, ctx: Context, conditioning: Any) -> dict[str, Any]:
        import torch

        out = []
        for cond in conditioning:
            pooled = torch.zeros_like(cond.pooled) if cond.pooled is not None else None
            out.append(cond.with_(embeds=torch.zeros_like(cond.embeds), pooled=pooled))
        return {"conditioning": tuple(out)}


class ConditioningSetTimestepRange(Node):
    category = "conditioning"
    description = (
        "Let a conditioning act only in part of sampling: from start to end, as fractions of the "
        "way from pure noise (0) to the finished picture (1). Two prompts with ranges 0-0.5 and "
        "0.5-1 give the first one the composition and the second the details."
    )
    inputs = (
        Input("conditioning", T.CONDITIONING),
        Input("start", T.FLOAT, default=0.0, min=0.0, max=1.0, step=0.001),
        Input("end", T.FLOAT, default=1.0, min=0.0, max=1.0, step=0.001),
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(self, ctx: Context, conditioning: Any, start: float, end: float) -> dict[str, Any]:
        # As ComfyUI, start after end is allowed: the conditioning then never acts.
        window = (float(start), float(end))
        return {"conditioning": tuple(cond.with_(timestep_range=window) for cond in conditioning)}


NODES = (
    CLIPSetLastLayer,
    CLIPTextEncodeSDXL,
    CLIPTextEncodeSDXLRefiner,
    ConditioningSetArea,
    ConditioningSetAreaPercentage,
    ConditioningSetAreaStrength,
    ConditioningAverage,
    ConditioningConcat,
    CLIPLoader,
    ConditioningZeroOut,
    ConditioningSetTimestepRange,
)
