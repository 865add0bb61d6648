"""Validation: every problem of a workflow at once, each naming node, input and reason.

:func:`validate` takes anything (text, bytes, parsed JSON) and never raises for
bad input: it returns the issues found and, when there are none, the workflow
brought up to the current format and node versions, ready for the executor.
Text and parsed JSON pass the same strict checks (graph/strict_json.py): no NaN
or infinity, whole numbers of 64 bits, no lone surrogates, nesting 64 deep at most.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from pydantic import ValidationError

from graph.issues import Issue
from graph.modes import BYPASS, ModePlan, Passed, analyse, resolve
from graph.strict_json import (
    JsonProblem,
    JsonValueError,
    find_problems,
    format_path,
    has_lone_surrogate,
    load,
)
from graph.workflow import Group, Link, NodeEntry, Note, VersionError, Workflow, migrate
from nodes import types as T
from nodes.base import Node
from nodes.registry import Registry


@dataclass
class Validated:
    """The outcome of :func:`validate`."""

    issues: list[Issue] = field(default_factory=list)
    workflow: Workflow | None = None

    @property
    def ok(self) -> bool:
        """No issues, and a workflow ready to run."""
        return not self.issues and self.workflow is not None


def validate(source: Any, registry: Registry, *, require_outputs: bool = True) -> Validated:
    """Check a workflow given as text, bytes or parsed JSON; report every problem."""
    result = Validated()
    issues = result.issues

    data = _parse(source, issues)
    if data is _UNPARSED:
        return result
    problems, more = find_problems(data)
    if problems:  # values nothing downstream may see: NaN, huge numbers, lone surrogates, deep nesting
        issues.extend(_json_issues(data, problems, more))
        return result
    if not isinstance(data, dict):
        issues.append(Issue("structure", f"the file must hold a JSON object, not {_kind(data)}"))
        return result
    try:
        data = migrate(dict(data))
    except VersionError as exc:
        issues.append(Issue("version", str(exc)))
        return result

    header = _check_header(data, issues)
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, dict):
        got = "nothing" if raw_nodes is None else _kind(raw_nodes)
        issues.append(Issue("structure", f"'nodes' must be an object keyed by node id, got {got}"))
        return result

    entries: dict[str, NodeEntry] = {}
    for node_id, raw in raw_nodes.items():
        entry = _parse_entry(node_id, raw, registry, issues)
        if entry is not None:
            entries[node_id] = entry

    modes = analyse(entries, registry)
    graph = _check_inputs(entries, set(raw_nodes), registry, issues, modes.not_running)
    _check_cycles(graph, entries, issues)
    _check_modes(modes, entries, registry, issues)
    if require_outputs and not raw_nodes:
        issues.append(Issue("no_outputs", "the workflow has no nodes", hint=_ADD_OUTPUT))
    elif require_outputs and len(entries) == len(raw_nodes):
        _check_outputs(entries, modes, registry, issues)

    if not issues and header is not None:
        result.workflow = Workflow(version=1, nodes=entries, **header)
    return result


_ADD_OUTPUT = "Add an output node such as SaveImage or PreviewImage and connect it"


def _check_outputs(
    entries: dict[str, NodeEntry], modes: ModePlan, registry: Registry, issues: list[Issue]
) -> None:
    """Something must run: an output node that is neither bypassed, muted nor skipped."""
    outputs = [node_id for node_id, e in entries.items() if _node_class(e, registry).output_node]
    if not outputs:
        issues.append(Issue("no_outputs", "nothing to run: no output node", hint=_ADD_OUTPUT))
    elif all(node_id in modes.not_running for node_id in outputs):
        issues.append(
            Issue(
                "no_outputs",
                "nothing to run: every output node is bypassed, muted or needs a muted node",
                hint="Un-mute (Ctrl+M) or un-bypass (Ctrl+B) an output node or the nodes it needs",
            )
        )


def _check_modes(
    modes: ModePlan, entries: dict[str, NodeEntry], registry: Registry, issues: list[Issue]
) -> None:
    """Inputs of running nodes fed through bypassed nodes: a gap, or a constant out of range."""
    for needs in modes.gaps:
        gap = needs.gap
        entry = entries[needs.node]
        bypassed = entries[gap.node]
        issues.append(
            Issue(
                "bypass_gap",
                f"comes from output {gap.output!r} of node {gap.node!r} ({bypassed.type}), which is "
                f"bypassed and has no {gap.type} input to hand on",
                needs.node,
                entry.type,
                needs.input,
                hint=f"Un-bypass node {gap.node!r}, or mute it",
            )
        )
    for node_id, entry in entries.items():
        if node_id in modes.not_running:
            continue
        cls = _node_class(entry, registry)
        for name, value in entry.inputs.items():
            spec = cls.input(name)
            source = entries.get(value.node) if isinstance(value, Link) else None
            if spec is None or source is None or source.mode != BYPASS or spec.type not in T.CONSTANT_TYPES:
                continue
            passed = resolve(value, entries, registry)
            if isinstance(passed, Passed):
                problem = spec.check(passed.value, registry.services)
                if problem:
                    issues.append(
                        Issue(
                            "bad_value",
                            f"the value handed on by bypassed node {value.node!r}: {problem}",
                            node_id,
                            entry.type,
                            name,
                        )
                    )


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(value), "a number"
    )


_UNPARSED = object()


def _parse(source: Any, issues: list[Issue]) -> Any:
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            issues.append(Issue("json", f"the file is not UTF-8 text (byte {exc.start})"))
            return _UNPARSED
    if not isinstance(source, str):
        return source
    try:
        return load(source)  # values out of reach stay as markers, reported with their node and input
    except json.JSONDecodeError as exc:
        issues.append(Issue("json", f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"))
    except JsonValueError as exc:
        issues.extend(Issue("json", f"the JSON is {p.message}") for p in exc.problems)
    except (ValueError, RecursionError) as exc:
        issues.append(Issue("json", f"not valid JSON: {exc}"))
    return _UNPARSED


def _json_issues(data: Any, problems: list[JsonProblem], more: bool) -> list[Issue]:
    """Issues for values JSON cannot hold, naming the node and input where there is one."""
    nodes = data.get("nodes") if isinstance(data, dict) else None
    issues = []
    for problem in problems:
        path = problem.path
        node_id = node_type = input_name = None
        if (
            len(path) >= 2
            and path[0] == "nodes"
            and isinstance(nodes, dict)
            and isinstance(path[1], str)
            and not has_lone_surrogate(path[1])
        ):
            node_id, path = path[1], path[2:]
            entry = nodes.get(node_id)
            kind = entry.get("type") if isinstance(entry, dict) else None
            if isinstance(kind, str) and not has_lone_surrogate(kind):
                node_type = kind
            if len(path) >= 2 and path[0] == "inputs" and isinstance(path[1], str):
                if not has_lone_surrogate(path[1]):
                    input_name, path = path[1], path[2:]
        where = format_path(path)
        message = f"{where}: {problem.message}" if where else problem.message
        code = "bad_value" if input_name is not None else "json"
        issues.append(Issue(code, message, node_id, node_type, input_name))
    if more:
        issues.append(Issue("json", "and more values like these", hint="Fix the ones above first"))
    return issues


def _check_header(data: dict[str, Any], issues: list[Issue]) -> dict[str, Any] | None:
    known = {"version", "nodes", "groups", "notes", "metadata"}
    ok = True
    for key in data:
        if key not in known:
            issues.append(
                Issue(
                    "structure",
                    f"unknown top-level key {key!r}",
                    hint="Known keys: " + ", ".join(sorted(known)),
                )
            )
            ok = False
    header: dict[str, Any] = {}
    for key, model in (("groups", Group), ("notes", Note)):
        items = data.get(key, [])
        if not isinstance(items, list):
            issues.append(Issue("structure", f"{key!r} must be a list, got {_kind(items)}"))
            ok = False
            continue
        parsed = []
        for index, item in enumerate(items):
            try:
                parsed.append(model.model_validate(item))
            except ValidationError as exc:
                issues.append(Issue("structure", f"{key}[{index}]: {_pydantic_text(exc)}"))
                ok = False
        header[key] = parsed
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        issues.append(Issue("structure", f"'metadata' must be an object, got {_kind(metadata)}"))
        ok = False
    header["metadata"] = metadata
    return header if ok else None


def _pydantic_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def _node_class(entry: NodeEntry, registry: Registry) -> type[Node]:
    cls = registry.get(entry.type)
    assert cls is not None  # entries only hold known types
    return cls


def _parse_entry(node_id: str, raw: Any, registry: Registry, issues: list[Issue]) -> NodeEntry | None:
    if not node_id:
        issues.append(Issue("structure", "a node has an empty id", hint="Give every node an id"))
        return None
    if not isinstance(raw, dict):
        issues.append(Issue("structure", f"must be an object, got {_kind(raw)}", node_id=node_id))
        return None
    node_type = raw.get("type")
    if not isinstance(node_type, str) or not node_type:
        issues.append(Issue("structure", "has no 'type'", node_id=node_id, hint="Say which node it is"))
        return None
    cls = registry.get(node_type)
    if cls is None:
        issues.append(
            Issue(
                "unknown_node_type",
                f"unknown node type {node_type!r}",
                node_id=node_id,
                node_type=node_type,
                hint="Run `python app.py nodes` for the list, or install the pack that provides it",
            )
        )
        return None

    raw = dict(raw)
    inputs = raw.get("inputs", {})
    if not isinstance(inputs, dict):
        issues.append(
            Issue("structure", f"'inputs' must be an object, got {_kind(inputs)}", node_id, node_type)
        )
        return None
    ok = True
    clean_inputs: dict[str, Any] = {}
    for name, value in inputs.items():
        if isinstance(value, dict):
            try:
                clean_inputs[name] = Link.model_validate(value)
            except ValidationError:
                issues.append(
                    Issue(
                        "bad_link",
                        f'a link must be {{"node": id, "output": name}}, got {json.dumps(value)[:80]}',
                        node_id,
                        node_type,
                        name,
                    )
                )
                ok = False
        elif isinstance(value, list):
            issues.append(Issue("bad_value", "lists are not input values", node_id, node_type, name))
            ok = False
        else:
            clean_inputs[name] = value
    raw["inputs"] = clean_inputs

    saved_version = raw.get("version")
    try:
        entry = NodeEntry.model_validate(raw)
    except ValidationError as exc:
        issues.append(Issue("structure", _pydantic_text(exc), node_id, node_type))
        return None
    if not ok:
        return None

    if saved_version is not None and saved_version > cls.version:
        issues.append(
            Issue(
                "node_version",
                f"saved by version {saved_version} of {node_type}; this studio has version {cls.version}",
                node_id,
                node_type,
                hint="Update the studio or the node pack",
            )
        )
        return None
    version = entry.version or cls.version
    if version < cls.version:
        values = dict(entry.inputs)
        try:
            for step in range(version, cls.version):
                migration = cls.input_migrations.get(step)
                if migration is not None:
                    values = migration(values)
        except Exception as exc:  # noqa: BLE001 - a bad old node must not crash validation
            issues.append(
                Issue(
                    "node_version",
                    f"could not upgrade from version {version}: {exc}",
                    node_id,
                    node_type,
                )
            )
            return None
        entry = entry.model_copy(update={"inputs": values})
    return entry.model_copy(update={"version": cls.version})


def _check_inputs(
    entries: dict[str, NodeEntry],
    all_ids: set[str],
    registry: Registry,
    issues: list[Issue],
    not_running: set[str],
) -> nx.DiGraph:
    """Check every input of every node; return the graph of links between nodes.

    Nodes in ``not_running`` (bypassed, muted, or needing a muted node) have their input
    names and links checked, not their values: a node set aside may be half edited.
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(entries)
    for node_id, entry in entries.items():
        cls = _node_class(entry, registry)
        values_checked = node_id not in not_running

        def issue(code: str, message: str, name: str | None, hint: str | None = None) -> None:
            issues.append(Issue(code, message, node_id, entry.type, name, hint))  # noqa: B023

        for name in entry.inputs:
            if cls.input(name) is None:
                known = ", ".join(s.name for s in cls.inputs) or "none"
                issue("unknown_input", f"{entry.type} has no input {name!r}", name, f"Its inputs: {known}")
        for spec in cls.inputs:
            if spec.name not in entry.inputs:
                if spec.required and values_checked:
                    issue("missing_input", "is required but not given", spec.name, _how_to_give(spec))
                continue
            value = entry.inputs[spec.name]
            if isinstance(value, Link):
                if value.node in entries or value.node not in all_ids:
                    _check_link(node_id, entry, spec, value, entries, registry, issues, graph)
            elif not values_checked:
                continue
            elif value is None:
                if spec.required:
                    issue("missing_input", "is required but null", spec.name, _how_to_give(spec))
            elif not spec.accepts_constant:
                issue(
                    "constant_not_allowed",
                    f"takes a {spec.type} from a link, not the constant {value!r}",
                    spec.name,
                    f"Connect it to a node's {spec.type} output",
                )
            else:
                problem = spec.check(value, registry.services)
                if problem:
                    issue("bad_value", problem, spec.name)
    return graph


def _how_to_give(spec: Any) -> str:
    if spec.accepts_constant:
        return f"Give it a {spec.type} value or connect a {spec.type} output"
    return f"Connect a {spec.type} output to it"


def _check_link(
    node_id: str,
    entry: NodeEntry,
    spec: Any,
    link: Link,
    entries: dict[str, NodeEntry],
    registry: Registry,
    issues: list[Issue],
    graph: nx.DiGraph,
) -> None:
    def issue(code: str, message: str, hint: str | None = None) -> None:
        issues.append(Issue(code, message, node_id, entry.type, spec.name, hint))

    if not spec.accepts_link:
        issue("link_not_allowed", "takes a constant, not a link", "Type a value instead")
        return
    source = entries.get(link.node)
    if source is None:
        issue("link_missing_node", f"links to node {link.node!r}, which does not exist")
        return
    source_cls = _node_class(source, registry)
    output = source_cls.output(link.output)
    if output is None:
        names = ", ".join(o.name for o in source_cls.outputs) or "none"
        issue(
            "link_missing_output",
            f"links to output {link.output!r} of node {link.node!r} ({source.type}), "
            "which has no such output",
            f"Its outputs: {names}",
        )
        return
    if not T.compatible(output.type, spec.type):
        issue(
            "type_mismatch",
            f"expects {spec.type} but is linked to {output.type} output {link.output!r} "
            f"of node {link.node!r} ({source.type})",
            f"Connect a {spec.type} output instead",
        )
        return
    graph.add_edge(link.node, node_id)


def _check_cycles(graph: nx.DiGraph, entries: dict[str, NodeEntry], issues: list[Issue]) -> None:
    for component in nx.strongly_connected_components(graph):
        if len(component) == 1:
            (only,) = component
            if not graph.has_edge(only, only):
                continue
        members = sorted(component)
        first = members[0]
        shown = " -> ".join(repr(m) for m in members)
        issues.append(
            Issue(
                "cycle",
                f"nodes {shown} feed each other in a loop",
                first,
                entries[first].type,
                hint="Remove one of the links so values flow one way",
            )
        )
