"""The workers a command runs jobs on: local worker processes, or Ray actors with ``--ray``.

``app.py sweep`` and the studio make theirs here, from one :class:`~server.engine.EngineSpec`
built from the command's services, so a worker is the same engine however it is run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from models.services import Services
from server.engine import EngineSpec
from server.worker import Runner


class WorkersUnavailable(Exception):
    """The workers asked for cannot be had (Ray missing, the cluster unreachable); says what to do."""


@dataclass
class Workers:
    """Runners with their names, and a sentence saying where they run."""

    runners: list[Runner]
    names: list[str]
    where: str


def engine_spec(
    services: Services,
    output_dir: Path,
    input_dirs: tuple[Path, ...],
    packs: tuple[str, ...] = (),
    *,
    allow_absolute_paths: bool = False,
) -> EngineSpec:
    """A worker's spec from the command's services: the same model folders and settings."""
    return EngineSpec(
        output_dir=output_dir,
        input_dirs=input_dirs,
        allow_absolute_paths=allow_absolute_paths,
        packs=packs,
        allow_pickle=services.allow_pickle,
        attention=services.attention,
        device=services.device,
        model_roots=tuple(services.paths.roots),
        budget_bytes=services.budget_bytes,
    )


def make_workers(
    spec: EngineSpec,
    count: int | None,
    ray: str | None,
    prefix: str,
    most: int | None = None,
    spare_cores: int = 0,
) -> Workers:
    """``count`` local worker processes (default 1), or with ``ray`` (an address, or ``auto``)
    that many Ray actors (default: one per GPU of the cluster, else one per CPU slot); never more
    than ``most``. Local workers share the machine's cores out, less ``spare_cores`` kept for
    others (the studio keeps one for its server and the browser watching the run: torch's
    threads wait on each other when one of their cores is busy elsewhere). Ray gives each
    actor its CPUs. Raises :class:`WorkersUnavailable`."""
    if ray is None:
        from server.worker import ProcessRunner

        workers = max(1, count or 1)
        workers = min(workers, most) if most else workers
        cores = os.cpu_count() or 1
        if (workers > 1 or spare_cores) and spec.cpu_threads is None:  # the machine's cores, shared out
            spec = replace(spec, cpu_threads=max(1, max(1, cores - spare_cores) // workers))
        names = [f"{prefix}worker-{n}" for n in range(workers)]
        runners: list[Runner] = [ProcessRunner(spec.for_slot(n), name=name) for n, name in enumerate(names)]
        return Workers(runners, names, f"{workers} local worker process{'es' if workers != 1 else ''}")

    from server.ray_runner import RayRunner, RayUnavailable, cluster_has_gpus, connect, default_actor_count

    try:
        connect(ray)
        gpus = 1 if cluster_has_gpus() else 0
        workers = max(1, count or default_actor_count())
    except RayUnavailable as exc:
        raise WorkersUnavailable(f"--ray: {exc}") from None
    workers = min(workers, most) if most else workers
    names = [f"{prefix}ray-{n}" for n in range(workers)]
    runners = [RayRunner(spec.for_slot(n), name=name, num_gpus=gpus) for n, name in enumerate(names)]
    where = f"{workers} Ray actor{'s' if workers != 1 else ''}" + (" (one GPU each)" if gpus else "")
    return Workers(runners, names, where)
