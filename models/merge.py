"""Merging models: weight arithmetic on two UNets or two text encoders (ComfyUI's model merging).

A MODEL (:class:`models.values.ModelRef`) or CLIP (:class:`models.values.ClipRef`) lists the
models merged into it in ``merges``, in order, before its own LoRAs. Each step is a
:class:`Blend`: every weight becomes ``so_far * own + other * other_factor`` (ComfyUI's
``add_patches(patches, strength_patch, strength_model)`` with ``own`` = strength_model and
``other`` = strength_patch), optionally with different factors per UNet block. A plain float
``share`` (ModelMergeSimple, as first stored) is ``Blend(share, 1 - share)``.

The nodes and their blends (as ComfyUI computes them):

- ModelMergeSimple / CLIPMergeSimple ``ratio``: ``model1 * ratio + model2 * (1 - ratio)``;
- ModelMergeAdd / CLIPMergeAdd: ``model1 + model2``;
- ModelMergeSubtract / CLIPMergeSubtract ``multiplier``: ``(model1 - model2) * multiplier``;
- ModelMergeBlocks, ModelMergeSD1, ModelMergeSDXL: the Simple formula with the ratio of the
  longest of their prefixes (in the original LDM names: ``input_blocks.4``, ``middle_block``,
  ``out.``, ...) that a weight's name starts with, else the first ratio.

Text encoder merges leave ``position_ids`` and ``logit_scale`` as model1's, as ComfyUI does.
The merged module is a new one; the loaded checkpoints it comes from are shared in the model
manager and are never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.loading import Checkpoint
    from models.values import ClipRef, ModelRef

#: Config entries that change which weights a UNet has (or their shapes), named when two differ.
ARCHITECTURE_KEYS = (
    "in_channels",
    "out_channels",
    "cross_attention_dim",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "transformer_layers_per_block",
    "attention_head_dim",
    "addition_embed_type",
    "projection_class_embeddings_input_dim",
    "class_embed_type",
    "use_linear_projection",
)
#: The UNet part of a checkpoint, or its text encoders (CLIP merges).
UNET, TEXT_ENCODERS = "unet", "text_encoders"
#: Text encoder weights a merge never changes (ComfyUI skips them): positions and CLIP's scale.
UNMERGED_SUFFIXES = (".position_ids", ".logit_scale")


@dataclass(frozen=True)
class Blend:
    """One merge step: each weight becomes ``mine * own + theirs * other``.

    ``blocks`` holds (original-layout prefix, own, other) rows: a UNet weight whose LDM name
    starts with one of them takes the longest one's factors instead. ``loose_inputs`` lets the
    two UNets differ in input channels (ComfyUI's "inpainting model = inpaint + (custom - base)"
    recipe): weights whose shapes differ are then ``mine * own``, as ComfyUI leaves them."""

    own: float
    other: float
    blocks: tuple[tuple[str, float, float], ...] = ()
    part: str = UNET
    loose_inputs: bool = False

    def factors(self, name: str) -> tuple[float, float]:
        """(own, other) for the weight with this (LDM) name."""
        best, factors = -1, (self.own, self.other)
        for prefix, own, other in self.blocks:
            if name.startswith(prefix) and len(prefix) > best:
                best, factors = len(prefix), (own, other)
        return factors

    @property
    def takes_mine(self) -> bool:
        return self._everywhere(1.0, 0.0)

    @property
    def takes_theirs(self) -> bool:
        return self._everywhere(0.0, 1.0)

    def _everywhere(self, own: float, other: float) -> bool:
        rows = [(self.own, self.other), *((o, t) for _, o, t in self.blocks)]
        return all(row == (own, other) for row in rows)


def simple(ratio: float, part: str = UNET) -> Blend:
    """ModelMergeSimple / CLIPMergeSimple: ``ratio`` of model1, the rest of model2."""
    return Blend(float(ratio), 1.0 - float(ratio), part=part)


def added(part: str = UNET) -> Blend:
    """ModelMergeAdd / CLIPMergeAdd: model1 + model2."""
    return Blend(1.0, 1.0, part=part, loose_inputs=part == UNET)


def subtracted(multiplier: float, part: str = UNET) -> Blend:
    """ModelMergeSubtract / CLIPMergeSubtract: (model1 - model2) * multiplier."""
    m = float(multiplier)
    return Blend(m, -m, part=part, loose_inputs=part == UNET)


def by_blocks(ratios: Mapping[str, float]) -> Blend:
    """ModelMergeBlocks and its per-model forms: ``ratios`` maps LDM prefixes (in ComfyUI's
    order) to model1's share; the first one is also the share of weights matching none."""
    rows = tuple((prefix, float(r), 1.0 - float(r)) for prefix, r in ratios.items())
    if not rows:
        raise ValueError("a block merge needs at least one ratio")
    return Blend(rows[0][1], rows[0][2], blocks=rows)


def as_blend(step: float | Blend) -> Blend:
    """A merge step as a :class:`Blend` (a float is ModelMergeSimple's share)."""
    return step if isinstance(step, Blend) else simple(step)


class MergeError(Exception):
    """Two models that cannot be merged, said in plain words."""


def architecture_difference(first: Any, second: Any, loose_inputs: bool = False) -> str | None:
    """Why two UNets cannot be merged weight by weight (a config entry or a weight that
    differs), or None when they have the same weights in the same shapes. With
    ``loose_inputs`` they may differ in input channels (and so in their first convolution)."""
    config_a, config_b = dict(first.config), dict(second.config)
    for key in ARCHITECTURE_KEYS:
        if loose_inputs and key == "in_channels":
            continue
        a, b = config_a.get(key), config_b.get(key)
        if _plain(a) != _plain(b):
            return f"their UNets differ in {key} ({_plain(a)} vs {_plain(b)})"
    state_a, state_b = first.state_dict(), second.state_dict()
    only = sorted(set(state_a) ^ set(state_b))
    if only:
        return f"their UNets have different weights (e.g. {only[0]} is in one only)"
    for key, tensor in state_a.items():
        if tensor.shape != state_b[key].shape and not (loose_inputs and key == "conv_in.weight"):
            return (
                f"their UNets' {key} differ in shape ({tuple(tensor.shape)} vs {tuple(state_b[key].shape)})"
            )
    return None


def text_encoder_difference(first: list[Any], second: list[Any]) -> str | None:
    """Why two sets of text encoders cannot be merged weight by weight, or None."""
    if len(first) != len(second):
        return f"one has {len(first)} text encoder(s), the other {len(second)}"
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        state_a, state_b = a.state_dict(), b.state_dict()
        only = sorted(set(state_a) ^ set(state_b))
        if only:
            return f"their text encoders differ (e.g. {only[0]} is in one only)"
        for key, tensor in state_a.items():
            if tensor.shape != state_b[key].shape:
                return f"their text encoder {index + 1}'s {key} differ in shape"
    return None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


def ldm_names(unet: Any) -> dict[str, str]:
    """Each UNet weight's name in the original (LDM) layout, up to its block, e.g.
    ``down_blocks.1.attentions.0.proj_in.weight`` -> ``input_blocks.4.1.proj_in.weight``:
    what ComfyUI's block merges match their prefixes against."""
    from models.checkpoint_save import SaveError, unet_table

    try:
        table = unet_table(dict(unet.config))
    except SaveError as exc:
        raise MergeError(f"a block merge needs the original layout of the UNet: {exc}") from None
    prefixes = sorted(table, key=len, reverse=True)
    names = {}
    for key in unet.state_dict():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        names[key] = key if prefix is None else table[prefix][0] + key[len(prefix) :]
    return names


def _blend_into(merged: Any, theirs: Mapping[str, Any], blend: Blend, names: Mapping[str, str]) -> None:
    """Blend ``theirs`` into the module ``merged`` in place (float32 sums, stored in its dtype).
    Weights ``theirs`` lacks are left as they are; weights whose shapes differ are scaled by
    ``own`` alone (ComfyUI's rule for a patch of the wrong shape)."""
    import torch

    with torch.no_grad():
        for key, tensor in merged.state_dict().items():
            other = theirs.get(key)
            if other is None or key.endswith(UNMERGED_SUFFIXES):
                continue
            own, factor = blend.factors(names.get(key, key))
            if other.shape != tensor.shape:
                tensor.copy_(tensor.float() * own)
                continue
            tensor.copy_(tensor.float() * own + other.to(tensor.device, torch.float32) * factor)


def merged_unet(first: Any, second: Any, step: float | Blend) -> Any:
    """A new UNet blending ``first`` and ``second`` by ``step`` (a float: ``first * share +
    second * (1 - share)``); ``first`` and ``second`` are left untouched."""
    blend = as_blend(step)
    problem = architecture_difference(first, second, blend.loose_inputs)
    if problem:
        raise MergeError(problem)
    merged = copy.deepcopy(first)
    names = ldm_names(first) if blend.blocks else {}
    _blend_into(merged, second.state_dict(), blend, names)
    return merged


def merged_text_encoders(first: list[Any], second: list[Any], blend: Blend) -> list[Any]:
    """New text encoders blending ``first`` and ``second`` pairwise (position ids and CLIP's
    logit scale stay ``first``'s)."""
    problem = text_encoder_difference(first, second)
    if problem:
        raise MergeError(problem)
    merged = [copy.deepcopy(encoder) for encoder in first]
    for mine, theirs in zip(merged, second, strict=True):
        _blend_into(mine, theirs.state_dict(), blend, {})
    return merged


def merged_checkpoint(first: Checkpoint, second: Checkpoint, step: float | Blend) -> Checkpoint:
    """``first`` with its UNet (or, for a text encoder blend, its text encoders) blended with
    ``second``'s; everything else (VAE, tokenizers, scheduler) is ``first``'s. A blend that
    takes one side whole gives that checkpoint itself."""
    blend = as_blend(step)
    text = blend.part == TEXT_ENCODERS
    if text:
        problem = text_encoder_difference(first.text_encoders, second.text_encoders)
    else:
        problem = architecture_difference(first.unet, second.unet, blend.loose_inputs)
    if problem:
        raise MergeError(problem)
    if blend.takes_mine or (blend.takes_theirs and not blend.loose_inputs):
        return first if blend.takes_mine else second
    source = f"{first.source}*{blend.own:g}+{second.source}*{blend.other:g}"
    if text:
        encoders = merged_text_encoders(first.text_encoders, second.text_encoders, blend)
        return replace(first, text_encoders=encoders, source=source)
    return replace(first, unet=merged_unet(first.unet, second.unet, blend), source=source)


def merged_key(ref: ModelRef | ClipRef) -> Hashable:
    """The manager key of a model's checkpoint after its merges (and before its own LoRAs);
    the checkpoint's own key when nothing is merged in."""
    key: Hashable = ref.checkpoint.key
    for other, step in getattr(ref, "merges", ()):
        key = (key, "merge", model_key(other), step if isinstance(step, Blend) else float(step))
    return key


def model_key(ref: ModelRef | ClipRef) -> Hashable:
    """The manager key of everything that makes a model's weights: checkpoint, merges, LoRAs."""
    key = merged_key(ref)
    return (key, "loras", ref.loras) if ref.loras else key


def merge_into(model1: Any, model2: Any, step: float | Blend) -> Any:
    """The MODEL (or CLIP) ``model1`` blended with ``model2`` by ``step``.

    LoRAs listed on a MODEL apply after its merges, so LoRAs added after merging apply to the
    merged weights (as in ComfyUI). When ``model1`` already has LoRAs, it is merged in whole
    into a fresh model of its checkpoint (a blend that takes the other model as it is), so its
    LoRAs stay before the new merge.
    """
    base = model1
    if model1.loras:
        whole: float | Blend = 0.0 if not isinstance(step, Blend) else Blend(0.0, 1.0, part=step.part)
        base = replace(model1, loras=(), merges=((model1, whole),))
    kept = step if isinstance(step, Blend) else float(step)
    return base.with_(merges=tuple(base.merges) + ((model2, kept),))
