"""Reading ComfyUI's UI format (a ``nodes`` list and ``links``, versions 0.4 and 1) into a
:class:`~comfy_import.formats.prompt.Prompt`, with the layout (positions, notes, groups). The
UI format's editor-only constructs are resolved here, as ComfyUI's own "Save (API Format)"
does:

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

Subgraphs and group nodes are expanded by :mod:`~comfy_import.formats.ui_containers`.
"""

from __future__ import annotations

from typing import Any

from comfy_import.formats.prompt import ComfyError, ComfyLink, Prompt, check_links, kind
from comfy_import.formats.ui_containers import ContainerExpansion
from comfy_import.formats.ui_entries import (
    Const,
    Scope,
    Source,
    dead_end_gap,
    first_linked,
    is_int_or_str,
    is_number,
    kept_mode,
    model_from_properties,
    node_pack,
    pass_through,
    peek,
    ui_position,
    widget_inputs,
)
from comfy_import.rules import PRIMITIVES, is_int


class UiReader(ContainerExpansion):
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
        scope = Scope("", nodes, links)
        self._emit(scope)
        self._groups()
        check_links(self.prompt, strict=False)
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
                self.warn(f"{where}a node entry without an 'id' and a 'type' is left out: {peek(raw)}")
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
                self.warn(f"{where}a link that is neither a list nor an object is left out: {peek(raw)}")
                continue
            if not is_int(link_id) or not is_int(slot) or not is_int_or_str(origin):
                self.warn(f"{where}a malformed link is left out: {peek(raw)}")
                continue
            links[link_id] = (str(origin), slot, link_type)
        return links

    # -- emitting nodes --------------------------------------------------------------------

    def _emit(self, scope: Scope) -> None:
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
            gap = dead_end_gap(raw)
            if gap is not None:
                reason = f"feeds nothing and its input {gap!r} is not connected, so ComfyUI never runs it"
                self.prompt.skipped.append((scope.qid(local), class_type, reason))
                continue
            self._node(scope, local, raw)

    def _note(self, scope: Scope, raw: dict[str, Any]) -> None:
        values = raw.get("widgets_values")
        text = values[0] if isinstance(values, list) and values else None
        if not isinstance(text, str) or not text.strip():
            return
        note: dict[str, Any] = {"text": text}
        position = self._position(scope, raw)
        if position is not None:
            note["position"] = list(position)
        self.prompt.notes.append(note)

    def _position(self, scope: Scope, raw: dict[str, Any]) -> tuple[float, float] | None:
        position = ui_position(raw.get("pos"))
        if scope.origin_pos is None or position is None:
            return position if scope.prefix == "" else scope.origin_pos
        return (scope.origin_pos[0] + position[0] / 4, scope.origin_pos[1] + position[1] / 4)

    def _node(self, scope: Scope, local: str, raw: dict[str, Any], mode: str | None = None) -> None:
        node_id = scope.qid(local)
        class_type = raw["type"]
        inputs: dict[str, Any] = widget_inputs(class_type, raw.get("widgets_values"))
        if raw.get("widgets_values") is None:
            named = model_from_properties(class_type, raw)
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
        pack = node_pack(raw)
        if pack:
            node["pack"] = pack
        self.prompt.nodes[node_id] = node
        position = self._position(scope, raw)
        if position is not None:
            self.prompt.positions[node_id] = position

    # -- resolving links ---------------------------------------------------------------------

    def _resolve(self, scope: Scope, link_id: Any, seen: frozenset[str], who: str) -> Source:
        """A link of ``scope`` as what it carries: through Reroutes, bypassed nodes and the
        boundaries of subgraphs and group nodes."""
        found = scope.links.get(link_id) if isinstance(link_id, int | str | tuple) else None
        if found is None:
            self.warn(f"{who}: an input uses link {link_id!r}, which is not in 'links'; left unconnected")
            return None
        origin, slot, link_type = found
        return self._origin(scope, origin, slot, link_type, seen, who)

    def _origin(
        self, scope: Scope, origin: str, slot: int, link_type: Any, seen: frozenset[str], who: str
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
            entry = pass_through(raw, slot, link_type)
            if entry is None:
                if mode == 4:
                    return self._skipped(scope, origin, slot, "bypassed")
                return None
            return self._resolve(scope, entry["link"], seen | {origin}, who)
        if class_type == "PrimitiveNode" or class_type in PRIMITIVES:
            linked = first_linked(raw)
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

    def _skipped(self, scope: Scope, origin: str, slot: int, how: str) -> ComfyLink:
        """A link from a muted node (or a bypassed one with nothing to pass on): kept so the
        report names it as a dropped link."""
        node_id = scope.qid(origin)
        class_type = scope.nodes[origin]["type"]
        self.prompt.nodes.setdefault(
            node_id, {"class_type": class_type, "inputs": {}, "title": None, "skipped": how}
        )
        return ComfyLink(node_id, slot)

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
