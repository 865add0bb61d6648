"""Image conditioning through CLIP vision: load a CLIP vision tower, encode pictures with it, and
condition SD 2.x unCLIP and SDXL ("revision") models on the image embeddings.

ComfyUI's node and input names throughout (the studio has no nodes of its own for these):
CLIPVisionLoader, CLIPVisionEncode, unCLIPConditioning and unCLIPCheckpointLoader (SDXL revision's
usual partner, ConditioningZeroOut, is in nodes/conditioning.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.image_inputs import as_image
from nodes.support import file_state, find_model, manager_of, model_fingerprint, model_input


def _vision_ref(ctx: Context, path: Path, input_name: str, inside_checkpoint: bool = False) -> Any:
    """A CLIP_VISION handle on ``path`` in the run's model manager (loaded now, so errors show here);
    ``inside_checkpoint``: the image encoder inside a single-file unCLIP checkpoint."""
    from models.clip_vision import ClipVisionError, load_clip_vision, load_unclip_file_vision
    from models.safety import PickleRefused, UnsafeOrBrokenFile
    from models.values import ModuleRef

    manager = manager_of(ctx)
    key = ("clip_vision", str(path.resolve()), file_state(path), inside_checkpoint)
    loader = load_unclip_file_vision if inside_checkpoint else load_clip_vision

    def load() -> Any:
        return loader(path, device=manager.device, dtype=manager.dtype, allow_pickle=manager.allow_pickle)

    try:
        manager.get(key, load)
    except (ClipVisionError, PickleRefused, UnsafeOrBrokenFile) as exc:
        raise NodeInputError(input_name, str(exc)) from None
    return ModuleRef(key, manager, load)


class CLIPVisionLoader(Node):
    display_name = "Load CLIP Vision"
    category = "loaders"
    description = (
        "Load a CLIP vision model (an image encoder, e.g. clip_vision_g.safetensors for SDXL revision) "
        "from models/clip_vision."
    )
    inputs = (
        model_input(
            "clip_name",
            "clip",
            "A .safetensors file or transformers folder in models/clip_vision (or models/clip).",
        ),
    )
    outputs = (Output("clip_vision", T.CLIP_VISION),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "clip", inputs.get("clip_name"))

    def run(self, ctx: Context, clip_name: str) -> dict[str, Any]:
        path = find_model(ctx, "clip", "clip_name", clip_name, "models/clip_vision", "the CLIP vision file")
        return {"clip_vision": _vision_ref(ctx, path, "clip_name")}


class CLIPVisionEncode(Node):
    category = "conditioning"
    description = (
        "Encode pictures with a CLIP vision model into image embeddings, for unCLIPConditioning. "
        "The picture is scaled to the model's size (224 px): its centre is cropped, or it is stretched."
    )
    inputs = (
        Input("clip_vision", T.CLIP_VISION),
        Input("image", T.IMAGE),
        Input(
            "crop",
            T.STRING,
            default="center",
            choices=("center", "none"),
            description="center: keep the middle square; none: stretch the whole picture to a square.",
        ),
    )
    outputs = (Output("clip_vision_output", T.CLIP_VISION_OUTPUT),)

    def run(self, ctx: Context, clip_vision: Any, image: np.ndarray, crop: str) -> dict[str, Any]:
        from models.clip_vision import encode_images

        image = as_image("image", image)
        return {"clip_vision_output": encode_images(clip_vision.get(), image, crop)}


class UnclipConditioning(Node):
    type = "unCLIPConditioning"
    display_name = "unCLIP Conditioning"
    category = "conditioning"
    description = (
        "Add a picture's CLIP vision embedding to a conditioning: an SD 2.x unCLIP model draws "
        "variations of it, SDXL takes it in place of the prompt's pooled embedding (revision). "
        "Chain several to mix pictures."
    )
    inputs = (
        Input("conditioning", T.CONDITIONING),
        Input("clip_vision_output", T.CLIP_VISION_OUTPUT),
        Input(
            "strength",
            T.FLOAT,
            default=1.0,
            min=-10.0,
            max=10.0,
            step=0.01,
            description="How much the picture counts; 0 leaves the conditioning as it is.",
        ),
        Input(
            "noise_augmentation",
            T.FLOAT,
            default=0.0,
            min=0.0,
            max=1.0,
            step=0.01,
            description="Noise added to the embedding: higher strays further from the picture.",
        ),
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(
        self,
        ctx: Context,
        conditioning: Any,
        clip_vision_output: Any,
        strength: float,
        noise_augmentation: float,
    ) -> dict[str, Any]:
        from models.clip_vision import UNCLIP, UnclipEntry, VisionEncoding, unclip_entries

        if not isinstance(clip_vision_output, VisionEncoding):
            raise NodeInputError("clip_vision_output", "connect the output of a CLIPVisionEncode node")
        if strength == 0:
            return {"conditioning": conditioning}
        entry = UnclipEntry(clip_vision_output.image_embeds, float(strength), float(noise_augmentation))
        return {
            "conditioning": tuple(
                c.with_(extra={**c.extra, UNCLIP: (*unclip_entries(c), entry)}) for c in conditioning
            )
        }


class UnclipCheckpointLoader(Node):
    type = "unCLIPCheckpointLoader"
    display_name = "Load unCLIP Checkpoint"
    category = "loaders"
    description = (
        "Load an SD 2.x unCLIP checkpoint (one original-layout file, or a diffusers StableUnCLIP "
        "folder): its model, text encoder, VAE and the CLIP vision model whose embeddings it draws "
        "variations of."
    )
    inputs = (
        model_input(
            "ckpt_name",
            "checkpoints",
            "An unCLIP file (e.g. sd21-unclip-h) or StableUnCLIP folder in models/checkpoints.",
        ),
    )
    outputs = (
        Output("model", T.MODEL),
        Output("clip", T.CLIP),
        Output("vae", T.VAE),
        Output("clip_vision", T.CLIP_VISION),
    )

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "checkpoints", inputs.get("ckpt_name"))

    def run(self, ctx: Context, ckpt_name: str) -> dict[str, Any]:
        from models.clip_vision import (
            attach_embedding_noise,
            folder_embedding_noise,
            is_unclip_unet,
            load_unclip_file,
        )
        from models.loading import CheckpointError, load_checkpoint
        from models.safety import PickleRefused, UnsafeOrBrokenFile
        from models.values import CheckpointRef, ClipRef, ModelRef, ModuleRef

        path = find_model(ctx, "checkpoints", "ckpt_name", ckpt_name, what="it")
        encoder = path / "image_encoder"
        if path.is_dir() and not (encoder / "config.json").is_file():
            raise NodeInputError(
                "ckpt_name", f"{path.name} has no image_encoder folder: it is not an unCLIP checkpoint"
            )
        manager = manager_of(ctx)
        key = ("unclip-checkpoint", str(path.resolve()), file_state(path))
        options = {"device": manager.device, "dtype": manager.dtype, "allow_pickle": manager.allow_pickle}

        def load() -> Any:
            if not path.is_dir():
                loaded = load_unclip_file(path, **options)
            else:
                loaded = load_checkpoint(path, **options)
                if not is_unclip_unet(loaded.unet):
                    raise CheckpointError(
                        f"{path.name}'s UNet takes no image embeddings: not an unCLIP checkpoint; "
                        "load it with CheckpointLoader"
                    )
                attach_embedding_noise(loaded.unet, folder_embedding_noise(path))
            manager.install_attention(loaded.unet)
            return loaded

        try:
            checkpoint = manager.get(key, load)
        except (CheckpointError, PickleRefused, UnsafeOrBrokenFile) as exc:
            raise NodeInputError("ckpt_name", str(exc)) from None
        ref = CheckpointRef(key, manager, load, checkpoint.family)
        if path.is_dir():
            vision = _vision_ref(ctx, encoder, "ckpt_name")
        else:
            vision = _vision_ref(ctx, path, "ckpt_name", inside_checkpoint=True)
        return {
            "model": ModelRef(ref),
            "clip": ClipRef(ref),
            "vae": ModuleRef(key, manager, load, part="vae"),
            "clip_vision": vision,
        }


NODES = (CLIPVisionLoader, CLIPVisionEncode, UnclipConditioning, UnclipCheckpointLoader)
