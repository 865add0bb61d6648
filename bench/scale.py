"""Scaling out: items/s with 1 and 2 workers, what the sweep scheduler adds per item, and
model loads with and without model affinity.

    .venv/bin/python bench/scale.py [--quick] [--ray] [--part throughput|overhead|affinity]

Prints one JSON line per figure. Every figure runs real workers (local worker processes,
``ProcessRunner``; with ``--ray``, ``RayRunner`` actors on a local Ray) through
``sweep.scheduler.Scheduler``, as ``app.py sweep`` does:

1. **throughput**: the bundled toy model (workflows/txt2img.json, 32 px, ``--steps`` steps;
   items differ by seed, so nothing is served from a cache) on 1, then 2 workers. Each worker
   first runs a no-op item (its start: process, imports, engine) and a toy item (its first
   model load); both are reported apart (``worker_start_s``, ``first_item_s``), not in items/s.
   The baseline is the 1-worker run: ``ratio`` is items/s with 2 over items/s with 1 (goal,
   issue 12: at least 1.7 on 2 cores). Local workers are measured as ``app.py`` makes them
   (``cli.workers.make_workers``: each of N workers gets cores / N torch threads,
   ``EngineSpec.cpu_threads``) and, for comparison, with torch's default of one thread per core
   in every worker (two workers on 2 cores then run 4 threads). Ray gives each actor its
   ``num_cpus`` (1) threads by itself. A run stops after 60 s (``--quick``: 20 s) and counts
   the items done by then (``stopped_at_limit``): too many threads can make it crawl.
2. **overhead**: what the scheduler adds per item, two ways: (a) the time it spends choosing
   and handing out each item (``SweepStats.dispatch_ms``, median and p99); (b) end to end, one
   worker running items that do nothing (a ``Sleep`` node with one step of 0 s, from
   tests/packs/testing.py): wall time per item minus the run time the worker reports for it
   (its ``RunFinished.seconds``), split into the runner's share (pipe or Ray calls) and the
   scheduler's own (goal: under 20 ms per item).
3. **affinity**: two checkpoints (toy-sd, and a copy of it named toy-sd-b in a temporary models
   root), items A A B B ..., 2 workers (one thread each) whose model managers hold one
   checkpoint at a time (``EngineSpec.budget_bytes``: 1.5 times what toy-sd takes, measured in
   a child process), with and without affinity: loads per worker, the ratio, and the time.

A full run takes about 2.5 minutes on 2 CPU cores, ``--quick`` about 1.5, ``--ray`` about 1.
The machine's load average is printed with each figure: other processes on the machine slow
the workers down. The figures measured are in docs/scale.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from graph.events import Event, RunFinished  # noqa: E402
from graph.validate import validate  # noqa: E402
from models.paths import ModelPaths  # noqa: E402
from models.services import Services  # noqa: E402
from nodes.base import CancelToken  # noqa: E402
from nodes.registry import Registry, default_registry  # noqa: E402
from server.engine import EngineSpec  # noqa: E402
from server.worker import ProcessRunner, Runner  # noqa: E402
from sweep.affinity import models_of  # noqa: E402
from sweep.scheduler import Scheduler, SweepStats, Task, TaskResult  # noqa: E402

#: The node pack with the no-op ``Sleep`` node (tests/packs/testing.py).
TEST_PACK = "tests.packs.testing"
TOY = "toy-sd"
#: The second checkpoint's name: a copy of toy-sd in a temporary models root.
TOY_B = "toy-sd-b"
GOAL_RATIO = 1.7
GOAL_OVERHEAD_MS = 20.0


@dataclass(frozen=True)
class Setup:
    """What one run of the benchmark measures on, and how much."""

    kind: str  # "process" (local worker processes) or "ray" (actors on a local Ray)
    out: Path  # the workers' output folder (temporary)
    steps: int  # sampler steps of a toy item
    items: int  # measured toy items per throughput run
    noop_items: int  # measured no-op items of the overhead run
    affinity_items: int  # items of each affinity run (A A B B ...)
    limit_s: float  # a throughput run stops after this long (its done items are counted)


@dataclass
class Sweep:
    """What one scheduler run gave back: its results (in finishing order), stats and the run
    time each worker reported per item (from its RunFinished event)."""

    results: list[TaskResult]
    stats: SweepStats
    worker_seconds: dict[str, float] = field(default_factory=dict)
    #: The run was stopped at its time limit (the items not done by then were cancelled).
    stopped: bool = False

    @property
    def done(self) -> list[TaskResult]:
        return [r for r in self.results if r.status == "done"]

    def items_per_s(self) -> float:
        """Done items over the time from the first start to the last done item's end."""
        done = self.done
        span = max(r.finished for r in done) - min(r.started for r in self.results)
        return len(done) / span if span > 0 else 0.0


def emit(**figure: Any) -> None:
    print(json.dumps(figure), flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, by the nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def seconds_of(results: Sequence[TaskResult], reported: dict[str, float]) -> list[float]:
    """The run times the workers reported for ``results`` (their RunFinished seconds)."""
    return [reported[r.key] for r in results if r.key in reported]


def thread_label(setup: Setup, threads: int | None) -> int | str:
    """How many torch threads each worker has, as the figures say it."""
    if threads is not None:
        return threads
    return "1 (Ray's num_cpus)" if setup.kind == "ray" else "default"


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# --- workflows and tasks -------------------------------------------------------------------------


def toy_workflow(steps: int, seed: int, prefix: str, checkpoint: str = TOY) -> dict[str, Any]:
    """workflows/txt2img.json (32 px) with ``steps`` steps, sampler seed ``seed``, the picture
    saved under ``prefix`` and the checkpoint ``checkpoint``."""
    data = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    data["nodes"]["ck"]["inputs"]["ckpt_name"] = checkpoint
    data["nodes"]["s"]["inputs"].update(steps=steps, seed=seed)
    data["nodes"]["save"]["inputs"]["filename_prefix"] = prefix
    return data


def noop_workflow(value: int) -> dict[str, Any]:
    """An item that does nothing: one Sleep step of 0 s (``value`` makes each item distinct)."""
    return {
        "version": 1,
        "nodes": {
            "work": {"type": "Sleep", "inputs": {"value": value, "steps": 1, "seconds_per_step": 0.0}},
            "show": {"type": "ShowValue", "inputs": {"value": {"node": "work", "output": "value"}}},
        },
    }


def make_task(registry: Registry, key: str, data: dict[str, Any], seed: int) -> Task:
    """A scheduler task for ``data``, validated as ``app.py sweep`` validates its items."""
    checked = validate(data, registry)
    if not checked.ok or checked.workflow is None:
        raise SystemExit(f"bench item {key} does not validate: {checked.issues}")
    text = json.dumps(data)
    return Task(key, text, seed, models_of(checked.workflow, registry))


# --- workers and runs ----------------------------------------------------------------------------


def make_runners(setup: Setup, spec: EngineSpec, count: int, label: str) -> tuple[list[Runner], list[str]]:
    """``count`` fresh workers of the setup's kind over ``spec``, and their names."""
    names = [f"{label}-{n}" for n in range(count)]
    if setup.kind == "ray":
        from server.ray_runner import RayRunner

        runners: list[Runner] = [
            RayRunner(spec.for_slot(n), name, num_cpus=1) for n, name in enumerate(names)
        ]
    else:
        runners = [ProcessRunner(spec.for_slot(n), name) for n, name in enumerate(names)]
    return runners, names


def run(scheduler: Scheduler, tasks: list[Task], what: str, limit_s: float | None = None) -> Sweep:
    """Run ``tasks``; every one must be done (else the figures would mean nothing), except that
    after ``limit_s`` seconds the rest are cancelled (a configuration too slow to finish)."""
    results: list[TaskResult] = []
    seconds: dict[str, float] = {}
    cancel = CancelToken()
    timer = threading.Timer(limit_s, cancel.cancel) if limit_s else None

    def on_event(key: str, event: Event) -> None:
        if isinstance(event, RunFinished):
            seconds[key] = event.seconds

    if timer is not None:
        timer.start()
    try:
        stats = scheduler.run(tasks, results.append, cancel=cancel, on_event=on_event)
    finally:
        if timer is not None:
            timer.cancel()
    failed = [(r.key, r.status, r.error) for r in results if r.status not in ("done", "cancelled")]
    short = len(results) != len(tasks) or any(r.status == "cancelled" for r in results)
    if failed or (short and not cancel.cancelled) or not any(r.status == "done" for r in results):
        raise SystemExit(f"{what}: not every item was done: {failed[:3]}")
    return Sweep(results, stats, seconds, stopped=cancel.cancelled)


def warm_up(scheduler: Scheduler, workers: int, make: Callable[[int], Task]) -> Sweep:
    """One item per worker (a free worker takes the next item, so each takes one)."""
    sweep = run(scheduler, [make(n) for n in range(workers)], "warm-up")
    if sorted(w.items for w in sweep.stats.workers) != [1] * workers:
        raise SystemExit(f"warm-up: the items did not go one to each worker: {sweep.stats.workers}")
    return sweep


# --- 1. items/s ----------------------------------------------------------------------------------


def shared_threads(workers: int) -> int:
    """The torch threads app.py gives each of ``workers`` local workers: the cores shared out."""
    return max(1, (os.cpu_count() or 1) // workers)


def throughput(setup: Setup, registry: Registry, workers: int, threads: int | None = None) -> float:
    """Items/s of toy items on ``workers`` workers (after their warm-up); emits the figure.

    ``threads``: torch's threads in each worker process (None: torch's default, one per core).
    """
    spec = EngineSpec(output_dir=setup.out, packs=(TEST_PACK,), cpu_threads=threads)
    label = f"w{workers}-t{threads or 0}"
    began = time.perf_counter()
    runners, names = make_runners(setup, spec, workers, label)
    scheduler = Scheduler(runners, names)
    try:
        warm_up(scheduler, workers, lambda n: make_task(registry, f"start-{n}", noop_workflow(n), 0))
        started = time.perf_counter() - began
        first = warm_up(
            scheduler,
            workers,
            lambda n: make_task(
                registry, f"first-{n}", toy_workflow(setup.steps, 10_000 + n, f"{label}/first-{n}"), n
            ),
        )
        tasks = [
            make_task(registry, f"item-{n}", toy_workflow(setup.steps, n, f"{label}/item-{n}"), n)
            for n in range(setup.items)
        ]
        measured = run(scheduler, tasks, f"{workers} worker(s)", setup.limit_s)
    finally:
        scheduler.close()
    items_per_s = measured.items_per_s()
    emit(
        bench="scale",
        figure="items_per_s",
        runner=setup.kind,
        workers=workers,
        threads_per_worker=thread_label(setup, threads),
        items=len(measured.done),
        stopped_at_limit=measured.stopped,
        steps=setup.steps,
        seconds=round(measured.stats.seconds, 3),
        items_per_s=round(items_per_s, 3),
        s_per_item_worker=round(statistics.mean(seconds_of(measured.done, measured.worker_seconds)), 3),
        worker_start_s=round(started, 3),
        first_item_s=round(first.stats.seconds, 3),
        items_per_worker=[w.items for w in measured.stats.workers],
        load_average=load_average(),
    )
    return items_per_s


def measure_throughput(setup: Setup, registry: Registry) -> None:
    """Items/s on 1 and 2 workers, and the ratios, for each number of threads per worker.

    Local workers are measured with the cores shared out (as app.py makes them) and with
    torch's default threads (one per core in each worker); Ray actors get their ``num_cpus``
    (1) threads from Ray itself.
    """
    rate: dict[tuple[int, str], float] = {}
    variants = ("shared", "default") if setup.kind == "process" else ("ray",)
    for variant in variants:
        for workers in (1, 2):
            threads = shared_threads(workers) if variant == "shared" else None
            rate[workers, variant] = throughput(setup, registry, workers, threads)
        emit(
            bench="scale",
            figure="items_per_s_ratio",
            runner=setup.kind,
            threads_per_worker={"shared": "cores / workers (as app.py)", "default": "torch default"}.get(
                variant, "1 (Ray)"
            ),
            items_per_s_1=round(rate[1, variant], 3),
            items_per_s_2=round(rate[2, variant], 3),
            ratio=round(rate[2, variant] / rate[1, variant], 2),
            goal_ratio=GOAL_RATIO,
        )


# --- 2. scheduler overhead -----------------------------------------------------------------------


def overhead(setup: Setup, registry: Registry) -> None:
    """Dispatch time per item, and the end-to-end time added per no-op item on one worker."""
    spec = EngineSpec(output_dir=setup.out, packs=(TEST_PACK,))
    runners, names = make_runners(setup, spec, 1, "noop")
    scheduler = Scheduler(runners, names)
    try:
        warm_up(scheduler, 1, lambda n: make_task(registry, "start", noop_workflow(-1), 0))
        tasks = [make_task(registry, f"noop-{n}", noop_workflow(n), n) for n in range(setup.noop_items)]
        sweep = run(scheduler, tasks, "no-op items")
    finally:
        scheduler.close()
    count = len(tasks)
    wall_ms = sweep.stats.seconds / count * 1e3
    worker_ms = statistics.mean(sweep.worker_seconds.values()) * 1e3
    round_trip_ms = statistics.mean(r.seconds for r in sweep.results) * 1e3
    dispatch = sweep.stats.dispatch_ms
    emit(
        bench="scale",
        figure="dispatch_ms",
        runner=setup.kind,
        items=len(dispatch),
        median_ms=round(statistics.median(dispatch), 4),
        p99_ms=round(percentile(dispatch, 99), 4),
        max_ms=round(max(dispatch), 4),
        goal_ms=GOAL_OVERHEAD_MS,
    )
    emit(
        bench="scale",
        figure="overhead_ms_per_item",
        runner=setup.kind,
        workers=1,
        items=count,
        wall_ms_per_item=round(wall_ms, 3),
        worker_run_ms=round(worker_ms, 3),
        overhead_ms=round(wall_ms - worker_ms, 3),
        runner_ms=round(round_trip_ms - worker_ms, 3),
        scheduler_ms=round(wall_ms - round_trip_ms, 3),
        items_per_s=round(count / sweep.stats.seconds, 1),
        goal_ms=GOAL_OVERHEAD_MS,
        load_average=load_average(),
    )


# --- 3. model loads with and without affinity ----------------------------------------------------


def checkpoint_bytes(out: Path) -> int:
    """The bytes toy-sd takes in a model manager, measured by loading it in a child process (so
    this one never starts torch, whose threads would compete with the workers')."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(loaded_bytes, out).result()


def loaded_bytes(out: Path) -> int:
    """The bytes a model manager holds after one toy item (toy-sd, loaded once)."""
    from server.engine import WorkerEngine

    engine = WorkerEngine(EngineSpec(output_dir=out))
    engine.run("size", json.dumps(toy_workflow(1, 0, "size")), 0, CancelToken(), lambda event: None)
    return int(engine.services.models().loaded_bytes)


def affinity(setup: Setup) -> None:
    """Loads per worker over A A B B ... items with affinity and without, and their ratio."""
    root = setup.out / "models-b"
    shutil.copytree(REPO / "models" / "checkpoints" / TOY, root / "checkpoints" / TOY_B)
    paths = ModelPaths.with_roots([root])
    registry = default_registry(services=Services(paths=paths))
    registry.add_pack(TEST_PACK)
    spec = EngineSpec(output_dir=setup.out, packs=(TEST_PACK,), model_roots=paths.roots)
    # Room for one checkpoint, not two: a worker that switches checkpoint reloads.
    budget = int(checkpoint_bytes(setup.out / "size") * 1.5)
    spec = dataclasses.replace(spec, budget_bytes=budget, cpu_threads=shared_threads(2))
    loads: dict[bool, int] = {}
    for with_affinity in (True, False):
        label = "affinity" if with_affinity else "no-affinity"
        runners, names = make_runners(setup, spec, 2, label)
        scheduler = Scheduler(runners, names, affinity=with_affinity)
        try:
            warm_up(scheduler, 2, lambda n: make_task(registry, f"start-{n}", noop_workflow(n), 0))
            tasks = []
            for n in range(setup.affinity_items):
                checkpoint = TOY if n // 2 % 2 == 0 else TOY_B
                data = toy_workflow(setup.steps, n, f"{label}/item-{n}", checkpoint)
                tasks.append(make_task(registry, f"item-{n}", data, n))
            sweep = run(scheduler, tasks, label)
        finally:
            scheduler.close()
        loads[with_affinity] = sweep.stats.loads
        emit(
            bench="scale",
            figure="model_loads",
            runner=setup.kind,
            affinity=with_affinity,
            items=len(tasks),
            order="A A B B ...",
            budget_bytes=budget,
            loads=sweep.stats.loads,
            loads_per_worker={w.name: w.loads for w in sweep.stats.workers},
            items_per_worker={w.name: w.items for w in sweep.stats.workers},
            affinity_hits=sweep.stats.affinity_hits,
            threads_per_worker=1,
            seconds=round(sweep.stats.seconds, 3),
            load_average=load_average(),
        )
    emit(
        bench="scale",
        figure="model_loads_ratio",
        runner=setup.kind,
        loads_with_affinity=loads[True],
        loads_without=loads[False],
        ratio_without_to_with=round(loads[False] / max(1, loads[True]), 2),
    )


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer items (about half the time)")
    parser.add_argument("--ray", action="store_true", help="Ray actors on a local Ray instead of processes")
    parser.add_argument("--steps", type=int, default=8, help="sampler steps of a toy item (default 8)")
    parser.add_argument("--items", type=int, help="measured toy items per throughput run")
    parser.add_argument(
        "--part",
        action="append",
        choices=("throughput", "overhead", "affinity"),
        help="run only this part; repeatable (default: all three)",
    )
    args = parser.parse_args()
    parts = args.part or ["throughput", "overhead", "affinity"]
    kind = "ray" if args.ray else "process"
    emit(
        bench="scale",
        figure="machine",
        runner=kind,
        cpus=os.cpu_count(),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        load_average=load_average(),
        parts=parts,
    )
    if kind == "ray":
        from server.ray_runner import connect

        connect("auto")
    registry = default_registry()
    registry.add_pack(TEST_PACK)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as folder:
        setup = Setup(
            kind=kind,
            out=Path(folder),
            steps=args.steps,
            items=args.items or (12 if args.quick else 40),
            noop_items=100 if args.quick else 400,
            affinity_items=8 if args.quick else 16,
            limit_s=20.0 if args.quick else 60.0,
        )
        try:
            if "throughput" in parts:
                measure_throughput(setup, registry)
            if "overhead" in parts:
                overhead(setup, registry)
            if "affinity" in parts:
                affinity(setup)
        finally:
            if kind == "ray":
                import ray

                ray.shutdown()
    emit(
        bench="scale",
        figure="total",
        runner=kind,
        seconds=round(time.perf_counter() - started, 1),
        load_average=load_average(),
    )


if __name__ == "__main__":
    main()
