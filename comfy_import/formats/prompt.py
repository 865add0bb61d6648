"""What reading a ComfyUI file gives: a :class:`Prompt` (its graph in API form) with
:class:`ComfyLink` links, :class:`ComfyError` for a file that cannot be read, and the check of
the links of a read graph against its nodes and their rules' outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from comfy_import.rules import RULES


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


def check_links(prompt: Prompt, strict: bool, left_out: frozenset[str] | set[str] = frozenset()) -> None:
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


def kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(value), "a number"
    )
