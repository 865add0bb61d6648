"""Subgraphs (``definitions.subgraphs``, a node whose type is a subgraph's id) and group nodes
(``extra.groupNodes``, types ``workflow>Name`` / ``workflow/Name``) of a UI-format workflow,
expanded into their inner nodes with ids ``<outer id>:<inner id>``, nested ones included.

:class:`ContainerExpansion` is mixed into :class:`~comfy_import.formats.ui.UiReader`: it uses
the reader's ``subgraphs``, ``group_nodes``, ``warn`` and its indexing, emitting and resolving
methods."""

from __future__ import annotations

from typing import Any

from comfy_import.formats.ui_entries import Const, Scope, Source, is_int_or_str
from comfy_import.rules import RULES, is_int

#: The ids of a subgraph's input and output nodes when its definition does not say.
SUBGRAPH_INPUT_ID = "-10"
SUBGRAPH_OUTPUT_ID = "-20"
#: How deep subgraphs and group nodes may nest (a definition that contains itself stops here).
MAX_NESTING = 16


class ContainerExpansion:
    """The UI reader's expansion of subgraph and group node instances."""

    #: Set by the reader: subgraph definitions by id, group node definitions by name.
    subgraphs: dict[str, dict[str, Any]]
    group_nodes: dict[str, Any]

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

    def _expand(self, scope: Scope, local: str) -> list[Source]:
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

    def _instance_bindings(self, scope: Scope, raw: dict[str, Any], who: str) -> list[tuple[str, Source]]:
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
        self, scope: Scope, local: str, raw: dict[str, Any], definition: dict[str, Any], who: str
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
        inner = Scope(
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
        self, scope: Scope, local: str, raw: dict[str, Any], definition: dict[str, Any], who: str
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
        inner = Scope(
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
