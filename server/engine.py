"""A worker's engine: what one worker (a local process or a Ray actor) builds once and keeps.

:class:`EngineSpec` is plain, picklable data naming everything a worker needs;
:class:`WorkerEngine` builds its services (model folders and model manager, see
models/services.py), registry and executor (with its cache) from it and runs one job at a
time. server/worker.py runs it in a child process of the server; server/ray_runner.py runs
the same engine inside a Ray actor.
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
from models.paths import ModelPaths
from models.services import Services
from nodes.base import CancelToken, RunSettings

Listener = Callable[[Event], None]


@dataclass(frozen=True)
class EngineSpec:
    """Everything a worker process needs to build its engine: plain, picklable data.

    ``packs`` are node pack modules added to the default registry. ``model_roots``,
    ``allow_pickle``, ``attention`` and ``device`` make the worker's services (its model
    folders and model manager); ``device`` ``None`` is the manager's default (see ``slot``).
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
    #: Most bytes the worker's loaded models may take on its device (None: the manager's default).
    budget_bytes: int | None = None
    #: Threads torch may use in the worker (None: torch's default, one per core). Several local
    #: workers on one machine share its cores: each takes its part, or they slow each other down.
    cpu_threads: int | None = None

    def model_paths(self) -> ModelPaths:
        """The model folders: ``model_roots``, or the default ones when it is empty."""
        return ModelPaths(self.model_roots) if self.model_roots else ModelPaths()

    def settings(self, services: Services) -> RunSettings:
        """Run settings over the worker's ``services``."""
        return RunSettings(
            output_dir=self.output_dir,
            input_dirs=self.input_dirs,
            allow_absolute_paths=self.allow_absolute_paths,
            services=services,
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
    """A worker's services (model folders, model manager), registry and executor (with its
    cache), built from the spec once and kept between jobs."""

    def __init__(self, spec: EngineSpec) -> None:
        from nodes.registry import default_registry

        self.spec = spec
        if spec.cpu_threads:
            import torch

            torch.set_num_threads(spec.cpu_threads)
        self.services = Services(
            paths=spec.model_paths(),
            allow_pickle=spec.allow_pickle,
            attention=spec.attention,
            device=_device_of(spec),
            budget_bytes=spec.budget_bytes,
        )
        self.registry = default_registry(services=self.services)
        for pack in spec.packs:
            self.registry.add_pack(pack)
        self.executor = Executor(self.registry)

    def run(
        self, job_id: str, workflow_json: str, seed: int | None, cancel: CancelToken, listener: Listener
    ) -> RunResult:
        settings = self.spec.settings(self.services)
        settings.workflow_json = workflow_json
        workflow = Workflow.model_validate_json(workflow_json)
        return self.executor.run(
            workflow, settings=settings, seed=seed, cancel=cancel, listener=listener, run_id=job_id
        )

    @property
    def loads(self) -> int:
        """How many times this worker's model manager has loaded a model so far (0 before any)."""
        return self.services.loads


def _device_of(spec: EngineSpec) -> str | None:
    """The worker's device: the spec's; else, for worker ``slot`` > 0 on a machine with several
    GPUs, GPU ``slot`` modulo their count; else ``None`` (the manager's default). torch is
    imported only to count GPUs for such a worker."""
    if spec.device is not None or spec.slot == 0:
        return spec.device
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{spec.slot % count}" if count > 1 else None


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
