"""Helpers for calling nodes directly in tests (kept apart from conftest.py on purpose)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodes.base import CancelToken, Context, Node, RunSettings


def make_ctx(tmp_path: Path | None = None, node_id: str = "n1", node_type: str = "X") -> Context:
    return Context(
        node_id=node_id,
        node_type=node_type,
        run_id="test",
        seed=1,
        settings=RunSettings(output_dir=tmp_path or Path("output")),
        cancel_token=CancelToken(),
        emit=lambda e: None,
    )


def run_node(cls: type[Node], **inputs: Any) -> dict[str, Any]:
    """Run a node directly, with the defaults of inputs not given filled in."""
    values = {spec.name: spec.default for spec in cls.inputs if spec.has_default}
    values.update({spec.name: None for spec in cls.inputs if spec.optional and spec.name not in values})
    values.update(inputs)
    return cls().run(make_ctx(node_type=cls.type), **values)
