"""Where jobs run: in the server's own threads, or in worker processes it supervises.

The job queue (server/jobs.py) holds one *runner* per worker slot and hands it one
job at a time. Two kinds:

- :class:`ThreadRunner` runs the executor in the calling thread. Tests and
  embedding scripts use it; it shares the process (and its GIL) with the caller.
- :class:`ProcessRunner` runs the executor in a child process of its own (started
  with ``spawn``), so a job that holds the GIL, leaks memory or crashes native code
  never stalls or takes down the server. The child builds its own registry,
  executor, cache and model manager from an :class:`EngineSpec` (plain data) and
  keeps them between jobs, so models load once per worker. Events and the result
  come back over a pipe. A cancel is forwarded at once; a node that ignores it for
  ``cancel_grace`` seconds gets its process killed and a fresh one started. A
  child that dies (segfault, out-of-memory kill) fails only the job it was
  running, with the reason, and is replaced before the next job.

Messages on the pipe are pickled by us (``pickle`` over ``send_bytes``), between
two processes of the same program; nothing from a user crosses it unparsed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

from graph.events import Event, NodeStarted
from graph.executor import Executor, RunResult
from graph.workflow import Workflow
from nodes.base import CancelToken, RunSettings
from server.engine import EngineSpec, WorkerEngine, portable

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]

#: Seconds a node may ignore a cancel before its worker process is killed.
CANCEL_GRACE = 5.0
#: Seconds a new worker process may take to import and build its engine.
START_TIMEOUT = 120.0
#: How often (seconds) a waiting supervisor looks at the cancel token and the child.
_TICK = 0.05


@dataclass(frozen=True)
class RunRequest:
    """One job, as a runner gets it."""

    job_id: str
    workflow: Workflow
    workflow_json: str
    seed: int | None


@dataclass
class RunOutcome:
    """How a job ended: the executor's result, or why there is none.

    ``status`` is the job's final status; ``error`` its reason in plain words.
    """

    status: str
    error: str | None = None
    result: RunResult | None = None
    #: The worker ended (killed, crashed, lost) while running the job: the job itself may be fine.
    worker_lost: bool = False
    #: How many models the worker's manager has loaded so far (None: not known).
    loads: int | None = None


class Runner(Protocol):
    """Runs one job at a time for the job queue."""

    def run(self, request: RunRequest, listener: Listener, cancel: CancelToken) -> RunOutcome: ...

    def close(self, timeout: float = 10.0) -> None: ...


def outcome_of(result: RunResult) -> RunOutcome:
    return RunOutcome(result.status, str(result.error) if result.error is not None else None, result)


# --- in the server's own process ----------------------------------------------------------------


class ThreadRunner:
    """Runs jobs in the calling thread through one shared executor."""

    def __init__(self, executor: Executor, settings_factory: Callable[[], RunSettings]) -> None:
        self.executor = executor
        self.settings_factory = settings_factory

    def run(self, request: RunRequest, listener: Listener, cancel: CancelToken) -> RunOutcome:
        settings = self.settings_factory()
        if settings.workflow_json is None:
            settings.workflow_json = request.workflow_json
        result = self.executor.run(
            request.workflow,
            settings=settings,
            seed=request.seed,
            cancel=cancel,
            listener=listener,
            run_id=request.job_id,
        )
        return outcome_of(result)

    def close(self, timeout: float = 10.0) -> None:
        return None


# --- in worker processes ---------------------------------------------------------------------------


class WorkerLost(Exception):
    """The worker process ended while a job ran in it; the message says how."""


def grace_after(event: Event, base: float, current: float) -> float:
    """The seconds a job may take to stop after a cancel, once ``event`` has happened: a starting
    node brings its own extra (Node.cancel_grace) on top of the runner's ``base``."""
    if isinstance(event, NodeStarted):
        return base + max(0.0, float(event.cancel_grace))
    return current


def exit_reason(exitcode: int | None) -> str:
    """Why a process ended, in plain words, from its exit code."""
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hints = {
            "SIGKILL": " (killed from outside; the system may have run out of memory)",
            "SIGSEGV": " (a crash in native code)",
            "SIGABRT": " (aborted by native code)",
            "SIGBUS": " (a crash in native code)",
        }
        return f"was killed by {name}{hints.get(name, '')}"
    return f"exited with code {exitcode}"


@dataclass
class _Child:
    process: Any
    conn: Connection
    ready: bool = False
    pid: int | None = None
    inbox: list[tuple[Any, ...]] = field(default_factory=list)


class ProcessRunner:
    """Runs jobs in a worker process of its own, replacing it when it dies or hangs."""

    def __init__(
        self,
        spec: EngineSpec,
        name: str = "studio-worker",
        *,
        cancel_grace: float = CANCEL_GRACE,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.spec = spec
        self.name = name
        self.cancel_grace = cancel_grace
        self.start_timeout = start_timeout
        self.restarts = 0
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._closed = False
        self._start()

    # -- the child's life ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The worker process's id (None while none runs)."""
        child = self._child
        return child.process.pid if child is not None else None

    def _start(self) -> None:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=worker_main, args=(child_end, self.spec), name=self.name, daemon=True
        )
        process.start()
        child_end.close()
        self._child = _Child(process, parent_end)

    def _stop_child(self, *, force: bool) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if not force and child.process.is_alive():
            try:
                _send(child.conn, ("stop",))
            except OSError:
                pass
            child.process.join(2.0)
        if child.process.is_alive():
            child.process.kill()
        child.process.join(5.0)
        child.conn.close()

    def _restart(self) -> None:
        self._stop_child(force=True)
        if not self._closed:
            self.restarts += 1
            self._start()

    def _wait_ready(self, child: _Child) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not child.ready:
            message = self._receive(child, min(_TICK * 4, max(0.0, deadline - time.monotonic())))
            if message is None:
                if time.monotonic() >= deadline:
                    raise WorkerLost(f"did not start within {self.start_timeout:.0f} s")
                continue
            if message[0] == "ready":
                child.ready, child.pid = True, message[1]
            elif message[0] == "broken":
                raise WorkerLost(f"could not start: {message[1]}")

    def _receive(self, child: _Child, timeout: float) -> tuple[Any, ...] | None:
        """The child's next message, None after ``timeout``; WorkerLost when it is gone."""
        try:
            if child.conn.poll(timeout):
                return pickle.loads(child.conn.recv_bytes())
        except (EOFError, OSError):
            pass
        else:
            if child.process.is_alive():
                return None
        child.process.join(1.0)
        raise WorkerLost(exit_reason(child.process.exitcode))

    # -- running a job ----------------------------------------------------------------------------

    def run(self, request: RunRequest, listener: Listener, cancel: CancelToken) -> RunOutcome:
        with self._lock:
            if self._child is None or not self._child.process.is_alive():
                self._restart()  # it ended between jobs: not this job's fault
            child = self._child
            assert child is not None
            try:
                self._wait_ready(child)
            except WorkerLost as exc:
                self._restart()
                return RunOutcome("failed", f"the worker process running this job {exc}", worker_lost=True)
            try:
                _send(child.conn, ("run", request.job_id, request.workflow_json, request.seed))
                return self._follow(child, request, listener, cancel)
            except WorkerLost as exc:
                self._restart()
                return RunOutcome(
                    "interrupted", f"the worker process running this job {exc}", worker_lost=True
                )
            except OSError as exc:  # the pipe broke while sending
                self._restart()
                return RunOutcome(
                    "interrupted", f"the worker process running this job is gone ({exc})", worker_lost=True
                )

    def _follow(
        self, child: _Child, request: RunRequest, listener: Listener, cancel: CancelToken
    ) -> RunOutcome:
        cancelled_at: float | None = None
        grace = self.cancel_grace
        while True:
            if cancel.cancelled and cancelled_at is None:
                cancelled_at = time.monotonic()
                _send(child.conn, ("cancel", request.job_id))
            if cancelled_at is not None and time.monotonic() - cancelled_at > grace:
                log.warning(
                    "job %s ignored its cancel for %.1f s: restarting its worker", request.job_id, grace
                )
                self._restart()
                return RunOutcome(
                    "cancelled",
                    f"cancelled: the node did not stop within {grace:g} s, so its worker "
                    "process was stopped (and a new one started)",
                )
            message = self._receive(child, _TICK)
            if message is None:
                continue
            kind = message[0]
            if kind == "event" and message[1] == request.job_id:
                grace = grace_after(message[2], self.cancel_grace, grace)
                listener(message[2])
            elif kind == "done" and message[1] == request.job_id:
                outcome = outcome_of(message[2])
                outcome.loads = message[3] if len(message) > 3 else None
                return outcome
            elif kind == "error" and message[1] == request.job_id:
                return RunOutcome("failed", f"the studio hit an internal error: {message[2]}")

    def close(self, timeout: float = 10.0) -> None:
        self._closed = True
        acquired = self._lock.acquire(timeout=timeout)
        try:
            self._stop_child(force=not acquired)
        finally:
            if acquired:
                self._lock.release()


def _send(conn: Connection, message: tuple[Any, ...]) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


# --- the worker process itself ---------------------------------------------------------------------


def worker_main(conn: Connection, spec: EngineSpec) -> None:
    """The body of a worker process: build the engine, then run jobs as they come."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> bool:
        """Send ``message``; False when it cannot be pickled (then nothing is sent)."""
        try:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - a value that cannot travel is dropped, not fatal
            log.warning("cannot send %s from the worker as it is", message[0])
            return False
        with send_lock:
            try:
                conn.send_bytes(data)
            except OSError:
                os._exit(0)  # the server is gone
        return True

    try:
        engine = WorkerEngine(spec)
    except BaseException as exc:  # noqa: BLE001 - say why, then end
        send(("broken", f"{type(exc).__name__}: {exc}"))
        return
    send(("ready", os.getpid()))

    requests: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
    current: dict[str, CancelToken] = {}

    def read() -> None:
        while True:
            try:
                message = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                os._exit(0)  # the server is gone: nothing to run for
            if message[0] == "run":
                requests.put(message)
            elif message[0] == "cancel":
                token = current.get(message[1])
                if token is not None:
                    token.cancel()
            elif message[0] == "stop":
                requests.put(None)
                return

    threading.Thread(target=read, name="studio-worker-reader", daemon=True).start()
    while (message := requests.get()) is not None:
        _, job_id, workflow_json, seed = message
        token = CancelToken()
        current.clear()
        current[job_id] = token
        try:
            result = engine.run(
                job_id, workflow_json, seed, token, lambda event, j=job_id: send(("event", j, event))
            )
            if not send(("done", job_id, result, engine.loads)):  # an output that cannot be pickled
                send(("done", job_id, portable(result), engine.loads))
        except BaseException as exc:  # noqa: BLE001 - one broken job must not end the worker
            log.error("job %s failed inside its worker:\n%s", job_id, traceback.format_exc())
            send(("error", job_id, f"{type(exc).__name__}: {exc}"))
        finally:
            current.pop(job_id, None)
