"""A worker's engine: what one worker (a local process or a Ray actor) builds once and keeps.

:class:`EngineSpec` is plain, picklable data naming everything a worker needs;
:class:`WorkerEngine` builds the registry, executor (with its cache) and model manager from
it and runs one job at a time. server/worker.py runs it in a child process of the server;
server/ray_runner.py runs the same engine inside a Ray actor.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from graph.events import Event
from graph.executor import Executor, RunResult
from graph.workflow import Workflow
from nodes.base import CancelToken, RunSettings

Listener = Callable[[Event], None]


@dataclass(frozen=True)
class EngineSpec:
    """Everything a worker process needs to build its engine: plain, picklable data.

    ``packs`` are node pack modules added to the default registry. The child
    inherits the server's environment (``STUDIO_MODELS``, ...) as it is when the
    worker starts. ``device`` is the torch device of the worker's model manager (``None``: the
    manager's default).
    """

    output_dir: Path
    input_dirs: tuple[Path, ...] = ()
    allow_absolute_paths: bool = False
    packs: tuple[str, ...] = ()
    allow_pickle: bool = False
    attention: str = "auto"
    device: str | None = None
    #: Which worker this is (0, 1, ...): with several GPUs, worker n uses GPU n modulo their count.
    slot: int = 0
    #: The model folders to search (models.paths.ModelPaths roots); empty: the default ones.
    model_roots: tuple[Path, ...] = ()

    def settings(self) -> RunSettings:
        """Run settings without a model manager (the worker adds its own)."""
        return RunSettings(
            output_dir=self.output_dir,
            input_dirs=self.input_dirs,
            allow_absolute_paths=self.allow_absolute_paths,
            allow_pickle=self.allow_pickle,
            attention=self.attention,
        )

    def for_slot(self, slot: int) -> EngineSpec:
        return replace(self, slot=slot)


def default_workers(
    environ: dict[str, str] | None = None, gpus_folder: Path = Path("/proc/driver/nvidia/gpus")
) -> int:
    """One worker per GPU this process may use (``CUDA_VISIBLE_DEVICES``, else the driver's list); 1 without.

    Read without importing torch, so the server itself never initialises CUDA.
    """
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d for d in visible.split(",") if d.strip() and not d.strip().startswith("-")]
        return max(1, len(devices))
    try:
        return max(1, sum(1 for entry in gpus_folder.iterdir() if entry.is_dir()))
    except OSError:
        return 1


class WorkerEngine:
    """A worker's registry, executor (with its cache) and model manager, kept between jobs."""

    def __init__(self, spec: EngineSpec) -> None:
        from nodes.registry import default_registry

        self.spec = spec
        self.registry = default_registry()
        for pack in spec.packs:
            self.registry.add_pack(pack)
        self.executor = Executor(self.registry)
        self.models: Any = None

    def run(
        self, job_id: str, workflow_json: str, seed: int | None, cancel: CancelToken, listener: Listener
    ) -> RunResult:
        settings = self.spec.settings()
        settings.workflow_json = workflow_json
        settings.models = self._manager()
        workflow = Workflow.model_validate_json(workflow_json)
        try:
            return self.executor.run(
                workflow, settings=settings, seed=seed, cancel=cancel, listener=listener, run_id=job_id
            )
        finally:
            self.models = settings.models if settings.models is not None else self.models

    @property
    def loads(self) -> int:
        """How many times this worker's model manager has loaded a model so far."""
        return int(getattr(self.models, "loads", 0) or 0)

    def _manager(self) -> Any:
        """The worker's model manager: made here when its device is not the default one.

        Otherwise the first node that needs models makes it (importing torch only then),
        and :meth:`run` keeps it for the next jobs.
        """
        if self.models is not None:
            return self.models
        device = self.spec.device
        if device is None and self.spec.slot > 0:
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count > 1:
                device = f"cuda:{self.spec.slot % count}"
        if device is not None:
            from models.manager import ModelManager

            self.models = ModelManager(
                device=device, allow_pickle=self.spec.allow_pickle, attention=self.spec.attention
            )
        return self.models


def portable(result: RunResult) -> RunResult:
    """``result`` with the output values that cannot be pickled left out."""
    outputs: dict[str, dict[str, Any]] = {}
    for node_id, values in result.outputs.items():
        kept = {}
        for name, value in values.items():
            try:
                pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - a model object, say: not shown in the page
                continue
            kept[name] = value
        outputs[node_id] = kept
    return replace(result, outputs=outputs)
