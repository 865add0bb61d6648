"""Saved pictures in ComfyUI's shape: ``{"filename", "subfolder", "type": "output"}``, by node.

``/history`` and the websocket's ``executed`` message list a prompt's pictures
under the ComfyUI node that saved them. For a job still in memory its events say
which node saved what; for an older one (from the history) only the list of
saved files is left, and each goes to the output node whose ``filename_prefix``
it starts with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from server.comfy.info import ComfyInfo
from server.guard import IMAGE_SUFFIXES


def file_entry(relative: str) -> dict[str, str]:
    """ComfyUI's description of one saved file, from its path inside the output folder."""
    path = PurePosixPath(relative)
    parent = path.parent.as_posix()
    return {"filename": path.name, "subfolder": "" if parent == "." else parent, "type": "output"}


def image_entries(relative: Iterable[str]) -> list[dict[str, str]]:
    """The pictures among saved files (ComfyUI clients ask only for ``images``)."""
    return [file_entry(n) for n in relative if PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES]


def outputs_by_node(files: Mapping[str, list[str]], info: ComfyInfo) -> dict[str, dict[str, Any]]:
    """``{comfy id: {"images": [...]}}`` from our node ids' saved files (relative paths)."""
    out: dict[str, dict[str, Any]] = {}
    for node_id, names in files.items():
        images = image_entries(names)
        if images:
            entry = out.setdefault(str(info.comfy_id(node_id)), {"images": []})
            entry["images"] += images
    return out


def files_by_prefix(outputs: list[str], workflow: Mapping[str, Any], info: ComfyInfo) -> dict[str, list[str]]:
    """Saved files of a job no longer in memory, given to the output node whose prefix they start with."""
    nodes = workflow.get("nodes") or {}
    savers = [our for our in nodes if info.comfy_id(our) in info.outputs] or list(info.outputs)
    found: dict[str, list[str]] = {}
    for name in outputs:
        owner = _owner(name, savers, nodes)
        if owner is not None:
            found.setdefault(owner, []).append(name)
    return found


def _owner(name: str, savers: list[str], nodes: Mapping[str, Any]) -> str | None:
    """The output node whose ``filename_prefix`` the file name starts with, else the first one."""
    for our in savers:
        node = nodes.get(our)
        prefix = node.get("inputs", {}).get("filename_prefix") if isinstance(node, dict) else None
        if isinstance(prefix, str) and name.startswith(prefix + "_"):
            return our
    return savers[0] if savers else None
