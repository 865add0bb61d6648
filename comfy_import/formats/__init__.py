"""Reading ComfyUI workflows: the API format and the UI format (0.4 and 1).

Everything is read into one :class:`Prompt`: ComfyUI's graph in API form (node id ->
class type, inputs as constants or :class:`ComfyLink`), plus what the UI format adds
(positions, notes, groups). The UI format's editor-only constructs (Reroutes, primitives,
muted and bypassed nodes, subgraphs, group nodes) are resolved as ComfyUI's own "Save (API
Format)" does (:mod:`~comfy_import.formats.ui`). PNGs are read by :mod:`comfy_import.files`.

An odd entry (a top-level key that is not a node, a malformed node or link) is left
out with a warning; only a file with no readable node at all is refused.

- :mod:`~comfy_import.formats.prompt`: :class:`Prompt`, :class:`ComfyLink`, :class:`ComfyError`
  and the check of a read graph's links;
- :mod:`~comfy_import.formats.api`: the API format;
- :mod:`~comfy_import.formats.ui`: the UI format's reader;
- :mod:`~comfy_import.formats.ui_containers`: its subgraphs and group nodes;
- :mod:`~comfy_import.formats.ui_entries`: what one of its raw node entries says.
"""

from __future__ import annotations

from typing import Any

from comfy_import.formats.api import read_api
from comfy_import.formats.prompt import ComfyError, ComfyLink, Prompt, kind
from comfy_import.formats.ui import UiReader
from comfy_import.formats.ui_entries import kept_mode, widget_inputs

__all__ = [
    "ComfyError",
    "ComfyLink",
    "Prompt",
    "kept_mode",
    "looks_like_comfy",
    "read_prompt",
    "widget_inputs",
]


def read_prompt(data: Any) -> Prompt:
    """Parsed JSON of either ComfyUI format as a :class:`Prompt`; :class:`ComfyError` if neither."""
    if not isinstance(data, dict):
        raise ComfyError(f"a ComfyUI workflow is a JSON object, not {kind(data)}")
    if isinstance(data.get("nodes"), list):
        return UiReader(data).read()
    if isinstance(data.get("nodes"), dict) and "version" in data:
        raise ComfyError("this is already a studio workflow, not a ComfyUI one")
    if isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]  # the body of a request to ComfyUI's /prompt
    return read_api(data)


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
