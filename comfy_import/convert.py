"""Converting a read ComfyUI graph (:class:`~comfy_import.formats.Prompt`) into a studio workflow.

Each node with a rule in :data:`~comfy_import.rules.RULES` becomes its studio node(s);
every other node is named with the reason and what to do, and every link lost with it
is listed. Two things are added that ComfyUI leaves implicit:

- an ``EmptyLatent`` gets a ``vae`` link to the VAE that decodes what is sampled from
  it (found by following the graph to a VAEDecode, else the checkpoint loader's), so a
  VAE that does not shrink by 8 still gives pictures of the size asked for;
- nodes are laid out (ComfyUI's positions in the UI format, columns by dependency depth
  in the API format, which has none).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfy_import.formats import ComfyLink, Prompt
from comfy_import.rules import NOT_YET, RULES, Rule, short

#: Layout of API-format graphs (which have no positions): pixels between dependency
#: levels (left to right) and between the nodes of one level (top to bottom).
COLUMN_SPACING = 300
ROW_SPACING = 250

#: Studio node types sized in pixels whose latent size depends on the VAE: they get a
#: ``vae`` link when the ComfyUI graph has one to give.
VAE_SIZED = frozenset(
    {
        "EmptyLatent",
        "EmptySD3LatentImage",
        "LatentUpscale",
        "LatentUpscaleBy",
        "LatentComposite",
        "LatentCrop",
    }
)


@dataclass
class Converted:
    comfy_id: str
    comfy_type: str
    nodes: list[tuple[str, str]]  # (our id, our type)
    #: "mute" or "bypass" when ComfyUI had the node muted or bypassed (its studio nodes keep it).
    mode: str | None = None


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
    #: How the file was written ("API format", "UI format 1", "... in a PNG").
    label: str = "API format"

    @property
    def complete(self) -> bool:
        return not self.not_converted

    @property
    def total(self) -> int:
        return len(self.converted) + len(self.not_converted)


def natural(text: str) -> tuple[Any, ...]:
    """Sort key: "2" before "10", "3:1" after "3"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.findall(r"\d+|\D+", text))


def reason_for(class_type: str, node: Mapping[str, Any]) -> str:
    """Why a node type is not converted, and what to do about it."""
    if class_type in NOT_YET:
        return f"no equivalent for {class_type!r}: the studio does not run this model family or node type yet"
    pack = node.get("pack")
    if isinstance(pack, str):
        return (
            f"no equivalent for {class_type!r}, a node of the custom node pack {pack!r}: "
            "rebuild that step with studio nodes or leave it out"
        )
    if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", class_type):
        return f"no equivalent for {class_type!r}: a subgraph whose definition is not in the file"
    if class_type.startswith(("workflow>", "workflow/")):
        return f"no equivalent for {class_type!r}: a group node whose definition is not in the file"
    return (
        f"no equivalent for {class_type!r}: a custom node or a ComfyUI node the studio does not have; "
        "rebuild that step with studio nodes or leave it out"
    )


def convert(prompt: Prompt, source_name: str = "") -> Conversion:
    """Convert every node with a rule; name the others and the links lost with them."""
    result = Conversion({"version": 1, "nodes": {}}, label=prompt.label)
    result.warnings.extend(prompt.warnings)
    made: dict[str, dict[str, Any]] = {}  # our id -> node
    pending: list[tuple[str, str, str, str, ComfyLink]] = []  # (our id, our input, comfy id, input, link)
    lost: list[tuple[str, str, ComfyLink, str]] = []  # links into inputs without equivalent: (.., why)
    chosen: dict[str, Rule] = {}  # comfy id -> the rule used (a variant, maybe)

    for comfy_id in sorted(prompt.nodes, key=natural):
        node = prompt.nodes[comfy_id]
        class_type = node["class_type"]
        if node.get("skipped"):
            continue
        rule = RULES.get(class_type)
        if rule is None:
            result.not_converted.append(NotConverted(comfy_id, class_type, reason_for(class_type, node)))
            continue
        inputs: dict[str, Any] = node["inputs"]
        plain = {k: v for k, v in inputs.items() if not isinstance(v, ComfyLink)}
        if rule.variant is not None:
            rule = rule.variant(plain) or rule
        chosen[comfy_id] = rule

        def warn(text: str, comfy_id: str = comfy_id, class_type: str = class_type) -> None:
            result.warnings.append(f"comfy id {comfy_id} {class_type}: {text}")

        ours = [dict(part.fixed) for part in rule.parts]
        our_ids = [our_id(comfy_id, part.suffix, prompt.nodes) for part in rule.parts]
        for name, value in inputs.items():
            targets = [(i, part.inputs[name]) for i, part in enumerate(rule.parts) if name in part.inputs]
            if not targets:
                if isinstance(value, ComfyLink):
                    why = "set it by hand" if name in rule.consumed else "that input has no equivalent"
                    lost.append((comfy_id, name, value, why))
                elif name not in rule.consumed:
                    warn(f"input {name!r} ({short(value)}) has no equivalent; dropped")
                continue
            if not isinstance(value, ComfyLink):
                if name in rule.values:
                    value = rule.values[name](value, warn)
                if not (value is None or isinstance(value, str | int | float | bool)):
                    warn(f"input {name!r} ({short(value)}) is not a plain value; dropped")
                    continue
            for index, our_name in targets:
                if isinstance(value, ComfyLink):
                    pending.append((our_ids[index], our_name, comfy_id, name, value))
                else:
                    ours[index][our_name] = value
        if rule.adjust is not None:
            extra = rule.adjust(plain, warn)
            for values in ours:
                values.update(extra)
        by_suffix = dict(zip((p.suffix for p in rule.parts), our_ids, strict=True))
        for part, values in zip(rule.parts, ours, strict=True):
            for our_name, (suffix, output) in part.links.items():
                values[our_name] = {"node": by_suffix[suffix], "output": output}

        ids = []
        for part, values, node_id in zip(rule.parts, ours, our_ids, strict=True):
            entry: dict[str, Any] = {"type": part.type, "inputs": values}
            if node.get("mode"):
                entry["mode"] = node["mode"]
            if node.get("title"):
                entry["title"] = node["title"] + part.title_suffix
            made[node_id] = entry
            ids.append((node_id, part.type))
        result.converted.append(Converted(comfy_id, class_type, ids, node.get("mode")))

    for comfy_id, name, link, why in lost:
        source_type = prompt.nodes[link.node]["class_type"]
        target_type = prompt.nodes[comfy_id]["class_type"]
        result.dropped_links.append(
            DroppedLink(link.node, source_type, link.index, comfy_id, target_type, name, why)
        )
    for node_id, our_name, comfy_id, name, link in pending:
        _connect(prompt, chosen, made, result, (node_id, our_name, comfy_id, name, link))

    for comfy_id, class_type, why in prompt.skipped:
        reason = "muted in ComfyUI" if why == "muted" else why
        result.warnings.append(f"comfy id {comfy_id} {class_type}: {reason}; left out")
    result.not_converted.sort(key=lambda n: natural(n.comfy_id))

    wire_vaes(made, result)
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


def _connect(
    prompt: Prompt,
    chosen: Mapping[str, Rule],
    made: dict[str, dict[str, Any]],
    result: Conversion,
    item: tuple[str, str, str, str, ComfyLink],
) -> None:
    """Wire one ComfyUI link into our node, or report it dropped."""
    node_id, our_name, comfy_id, name, link = item
    source = prompt.nodes[link.node]
    target_type = prompt.nodes[comfy_id]["class_type"]
    rule = chosen.get(link.node)

    def drop(why: str) -> None:
        result.dropped_links.append(
            DroppedLink(link.node, source["class_type"], link.index, comfy_id, target_type, name, why)
        )

    if source.get("skipped") == "muted":
        return drop("its source is muted")
    if source.get("skipped") == "bypassed":
        return drop("its source is bypassed and has no input of that type to pass on")
    if rule is None:
        return drop("its source was not converted")
    output = rule.outputs[link.index] if link.index < len(rule.outputs) else None
    if output is None:
        return drop("that output has no equivalent")
    suffix, output_name = output
    made[node_id]["inputs"][our_name] = {
        "node": our_id(link.node, suffix, prompt.nodes),
        "output": output_name,
    }
    return None


def our_id(comfy_id: str, suffix: str, comfy_ids: Mapping[str, Any]) -> str:
    """``comfy_id + suffix``, lengthened if another ComfyUI node already has that id."""
    node_id = comfy_id + suffix
    while suffix and node_id in comfy_ids:
        node_id += "_"
    return node_id


# --- the VAE of each EmptyLatent ------------------------------------------------------------


def wire_vaes(made: dict[str, dict[str, Any]], result: Conversion) -> None:
    """Give each pixel-sized latent node the VAE that decodes what is made from it."""
    consumers: dict[str, list[str]] = {}
    for node_id, entry in made.items():
        for value in entry["inputs"].values():
            if _is_link(value) and value["node"] in made:
                consumers.setdefault(value["node"], []).append(node_id)
    for node_id, entry in made.items():
        if entry["type"] not in VAE_SIZED or "vae" in entry["inputs"]:
            continue
        vae = _decoder_vae(node_id, made, consumers) or _checkpoint_vae(node_id, made, consumers)
        if vae is not None:
            entry["inputs"]["vae"] = vae


def _decoder_vae(start: str, made: dict[str, dict[str, Any]], consumers: dict[str, list[str]]) -> Any:
    """The ``vae`` of the nearest VAEDecode downstream of ``start`` (breadth first)."""
    queue, seen = [start], {start}
    while queue:
        node_id = queue.pop(0)
        entry = made[node_id]
        if entry["type"] == "VAEDecode" and _is_link(entry["inputs"].get("vae")):
            return dict(entry["inputs"]["vae"])
        for nxt in consumers.get(node_id, []):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return None


def _checkpoint_vae(start: str, made: dict[str, dict[str, Any]], consumers: dict[str, list[str]]) -> Any:
    """The VAE of the checkpoint whose model samples from ``start``; else the only checkpoint's."""
    queue, seen = [start], {start}
    while queue:
        node_id = queue.pop(0)
        model = made[node_id]["inputs"].get("model")
        loader = _upstream_checkpoint(model, made) if _is_link(model) else None
        if loader is not None:
            return {"node": loader, "output": "vae"}
        for nxt in consumers.get(node_id, []):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    loaders = [i for i, e in made.items() if e["type"] == "CheckpointLoader"]
    return {"node": loaders[0], "output": "vae"} if len(loaders) == 1 else None


def _upstream_checkpoint(link: dict[str, Any], made: dict[str, dict[str, Any]]) -> str | None:
    """Follow a model link up (through LoRAs, merges, patches) to its CheckpointLoader."""
    seen: set[str] = set()
    while _is_link(link) and link["node"] in made and link["node"] not in seen:
        seen.add(link["node"])
        entry = made[link["node"]]
        if entry["type"] == "CheckpointLoader":
            return link["node"]
        link = entry["inputs"].get("model") or entry["inputs"].get("model1")
    return None


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("node"), str)
        and isinstance(value.get("output"), str)
    )


# --- layout ---------------------------------------------------------------------------------


def _lay_out(made: dict[str, dict[str, Any]], prompt: Prompt) -> None:
    """Positions: ComfyUI's own (UI format), else columns by dependency depth."""
    if prompt.positions:
        for node_id, entry in made.items():
            base_id = re.sub(r"_(pos|neg|sampler|sigmas)_*$", "", node_id)
            position = prompt.positions.get(node_id) or prompt.positions.get(base_id)
            if position is not None:
                shift = 0.0
                if node_id not in prompt.positions:
                    shift = {"_neg": 160.0, "_sampler": -160.0, "_sigmas": -320.0}.get(
                        node_id[len(base_id) :].rstrip("_"), 0.0
                    )
                entry["position"] = [position[0], position[1] + shift]
        return

    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(made)
    for node_id, entry in made.items():
        for value in entry["inputs"].values():
            if isinstance(value, dict) and value.get("node") in made:
                graph.add_edge(value["node"], node_id)
    condensed = nx.condensation(graph)  # a loop (invalid anyway) shares one column
    depth: dict[str, int] = {}
    for column, generation in enumerate(nx.topological_generations(condensed)):
        for component in generation:
            for member in condensed.nodes[component]["members"]:
                depth[member] = column
    rows: dict[int, int] = {}
    for node_id in sorted(made, key=natural):
        column = depth[node_id]
        row = rows.get(column, 0)
        rows[column] = row + 1
        made[node_id]["position"] = [column * COLUMN_SPACING, row * ROW_SPACING]


def _below(made: dict[str, dict[str, Any]]) -> list[float]:
    ys = [entry["position"][1] for entry in made.values() if "position" in entry]
    xs = [entry["position"][0] for entry in made.values() if "position" in entry]
    return [min(xs, default=0.0), max(ys, default=0.0) + ROW_SPACING]
