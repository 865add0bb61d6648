"""Small builders for workflows in tests."""

from __future__ import annotations

from typing import Any

from graph.validate import validate
from graph.workflow import Workflow
from nodes.registry import Registry


def link(node: str, output: str) -> dict[str, str]:
    return {"node": node, "output": output}


def node(type_: str, **inputs: Any) -> dict[str, Any]:
    return {"type": type_, "inputs": inputs}


def workflow(**nodes: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "nodes": nodes}


def valid(data: dict[str, Any], registry: Registry) -> Workflow:
    checked = validate(data, registry)
    assert checked.ok, [str(i) for i in checked.issues]
    assert checked.workflow is not None
    return checked.workflow
