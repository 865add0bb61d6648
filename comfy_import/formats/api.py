"""ComfyUI's API format (``{id: {"class_type", "inputs", "_meta"}}``, what "Save (API Format)"
and ``/prompt`` take): machine-written, so a link to a missing node or output is refused."""

from __future__ import annotations

import json
from typing import Any

from comfy_import.formats.prompt import ComfyError, ComfyLink, Prompt, check_links, kind
from comfy_import.rules import is_int


def read_api(data: dict[str, Any]) -> Prompt:
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
    check_links(prompt, strict=True, left_out=set(problems))
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
