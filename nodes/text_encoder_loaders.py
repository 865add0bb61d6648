"""Text encoder loaders for the models with several encoders: DualCLIPLoader (SDXL, SD3, Flux)
and TripleCLIPLoader (SD3 / SD3.5), as ComfyUI users keep the files in models/text_encoders or
models/clip: ``clip_l.safetensors``, ``clip_g.safetensors``, ``t5xxl_fp16.safetensors`` /
``t5xxl_fp8_e4m3fn.safetensors``.

Which file is which encoder is read from the weights (T5 by its keys, the CLIPs by width), so the
order of the inputs does not matter. The CLIP they give holds the encoders in the family's order
(SD3: CLIP-L, CLIP-G, T5; Flux: CLIP-L, T5; SDXL: CLIP-L, CLIP-G) with each one's role in the
checkpoint's ``extra["encoders"]`` (models/text_encoders.py). torch is imported inside ``run`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.support import file_state, find_model, manager_of, model_fingerprint, model_input

WHERE = "models/text_encoders or models/clip"
#: DualCLIPLoader's types (ComfyUI's names) the studio loads, each its model family.
DUAL_TYPES = ("sdxl", "sd3", "flux")


def _encoder_input(name: str) -> Input:
    return model_input(
        name, "text_encoders", "A CLIP-L, CLIP-G or T5-XXL text encoder file (.safetensors, fp16 or fp8)."
    )


def _load(ctx: Context, names: Mapping[str, str], family: str) -> dict[str, Any]:
    """The CLIP of the encoder files ``names`` (input name -> file name) for ``family``."""
    from models.loading import CheckpointError
    from models.safety import PickleRefused, UnsafeOrBrokenFile
    from models.text_encoders import load_encoder_files
    from models.values import CheckpointRef, ClipRef

    paths = {key: find_model(ctx, "text_encoders", key, value, WHERE) for key, value in names.items()}
    manager = manager_of(ctx)
    key = ("text_encoders", family, tuple((str(p.resolve()), file_state(p)) for p in paths.values()))

    def load() -> Any:
        return load_encoder_files(
            list(paths.values()),
            family,
            device=manager.device,
            dtype=manager.dtype,
            allow_pickle=manager.allow_pickle,
        )

    try:
        manager.get(key, load)
    except (CheckpointError, PickleRefused, UnsafeOrBrokenFile) as exc:
        message = str(exc)
        culprit = next((k for k, v in names.items() if v in message), next(iter(names)))
        raise NodeInputError(culprit, message) from None
    return {"clip": ClipRef(CheckpointRef(key, manager, load, family))}


class DualCLIPLoader(Node):
    display_name = "DualCLIPLoader"
    category = "advanced/loaders"
    description = (
        "Load two text encoder files as one CLIP: Flux (clip_l + t5xxl), SD3 (two of clip_l, clip_g, "
        "t5xxl: the missing one gives zeros) or SDXL (clip_l + clip_g). Which file is which is read "
        "from the weights."
    )
    inputs = (
        _encoder_input("clip_name1"),
        _encoder_input("clip_name2"),
        Input(
            "type",
            T.STRING,
            default="sdxl",
            choices=DUAL_TYPES,
            accepts="constant",
            description="The model family the encoders belong to.",
        ),
    )
    outputs = (Output("clip", T.CLIP),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return "|".join(
            model_fingerprint(settings, "text_encoders", inputs.get(n)) for n in ("clip_name1", "clip_name2")
        )

    def run(self, ctx: Context, clip_name1: str, clip_name2: str, type: str) -> dict[str, Any]:  # noqa: A002
        return _load(ctx, {"clip_name1": clip_name1, "clip_name2": clip_name2}, type)


class TripleCLIPLoader(Node):
    display_name = "TripleCLIPLoader"
    category = "advanced/loaders"
    description = (
        "Load SD3 / SD3.5's three text encoders (clip_l, clip_g, t5xxl files, in any order) as one CLIP."
    )
    inputs = (_encoder_input("clip_name1"), _encoder_input("clip_name2"), _encoder_input("clip_name3"))
    outputs = (Output("clip", T.CLIP),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        names = ("clip_name1", "clip_name2", "clip_name3")
        return "|".join(model_fingerprint(settings, "text_encoders", inputs.get(n)) for n in names)

    def run(self, ctx: Context, clip_name1: str, clip_name2: str, clip_name3: str) -> dict[str, Any]:
        names = {"clip_name1": clip_name1, "clip_name2": clip_name2, "clip_name3": clip_name3}
        return _load(ctx, names, "sd3")


NODES = (DualCLIPLoader, TripleCLIPLoader)
