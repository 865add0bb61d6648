"""The mapping table: how each ComfyUI node type becomes studio nodes.

:data:`RULES` is declarative: for each ComfyUI type, the studio node(s) it makes
(:class:`Part`), which ComfyUI input feeds which of ours, its outputs by index,
translations of constants, and the order of ``widgets_values`` in ComfyUI's UI format.
It does not consult the node registry (a target may come from a pack that is not
installed): the validation of the converted workflow does.

ComfyUI's input names and widget orders come from its ``nodes.py`` and
``comfy_extras``; seed widgets are followed by ComfyUI's ``control_after_generate``
value in the UI format.

This module assembles the table from its parts, one job each:

- :mod:`~comfy_import.rules.base`: :class:`Rule`, :class:`Part` and the builders ``one``, ``same``;
- :mod:`~comfy_import.rules.values`: the translations of ComfyUI constants (samplers, seeds, ...);
- the entries by family: :mod:`~comfy_import.rules.core` (checkpoints, CLIP, LoRA, VAE and
  latents, ControlNet, conditioning), :mod:`~comfy_import.rules.sampling` (KSampler and custom
  sampling), :mod:`~comfy_import.rules.image` (images and masks),
  :mod:`~comfy_import.rules.families` (SD3/Flux/DiT, video, CLIP vision, IP-Adapter, GLIGEN),
  :mod:`~comfy_import.rules.merging` (model merging);
- :mod:`~comfy_import.rules.unconverted`: the types left without a rule on purpose.
"""

from __future__ import annotations

from comfy_import.rules.base import Adjust, Part, Rule, ValueMap, Warn, is_int, one, same
from comfy_import.rules.core import CORE_RULES
from comfy_import.rules.families import FAMILY_RULES
from comfy_import.rules.image import IMAGE_RULES
from comfy_import.rules.merging import MERGING_RULES
from comfy_import.rules.sampling import KSAMPLER_AS_CUSTOM, SAMPLING_RULES
from comfy_import.rules.unconverted import NOT_YET, PRIMITIVES, UI_ONLY
from comfy_import.rules.values import SEED_MAX, clean_prefix, custom_sampling_names, map_sampler, short

__all__ = [
    "KSAMPLER_AS_CUSTOM",
    "NOT_YET",
    "PRIMITIVES",
    "RULES",
    "SEED_MAX",
    "UI_ONLY",
    "Adjust",
    "Part",
    "Rule",
    "ValueMap",
    "Warn",
    "clean_prefix",
    "custom_sampling_names",
    "is_int",
    "map_sampler",
    "one",
    "same",
    "short",
]


def _merged(*tables: dict[str, Rule]) -> dict[str, Rule]:
    """The family tables as one; a ComfyUI type in two of them is a mistake, refused at import."""
    merged: dict[str, Rule] = {}
    for table in tables:
        repeated = merged.keys() & table.keys()
        if repeated:
            raise ValueError(f"ComfyUI types with a rule in two tables: {sorted(repeated)}")
        merged.update(table)
    return merged


RULES: dict[str, Rule] = _merged(CORE_RULES, SAMPLING_RULES, IMAGE_RULES, FAMILY_RULES, MERGING_RULES)
