"""The same worker engine as a Ray actor: sweeps and the studio's job queue on a cluster.

:class:`RayRunner` is a :class:`~server.worker.Runner` like the local
:class:`~server.worker.ProcessRunner`, but its engine (server/engine.py: registry, executor,
cache, model manager, kept between jobs) lives in a Ray actor, on whichever machine of the
cluster has the resources it asks for (one GPU each, or one CPU slot on a machine without).

- Events (progress, previews) are kept by the actor and fetched every few tens of
  milliseconds while the job runs, so the page and the progress bars see them as they happen.
- A cancel is forwarded at once; a node that ignores it for ``cancel_grace`` seconds gets its
  actor killed and a fresh one started, as a local worker process is.
- An actor that dies mid-job (its process killed, its machine gone) ends that job as
  "interrupted" with ``worker_lost`` set, and a new actor is started for the next job.

Ray is imported only here and only when a runner is made: nothing else needs it.
Every machine of the cluster needs this repository at the same path (with its
``.venv``) and the same model folders (shared or synced): see docs/scale.md.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from nodes.base import CancelToken
from server.engine import EngineSpec, portable
from server.worker import (
    CANCEL_GRACE,
    START_TIMEOUT,
    Listener,
    RunOutcome,
    RunRequest,
    grace_after,
    outcome_of,
)

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
#: How often (seconds) a running job's events are fetched from its actor.
_TICK = 0.05


class RayUnavailable(Exception):
    """Ray is not installed, or the cluster cannot be reached; the message says what to do."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            "Ray is not installed in this environment: run `bash setup.sh` (it installs the ray "
            "version pinned in requirements.txt)"
        ) from None
    return ray


def connect(address: str, *, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (``auto``: start a local Ray on this machine).

    Does nothing when this process is connected already. Raises :class:`RayUnavailable`
    with what to do when Ray is missing or the address does not answer.
    """
    ray = _ray()
    if ray.is_initialized():
        return
    from ray.job_config import JobConfig

    # Actors import our modules (server.engine, the node packs): the repository goes on their path.
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "job_config": JobConfig(code_search_path=[str(REPO)]),
    }
    try:
        if address == "auto":
            ray.init(address="local", num_cpus=num_cpus, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(
            f"cannot reach a Ray cluster at {address!r}: {exc}. Start one with `ray start --head` "
            "(see docs/scale.md), or pass --ray auto to start a local one. A cluster started with "
            "token authentication (Ray's default once a token exists) needs RAY_AUTH_MODE=token "
            "and its token in RAY_AUTH_TOKEN or ~/.ray/auth_token here too"
        ) from None


def default_actor_count() -> int:
    """One actor per GPU of the cluster; on a cluster without GPUs, one per CPU slot."""
    resources = _ray().cluster_resources()
    gpus = int(resources.get("GPU", 0))
    return gpus if gpus > 0 else max(1, int(resources.get("CPU", 1)))


def cluster_has_gpus() -> bool:
    return int(_ray().cluster_resources().get("GPU", 0)) > 0


class _EngineActor:
    """The actor's body: one WorkerEngine, its running job's events and cancel token."""

    def __init__(self, spec: EngineSpec) -> None:
        from server.engine import WorkerEngine

        self.engine = WorkerEngine(spec)
        self.lock = threading.Lock()
        self.events: dict[str, list[Any]] = {}
        self.tokens: dict[str, CancelToken] = {}

    def ready(self) -> int:
        return os.getpid()

    def run(self, job_id: str, workflow_json: str, seed: int | None) -> tuple[str, Any, int]:
        token = CancelToken()
        with self.lock:
            self.events[job_id] = []
            self.tokens[job_id] = token

        def listen(event: Any) -> None:
            with self.lock:
                self.events[job_id].append(event)

        try:
            result = self.engine.run(job_id, workflow_json, seed, token, listen)
        except BaseException as exc:  # noqa: BLE001 - one broken job must not end the actor
            log.exception("job %s failed inside its Ray worker", job_id)
            return ("error", f"{type(exc).__name__}: {exc}", self.engine.loads)
        finally:
            with self.lock:
                self.tokens.pop(job_id, None)
        return ("done", portable(result), self.engine.loads)

    def poll(self, job_id: str, after: int) -> list[Any]:
        with self.lock:
            return list(self.events.get(job_id, [])[after:])

    def forget(self, job_id: str) -> None:
        with self.lock:
            self.events.pop(job_id, None)

    def cancel(self, job_id: str) -> None:
        with self.lock:
            token = self.tokens.get(job_id)
        if token is not None:
            token.cancel()


class _ActorLost(Exception):
    """The actor died or stopped answering; the message says how."""


class _NotStarted(_ActorLost):
    """No actor came up in time (the cluster may lack the resources asked for)."""


class RayRunner:
    """Runs jobs in a Ray actor of its own, replacing it when it dies or hangs."""

    def __init__(
        self,
        spec: EngineSpec,
        name: str = "ray-worker",
        *,
        num_gpus: float = 0,
        num_cpus: float = 1,
        cancel_grace: float = CANCEL_GRACE,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.spec = spec
        self.name = name
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.cancel_grace = cancel_grace
        self.start_timeout = start_timeout
        self.restarts = 0
        self.pid: int | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._actor: Any = None
        self._start()

    def _start(self) -> None:
        ray = _ray()
        actor_class = ray.remote(_EngineActor).options(
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            max_concurrency=4,  # run() in one thread; poll() and cancel() answer meanwhile
            name=None,
        )
        self._actor = actor_class.remote(self.spec)
        self.pid = None

    def _kill(self) -> None:
        actor, self._actor = self._actor, None
        self.pid = None
        if actor is not None:
            try:
                _ray().kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def _restart(self) -> None:
        self._kill()
        if not self._closed:
            self.restarts += 1
            self._start()

    def _get(self, ref: Any, timeout: float) -> Any:
        ray = _ray()
        from ray import exceptions

        try:
            return ray.get(ref, timeout=timeout)
        except exceptions.GetTimeoutError:
            raise
        except (exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.ObjectLostError) as exc:
            raise _ActorLost(_death_reason(exc)) from None

    def _wait_ready(self) -> None:
        if self.pid is not None:
            return
        from ray import exceptions

        try:
            self.pid = self._get(self._actor.ready.remote(), self.start_timeout)
        except exceptions.GetTimeoutError:
            raise _NotStarted(
                f"did not start within {self.start_timeout:.0f} s (the cluster may have no free "
                f"worker with {self.num_gpus:g} GPU and {self.num_cpus:g} CPU)"
            ) from None

    def _answers(self) -> bool:
        """Whether the started actor is still alive (one quick call)."""
        from ray import exceptions

        try:
            self._get(self._actor.ready.remote(), 30.0)
        except _ActorLost:
            return False
        except exceptions.GetTimeoutError:
            return True  # slow to answer, not gone: the job will find out
        return True

    def run(self, request: RunRequest, listener: Listener, cancel: CancelToken) -> RunOutcome:
        with self._lock:
            if self._actor is None:
                self._start()
            elif self.pid is not None and not self._answers():
                self._restart()  # it died between jobs: not this job's fault
            try:
                self._wait_ready()
            except _ActorLost as exc:  # killed while starting: the job is interrupted, as mid-run
                self._restart()
                status = "failed" if isinstance(exc, _NotStarted) else "interrupted"
                return RunOutcome(status, f"the Ray worker running this job {exc}", worker_lost=True)
            try:
                return self._follow(request, listener, cancel)
            except _ActorLost as exc:
                self._restart()
                return RunOutcome("interrupted", f"the Ray worker running this job {exc}", worker_lost=True)

    def _follow(self, request: RunRequest, listener: Listener, cancel: CancelToken) -> RunOutcome:
        ray = _ray()
        from ray import exceptions

        actor = self._actor
        job_id = request.job_id
        done_ref = actor.run.remote(job_id, request.workflow_json, request.seed)
        seen = 0
        cancelled_at: float | None = None
        grace = self.cancel_grace
        try:
            while True:
                if cancel.cancelled and cancelled_at is None:
                    cancelled_at = time.monotonic()
                    actor.cancel.remote(job_id)
                if cancelled_at is not None and time.monotonic() - cancelled_at > grace:
                    log.warning("job %s ignored its cancel for %.1f s: restarting its actor", job_id, grace)
                    self._restart()
                    return RunOutcome(
                        "cancelled",
                        f"cancelled: the node did not stop within {grace:g} s, so its Ray "
                        "worker was stopped (and a new one started)",
                    )
                finished, _ = ray.wait([done_ref], timeout=_TICK)
                try:
                    events = self._get(actor.poll.remote(job_id, seen), 30.0)
                except exceptions.GetTimeoutError:
                    events = []
                for event in events:
                    grace = grace_after(event, self.cancel_grace, grace)
                    listener(event)
                seen += len(events)
                if finished:
                    kind, value, loads = self._get(done_ref, 30.0)
                    for event in self._get(actor.poll.remote(job_id, seen), 30.0):
                        listener(event)
                    if kind == "error":
                        return RunOutcome("failed", f"the studio hit an internal error: {value}", loads=loads)
                    outcome = outcome_of(value)
                    outcome.loads = loads
                    return outcome
        finally:
            if self._actor is actor:
                actor.forget.remote(job_id)

    def close(self, timeout: float = 10.0) -> None:
        self._closed = True
        acquired = self._lock.acquire(timeout=timeout)
        try:
            self._kill()
        finally:
            if acquired:
                self._lock.release()


def _death_reason(exc: BaseException) -> str:
    """Why an actor is gone, in plain words (Ray's own message is long)."""
    text = str(exc)
    if "SIGKILL" in text or "killed" in text.lower() or "OOM" in text or "memory" in text.lower():
        return "was killed (from outside, or the machine ran out of memory)"
    if "connection" in text.lower() or "node" in text.lower():
        return "was lost with its machine or its connection"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"died ({first[:200]})"
