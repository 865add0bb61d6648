"""Runs many tasks (the items of a sweep) on a set of workers, one task per worker at a time.

The workers are :class:`~server.worker.Runner` objects: local worker processes
(:class:`~server.worker.ProcessRunner`), Ray actors (:class:`~server.ray_runner.RayRunner`)
or, in tests, threads. Each runner gets a thread of its own here that hands it one task at a
time; all choosing happens in the thread that called :meth:`Scheduler.run`, which is also the
only thread that calls ``on_result``, so a manifest writer needs no lock of its own.

Choosing (model affinity): a free worker takes the first waiting task whose models it already
holds; failing that, the first task whose models no other worker holds (so two checkpoints
spread over two workers instead of both workers loading both); failing that, the first task.
What a worker holds is what its tasks named, forgotten when the worker is lost.

Faults: a task whose worker was lost mid-run (killed, out of memory: ``RunOutcome.worker_lost``)
is put back at the front of the queue and retried on another worker (on the same one only when
there is no other), at most ``retries`` times; then it is reported failed with the reason. A
task reaches ``on_result`` exactly once, so no task is reported done twice.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from graph.events import Event
from graph.workflow import Workflow
from nodes.base import CancelToken
from server.worker import Runner, RunOutcome, RunRequest

#: How often (seconds) the choosing thread looks at the cancel token while it waits.
_TICK = 0.05


@dataclass(frozen=True)
class Task:
    """One item to run: a valid workflow with the item's values applied, and its run seed."""

    key: str
    workflow_json: str
    seed: int | None
    #: The model files it loads (sweep.affinity.models_of): what affinity matches on.
    models: frozenset[str] = frozenset()


@dataclass
class TaskResult:
    """How a task ended, as ``on_result`` gets it (once per task)."""

    key: str
    status: str
    error: str | None
    files: list[str]
    outputs: dict[str, dict[str, Any]]
    seed: int | None
    worker: str
    attempts: int
    started: float
    finished: float
    seconds: float
    tried_on: list[str]


@dataclass
class WorkerStats:
    """What one worker did during a run of the scheduler."""

    name: str
    items: int = 0
    loads: int = 0
    lost: int = 0


@dataclass
class SweepStats:
    """What :meth:`Scheduler.run` did, for the manifest's summary and the benchmark."""

    workers: list[WorkerStats]
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    affinity_hits: int = 0
    seconds: float = 0.0
    dispatch_ms: list[float] = field(default_factory=list)

    @property
    def loads(self) -> int:
        return sum(worker.loads for worker in self.workers)


@dataclass
class _Pending:
    task: Task
    attempts: int = 0
    tried_on: list[str] = field(default_factory=list)


@dataclass
class _Slot:
    """A runner, its thread's inbox and what the scheduler knows of it."""

    name: str
    runner: Runner
    inbox: queue.Queue[tuple[_Pending, CancelToken] | None]
    holds: set[str] = field(default_factory=set)
    busy: _Pending | None = None
    token: CancelToken | None = None
    loads_at_start: int | None = None
    stats: WorkerStats | None = None


def _json_safe(value: Any) -> bool:
    import math

    return isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value))


class Scheduler:
    """Runs tasks on ``runners`` (named by ``names``), one task per runner at a time."""

    def __init__(
        self,
        runners: Sequence[Runner],
        names: Sequence[str] | None = None,
        *,
        affinity: bool = True,
        retries: int = 1,
        lookahead: int = 64,
    ) -> None:
        """``lookahead``: how many waiting tasks affinity may choose among (besides two per worker)."""
        if not runners:
            raise ValueError("a scheduler needs at least one worker")
        names = list(names) if names is not None else [f"worker-{n}" for n in range(len(runners))]
        if len(names) != len(runners) or len(set(names)) != len(names):
            raise ValueError("give each worker one distinct name")
        self.affinity = affinity
        self.retries = max(0, retries)
        self.lookahead = max(0, lookahead)
        self._done: queue.Queue[tuple[_Slot, _Pending, RunOutcome, float, float]] = queue.Queue()
        self._slots = [
            _Slot(name, runner, queue.Queue()) for name, runner in zip(names, runners, strict=True)
        ]
        self._on_event: Callable[[str, Event], None] | None = None
        self._threads = [
            threading.Thread(target=self._serve, args=(slot,), name=f"sweep-{slot.name}", daemon=True)
            for slot in self._slots
        ]
        for thread in self._threads:
            thread.start()

    @property
    def names(self) -> list[str]:
        return [slot.name for slot in self._slots]

    def running(self) -> dict[str, str]:
        """The keys of the running tasks and the workers running them."""
        running = {}
        for slot in self._slots:
            busy = slot.busy  # read once: the choosing thread may clear it meanwhile
            if busy is not None:
                running[busy.task.key] = slot.name
        return running

    # -- running ----------------------------------------------------------------------------------

    def run(
        self,
        tasks: Iterable[Task],
        on_result: Callable[[TaskResult], None],
        cancel: CancelToken | None = None,
        on_event: Callable[[str, Event], None] | None = None,
    ) -> SweepStats:
        """Run every task once; call ``on_result`` for each as it ends (in this thread).

        With ``cancel`` cancelled, no more tasks start and running ones are asked to stop
        (their results come back as "cancelled"); tasks that never started are not reported.
        """
        cancel = cancel or CancelToken()
        self._on_event = on_event
        source = iter(tasks)
        waiting: deque[_Pending] = deque()
        seen: set[str] = set()
        # Tasks are taken from ``tasks`` as room frees up, never all at once: a sweep of a
        # million items is built item by item. The window is what affinity chooses among.
        window = self.lookahead + 2 * len(self._slots)
        exhausted = False

        def refill() -> None:
            nonlocal exhausted
            while not exhausted and len(waiting) < window:
                task = next(source, None)
                if task is None:
                    exhausted = True
                elif task.key in seen:
                    raise ValueError(f"every task needs a distinct key; {task.key!r} came twice")
                else:
                    seen.add(task.key)
                    waiting.append(_Pending(task))

        stats = SweepStats([WorkerStats(slot.name) for slot in self._slots])
        for slot, worker in zip(self._slots, stats.workers, strict=True):
            slot.stats = worker
        started = time.monotonic()
        cancelling = False
        refill()
        while waiting or not exhausted or any(slot.busy for slot in self._slots):
            if cancel.cancelled and not cancelling:
                cancelling = True
                waiting.clear()
                exhausted = True
                for slot in self._slots:
                    if slot.token is not None:
                        slot.token.cancel()
            if not cancelling:
                self._dispatch(waiting, stats)
                refill()
            try:
                slot, pending, outcome, began, ended = self._done.get(timeout=_TICK)
            except queue.Empty:
                continue
            self._settle(slot, pending, outcome, began, ended, waiting, stats, on_result, cancelling)
        stats.seconds = time.monotonic() - started
        return stats

    def _dispatch(self, waiting: deque[_Pending], stats: SweepStats) -> None:
        for slot in self._slots:
            if slot.busy is not None or not waiting:
                continue
            t0 = time.perf_counter()
            pending = self._choose(slot, waiting)
            if pending is None:
                continue
            waiting.remove(pending)
            if pending.task.models and pending.task.models <= slot.holds:
                stats.affinity_hits += 1
            slot.busy = pending
            slot.token = CancelToken()
            pending.attempts += 1
            pending.tried_on.append(slot.name)
            slot.inbox.put((pending, slot.token))
            stats.dispatch_ms.append((time.perf_counter() - t0) * 1000.0)

    def _choose(self, slot: _Slot, waiting: deque[_Pending]) -> _Pending | None:
        """The task this free worker should take (None: none it may take).

        Each pass stops at its first match, so choosing stays quick over long queues.
        """
        first = next((p for p in waiting if _may_take(slot, p, self._slots)), None)
        if first is None or not self.affinity:
            return first
        held = slot.holds
        for pending in waiting:
            if pending.task.models and pending.task.models <= held and _may_take(slot, pending, self._slots):
                return pending
        elsewhere: set[str] = set()
        for other in self._slots:
            if other is not slot:
                elsewhere |= other.holds | (other.busy.task.models if other.busy else frozenset())
        for pending in waiting:
            if not pending.task.models & elsewhere and _may_take(slot, pending, self._slots):
                return pending
        return first

    def _settle(
        self,
        slot: _Slot,
        pending: _Pending,
        outcome: RunOutcome,
        began: float,
        ended: float,
        waiting: deque[_Pending],
        stats: SweepStats,
        on_result: Callable[[TaskResult], None],
        cancelling: bool,
    ) -> None:
        slot.busy, slot.token = None, None
        worker = slot.stats
        assert worker is not None
        if outcome.worker_lost:
            worker.lost += 1
            slot.holds.clear()
            if not cancelling and pending.attempts <= self.retries:
                stats.retried += 1
                waiting.appendleft(pending)
                return
        else:
            slot.holds |= pending.task.models
        if outcome.loads is not None:
            worker.loads = outcome.loads
        worker.items += 1
        status = outcome.status if outcome.status in ("done", "cancelled") else "failed"
        error = outcome.error
        if cancelling and status != "done":
            status = "cancelled"
        elif outcome.worker_lost and pending.attempts > 1:
            error = f"{error} (tried {pending.attempts} times: on {', '.join(pending.tried_on)})"
        result = outcome.result
        outputs = {}
        if result is not None:
            outputs = {
                node_id: {name: value for name, value in values.items() if _json_safe(value)}
                for node_id, values in result.outputs.items()
            }
            outputs = {node_id: values for node_id, values in outputs.items() if values}
        if status == "done":
            stats.done += 1
        elif status == "cancelled":
            stats.cancelled += 1
        else:
            stats.failed += 1
        on_result(
            TaskResult(
                key=pending.task.key,
                status=status,
                error=error,
                files=list(result.files) if result is not None else [],
                outputs=outputs,
                seed=result.seed if result is not None else pending.task.seed,
                worker=slot.name,
                attempts=pending.attempts,
                started=began,
                finished=ended,
                seconds=max(0.0, ended - began),
                tried_on=list(pending.tried_on),
            )
        )

    # -- each runner's thread ---------------------------------------------------------------------

    def _serve(self, slot: _Slot) -> None:
        while (work := slot.inbox.get()) is not None:
            pending, token = work
            task = pending.task
            began = time.time()
            try:
                request = RunRequest(
                    f"{task.key}-{pending.attempts}",
                    Workflow.model_validate_json(task.workflow_json),
                    task.workflow_json,
                    task.seed,
                )
                outcome = slot.runner.run(request, lambda event, k=task.key: self._event(k, event), token)
            except Exception as exc:  # noqa: BLE001 - one broken task must not stop its worker's thread
                outcome = RunOutcome(
                    "failed", f"the studio hit an internal error: {type(exc).__name__}: {exc}"
                )
            self._done.put((slot, pending, outcome, began, time.time()))

    def _event(self, key: str, event: Event) -> None:
        listener = self._on_event
        if listener is not None:
            try:
                listener(key, event)
            except Exception:  # noqa: BLE001 - a broken progress display must not stop the item
                pass

    def close(self, timeout: float = 10.0) -> None:
        """Stop the runners' threads and close the runners."""
        for slot in self._slots:
            slot.inbox.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for slot in self._slots:
            slot.runner.close(max(0.0, deadline - time.monotonic()))


def _may_take(slot: _Slot, pending: _Pending, slots: list[_Slot]) -> bool:
    """A retried task goes to a worker it has not run on, unless it has run on all of them."""
    return slot.name not in pending.tried_on or all(s.name in pending.tried_on for s in slots)
