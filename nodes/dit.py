"""Nodes of the DiT families, SD3 / SD3.5 and Flux.1, by ComfyUI's names and inputs.

The models load through Load Checkpoint (and the loaders of separate transformer and text
encoder files) and sample through the ordinary KSampler: these nodes add what the families
need on top: their latents, prompts with one text per encoder, the shift of their noise
schedule, Flux's embedded guidance and SD3.5's skip-layer guidance.

torch is imported inside ``run`` only, so listing nodes stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.support import embeddings_fingerprint, empty_latent, manager_of, prompt_encoders

#: Largest size in pixels ComfyUI's size inputs take.
MAX_RESOLUTION = 16384
GUIDANCE = Input(
    "guidance",
    T.FLOAT,
    default=3.5,
    min=0.0,
    max=100.0,
    step=0.1,
    description="Flux dev's embedded guidance: how closely to follow the prompt (3.5 is usual; "
    "schnell ignores it).",
)


def _encode(ctx: Context, clip: Any, family: str, texts: dict[str, str | None], input_name: str) -> Any:
    """One conditioning from ``clip`` (which must be of ``family``) with a text per encoder role;
    a None text leaves that encoder out."""
    from models.dit_prompts import PromptError, encoder_roles
    from models.prompts import LayerError, encode_texts
    from models.values import Cond

    given = [text if text is not None else "" for text in texts.values()]
    checkpoint, tokenizers, encoders, expanded = prompt_encoders(ctx, clip, given, input_name)
    if checkpoint.family != family:
        wanted = {"sd3": "an SD3 / SD3.5", "flux": "a Flux"}[family]
        raise NodeInputError(
            "clip", f"is a {checkpoint.family} text encoder; this node needs {wanted} CLIP (its own loader's)"
        )
    by_role = {
        role: (expanded[index] if text is not None else None)
        for index, (role, text) in enumerate(texts.items())
    }
    try:
        roles = encoder_roles(family, encoders, checkpoint.extra.get("encoders"))
        per_encoder = [by_role.get(role, "") for role in roles]
        embeds, pooled = encode_texts(
            family,
            tokenizers,
            encoders,
            per_encoder,
            layer=clip.layer,
            device=manager_of(ctx).device,
            roles=roles,
        )
    except LayerError as exc:
        raise NodeInputError("clip", f"its stop_at_clip_layer {exc}") from None
    except PromptError as exc:
        raise NodeInputError("clip", str(exc)) from None
    return Cond(embeds, pooled=pooled)


class EmptySD3LatentImage(Node):
    display_name = "EmptySD3LatentImage"
    category = "latent/sd3"
    description = (
        "A blank latent for SD3 / SD3.5 and Flux: 16 channels at 1/8 of the size in pixels. Connect the "
        "VAE to size it for a VAE with other channels or scale."
    )
    inputs = (
        Input("width", T.INT, default=1024, min=16, max=MAX_RESOLUTION, step=16),
        Input("height", T.INT, default=1024, min=16, max=MAX_RESOLUTION, step=16),
        Input("batch_size", T.INT, default=1, min=1, max=64),
        Input("vae", T.VAE, optional=True, description="Take channels and scale from this VAE."),
    )
    outputs = (Output("latent", T.LATENT),)

    def run(self, ctx: Context, width: int, height: int, batch_size: int, vae: Any) -> dict[str, Any]:
        return {"latent": empty_latent(width, height, batch_size, vae, channels=16)}


class ModelSamplingSD3(Node):
    display_name = "ModelSamplingSD3"
    category = "advanced/model"
    description = (
        "Set the shift of a flow model's noise schedule: higher spends more steps at high noise "
        "(composition), lower more on detail. SD3 / SD3.5 use 3.0."
    )
    inputs = (
        Input("model", T.MODEL),
        Input("shift", T.FLOAT, default=3.0, min=0.0, max=100.0, step=0.01),
    )
    outputs = (Output("model", T.MODEL),)

    def run(self, ctx: Context, model: Any, shift: float) -> dict[str, Any]:
        overrides = dict(model.sampling)
        overrides.update(shift=float(shift), use_dynamic_shifting=False)
        return {"model": model.with_(sampling=tuple(overrides.items()))}


class ModelSamplingFlux(Node):
    display_name = "ModelSamplingFlux"
    category = "advanced/model"
    description = (
        "Fix Flux's resolution-dependent shift for a picture of width x height: base_shift at 256 "
        "image tokens rising to max_shift at 4096 (by default the shift follows the latent's size)."
    )
    inputs = (
        Input("model", T.MODEL),
        Input("max_shift", T.FLOAT, default=1.15, min=0.0, max=100.0, step=0.01),
        Input("base_shift", T.FLOAT, default=0.5, min=0.0, max=100.0, step=0.01),
        Input("width", T.INT, default=1024, min=16, max=MAX_RESOLUTION, step=8),
        Input("height", T.INT, default=1024, min=16, max=MAX_RESOLUTION, step=8),
    )
    outputs = (Output("model", T.MODEL),)

    def run(
        self, ctx: Context, model: Any, max_shift: float, base_shift: float, width: int, height: int
    ) -> dict[str, Any]:
        from models.flow_sampling import flux_shift

        overrides = dict(model.sampling)
        shift = flux_shift(width, height, float(base_shift), float(max_shift))
        overrides.update(shift=shift, use_dynamic_shifting=False)
        return {"model": model.with_(sampling=tuple(overrides.items()))}


class FluxGuidance(Node):
    display_name = "FluxGuidance"
    category = "advanced/conditioning/flux"
    description = (
        "Set Flux dev's embedded guidance on a conditioning (3.5 is usual; keep the sampler's cfg at 1)."
    )
    inputs = (Input("conditioning", T.CONDITIONING), GUIDANCE)
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(self, ctx: Context, conditioning: Any, guidance: float) -> dict[str, Any]:
        return {
            "conditioning": tuple(
                c.with_(extra={**c.extra, "guidance": float(guidance)}) for c in conditioning
            )
        }


class CLIPTextEncodeSD3(Node):
    display_name = "CLIPTextEncodeSD3"
    category = "advanced/conditioning"
    description = (
        "An SD3 / SD3.5 prompt with a text for each encoder: CLIP-L, CLIP-G and T5-XXL (usually the "
        "same text). empty_padding 'none' leaves an encoder with an empty text out (zeros), as "
        "ComfyUI does; 'empty_prompt' encodes the empty text."
    )
    inputs = (
        Input("clip", T.CLIP),
        Input("clip_l", T.STRING, default="", multiline=True),
        Input("clip_g", T.STRING, default="", multiline=True),
        Input("t5xxl", T.STRING, default="", multiline=True),
        Input("empty_padding", T.STRING, default="none", choices=("none", "empty_prompt")),
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return embeddings_fingerprint(inputs, ("clip_l", "clip_g", "t5xxl"), settings)

    def run(
        self, ctx: Context, clip: Any, clip_l: str, clip_g: str, t5xxl: str, empty_padding: str
    ) -> dict[str, Any]:
        texts = {"clip_l": clip_l, "clip_g": clip_g, "t5": t5xxl}
        if empty_padding == "none":
            texts = {role: (text if text else None) for role, text in texts.items()}
        return {"conditioning": (_encode(ctx, clip, "sd3", texts, "clip_l"),)}


class CLIPTextEncodeFlux(Node):
    display_name = "CLIPTextEncodeFlux"
    category = "advanced/conditioning/flux"
    description = (
        "A Flux prompt: clip_l feeds the CLIP-L encoder (its pooled vector), t5xxl the T5 encoder (the "
        "tokens the model reads), with the embedded guidance."
    )
    inputs = (
        Input("clip", T.CLIP),
        Input("clip_l", T.STRING, default="", multiline=True),
        Input("t5xxl", T.STRING, default="", multiline=True),
        GUIDANCE,
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return embeddings_fingerprint(inputs, ("clip_l", "t5xxl"), settings)

    def run(self, ctx: Context, clip: Any, clip_l: str, t5xxl: str, guidance: float) -> dict[str, Any]:
        cond = _encode(ctx, clip, "flux", {"clip_l": clip_l, "t5": t5xxl}, "clip_l")
        return {"conditioning": (cond.with_(extra={**cond.extra, "guidance": float(guidance)}),)}


def parse_layers(text: str) -> tuple[int, ...]:
    """ "7, 8, 9" -> (7, 8, 9); a NodeInputError on "layers" for anything else."""
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    try:
        layers = tuple(int(part) for part in parts)
    except ValueError:
        raise NodeInputError("layers", f"{text!r} is not a list of layer numbers like '7, 8, 9'") from None
    if not layers:
        raise NodeInputError("layers", "name at least one layer, e.g. '7, 8, 9'")
    if any(layer < 0 for layer in layers):
        raise NodeInputError("layers", "layer numbers start at 0")
    return layers


class SkipLayerGuidanceSD3(Node):
    display_name = "SkipLayerGuidanceSD3"
    category = "advanced/guidance"
    description = (
        "SD3.5's skip-layer guidance (diffusers' skip_guidance_layers): early in sampling, push the "
        "picture away from what the model makes without some of its layers, for cleaner anatomy "
        "and structure. SD3.5 Medium uses layers 7, 8, 9. Needs cfg above 1."
    )
    inputs = (
        Input("model", T.MODEL),
        Input("layers", T.STRING, default="7, 8, 9", description="Transformer blocks to skip, from 0."),
        Input("scale", T.FLOAT, default=3.0, min=0.0, max=10.0, step=0.1),
        Input(
            "start_percent",
            T.FLOAT,
            default=0.01,
            min=0.0,
            max=1.0,
            step=0.001,
            description="Start after this fraction of the steps.",
        ),
        Input(
            "end_percent",
            T.FLOAT,
            default=0.15,
            min=0.0,
            max=1.0,
            step=0.001,
            description="Stop before this fraction of the steps.",
        ),
    )
    outputs = (Output("model", T.MODEL),)

    def run(
        self,
        ctx: Context,
        model: Any,
        layers: str,
        scale: float,
        start_percent: float,
        end_percent: float,
    ) -> dict[str, Any]:
        from models.flow_sampling import SkipLayers

        if end_percent < start_percent:
            raise NodeInputError("end_percent", "must not be below start_percent")
        skip = SkipLayers(parse_layers(layers), float(scale), float(start_percent), float(end_percent))
        return {"model": model.with_(skip_layers=skip)}


NODES = (
    EmptySD3LatentImage,
    ModelSamplingSD3,
    ModelSamplingFlux,
    FluxGuidance,
    CLIPTextEncodeSD3,
    CLIPTextEncodeFlux,
    SkipLayerGuidanceSD3,
)
