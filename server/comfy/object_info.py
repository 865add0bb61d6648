"""``/object_info``: ComfyUI's node descriptions, for the ComfyUI classes the importer converts.

A ComfyUI class is described when the importer has a rule for it and this
registry has every studio node the rule makes. Its inputs are the ComfyUI names
of our nodes' inputs, with our types, limits, defaults and choices; inputs the
importer reads itself (``sampler_name``, ``add_noise``, ...) get ComfyUI's own
spec, and values the importer translates (``upscale_method``, ``crop``) ComfyUI's
own choices. Clients that check a prompt against these before posting it then
agree with what ``/prompt`` takes.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from comfy_import import Rule
    from models.services import Services
    from nodes.base import Input
    from nodes.registry import Registry

#: ComfyUI inputs that the importer reads itself (they map to none of ours one to one): their spec.
_COMFY_ONLY: dict[str, list[Any]] = {
    "add_noise": [["enable", "disable"], {"default": "enable"}],
    "return_with_leftover_noise": [["disable", "enable"], {"default": "disable"}],
    "start_at_step": ["INT", {"default": 0, "min": 0, "max": 10000}],
    "end_at_step": ["INT", {"default": 10000, "min": 0, "max": 10000}],
}
#: ComfyUI's own choices for inputs whose values the importer translates.
_COMFY_CHOICES: dict[str, list[str]] = {
    "upscale_method": ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],
    "crop": ["disabled", "center"],
}


class ObjectInfo:
    """The ``/object_info`` routes over one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def get_object_info(self) -> dict[str, Any]:
        return object_info(self.registry)

    def get_object_info_class(self, node_class: str) -> dict[str, Any]:
        from comfy_import import RULES

        rule = RULES.get(node_class)
        described = describe_class(node_class, rule, self.registry) if rule is not None else None
        return {node_class: described} if described is not None else {}


def object_info(registry: Registry) -> dict[str, Any]:
    """Every ComfyUI class the importer converts into nodes this registry has."""
    from comfy_import import RULES

    found = {}
    for class_type in sorted(RULES):
        described = describe_class(class_type, RULES[class_type], registry)
        if described is not None:
            found[class_type] = described
    return found


def describe_class(class_type: str, rule: Rule, registry: Registry) -> dict[str, Any] | None:
    """ComfyUI's ``object_info`` entry for a class the importer converts (None without our nodes)."""
    parts = [(part, registry.get(part.type)) for part in rule.parts]
    if any(cls is None for _, cls in parts):
        return None
    comfy_only = _comfy_only_specs()
    required: dict[str, Any] = {}
    optional: dict[str, Any] = {}
    for part, cls in parts:
        for comfy_name, our_name in part.inputs.items():
            spec = cls.input(our_name)
            if spec is None or comfy_name in required or comfy_name in optional:
                continue
            target = optional if spec.optional else required
            target[comfy_name] = _input_spec(spec, comfy_name, comfy_name in rule.values, registry.services)
    for comfy_name in sorted(rule.consumed):
        if comfy_name in comfy_only and comfy_name not in required:
            required[comfy_name] = comfy_only[comfy_name]
    types = []
    suffixes = {part.suffix: cls for part, cls in parts}
    for output in rule.outputs:
        cls = suffixes.get(output[0]) if output is not None else None
        spec = cls.output(output[1]) if cls is not None and output is not None else None
        types.append(spec.type if spec is not None else "*")
    first = parts[0][1]
    return {
        "input": {"required": required, "optional": optional},
        "input_order": {"required": list(required), "optional": list(optional)},
        "output": types,
        "output_is_list": [False] * len(types),
        "output_name": list(types),
        "name": class_type,
        "display_name": _display_name(class_type),
        "description": f"{first.description} (runs as the studio's {', '.join(p.type for p, _ in parts)})",
        "python_module": "studio",
        "category": first.category,
        "output_node": any(cls.output_node for _, cls in parts),
        "deprecated": False,
        "experimental": False,
    }


def _comfy_only_specs() -> dict[str, list[Any]]:
    """:data:`_COMFY_ONLY` with the sampler and scheduler names the studio's samplers offer."""
    from models.schedules import K_SAMPLERS, SCHEDULERS

    samplers, schedulers = list(K_SAMPLERS), list(SCHEDULERS)
    return {
        **_COMFY_ONLY,
        "sampler_name": [samplers, {"default": samplers[0]}],
        "scheduler": [schedulers, {"default": "normal" if "normal" in schedulers else schedulers[0]}],
    }


def _display_name(class_type: str) -> str:
    """``KSamplerAdvanced`` -> ``KSampler Advanced``: a title from the class name."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", class_type)


def _input_spec(spec: Input, comfy_name: str, translated: bool, services: Services) -> list[Any]:
    """ComfyUI's ``[type or choices, {options}]`` for one of our inputs (model files listed from
    ``services``)."""
    options: dict[str, Any] = {}
    if spec.has_default:
        options["default"] = spec.default
    for key in ("min", "max", "step"):
        if getattr(spec, key) is not None:
            options[key] = getattr(spec, key)
    if spec.type == "STRING" and spec.multiline:
        options["multiline"] = True
    if spec.description:
        options["tooltip"] = spec.description
    choices = _COMFY_CHOICES.get(comfy_name) if translated else None
    if choices is None and spec.type in ("STRING", "INT", "FLOAT") and spec.choices is not None:
        choices = [str(c) for c in spec.current_choices(services) or []]
    if choices is not None:
        if options.get("default") not in choices:
            options.pop("default", None)
        return [choices, options]
    return [spec.type, options] if options else [spec.type]
