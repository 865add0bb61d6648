"""``app.py import-comfy``: turn a ComfyUI workflow into a studio workflow.

Reads ComfyUI's API format (what "Save (API Format)" writes: node ids mapping to
``{"class_type", "inputs", "_meta"}``, links as ``[node_id, output_index]``) and its UI
format (a ``nodes`` list with ``links`` and ``widgets_values``, what "Save" writes).
Node types with an equivalent here are converted by the declarative table
:data:`RULES`; every other node is named in the report, with the links that were
dropped because their source was not converted.

The table does not look at the node registry (some target types may come from packs
that are not installed): only the final validation of the result does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_INVALID = 2

#: The largest seed the studio's Sampler takes (ComfyUI's go up to 2**64 - 1).
SEED_MAX = 2**53 - 1
#: Layout of API-format graphs (which have no positions): pixels between dependency
#: levels (left to right) and between the nodes of one level (top to bottom).
COLUMN_SPACING = 300
ROW_SPACING = 250

Warn = Callable[[str], None]
#: Turns a ComfyUI constant into ours; calls ``warn`` when the meaning changes.
ValueMap = Callable[[Any, Warn], Any]
#: Computes inputs of ours from several ComfyUI constants at once (sampler + scheduler...).
Adjust = Callable[[Mapping[str, Any], Warn], dict[str, Any]]


class ComfyError(Exception):
    """The input is not a ComfyUI workflow we can read (exit 2)."""


@dataclass(frozen=True)
class ComfyLink:
    """A ComfyUI link: output ``index`` of node ``node``."""

    node: str
    index: int


@dataclass(frozen=True)
class Part:
    """One studio node made from a ComfyUI node (most make one; some make several)."""

    type: str
    #: ComfyUI input name -> our input name.
    inputs: Mapping[str, str]
    #: Appended to the ComfyUI id to make ours ("" keeps it).
    suffix: str = ""
    #: Constants always set on this node.
    fixed: Mapping[str, Any] = field(default_factory=dict)
    #: Appended to the title.
    title_suffix: str = ""


@dataclass(frozen=True)
class Rule:
    """How one ComfyUI node type becomes studio nodes."""

    parts: tuple[Part, ...]
    #: ComfyUI output index -> (part suffix, our output name); ``None``: no equivalent.
    outputs: tuple[tuple[str, str] | None, ...]
    #: Translations of ComfyUI constants, by ComfyUI input name.
    values: Mapping[str, ValueMap] = field(default_factory=dict)
    #: ComfyUI inputs read by ``adjust`` or deliberately left out.
    consumed: frozenset[str] = frozenset()
    adjust: Adjust | None = None
    #: The order of ``widgets_values`` in ComfyUI's UI format.
    widgets: tuple[str, ...] = ()


def one(
    type_: str,
    inputs: Mapping[str, str],
    outputs: tuple[str | None, ...],
    *,
    widgets: tuple[str, ...] = (),
    values: Mapping[str, ValueMap] | None = None,
    fixed: Mapping[str, Any] | None = None,
    consumed: tuple[str, ...] = (),
    adjust: Adjust | None = None,
) -> Rule:
    """A rule that makes a single node keeping the ComfyUI id."""
    return Rule(
        parts=(Part(type_, inputs, fixed=fixed or {}),),
        outputs=tuple(None if name is None else ("", name) for name in outputs),
        values=values or {},
        consumed=frozenset(consumed),
        adjust=adjust,
        widgets=widgets,
    )


# --- value translations ------------------------------------------------------------

#: ComfyUI sampler names with an exact equivalent.
SAMPLERS: dict[str, str] = {
    "euler": "euler",
    "euler_ancestral": "euler_ancestral",
    "ddim": "ddim",
    "ddpm": "ddpm",
    "dpmpp_2m": "dpmpp_2m",
    "uni_pc": "unipc",
    "uni_pc_bh2": "unipc",
    "lcm": "lcm",
}
#: Schedulers that are (close to) the default schedule of our samplers.
PLAIN_SCHEDULERS = frozenset({"normal", "simple", "sgm_uniform"})


def closest_sampler(name: str) -> str:
    """Our sampler nearest to a ComfyUI one without an exact equivalent."""
    if name.startswith("dpmpp"):
        return "dpmpp_2m"
    if "ancestral" in name:
        return "euler_ancestral"
    if name.startswith("uni_pc"):
        return "unipc"
    if name.startswith("ddim"):
        return "ddim"
    return "euler"  # heun, dpm_2, lms, ipndm, deis, euler_cfg_pp, ...


def map_sampler(sampler_name: Any, scheduler: Any, warn: Warn) -> str:
    if not isinstance(sampler_name, str):
        warn(f"sampler_name {_short(sampler_name)} is not a sampler name; using 'euler'")
        return "euler"
    sampler = SAMPLERS.get(sampler_name)
    if sampler is None:
        sampler = closest_sampler(sampler_name)
        warn(f"sampler {sampler_name!r} has no equivalent; using the closest, {sampler!r}")
    if sampler == "dpmpp_2m" and scheduler == "karras":
        return "dpmpp_2m_karras"
    if isinstance(scheduler, str) and scheduler not in PLAIN_SCHEDULERS:
        warn(f"scheduler {scheduler!r} has no equivalent for {sampler!r}; its own schedule is used")
    return sampler


def sampler_inputs(values: Mapping[str, Any], warn: Warn) -> dict[str, Any]:
    return {"sampler": map_sampler(values.get("sampler_name"), values.get("scheduler", "normal"), warn)}


def advanced_sampler_inputs(values: Mapping[str, Any], warn: Warn) -> dict[str, Any]:
    out = sampler_inputs(values, warn)
    steps, start, end = values.get("steps"), values.get("start_at_step", 0), values.get("end_at_step")
    if values.get("add_noise", "enable") == "disable":
        warn("add_noise 'disable' has no equivalent: the studio's Sampler always adds noise")
    if _is_int(start) and start > 0:
        if _is_int(steps) and steps > 0:
            denoise = 0.0 if start >= steps else round(1.0 - start / steps, 4)
            warn(f"start_at_step {start} of {steps} approximated as denoise {denoise}")
            out["denoise"] = denoise
        else:
            warn(f"start_at_step {start} cannot be approximated without a number of steps")
    else:
        out["denoise"] = 1.0
    if _is_int(end) and _is_int(steps) and end < steps:
        warn(f"end_at_step {end} is dropped: the studio's Sampler runs all {steps} steps")
    if values.get("return_with_leftover_noise", "disable") == "enable":
        warn("return_with_leftover_noise is dropped: the studio's Sampler returns a clean latent")
    return out


def seed_value(value: Any, warn: Warn) -> Any:
    if _is_int(value) and value > SEED_MAX:
        reduced = value % (SEED_MAX + 1)
        warn(f"seed {value} is above the studio's largest ({SEED_MAX}); using {reduced}")
        return reduced
    return value


_SCALE_METHODS = {
    "nearest-exact": "nearest",
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "lanczos": "lanczos",
    "area": "bilinear",
}


def scale_method(value: Any, warn: Warn) -> Any:
    method = _SCALE_METHODS.get(value) if isinstance(value, str) else None
    if method is None:
        warn(f"upscale_method {value!r} has no equivalent; using 'bilinear'")
        return "bilinear"
    if value == "area":
        warn("upscale_method 'area' has no equivalent; using 'bilinear'")
    return method


def crop_mode(value: Any, warn: Warn) -> str:
    if value not in ("disabled", "center"):
        warn(f"crop {value!r} has no equivalent; stretching")
    return "fill" if value == "center" else "stretch"


def scale_checks(values: Mapping[str, Any], warn: Warn) -> dict[str, Any]:
    for name in ("width", "height"):
        if values.get(name) == 0:
            warn(f"{name} 0 (keep the aspect ratio) has no equivalent; give a size")
    return {}


def pad_checks(values: Mapping[str, Any], warn: Warn) -> dict[str, Any]:
    feathering = values.get("feathering", 0)
    if feathering:
        warn(f"feathering {feathering} is dropped: ImagePad's mask has a hard edge")
    return {}


#: What SaveImage accepts as a prefix (the same as nodes/image_io.py's ``_PREFIX``).
PREFIX = re.compile(r"^[\w\- .]+(/[\w\- .]+)*$")


def clean_prefix(value: Any, warn: Warn) -> Any:
    """A ComfyUI filename prefix our SaveImage takes: %tokens% and odd characters removed."""
    if not isinstance(value, str):
        return value
    text = re.sub(r"%[^%]*%", "", value)
    text = re.sub(r"[^\w\- ./]", "", text.replace("\\", "/"))
    parts = [p.strip() for p in text.split("/")]
    parts = [p for p in parts if p and p not in (".", "..")]
    cleaned = "/".join(parts) or "ComfyUI"
    if cleaned != value:
        warn(f"filename_prefix {value!r} becomes {cleaned!r} (the studio takes letters, digits, - _ . /)")
    return cleaned


def image_name(value: Any, warn: Warn) -> Any:
    """ComfyUI's "name.png [input]" annotation removed."""
    if isinstance(value, str):
        return re.sub(r"\s*\[(input|output|temp)\]$", "", value)
    return value


# --- the table ---------------------------------------------------------------------

_CONTROL_ADVANCED_INPUTS = {
    "control_net": "control_net",
    "image": "image",
    "strength": "strength",
    "start_percent": "start",
    "end_percent": "end",
}

RULES: dict[str, Rule] = {
    "CheckpointLoaderSimple": one(
        "CheckpointLoader", {"ckpt_name": "ckpt_name"}, ("model", "clip", "vae"), widgets=("ckpt_name",)
    ),
    "CLIPTextEncode": one(
        "CLIPTextEncode", {"text": "text", "clip": "clip"}, ("conditioning",), widgets=("text",)
    ),
    "EmptyLatentImage": one(
        "EmptyLatent",
        {"width": "width", "height": "height", "batch_size": "batch_size"},
        ("latent",),
        widgets=("width", "height", "batch_size"),
    ),
    "KSampler": one(
        "Sampler",
        {
            "seed": "seed",
            "steps": "steps",
            "cfg": "cfg",
            "denoise": "denoise",
            "model": "model",
            "positive": "positive",
            "negative": "negative",
            "latent_image": "latent",
        },
        ("latent",),
        values={"seed": seed_value},
        consumed=("sampler_name", "scheduler", "control_after_generate"),
        adjust=sampler_inputs,
        widgets=("seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    ),
    "KSamplerAdvanced": one(
        "Sampler",
        {
            "noise_seed": "seed",
            "steps": "steps",
            "cfg": "cfg",
            "model": "model",
            "positive": "positive",
            "negative": "negative",
            "latent_image": "latent",
        },
        ("latent",),
        values={"noise_seed": seed_value},
        consumed=(
            "add_noise",
            "sampler_name",
            "scheduler",
            "start_at_step",
            "end_at_step",
            "return_with_leftover_noise",
            "control_after_generate",
        ),
        adjust=advanced_sampler_inputs,
        widgets=(
            "add_noise",
            "noise_seed",
            "control_after_generate",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "start_at_step",
            "end_at_step",
            "return_with_leftover_noise",
        ),
    ),
    "VAEDecode": one("VAEDecode", {"samples": "latent", "vae": "vae"}, ("image",)),
    "VAEEncode": one("VAEEncode", {"pixels": "image", "vae": "vae"}, ("latent",)),
    "SaveImage": one(
        "SaveImage",
        {"images": "images", "filename_prefix": "filename_prefix"},
        (),
        values={"filename_prefix": clean_prefix},
        widgets=("filename_prefix",),
    ),
    "PreviewImage": one("PreviewImage", {"images": "images"}, ()),
    "LoadImage": one(
        "LoadImage",
        {"image": "path"},
        ("image", "mask"),
        values={"image": image_name},
        consumed=("upload",),
        widgets=("image", "upload"),
    ),
    "ControlNetLoader": one(
        "ControlNetLoader",
        {"control_net_name": "control_net_name"},
        ("control_net",),
        widgets=("control_net_name",),
    ),
    "ControlNetApply": one(
        "ControlNetApply",
        {
            "conditioning": "conditioning",
            "control_net": "control_net",
            "image": "image",
            "strength": "strength",
        },
        ("conditioning",),
        widgets=("strength",),
    ),
    "ControlNetApplyAdvanced": Rule(
        parts=(
            Part(
                "ControlNetApply",
                {"positive": "conditioning", **_CONTROL_ADVANCED_INPUTS},
                suffix="_pos",
                title_suffix=" (positive)",
            ),
            Part(
                "ControlNetApply",
                {"negative": "conditioning", **_CONTROL_ADVANCED_INPUTS},
                suffix="_neg",
                title_suffix=" (negative)",
            ),
        ),
        outputs=(("_pos", "conditioning"), ("_neg", "conditioning")),
        consumed=frozenset({"vae"}),
        widgets=("strength", "start_percent", "end_percent"),
    ),
    "LoraLoader": one(
        "LoraLoader",
        {
            "model": "model",
            "clip": "clip",
            "lora_name": "lora_name",
            "strength_model": "strength_model",
            "strength_clip": "strength_clip",
        },
        ("model", "clip"),
        widgets=("lora_name", "strength_model", "strength_clip"),
    ),
    "VAELoader": one("VAELoader", {"vae_name": "vae_name"}, ("vae",), widgets=("vae_name",)),
    "ConditioningCombine": one(
        "ConditioningCombine",
        {"conditioning_1": "conditioning_a", "conditioning_2": "conditioning_b"},
        ("conditioning",),
    ),
    "SetLatentNoiseMask": one("SetLatentNoiseMask", {"samples": "latent", "mask": "mask"}, ("latent",)),
    "ImageScale": one(
        "ImageResize",
        {"image": "image", "upscale_method": "method", "width": "width", "height": "height", "crop": "mode"},
        ("image",),
        values={"upscale_method": scale_method, "crop": crop_mode},
        adjust=scale_checks,
        widgets=("upscale_method", "width", "height", "crop"),
    ),
    "ImageInvert": one("ImageInvert", {"image": "image"}, ("image",)),
    "ImagePadForOutpaint": one(
        "ImagePad",
        {"image": "image", "left": "left", "top": "top", "right": "right", "bottom": "bottom"},
        ("image", "mask"),
        fixed={"fill": "edge"},
        consumed=("feathering",),
        adjust=pad_checks,
        widgets=("left", "top", "right", "bottom", "feathering"),
    ),
}

#: UI-format node types that exist only in ComfyUI's editor: resolved, never reported.
UI_ONLY = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- reading ComfyUI files ------------------------------------------------------------


@dataclass
class Prompt:
    """A ComfyUI graph in API form, with what the UI format adds (layout) when read from it."""

    nodes: dict[str, dict[str, Any]]  # id -> {"class_type", "inputs" (ComfyLink or constant), "title"}
    format: str = "api"
    positions: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    #: Muted (left out, as ComfyUI's API export does) and bypassed (not converted) nodes: (id, type, mode).
    skipped: list[tuple[str, str, str]] = field(default_factory=list)


def read_prompt(data: Any) -> Prompt:
    """Parsed JSON of either ComfyUI format as a :class:`Prompt`; :class:`ComfyError` if neither."""
    if not isinstance(data, dict):
        raise ComfyError(f"a ComfyUI workflow is a JSON object, not {_kind(data)}")
    if isinstance(data.get("nodes"), list):
        return _read_ui(data)
    if isinstance(data.get("nodes"), dict) and "version" in data:
        raise ComfyError("this is already a studio workflow, not a ComfyUI one")
    if isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]  # the body of a request to ComfyUI's /prompt
    return _read_api(data)


def _read_api(data: dict[str, Any]) -> Prompt:
    if not data:
        raise ComfyError("the file holds no nodes")
    nodes: dict[str, dict[str, Any]] = {}
    for node_id, raw in data.items():
        if not isinstance(raw, dict):
            raise ComfyError(f"node {node_id}: expected an object with 'class_type', got {_kind(raw)}")
        class_type = raw.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            raise ComfyError(f"node {node_id}: no 'class_type' (is this a ComfyUI API-format file?)")
        inputs = raw.get("inputs", {})
        if not isinstance(inputs, dict):
            raise ComfyError(
                f"node {node_id} ({class_type}): 'inputs' must be an object, got {_kind(inputs)}"
            )
        values: dict[str, Any] = {}
        for name, value in inputs.items():
            if isinstance(value, list):
                values[name] = _api_link(node_id, class_type, name, value)
            else:
                values[name] = value
        meta = raw.get("_meta")
        title = meta.get("title") if isinstance(meta, dict) else None
        nodes[node_id] = {
            "class_type": class_type,
            "inputs": values,
            "title": title if isinstance(title, str) else None,
        }
    _check_links(nodes)
    return Prompt(nodes)


def _api_link(node_id: str, class_type: str, name: str, value: list[Any]) -> ComfyLink:
    where = f"node {node_id} ({class_type}), input {name!r}"
    if len(value) != 2 or not isinstance(value[0], str | int) or isinstance(value[0], bool):
        raise ComfyError(f"{where}: a link must be [node_id, output_index], got {json.dumps(value)[:80]}")
    if not _is_int(value[1]):
        raise ComfyError(f"{where}: the output index of a link must be a whole number, got {value[1]!r}")
    return ComfyLink(str(value[0]), value[1])


def _check_links(nodes: dict[str, dict[str, Any]]) -> None:
    for node_id, node in nodes.items():
        for name, value in node["inputs"].items():
            if not isinstance(value, ComfyLink):
                continue
            where = f"node {node_id} ({node['class_type']}), input {name!r}"
            source = nodes.get(value.node)
            if source is None:
                raise ComfyError(f"{where}: links to node {value.node}, which does not exist")
            if value.index < 0:
                raise ComfyError(f"{where}: output index {value.index} is negative")
            rule = RULES.get(source["class_type"])
            if rule is not None and value.index >= len(rule.outputs):
                count = len(rule.outputs)
                raise ComfyError(
                    f"{where}: links to output {value.index} of node {value.node} "
                    f"({source['class_type']}), which has {count} output{'s' if count != 1 else ''}"
                )


def _read_ui(data: dict[str, Any]) -> Prompt:
    raw_nodes = data["nodes"]
    by_id: dict[str, dict[str, Any]] = {}
    for raw in raw_nodes:
        if not isinstance(raw, dict) or "id" not in raw or not isinstance(raw.get("type"), str):
            raise ComfyError("every entry of 'nodes' must be an object with an 'id' and a 'type'")
        by_id[str(raw["id"])] = raw
    if not by_id:
        raise ComfyError("the file holds no nodes")

    links: dict[int, tuple[str, int]] = {}
    for raw in _as_list(data.get("links"), "'links'"):
        if isinstance(raw, list) and len(raw) >= 5:
            link_id, origin, slot = raw[0], raw[1], raw[2]
        elif isinstance(raw, dict):
            link_id, origin, slot = raw.get("id"), raw.get("origin_id"), raw.get("origin_slot")
        else:
            raise ComfyError(f"a link must be [id, origin, slot, target, slot, type], got {str(raw)[:80]}")
        if not _is_int(link_id) or not _is_int(slot) or str(origin) not in by_id:
            raise ComfyError(f"link {json.dumps(raw)[:80]} comes from a node that does not exist")
        links[link_id] = (str(origin), slot)

    prompt = Prompt({}, format="ui")

    def resolve(link_id: Any, seen: frozenset[str] = frozenset()) -> Any:
        """A link id as a ComfyLink, through Reroutes; a PrimitiveNode's value as a constant."""
        if not _is_int(link_id) or link_id not in links:
            raise ComfyError(f"an input uses link {link_id!r}, which is not in 'links'")
        origin, slot = links[link_id]
        node = by_id[origin]
        if node["type"] == "Reroute":
            if origin in seen:
                raise ComfyError(f"Reroute nodes {', '.join(sorted(seen))} form a loop")
            for entry in _as_list(node.get("inputs"), f"node {origin} (Reroute): 'inputs'"):
                if isinstance(entry, dict) and entry.get("link") is not None:
                    return resolve(entry["link"], seen | {origin})
            return None
        if node["type"] == "PrimitiveNode":
            values = node.get("widgets_values") or [None]
            return values[0] if isinstance(values, list) else None
        return ComfyLink(origin, slot)

    for node_id, raw in by_id.items():
        class_type = raw["type"]
        title = raw.get("title") if isinstance(raw.get("title"), str) else None
        position = _ui_position(raw.get("pos"))
        if class_type in ("Note", "MarkdownNote"):
            values = raw.get("widgets_values")
            text = values[0] if isinstance(values, list) and values else None
            if isinstance(text, str) and text.strip():
                note: dict[str, Any] = {"text": text}
                if position is not None:
                    note["position"] = list(position)
                prompt.notes.append(note)
            continue
        if class_type in UI_ONLY:
            continue
        mode = raw.get("mode", 0)
        if mode in (2, 4):
            prompt.skipped.append((node_id, class_type, "muted" if mode == 2 else "bypassed"))
            continue
        rule = RULES.get(class_type)
        inputs: dict[str, Any] = {}
        widgets = raw.get("widgets_values")
        if rule is not None and isinstance(widgets, dict):
            inputs.update({k: v for k, v in widgets.items() if k in rule.widgets})
        elif rule is not None and isinstance(widgets, list):
            names = list(rule.widgets)
            if len(widgets) == len(names) - 1 and "control_after_generate" in names:
                names.remove("control_after_generate")  # saved by a ComfyUI without it
            inputs.update(zip(names, widgets, strict=False))
        for entry in _as_list(raw.get("inputs"), f"node {node_id} ({class_type}): 'inputs'"):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ComfyError(f"node {node_id} ({class_type}): malformed 'inputs' entry")
            if entry.get("link") is not None:
                value = resolve(entry["link"])
                if value is not None:
                    inputs[entry["name"]] = value
        prompt.nodes[node_id] = {"class_type": class_type, "inputs": inputs, "title": title}
        if position is not None:
            prompt.positions[node_id] = position

    for link in [v for n in prompt.nodes.values() for v in n["inputs"].values()]:
        if isinstance(link, ComfyLink) and link.node not in prompt.nodes:
            # a link from a muted or bypassed node: leave it for the report as a dropped link
            origin = by_id[link.node]
            prompt.nodes.setdefault(
                link.node, {"class_type": origin["type"], "inputs": {}, "title": None, "skipped": True}
            )
    groups = data.get("groups")
    for group in groups if isinstance(groups, list) else []:
        bounds = group.get("bounding") if isinstance(group, dict) else None
        if isinstance(bounds, list) and len(bounds) == 4 and all(_is_number(b) for b in bounds):
            entry = {"title": str(group.get("title", "")), "bounds": bounds}
            if isinstance(group.get("color"), str):
                entry["color"] = group["color"]
            prompt.groups.append(entry)
    _check_links(prompt.nodes)
    return prompt


def _as_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ComfyError(f"{what} must be a list, got {_kind(value)}")
    return value


def _is_number(value: Any) -> bool:
    """A coordinate: a number of sensible size."""
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e9


def _ui_position(pos: Any) -> tuple[float, float] | None:
    if isinstance(pos, dict):
        pos = [pos.get("0"), pos.get("1")]
    if isinstance(pos, list) and len(pos) >= 2 and _is_number(pos[0]) and _is_number(pos[1]):
        return (float(pos[0]), float(pos[1]))
    return None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(value), "a number"
    )


# --- converting -----------------------------------------------------------------------


@dataclass
class Converted:
    comfy_id: str
    comfy_type: str
    nodes: list[tuple[str, str]]  # (our id, our type)


@dataclass
class NotConverted:
    comfy_id: str
    comfy_type: str
    reason: str


@dataclass
class DroppedLink:
    source_id: str
    source_type: str
    output: int
    target_id: str
    target_type: str
    input: str
    reason: str

    def __str__(self) -> str:
        return (
            f"comfy {self.source_id} {self.source_type} output {self.output} -> "
            f"comfy {self.target_id} {self.target_type} input {self.input!r} ({self.reason})"
        )


@dataclass
class Conversion:
    """The studio workflow made from a ComfyUI one, and what happened on the way."""

    workflow: dict[str, Any]
    converted: list[Converted] = field(default_factory=list)
    not_converted: list[NotConverted] = field(default_factory=list)
    dropped_links: list[DroppedLink] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.not_converted


def _natural(text: str) -> tuple[Any, ...]:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.findall(r"\d+|\D+", text))


def convert(prompt: Prompt, source_name: str = "") -> Conversion:
    """Convert every node with a rule; name the others and the links lost with them."""
    result = Conversion({"version": 1, "nodes": {}})
    made: dict[str, dict[str, Any]] = {}  # our id -> node
    pending: list[tuple[str, str, str, str, ComfyLink]] = []  # (our id, our input, comfy id, input, link)
    lost: list[tuple[str, str, ComfyLink, str]] = []  # links into inputs without equivalent: (.., why)

    for comfy_id in sorted(prompt.nodes, key=_natural):
        node = prompt.nodes[comfy_id]
        class_type = node["class_type"]
        if node.get("skipped"):
            continue
        rule = RULES.get(class_type)
        if rule is None:
            result.not_converted.append(
                NotConverted(comfy_id, class_type, f"no equivalent for {class_type!r}")
            )
            continue

        def warn(text: str, comfy_id: str = comfy_id, class_type: str = class_type) -> None:
            result.warnings.append(f"comfy id {comfy_id} {class_type}: {text}")

        inputs: dict[str, Any] = node["inputs"]
        ours = [dict(part.fixed) for part in rule.parts]
        our_ids = [_our_id(comfy_id, part.suffix, prompt.nodes) for part in rule.parts]
        for name, value in inputs.items():
            targets = [(i, part.inputs[name]) for i, part in enumerate(rule.parts) if name in part.inputs]
            if not targets:
                if isinstance(value, ComfyLink):
                    why = "set it by hand" if name in rule.consumed else "that input has no equivalent"
                    lost.append((comfy_id, name, value, why))
                elif name not in rule.consumed:
                    warn(f"input {name!r} ({_short(value)}) has no equivalent; dropped")
                continue
            if not isinstance(value, ComfyLink):
                if name in rule.values:
                    value = rule.values[name](value, warn)
                if not (value is None or isinstance(value, str | int | float | bool)):
                    warn(f"input {name!r} ({_short(value)}) is not a plain value; dropped")
                    continue
            for index, our_name in targets:
                if isinstance(value, ComfyLink):
                    pending.append((our_ids[index], our_name, comfy_id, name, value))
                else:
                    ours[index][our_name] = value
        if rule.adjust is not None:
            plain = {k: v for k, v in inputs.items() if not isinstance(v, ComfyLink)}
            extra = rule.adjust(plain, warn)
            for values in ours:
                values.update(extra)

        ids = []
        for part, values, our_id in zip(rule.parts, ours, our_ids, strict=True):
            entry: dict[str, Any] = {"type": part.type, "inputs": values}
            if node.get("title"):
                entry["title"] = node["title"] + part.title_suffix
            made[our_id] = entry
            ids.append((our_id, part.type))
        result.converted.append(Converted(comfy_id, class_type, ids))

    for comfy_id, name, link, why in lost:
        source_type = prompt.nodes[link.node]["class_type"]
        target_type = prompt.nodes[comfy_id]["class_type"]
        result.dropped_links.append(
            DroppedLink(link.node, source_type, link.index, comfy_id, target_type, name, why)
        )
    for our_id, our_name, comfy_id, name, link in pending:
        source = prompt.nodes[link.node]
        target_type = prompt.nodes[comfy_id]["class_type"]
        rule = RULES.get(source["class_type"])
        if rule is None or source.get("skipped"):
            why = (
                "its source is muted or bypassed" if source.get("skipped") else "its source was not converted"
            )
            result.dropped_links.append(
                DroppedLink(link.node, source["class_type"], link.index, comfy_id, target_type, name, why)
            )
            continue
        output = rule.outputs[link.index]
        if output is None:
            result.dropped_links.append(
                DroppedLink(
                    link.node,
                    source["class_type"],
                    link.index,
                    comfy_id,
                    target_type,
                    name,
                    "that output has no equivalent",
                )
            )
            continue
        suffix, output_name = output
        source_id = _our_id(link.node, suffix, prompt.nodes)
        made[our_id]["inputs"][our_name] = {"node": source_id, "output": output_name}

    for comfy_id, class_type, mode in prompt.skipped:
        if mode == "muted":
            result.warnings.append(f"comfy id {comfy_id} {class_type}: muted in ComfyUI; left out")
        else:
            reason = "bypassed in ComfyUI (the studio has no bypass; reconnect around it)"
            result.not_converted.append(NotConverted(comfy_id, class_type, reason))
    result.not_converted.sort(key=lambda n: _natural(n.comfy_id))

    _lay_out(made, prompt)
    result.workflow["nodes"] = made
    notes = list(prompt.notes)
    if result.not_converted:
        lines = [f"{n.comfy_id} {n.comfy_type}: {n.reason}" for n in result.not_converted]
        notes.append({"text": "Not converted from ComfyUI:\n" + "\n".join(lines), "position": _below(made)})
    if notes:
        result.workflow["notes"] = notes
    if prompt.groups:
        result.workflow["groups"] = prompt.groups
    result.workflow["metadata"] = {
        "imported_from": {"format": f"comfyui-{prompt.format}", "file": source_name},
        "description": f"Imported from the ComfyUI workflow {source_name}".rstrip() + ".",
    }
    return result


def _our_id(comfy_id: str, suffix: str, comfy_ids: Mapping[str, Any]) -> str:
    """``comfy_id + suffix``, lengthened if another ComfyUI node already has that id."""
    our_id = comfy_id + suffix
    while suffix and our_id in comfy_ids:
        our_id += "_"
    return our_id


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _lay_out(made: dict[str, dict[str, Any]], prompt: Prompt) -> None:
    """Positions: ComfyUI's own (UI format), else columns by dependency depth."""
    if prompt.positions:
        for our_id, entry in made.items():
            base_id = our_id.removesuffix("_pos").removesuffix("_neg")
            position = prompt.positions.get(our_id) or prompt.positions.get(base_id)
            if position is not None:
                shift = 160.0 if our_id.endswith("_neg") and our_id not in prompt.positions else 0.0
                entry["position"] = [position[0], position[1] + shift]
        return

    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(made)
    for our_id, entry in made.items():
        for value in entry["inputs"].values():
            if isinstance(value, dict) and value.get("node") in made:
                graph.add_edge(value["node"], our_id)
    condensed = nx.condensation(graph)  # a loop (invalid anyway) shares one column
    depth: dict[str, int] = {}
    for column, generation in enumerate(nx.topological_generations(condensed)):
        for component in generation:
            for node_id in condensed.nodes[component]["members"]:
                depth[node_id] = column
    rows: dict[int, int] = {}
    for our_id in sorted(made, key=_natural):
        column = depth[our_id]
        row = rows.get(column, 0)
        rows[column] = row + 1
        made[our_id]["position"] = [column * COLUMN_SPACING, row * ROW_SPACING]


def _below(made: dict[str, dict[str, Any]]) -> list[float]:
    ys = [entry["position"][1] for entry in made.values() if "position" in entry]
    xs = [entry["position"][0] for entry in made.values() if "position" in entry]
    return [min(xs, default=0.0), max(ys, default=0.0) + ROW_SPACING]


# --- the command --------------------------------------------------------------------


def default_out(path: Path) -> Path:
    return path.with_name(path.stem + ".studio.json")


def load_file(path: Path) -> Prompt:
    from graph.workflow import parse_json

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ComfyError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ComfyError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = parse_json(text)
    except json.JSONDecodeError as exc:
        raise ComfyError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ComfyError(f"{path} is not valid JSON: {exc}") from None
    return read_prompt(data)


def import_comfy_command(args: argparse.Namespace) -> int:
    path = Path(args.file)
    out = Path(args.out) if args.out else default_out(path)
    try:
        prompt = load_file(path)
    except ComfyError as exc:
        return _fail(str(exc), args.json)
    if out.exists():
        return _fail(f"{out} already exists; it is never overwritten: choose another --out", args.json)

    result = convert(prompt, path.name)
    written = bool(result.converted)
    issues: list[Any] = []
    if written:
        from cli.info import load_registry  # the built-in packs and any --pack
        from graph.validate import validate

        issues = validate(result.workflow, load_registry(args)).issues
        try:
            with out.open("x", encoding="utf-8") as handle:
                handle.write(json.dumps(result.workflow, indent=2) + "\n")
        except FileExistsError:
            return _fail(f"{out} already exists; it is never overwritten: choose another --out", args.json)
        except OSError as exc:
            return _fail(f"cannot write {out}: {exc.strerror or exc}", args.json)
    code = EXIT_OK if result.complete else EXIT_PARTIAL
    if args.json:
        print(json.dumps(_json_report(result, issues, out if written else None, code), indent=2))
    else:
        _print_report(result, issues, path, out if written else None)
    return code


def _fail(message: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"exit_code": EXIT_INVALID, "error": message}))
    else:
        print(f"error: {message}", file=sys.stderr)
    return EXIT_INVALID


def _converted_line(item: Converted) -> str:
    if len(item.nodes) == 1 and item.nodes[0][0] == item.comfy_id:
        return f"comfy id {item.comfy_id} {item.comfy_type} -> {item.nodes[0][1]}"
    made = ", ".join(f"{node_type} {node_id!r}" for node_id, node_type in item.nodes)
    return f"comfy id {item.comfy_id} {item.comfy_type} -> {made}"


def _print_report(result: Conversion, issues: list[Any], path: Path, out: Path | None) -> None:
    total = len(result.converted) + len(result.not_converted)
    print(f"{path}: converted {len(result.converted)} of {total} ComfyUI nodes")
    for item in result.converted:
        print(f"  {_converted_line(item)}")
    if result.not_converted:
        print("not converted:")
        for missing in result.not_converted:
            print(f"  comfy id {missing.comfy_id} {missing.comfy_type}: {missing.reason}")
    if result.dropped_links:
        print("links dropped:")
        for dropped in result.dropped_links:
            print(f"  {dropped}")
    if result.warnings:
        print("warnings:")
        for warning in result.warnings:
            print(f"  {warning}")
    if out is None:
        print("nothing could be converted; no file written")
        return
    if issues:
        count = f"{len(issues)} problem{'s' if len(issues) != 1 else ''}"
        print(f"validation of the result: {count} (fix them in the studio or the file):")
        for issue in issues:
            print(f"  - {issue}")
    else:
        print("validation of the result: valid")
    print(f"wrote {out}")


def _json_report(result: Conversion, issues: list[Any], out: Path | None, code: int) -> dict[str, Any]:
    return {
        "exit_code": code,
        "complete": result.complete,
        "out": str(out) if out is not None else None,
        "converted": [
            {
                "comfy_id": c.comfy_id,
                "comfy_type": c.comfy_type,
                "nodes": [{"id": i, "type": t} for i, t in c.nodes],
                "text": _converted_line(c),
            }
            for c in result.converted
        ],
        "not_converted": [
            {"comfy_id": n.comfy_id, "comfy_type": n.comfy_type, "reason": n.reason}
            for n in result.not_converted
        ],
        "dropped_links": [
            {
                "source_id": d.source_id,
                "source_type": d.source_type,
                "output": d.output,
                "target_id": d.target_id,
                "target_type": d.target_type,
                "input": d.input,
                "reason": d.reason,
                "text": str(d),
            }
            for d in result.dropped_links
        ],
        "warnings": result.warnings,
        "issues": [i.to_dict() for i in issues],
    }
