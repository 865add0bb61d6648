"""The job queue and its history: order, cancelling, events, crashes and restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from graph.executor import Executor
from graph.issues import InvalidWorkflow
from graph.validate import validate
from nodes.base import RunSettings
from nodes.registry import Registry
from server.history import HISTORY_FILE, History, JobRecord
from server.jobs import Job, JobQueue, QueueClosed

WAIT = 20.0  # the most any test waits for one job


def noise_flow(prefix: str, size: int = 4) -> dict[str, Any]:
    return {
        "version": 1,
        "nodes": {
            "noise": {"type": "RandomImage", "inputs": {"size": size}},
            "save": {
                "type": "SaveImage",
                "inputs": {"images": {"node": "noise", "output": "image"}, "filename_prefix": prefix},
            },
        },
    }


def sleep_flow(value: int = 1, steps: int = 2000, seconds: float = 0.005) -> dict[str, Any]:
    return {
        "version": 1,
        "nodes": {
            "slow": {
                "type": "Sleep",
                "inputs": {"value": value, "steps": steps, "seconds_per_step": seconds},
            },
            "show": {"type": "ShowValue", "inputs": {"value": {"node": "slow", "output": "value"}}},
        },
    }


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def history(out: Path) -> Iterator[History]:
    kept = History.in_output_folder(out)
    yield kept
    kept.close()


def make_queue(registry: Registry, out: Path, history: History | None, workers: int = 1) -> JobQueue:
    return JobQueue(Executor(registry), registry, lambda: RunSettings(output_dir=out), history, workers)


@pytest.fixture
def jobs(registry: Registry, out: Path, history: History) -> Iterator[JobQueue]:
    queue = make_queue(registry, out, history)
    yield queue
    queue.close(timeout=WAIT)


def wait_ended(queue: JobQueue, job: Job) -> Job:
    found = queue.wait(job.id, WAIT)
    assert found is not None and found.ended, f"job {job.id} still {job.status} after {WAIT} s"
    return found


def wait_for_event(queue: JobQueue, job: Job, kind: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    seen = 0
    while time.monotonic() < deadline:
        batch = queue.events(job.id, after=seen, timeout=1.0) or []
        for entry in batch:
            if entry["event"] == kind:
                return entry
        seen += len(batch)
    raise AssertionError(f"job {job.id} sent no {kind} event in {WAIT} s")


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def expected_noise(registry: Registry, tmp_path: Path, seed: int, prefix: str) -> np.ndarray:
    """What a run of noise_flow with ``seed`` saves, run directly by a fresh executor."""
    folder = tmp_path / f"expected-{prefix}-{seed}"
    checked = validate(noise_flow(prefix), registry)
    assert checked.workflow is not None
    done = Executor(registry).run(checked.workflow, settings=RunSettings(output_dir=folder), seed=seed)
    assert done.status == "done"
    return pixels(Path(done.files[0]))


# --- running ---------------------------------------------------------------------------------


def test_twenty_jobs_all_finish_in_the_order_they_came(jobs: JobQueue, out: Path) -> None:
    submitted = [jobs.submit(noise_flow(f"j{n:02d}"), seed=n) for n in range(20)]
    finished = [wait_ended(jobs, job) for job in submitted]
    assert [job.status for job in finished] == ["done"] * 20
    for before, job in zip(finished, finished[1:], strict=False):  # one worker: one after another
        assert before.finished is not None and job.started is not None and before.finished <= job.started
    for n, job in enumerate(finished):
        assert job.outputs == [f"j{n:02d}_00001.png"]
        assert (out / job.outputs[0]).is_file()
        assert job.seed == n and job.nodes_planned == 2 and job.nodes_executed == 2
    assert jobs.list_queue() == []


def test_events_are_json_safe_and_end_with_the_job(jobs: JobQueue) -> None:
    flow = noise_flow("peek")
    flow["nodes"]["peek"] = {
        "type": "PreviewImage",
        "inputs": {"images": {"node": "noise", "output": "image"}},
    }
    job = wait_ended(jobs, jobs.submit(flow, seed=1))
    events = jobs.events(job.id)
    assert events is not None
    json.dumps(events)  # previews are kept as their shape only
    kinds = [e["event"] for e in events]
    assert kinds[:3] == ["job_queued", "job_started", "run_started"]
    assert kinds[-2:] == ["run_finished", "job_finished"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    preview = next(e for e in events if e["event"] == "node_preview")
    assert preview["image"] == {"shape": [1, 4, 4, 3]}
    assert jobs.events(job.id, after=len(events) - 1) == events[-1:]
    assert jobs.events("nope") is None


def test_results_and_failures_are_kept(jobs: JobQueue) -> None:
    done = wait_ended(jobs, jobs.submit(sleep_flow(value=5, steps=1, seconds=0.0), seed=3))
    assert done.status == "done" and done.results == {"show": {"text": "5"}}
    broken = {
        "version": 1,
        "nodes": {
            "bad": {"type": "Fail", "inputs": {"message": "it broke"}},
            "show": {"type": "ShowValue", "inputs": {"value": {"node": "bad", "output": "value"}}},
        },
    }
    failed = wait_ended(jobs, jobs.submit(broken))
    assert failed.status == "failed" and "it broke" in (failed.error or "")
    failure = next(e for e in failed.events if e["event"] == "node_failed")
    assert failure["node_id"] == "bad" and "details" not in failure  # tracebacks stay in the log


def test_invalid_workflow_raises_with_every_issue(jobs: JobQueue) -> None:
    broken = {
        "version": 1,
        "nodes": {
            "d": {"type": "IntMath", "inputs": {"a": "two", "b": 0}},
            "s": {"type": "ShowValue", "inputs": {"value": {"node": "d", "output": "value"}}},
        },
    }
    with pytest.raises(InvalidWorkflow) as raised:
        jobs.submit(broken, seed=-1)
    where = {(issue.node_id, issue.input) for issue in raised.value.issues}
    assert ("d", "a") in where
    assert any(issue.code == "seed" for issue in raised.value.issues)
    with pytest.raises(InvalidWorkflow):
        jobs.submit("{ not json")
    assert jobs.list_queue() == [] and jobs.recent() == []  # nothing was queued or recorded


# --- cancelling ------------------------------------------------------------------------------


def test_cancel_mid_run_leaves_the_other_jobs_alone(
    registry: Registry, out: Path, history: History, tmp_path: Path
) -> None:
    queue = make_queue(registry, out, history, workers=2)
    try:
        slow = queue.submit(sleep_flow(), seed=1)
        beside = queue.submit(sleep_flow(value=7, steps=30, seconds=0.01), seed=2)  # runs at the same time
        after = [queue.submit(noise_flow(f"after{n}"), seed=10 + n) for n in range(3)]
        wait_for_event(queue, slow, "node_progress")
        assert queue.cancel(slow.id) == "stopping"
        assert wait_ended(queue, slow).status == "cancelled"
        assert any(e["event"] == "run_finished" and e["status"] == "cancelled" for e in slow.events)
        assert wait_ended(queue, beside).status == "done" and beside.results == {"show": {"text": "7"}}
        for n, job in enumerate(after):
            assert wait_ended(queue, job).status == "done"
            saved = pixels(out / job.outputs[0])
            assert np.array_equal(saved, expected_noise(registry, tmp_path, 10 + n, f"after{n}"))
        assert queue.cancel(slow.id) == "finished" and queue.cancel("nope") == "unknown"
        assert history.get(slow.id).status == "cancelled"  # type: ignore[union-attr]
    finally:
        queue.close(timeout=WAIT)


def test_cancel_a_queued_job_before_it_starts(jobs: JobQueue, history: History) -> None:
    ended: list[str] = []
    running = jobs.submit(sleep_flow())
    waiting = jobs.submit(noise_flow("never"), on_end=lambda job: ended.append(job.id))
    last = jobs.submit(noise_flow("last"), seed=4)
    wait_for_event(jobs, running, "node_progress")
    assert jobs.position(waiting.id) == 0 and jobs.position(last.id) == 1
    assert jobs.cancel(waiting.id) == "removed"
    assert waiting.status == "cancelled" and waiting.started is None and ended == [waiting.id]
    assert [e["event"] for e in waiting.events] == ["job_queued", "job_finished"]
    assert [job.id for job in jobs.list_queue()] == [running.id, last.id]
    assert running.status == "running" and not running.token.cancelled
    jobs.cancel(running.id)
    assert wait_ended(jobs, last).status == "done"
    assert waiting.started is None and waiting.outputs == []
    record = history.get(waiting.id)
    assert record is not None and record.status == "cancelled" and record.started is None


def test_events_wait_is_bounded(jobs: JobQueue) -> None:
    running = jobs.submit(sleep_flow())
    queued = jobs.submit(noise_flow("later"))
    seen = len(jobs.events(queued.id) or [])
    start = time.monotonic()
    assert jobs.events(queued.id, after=seen, timeout=0.3) == []
    assert 0.25 <= time.monotonic() - start < 5
    jobs.cancel(running.id)
    assert wait_ended(jobs, queued).status == "done"


def test_close_interrupts_the_waiting_jobs(registry: Registry, out: Path, history: History) -> None:
    queue = make_queue(registry, out, history)
    running = queue.submit(sleep_flow())
    waiting = queue.submit(noise_flow("x"))
    wait_for_event(queue, running, "node_progress")
    queue.close(timeout=WAIT)
    assert running.status == "cancelled"
    assert waiting.status == "interrupted" and "stopped" in (waiting.error or "")
    with pytest.raises(QueueClosed):
        queue.submit(noise_flow("y"))


# --- history ---------------------------------------------------------------------------------


def test_history_survives_a_restart(registry: Registry, out: Path) -> None:
    first = History.in_output_folder(out)
    queue = make_queue(registry, out, first)
    job = wait_ended(queue, queue.submit(noise_flow("kept"), seed=9))
    queue.close()
    first.close()
    assert (out / HISTORY_FILE).is_file()

    again = History.in_output_folder(out)
    try:
        assert again.interrupted == []
        record = again.get(job.id)
        assert record is not None and record.status == "done" and record.seed == 9
        assert record.outputs == ["kept_00001.png"] and record.nodes_executed == 2
        assert json.loads(record.workflow)["nodes"]["save"]["type"] == "SaveImage"
        queue = make_queue(registry, out, again)
        found = queue.lookup(job.id)  # a new queue sees the old jobs
        assert found is not None and found["status"] == "done" and found["workflow"]["version"] == 1
        assert [entry["id"] for entry in queue.recent()] == [job.id]
        queue.close()
    finally:
        again.close()


def test_history_lists_newest_first(history: History) -> None:
    for n in range(5):
        history.add(JobRecord(id=f"j{n}", status="done", source="api", submitted=100.0 + n, workflow="{}"))
    assert [r.id for r in history.list(limit=2)] == ["j4", "j3"]
    assert [r.id for r in history.list(limit=2, offset=3)] == ["j1", "j0"]
    history.update("j0", status="failed", error="no")
    assert history.count() == 5 and history.count(["failed"]) == 1
    assert history.list(statuses=["failed"])[0].error == "no"
    with pytest.raises(ValueError):
        history.update("j0", id="other")


CRASHING_SERVER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from graph.executor import Executor
    from nodes.base import RunSettings
    from nodes.registry import default_registry
    from server.history import History
    from server.jobs import JobQueue

    registry = default_registry()
    registry.add_pack("tests.packs.testing")
    out = Path(sys.argv[2])
    history = History.in_output_folder(out)
    queue = JobQueue(Executor(registry), registry, lambda: RunSettings(output_dir=out), history)
    slow = {"version": 1, "nodes": {
        "slow": {"type": "Sleep", "inputs": {"steps": 100000, "seconds_per_step": 0.01}},
        "show": {"type": "ShowValue", "inputs": {"value": {"node": "slow", "output": "value"}}}}}
    running = queue.submit(slow)
    waiting = queue.submit(slow)
    queue.events(running.id, after=3, timeout=20)
    print(running.id, waiting.id, flush=True)
    time.sleep(60)
    """
)


def test_a_crash_leaves_jobs_marked_interrupted(tmp_path: Path, out: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_SERVER)
    server = subprocess.Popen(
        [sys.executable, str(script), str(repo), str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        running_id, waiting_id = server.stdout.readline().split()
    finally:
        server.kill()  # SIGKILL: no clean shutdown, as in a crash
        server.wait(timeout=WAIT)
    reopened = History.in_output_folder(out)
    try:
        assert sorted(reopened.interrupted) == sorted([running_id, waiting_id])
        running, waiting = reopened.get(running_id), reopened.get(waiting_id)
        assert running is not None and running.status == "interrupted" and running.started is not None
        assert "while this job was running" in (running.error or "")
        assert waiting is not None and waiting.status == "interrupted" and waiting.started is None
        assert "before this job started" in (waiting.error or "")
    finally:
        reopened.close()


# --- what the queue promises about memory, waiting and waking ---------------------------------


def test_only_the_newest_finished_jobs_stay_in_memory(
    registry: Registry, out: Path, history: History
) -> None:
    queue = JobQueue(
        Executor(registry), registry, lambda: RunSettings(output_dir=out), history, keep_finished=2
    )
    try:
        done = [wait_ended(queue, queue.submit(sleep_flow(value=n, steps=1, seconds=0.0))) for n in range(4)]
        assert [queue.get(job.id) is not None for job in done] == [False, False, True, True]
        forgotten = queue.lookup(done[0].id)  # from the history instead
        assert forgotten is not None and forgotten["status"] == "done" and "events" not in forgotten
        assert queue.events(done[0].id) is None and queue.events(done[3].id) is not None
    finally:
        queue.close(timeout=WAIT)


def test_a_rerun_counts_what_came_from_the_cache(jobs: JobQueue) -> None:
    first = wait_ended(jobs, jobs.submit(sleep_flow(value=9, steps=1, seconds=0.0), seed=2))
    again = wait_ended(jobs, jobs.submit(sleep_flow(value=9, steps=1, seconds=0.0), seed=2))
    assert (first.nodes_planned, first.nodes_executed, first.nodes_cached) == (2, 2, 0)
    assert (again.nodes_planned, again.nodes_executed, again.nodes_cached) == (2, 0, 1)
    stored = jobs.history.get(again.id) if jobs.history is not None else None
    assert stored is not None and (stored.nodes_executed, stored.nodes_cached) == (0, 1)


def test_wait_returns_at_its_timeout_with_the_job_still_running(jobs: JobQueue) -> None:
    job = jobs.submit(sleep_flow())
    start = time.monotonic()
    found = jobs.wait(job.id, 0.3)
    waited = time.monotonic() - start
    assert found is job and not found.ended
    assert 0.25 <= waited < 5
    assert jobs.wait("no-such-job", 5.0) is None
    jobs.cancel(job.id)
    assert wait_ended(jobs, job).status == "cancelled"


def test_a_new_event_wakes_a_waiting_reader_at_once(jobs: JobQueue) -> None:
    job = jobs.submit(sleep_flow(steps=40, seconds=0.05))
    wait_for_event(jobs, job, "node_progress")
    seen = len(jobs.events(job.id) or [])
    start = time.monotonic()
    batch = jobs.events(job.id, after=seen, timeout=30.0)
    assert batch and batch[0]["seq"] == seen + 1
    assert time.monotonic() - start < 5  # woken by the event, not by the 30 s timeout
    jobs.cancel(job.id)
    wait_ended(jobs, job)


def test_a_full_queue_refuses_more_and_records_nothing(
    registry: Registry, out: Path, history: History
) -> None:
    from server.jobs import QueueFull

    queue = JobQueue(Executor(registry), registry, lambda: RunSettings(output_dir=out), history, max_queued=2)
    try:
        running = queue.submit(sleep_flow())
        wait_for_event(queue, running, "node_progress")
        waiting = [queue.submit(noise_flow(f"w{n}")) for n in range(2)]  # exactly the limit
        with pytest.raises(QueueFull, match="2 jobs are waiting"):
            queue.submit(noise_flow("refused"))
        assert history.count() == 3 and len(queue.list_queue()) == 3
        record = history.get(waiting[1].id)
        assert record is not None and (record.nodes_planned, record.nodes_executed, record.nodes_cached) == (
            0,
            0,
            0,
        )
        assert waiting[1].to_dict()["nodes_planned"] == 0 and waiting[1].to_dict()["events"] == 1
        queue.cancel(running.id)
        assert all(wait_ended(queue, job).status == "done" for job in waiting)
    finally:
        queue.close(timeout=WAIT)


def test_a_running_job_shows_its_drawn_seed_and_plan_at_once(jobs: JobQueue, history: History) -> None:
    job = jobs.submit(sleep_flow())  # no seed given: the run draws one
    wait_for_event(jobs, job, "node_progress")
    started = next(e for e in job.events if e["event"] == "run_started")
    assert job.status == "running" and job.seed == started["seed"] and job.nodes_planned == 2
    stored = history.get(job.id)
    assert stored is not None and stored.seed == started["seed"] and stored.nodes_planned == 2
    jobs.cancel(job.id)
    assert wait_ended(jobs, job).seed == started["seed"]


def test_closing_tells_the_owners_of_dropped_jobs(registry: Registry, out: Path, history: History) -> None:
    ended: list[tuple[str, str]] = []
    queue = make_queue(registry, out, history)
    running = queue.submit(sleep_flow())
    wait_for_event(queue, running, "node_progress")
    waiting = queue.submit(noise_flow("never"), on_end=lambda job: ended.append((job.id, job.status)))
    queue.close(timeout=WAIT)
    assert ended == [(waiting.id, "interrupted")]
