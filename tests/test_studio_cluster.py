"""The studio's job queue on several workers: local worker processes, or Ray actors.

One server per kind, started by ``app.py --workers 2`` (and ``--ray auto``, which starts a local
Ray): two jobs run at once and one of them is cancelled while the other finishes; a worker
killed mid-job marks that job interrupted with the reason, and the next job still runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_PACK
from tests.test_jobs import sleep_flow
from tests.test_studio_loopback import free_port, wait_until_serving
from tests.test_studio_workers import call

REPO = Path(__file__).resolve().parent.parent
WAIT = 240.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads Linux's /proc"),
]


def job_of(base: str, job_id: str) -> dict[str, Any]:
    return call(base, "GET", f"/api/jobs/{job_id}")


def wait_for(base: str, job_id: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while (job := job_of(base, job_id))["status"] not in statuses:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def worker_pids(kind: str, server: int) -> list[int]:
    """The processes running the studio's jobs: its spawned children, or its Ray actors."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if kind == "ray" and "_EngineActor" in command:
            found.append(int(entry.name))
        elif kind == "local" and parent == server and "multiprocessing.spawn" in command:
            if "resource_tracker" not in command:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module", params=["local", "ray"])
def studio(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, int]]:
    kind = request.param
    folder = tmp_path_factory.mktemp(f"studio-{kind}")
    port = free_port()
    args = [sys.executable, str(REPO / "app.py"), "--pack", TEST_PACK, "--port", str(port)]
    args += ["--out", str(folder / "out"), "--state", str(folder / "state"), "--workers", "2"]
    if kind == "ray":
        args += ["--ray", "auto"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_serving(proc, port)
        yield kind, f"http://127.0.0.1:{port}", proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


def test_two_jobs_run_at_once_and_one_is_cancelled(studio: tuple[str, str, int]) -> None:
    _, base, _ = studio
    first = call(base, "POST", "/api/jobs", {"workflow": sleep_flow(1, steps=200, seconds=0.05)})
    second = call(base, "POST", "/api/jobs", {"workflow": sleep_flow(2, steps=60, seconds=0.05)})
    deadline = time.monotonic() + WAIT
    while True:  # both running at the same moment: two workers
        states = {job_of(base, j["id"])["status"] for j in (first, second)}
        if states == {"running"}:
            break
        assert "done" not in states and time.monotonic() < deadline, states
        time.sleep(0.05)
    call(base, "POST", f"/api/jobs/{first['id']}/cancel")
    cancelled = wait_for(base, first["id"], ("cancelled", "done", "failed", "interrupted"))
    finished = wait_for(base, second["id"], ("cancelled", "done", "failed", "interrupted"))
    assert cancelled["status"] == "cancelled"
    assert finished["status"] == "done", finished.get("error")
    assert finished["results"] == {"show": {"text": "2"}}
    assert cancelled["finished"] < finished["finished"]  # cancelled mid-run, not after the other ended


def test_a_worker_killed_mid_job_interrupts_that_job_and_the_next_job_runs(
    studio: tuple[str, str, int],
) -> None:
    kind, base, server = studio
    job = call(base, "POST", "/api/jobs", {"workflow": sleep_flow(3, steps=200, seconds=0.05)})
    deadline = time.monotonic() + WAIT
    while not any(
        e["event"] == "node_progress" for e in call(base, "GET", f"/api/jobs/{job['id']}/events?wait=1")
    ):
        assert time.monotonic() < deadline, "the job never made progress"
    victims = worker_pids(kind, server)
    assert victims, f"no {kind} worker process found"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    lost = wait_for(base, job["id"], ("cancelled", "done", "failed", "interrupted"))
    assert lost["status"] == "interrupted", lost
    assert "killed" in (lost["error"] or "") and "worker" in (lost["error"] or "")
    history = call(base, "GET", "/api/history")
    stored = next(entry for entry in history["jobs"] if entry["id"] == job["id"])
    assert stored["status"] == "interrupted"
    after = call(base, "POST", "/api/jobs", {"workflow": sleep_flow(4, steps=2, seconds=0.05)})
    done = wait_for(base, after["id"], ("cancelled", "done", "failed", "interrupted"))
    assert done["status"] == "done" and done["results"] == {"show": {"text": "4"}}, done
    assert json.dumps(done)  # the server still answers with plain JSON
