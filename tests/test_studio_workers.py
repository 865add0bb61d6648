"""The studio as started by ``app.py``: jobs run in a worker process, models and all.

One server for the module: a txt2img job through the API draws in the worker what a
headless run of the same workflow and seed draws here; the server's own process stays
free of torch; stopping the server stops its worker too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from graph.executor import Executor
from graph.validate import validate
from nodes.base import RunSettings
from nodes.registry import default_registry
from tests.test_studio_loopback import free_port, wait_until_serving

REPO = Path(__file__).resolve().parent.parent
WAIT = 240.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads Linux's /proc"),
]


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(n) for n in (task / "children").read_text().split()]
    return found


def call(base: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    folder = tmp_path_factory.mktemp("studio-workers")
    port = free_port()
    out = folder / "out"
    args = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--out", str(out)]
    args += ["--state", str(folder / "state")]
    # the server's (and its workers') output goes to a file: a pipe nobody reads fills up (64 KiB of
    # progress bars and warnings) and then blocks the server's next write, shutting down included
    log = folder / "server.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(args, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_serving(proc, port)
        yield proc, f"http://127.0.0.1:{port}", out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_txt2img_through_the_api_draws_in_the_worker_what_a_headless_run_draws(
    studio: tuple[subprocess.Popen[str], str, Path], tmp_path: Path
) -> None:
    proc, base, out = studio
    text = (REPO / "workflows" / "txt2img.json").read_text()
    job = call(base, "POST", "/api/jobs", {"workflow": json.loads(text), "seed": 7})
    deadline = time.monotonic() + WAIT
    while (found := call(base, "GET", f"/api/jobs/{job['id']}"))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, found
        time.sleep(0.2)
    assert found["status"] == "done", found.get("error")
    assert len(found["outputs"]) == 1

    workers = children(proc.pid)
    assert len(workers) >= 1  # the worker process (and perhaps multiprocessing's resource tracker)
    server_maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "libtorch" not in server_maps  # the model ran elsewhere: torch never loaded in the server
    assert any("libtorch" in Path(f"/proc/{pid}/maps").read_text() for pid in workers)

    registry = default_registry()
    checked = validate(text, registry)
    assert checked.workflow is not None
    here = Executor(registry).run(checked.workflow, settings=RunSettings(output_dir=tmp_path), seed=7)
    assert here.status == "done"
    with Image.open(out / found["outputs"][0]) as served, Image.open(here.files[0]) as direct:
        assert np.array_equal(np.asarray(served), np.asarray(direct))


def test_stopping_the_server_stops_its_workers(studio: tuple[subprocess.Popen[str], str, Path]) -> None:
    proc, _, out = studio
    workers = children(proc.pid)
    assert workers
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        log = (out.parent / "server.log").read_text(errors="replace")
        pytest.fail(f"the server did not stop within 60 s of Ctrl-C; its output ends:\n{log[-3000:]}")
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived the server"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state == "Z":  # a zombie has ended; only its parent has not collected it
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
