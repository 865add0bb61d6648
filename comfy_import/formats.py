"""Reading ComfyUI files: the API format, the UI format (0.4 and 1) and PNGs.

Everything is read into one :class:`Prompt`: ComfyUI's graph in API form (node id ->
class type, inputs as constants or :class:`ComfyLink`), plus what the UI format adds
(positions, notes, groups). The UI format's editor-only constructs are resolved here,
as ComfyUI's own "Save (API Format)" does:

- ``Reroute`` chains are followed to their source; a ``PrimitiveNode`` (or the newer
  ``PrimitiveInt``/``PrimitiveFloat``/``PrimitiveString``/``PrimitiveBoolean``) becomes
  the value it drives;
- muted (mode 2) and bypassed (mode 4) nodes whose type converts keep their mode
  ("mute", "bypass": the studio runs them as ComfyUI does); those whose type does not
  convert are resolved here: a muted one is left out, a bypassed one passes its input of
  each output's type straight on to its consumers, as ComfyUI does at run time;
- subgraphs (``definitions.subgraphs``, a node whose type is a subgraph's id) and group
  nodes (``extra.groupNodes``, types ``workflow>Name`` / ``workflow/Name``) are expanded
  into their inner nodes, with ids ``<outer id>:<inner id>``, nested ones included.

An odd entry (a top-level key that is not a node, a malformed node or link) is left
out with a warning; only a file with no readable node at all is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from comfy_import.rules import PRIMITIVES, RULES, is_int


class ComfyError(Exception):
    """The input is not a ComfyUI workflow we can read (exit 2)."""


@dataclass(frozen=True)
class ComfyLink:
    """A ComfyUI link: output ``index`` of node ``node``."""

    node: str
    index: int


@dataclass
class Prompt:
    """A ComfyUI graph in API form, with what the UI format adds (layout) when read from it."""

    #: id -> {"class_type", "inputs" (ComfyLink or constant), "title", and optionally
    #: "pack" (the custom node pack it comes from), "mode" ("mute" or "bypass": kept on the
    #: studio node), "skipped" ("muted" or "bypassed": left out, for a type that does not convert)}.
    nodes: dict[str, dict[str, Any]]
    #: "api" or "ui" (the workflow's metadata says ``comfyui-<format>``).
    format: str = "api"
    #: How the file was written, for people: "API format", "UI format 1", ...
    label: str = "API format"
    positions: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    #: Muted nodes, left out as ComfyUI does when it runs them: (id, type, "muted").
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    #: What reading left out or resolved, for the report.
    warnings: list[str] = field(default_factory=list)


def read_prompt(data: Any) -> Prompt:
    """Parsed JSON of either ComfyUI format as a :class:`Prompt`; :class:`ComfyError` if neither."""
    if not isinstance(data, dict):
        raise ComfyError(f"a ComfyUI workflow is a JSON object, not {kind(data)}")
    if isinstance(data.get("nodes"), list):
        return _UiReader(data).read()
    if isinstance(data.get("nodes"), dict) and "version" in data:
        raise ComfyError("this is already a studio workflow, not a ComfyUI one")
    if isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]  # the body of a request to ComfyUI's /prompt
    return _read_api(data)


def looks_like_comfy(data: Any) -> bool:
    """Whether parsed JSON is a ComfyUI workflow (either format) rather than a studio one."""
    if not isinstance(data, dict):
        return False
    if isinstance(data.get("nodes"), list):
        return True
    if isinstance(data.get("nodes"), dict):
        return False
    if isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]
    return any(isinstance(v, dict) and isinstance(v.get("class_type"), str) for v in data.values())


# --- the API format -------------------------------------------------------------------


def _read_api(data: dict[str, Any]) -> Prompt:
    prompt = Prompt({})
    problems: dict[str, str] = {}
    for node_id, raw in data.items():
        try:
            prompt.nodes[str(node_id)] = _api_node(str(node_id), raw)
        except ComfyError as exc:
            problems[str(node_id)] = str(exc)
    if not prompt.nodes:
        first = next(iter(problems.values()), "")
        raise ComfyError("the file holds no nodes" + (f": {first}" if first else ""))
    prompt.warnings.extend(f"{problem}; left out" for problem in problems.values())
    _check_links(prompt, strict=True, left_out=set(problems))
    return prompt


def _api_node(node_id: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ComfyError(f"node {node_id}: expected an object with 'class_type', got {kind(raw)}")
    class_type = raw.get("class_type")
    if not isinstance(class_type, str) or not class_type:
        raise ComfyError(f"node {node_id}: no 'class_type' (is this a ComfyUI API-format file?)")
    inputs = raw.get("inputs", {})
    if not isinstance(inputs, dict):
        raise ComfyError(f"node {node_id} ({class_type}): 'inputs' must be an object, got {kind(inputs)}")
    values: dict[str, Any] = {}
    for name, value in inputs.items():
        values[name] = _api_link(node_id, class_type, name, value) if isinstance(value, list) else value
    meta = raw.get("_meta")
    title = meta.get("title") if isinstance(meta, dict) else None
    return {"class_type": class_type, "inputs": values, "title": title if isinstance(title, str) else None}


def _api_link(node_id: str, class_type: str, name: str, value: list[Any]) -> ComfyLink:
    where = f"node {node_id} ({class_type}), input {name!r}"
    if len(value) != 2 or not isinstance(value[0], str | int) or isinstance(value[0], bool):
        raise ComfyError(f"{where}: a link must be [node_id, output_index], got {json.dumps(value)[:80]}")
    if not is_int(value[1]):
        raise ComfyError(f"{where}: the output index of a link must be a whole number, got {value[1]!r}")
    return ComfyLink(str(value[0]), value[1])


def _check_links(prompt: Prompt, strict: bool, left_out: frozenset[str] | set[str] = frozenset()) -> None:
    """Links to nodes that do not exist or to outputs they do not have: refused when
    ``strict`` (API files are machine-written), else dropped with a warning."""
    for node_id, node in prompt.nodes.items():
        for name, value in list(node["inputs"].items()):
            if not isinstance(value, ComfyLink):
                continue
            where = f"node {node_id} ({node['class_type']}), input {name!r}"
            source = prompt.nodes.get(value.node)
            problem = None
            if source is None:
                if value.node in left_out:
                    problem = f"links to node {value.node}, which was left out"
                else:
                    problem = f"links to node {value.node}, which does not exist"
            elif value.index < 0:
                problem = f"output index {value.index} is negative"
            else:
                rule = RULES.get(source["class_type"])
                if rule is not None and value.index >= len(rule.outputs):
                    count = len(rule.outputs)
                    problem = (
                        f"links to output {value.index} of node {value.node} "
                        f"({source['class_type']}), which has {count} output{'s' if count != 1 else ''}"
                    )
            if problem is None:
                continue
            if strict and not (source is None and value.node in left_out):
                raise ComfyError(f"{where}: {problem}")
            prompt.warnings.append(f"{where}: {problem}; the link is dropped")
            del node["inputs"][name]


# --- the UI format --------------------------------------------------------------------

#: ComfyUI's node modes the studio keeps on a converted node: 2 ("never") and 4 (bypass).
COMFY_MODES = {2: "mute", 4: "bypass"}

#: The ids of a subgraph's input and output nodes when its definition does not say.
SUBGRAPH_INPUT_ID = "-10"
SUBGRAPH_OUTPUT_ID = "-20"
#: How deep subgraphs and group nodes may nest (a definition that contains itself stops here).
MAX_NESTING = 16


@dataclass(frozen=True)
class Const:
    """A constant that drives an input (a PrimitiveNode's value, a subgraph's widget)."""

    value: Any


#: What an input resolves to: a node's output, a constant, or nothing.
Source = ComfyLink | Const | None


@dataclass
class _Scope:
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


class _UiReader:
    """Reads a UI-format workflow (nodes list + links) into a :class:`Prompt`."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        version = data.get("version")
        label = "UI format" + (f" {version}" if isinstance(version, int | float | str) else "")
        self.prompt = Prompt({}, format="ui", label=label)
        self.subgraphs = self._subgraph_definitions()
        extra = data.get("extra")
        group_nodes = extra.get("groupNodes") if isinstance(extra, dict) else None
        self.group_nodes: dict[str, Any] = group_nodes if isinstance(group_nodes, dict) else {}

    def warn(self, text: str) -> None:
        self.prompt.warnings.append(text)

    def read(self) -> Prompt:
        nodes = self._index_nodes(self.data["nodes"], "")
        if not nodes:
            raise ComfyError("the file holds no nodes")
        links = self._index_links(self.data.get("links"), nodes, "")
        scope = _Scope("", nodes, links)
        self._emit(scope)
        self._groups()
        _check_links(self.prompt, strict=False)
        return self.prompt

    # -- indexing ------------------------------------------------------------------------

    def _subgraph_definitions(self) -> dict[str, dict[str, Any]]:
        definitions = self.data.get("definitions")
        listed = definitions.get("subgraphs") if isinstance(definitions, dict) else None
        found: dict[str, dict[str, Any]] = {}
        for entry in listed if isinstance(listed, list) else []:
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("id"), str)
                and isinstance(entry.get("nodes"), list)
            ):
                found[entry["id"]] = entry
            else:
                self.warn("a subgraph definition without an 'id' or 'nodes' is left out")
        return found

    def _index_nodes(self, raw_nodes: list[Any], where: str) -> dict[str, dict[str, Any]]:
        nodes: dict[str, dict[str, Any]] = {}
        for raw in raw_nodes:
            if (
                not isinstance(raw, dict)
                or not is_int_or_str(raw.get("id"))
                or not isinstance(raw.get("type"), str)
            ):
                self.warn(f"{where}a node entry without an 'id' and a 'type' is left out: {_peek(raw)}")
                continue
            nodes[str(raw["id"])] = raw
        return nodes

    def _index_links(
        self, raw_links: Any, nodes: dict[str, dict[str, Any]], where: str
    ) -> dict[Any, tuple[str, int, Any]]:
        links: dict[Any, tuple[str, int, Any]] = {}
        if raw_links is not None and not isinstance(raw_links, list):
            self.warn(f"{where}'links' is {kind(raw_links)}, not a list; no links are read")
            return links
        for raw in raw_links or []:
            if isinstance(raw, list) and len(raw) >= 5:
                link_id, origin, slot = raw[0], raw[1], raw[2]
                link_type = raw[5] if len(raw) > 5 else None
            elif isinstance(raw, dict):
                link_id, origin, slot = raw.get("id"), raw.get("origin_id"), raw.get("origin_slot")
                link_type = raw.get("type")
            else:
                self.warn(f"{where}a link that is neither a list nor an object is left out: {_peek(raw)}")
                continue
            if not is_int(link_id) or not is_int(slot) or not is_int_or_str(origin):
                self.warn(f"{where}a malformed link is left out: {_peek(raw)}")
                continue
            links[link_id] = (str(origin), slot, link_type)
        return links

    # -- emitting nodes --------------------------------------------------------------------

    def _emit(self, scope: _Scope) -> None:
        for local, raw in scope.nodes.items():
            class_type = raw["type"]
            if class_type in ("Note", "MarkdownNote"):
                self._note(scope, raw)
                continue
            if class_type in ("Reroute", "PrimitiveNode") or class_type in PRIMITIVES:
                continue
            mode = raw.get("mode", 0)
            kept = kept_mode(raw)
            if kept is not None:
                self._node(scope, local, raw, kept)
                continue
            if mode == 2:
                self.prompt.skipped.append((scope.qid(local), class_type, "muted"))
                continue
            if mode == 4:
                self.warn(
                    f"comfy id {scope.qid(local)} {class_type}: bypassed in ComfyUI; "
                    "its inputs are passed straight on, as ComfyUI does"
                )
                continue
            if self._container(class_type) is not None:
                self._expand(scope, local)
                continue
            gap = _dead_end_gap(raw)
            if gap is not None:
                reason = f"feeds nothing and its input {gap!r} is not connected, so ComfyUI never runs it"
                self.prompt.skipped.append((scope.qid(local), class_type, reason))
                continue
            self._node(scope, local, raw)

    def _note(self, scope: _Scope, raw: dict[str, Any]) -> None:
        values = raw.get("widgets_values")
        text = values[0] if isinstance(values, list) and values else None
        if not isinstance(text, str) or not text.strip():
            return
        note: dict[str, Any] = {"text": text}
        position = self._position(scope, raw)
        if position is not None:
            note["position"] = list(position)
        self.prompt.notes.append(note)

    def _position(self, scope: _Scope, raw: dict[str, Any]) -> tuple[float, float] | None:
        position = ui_position(raw.get("pos"))
        if scope.origin_pos is None or position is None:
            return position if scope.prefix == "" else scope.origin_pos
        return (scope.origin_pos[0] + position[0] / 4, scope.origin_pos[1] + position[1] / 4)

    def _node(self, scope: _Scope, local: str, raw: dict[str, Any], mode: str | None = None) -> None:
        node_id = scope.qid(local)
        class_type = raw["type"]
        inputs: dict[str, Any] = widget_inputs(class_type, raw.get("widgets_values"))
        if raw.get("widgets_values") is None:
            named = _model_from_properties(class_type, raw)
            if named:
                inputs.update(named)
                self.warn(
                    f"comfy id {node_id} {class_type}: its widget values were not saved; "
                    f"{', '.join(f'{k} {v!r}' for k, v in named.items())} comes from the file's model "
                    "list, the other values take their defaults"
                )
        entries = raw.get("inputs")
        if entries is not None and not isinstance(entries, list):
            self.warn(f"comfy id {node_id} {class_type}: 'inputs' is {kind(entries)}, not a list; ignored")
            entries = []
        for entry in entries or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                self.warn(f"comfy id {node_id} {class_type}: a malformed 'inputs' entry is ignored")
                continue
            if entry.get("link") is None:
                continue
            source = self._resolve(scope, entry["link"], frozenset(), f"comfy id {node_id} {class_type}")
            if isinstance(source, Const):
                inputs[entry["name"]] = source.value
            elif source is not None:
                inputs[entry["name"]] = source
        title = raw.get("title") if isinstance(raw.get("title"), str) else None
        node: dict[str, Any] = {"class_type": class_type, "inputs": inputs, "title": title}
        if mode is not None:
            node["mode"] = mode
        pack = _pack(raw)
        if pack:
            node["pack"] = pack
        self.prompt.nodes[node_id] = node
        position = self._position(scope, raw)
        if position is not None:
            self.prompt.positions[node_id] = position

    # -- resolving links ---------------------------------------------------------------------

    def _resolve(self, scope: _Scope, link_id: Any, seen: frozenset[str], who: str) -> Source:
        """A link of ``scope`` as what it carries: through Reroutes, bypassed nodes and the
        boundaries of subgraphs and group nodes."""
        found = scope.links.get(link_id) if isinstance(link_id, int | str | tuple) else None
        if found is None:
            self.warn(f"{who}: an input uses link {link_id!r}, which is not in 'links'; left unconnected")
            return None
        origin, slot, link_type = found
        return self._origin(scope, origin, slot, link_type, seen, who)

    def _origin(
        self, scope: _Scope, origin: str, slot: int, link_type: Any, seen: frozenset[str], who: str
    ) -> Source:
        if origin == scope.input_node:
            return scope.bindings[slot] if 0 <= slot < len(scope.bindings) else None
        raw = scope.nodes.get(origin)
        if raw is None:
            self.warn(
                f"{who}: a link comes from node {scope.qid(origin)}, which does not exist; left unconnected"
            )
            return None
        if origin in seen:
            self.warn(f"{who}: nodes {', '.join(sorted(seen))} pass a link round in a loop; left unconnected")
            return None
        class_type = raw["type"]
        mode = raw.get("mode", 0)
        if kept_mode(raw) is not None:
            return ComfyLink(scope.qid(origin), slot)  # the node is kept, with its mode
        if class_type == "Reroute" or (mode == 4 and class_type != "PrimitiveNode"):
            entry = _pass_through(raw, slot, link_type)
            if entry is None:
                if mode == 4:
                    return self._skipped(scope, origin, slot, "bypassed")
                return None
            return self._resolve(scope, entry["link"], seen | {origin}, who)
        if class_type == "PrimitiveNode" or class_type in PRIMITIVES:
            linked = _first_linked(raw)
            if linked is not None and class_type in PRIMITIVES:
                return self._resolve(scope, linked["link"], seen | {origin}, who)
            values = raw.get("widgets_values")
            return Const(values[0] if isinstance(values, list) and values else None)
        if mode == 2:
            return self._skipped(scope, origin, slot, "muted")
        if self._container(class_type) is not None:
            outputs = self._expand(scope, origin)
            return outputs[slot] if 0 <= slot < len(outputs) else None
        return ComfyLink(scope.qid(origin), slot)

    def _skipped(self, scope: _Scope, origin: str, slot: int, how: str) -> ComfyLink:
        """A link from a muted node (or a bypassed one with nothing to pass on): kept so the
        report names it as a dropped link."""
        node_id = scope.qid(origin)
        class_type = scope.nodes[origin]["type"]
        self.prompt.nodes.setdefault(
            node_id, {"class_type": class_type, "inputs": {}, "title": None, "skipped": how}
        )
        return ComfyLink(node_id, slot)

    # -- subgraphs and group nodes -----------------------------------------------------------

    def _container(self, class_type: str) -> tuple[str, Any] | None:
        """("subgraph", definition) or ("group node", definition) for such a node type."""
        if class_type in self.subgraphs:
            return "subgraph", self.subgraphs[class_type]
        for prefix in ("workflow>", "workflow/"):
            if class_type.startswith(prefix) and isinstance(
                self.group_nodes.get(class_type[len(prefix) :]), dict
            ):
                return "group node", self.group_nodes[class_type[len(prefix) :]]
        return None

    def _expand(self, scope: _Scope, local: str) -> list[Source]:
        """Emit the inner nodes of a subgraph or group node instance (once); its outputs."""
        if local in scope.expanded:
            return scope.expanded[local]
        scope.expanded[local] = []  # a definition that reaches itself stops here
        raw = scope.nodes[local]
        found = self._container(raw["type"])
        assert found is not None
        what, definition = found
        node_id = scope.qid(local)
        name = (
            definition.get("name") if what == "subgraph" else raw["type"].split(">", 1)[-1].split("/", 1)[-1]
        )
        if scope.depth >= MAX_NESTING:
            self.warn(f"comfy id {node_id}: {what} {name!r} nests deeper than {MAX_NESTING} levels; left out")
            return []
        who = f"comfy id {node_id} {what} {name!r}"
        if what == "subgraph":
            outputs = self._expand_subgraph(scope, local, raw, definition, who)
        else:
            outputs = self._expand_group_node(scope, local, raw, definition, who)
        scope.expanded[local] = outputs
        return outputs

    def _instance_bindings(self, scope: _Scope, raw: dict[str, Any], who: str) -> list[tuple[str, Source]]:
        """(name, source) of an instance's inputs, in order: links resolved in the outer
        scope, unlinked widgets from the instance's ``widgets_values``."""
        entries = raw.get("inputs") if isinstance(raw.get("inputs"), list) else []
        values = raw.get("widgets_values")
        widget_values = list(values) if isinstance(values, list) else []
        bound: list[tuple[str, Source]] = []
        for entry in entries:
            if not isinstance(entry, dict):
                bound.append(("", None))
                continue
            name = entry.get("name") if isinstance(entry.get("name"), str) else ""
            source: Source = None
            if entry.get("link") is not None:
                source = self._resolve(scope, entry["link"], frozenset(), who)
                if isinstance(entry.get("widget"), dict) and widget_values:
                    widget_values.pop(0)
            elif isinstance(entry.get("widget"), dict) and widget_values:
                source = Const(widget_values.pop(0))
            bound.append((name, source))
        return bound

    def _expand_subgraph(
        self, scope: _Scope, local: str, raw: dict[str, Any], definition: dict[str, Any], who: str
    ) -> list[Source]:
        node_id = scope.qid(local)
        inner_nodes = self._index_nodes(definition["nodes"], f"{who}: ")
        input_node = _special_id(definition.get("inputNode"), SUBGRAPH_INPUT_ID)
        output_node = _special_id(definition.get("outputNode"), SUBGRAPH_OUTPUT_ID)
        links = self._index_links(definition.get("links"), inner_nodes, f"{who}: ")
        declared = definition.get("inputs") if isinstance(definition.get("inputs"), list) else []
        bound = self._instance_bindings(scope, raw, who)
        bindings: list[Source] = []
        by_name = {name: source for name, source in bound if name}
        for index, spec in enumerate(declared):
            name = spec.get("name") if isinstance(spec, dict) else None
            if index < len(bound) and (not name or bound[index][0] in ("", name)):
                bindings.append(bound[index][1])
            else:
                bindings.append(by_name.get(name) if isinstance(name, str) else None)
        inner = _Scope(
            node_id + ":",
            inner_nodes,
            links,
            input_node=input_node,
            bindings=bindings,
            depth=scope.depth + 1,
            origin_pos=self._position(scope, raw),
        )
        self._emit(inner)
        outputs: list[Source] = []
        declared_out = definition.get("outputs") if isinstance(definition.get("outputs"), list) else []
        into_output = _links_into(definition.get("links"), output_node)
        for index, spec in enumerate(declared_out):
            link_ids = spec.get("linkIds") if isinstance(spec, dict) else None
            link_id = link_ids[0] if isinstance(link_ids, list) and link_ids else into_output.get(index)
            outputs.append(None if link_id is None else self._resolve(inner, link_id, frozenset(), who))
        if not declared_out:
            outputs = [self._resolve(inner, into_output[k], frozenset(), who) for k in sorted(into_output)]
        return outputs

    def _expand_group_node(
        self, scope: _Scope, local: str, raw: dict[str, Any], definition: dict[str, Any], who: str
    ) -> list[Source]:
        """A legacy group node: its inner nodes are listed by index; their inputs not linked
        inside are the instance's inputs, their outputs not used inside (or marked external)
        its outputs, and the instance's widget values are theirs, in order."""
        node_id = scope.qid(local)
        listed = definition.get("nodes") if isinstance(definition.get("nodes"), list) else []
        inner_nodes: dict[str, dict[str, Any]] = {}
        for position, item in enumerate(listed):
            if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                self.warn(f"{who}: a malformed inner node is left out")
                continue
            index = item.get("index", position)
            inner_nodes[str(index)] = dict(item, id=index)
        links: dict[Any, tuple[str, int, Any]] = {}
        inside: set[tuple[str, int]] = set()  # (target, slot) linked inside
        used: set[tuple[str, int]] = set()  # (origin, slot) used inside
        raw_links = definition.get("links") if isinstance(definition.get("links"), list) else []
        for number, item in enumerate(raw_links):
            if not (isinstance(item, list) and len(item) >= 4 and all(is_int(v) for v in item[:4])):
                continue
            origin, oslot, target, tslot = (str(item[0]), item[1], str(item[2]), item[3])
            links[("group", number)] = (origin, oslot, item[5] if len(item) > 5 else None)
            inside.add((target, tslot))
            used.add((origin, oslot))
        external = {
            (str(e[0]), e[1])
            for e in definition.get("external") or []
            if isinstance(e, list) and len(e) >= 2 and is_int(e[1])
        }
        bound = [source for _, source in self._instance_bindings(scope, raw, who)]
        wanted_widgets = sum(
            len(n.get("widgets_values") or [])
            for n in inner_nodes.values()
            if isinstance(n.get("widgets_values"), list)
        )
        values = raw.get("widgets_values")
        instance_values = list(values) if isinstance(values, list) and len(values) == wanted_widgets else None
        if isinstance(values, list) and values and instance_values is None:
            self.warn(f"{who}: its widget values do not match its inner nodes; the inner nodes' own are used")
        bindings: list[Source] = []
        new_nodes: dict[str, dict[str, Any]] = {}
        for key, item in inner_nodes.items():
            entries = []
            slot_inputs = item.get("inputs") if isinstance(item.get("inputs"), list) else []
            for tslot, entry in enumerate(slot_inputs):
                if not isinstance(entry, dict):
                    continue
                target = (key, tslot)
                if target in inside:
                    number = next(n for n, v in enumerate(raw_links) if _group_target(v) == target)
                    entries.append({**entry, "link": ("group", number)})
                elif "widget" not in entry:
                    links[("in", len(bindings))] = ("<in>", len(bindings), entry.get("type"))
                    entries.append({**entry, "link": ("in", len(bindings))})
                    bindings.append(bound[len(bindings)] if len(bindings) < len(bound) else None)
            count = (
                len(item.get("widgets_values") or []) if isinstance(item.get("widgets_values"), list) else 0
            )
            widgets = item.get("widgets_values")
            if instance_values is not None:
                widgets, instance_values = instance_values[:count], instance_values[count:]
            new_nodes[key] = {**item, "inputs": entries, "widgets_values": widgets}
        inner = _Scope(
            node_id + ":",
            new_nodes,
            links,
            input_node="<in>",
            bindings=bindings,
            depth=scope.depth + 1,
            origin_pos=self._position(scope, raw),
        )
        self._emit(inner)
        outputs: list[Source] = []
        for key, item in new_nodes.items():
            count = (
                len(item.get("outputs"))
                if isinstance(item.get("outputs"), list)
                else len(RULES[item["type"]].outputs if item["type"] in RULES else ())
            )
            for slot in range(count):
                if (key, slot) not in used or (key, slot) in external:
                    outputs.append(self._origin(inner, key, slot, None, frozenset(), who))
        return outputs

    # -- groups --------------------------------------------------------------------------------

    def _groups(self) -> None:
        groups = self.data.get("groups")
        for group in groups if isinstance(groups, list) else []:
            bounds = group.get("bounding") if isinstance(group, dict) else None
            if isinstance(bounds, list) and len(bounds) == 4 and all(is_number(b) for b in bounds):
                entry = {"title": str(group.get("title", "")), "bounds": bounds}
                if isinstance(group.get("color"), str):
                    entry["color"] = group["color"]
                self.prompt.groups.append(entry)


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


def _model_from_properties(class_type: str, raw: dict[str, Any]) -> dict[str, str]:
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


def _dead_end_gap(raw: dict[str, Any]) -> str | None:
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


def _pass_through(raw: dict[str, Any], slot: int, link_type: Any) -> dict[str, Any] | None:
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


def _first_linked(raw: dict[str, Any]) -> dict[str, Any] | None:
    entries = raw.get("inputs") if isinstance(raw.get("inputs"), list) else []
    return next((e for e in entries if isinstance(e, dict) and e.get("link") is not None), None)


def _group_target(item: Any) -> tuple[str, int] | None:
    if isinstance(item, list) and len(item) >= 4 and is_int(item[3]):
        return (str(item[2]), item[3])
    return None


def _links_into(raw_links: Any, target: str | None) -> dict[int, Any]:
    """target slot -> link id of the links into node ``target`` (a subgraph's output node)."""
    found: dict[int, Any] = {}
    for raw in raw_links if isinstance(raw_links, list) else []:
        if isinstance(raw, dict) and str(raw.get("target_id")) == target and is_int(raw.get("target_slot")):
            found.setdefault(raw["target_slot"], raw.get("id"))
        elif isinstance(raw, list) and len(raw) >= 5 and str(raw[3]) == target and is_int(raw[4]):
            found.setdefault(raw[4], raw[0])
    return found


def _special_id(node: Any, default: str) -> str:
    if isinstance(node, dict) and is_int_or_str(node.get("id")):
        return str(node["id"])
    return default


def _pack(raw: dict[str, Any]) -> str | None:
    """The custom node pack a UI node comes from, as ComfyUI's manager records it."""
    properties = raw.get("properties")
    if not isinstance(properties, dict):
        return None
    for key in ("cnr_id", "aux_id"):
        value = properties.get(key)
        if isinstance(value, str) and value and value != "comfy-core":
            return value
    return None


def _peek(value: Any) -> str:
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


def kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(value), "a number"
    )
