"""Typed events a run sends to its listeners (the CLI's progress bar, the studio's page)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; images become their shape, not their pixels."""
        data: dict[str, Any] = {"event": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "shape") and hasattr(value, "dtype"):
                value = {"shape": list(value.shape)}
            data[f.name] = value
        return data


@dataclass(frozen=True)
class RunStarted(Event):
    """A run begins: its seed and the nodes it may run (the cache may serve some of them).

    ``bypassed`` and ``muted`` name the nodes set aside by their mode, ``skipped`` those
    that do not run because a required input comes from a muted node; none of them is planned.
    """

    kind: ClassVar[str] = "run_started"
    seed: int
    planned: list[str]
    bypassed: list[str] = field(default_factory=list)
    muted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NodeStarted(Event):
    kind: ClassVar[str] = "node_started"
    node_id: str
    node_type: str
    #: the node's extra seconds to stop after a cancel (Node.cancel_grace), read by the job runners
    cancel_grace: float = 0.0


@dataclass(frozen=True)
class NodeCached(Event):
    kind: ClassVar[str] = "node_cached"
    node_id: str
    node_type: str
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NodeProgress(Event):
    kind: ClassVar[str] = "node_progress"
    node_id: str
    step: int
    total: int
    #: Figures of the step by name, e.g. a training step's {"loss": 0.012}; finite numbers only
    #: (JSON has no NaN), so a figure that is not one is left out.
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class NodePreview(Event):
    kind: ClassVar[str] = "node_preview"
    node_id: str
    image: Any


@dataclass(frozen=True)
class NodeFinished(Event):
    kind: ClassVar[str] = "node_finished"
    node_id: str
    node_type: str
    seconds: float
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NodeFailed(Event):
    kind: ClassVar[str] = "node_failed"
    node_id: str
    node_type: str
    message: str
    input: str | None = None
    details: str = ""  # the traceback, for logs and bug reports

    def __str__(self) -> str:
        where = f"node {self.node_id!r} ({self.node_type})"
        if self.input:
            where += f", input {self.input!r}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    status: str  # "done" | "failed" | "cancelled"
    seconds: float
    executed: int
    cached: int
    error: str | None = None
