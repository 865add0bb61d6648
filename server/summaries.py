"""What a job's entry in the queue and the history shows of its workflow: name, prompt, seeds.

Computed from the workflow each time it is shown (the history keeps every job's
workflow), so older history rows get them too and nothing new is stored:

- ``name``: the workflow's ``metadata.name`` (the page sets it to the tab's title);
- ``prompt``: the first constant, non-empty multiline text input of a node that runs (in
  the order of the nodes, then of each node's inputs), at most :data:`MAX_PROMPT` characters;
- ``seeds``: ``{node id: seed}`` of the constant inputs named ``seed``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from graph.workflow import Workflow
from nodes import types as T
from nodes.registry import Registry

#: Longest prompt shown; a longer one is cut and ends with "…".
MAX_PROMPT = 300


def _entries(workflow: Any) -> Iterator[tuple[str, Any, Any, Any]]:
    """(node id, type, inputs, mode) of each node of a parsed workflow or a :class:`Workflow`."""
    if isinstance(workflow, Workflow):
        for node_id, entry in workflow.nodes.items():
            yield node_id, entry.type, entry.inputs, entry.mode
        return
    nodes = workflow.get("nodes") if isinstance(workflow, dict) else None
    if not isinstance(nodes, dict):
        return
    for node_id, entry in nodes.items():
        if isinstance(entry, dict):
            yield str(node_id), entry.get("type"), entry.get("inputs"), entry.get("mode")


def workflow_labels(workflow: Any, registry: Registry) -> dict[str, Any]:
    """``{"name", "prompt", "seeds"}`` of a workflow: a :class:`Workflow`, its parsed JSON or its text."""
    if isinstance(workflow, str | bytes):
        try:
            workflow = json.loads(workflow)
        except (ValueError, RecursionError):
            workflow = None
    metadata = workflow.metadata if isinstance(workflow, Workflow) else None
    if metadata is None and isinstance(workflow, dict):
        metadata = workflow.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    prompt: str | None = None
    seeds: dict[str, int] = {}
    for node_id, node_type, inputs, mode in _entries(workflow):
        if not isinstance(inputs, Mapping):
            continue
        seed = inputs.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            seeds[node_id] = seed
        if prompt is None and mode is None:
            prompt = _prompt(registry, node_type, inputs)
    return {"name": name if isinstance(name, str) and name else None, "prompt": prompt, "seeds": seeds}


def _prompt(registry: Registry, node_type: Any, inputs: Mapping[str, Any]) -> str | None:
    cls = registry.get(node_type) if isinstance(node_type, str) else None
    if cls is None:
        return None
    for spec in cls.inputs:
        value = inputs.get(spec.name)
        if spec.type == T.STRING and spec.multiline and isinstance(value, str) and value.strip():
            text = value.strip()
            return text if len(text) <= MAX_PROMPT else text[: MAX_PROMPT - 1].rstrip() + "…"
    return None
