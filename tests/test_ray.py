"""Sweeps on a Ray cluster: a head started by the test (``ray start --head``, 2 CPUs), joined by
``app.py sweep --ray ADDRESS`` with two actors.

The cluster uses Ray's token authentication, as docs/scale.md sets one up. A 12-item sweep
over two checkpoints (the bundled toy model and a tiny random one) draws what
single runs of the same items draw, and no worker loads a checkpoint twice (model affinity); an
actor killed mid-sweep loses nothing: 12 items done, none twice, the lost one retried.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import app

REPO = Path(__file__).resolve().parent.parent
TXT2IMG = REPO / "workflows" / "txt2img.json"
RAY = Path(sys.executable).parent / "ray"
STEPS = 4

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not RAY.exists(), reason="ray is installed by setup.sh (requirements.txt)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding a second checkpoint: a tiny random SD in diffusers' layout."""
    from tests.fixtures.models_root import save_tiny_sd_folder

    root = tmp_path_factory.mktemp("ray-models")
    save_tiny_sd_folder(root / "checkpoints" / "tiny-sd")
    return root


#: The cluster asks for a token (Ray's token authentication), as docs/scale.md sets one up.
TOKEN_ENV = {
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
    "RAY_USAGE_STATS_ENABLED": "0",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-machine Ray cluster with 2 CPUs and a token, stopped after the module."""
    temp = Path("/tmp") / f"ray-test-{os.getpid()}"  # Ray's socket paths must stay short
    port = free_port()
    env = {**os.environ, **TOKEN_ENV}
    start = [str(RAY), "start", "--head", "--num-cpus", "2", "--num-gpus", "0", "--port", str(port)]
    start += ["--include-dashboard", "false", "--temp-dir", str(temp), "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(temp, ignore_errors=True)


def sweep(cluster: str, models: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, str(REPO / "app.py"), "--models", str(models), "sweep", str(TXT2IMG)]
    argv += ["--grid", "ck.ckpt_name=toy-sd,tiny-sd", "--seeds", "1-6", "--set", f"s.steps={STEPS}"]
    argv += ["--ray", cluster, "--workers", "2", "--out", str(out), *extra]
    env = {**os.environ, **TOKEN_ENV}
    return subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def manifest(out: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    path = out / "manifest.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    items = [line for line in lines if "summary" not in line]
    summaries = [line["summary"] for line in lines if "summary" in line]
    return items, summaries[-1] if summaries else None


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def actor_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "_EngineActor" in command:
                found.append(int(entry.name))
    return found


def test_a_sweep_on_ray_draws_what_single_runs_draw(cluster: str, models: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    proc = sweep(cluster, models, out)
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    items, summary = manifest(out)
    assert len(items) == 12 and summary is not None
    assert Counter(r["key"] for r in items).most_common(1)[0][1] == 1
    assert {(r["values"]["ck.ckpt_name"], r["seed"]) for r in items} == {
        (name, seed) for name in ("toy-sd", "tiny-sd") for seed in range(1, 7)
    }
    assert all(r["status"] == "done" for r in items)
    workers = {w["name"]: w for w in summary["workers"]}
    assert set(workers) == {"ray-0", "ray-1"} and all(w["items"] > 0 for w in workers.values())
    # Affinity: a worker never goes back to a checkpoint it left, so it loads each one once; the
    # only misses are each worker's first item of each checkpoint (a worker that finishes its own
    # checkpoint's items helps with the other's instead of waiting).
    runs: dict[str, list[str]] = {name: [] for name in workers}
    for record in sorted(items, key=lambda r: r["started"]):
        names = runs[record["worker"]]
        if not names or names[-1] != record["values"]["ck.ckpt_name"]:
            names.append(record["values"]["ck.ckpt_name"])
    assert all(len(names) == len(set(names)) for names in runs.values()), runs
    assert runs["ray-0"][0] != runs["ray-1"][0]  # the two start on different checkpoints
    pairs = sum(len(names) for names in runs.values())
    assert summary["affinity_hits"] == 12 - pairs

    for record in items:
        name, seed = record["values"]["ck.ckpt_name"], record["seed"]
        single = tmp_path / f"single-{name}-{seed}"
        sets = [f"ck.ckpt_name={name}", f"s.steps={STEPS}", f"s.seed={seed}"]
        argv = ["--models", str(models), "run", str(TXT2IMG), "--seed", str(seed), "--out", str(single)]
        argv += [part for value in sets for part in ("--set", value)]
        assert app.main(argv) == 0
        (expected,) = single.rglob("*.png")
        (file,) = record["files"]
        # Equal to uint8 rounding: a Ray actor with one CPU runs torch on one thread, which sums
        # in another order than this process's threads (a value may land one level apart).
        difference = np.abs(pixels(out / file).astype(int) - pixels(expected).astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01, record


def cpu_ticks(pid: int) -> int:
    """The CPU time a process has used (user + system, in clock ticks), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def busiest(pids: list[int], seconds: float = 0.5) -> int:
    """The process that used the most CPU over ``seconds``: an actor drawing an item, not one
    waiting between items for its next."""
    before = {pid: cpu_ticks(pid) for pid in pids}
    time.sleep(seconds)
    return max(pids, key=lambda pid: cpu_ticks(pid) - before[pid])


def test_an_actor_killed_mid_sweep_loses_nothing(cluster: str, models: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    proc = sweep(cluster, models, out, "--set", "s.steps=30")  # items long enough to be caught mid-way
    deadline = time.monotonic() + 600
    while len(manifest(out)[0]) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    # at least this sweep's two (an earlier test's may still be shutting down on a slow machine;
    # they are idle, so the busiest is one of this sweep's)
    victims = actor_pids()
    assert len(victims) >= 2
    os.kill(busiest(victims), signal.SIGKILL)  # one that is drawing an item, so that it is lost mid-way
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    items, summary = manifest(out)
    assert summary is not None
    assert len(items) == 12 and all(r["status"] == "done" for r in items)
    assert len({r["key"] for r in items}) == 12  # no item twice
    # Items take a second or more and the actor killed was busy just before, so the kill lands
    # mid-item: that item is retried once, on the other worker.
    assert summary["retried"] == 1 and sum(w["lost"] for w in summary["workers"]) == 1
    (retried,) = [r for r in items if r["attempts"] == 2]
    assert retried["status"] == "done"
