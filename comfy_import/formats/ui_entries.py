"""What the UI format's raw entries say, for its reader: a node's widget values by input name,
its kept mode, pack and position, the input a Reroute or bypassed node passes on; and the scope
and constant types links are resolved into."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from comfy_import.formats.prompt import ComfyLink
from comfy_import.rules import RULES, is_int

#: ComfyUI's node modes the studio keeps on a converted node: 2 ("never") and 4 (bypass).
COMFY_MODES = {2: "mute", 4: "bypass"}


@dataclass(frozen=True)
class Const:
    """A constant that drives an input (a PrimitiveNode's value, a subgraph's widget)."""

    value: Any


#: What an input resolves to: a node's output, a constant, or nothing.
Source = ComfyLink | Const | None


@dataclass
class Scope:
    """One level of a UI graph: the top level, a subgraph instance or a group node instance."""

    prefix: str  # "" at the top, "<outer id>:" inside
    nodes: dict[str, dict[str, Any]]  # local id -> raw node
    links: dict[Any, tuple[str, int, Any]]  # link key -> (origin local id, origin slot, type)
    input_node: str | None = None  # the local id standing for the instance's inputs
    bindings: list[Source] = field(default_factory=list)  # by input slot
    depth: int = 0
    origin_pos: tuple[float, float] | None = None  # the instance's position (inner nodes go there)
    expanded: dict[str, list[Source]] = field(default_factory=dict)  # instance local id -> outputs

    def qid(self, local: str) -> str:
        return self.prefix + local


def kept_mode(raw: dict[str, Any]) -> str | None:
    """The studio mode ("mute", "bypass") of a muted or bypassed UI node whose type converts;
    ``None`` for an active node, or one resolved at import (its type does not convert)."""
    mode = raw.get("mode", 0)
    if not is_int(mode) or raw.get("type") not in RULES:
        return None
    return COMFY_MODES.get(mode)


def widget_inputs(class_type: str, widgets: Any) -> dict[str, Any]:
    """A UI node's ``widgets_values`` by input name, in the order of its rule."""
    rule = RULES.get(class_type)
    if rule is None:
        return {}
    if isinstance(widgets, dict):
        return {k: v for k, v in widgets.items() if k in rule.widgets}
    if not isinstance(widgets, list):
        return {}
    names = list(rule.widgets)
    if len(widgets) == len(names) - 1 and "control_after_generate" in names:
        names.remove("control_after_generate")  # saved by a ComfyUI without it
    return dict(zip(names, widgets, strict=False))


#: The loader input that names a file of each of ComfyUI's model folders.
_MODEL_NAME_INPUTS = {
    "checkpoints": "ckpt_name",
    "loras": "lora_name",
    "vae": "vae_name",
    "controlnet": "control_net_name",
    "upscale_models": "model_name",
    "clip_vision": "clip_name",
    "text_encoders": "clip_name",
    "clip": "clip_name",
    "unet": "unet_name",
    "diffusion_models": "unet_name",
    "ipadapter": "ipadapter_file",
}


def model_from_properties(class_type: str, raw: dict[str, Any]) -> dict[str, str]:
    """A loader saved without widget values: the model it names in ``properties.models``
    (what current ComfyUI writes for its model downloads), when that is unambiguous."""
    rule = RULES.get(class_type)
    properties = raw.get("properties")
    models = properties.get("models") if isinstance(properties, dict) else None
    if rule is None or not isinstance(models, list):
        return {}
    found: dict[str, list[str]] = {}
    for item in models:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        name = _MODEL_NAME_INPUTS.get(str(item.get("directory")))
        if name in rule.widgets:
            found.setdefault(name, []).append(item["name"])
    return {name: names[0] for name, names in found.items() if len(names) == 1}


#: UI input types that are widgets (values on the node), not sockets waiting for a link.
_WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})


def dead_end_gap(raw: dict[str, Any]) -> str | None:
    """The unconnected socket input of a node left half-wired on the canvas: one with outputs,
    none of them linked, so no output needs it (ComfyUI runs only what outputs need)."""
    outputs = raw.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        return None  # an output node, or one whose outputs were not saved
    if any(isinstance(o, dict) and o.get("links") for o in outputs):
        return None
    for entry in raw.get("inputs") or []:
        if not isinstance(entry, dict) or entry.get("link") is not None or "widget" in entry:
            continue
        if isinstance(entry.get("type"), str) and entry["type"] not in _WIDGET_TYPES:
            return str(entry.get("name"))
    return None


def pass_through(raw: dict[str, Any], slot: int, link_type: Any) -> dict[str, Any] | None:
    """The linked input a Reroute or bypassed node passes on to output ``slot``: a Reroute's
    only one; for a bypassed node the input at the same index if its type matches, else the
    first of the output's type (ComfyUI's rule)."""
    entries = (
        [e for e in raw.get("inputs") or [] if isinstance(e, dict)]
        if isinstance(raw.get("inputs"), list)
        else []
    )
    if raw["type"] == "Reroute":
        return next((e for e in entries if e.get("link") is not None), None)
    outputs = raw.get("outputs") if isinstance(raw.get("outputs"), list) else []
    wanted = link_type
    if 0 <= slot < len(outputs) and isinstance(outputs[slot], dict) and outputs[slot].get("type"):
        wanted = outputs[slot]["type"]
    if wanted in (None, "*"):
        return None
    same_index = entries[slot] if 0 <= slot < len(entries) else None
    if same_index is not None and same_index.get("type") == wanted and same_index.get("link") is not None:
        return same_index
    return next((e for e in entries if e.get("type") == wanted and e.get("link") is not None), None)


def first_linked(raw: dict[str, Any]) -> dict[str, Any] | None:
    entries = raw.get("inputs") if isinstance(raw.get("inputs"), list) else []
    return next((e for e in entries if isinstance(e, dict) and e.get("link") is not None), None)


def node_pack(raw: dict[str, Any]) -> str | None:
    """The custom node pack a UI node comes from, as ComfyUI's manager records it."""
    properties = raw.get("properties")
    if not isinstance(properties, dict):
        return None
    for key in ("cnr_id", "aux_id"):
        value = properties.get(key)
        if isinstance(value, str) and value and value != "comfy-core":
            return value
    return None


def peek(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text[:60] + ("..." if len(text) > 60 else "")


def is_int_or_str(value: Any) -> bool:
    return is_int(value) or (isinstance(value, str) and bool(value))


def is_number(value: Any) -> bool:
    """A coordinate: a number of sensible size."""
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e9


def ui_position(pos: Any) -> tuple[float, float] | None:
    if isinstance(pos, dict):
        pos = [pos.get("0"), pos.get("1")]
    if isinstance(pos, list) and len(pos) >= 2 and is_number(pos[0]) and is_number(pos[1]):
        return (float(pos[0]), float(pos[1]))
    return None
