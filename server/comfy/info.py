"""A job in ComfyUI's terms: its prompt, its number, its client and its node ids.

A prompt posted to ``/prompt`` keeps what ComfyUI clients ask for again later (the
prompt, its number, the client id, our node ids mapped back to ComfyUI's) in its
workflow's ``metadata["comfy"]`` (:class:`ComfyInfo`), so ``/history`` answers in
ComfyUI's terms after a restart too. Jobs from the page or ``/api`` carry none: they
get an info made up from their workflow, with our node ids as they are.
:class:`ComfyJobs` gives any job of the queue its info and its number.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.jobs import Job, JobQueue

#: Numbers remembered for jobs that carry none (from the page or ``/api``), the newest kept.
_REMEMBERED_NUMBERS = 5000


@dataclass
class ComfyInfo:
    """A job in ComfyUI's terms: kept in its workflow's ``metadata["comfy"]``."""

    number: int | None
    client_id: str | None = None
    prompt: dict[str, Any] = field(default_factory=dict)
    extra_data: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    #: Our node id -> ComfyUI's (identity for ids not listed).
    ids: dict[str, str] = field(default_factory=dict)
    previews: bool = False

    def comfy_id(self, node_id: str | None) -> str | None:
        return None if node_id is None else self.ids.get(node_id, node_id)

    def extra_with_client(self) -> dict[str, Any]:
        """``extra_data`` as ComfyUI lists it in queue and history items: with the client id."""
        if self.client_id:
            return {**self.extra_data, "client_id": self.client_id}
        return dict(self.extra_data)

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "client_id": self.client_id,
            "prompt": self.prompt,
            "extra_data": self.extra_data,
            "outputs": self.outputs,
            "ids": self.ids,
            "previews": self.previews,
        }

    @classmethod
    def of_workflow(cls, workflow: Mapping[str, Any], output_types: Callable[[str], bool]) -> ComfyInfo:
        """The info a workflow carries; for jobs from the page or ``/api``, our ids as they are."""
        stored = (workflow.get("metadata") or {}).get("comfy")
        if isinstance(stored, dict):
            try:
                return cls(
                    number=stored.get("number"),
                    client_id=stored.get("client_id"),
                    prompt=dict(stored.get("prompt") or {}),
                    extra_data=dict(stored.get("extra_data") or {}),
                    outputs=[str(n) for n in stored.get("outputs") or []],
                    ids={str(k): str(v) for k, v in (stored.get("ids") or {}).items()},
                    previews=bool(stored.get("previews")),
                )
            except (TypeError, ValueError, AttributeError):
                pass
        nodes = workflow.get("nodes") or {}
        outputs = [node_id for node_id, node in nodes.items() if output_types(str(node.get("type", "")))]
        return cls(number=None, outputs=outputs)


class ComfyJobs:
    """The job queue as ComfyUI clients see it: a number and a :class:`ComfyInfo` per job.

    Numbers count up from 0 for each server, as ComfyUI's do. Handlers run in the
    thread pool and on the event loop at once, so numbering holds a lock (two
    threads asking for a new job's number must get the same one).
    """

    def __init__(self, jobs: JobQueue) -> None:
        self.jobs = jobs
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._assigned: OrderedDict[str, int] = OrderedDict()

    def new_number(self) -> int:
        """The number of a prompt about to be queued."""
        with self._lock:
            return next(self._numbers)

    def number_of(self, job_id: str) -> int:
        """The number of a job whose workflow carries none, given at first sight and kept."""
        with self._lock:
            number = self._assigned.get(job_id)
            if number is None:
                number = self._assigned[job_id] = next(self._numbers)
                while len(self._assigned) > _REMEMBERED_NUMBERS:
                    self._assigned.popitem(last=False)
            return number

    def is_output_type(self, node_type: str) -> bool:
        cls = self.jobs.registry.get(node_type)
        return bool(cls is not None and cls.output_node)

    def info_of_workflow(self, workflow: Mapping[str, Any], job_id: str) -> ComfyInfo:
        info = ComfyInfo.of_workflow(workflow, self.is_output_type)
        if info.number is None:
            info.number = self.number_of(job_id)
        return info

    def info_of_job(self, job: Job) -> ComfyInfo:
        return self.info_of_workflow(job.workflow.model_dump(mode="json"), job.id)

    def relative_files(self, files: Iterable[str]) -> list[str]:
        """Saved files as paths inside the output folder ('/'-separated); others are left out."""
        root = self.jobs.output_dir.resolve()
        out = []
        for name in files:
            path = Path(name)
            path = path.resolve() if path.is_absolute() else root / path
            if path.is_relative_to(root):
                out.append(path.relative_to(root).as_posix())
        return out
