"""The job queue: every run of the studio (page or API) goes through one of these.

:meth:`JobQueue.submit` validates a workflow (an invalid one raises
:class:`~graph.issues.InvalidWorkflow` carrying every issue), records the job in
the history and queues it. Worker threads (one by default) take jobs in the
order they came and run them through :meth:`Executor.run` with a cancel token of
their own, so cancelling one job never touches another. Each event of a run is
kept on the job as a JSON-safe dict (images become their shape, tracebacks go to
the server log; saved files are named relative to the output folder) and wakes anyone
waiting in :meth:`JobQueue.events`. The pictures of previews are kept apart, as PNGs,
in :attr:`JobQueue.previews` (server/previews.py), stored before their event is sent.

Every change of state is written to the :class:`~server.history.History` at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from graph.events import Event, NodeCached, NodeFailed, NodeFinished, NodePreview, NodeProgress, RunStarted
from graph.executor import MAX_SEED, Executor, RunResult
from graph.issues import InvalidWorkflow, Issue
from graph.validate import validate
from graph.workflow import Workflow
from nodes import types as T
from nodes.base import CancelToken, RunSettings
from nodes.registry import Registry
from server.history import FINAL_STATUSES, History, JobRecord
from server.previews import PreviewStore, encode_pngs
from server.worker import Runner, RunRequest, ThreadRunner

log = logging.getLogger(__name__)

Source = Literal["api", "ui"]
#: Where a job may come from: the HTTP API (scripts), the studio's page, ComfyUI's routes.
SOURCES: tuple[str, ...] = ("api", "ui")
CancelOutcome = Literal["removed", "stopping", "finished", "unknown"]
Listener = Callable[[Event], None]

#: Events kept per job; beyond this, progress events are no longer stored.
MAX_EVENTS = 5000


class QueueClosed(Exception):
    """The queue is shutting down and takes no more jobs."""


class QueueFull(Exception):
    """Too many jobs are waiting already."""


@dataclass
class Job:
    """One submitted workflow and everything known about its run so far."""

    id: str
    workflow: Workflow
    workflow_json: str
    seed: int | None
    source: str
    submitted: float
    token: CancelToken
    status: str = "queued"
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    outputs: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes_planned: int = 0
    nodes_executed: int = 0
    nodes_cached: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    #: The executor's result (outputs as Python values), kept while the job is in memory.
    result: RunResult | None = None
    listener: Listener | None = None
    on_end: Callable[[Job], None] | None = None
    output_dir: Path | None = None

    @property
    def ended(self) -> bool:
        return self.status in FINAL_STATUSES

    def record(self) -> JobRecord:
        return JobRecord(
            id=self.id,
            status=self.status,
            source=self.source,
            submitted=self.submitted,
            workflow=self.workflow_json,
            seed=self.seed,
            started=self.started,
            finished=self.finished,
            error=self.error,
            outputs=list(self.outputs),
            results=dict(self.results),
            nodes_planned=self.nodes_planned,
            nodes_executed=self.nodes_executed,
            nodes_cached=self.nodes_cached,
        )

    def to_dict(self, *, workflow: bool = True) -> dict[str, Any]:
        """JSON-ready, as the API shows it (``events`` is their count)."""
        data = self.record().to_dict(workflow=workflow)
        data["events"] = len(self.events)
        return data


def check_seed(seed: Any) -> Issue | None:
    """Why ``seed`` cannot be a run seed (``None`` means a random one)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        return Issue("seed", f"the seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return None


def _json_value(value: Any) -> bool:
    return isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value))


class JobQueue:
    """Runs submitted workflows one at a time per worker, in the order they came."""

    def __init__(
        self,
        executor: Executor | None,
        registry: Registry,
        settings_factory: Callable[[], RunSettings],
        history: History | None = None,
        workers: int = 1,
        *,
        runners: Sequence[Runner] | None = None,
        max_queued: int = 1000,
        keep_finished: int = 200,
    ) -> None:
        """A queue over ``runners`` (one worker slot each), or ``workers`` threads running ``executor``."""
        if runners is None:
            if executor is None:
                raise ValueError("give the job queue an executor or its runners")
            runners = [ThreadRunner(executor, settings_factory) for _ in range(workers)]
        if not runners:
            raise ValueError("a job queue needs at least one worker")
        self.runners = list(runners)
        self.executor = executor
        self.registry = registry
        self.settings_factory = settings_factory
        self.history = history
        self.max_queued = max_queued
        self.keep_finished = keep_finished
        #: The latest preview pictures of each node of recent jobs (PNG bytes).
        self.previews = PreviewStore()
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._running: dict[str, Job] = {}
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, args=(runner,), name=f"studio-job-worker-{n}", daemon=True)
            for n, runner in enumerate(self.runners)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def output_dir(self) -> Path:
        """The output folder runs write to (as the settings factory gives it)."""
        return Path(self.settings_factory().output_dir)

    # -- submitting and cancelling ---------------------------------------------------

    def submit(
        self,
        workflow: Any,
        seed: int | None = None,
        source: Source = "api",
        *,
        listener: Listener | None = None,
        on_end: Callable[[Job], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> Job:
        """Validate and queue a workflow (text, bytes, parsed JSON or a :class:`Workflow`).

        Raises :class:`InvalidWorkflow` with every issue (the seed's included),
        :class:`QueueFull` or :class:`QueueClosed`. ``listener`` gets each event
        of the run as it happens (in the worker thread, images included);
        ``on_end`` gets the job once it has ended, however it ended.
        """
        if isinstance(workflow, Workflow):
            workflow = workflow.to_json()
        checked = validate(workflow, self.registry)
        issues = list(checked.issues)
        seed_issue = check_seed(seed)
        if seed_issue is not None:
            issues.append(seed_issue)
        if issues or checked.workflow is None:
            raise InvalidWorkflow(issues)
        job = Job(
            id=uuid.uuid4().hex[:12],
            workflow=checked.workflow,
            workflow_json=checked.workflow.to_json(),
            seed=seed,
            source=source,
            submitted=time.time(),
            token=cancel if cancel is not None else CancelToken(),
            listener=listener,
            on_end=on_end,
        )
        with self._cond:
            if self._closed:
                raise QueueClosed("the studio is shutting down and takes no new jobs")
            if len(self._pending) >= self.max_queued:
                raise QueueFull(f"{len(self._pending)} jobs are waiting already; try again later")
            self._store(self._record, job, False)
            self._jobs[job.id] = job
            self._pending.append(job)
            self._append(job, {"event": "job_queued", "job_id": job.id, "position": len(self._pending) - 1})
            self._cond.notify_all()
        return job

    def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel one job: a queued one is removed, a running one is stopped at its next check."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                return "unknown"
            if job.ended:
                return "finished"
            if job.status == "running":
                job.token.cancel()
                return "stopping"
            self._pending.remove(job)
            job.token.cancel()
            self._finish(job, "cancelled", "cancelled before it started")
        self._ended(job)
        return "removed"

    # -- looking at jobs -------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """A job still held in memory (queued, running or among the recently finished)."""
        with self._cond:
            return self._jobs.get(job_id)

    def lookup(self, job_id: str) -> dict[str, Any] | None:
        """A job as JSON, from memory or else from the history."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is not None:
                return job.to_dict()
        record = self.history.get(job_id) if self.history is not None else None
        return record.to_dict() if record is not None else None

    def recent(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """The newest jobs first, as JSON without their workflows (from the history if kept)."""
        if self.history is not None:
            return [record.to_dict(workflow=False) for record in self.history.list(limit, offset)]
        with self._cond:
            jobs = sorted(self._jobs.values(), key=lambda job: job.submitted, reverse=True)
            return [job.to_dict(workflow=False) for job in jobs[offset : offset + limit]]

    def list_queue(self) -> list[Job]:
        """The running jobs, then the queued ones in the order they will run."""
        with self._cond:
            return [*self._running.values(), *self._pending]

    def position(self, job_id: str) -> int | None:
        """How many jobs run before this queued one (0: it is next), or None."""
        with self._cond:
            for index, job in enumerate(self._pending):
                if job.id == job_id:
                    return index
        return None

    def events(self, job_id: str, after: int = 0, timeout: float = 0.0) -> list[dict[str, Any]] | None:
        """The job's events numbered above ``after``, waiting up to ``timeout`` s for one.

        Returns at once when there are such events or the job has ended; ``None``
        for a job not held in memory.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            while len(job.events) <= after and not job.ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return [dict(e) for e in job.events[max(0, after) :]]

    def wait(self, job_id: str, timeout: float) -> Job | None:
        """Wait up to ``timeout`` s for a job to end; the job (ended or not) or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            job = self._jobs.get(job_id)
            while job is not None and not job.ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return job

    # -- shutting down ------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Take no new jobs, drop the queued ones (marked interrupted), stop the running ones."""
        with self._cond:
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
            for job in dropped:
                job.token.cancel()
                self._finish(job, "interrupted", "the server stopped before this job started")
            for job in self._running.values():
                job.token.cancel()
            self._cond.notify_all()
        for job in dropped:
            self._ended(job)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for runner in self.runners:
            runner.close(max(0.0, deadline - time.monotonic()))

    # -- the workers ----------------------------------------------------------------------

    def _work(self, runner: Runner) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                job = self._pending.popleft()
                job.status = "running"
                job.started = time.time()
                self._running[job.id] = job
                self._store(self._update, job, "status", "started")
                self._append(job, {"event": "job_started", "job_id": job.id})
                self._cond.notify_all()
            self._run(runner, job)

    def _run(self, runner: Runner, job: Job) -> None:
        status, error = "failed", None
        try:
            job.output_dir = self.output_dir
            request = RunRequest(job.id, job.workflow, job.workflow_json, job.seed)
            outcome = runner.run(request, lambda event: self._on_event(job, event), job.token)
            status, error, result = outcome.status, outcome.error, outcome.result
            if result is not None:
                job.result = result
                with self._cond:
                    job.seed = result.seed
                    job.nodes_executed = len(result.executed)
                    job.nodes_cached = len(result.cached)
                    job.outputs = self._relative(job, result.files)
                    job.results = {
                        node_id: {name: value for name, value in values.items() if _json_value(value)}
                        for node_id, values in result.outputs.items()
                    }
                    job.results = {k: v for k, v in job.results.items() if v}
                self._cached_previews(job, result)
        except BaseException as exc:  # noqa: BLE001 - one broken run must not stop the worker
            log.exception("job %s failed inside the studio", job.id)
            error = f"the studio hit an internal error: {type(exc).__name__}: {exc}"
        with self._cond:
            self._running.pop(job.id, None)
            self._finish(job, status, error)
        self._ended(job)

    def _on_event(self, job: Job, event: Event) -> None:
        if job.listener is not None:
            try:
                job.listener(event)
            except Exception:  # noqa: BLE001 - a broken listener must not stop the run
                log.exception("a listener of job %s failed", job.id)
        if isinstance(event, NodeFailed) and event.details:
            log.warning("job %s failed at %s", job.id, event)
            log.debug("%s", event.details)
        entry = event.to_dict()
        entry.pop("details", None)
        if isinstance(event, NodePreview):
            self._keep_preview(job, event.node_id, event.image)
        with self._cond:
            if isinstance(event, RunStarted):
                job.seed = event.seed
                job.nodes_planned = len(event.planned)
                self._store(self._update, job, "seed", "nodes_planned")
            elif isinstance(event, NodeFinished | NodeCached) and event.files:
                entry["files"] = self._relative(job, event.files)
                job.outputs += entry["files"]
                self._store(self._update, job, "outputs")
            if isinstance(event, NodeProgress) and len(job.events) >= MAX_EVENTS:
                return
            self._append(job, entry)
            self._cond.notify_all()

    # -- previews (called without the lock) ----------------------------------------------------

    def _keep_preview(self, job: Job, node_id: str, image: object) -> bool:
        """Encode a preview's pictures as PNGs and keep them as the node's latest; False if none."""
        try:
            pngs = encode_pngs(image)
        except Exception:  # noqa: BLE001 - a preview that cannot be drawn must not stop the run
            log.exception("could not encode a preview of node %s in job %s", node_id, job.id)
            return False
        self.previews.put(job.id, node_id, pngs)
        return bool(pngs)

    def _cached_previews(self, job: Job, result: RunResult) -> None:
        """The images of output nodes served from the cache (a PreviewImage run again as it was),
        which sent no preview this run: kept as their previews, each announced by a
        ``node_preview`` event after ``run_finished``."""
        for node_id in result.cached:
            entry = job.workflow.nodes.get(node_id)
            cls = self.registry.get(entry.type) if entry is not None else None
            values = result.outputs.get(node_id) or {}
            if cls is None or not cls.output_node or self.previews.has(job.id, node_id):
                continue
            image = next(
                (values[o.name] for o in cls.outputs if o.type == T.IMAGE and o.name in values), None
            )
            if image is None or not self._keep_preview(job, node_id, image):
                continue
            shape = list(getattr(image, "shape", ()))
            with self._cond:
                self._append(
                    job,
                    {
                        "event": "node_preview",
                        "run_id": job.id,
                        "node_id": node_id,
                        "image": {"shape": shape},
                    },
                )
                self._cond.notify_all()

    # -- helpers (called with the lock held unless said otherwise) ----------------------------

    def _append(self, job: Job, entry: dict[str, Any]) -> None:
        job.events.append({"seq": len(job.events) + 1, **entry})

    def _finish(self, job: Job, status: str, error: str | None) -> None:
        job.status = status
        job.error = error
        job.finished = time.time()
        entry = {"event": "job_finished", "job_id": job.id, "status": status, "error": error}
        self._append(job, {**entry, "outputs": list(job.outputs), "results": dict(job.results)})
        self._store(self._record, job, True)
        self._forget_old()
        self._cond.notify_all()

    def _ended(self, job: Job) -> None:
        """Tell the job's owner it has ended (without the lock)."""
        if job.on_end is not None:
            try:
                job.on_end(job)
            except Exception:  # noqa: BLE001
                log.exception("the end callback of job %s failed", job.id)

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.ended]
        for job_id in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[job_id]

    def _update(self, job: Job, *names: str) -> None:
        if self.history is not None:
            self.history.update(job.id, **{name: getattr(job, name) for name in names})

    def _record(self, job: Job, replace: bool) -> None:
        if self.history is not None:
            (self.history.save if replace else self.history.add)(job.record())

    @staticmethod
    def _store(write: Callable[..., Any], *args: Any) -> None:
        try:
            write(*args)
        except Exception:  # noqa: BLE001 - a full disk must not stop the runs
            log.exception("could not write the run history")

    def _relative(self, job: Job, files: list[str]) -> list[str]:
        """Output paths relative to the job's output folder (as given when outside it)."""
        root = (job.output_dir or self.output_dir).resolve()
        out = []
        for name in files:
            path = Path(name).resolve()
            out.append(path.relative_to(root).as_posix() if path.is_relative_to(root) else str(name))
        return out
