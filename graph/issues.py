"""Validation issues: one problem in a workflow file, said for a person."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One problem, naming where it is (node id, node type, input) and what to do."""

    code: str
    message: str
    node_id: str | None = None
    node_type: str | None = None
    input: str | None = None
    hint: str | None = None

    def where(self) -> str:
        parts = []
        if self.node_id is not None:
            kind = f" ({self.node_type})" if self.node_type else ""
            parts.append(f"node {self.node_id!r}{kind}")
        if self.input is not None:
            parts.append(f"input {self.input!r}")
        return ", ".join(parts) if parts else "workflow"

    def __str__(self) -> str:
        text = f"{self.where()}: {self.message}"
        return f"{text}. {self.hint}" if self.hint else text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["text"] = str(self)
        return data


class InvalidWorkflow(Exception):
    """A workflow that cannot run, with every issue found in it."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues
