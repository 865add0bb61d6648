"""Small builders for workflows in tests, and a way to call a node directly."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from graph.validate import validate
from graph.workflow import Workflow
from nodes.base import CancelToken, Context, Node, RunSettings
from nodes.registry import Registry

if TYPE_CHECKING:
    from graph.executor import RunResult
    from models.manager import ModelManager


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


def as_uint8(images: np.ndarray) -> np.ndarray:
    """Pictures in [0, 1] (a node's IMAGE, a pipeline's ``output_type="np"``) as 8-bit values."""
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def assert_same(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Two 8-bit pictures equal to uint8 rounding (no value more than one level apart)."""
    assert ours.shape == theirs.shape
    assert int(np.abs(ours.astype(int) - theirs.astype(int)).max()) <= 1  # uint8 rounding


def run_node(cls: type[Node], **inputs: Any) -> dict[str, Any]:
    """Run a node directly, with the defaults of inputs not given filled in."""
    values = {spec.name: spec.default for spec in cls.inputs if spec.has_default}
    values.update({spec.name: None for spec in cls.inputs if spec.optional and spec.name not in values})
    values.update(inputs)
    return cls().run(make_ctx(node_type=cls.type), **values)


def run_graph(
    nodes: dict[str, Any],
    models: Path,
    manager: ModelManager,
    *,
    work: Path | None = None,
    extra_nodes: Iterable[type[Node]] = (),
    **run_options: Any,
) -> RunResult:
    """Validate ``nodes`` (asserting they are valid) and run them with the models of ``models`` (and the
    repository's) loaded by ``manager``, reading inputs from ``work/inputs`` and writing to ``work/out``
    (``work``: ``models`` when not given); ``run_options`` go to :meth:`Executor.run` (listener, targets,
    cancel...). The result is returned whatever its status."""
    from graph.executor import Executor
    from nodes.registry import default_registry
    from tests.fixtures.services import services_over

    work = models if work is None else work
    services = services_over(models, manager=manager)
    registry = default_registry(services=services)
    for cls in extra_nodes:
        registry.add(cls)
    checked = validate({"version": 1, "nodes": nodes}, registry)
    assert checked.ok, [str(i) for i in checked.issues]
    settings = RunSettings(services=services, input_dirs=(work / "inputs",), output_dir=work / "out")
    return Executor(registry).run(checked.workflow, settings=settings, **run_options)
