"""Model operations: merge models, load a UNet or a LoRA alone, save a checkpoint, and upscale
images with an upscale model.

- ModelMergeSimple / Add / Subtract / Blocks / SD1 / SDXL and CLIPMergeSimple / Add / Subtract do
  weight arithmetic on two UNets or text encoders, as ComfyUI's (models/merge.py).
- LoraLoaderModelOnly adds a LoRA's UNet part; HypernetworkLoader adds an A1111-style hypernetwork
  (models/hypernetwork.py); UNETLoader loads a UNet file alone (models/unet_files.py).
- CheckpointSave writes MODEL, CLIP and VAE as one original-layout ``.safetensors`` file
  that this studio, ComfyUI and A1111 load (models/checkpoint_save.py).
- UpscaleModelLoader and ImageUpscaleWithModel run ESRGAN, Real-ESRGAN, SwinIR, ... through
  spandrel, tiled for big pictures (models/upscale.py).

torch, diffusers and spandrel are imported inside ``run`` only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.support import (
    checkpoint_for,
    file_state,
    find_model,
    lora_entry,
    manager_of,
    model_fingerprint,
    model_input,
)

#: CheckpointSave writes under this folder of the output folder (as ComfyUI does).
CHECKPOINTS_FOLDER = "checkpoints"
#: How many times a save looks for a free name before giving up (others may be saving at once).
MAX_NAME_TRIES = 1000
#: The model families hypernetworks apply to (UNet models with attn1/attn2 transformer blocks).
HYPERNETWORK_FAMILIES = ("sd1", "sd2", "sdxl")


class ModelMergeSimple(Node):
    category = "advanced/model_merging"
    description = (
        "Mix two models of the same kind weight by weight: ratio 1 is model1, 0 is model2, 0.5 half of each."
    )
    inputs = (
        Input("model1", T.MODEL),
        Input("model2", T.MODEL),
        Input(
            "ratio",
            T.FLOAT,
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.01,
            description="The share of model1 in each weight (the rest comes from model2).",
        ),
    )
    outputs = (Output("model", T.MODEL),)

    def run(self, ctx: Context, model1: Any, model2: Any, ratio: float) -> dict[str, Any]:
        from models.merge import architecture_difference, merge_into

        first, second = checkpoint_for(model1, ctx), checkpoint_for(model2, ctx)
        problem = architecture_difference(first.unet, second.unet)
        if problem:
            raise NodeInputError(
                "model2",
                f"cannot be merged into model1: {problem} ({second.family} vs {first.family}); "
                "merge models of the same family and kind (e.g. two SD 1.x text-to-image models)",
            )
        return {"model": merge_into(model1, model2, ratio)}


def _merged_models(ctx: Context, model1: Any, model2: Any, blend: Any) -> Any:
    """``model1`` with ``model2`` merged in by ``blend``, after checking the two UNets fit."""
    from models.merge import MergeError, architecture_difference, ldm_names, merge_into

    first, second = checkpoint_for(model1, ctx), checkpoint_for(model2, ctx)
    problem = architecture_difference(first.unet, second.unet, blend.loose_inputs)
    if problem:
        raise NodeInputError(
            "model2",
            f"cannot be merged into model1: {problem} ({second.family} vs {first.family}); "
            "merge models of the same family and kind (e.g. two SD 1.x text-to-image models)",
        )
    if blend.blocks:
        try:
            ldm_names(first.unet)
        except MergeError as exc:
            raise NodeInputError("model1", str(exc)) from None
    return merge_into(model1, model2, blend)


def _merged_clips(ctx: Context, clip1: Any, clip2: Any, blend: Any) -> Any:
    """``clip1`` with ``clip2``'s text encoders merged in by ``blend``."""
    from models.merge import merge_into, text_encoder_difference

    first, second = checkpoint_for(clip1, ctx), checkpoint_for(clip2, ctx)
    problem = text_encoder_difference(first.text_encoders, second.text_encoders)
    if problem:
        raise NodeInputError(
            "clip2",
            f"cannot be merged into clip1: {problem} ({second.family} vs {first.family}); "
            "merge text encoders of the same family",
        )
    return merge_into(clip1, clip2, blend)


def _ratio(name: str, description: str = "") -> Input:
    """A merge ratio: model1's share (the rest is model2's), as ComfyUI's merge nodes take it."""
    return Input(name, T.FLOAT, default=1.0, min=0.0, max=1.0, step=0.01, description=description)


MULTIPLIER = Input(
    "multiplier",
    T.FLOAT,
    default=1.0,
    min=-10.0,
    max=10.0,
    step=0.01,
    description="Scales the difference (negative: the other way round).",
)


class ModelMergeAdd(Node):
    category = "advanced/model_merging"
    description = (
        "Add two models weight by weight (model1 + model2), e.g. a base model plus a difference "
        "made with ModelMergeSubtract."
    )
    inputs = (Input("model1", T.MODEL), Input("model2", T.MODEL))
    outputs = (Output("model", T.MODEL),)

    def run(self, ctx: Context, model1: Any, model2: Any) -> dict[str, Any]:
        from models.merge import added

        return {"model": _merged_models(ctx, model1, model2, added())}


class ModelMergeSubtract(Node):
    category = "advanced/model_merging"
    description = (
        "The difference of two models, (model1 - model2) x multiplier, weight by weight: what a "
        "fine-tune or an inpainting model changed, to add to another model with ModelMergeAdd."
    )
    inputs = (Input("model1", T.MODEL), Input("model2", T.MODEL), MULTIPLIER)
    outputs = (Output("model", T.MODEL),)

    def run(self, ctx: Context, model1: Any, model2: Any, multiplier: float) -> dict[str, Any]:
        from models.merge import subtracted

        return {"model": _merged_models(ctx, model1, model2, subtracted(multiplier))}


class _BlockMerge(Node):
    """A merge with one ratio per group of UNet blocks: ``blocks`` pairs each input with the
    prefix of the original (LDM) weight names it governs; the first also governs the rest."""

    category = "advanced/model_merging"
    blocks: tuple[tuple[str, str], ...] = ()
    outputs = (Output("model", T.MODEL),)

    def run(self, ctx: Context, model1: Any, model2: Any, **ratios: float) -> dict[str, Any]:
        from models.merge import by_blocks

        blend = by_blocks({prefix: ratios[name] for name, prefix in self.blocks})
        return {"model": _merged_models(ctx, model1, model2, blend)}


def _block_inputs(blocks: tuple[tuple[str, str], ...]) -> tuple[Input, ...]:
    return (
        Input("model1", T.MODEL),
        Input("model2", T.MODEL),
        *(_ratio(name, f"model1's share in the weights under {prefix!r}.") for name, prefix in blocks),
    )


class ModelMergeBlocks(_BlockMerge):
    description = (
        "Mix two models with one ratio for the UNet's input (down) blocks, one for the middle "
        "block and one for the output (up) blocks; 1 is model1, 0 model2."
    )
    blocks = (("input", "input"), ("middle", "middle"), ("out", "out"))
    inputs = _block_inputs(blocks)


def _numbered(name: str, count: int, dot: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{name}_{i}", f"{name}.{i}{dot}") for i in range(count))


class ModelMergeSD1(_BlockMerge):
    category = "advanced/model_merging/model_specific"
    description = (
        "Mix two SD 1.x or 2.x models block by block: one ratio (model1's share) for each of the "
        "UNet's 12 input blocks, 3 middle parts and 12 output blocks, the time embedding and the output."
    )
    blocks = (
        ("time_embed", "time_embed."),
        ("label_emb", "label_emb."),
        *_numbered("input_blocks", 12, "."),
        *_numbered("middle_block", 3, "."),
        *_numbered("output_blocks", 12, "."),
        ("out", "out."),
    )
    inputs = _block_inputs(blocks)


class ModelMergeSDXL(_BlockMerge):
    category = "advanced/model_merging/model_specific"
    description = (
        "Mix two SDXL models block by block: one ratio (model1's share) for each of the UNet's 9 "
        "input blocks, 3 middle parts and 9 output blocks, the time and size embeddings and the output."
    )
    blocks = (
        ("time_embed", "time_embed."),
        ("label_emb", "label_emb."),
        *_numbered("input_blocks", 9, ""),
        *_numbered("middle_block", 3, ""),
        *_numbered("output_blocks", 9, ""),
        ("out", "out."),
    )
    inputs = _block_inputs(blocks)


class CLIPMergeSimple(Node):
    category = "advanced/model_merging"
    description = "Mix two text encoders of the same kind weight by weight: ratio 1 is clip1, 0 is clip2."
    inputs = (Input("clip1", T.CLIP), Input("clip2", T.CLIP), _ratio("ratio", "The share of clip1."))
    outputs = (Output("clip", T.CLIP),)

    def run(self, ctx: Context, clip1: Any, clip2: Any, ratio: float) -> dict[str, Any]:
        from models.merge import TEXT_ENCODERS, simple

        return {"clip": _merged_clips(ctx, clip1, clip2, simple(ratio, TEXT_ENCODERS))}


class CLIPMergeAdd(Node):
    category = "advanced/model_merging"
    description = "Add two text encoders weight by weight (clip1 + clip2)."
    inputs = (Input("clip1", T.CLIP), Input("clip2", T.CLIP))
    outputs = (Output("clip", T.CLIP),)

    def run(self, ctx: Context, clip1: Any, clip2: Any) -> dict[str, Any]:
        from models.merge import TEXT_ENCODERS, added

        return {"clip": _merged_clips(ctx, clip1, clip2, added(TEXT_ENCODERS))}


class CLIPMergeSubtract(Node):
    category = "advanced/model_merging"
    description = "The difference of two text encoders, (clip1 - clip2) x multiplier, weight by weight."
    inputs = (Input("clip1", T.CLIP), Input("clip2", T.CLIP), MULTIPLIER)
    outputs = (Output("clip", T.CLIP),)

    def run(self, ctx: Context, clip1: Any, clip2: Any, multiplier: float) -> dict[str, Any]:
        from models.merge import TEXT_ENCODERS, subtracted

        return {"clip": _merged_clips(ctx, clip1, clip2, subtracted(multiplier, TEXT_ENCODERS))}


class LoraLoaderModelOnly(Node):
    display_name = "Load LoRA (Model Only)"
    category = "loaders"
    description = "Add a LoRA's UNet part to a model (its text encoder part, if any, is not used)."
    inputs = (
        Input("model", T.MODEL),
        model_input("lora_name", "loras", "A .safetensors LoRA in models/loras."),
        Input("strength_model", T.FLOAT, default=1.0, min=-100.0, max=100.0, step=0.01),
    )
    outputs = (Output("model", T.MODEL),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "loras", inputs.get("lora_name"))

    def run(self, ctx: Context, model: Any, lora_name: str, strength_model: float) -> dict[str, Any]:
        entry = lora_entry(ctx, lora_name, strength_model, 0.0)
        return {"model": model.with_(loras=model.loras + (entry,))}


class HypernetworkLoader(Node):
    display_name = "Load Hypernetwork"
    category = "loaders"
    description = (
        "Add a hypernetwork (the A1111 kind, mostly for SD 1.x): small networks that change the keys and "
        "values of the model's attention layers whose width they match, strength times their output "
        "added to each input (ComfyUI's node of this name). Chain several to apply them in turn."
    )
    inputs = (
        Input("model", T.MODEL),
        model_input(
            "hypernetwork_name",
            "hypernetworks",
            "A hypernetwork in models/hypernetworks: .safetensors, or an A1111 .pt with --allow-pickle.",
        ),
        Input(
            "strength",
            T.FLOAT,
            default=1.0,
            min=-10.0,
            max=10.0,
            step=0.01,
            description="How much of the hypernetwork's change is added: 0 none, 1 as trained.",
        ),
    )
    outputs = (Output("model", T.MODEL),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "hypernetworks", inputs.get("hypernetwork_name"))

    def run(self, ctx: Context, model: Any, hypernetwork_name: str, strength: float) -> dict[str, Any]:
        from models.hypernetwork import (
            HypernetworkError,
            HypernetworkPatch,
            attention_widths,
            load_hypernetwork,
        )
        from models.safety import PickleRefused, UnsafeOrBrokenFile

        path = find_model(
            ctx, "hypernetworks", "hypernetwork_name", hypernetwork_name, what="the hypernetwork file"
        )
        manager = manager_of(ctx)
        key = ("hypernetwork", str(path.resolve()), file_state(path))

        def load() -> Any:
            return load_hypernetwork(path, manager.allow_pickle)

        try:
            weights = manager.get(key, load)
        except (HypernetworkError, PickleRefused, UnsafeOrBrokenFile) as exc:
            raise NodeInputError("hypernetwork_name", str(exc)) from None
        checkpoint = checkpoint_for(model, ctx)
        if checkpoint.family not in HYPERNETWORK_FAMILIES:
            raise NodeInputError(
                "model",
                f"is a {checkpoint.family} model: hypernetworks work with SD 1.x, 2.x and SDXL models",
            )
        widths = attention_widths(checkpoint.unet)
        if not widths & set(weights.widths):
            raise NodeInputError(
                "hypernetwork_name",
                f"its widths ({', '.join(map(str, weights.widths))}) match none of this model's attention "
                f"layers ({', '.join(map(str, sorted(widths)))}): it was made for another model family",
            )
        patch = HypernetworkPatch(lambda: manager.get(key, load), float(strength), path.name)
        return {"model": model.with_(hypernetworks=(*model.hypernetworks, patch))}


class UNETLoader(Node):
    display_name = "Load Diffusion Model"
    category = "advanced/loaders"
    description = (
        "Load a denoiser alone from models/unet or models/diffusion_models: a UNet (SD 1.x, 2.x, XL) "
        "or a diffusion transformer (SD3 / SD3.5, FLUX.1 dev and schnell, fp8 files too); its text "
        "encoders (DualCLIPLoader, TripleCLIPLoader) and VAE (VAELoader) come from other loaders."
    )
    inputs = (
        model_input(
            "unet_name",
            "unet",
            "A UNet or SD3 / Flux transformer file (original or diffusers names), or a UNet folder.",
        ),
        Input(
            "weight_dtype",
            T.STRING,
            default="default",
            choices=("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"),
            accepts="constant",
            description=(
                "How the weights are kept in memory: default keeps an fp8 file in fp8 and anything "
                "else in the studio's type; the fp8 choices store any file in fp8 (half the memory of "
                "fp16), each layer upcast when it runs. fp8_e4m3fn_fast is fp8_e4m3fn here."
            ),
        ),
    )
    outputs = (Output("model", T.MODEL),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "unet", inputs.get("unet_name"))

    def run(self, ctx: Context, unet_name: str, weight_dtype: str) -> dict[str, Any]:
        from models.loading import CheckpointError
        from models.safety import PickleRefused, UnsafeOrBrokenFile
        from models.unet_files import load_unet_file
        from models.values import CheckpointRef, ModelRef

        path = find_model(ctx, "unet", "unet_name", unet_name, "models/unet or models/diffusion_models", "it")
        manager = manager_of(ctx)
        key = ("unet", str(path.resolve()), file_state(path), weight_dtype)

        def load() -> Any:
            loaded = load_unet_file(
                path,
                device=manager.device,
                dtype=manager.dtype,
                allow_pickle=manager.allow_pickle,
                weight_dtype=weight_dtype,
            )
            manager.install_attention(loaded.unet)
            return loaded

        try:
            checkpoint = manager.get(key, load)
        except (CheckpointError, PickleRefused, UnsafeOrBrokenFile) as exc:
            raise NodeInputError("unet_name", str(exc)) from None
        return {"model": ModelRef(CheckpointRef(key, manager, load, checkpoint.family))}


def _checkpoint_folder(settings: RunSettings, filename_prefix: str) -> tuple[Path, str]:
    """(folder, prefix) under OUTPUT/checkpoints, the prefix cleaned as SaveImage's is. A prefix
    starting with 'checkpoints/' (ComfyUI's default, 'checkpoints/ComfyUI') lands in the same place."""
    from nodes.saving import output_folder

    prefix = filename_prefix.strip()
    if prefix.startswith(CHECKPOINTS_FOLDER + "/"):
        prefix = prefix[len(CHECKPOINTS_FOLDER) + 1 :]
    inside = replace(settings, output_dir=Path(settings.output_dir) / CHECKPOINTS_FOLDER)
    return output_folder(inside, prefix)


def _claim_name(hidden: Path, folder: Path, prefix: str) -> Path:
    """Give the written file its name, ``<prefix>_00001_.safetensors`` or the next free one;
    never replaces a file (a hard link fails if another save took the name meanwhile)."""
    from nodes.saving import next_free_path

    try:
        for _ in range(MAX_NAME_TRIES):
            target, _ = next_free_path(folder, prefix, suffix="_.safetensors")
            try:
                os.link(hidden, target)
                return target
            except FileExistsError:
                continue
        raise NodeInputError("filename_prefix", f"no free name for {Path(prefix).name!r} in {folder}")
    finally:
        hidden.unlink(missing_ok=True)


class CheckpointSave(Node):
    display_name = "Save Checkpoint"
    category = "advanced/model_merging"
    description = (
        "Save a model, its text encoder and VAE as one .safetensors checkpoint (the original layout other "
        "tools load) in the output folder's checkpoints/."
    )
    output_node = True
    inputs = (
        Input("model", T.MODEL),
        Input("clip", T.CLIP),
        Input("vae", T.VAE),
        Input(
            "filename_prefix",
            T.STRING,
            default="model",
            accepts="constant",
            description="Start of the file name under output/checkpoints; may name a sub-folder.",
        ),
    )
    outputs = ()

    def run(self, ctx: Context, model: Any, clip: Any, vae: Any, filename_prefix: str) -> dict[str, Any]:
        from models.checkpoint_save import SaveError, metadata_for, original_state_dict, write_hidden

        folder, prefix = _checkpoint_folder(ctx.settings, filename_prefix)
        checkpoint = checkpoint_for(model, ctx)
        text = checkpoint_for(clip, ctx)
        if text.family != checkpoint.family:
            raise NodeInputError(
                "clip",
                f"is from a {text.family} checkpoint but the model is {checkpoint.family}; use its own",
            )
        ctx.check_cancelled()
        try:
            state = original_state_dict(
                checkpoint.family, checkpoint.unet, vae.get(), text.text_encoders, checkpoint.scheduler_config
            )
        except SaveError as exc:
            raise NodeInputError("model", str(exc)) from None
        metadata = metadata_for(
            checkpoint.family, Path(prefix).name, checkpoint.scheduler_config, ctx.settings.workflow_json
        )
        ctx.check_cancelled()
        path = _claim_name(write_hidden(folder, state, metadata), folder, prefix)
        ctx.add_file(path)
        return {}


class UpscaleModelLoader(Node):
    display_name = "Load Upscale Model"
    category = "loaders"
    description = (
        "Load an image upscale model (ESRGAN, Real-ESRGAN, SwinIR, HAT, ...) from models/upscale_models."
    )
    inputs = (
        model_input(
            "model_name",
            "upscale_models",
            "A .safetensors file in models/upscale_models (pickle files need --allow-pickle).",
        ),
    )
    outputs = (Output("upscale_model", T.UPSCALE_MODEL),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "upscale_models", inputs.get("model_name"))

    def run(self, ctx: Context, model_name: str) -> dict[str, Any]:
        from models.safety import PickleRefused
        from models.upscale import UpscaleModelError, load_upscale_model
        from models.values import ModuleRef

        path = find_model(ctx, "upscale_models", "model_name", model_name)
        if not path.is_file():
            raise NodeInputError(
                "model_name", f"{model_name!r} is a folder; put the model's file in models/upscale_models"
            )
        manager = manager_of(ctx)
        key = ("upscale_model", str(path.resolve()), file_state(path))

        def load() -> Any:
            return load_upscale_model(
                path, device=manager.device, dtype=manager.dtype, allow_pickle=manager.allow_pickle
            )

        try:
            manager.get(key, load)
        except (UpscaleModelError, PickleRefused) as exc:
            raise NodeInputError("model_name", str(exc)) from None
        return {"upscale_model": ModuleRef(key, manager, load)}


class ImageUpscaleWithModel(Node):
    display_name = "Upscale Image (using Model)"
    category = "image/upscaling"
    description = "Enlarge images with an upscale model (4x for most); big images go through in tiles."
    inputs = (Input("upscale_model", T.UPSCALE_MODEL), Input("image", T.IMAGE))
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, upscale_model: Any, image: np.ndarray) -> dict[str, Any]:
        from models.upscale import TorchvisionMissing, upscale_images
        from nodes.image_inputs import as_image
        from nodes.limits import check_pixel_budget

        image = as_image("image", image)
        descriptor = upscale_model.get()
        batch, height, width, _ = image.shape
        check_pixel_budget("image", batch, height * descriptor.scale, width * descriptor.scale)
        try:
            return {"image": upscale_images(descriptor, image, on_tile=ctx.progress)}
        except TorchvisionMissing as exc:
            raise NodeInputError("upscale_model", str(exc)) from None


NODES = (
    ModelMergeSimple,
    ModelMergeAdd,
    ModelMergeSubtract,
    ModelMergeBlocks,
    ModelMergeSD1,
    ModelMergeSDXL,
    CLIPMergeSimple,
    CLIPMergeAdd,
    CLIPMergeSubtract,
    LoraLoaderModelOnly,
    HypernetworkLoader,
    UNETLoader,
    CheckpointSave,
    UpscaleModelLoader,
    ImageUpscaleWithModel,
)
