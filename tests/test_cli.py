"""The command line, as a user or a script calls it: run, validate, nodes, schema."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graph.workflow import PNG_SEED_KEY, PNG_WORKFLOW_KEY
from tests.helpers import link, node, workflow

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "workflows" / "invert.json"


def app(
    *args: str, cwd: Path = REPO, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "app.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def write(tmp_path: Path, data: dict, name: str = "wf.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_run_example_saves_png_with_workflow_and_seed(tmp_path):
    out = tmp_path / "out"
    done = app("run", str(EXAMPLE), "--out", str(out), "--seed", "77")
    assert done.returncode == 0, done.stderr
    (saved,) = out.glob("*.png")
    assert done.stdout.strip() == str(saved)
    with Image.open(saved) as picture:
        pixels = np.asarray(picture.convert("RGB"))
        text = dict(picture.text)
    with Image.open(REPO / "workflows" / "assets" / "shapes.png") as source:
        expected = 255 - np.asarray(source.convert("RGB"))
    assert np.array_equal(pixels, expected)
    assert text[PNG_SEED_KEY] == "77"
    assert json.loads(text[PNG_WORKFLOW_KEY])["nodes"]["invert"]["type"] == "ImageInvert"


def test_outputs_never_overwrite_earlier_files(tmp_path):
    out = tmp_path / "out"
    assert app("run", str(EXAMPLE), "--out", str(out)).returncode == 0
    (first,) = out.glob("*.png")
    before = first.read_bytes()
    assert app("run", str(EXAMPLE), "--out", str(out)).returncode == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["inverted_00001.png", "inverted_00002.png"]
    assert first.read_bytes() == before


def test_png_runs_again_and_reproduces(tmp_path):
    out = tmp_path / "out"
    assert app("run", str(EXAMPLE), "--out", str(out)).returncode == 0
    (png,) = out.glob("*.png")
    again = app("run", str(png), "--out", str(out), "--input-dir", str(REPO / "workflows"))
    assert again.returncode == 0, again.stderr
    second = out / "inverted_00002.png"
    with Image.open(png) as a, Image.open(second) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert a.text[PNG_SEED_KEY] == b.text[PNG_SEED_KEY]  # the stored run seed is reused


def test_set_overrides_a_constant_with_type_parsing(tmp_path):
    out = tmp_path / "out"
    done = app("run", str(EXAMPLE), "--out", str(out), "--set", "save.filename_prefix=negative")
    assert done.returncode == 0, done.stderr
    assert [p.name for p in out.glob("*.png")] == ["negative_00001.png"]

    # what reaches the node is checked in tests/test_cli_overrides.py


def test_set_errors_exit_2_with_a_clear_message(tmp_path):
    data = workflow(a=node("IntMath", a=1, b=2), show=node("ShowValue", value=link("a", "value")))
    path = write(tmp_path, data)
    cases = {
        "a.b=two": "expects a whole number",
        "zz.b=1": "no node 'zz'",
        "a.q=1": "has no input 'q'",
        "a.b": "NODE.INPUT=VALUE",
        "show.value=3": "takes a * link",
        "a.operation=sideways": "not one of the choices",
    }
    for override, message in cases.items():
        done = app("run", str(path), "--set", override)
        assert done.returncode == 2, override
        assert message in done.stderr, (override, done.stderr)
        assert "Traceback" not in done.stderr


def test_json_events_one_per_line(tmp_path):
    done = app("run", str(EXAMPLE), "--out", str(tmp_path), "--json")
    assert done.returncode == 0
    events = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("node_finished") == 3
    finished = [e for e in events if e["event"] == "node_finished" and e["node_id"] == "save"]
    assert finished[0]["files"] and Path(finished[0]["files"][0]).exists()


def test_exit_codes(tmp_path):
    bad = write(tmp_path, workflow(a=node("Nope")), "bad.json")
    invalid = app("run", str(bad))
    assert invalid.returncode == 2 and "unknown node type 'Nope'" in invalid.stderr
    missing = app("run", str(tmp_path / "nothing.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    failing = write(
        tmp_path,
        workflow(
            load=node("LoadImage", path="absent.png"), save=node("SaveImage", images=link("load", "image"))
        ),
    )
    failed = app("run", str(failing), "--out", str(tmp_path / "o"))
    assert failed.returncode == 1
    assert "node 'load' (LoadImage), input 'path'" in failed.stderr and "absent.png" in failed.stderr
    for result in (invalid, missing, failed):
        assert "Traceback" not in result.stderr


def test_validate_command(tmp_path):
    assert app("validate", str(EXAMPLE)).returncode == 0
    data = workflow(a=node("IntMath", a="x", c=1), s=node("SaveImage"))
    path = write(tmp_path, data)
    plain = app("validate", str(path))
    assert plain.returncode == 2
    assert (
        "node 'a' (IntMath), input 'c'" in plain.stdout
        and "node 's' (SaveImage), input 'images'" in plain.stdout
    )
    as_json = app("validate", str(path), "--json")
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 2 and report["valid"] is False
    assert {(i["node_id"], i["input"]) for i in report["issues"]} == {("a", "a"), ("a", "c"), ("s", "images")}
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\x01{{{")
    assert app("validate", str(garbage)).returncode == 2


def test_nodes_and_schema_commands():
    listed = json.loads(app("nodes", "--json").stdout)
    types = {n["type"]: n for n in listed["nodes"]}
    assert {"LoadImage", "SaveImage", "PreviewImage", "Switch", "Seed", "ImageResize"} <= set(types)
    width = next(i for i in types["ImageResize"]["inputs"] if i["name"] == "width")
    assert width["type"] == "INT" and width["min"] == 1
    assert listed["problems"] == []
    schema = json.loads(app("schema").stdout)
    assert schema["title"] == "Studio workflow"
    assert "LoadImage" in app("nodes").stdout


def test_quick_commands_do_not_import_heavy_libraries(tmp_path):
    probe = (
        "import sys, app\n"
        "for argv in (['nodes', '--json'], ['schema'], ['validate', sys.argv[1]]):\n"
        "    app.main(argv)\n"
        "try:\n    app.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'gradio', 'transformers') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(EXAMPLE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_ctrl_c_cancels_cleanly_and_keeps_saved_files(tmp_path):
    data = workflow(
        img=node("EmptyImage", width=8, height=8),
        save=node("SaveImage", images=link("img", "image"), filename_prefix="early"),
        slow=node("Sleep", steps=2000, seconds_per_step=0.01),
        show=node("ShowValue", value=link("slow", "value")),
    )
    path = write(tmp_path, data)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "app.py"),
            "--pack",
            "tests.packs.testing",
            "run",
            str(path),
            "--json",
            "--out",
            str(out),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if json.loads(line)["event"] == "node_progress":
            break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert json.loads(rest.splitlines()[-1])["status"] == "cancelled"
    assert [p.name for p in out.glob("*.png")] == ["early_00001.png"]
    assert not list(out.glob(".saving-*"))
    assert "Traceback" not in err


def test_progress_bar_on_a_terminal(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    data = workflow(
        slow=node("Sleep", steps=5, seconds_per_step=0.01),
        show=node("ShowValue", value=link("slow", "value")),
    )
    path = write(tmp_path, data)
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--pack", "tests.packs.testing", "run", str(path)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(30) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "run:" in screen and "2/2" in screen and "node" in screen


def test_non_loopback_addresses_are_recognised():
    from cli.studio import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


# --- bad input never gives a traceback -----------------------------------------------------


def main(capsys, *args: str) -> tuple[int, str, str]:
    """Call the CLI in this process; what it printed."""
    import app

    capsys.readouterr()
    code = app.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def float_workflow(value_json: str) -> str:
    nodes = {
        "f": {"type": "Float", "inputs": {"value": "@VALUE@"}},
        "show": {"type": "ShowValue", "inputs": {"value": {"node": "f", "output": "value"}}},
    }
    return json.dumps({"version": 1, "nodes": nodes}).replace('"@VALUE@"', value_json)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (float_workflow("1e400"), ["node 'f' (Float), input 'value'", "too large"]),
        (float_workflow("1" + "0" * 400), ["node 'f' (Float), input 'value'", "64-bit"]),
        (float_workflow('"\\ud800"'), ["node 'f' (Float), input 'value'", "lone surrogate"]),
        (float_workflow("2.5").replace('"show"', '"\\udcff"'), ["lone surrogate"]),
        (
            float_workflow("2.5")[:-1] + ', "metadata": ' + '{"a": ' * 900 + "1" + "}" * 901,
            ["deeper than 64"],
        ),
    ],
    ids=["1e400", "401-digits", "surrogate-value", "surrogate-node-id", "metadata-900-deep"],
)
def test_bad_numbers_text_and_nesting_exit_2_with_a_sentence(tmp_path, capsys, text, words):
    path = tmp_path / "wf.json"
    path.write_text(text, encoding="utf-8")
    for command in ("validate", "run"):
        args = [command, str(path)] + (["--out", str(tmp_path / "out")] if command == "run" else [])
        code, out, err = main(capsys, *args)
        said = out + err
        assert code == 2, (command, said)
        for word in words:
            assert word in said, (command, word, said)
        assert "Traceback" not in said


def test_set_with_values_beyond_their_type_exit_2_naming_node_and_input(tmp_path, capsys):
    data = workflow(
        a=node("IntMath", a=1, b=2), f=node("Float"), show=node("ShowValue", value=link("a", "value"))
    )
    data["nodes"]["show2"] = node("ShowValue", value=link("f", "value"))
    path = write(tmp_path, data)
    cases = {
        "a.b=" + "9" * 30: ("node 'a' (IntMath), input 'b'", "64-bit"),
        "a.b=" + "9" * 5000: ("input 'b'", "whole number"),
        "f.value=1e400": ("node 'f' (Float), input 'value'", "too large"),
        "f.value=nan": ("node 'f' (Float), input 'value'", "NaN"),
        "f.value=" + "1" + "0" * 400: ("node 'f' (Float), input 'value'", "too large"),
    }
    for override, words in cases.items():
        code, out, err = main(capsys, "run", str(path), "--set", override, "--out", str(tmp_path / "o"))
        assert code == 2, (override, err)
        for word in words:
            assert word in err, (override, word, err)
        assert "Traceback" not in err


def test_set_with_a_byte_that_is_not_utf8_exits_2(tmp_path):
    path = write(tmp_path, json.loads(EXAMPLE.read_text()))
    done = subprocess.run(
        [sys.executable, str(REPO / "app.py"), "run", str(path), "--set", b"save.filename_prefix=\xff"],
        cwd=REPO,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, err
    assert "node 'save' (SaveImage), input 'filename_prefix'" in err and "\\xff" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("seed", ["-1", str(2**53), str(10**30)])
def test_seed_out_of_range_exits_2(tmp_path, capsys, seed):
    code, out, err = main(capsys, "run", str(EXAMPLE), "--seed", seed, "--out", str(tmp_path))
    assert code == 2 and "seed" in err and str(2**53 - 1) in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.png"))


def test_largest_seed_runs(tmp_path, capsys):
    data = workflow(s=node("Seed", mode="random"), show=node("ShowValue", value=link("s", "seed")))
    code, out, err = main(capsys, "run", str(write(tmp_path, data)), "--seed", str(2**53 - 1))
    assert code == 0, err


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(text: dict[str, str]) -> bytes:
    """A PNG whose header claims 30000 x 30000 pixels (PIL calls it a decompression bomb)."""
    import struct
    import zlib

    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))]
    chunks += [_png_chunk(b"tEXt", k.encode() + b"\0" + v.encode()) for k, v in text.items()]
    chunks += [_png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def test_decompression_bomb_png_is_answered_without_decoding_it(tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png({}))
    for command in ("validate", "run"):
        code, out, err = main(capsys, command, str(bomb))
        assert code == 2 and "holds no workflow" in out + err and "Traceback" not in out + err
    data = workflow(a=node("Int", value=5), show=node("ShowValue", value=link("a", "value")))
    bomb.write_bytes(bomb_png({PNG_WORKFLOW_KEY: json.dumps(data), PNG_SEED_KEY: "9"}))
    assert main(capsys, "validate", str(bomb))[0] == 0
    code, out, err = main(capsys, "run", str(bomb), "--out", str(tmp_path / "out"))
    assert code == 0 and "show.text: 5" in out, err


def test_a_file_name_that_is_not_utf8_is_shown_not_a_crash(tmp_path, capsys):
    name = os.fsdecode(b"wf-\xff.json")
    path = write(tmp_path, workflow(a=node("Nope")), name)
    code, out, err = main(capsys, "validate", str(path))
    assert code == 2 and "\\xff" in out
    code, out, err = main(capsys, "validate", str(tmp_path / os.fsdecode(b"absent-\xfe.json")))
    assert code == 2 and "\\xfe" in out
