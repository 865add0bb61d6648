"""The sweep scheduler: every task once, several at once, model affinity, retries, cancel.

Most tests drive it with stand-in runners that behave like workers (they hold the models they
loaded, can be told to die mid-task) so the rules are checked exactly and quickly; the last
ones use real worker processes and kill one mid-task.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from graph.executor import RunResult
from nodes.base import CancelToken
from server.engine import EngineSpec
from server.worker import ProcessRunner, RunOutcome, RunRequest
from sweep.affinity import models_of
from sweep.scheduler import Scheduler, Task, TaskResult
from tests.conftest import TEST_PACK
from tests.test_jobs import sleep_flow

WORKFLOW = json.dumps({"version": 1, "nodes": {}})


class FakeWorker:
    """A worker that 'loads' each model it lacks (counting loads), sleeps, and can die on cue.

    Like a GPU with room for one checkpoint, it holds only the models of its last task.
    """

    def __init__(self, seconds: float = 0.02, die_on: set[str] | None = None) -> None:
        self.seconds = seconds
        self.die_on = die_on or set()
        self.held: set[str] = set()
        self.loads = 0
        self.ran: list[str] = []
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()
        self.closed = False

    def run(self, request: RunRequest, listener, cancel: CancelToken) -> RunOutcome:  # noqa: ANN001
        key = request.job_id.rsplit("-", 1)[0]
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            models = set(request.workflow.metadata.get("models", []))
            self.loads += len(models - self.held)
            self.held = models
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline:
                if cancel.cancelled:
                    return RunOutcome("cancelled", "cancelled", loads=self.loads)
                time.sleep(0.002)
            if key in self.die_on:
                self.held.clear()  # a new process holds nothing
                return RunOutcome(
                    "interrupted", f"the worker running this job was killed ({key})", worker_lost=True
                )
            self.ran.append(key)
            result = RunResult(request.job_id, "done", request.seed or 0, {"show": {"text": key}})
            return RunOutcome("done", None, result, loads=self.loads)
        finally:
            with self.lock:
                self.running -= 1

    def close(self, timeout: float = 10.0) -> None:
        self.closed = True


def task(key: str, models: tuple[str, ...] = (), seed: int = 0) -> Task:
    workflow = json.dumps({"version": 1, "nodes": {}, "metadata": {"models": list(models)}})
    return Task(key, workflow, seed, frozenset(models))


def run_all(scheduler: Scheduler, tasks: list[Task], **kwargs) -> tuple[list[TaskResult], object]:  # noqa: ANN003
    results: list[TaskResult] = []
    stats = scheduler.run(tasks, results.append, **kwargs)
    return results, stats


def test_every_task_runs_once_and_workers_run_at_the_same_time() -> None:
    workers = [FakeWorker(0.1), FakeWorker(0.1)]
    scheduler = Scheduler(workers, ["a", "b"])
    tasks = [task(f"t{n}", seed=n) for n in range(8)]
    results, stats = run_all(scheduler, tasks)
    scheduler.close()
    assert sorted(r.key for r in results) == sorted(t.key for t in tasks)
    assert all(r.status == "done" and r.attempts == 1 for r in results)
    assert {r.key: r.seed for r in results} == {t.key: t.seed for t in tasks}
    assert {r.key: r.outputs for r in results} == {t.key: {"show": {"text": t.key}} for t in tasks}
    assert len(workers[0].ran) + len(workers[1].ran) == 8 and workers[0].ran and workers[1].ran
    assert (stats.done, stats.failed, stats.retried) == (8, 0, 0)
    assert all(w.closed for w in workers)
    # Two workers take about half the time one would (8 x 0.1 s of work).
    assert workers[0].most_at_once == 1 and stats.seconds < 0.7


def test_affinity_loads_each_checkpoint_once_per_worker() -> None:
    # A A B B A A B B ...: two free workers taking tasks in order would both switch every time.
    tasks = [task(f"t{n}", (f"ckpt_name={'AB'[n // 2 % 2]}",)) for n in range(12)]
    with_affinity = [FakeWorker(), FakeWorker()]
    scheduler = Scheduler(with_affinity)
    results, stats = run_all(scheduler, tasks)
    assert len(results) == 12 and stats.done == 12
    assert [w.loads for w in with_affinity] == [1, 1]  # one checkpoint each, loaded once
    assert stats.affinity_hits == 12 - 2
    assert stats.loads == sum(w.loads for w in with_affinity)  # reported from the workers themselves

    without = [FakeWorker(), FakeWorker()]
    results, stats_without = run_all(Scheduler(without, affinity=False), tasks)
    assert stats_without.done == 12
    # Alternating checkpoints without affinity make the workers switch at nearly every item.
    assert sum(w.loads for w in without) >= 6


def test_a_task_whose_worker_dies_is_retried_once_on_another_worker() -> None:
    dying = FakeWorker(die_on={"t3"})
    healthy = FakeWorker()
    scheduler = Scheduler([dying, healthy], ["dying", "healthy"])
    tasks = [task(f"t{n}") for n in range(6)]
    results, stats = run_all(scheduler, tasks)
    by_key = {r.key: r for r in results}
    assert len(results) == 6 and set(by_key) == {t.key for t in tasks}  # each reported once
    assert all(r.status == "done" for r in results)
    retried = by_key["t3"]
    if retried.attempts == 2:  # the dying worker took t3 first
        assert retried.tried_on == ["dying", "healthy"] and retried.worker == "healthy"
        assert stats.retried == 1
    else:  # the healthy one took it: no death happened
        assert retried.tried_on == ["healthy"]
    # No task ran to completion twice.
    assert Counter(dying.ran + healthy.ran) == Counter(t.key for t in tasks)


def test_a_task_lost_twice_fails_with_the_reason_and_both_workers() -> None:
    a, b = FakeWorker(die_on={"bad"}), FakeWorker(die_on={"bad"})
    results, stats = run_all(Scheduler([a, b], ["a", "b"]), [task("bad"), task("good")])
    by_key = {r.key: r for r in results}
    assert by_key["good"].status == "done"
    bad = by_key["bad"]
    assert bad.status == "failed" and bad.attempts == 2
    assert sorted(bad.tried_on) == ["a", "b"]
    assert "killed" in (bad.error or "") and "tried 2 times" in (bad.error or "")
    assert stats.failed == 1 and stats.retried == 1


def test_with_one_worker_the_retry_runs_on_that_worker() -> None:
    worker = FakeWorker(die_on={"x"})
    results, _ = run_all(Scheduler([worker], ["only"]), [task("x"), task("y")])
    by_key = {r.key: r for r in results}
    assert by_key["x"].tried_on == ["only", "only"] and by_key["x"].status == "failed"
    assert by_key["y"].status == "done"


def test_cancel_stops_dispatching_and_cancels_running_tasks() -> None:
    workers = [FakeWorker(0.3), FakeWorker(0.3)]
    scheduler = Scheduler(workers)
    cancel = CancelToken()
    threading.Timer(0.1, cancel.cancel).start()
    results, stats = run_all(scheduler, [task(f"t{n}") for n in range(10)], cancel=cancel)
    assert len(results) == 2  # only the two that had started are reported
    assert all(r.status == "cancelled" for r in results)
    assert stats.cancelled == 2 and stats.done == 0
    assert not workers[0].ran and not workers[1].ran


def test_tasks_need_distinct_keys_and_workers_distinct_names() -> None:
    scheduler = Scheduler([FakeWorker()])
    with pytest.raises(ValueError, match="distinct key"):
        scheduler.run([task("same"), task("same")], lambda result: None)
    with pytest.raises(ValueError, match="distinct name"):
        Scheduler([FakeWorker(), FakeWorker()], ["w", "w"])


def test_dispatch_overhead_is_small_for_a_long_queue() -> None:
    workers = [FakeWorker(0.0), FakeWorker(0.0)]
    tasks = [task(f"t{n}", (f"ckpt_name={'AB'[n % 2]}",)) for n in range(2000)]
    results, stats = run_all(Scheduler(workers), tasks)
    assert len(results) == 2000
    assert max(stats.dispatch_ms) < 20.0


def test_models_of_reads_the_model_inputs_of_a_workflow(registry) -> None:  # noqa: ANN001
    from graph.validate import validate

    text = (Path(__file__).resolve().parent.parent / "workflows" / "txt2img.json").read_text()
    workflow = validate(text, registry).workflow
    assert workflow is not None
    assert models_of(workflow, registry) == frozenset({"ckpt_name=toy-sd"})


# --- real worker processes -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_process_killed_mid_task_loses_nothing(tmp_path: Path) -> None:
    spec = EngineSpec(output_dir=tmp_path, packs=(TEST_PACK,))
    runners = [ProcessRunner(spec.for_slot(n), name=f"w{n}") for n in range(2)]
    scheduler = Scheduler(runners, ["w0", "w1"])
    tasks = [Task(f"t{n}", json.dumps(sleep_flow(n, steps=20, seconds=0.05)), n) for n in range(6)]
    killed: list[int] = []

    def on_event(key: str, event) -> None:  # noqa: ANN001
        # Kill the worker process running t2 once t2 is halfway through.
        if key == "t2" and getattr(event, "step", 0) == 10 and not killed:
            runner = runners[int(scheduler.running()["t2"][1:])]
            assert runner.pid is not None
            killed.append(runner.pid)
            os.kill(runner.pid, signal.SIGKILL)

    results: list[TaskResult] = []
    try:
        stats = scheduler.run(tasks, results.append, on_event=on_event)
    finally:
        scheduler.close()
    by_key = {r.key: r for r in results}
    assert killed, "the test never saw t2 halfway"
    assert set(by_key) == {t.key for t in tasks} and len(results) == 6
    assert all(r.status == "done" for r in results), [(r.key, r.status, r.error) for r in results]
    assert by_key["t2"].attempts == 2 and len(set(by_key["t2"].tried_on)) == 2
    assert {r.key: r.outputs["show"]["text"] for r in results} == {f"t{n}": str(n) for n in range(6)}
    assert stats.retried == 1 and sum(w.lost for w in stats.workers) == 1
