"""Saving a checkpoint as ONE original-layout ``.safetensors`` file (ComfyUI's CheckpointSave).

The key layout is that of the files Stability released, which every tool loads (this studio
through diffusers' single-file loader, ComfyUI, A1111):

- UNet: ``model.diffusion_model.*`` in LDM's ``UNetModel`` names (``input_blocks``,
  ``middle_block``, ``output_blocks``, ``time_embed``, SDXL's ``label_emb``).
- VAE: ``first_stage_model.*`` (``encoder.down.N.block.M``, ``decoder.up.N`` counted from the
  highest resolution, the middle attention's q/k/v/proj_out as 1x1 convolutions).
- Text encoders: SD1.x ``cond_stage_model.transformer.text_model.*`` (Hugging Face CLIP names);
  SD2.x ``cond_stage_model.model.*`` (OpenCLIP names: ``transformer.resblocks.N`` with q, k and
  v fused into ``attn.in_proj_*``); SDXL ``conditioner.embedders.0.transformer.text_model.*``
  and ``conditioner.embedders.1.model.*`` (OpenCLIP, ``text_projection`` stored transposed).
- SD1.x and SD2.x files also carry the noise schedule (``betas``, ``alphas_cumprod``,
  ``alphas_cumprod_prev``), and v-prediction models an empty ``v_pred`` marker (as ComfyUI
  writes it).

diffusers converts only from this layout; the mapping back is built here from each model's
config: a table of module-path prefixes (diffusers name -> original name), longest first.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    Tensors = dict[str, torch.Tensor]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIXES = {
    "sd1": ("cond_stage_model.transformer.",),
    "sd2": ("cond_stage_model.model.",),
    "sdxl": ("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."),
}
#: modelspec architecture names (https://github.com/Stability-AI/ModelSpec) by family.
ARCHITECTURES = {
    "sd1": "stable-diffusion-v1",
    "sd2": "stable-diffusion-v2-768-v",
    "sdxl": "stable-diffusion-xl-v1-base",
}
SOFTWARE = "Workflow Studio"

#: A resnet's layers: diffusers name -> LDM's, in the UNet and in the VAE.
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2"}
VAE_RESNET["conv_shortcut"] = "nin_shortcut"
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
OPEN_CLIP_LAYER = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


class SaveError(Exception):
    """A model that cannot be written in the original layout, said in plain words."""


#: One row of a renaming table: diffusers prefix -> (original prefix, renames of the next module).
Table = dict[str, tuple[str, Mapping[str, str]]]


def rename(state: Mapping[str, torch.Tensor], table: Table, what: str) -> Tensors:
    """Rename every key by the longest prefix of ``table`` it starts with; the module right after
    the prefix is renamed too when the row says how (a resnet's layers)."""
    prefixes = sorted(table, key=len, reverse=True)
    out: Tensors = {}
    for key, tensor in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            raise SaveError(f"the {what} has a weight the original layout has no place for: {key}")
        target, inner = table[prefix]
        rest = key[len(prefix) :]
        module, _, param = rest.rpartition(".")
        if inner:
            if module not in inner:
                raise SaveError(f"the {what} has a weight the original layout has no place for: {key}")
            rest = f"{inner[module]}.{param}"
        new = target + rest
        if new in out:
            raise SaveError(f"two weights of the {what} would be saved as {new}")
        out[new] = tensor
    return out


def unet_table(config: Mapping[str, Any]) -> Table:
    """The UNet's renaming table. LDM numbers the encoder's layers in one sequence
    (``input_blocks``: the first convolution, then per level its resnet+attention pairs and a
    downsampler) and the decoder's likewise (``output_blocks``: one more layer per level, with
    the upsampler after the last one's resnet, or after its attention)."""
    per_level = config["layers_per_block"]
    if not isinstance(per_level, int):
        raise SaveError("UNets with a different number of layers per level have no original layout")
    plain: Mapping[str, str] = {}
    table: Table = {
        "conv_in.": ("input_blocks.0.0.", plain),
        "time_embedding.linear_1.": ("time_embed.0.", plain),
        "time_embedding.linear_2.": ("time_embed.2.", plain),
        "add_embedding.linear_1.": ("label_emb.0.0.", plain),
        "add_embedding.linear_2.": ("label_emb.0.2.", plain),
        "class_embedding.linear_1.": ("label_emb.0.0.", plain),
        "class_embedding.linear_2.": ("label_emb.0.2.", plain),
        "conv_norm_out.": ("out.0.", plain),
        "conv_out.": ("out.2.", plain),
        "mid_block.resnets.0.": ("middle_block.0.", UNET_RESNET),
        "mid_block.attentions.0.": ("middle_block.1.", plain),
        "mid_block.resnets.1.": ("middle_block.2.", UNET_RESNET),
    }
    levels = len(config["down_block_types"])
    for level in range(levels):
        first = 1 + level * (per_level + 1)
        for layer in range(per_level):
            table[f"down_blocks.{level}.resnets.{layer}."] = (f"input_blocks.{first + layer}.0.", UNET_RESNET)
            table[f"down_blocks.{level}.attentions.{layer}."] = (f"input_blocks.{first + layer}.1.", plain)
        table[f"down_blocks.{level}.downsamplers.0.conv."] = (
            f"input_blocks.{first + per_level}.0.op.",
            plain,
        )
    for level, kind in enumerate(config["up_block_types"]):
        first = level * (per_level + 1)
        for layer in range(per_level + 1):
            table[f"up_blocks.{level}.resnets.{layer}."] = (f"output_blocks.{first + layer}.0.", UNET_RESNET)
            table[f"up_blocks.{level}.attentions.{layer}."] = (f"output_blocks.{first + layer}.1.", plain)
        after = 2 if "CrossAttn" in kind else 1
        table[f"up_blocks.{level}.upsamplers.0.conv."] = (
            f"output_blocks.{first + per_level}.{after}.conv.",
            plain,
        )
    return table


def vae_table(config: Mapping[str, Any]) -> Table:
    """The VAE's renaming table (LDM counts the decoder's levels from the highest resolution)."""
    plain: Mapping[str, str] = {}
    table: Table = {"quant_conv.": ("quant_conv.", plain), "post_quant_conv.": ("post_quant_conv.", plain)}
    for part in ("encoder", "decoder"):
        table[f"{part}.conv_in."] = (f"{part}.conv_in.", plain)
        table[f"{part}.conv_out."] = (f"{part}.conv_out.", plain)
        table[f"{part}.conv_norm_out."] = (f"{part}.norm_out.", plain)
        table[f"{part}.mid_block.resnets.0."] = (f"{part}.mid.block_1.", VAE_RESNET)
        table[f"{part}.mid_block.resnets.1."] = (f"{part}.mid.block_2.", VAE_RESNET)
        table[f"{part}.mid_block.attentions.0."] = (f"{part}.mid.attn_1.", VAE_ATTENTION)
    levels = len(config["down_block_types"])
    per_level = int(config["layers_per_block"])
    for level in range(levels):
        for layer in range(per_level):
            table[f"encoder.down_blocks.{level}.resnets.{layer}."] = (
                f"encoder.down.{level}.block.{layer}.",
                VAE_RESNET,
            )
        table[f"encoder.down_blocks.{level}.downsamplers.0.conv."] = (
            f"encoder.down.{level}.downsample.conv.",
            plain,
        )
    for level in range(len(config["up_block_types"])):
        ldm = len(config["up_block_types"]) - 1 - level
        for layer in range(per_level + 1):
            table[f"decoder.up_blocks.{level}.resnets.{layer}."] = (
                f"decoder.up.{ldm}.block.{layer}.",
                VAE_RESNET,
            )
        table[f"decoder.up_blocks.{level}.upsamplers.0.conv."] = (f"decoder.up.{ldm}.upsample.conv.", plain)
    return table


def unet_to_original(unet: Any) -> Tensors:
    return rename(unet.state_dict(), unet_table(unet.config), "UNet")


def vae_to_original(vae: Any) -> Tensors:
    out = rename(vae.state_dict(), vae_table(vae.config), "VAE")
    for key, tensor in out.items():
        if ".mid.attn_1." in key and key.endswith(".weight") and tensor.ndim == 2:
            out[key] = tensor.reshape(*tensor.shape, 1, 1)  # LDM's attention uses 1x1 convolutions
    return out


def clip_to_original(encoder: Any) -> Tensors:
    """A Hugging Face CLIP text model as the original files keep it: its own names under
    ``text_model.`` (transformers 5 dropped that level from the module tree)."""
    return {
        "text_model." + key.removeprefix("text_model."): tensor
        for key, tensor in encoder.state_dict().items()
        if not key.endswith("position_ids")
    }


def open_clip_to_original(encoder: Any) -> Tensors:
    """A Hugging Face CLIP text model in OpenCLIP's names: q, k and v stacked into one
    ``in_proj``, the projection stored as the matrix OpenCLIP multiplies by (transposed)."""
    import torch

    out: Tensors = {}
    stacked: dict[str, dict[str, torch.Tensor]] = {}
    for full, tensor in encoder.state_dict().items():
        key = full.removeprefix("text_model.")
        module, _, param = key.rpartition(".")
        if key.endswith("position_ids"):
            continue
        if key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = tensor
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = tensor
        elif module == "final_layer_norm":
            out[f"ln_final.{param}"] = tensor
        elif key == "text_projection.weight":
            out["text_projection"] = tensor.T.contiguous()
        elif key.startswith("encoder.layers."):
            layer, _, inner = key.removeprefix("encoder.layers.").partition(".")
            inner_module = inner.rpartition(".")[0]
            if inner_module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                stacked.setdefault(f"{layer}.{param}", {})[inner_module[-6]] = tensor
            elif inner_module in OPEN_CLIP_LAYER:
                out[f"transformer.resblocks.{layer}.{OPEN_CLIP_LAYER[inner_module]}.{param}"] = tensor
            else:
                raise SaveError(f"the text encoder has a weight OpenCLIP has no place for: {full}")
        else:
            raise SaveError(f"the text encoder has a weight OpenCLIP has no place for: {full}")
    for where, parts in stacked.items():
        layer, param = where.split(".")
        out[f"transformer.resblocks.{layer}.attn.in_proj_{param}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0
        )
    return out


def schedule_buffers(scheduler_config: Mapping[str, Any]) -> Tensors:
    """The noise schedule SD1.x/SD2.x files carry, computed from the scheduler's config."""
    import torch
    from diffusers import DDPMScheduler

    keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
    scheduler = DDPMScheduler(**{k: scheduler_config[k] for k in keep if k in scheduler_config})
    cumulative = scheduler.alphas_cumprod.double()
    previous = torch.cat([torch.ones(1, dtype=torch.float64), cumulative[:-1]])
    return {
        "betas": scheduler.betas.float(),
        "alphas_cumprod": cumulative.float(),
        "alphas_cumprod_prev": previous.float(),
    }


def _prefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> Tensors:
    return {prefix + key: value for key, value in tensors.items()}


def original_state_dict(
    family: str, unet: Any, vae: Any, text_encoders: Iterable[Any], scheduler_config: Mapping[str, Any]
) -> Tensors:
    """The whole checkpoint in the original single-file layout of ``family`` (sd1, sd2, sdxl)."""
    import torch

    if family not in TEXT_PREFIXES:
        raise SaveError(f"{family!r} checkpoints have no original single-file layout here (sd1, sd2, sdxl)")
    encoders = list(text_encoders)
    prefixes = TEXT_PREFIXES[family]
    if len(encoders) != len(prefixes):
        raise SaveError(
            f"a {family} checkpoint has {len(prefixes)} text encoder(s), this CLIP {len(encoders)}"
        )
    state: Tensors = {}
    state.update(_prefixed(UNET_PREFIX, unet_to_original(unet)))
    state.update(_prefixed(VAE_PREFIX, vae_to_original(vae)))
    if family == "sd1":
        state.update(_prefixed(prefixes[0], clip_to_original(encoders[0])))
    elif family == "sd2":
        state.update(_prefixed(prefixes[0], open_clip_to_original(encoders[0])))
    else:
        state.update(_prefixed(prefixes[0], clip_to_original(encoders[0])))
        state.update(_prefixed(prefixes[1], open_clip_to_original(encoders[1])))
    if family in ("sd1", "sd2"):
        state.update(schedule_buffers(scheduler_config))
    if scheduler_config.get("prediction_type") == "v_prediction":
        state["v_pred"] = torch.tensor([])
    return state


def metadata_for(
    family: str, title: str, scheduler_config: Mapping[str, Any], workflow: str | None
) -> dict[str, str]:
    """safetensors metadata: the modelspec fields tools read, and who wrote the file."""
    prediction = "v" if scheduler_config.get("prediction_type") == "v_prediction" else "epsilon"
    metadata = {
        "format": "pt",
        "software": SOFTWARE,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURES[family],
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": title,
        "modelspec.prediction_type": prediction,
        "modelspec.author": SOFTWARE,
    }
    if family == "sd2" and prediction == "epsilon":
        metadata["modelspec.architecture"] = "stable-diffusion-v2-512"
    if workflow is not None:
        metadata["workflow"] = workflow
    return metadata


def write_hidden(folder: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Path:
    """Write ``state`` to a new hidden ``.saving-*.safetensors`` file in ``folder`` (so no reader
    ever sees a half-written checkpoint under its real name); returns its path. The file gets the
    usual mode (0666 less the process umask)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    while True:
        path = folder / f".saving-{secrets.token_hex(8)}.safetensors"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in state.items()}
    try:
        save_file(tensors, str(path), metadata=dict(metadata))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
