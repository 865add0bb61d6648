"""GLIGEN text-box grounding: load an adapter and put phrases in boxes on a prompt's conditioning.

ComfyUI's node and input names, so its workflows import: GLIGENLoader (a file in models/gligen) and
GLIGENTextBoxApply (a phrase and its box, in pixels, added to every entry of the conditioning; chain
them for more boxes, up to 30). The sampler (KSampler and custom sampling) installs the adapter on a
view of the UNet for the run and gives it the boxes (models/gligen.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.support import checkpoint_for, file_state, find_model, manager_of, model_fingerprint, model_input

#: ComfyUI's largest picture side.
MAX_RESOLUTION = 16384


@dataclass(frozen=True, eq=False)
class GligenHandle:
    """GLIGEN: an adapter in the model manager (``weights.get()`` gives its
    ``models.gligen.GligenWeights``), its manager key and its file name."""

    weights: Any
    key: Any
    name: str

    def cache_size(self) -> int:
        return 256


class GLIGENLoader(Node):
    display_name = "GLIGEN Loader"
    category = "loaders"
    description = (
        "Load a GLIGEN text-box adapter (gligen_sd14_textbox_pruned, the bundled toy-gligen, or a gated "
        "diffusers UNet) from models/gligen, to place phrases in boxes."
    )
    inputs = (
        model_input(
            "gligen_name", "gligen", "A GLIGEN .safetensors file (or diffusers folder) in models/gligen."
        ),
    )
    outputs = (Output("gligen", T.GLIGEN),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "gligen", inputs.get("gligen_name"))

    def run(self, ctx: Context, gligen_name: str) -> dict[str, Any]:
        from models.gligen import GligenError, load_gligen
        from models.safety import PickleRefused, UnsafeOrBrokenFile
        from models.values import ModuleRef

        path = find_model(ctx, "gligen", "gligen_name", gligen_name, what="the GLIGEN file")
        manager = manager_of(ctx)
        key = ("gligen", str(path.resolve()), file_state(path), str(manager.dtype))

        def load() -> Any:
            return load_gligen(path, manager.allow_pickle, manager.dtype)

        try:
            manager.get(key, load)
        except (GligenError, PickleRefused, UnsafeOrBrokenFile) as exc:
            raise NodeInputError("gligen_name", str(exc)) from None
        return {"gligen": GligenHandle(ModuleRef(key, manager, load), key, path.name)}


def _pixels(name: str, default: int, low: int, what: str) -> Input:
    return Input(name, T.INT, default=default, min=low, max=MAX_RESOLUTION, step=8, description=what)


class GLIGENTextBoxApply(Node):
    display_name = "GLIGEN Textbox Apply"
    category = "conditioning/gligen"
    description = (
        "Place a phrase in a box of the picture (GLIGEN): the sampler draws what the phrase says there. "
        "Chain several for several boxes."
    )
    inputs = (
        Input("conditioning_to", T.CONDITIONING, description="The prompt's conditioning, to carry the box."),
        Input("clip", T.CLIP, description="The text encoder that encodes the phrase (the model's own)."),
        Input("gligen_textbox_model", T.GLIGEN, description="A GLIGENLoader's adapter."),
        Input(
            "text", T.STRING, default="", multiline=True, description='What goes in the box ("a red circle").'
        ),
        _pixels("width", 64, 8, "The box's width in pixels."),
        _pixels("height", 64, 8, "The box's height in pixels."),
        _pixels("x", 0, 0, "The box's left edge in pixels."),
        _pixels("y", 0, 0, "The box's top edge in pixels."),
        Input(
            "beta",
            T.FLOAT,
            default=0.3,
            min=0.0,
            max=1.0,
            step=0.05,
            description="The share of the steps with the boxes on, from the first (GLIGEN's scheduled "
            "sampling; diffusers' default 0.3). ComfyUI keeps them on throughout: 1.0.",
        ),
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(
        self,
        ctx: Context,
        conditioning_to: Any,
        clip: Any,
        gligen_textbox_model: Any,
        text: str,
        width: int,
        height: int,
        x: int,
        y: int,
        beta: float,
    ) -> dict[str, Any]:
        from models.gligen import FAMILIES, GROUNDING, Box, GligenError, Grounding, encode_phrases

        handle = gligen_textbox_model
        if not isinstance(handle, GligenHandle):
            raise NodeInputError("gligen_textbox_model", "connect the output of a GLIGENLoader node")
        if not text.strip():
            raise NodeInputError("text", "is empty: say what goes in the box, such as 'a red circle'")
        checkpoint = checkpoint_for(clip, ctx)
        if checkpoint.family not in FAMILIES:
            raise NodeInputError(
                "clip",
                f"belongs to a {checkpoint.family} model: GLIGEN adapters exist for SD 1.x and 2.x (UNet) "
                "models only",
            )
        adapter = handle.weights.get()
        embedding = encode_phrases(
            checkpoint.tokenizers[0], checkpoint.text_encoders[0], [text], manager_of(ctx).device
        )[0]
        if int(embedding.shape[-1]) != adapter.phrase_width:
            raise NodeInputError(
                "clip",
                f"gives {embedding.shape[-1]}-wide phrase embeddings, {adapter.name} takes "
                f"{adapter.phrase_width} ({adapter.made_for}): use the text encoder of the model the "
                "adapter was made for",
            )
        box = Box(text, embedding, float(x), float(y), float(width), float(height))
        entries = []
        for cond in conditioning_to:
            grounding = cond.extra.get(GROUNDING)
            if grounding is None:
                grounding = Grounding(handle.weights.get, handle.key, handle.name)
            elif repr(grounding.adapter_key) != repr(handle.key):
                raise NodeInputError(
                    "gligen_textbox_model",
                    f"the conditioning already carries boxes for {grounding.adapter_name}; one prompt's "
                    f"boxes must all use one GLIGEN adapter (this is {handle.name})",
                )
            try:
                grounding = grounding.with_box(box, float(beta))
            except GligenError as exc:
                raise NodeInputError("conditioning_to", str(exc)) from None
            entries.append(cond.with_(extra={**cond.extra, GROUNDING: grounding}))
        return {"conditioning": tuple(entries)}


NODES = (GLIGENLoader, GLIGENTextBoxApply)
