"""``app.py run --set NODE.INPUT=VALUE``: the overridden value reaches the node, typed, and is saved.

A run that merely ends "done" proves nothing about an override (the workflow's own value
would do as well), so each test picks values whose result differs from the file's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from graph.workflow import PNG_WORKFLOW_KEY
from tests.helpers import link, node, workflow

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "workflows" / "invert.json"


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    import app

    capsys.readouterr()
    code = app.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def shown(out: str) -> dict[str, str]:
    """The values the CLI printed for output nodes, as ``{"node.output": text}``."""
    lines = [line.partition(": ") for line in out.splitlines() if ": " in line]
    return {key: value for key, _, value in lines}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_int_and_choice_overrides_change_the_result(tmp_path, capsys):
    data = workflow(a=node("IntMath", a=3, b=2), show=node("ShowValue", value=link("a", "value")))
    path = write(tmp_path, data)
    code, out, err = run_in_process(capsys, "run", str(path), "--out", str(tmp_path))
    assert code == 0, err
    assert shown(out)["show.text"] == "5"  # 3 + 2, the file as written
    code, out, err = run_in_process(
        capsys, "run", str(path), "--out", str(tmp_path), "--set", "a.b=40", "--set", "a.operation=multiply"
    )
    assert code == 0, err
    assert shown(out)["show.text"] == "120"  # 3 * 40: both overrides reached the node
    code, out, _ = run_in_process(capsys, "run", str(path), "--out", str(tmp_path), "--set", "a.b=40")
    assert shown(out)["show.text"] == "43"
    assert json.loads(path.read_text()) == data  # the file itself is left as it was


@pytest.mark.parametrize(
    ("type_", "written", "override", "expected"),
    [
        ("Float", 1.0, "2.5", "2.5"),
        ("Float", 1.0, "-3", "-3.0"),  # a whole number given to a FLOAT input becomes a float
        ("Boolean", False, "yes", "True"),
        ("Boolean", True, "off", "False"),
        ("String", "plain", "12", "'12'"),  # text stays text, even when it looks like a number
        ("String", "plain", "a b=c", "'a b=c'"),
        ("Int", 1, "-7", "-7"),
    ],
)
def test_each_type_is_parsed_before_it_reaches_the_node(tmp_path, capsys, type_, written, override, expected):
    data = workflow(v=node(type_, value=written), show=node("ShowValue", value=link("v", "value")))
    path = write(tmp_path, data)
    code, out, err = run_in_process(
        capsys, "run", str(path), "--out", str(tmp_path), "--set", f"v.value={override}"
    )
    assert code == 0, err
    assert shown(out)["show.text"] == expected


def test_the_last_override_of_an_input_wins(tmp_path, capsys):
    data = workflow(v=node("Int", value=1), show=node("ShowValue", value=link("v", "value")))
    path = write(tmp_path, data)
    code, out, err = run_in_process(
        capsys, "run", str(path), "--out", str(tmp_path), "--set", "v.value=5", "--set", "v.value=9"
    )
    assert code == 0, err
    assert shown(out)["show.text"] == "9"


def test_an_override_of_an_input_left_out_of_the_file(tmp_path, capsys):
    data = workflow(a=node("IntMath", a=3), show=node("ShowValue", value=link("a", "value")))
    path = write(tmp_path, data)
    code, out, err = run_in_process(capsys, "run", str(path), "--out", str(tmp_path), "--set", "a.b=4")
    assert code == 0, err
    assert shown(out)["show.text"] == "7"


def test_the_saved_picture_carries_the_overridden_workflow(tmp_path):
    """Through the real command: the override names the file and is stored in the PNG it saves."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "app.py"), "run", str(EXAMPLE), "--out", str(out)]
        + ["--set", "save.filename_prefix=negative"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    (saved,) = out.glob("*.png")
    assert saved.name == "negative_00001.png"
    with Image.open(saved) as picture:
        stored = json.loads(picture.text[PNG_WORKFLOW_KEY])
    assert stored["nodes"]["save"]["inputs"]["filename_prefix"] == "negative"
    original = json.loads(EXAMPLE.read_text())
    assert original["nodes"]["save"]["inputs"].get("filename_prefix") != "negative"
