"""``app.py sweep`` end to end, in a subprocess with local worker processes: its pictures equal
single runs of the same items, Ctrl-C keeps what is done and ``--resume`` finishes only the rest,
and an invalid item fails alone. (The Ray runs are in tests/test_ray.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import app
from tests.conftest import TEST_PACK

REPO = Path(__file__).resolve().parent.parent
TXT2IMG = REPO / "workflows" / "txt2img.json"
STEPS = 4


def sweep(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "app.py"), "sweep", *args]


def manifest_lines(out: Path) -> list[dict[str, Any]]:
    path = out / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def toy_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """2 CFG values x 2 seeds of the toy text-to-image workflow on two worker processes."""
    out = tmp_path_factory.mktemp("toy-sweep")
    done = subprocess.run(
        sweep(str(TXT2IMG), "--grid", "s.cfg=3,7.5", "--seeds", "11-12", "--set", f"s.steps={STEPS}")
        + ["--workers", "2", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return out, done


@pytest.mark.slow
def test_sweep_pictures_equal_single_runs_of_the_same_items(
    toy_sweep: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    out, done = toy_sweep
    assert done.returncode == 0, done.stderr[-3000:]
    lines = manifest_lines(out)
    items, summary = lines[:-1], lines[-1]["summary"]
    assert {(r["values"]["s.cfg"], r["seed"]) for r in items} == {
        (c, s) for c in (3.0, 7.5) for s in (11, 12)
    }
    assert all(r["status"] == "done" for r in items)
    assert sorted(w["name"] for w in summary["workers"]) == ["worker-0", "worker-1"]
    assert sum(w["loads"] for w in summary["workers"]) <= 2  # each worker loads the checkpoint once at most
    for record in items:
        cfg, seed = record["values"]["s.cfg"], record["seed"]
        single = tmp_path / f"run-{cfg}-{seed}"
        overrides = ["s.steps=" + str(STEPS), f"s.cfg={cfg}", f"s.seed={seed}"]
        argv = ["run", str(TXT2IMG), *(x for o in overrides for x in ("--set", o)), "--seed", str(seed)]
        assert app.main([*argv, "--out", str(single)]) == 0
        (expected,) = single.rglob("*.png")
        (file,) = record["files"]
        # Equal to uint8 rounding: the two workers share the cores (one torch thread each), which
        # sum in another order than a run with both threads (a value may land one level apart).
        difference = np.abs(pixels(out / file).astype(int) - pixels(expected).astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01, record
    assert {p.name for p in out.glob("grid*.png")} == {"grid-seed11.png", "grid-seed12.png"}
    assert "4 done, 0 failed" in done.stderr and "worker-0:" in done.stderr


@pytest.mark.slow
def test_an_invalid_item_fails_alone_naming_the_node_and_input(tmp_path: Path) -> None:
    done = subprocess.run(
        sweep(str(TXT2IMG), "--grid", "s.steps=0,2", "--out", str(tmp_path), "--json"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    failed, ok, end = manifest_lines(tmp_path)
    assert failed["values"] == {"s.steps": 0} and failed["status"] == "failed"
    assert "node 's' (Sampler), input 'steps'" in failed["error"]
    assert ok["values"] == {"s.steps": 2} and ok["status"] == "done" and len(ok["files"]) == 1
    assert end["summary"]["done"] == 1 and end["summary"]["failed"] == 1
    assert [json.loads(line) for line in done.stdout.splitlines()] == [failed, ok, end]
    assert (tmp_path / "grid.png").exists()


def slow_workflow(path: Path) -> Path:
    """A test-pack picture that takes 0.1 s a step to make (it checks for cancel at each step)."""
    data = {
        "version": 1,
        "nodes": {
            "p": {"type": "SlowPreview", "inputs": {"steps": 5, "seconds_per_step": 0.1, "size": 4}},
            "save": {"type": "SaveImage", "inputs": {"images": {"node": "p", "output": "image"}}},
        },
    }
    path.write_text(json.dumps(data))
    return path


@pytest.mark.slow
def test_ctrl_c_keeps_what_is_done_and_resume_finishes_only_the_rest(tmp_path: Path) -> None:
    flow = slow_workflow(tmp_path / "slow.json")
    out = tmp_path / "out"
    args = ["--grid", "p.size=2,3,4,5", "--grid", "p.steps=3,4,5", "--workers", "2", "--out", str(out)]
    command = [sys.executable, str(REPO / "app.py"), "--pack", TEST_PACK, "sweep", str(flow), *args]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not manifest_lines(out) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert "cancelling" in stderr and "--resume runs them" in stderr
    first = manifest_lines(out)
    done_first = {r["key"] for r in first if r.get("status") == "done"}
    assert 1 <= len(done_first) < 12
    assert all(r.get("status") in ("done", None) for r in first)  # cancelled items are not written
    assert first[-1]["summary"]["done"] == len(done_first)

    resumed = subprocess.run(command + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {len(done_first)} of 12 items are done already" in resumed.stderr
    lines = manifest_lines(out)
    records = [r for r in lines if "key" in r]
    keys = [r["key"] for r in records if r["status"] == "done"]
    assert len(keys) == len(set(keys)) == 12  # every item done exactly once
    assert lines[-1]["summary"]["done"] == 12 - len(done_first)
    assert lines[-1]["summary"]["skipped"] == len(done_first)
    for record in records:
        (file,) = record["files"]
        assert (out / file).exists()
