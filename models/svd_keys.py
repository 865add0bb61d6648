"""Where each weight of Stable Video Diffusion lives in the original single file (Stability's
``svd.safetensors`` / ``svd_xt.safetensors``), named from its diffusers key.

diffusers 0.42 cannot read these files (its single-file loader knows no SVD), so the mapping is
written here, from the two layouts' module names:

- the spatio-temporal UNet under ``model.diffusion_model.``: the SD UNet's ``input_blocks`` /
  ``middle_block`` / ``output_blocks`` numbering, each resnet with its temporal twin under
  ``time_stack`` and a ``time_mixer``, each transformer with ``time_stack`` blocks and a
  ``time_pos_embed``;
- the VAE: its encoder inside the conditioner (``conditioner.embedders.3.encoder.``, the copy
  that encodes the input picture), its temporal decoder under ``first_stage_model.decoder.``
  (resnets with ``time_stack`` and ``mix_factor``, ``conv_out.time_mix_conv``);
- the OpenCLIP ViT-H image encoder under ``conditioner.embedders.0.open_clip.model.visual.``
  (read by :func:`models.clip_vision.from_open_clip`).

Each function maps one diffusers key to its original key, so a model built from its config
names every weight it needs and a missing one is reported by name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_ENCODER_PREFIX = "conditioner.embedders.3.encoder."
VAE_DECODER_PREFIX = "first_stage_model."
VISION_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
#: A key only the spatio-temporal UNet has (the temporal twin of the first resnet).
SVD_MARKER = UNET_PREFIX + "input_blocks.1.0.time_stack.in_layers.0.weight"

#: A resnet's layers: diffusers name -> original name (UNet ResBlock).
_RESNET_LAYERS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _rename_layer(rest: str, names: dict[str, str]) -> str:
    """``rest`` ("conv1.weight") with its first layer name replaced by ``names``."""
    for new, old in names.items():
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def _unet_resnet(rest: str) -> str:
    if rest.startswith("spatial_res_block."):
        return _rename_layer(rest[len("spatial_res_block.") :], _RESNET_LAYERS)
    if rest.startswith("temporal_res_block."):
        return "time_stack." + _rename_layer(rest[len("temporal_res_block.") :], _RESNET_LAYERS)
    return rest  # time_mixer.mix_factor


def _unet_transformer(rest: str) -> str:
    rest = rest.replace("temporal_transformer_blocks.", "time_stack.")
    return rest.replace("time_pos_embed.linear_1.", "time_pos_embed.0.").replace(
        "time_pos_embed.linear_2.", "time_pos_embed.2."
    )


_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def unet_original_key(config: dict[str, Any]) -> Callable[[str], str]:
    """For a UNetSpatioTemporalConditionModel ``config``: diffusers key -> original key."""
    per_block = int(config["layers_per_block"]) + 1  # input blocks per level (resnets + down)
    up_has_attention = ["CrossAttn" in name for name in config["up_block_types"]]

    def original(key: str) -> str:
        head, _, param = key.rpartition(".")
        if head in _UNET_TOP:
            return f"{UNET_PREFIX}{_UNET_TOP[head]}.{param}"
        if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$", key):
            block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = 1 + block * per_block + layer
            if kind == "resnets":
                return f"{UNET_PREFIX}input_blocks.{index}.0.{_unet_resnet(rest)}"
            return f"{UNET_PREFIX}input_blocks.{index}.1.{_unet_transformer(rest)}"
        if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$", key):
            index = 1 + int(m[1]) * per_block + per_block - 1
            return f"{UNET_PREFIX}input_blocks.{index}.0.op.{m[2]}"
        if m := re.match(r"mid_block\.resnets\.(\d)\.(.+)$", key):
            return f"{UNET_PREFIX}middle_block.{2 * int(m[1])}.{_unet_resnet(m[2])}"
        if m := re.match(r"mid_block\.attentions\.0\.(.+)$", key):
            return f"{UNET_PREFIX}middle_block.1.{_unet_transformer(m[1])}"
        if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$", key):
            block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = block * per_block + layer
            if kind == "resnets":
                return f"{UNET_PREFIX}output_blocks.{index}.0.{_unet_resnet(rest)}"
            return f"{UNET_PREFIX}output_blocks.{index}.1.{_unet_transformer(rest)}"
        if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$", key):
            block = int(m[1])
            index = block * per_block + per_block - 1
            slot = 2 if up_has_attention[block] else 1
            return f"{UNET_PREFIX}output_blocks.{index}.{slot}.conv.{m[2]}"
        raise KeyError(f"no original name known for the UNet weight {key}")

    return original


def _vae_resnet(rest: str, temporal: bool) -> str:
    """A VAE resnet's layer: spatial layers keep their names (``nin_shortcut`` for the shortcut);
    the decoder's temporal twin is ``time_stack`` (UNet-style names), its mixer ``mix_factor``."""
    if not temporal:
        return rest.replace("conv_shortcut.", "nin_shortcut.")
    if rest.startswith("spatial_res_block."):
        return rest[len("spatial_res_block.") :].replace("conv_shortcut.", "nin_shortcut.")
    if rest.startswith("temporal_res_block."):
        return "time_stack." + _rename_layer(rest[len("temporal_res_block.") :], _RESNET_LAYERS)
    if rest == "time_mixer.mix_factor":
        return "mix_factor"
    return rest


def vae_original_key(config: dict[str, Any]) -> Callable[[str], str]:
    """For an AutoencoderKLTemporalDecoder ``config``: diffusers key -> original key."""
    levels = len(config["block_out_channels"])

    def original(key: str) -> str:
        part, _, rest = key.partition(".")
        if part == "quant_conv":
            return f"{VAE_ENCODER_PREFIX}quant_conv.{rest}"
        prefix = VAE_ENCODER_PREFIX if part == "encoder" else VAE_DECODER_PREFIX
        temporal = part == "decoder"
        name = _vae_inner(rest, levels, temporal)
        return f"{prefix}{part}.{name}"

    return original


def _vae_inner(rest: str, levels: int, temporal: bool) -> str:
    head, _, param = rest.rpartition(".")
    simple = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}
    if head in simple:
        return f"{simple[head]}.{param}"
    if head == "time_conv_out":
        return f"conv_out.time_mix_conv.{param}"
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", rest):
        return f"down.{m[1]}.block.{m[2]}.{_vae_resnet(m[3], False)}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$", rest):
        return f"down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", rest):
        return f"up.{levels - 1 - int(m[1])}.block.{m[2]}.{_vae_resnet(m[3], temporal)}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$", rest):
        return f"up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)$", rest):
        return f"mid.block_{int(m[1]) + 1}.{_vae_resnet(m[2], temporal)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.+)$", rest):
        return f"mid.attn_1.{_rename_layer(m[1], _VAE_ATTENTION)}"
    raise KeyError(f"no original name known for the VAE weight {rest}")


def gather(
    model_keys: dict[str, Any], state: dict[str, Any], original: Callable[[str], str], what: str
) -> dict[str, Any]:
    """The weights ``model_keys`` (diffusers key -> the model's tensor, for its shape) from the
    original ``state``, reshaped where the original holds a 1x1 convolution for a linear layer.
    Raises KeyError naming the first weights that are missing."""
    out: dict[str, Any] = {}
    missing: list[str] = []
    for key, target in model_keys.items():
        name = original(key)
        value = state.get(name)
        if value is None:
            missing.append(name)
            continue
        if tuple(value.shape) != tuple(target.shape):
            if value.numel() != target.numel():
                raise KeyError(
                    f"the {what} weight {name} has shape {tuple(value.shape)}, the config expects "
                    f"{tuple(target.shape)}: the file does not fit this model's configuration"
                )
            value = value.reshape(target.shape)
        out[key] = value
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise KeyError(f"the file lacks {what} weights: {shown}")
    return out
