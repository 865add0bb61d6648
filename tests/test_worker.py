"""Jobs in worker processes: the server stays responsive, and a hung or crashed job ends alone.

One module-wide queue over one worker process (spawned once: a process start costs a
second or two) serves most tests, in the order they are written; the tests that kill
their worker check that it comes back for the next job.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graph.executor import Executor
from graph.validate import validate
from nodes.base import RunSettings
from nodes.registry import Registry
from server.engine import EngineSpec
from server.history import History
from server.jobs import Job, JobQueue
from server.worker import ProcessRunner, exit_reason
from tests.conftest import TEST_PACK
from tests.test_jobs import noise_flow, pixels, sleep_flow

WAIT = 60.0  # a worker process may take a while to start on a busy 2-core machine
GRACE = 1.0  # how long a node may ignore a cancel in these tests (the studio's default: 5 s)


def flow(node_type: str, **inputs: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "nodes": {
            "work": {"type": node_type, "inputs": inputs},
            "show": {"type": "ShowValue", "inputs": {"value": {"node": "work", "output": "value"}}},
        },
    }


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker-out")


@pytest.fixture(scope="module")
def module_registry() -> Registry:
    from nodes.registry import default_registry

    registry = default_registry()
    registry.add_pack(TEST_PACK)
    return registry


@pytest.fixture(scope="module")
def runner(out: Path) -> Iterator[ProcessRunner]:
    spec = EngineSpec(output_dir=out, packs=(TEST_PACK,))
    made = ProcessRunner(spec, cancel_grace=GRACE)
    yield made
    made.close()


@pytest.fixture(scope="module")
def jobs(module_registry: Registry, out: Path, runner: ProcessRunner) -> Iterator[JobQueue]:
    history = History(out.parent / f"{out.name}-state" / "history.sqlite3")
    queue = JobQueue(None, module_registry, lambda: RunSettings(output_dir=out), history, runners=[runner])
    yield queue
    queue.close(timeout=WAIT)
    history.close()


def finish(jobs: JobQueue, job: Job) -> Job:
    found = jobs.wait(job.id, WAIT)
    assert found is not None and found.ended, f"job {job.id} is still {job.status} after {WAIT} s"
    return found


def kinds(job: Job) -> list[str]:
    return [entry["event"] for entry in job.events]


def test_a_job_in_a_worker_process_saves_what_the_executor_saves(
    jobs: JobQueue, runner: ProcessRunner, module_registry: Registry, out: Path, tmp_path: Path
) -> None:
    job = finish(jobs, jobs.submit(noise_flow("proc"), seed=1234))
    assert job.status == "done", job.error
    assert runner.pid is not None and runner.pid != os.getpid()
    assert job.seed == 1234 and job.nodes_executed == 2 and len(job.outputs) == 1
    checked = validate(noise_flow("proc"), module_registry)
    assert checked.workflow is not None
    direct = Executor(module_registry).run(
        checked.workflow, settings=RunSettings(output_dir=tmp_path), seed=1234
    )
    assert np.array_equal(pixels(out / job.outputs[0]), pixels(Path(direct.files[0])))
    assert kinds(job)[:3] == ["job_queued", "job_started", "run_started"]
    assert kinds(job)[-2:] == ["run_finished", "job_finished"]
    assert job.result is not None and job.result.status == "done"


def test_the_worker_keeps_its_cache_between_jobs(jobs: JobQueue) -> None:
    first = finish(jobs, jobs.submit(flow("Sleep", value=7, steps=2, seconds_per_step=0.0), seed=5))
    again = finish(jobs, jobs.submit(flow("Sleep", value=7, steps=2, seconds_per_step=0.0), seed=5))
    assert (first.status, again.status) == ("done", "done")
    assert first.nodes_executed == 2 and first.nodes_cached == 0
    assert again.nodes_executed == 0 and again.nodes_cached == 1  # the output node came from the cache
    assert again.results == first.results == {"show": {"text": "7"}}


def test_the_server_answers_while_a_job_holds_the_gil(jobs: JobQueue) -> None:
    job = jobs.submit(flow("HoldGil", seconds=3.0, digits=400_000))
    deadline = time.monotonic() + WAIT
    while jobs.get(job.id) is not None and job.status != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    # a thread of the server's process does what the API does, and is timed
    slowest = 0.0
    samples = 0
    while not job.ended and time.monotonic() < deadline:
        start = time.perf_counter()
        jobs.list_queue()
        jobs.lookup(job.id)
        time.sleep(0.01)
        slowest = max(slowest, time.perf_counter() - start - 0.01)
        samples += 1
    assert finish(jobs, job).status == "done"
    assert samples > 20
    assert slowest < 0.25, f"the server's thread waited {slowest:.3f} s while the job ran"


def test_a_node_that_ignores_cancel_loses_its_worker_and_the_next_job_runs(
    jobs: JobQueue, runner: ProcessRunner
) -> None:
    stuck = jobs.submit(flow("HoldGil", seconds=120.0, digits=200_000))
    after = jobs.submit(flow("Sleep", value=3, steps=1, seconds_per_step=0.0))
    deadline = time.monotonic() + WAIT
    while not any(e["event"] == "node_started" for e in stuck.events) and time.monotonic() < deadline:
        time.sleep(0.02)
    old_pid, restarts = runner.pid, runner.restarts
    asked = time.monotonic()
    assert jobs.cancel(stuck.id) == "stopping"
    ended = finish(jobs, stuck)
    assert time.monotonic() - asked < GRACE + 10
    assert ended.status == "cancelled"
    assert "did not stop within" in (ended.error or "")
    assert runner.restarts == restarts + 1 and runner.pid != old_pid
    next_job = finish(jobs, after)
    assert next_job.status == "done" and next_job.results == {"show": {"text": "3"}}


def test_a_cancel_the_node_heeds_keeps_the_worker(jobs: JobQueue, runner: ProcessRunner) -> None:
    job = jobs.submit(sleep_flow(steps=5000, seconds=0.01))
    deadline = time.monotonic() + WAIT
    while not any(e["event"] == "node_progress" for e in job.events) and time.monotonic() < deadline:
        time.sleep(0.02)
    old_pid, restarts = runner.pid, runner.restarts
    jobs.cancel(job.id)
    ended = finish(jobs, job)
    assert ended.status == "cancelled"
    assert ended.result is not None and ended.result.status == "cancelled"
    assert (runner.pid, runner.restarts) == (old_pid, restarts)


def test_a_node_that_asks_for_time_to_stop_gets_it(jobs: JobQueue, runner: ProcessRunner) -> None:
    """SlowToStop takes 2.5 s to stop after a cancel, beyond the runner's 1 s grace, but declares a
    cancel_grace of 10 s (as the training nodes do, to save what they learnt): the worker waits."""
    job = jobs.submit(flow("SlowToStop", stop_seconds=2.5))
    deadline = time.monotonic() + WAIT
    while not any(e["event"] == "node_progress" for e in job.events) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [e["cancel_grace"] for e in job.events if e["event"] == "node_started"] == [10.0]
    old_pid, restarts = runner.pid, runner.restarts
    jobs.cancel(job.id)
    ended = finish(jobs, job)
    assert ended.status == "cancelled" and "did not stop within" not in (ended.error or "")
    assert (runner.pid, runner.restarts) == (old_pid, restarts)


@pytest.mark.parametrize(
    ("how", "words"),
    [("SIGSEGV", "SIGSEGV (a crash in native code)"), ("SIGKILL", "out of memory"), ("exit", "code 3")],
)
def test_a_worker_that_dies_interrupts_only_its_job(
    jobs: JobQueue, runner: ProcessRunner, how: str, words: str
) -> None:
    before = jobs.submit(flow("Sleep", value=1, steps=1, seconds_per_step=0.0), seed=1)
    crash = jobs.submit(flow("Crash", signal=how))
    behind = jobs.submit(flow("Sleep", value=2, steps=1, seconds_per_step=0.0), seed=2)
    assert finish(jobs, before).status == "done"
    died = finish(jobs, crash)
    assert died.status == "interrupted"
    assert "worker process running this job" in (died.error or "") and words in (died.error or "")
    assert finish(jobs, behind).status == "done"
    assert behind.results == {"show": {"text": "2"}}
    stored = jobs.history.get(crash.id) if jobs.history is not None else None
    assert stored is not None and stored.status == "interrupted" and words in (stored.error or "")


def test_jobs_from_many_threads_all_end_while_workers_are_killed(jobs: JobQueue) -> None:
    submitted: list[Job] = []
    lock = threading.Lock()

    def submit(n: int) -> None:
        workflow = flow("Crash", signal="SIGKILL") if n % 4 == 3 else flow("Sleep", value=n, steps=1)
        job = jobs.submit(workflow, seed=n)
        with lock:
            submitted.append(job)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended = [finish(jobs, job) for job in submitted]
    for job in ended:
        expected = "interrupted" if job.workflow.nodes["work"].type == "Crash" else "done"
        assert job.status == expected, (job.id, job.status, job.error)


def test_a_worker_that_does_not_start_in_time_fails_the_job_saying_so(
    module_registry: Registry, out: Path
) -> None:
    slow = ProcessRunner(EngineSpec(output_dir=out, packs=(TEST_PACK,)), start_timeout=0.0)
    queue = JobQueue(None, module_registry, lambda: RunSettings(output_dir=out), runners=[slow])
    try:
        job = finish(queue, queue.submit(flow("Int", value=1)))
    finally:
        queue.close(timeout=WAIT)
    assert job.status == "failed"
    assert job.error == "the worker process running this job did not start within 0 s"


def test_a_worker_whose_engine_breaks_says_why_and_ends(monkeypatch: pytest.MonkeyPatch, out: Path) -> None:
    import pickle
    from multiprocessing import Pipe

    import server.worker as worker

    def broken(spec: EngineSpec) -> None:
        raise ImportError("no module named 'torch'")

    monkeypatch.setattr(worker, "WorkerEngine", broken)
    monkeypatch.setattr(worker.signal, "signal", lambda *args: None)
    server_end, worker_end = Pipe()
    worker.worker_main(worker_end, EngineSpec(output_dir=out))  # returns instead of serving
    assert pickle.loads(server_end.recv_bytes()) == ("broken", "ImportError: no module named 'torch'")


def test_closing_the_queue_stops_its_worker_processes(module_registry: Registry, out: Path) -> None:
    runner = ProcessRunner(EngineSpec(output_dir=out, packs=(TEST_PACK,)))
    queue = JobQueue(None, module_registry, lambda: RunSettings(output_dir=out), runners=[runner])
    job = finish(queue, queue.submit(flow("Int", value=4)))
    assert job.status == "done"
    process = runner._child.process if runner._child is not None else None
    assert process is not None and process.is_alive()
    queue.close(timeout=WAIT)
    assert not process.is_alive() and runner.pid is None


def test_exit_reasons_read_as_sentences() -> None:
    assert exit_reason(-9).startswith("was killed by SIGKILL")
    assert "native code" in exit_reason(-11)
    assert exit_reason(2) == "exited with code 2"
    assert exit_reason(None) == "stopped answering"


PREVIEWED = {
    "version": 1,
    "nodes": {
        "paint": {"type": "SlowPreview", "inputs": {"steps": 6, "seconds_per_step": 0.15, "size": 4}},
        "peek": {"type": "PreviewImage", "inputs": {"images": {"node": "paint", "output": "image"}}},
    },
}


def test_the_page_gets_previews_and_node_states_of_a_run_in_a_worker(jobs: JobQueue) -> None:
    """What the page draws on the nodes (their states, the live frames, PreviewImage's picture)
    comes from a worker process as from the server's own threads."""
    import io

    from PIL import Image

    job = finish(jobs, jobs.submit(PREVIEWED, seed=1, source="ui"))
    assert job.status == "done"
    kinds = [(e["event"], e.get("node_id")) for e in jobs.events(job.id) or []]
    assert ("node_started", "paint") in kinds and ("node_finished", "peek") in kinds
    assert kinds.count(("node_preview", "paint")) >= 2  # live frames while it ran
    for node in ("paint", "peek"):
        stored = jobs.previews.get(job.id, node)
        assert stored is not None, node
        picture = Image.open(io.BytesIO(stored[1][0]))
        assert picture.size == (4, 4) and picture.mode == "RGB"
    last_frame = Image.open(io.BytesIO(jobs.previews.get(job.id, "paint")[1][0]))
    shown = Image.open(io.BytesIO(jobs.previews.get(job.id, "peek")[1][0]))
    assert last_frame.tobytes() == shown.tobytes()  # the last frame is the finished picture


def test_one_worker_per_gpu_by_default(tmp_path: Path) -> None:
    from server.engine import default_workers

    gpus = tmp_path / "gpus"
    assert default_workers({}, gpus) == 1  # no driver: one worker on the CPU
    for address in ("0000:01:00.0", "0000:02:00.0", "0000:03:00.0"):
        (gpus / address).mkdir(parents=True)
    assert default_workers({}, gpus) == 3
    assert default_workers({"CUDA_VISIBLE_DEVICES": "1,2"}, gpus) == 2
    assert default_workers({"CUDA_VISIBLE_DEVICES": ""}, gpus) == 1
    assert default_workers({"CUDA_VISIBLE_DEVICES": "-1"}, gpus) == 1


def test_local_workers_share_the_cores_and_the_studio_keeps_one_free(
    monkeypatch: pytest.MonkeyPatch, out: Path
) -> None:
    """Local workers split the machine's cores; the studio (spare_cores=1) leaves one to its
    server and the browser watching the run, so torch's threads never wait for a busy core."""
    import server.worker as worker_module
    from cli import workers as workers_module

    made: list[EngineSpec] = []

    class Recorded:
        def __init__(self, spec: EngineSpec, name: str = "") -> None:
            made.append(spec)

    monkeypatch.setattr(worker_module, "ProcessRunner", Recorded)
    spec = EngineSpec(output_dir=out)

    def threads(cores: int, count: int, spare: int = 0) -> list[int | None]:
        monkeypatch.setattr(workers_module.os, "cpu_count", lambda: cores)
        made.clear()
        workers_module.make_workers(spec, count, None, "t-", spare_cores=spare)
        return [s.cpu_threads for s in made]

    assert threads(8, 1) == [None]  # one worker alone: torch's own default (every core)
    assert threads(8, 2) == [4, 4]
    assert threads(8, 1, spare=1) == [7]
    assert threads(8, 2, spare=1) == [3, 3]
    assert threads(2, 1, spare=1) == [1]  # this machine: one core for the run, one for the rest
    assert threads(1, 1, spare=1) == [1]  # never none
