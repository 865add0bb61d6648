"""The queue's events as ComfyUI's websocket messages.

Each of our job events (``server.jobs``) becomes none, one or a few of ComfyUI's
JSON messages ``{"type": ..., "data": {..., "prompt_id": job id}}``, in ComfyUI's
order: ``execution_start``; ``execution_cached``; ``executing`` as each node
starts; ``progress`` per step; ``executed`` for each node that saved pictures;
then once ``execution_success``, ``execution_error`` or ``execution_interrupted``,
and last ``executing`` with no node. Node ids are mapped back to ComfyUI's
(a node the importer split in two is reported once, under its ComfyUI id).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from server.comfy.info import ComfyInfo
from server.comfy.outputs import image_entries

#: Our saved files (as events name them) -> paths inside the output folder.
RelativeFiles = Callable[[Iterable[str]], list[str]]
#: Adds one message: its type and its data (the prompt id is added).
_Emit = Callable[..., None]


@dataclass
class Followed:
    """A job whose events are being turned into ComfyUI messages, and how far."""

    info: ComfyInfo
    #: The last event number translated.
    after: int = 0
    started: bool = False
    ended: bool = False
    end_sent: bool = False
    #: The ComfyUI node last reported as ``executing``.
    node: str | None = None
    executed: list[str] = field(default_factory=list)


def status_message(queue_remaining: int, sid: str | None = None) -> dict[str, Any]:
    """ComfyUI's ``status`` message; ``sid`` only in the first one a client gets."""
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return {"type": "status", "data": data}


def _now_ms() -> int:
    return int(time.time() * 1000)


def translate(
    job_id: str, followed: Followed, entry: dict[str, Any], relative_files: RelativeFiles
) -> list[dict[str, Any]]:
    """ComfyUI's messages for one of our events (most give one, some none); updates ``followed``."""
    info = followed.info
    kind = entry.get("event")
    node = info.comfy_id(entry.get("node_id"))
    out: list[dict[str, Any]] = []

    def emit(name: str, **data: Any) -> None:
        out.append({"type": name, "data": {**data, "prompt_id": job_id}})

    if kind == "job_started":
        followed.started = True
        emit("execution_start", timestamp=_now_ms())
    elif kind == "node_cached":
        followed.executed.append(str(node))
        emit("execution_cached", nodes=[node], timestamp=_now_ms())
        _executed(emit, node, relative_files(entry.get("files") or []))
    elif kind == "node_started" and node != followed.node:
        followed.node = node
        emit("executing", node=node, display_node=node)
    elif kind == "node_progress":
        emit("progress", value=entry.get("step"), max=entry.get("total"), node=node)
    elif kind == "node_finished":
        followed.executed.append(str(node))
        _executed(emit, node, relative_files(entry.get("files") or []))
    elif kind == "node_failed":
        _end(emit, followed, "failed", entry.get("message"), node, entry.get("node_type"))
    elif kind == "run_finished":
        _end(emit, followed, entry.get("status"), entry.get("error"), followed.node, None)
    elif kind == "job_finished":
        if followed.started:
            _end(emit, followed, entry.get("status"), entry.get("error"), followed.node, None)
        followed.ended = True
    return out


def _executed(emit: _Emit, node: str | None, files: list[str]) -> None:
    """ComfyUI's ``executed`` for a node that saved pictures (none for one that saved nothing)."""
    images = image_entries(files)
    if images:
        emit("executed", node=node, display_node=node, output={"images": images})


def _end(emit: _Emit, followed: Followed, status: Any, error: Any, node: str | None, node_type: Any) -> None:
    """The run's end, once: success, error or interrupted, then ``executing`` with no node."""
    if followed.ended or followed.end_sent:
        return
    followed.end_sent = True
    class_type = node_type
    if node is not None:
        comfy_node = followed.info.prompt.get(node)
        if isinstance(comfy_node, dict):
            class_type = comfy_node.get("class_type", class_type)
    if status == "done":
        emit("execution_success", timestamp=_now_ms())
    elif status in ("cancelled", "interrupted"):
        emit(
            "execution_interrupted",
            node_id=node,
            node_type=class_type,
            executed=list(followed.executed),
            timestamp=_now_ms(),
        )
    else:
        emit(
            "execution_error",
            node_id=node,
            node_type=class_type,
            executed=list(followed.executed),
            exception_message=str(error or "the run failed"),
            exception_type="StudioError",
            traceback=[],
            current_inputs={},
            current_outputs={},
            timestamp=_now_ms(),
        )
    emit("executing", node=None, display_node=None)
