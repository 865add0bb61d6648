"""LoRA: fuse low-rank weight deltas into a UNet and text encoders.

Both key styles users have are read:

- kohya (``lora_unet_down_blocks_0_..._to_q.lora_down.weight``, ``lora_te_...``,
  ``lora_te1_``/``lora_te2_`` for SDXL, with ``.alpha``; SDXL files in the original
  block naming are renamed by diffusers' own mapping first);
- diffusers / PEFT (``unet.down_blocks.0....to_q.lora_A.weight``, ``.lora.down.weight``,
  ``.lora_linear_layer.down.weight``; ``text_encoder.``/``text_encoder_2.`` prefixes).

Each pair becomes ``W += strength * alpha / rank * up @ down`` on the module it names
(Linear, or Conv2d for LoCon-style LoRAs). A key that names no module of the model is
an error, so a LoRA for another model family is refused instead of silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_PAIR_SUFFIXES = (
    (".lora_down.weight", ".lora_up.weight"),
    (".lora_A.weight", ".lora_B.weight"),
    (".lora.down.weight", ".lora.up.weight"),
    (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
)
_KOHYA_PREFIXES = {
    "lora_unet_": "unet",
    "lora_te_": "text_encoder",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
}
_DIFFUSERS_PREFIXES = {"unet.": "unet", "text_encoder.": "text_encoder", "text_encoder_2.": "text_encoder_2"}


class LoraError(Exception):
    pass


@dataclass(frozen=True)
class LoraPair:
    component: str  # "unet" | "text_encoder" | "text_encoder_2"
    name: str  # module name as written in the file (kohya: underscores)
    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None


def _normalise(name: str) -> str:
    name = re.sub(r"\.processor\.|_lora$", ".", name)
    for prefix in ("text_model.", "text_model_"):
        name = name.removeprefix(prefix)
    return name.replace(".", "_").strip("_")


def read_pairs(state: dict[str, torch.Tensor], unet_config: dict[str, Any] | None = None) -> list[LoraPair]:
    """The (down, up, alpha) pairs of a LoRA file, with the part of the model each belongs to."""
    if unet_config is not None and any(
        k.startswith("lora_unet_input_blocks")
        or k.startswith("lora_unet_output_blocks")
        or k.startswith("lora_unet_middle_block")
        for k in state
    ):
        from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

        state = _maybe_map_sgm_blocks_to_diffusers(dict(state), unet_config)
    pairs = []
    for key in state:
        for down_suffix, up_suffix in _PAIR_SUFFIXES:
            if not key.endswith(down_suffix):
                continue
            base = key[: -len(down_suffix)]
            up = state.get(base + up_suffix)
            if up is None:
                raise LoraError(f"{key} has no matching {up_suffix}")
            alpha_tensor = state.get(base + ".alpha")
            alpha = float(alpha_tensor) if alpha_tensor is not None else None
            component, name = _split(base)
            pairs.append(LoraPair(component, name, state[key], up, alpha))
    if not pairs:
        raise LoraError("no LoRA weights found (expected lora_down/lora_up or lora_A/lora_B keys)")
    return pairs


def _split(base: str) -> tuple[str, str]:
    for prefix, component in _KOHYA_PREFIXES.items():
        if base.startswith(prefix):
            return component, base[len(prefix) :]
    for prefix, component in sorted(_DIFFUSERS_PREFIXES.items(), key=lambda p: -len(p[0])):
        if base.startswith(prefix):
            return component, base[len(prefix) :]
    return "unet", base  # bare PEFT keys of a UNet


def module_index(model: Any) -> dict[str, Any]:
    """Modules with weights, by normalised name."""
    import torch

    index = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            index[_normalise(name)] = module
    return index


def fuse(components: dict[str, Any], pairs: Iterable[LoraPair], strengths: dict[str, float]) -> int:
    """Add each pair's delta to its module's weight, in place. Returns how many were fused.

    Pairs for a part the model does not have (``None`` in ``components``: a UNet-only or a
    text-encoder-only model) or applied at strength 0 are skipped; a layer missing from a part
    that is there means the LoRA is for another model."""
    import torch

    indexes = {name: module_index(model) for name, model in components.items() if model is not None}
    missing = []
    fused = 0
    with torch.no_grad():
        for pair in pairs:
            strength = strengths.get(pair.component, 0.0)
            if strength == 0.0 or (pair.component in components and components[pair.component] is None):
                continue
            index = indexes.get(pair.component)
            module = index.get(_normalise(pair.name)) if index is not None else None
            if module is None:
                missing.append(f"{pair.component}:{pair.name}")
                continue
            rank = pair.down.shape[0]
            scale = strength * (pair.alpha / rank if pair.alpha is not None else 1.0)
            weight = module.weight
            down = pair.down.to(torch.float32)
            up = pair.up.to(torch.float32)
            delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)  # Linear, or Conv2d (LoCon)
            weight += (scale * delta).to(weight.dtype)
            fused += 1
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise LoraError(
            f"{len(missing)} of its layers are not in this model ({shown}): it is for another one"
        )
    return fused
