"""Fuzzing the command line: mutated example workflows never crash `validate` or `run`.

Whatever the file holds (keys dropped, types swapped, huge, NaN or negative numbers,
deep nesting, lone surrogates, random bytes, a cut-off end, a PNG around it) and
whatever ``--set`` says, the CLI exits 0, 1 or 2 with sentences, never a traceback.
The runs are in-process (``app.main``) so that hypothesis can try many; a handful run
as real processes, whose output streams refuse text that is not UTF-8.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import app
from graph.validate import validate
from graph.workflow import PNG_SEED_KEY, PNG_WORKFLOW_KEY
from nodes.registry import default_registry
from tests.test_fuzz import _paths

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / "workflows"
REGISTRY = default_registry()
#: Node packs that load no model: workflows made only of these may be run, the rest only validated.
MODEL_FREE_PACKS = ("nodes.primitives", "nodes.image_io", "nodes.image", "nodes.mask")
EXAMPLES = {p.name: json.loads(p.read_text()) for p in sorted(WORKFLOWS.glob("*.json"))}
EXAMPLES["numbers.json"] = {
    "version": 1,
    "nodes": {
        "a": {"type": "Int", "inputs": {"value": 7}},
        "p": {
            "type": "IntMath",
            "inputs": {"a": {"node": "a", "output": "value"}, "b": 3, "operation": "power"},
        },
        "f": {"type": "FloatMath", "inputs": {"a": 1.5, "b": 2.0, "operation": "multiply"}},
        "s": {"type": "Seed", "inputs": {"mode": "random"}},
        "show": {"type": "ShowValue", "inputs": {"value": {"node": "p", "output": "value"}}},
        "float": {"type": "ShowValue", "inputs": {"value": {"node": "f", "output": "value"}}},
        "seed": {"type": "ShowValue", "inputs": {"value": {"node": "s", "output": "seed"}}},
    },
    "metadata": {"view": {"zoom": 1.0}},
}
assert not [str(i) for i in validate(EXAMPLES["numbers.json"], REGISTRY).issues]

weird_numbers = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        -1,
        -(2**63) - 1,
        2**63,
        2**64,
        10**400,
        -(10**30),
        1e308,
        -0.0,
        2**53,
        2**53 - 1,
    ]
)
weird_text = st.sampled_from(
    ["\ud800", "a\udcffb", "\udfff", "", "x" * 300, "../../etc/passwd", "\x00", "猫"]
)
input_values = (
    st.integers(-3, 70)
    | st.floats(-2, 2, allow_nan=False)
    | st.booleans()
    | st.text(max_size=4)
    | weird_numbers
    | weird_text
)
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars | weird_numbers | weird_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)


def _deep(levels: int, leaf: Any = 1) -> Any:
    for _ in range(levels):
        leaf = {"a": leaf} if levels % 2 else [leaf]
    return leaf


@st.composite
def mutated_data(draw: st.DrawFn) -> tuple[str, Any]:
    name = draw(st.sampled_from(sorted(EXAMPLES)))
    data = copy.deepcopy(EXAMPLES[name])
    constants = [
        (node_id, input_name)
        for node_id, entry in data["nodes"].items()
        for input_name, value in entry["inputs"].items()
        if not isinstance(value, dict)
    ]
    for node_id, input_name in draw(st.lists(st.sampled_from(constants), max_size=2)):
        # plausible values (so that many files still validate and run) or values out of reach
        data["nodes"][node_id]["inputs"][input_name] = draw(input_values)
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(_paths(data)))
        if not path:
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = draw(st.sampled_from(["drop", "number", "text", "value", "deep", "swap", "rekey"]))
        if action == "drop":
            del parent[key]
        elif action == "number":
            parent[key] = draw(weird_numbers | st.integers(-(2**64), 2**64))
        elif action == "text":
            parent[key] = draw(weird_text)
        elif action == "value":
            parent[key] = draw(json_values)
        elif action == "deep":
            parent[key] = _deep(draw(st.sampled_from([63, 65, 200, 900])))
        elif action == "swap":
            value = parent[key]
            parent[key] = [value] if not isinstance(value, list) else {"x": value}
        elif action == "rekey" and isinstance(parent, dict):
            parent[draw(weird_text | st.text(max_size=6))] = parent.pop(key)
    return name, data


def to_text(data: Any) -> str:
    """JSON as a careless writer would write it: NaN and Infinity, surrogates as escapes."""
    try:
        return json.dumps(data)
    except (RecursionError, ValueError):
        return '{"version": 1, "nodes": ' + "[" * 5000 + "]" * 5000 + "}"


@st.composite
def mutated_files(draw: st.DrawFn) -> tuple[str, bytes]:
    name, data = draw(mutated_data())
    raw = to_text(data).encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none", "none", "truncate", "bytes", "splice", "png", "png-bytes"]))
    if damage == "truncate" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif damage == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=12)) + raw[at:]
    elif damage == "splice":
        at = draw(st.integers(0, len(raw)))
        raw = (
            raw[:at]
            + draw(st.sampled_from([b"NaN", b"-Infinity", b"1e999", b"9" * 400, b"\\ud800", b"[[[["]))
            + raw[at:]
        )
    elif damage in ("png", "png-bytes"):
        text = raw.decode("utf-8", "replace") if damage == "png" else None
        raw = png(text, draw(st.sampled_from(["7", "-1", "x", "9" * 5000, ""])), draw(st.integers(1, 40000)))
        if damage == "png-bytes":
            at = draw(st.integers(8, len(raw)))
            raw = raw[:at] + draw(st.binary(max_size=12)) + raw[at + draw(st.integers(0, 12)) :]
    return name, raw


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(workflow_text: str | None, seed: str, side: int) -> bytes:
    """A PNG claiming ``side`` x ``side`` pixels (big ones are decompression bombs to PIL)."""
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))]
    if workflow_text is not None:
        chunks.append(_chunk(b"iTXt", PNG_WORKFLOW_KEY.encode() + b"\0\0\0\0\0" + workflow_text.encode()))
    chunks.append(_chunk(b"tEXt", PNG_SEED_KEY.encode() + b"\0" + seed.encode()))
    chunks += [_chunk(b"IDAT", zlib.compress(b"\0" * 64)), _chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def cheap_to_run(raw: bytes) -> bool:
    """Whether every node type named in the file loads no model (unreadable files are cheap)."""
    types = {t.decode("utf-8", "replace") for t in _TYPE_NAMES(raw)}
    return all(REGISTRY.get(t) is None or REGISTRY.get(t).__module__ in MODEL_FREE_PACKS for t in types)


def _TYPE_NAMES(raw: bytes) -> list[bytes]:
    import re

    return re.findall(rb'"type"\s*:\s*"([^"\\]*)"', raw)


def answer(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = app.main(args)
    out, err = capsys.readouterr()
    return code, out + err


def check(code: int, said: str, args: list[str]) -> None:
    assert code in (0, 1, 2), (args, code, said[-2000:])
    assert "Traceback" not in said, (args, said[-2000:])
    if code != 0:
        assert said.strip(), (args, "exited without a word")


FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@FUZZ
@given(mutated_files())
def test_validate_and_run_answer_any_mutated_file(tmp_path, capsys, case):
    name, raw = case
    suffix = ".png" if raw.startswith(b"\x89PNG") else ".json"
    path = tmp_path / f"fuzzed{suffix}"
    path.write_bytes(raw)
    args = ["validate", str(path)]
    check(*answer(capsys, args), args)
    args = ["validate", "--json", str(path)]
    code, said = answer(capsys, args)
    check(code, said, args)
    json.loads(said)
    if cheap_to_run(raw):
        args = [
            "run",
            str(path),
            "--out",
            str(tmp_path / "out"),
            "--input-dir",
            str(WORKFLOWS),
            "--seed",
            "1",
        ]
        check(*answer(capsys, args), args)


override_values = (
    st.text(max_size=10)
    | weird_text
    | st.sampled_from(
        ["1e400", "nan", "-inf", "9" * 30, "9" * 5000, "-1", "true", "{}", "[1]", '"x"', "\udcff"]
    )
)


@st.composite
def overrides(draw: st.DrawFn, name: str) -> list[str]:
    """``--set`` arguments, mostly for inputs the example has, sometimes for ones it has not."""
    nodes = EXAMPLES[name]["nodes"]
    real = [(node_id, spec.name) for node_id, e in nodes.items() for spec in REGISTRY.get(e["type"]).inputs]
    bogus = st.tuples(st.sampled_from(["nope", "\udcff", "a.b", ""]), st.sampled_from(["x", "\udcff", ""]))
    targets = st.lists(st.sampled_from(real) | bogus, max_size=3)
    return [f"{node_id}.{input_name}={draw(override_values)}" for node_id, input_name in draw(targets)]


@FUZZ
@given(st.data())
def test_run_answers_any_override_and_seed(tmp_path, capsys, data):
    name = data.draw(st.sampled_from(["numbers.json", "invert.json", "switch.json", "poster.json"]))
    path = tmp_path / name
    path.write_text(json.dumps(EXAMPLES[name]))
    args = ["run", str(path), "--out", str(tmp_path / "out"), "--input-dir", str(WORKFLOWS)]
    for override in data.draw(overrides(name)):
        args += ["--set", override]
    seed = data.draw(st.sampled_from([None, "0", "-1", str(2**53), str(2**53 - 1), "x", "9" * 5000]))
    if seed is not None:
        args += ["--seed", seed]
    try:
        code, said = answer(capsys, args)
    except SystemExit as exc:  # argparse refusing an argument: its own usage message, exit 2
        code, said = exc.code, capsys.readouterr().err
    check(code, said, args)


NASTY = {
    "surrogate-node-id.json": b'{"version": 1, "nodes": {"\\udcff": {"type": "Nope"}}}',
    "deep.json": b'{"version": 1, "nodes": {}, "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "cfg-1e400.json": json.dumps(
        {
            **EXAMPLES["txt2img.json"],
            "nodes": {**EXAMPLES["txt2img.json"]["nodes"], "s": {"type": "Sampler", "inputs": {"cfg": "@"}}},
        }
    )
    .replace('"@"', "1e400")
    .encode(),
    "bomb.png": png(None, "1", 30000),
    "latin-1.json": '{"version": 1, "nodes": {}, "metadata": {"a": "é"}}'.encode("latin-1"),
}


@pytest.mark.parametrize("name", sorted(NASTY))
def test_nasty_files_in_a_real_process(tmp_path, name):
    path = tmp_path / os.fsdecode(b"\xff-" + name.encode())
    path.write_bytes(NASTY[name])
    for command in ("validate", "run"):
        done = subprocess.run(
            [
                sys.executable,
                str(REPO / "app.py"),
                command,
                str(path),
                *(["--out", str(tmp_path)] * (command == "run")),
            ],
            cwd=REPO,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=120,
        )
        said = (done.stdout + done.stderr).decode("utf-8", "replace")
        assert done.returncode == 2, (command, said)
        assert "Traceback" not in said and "\\xff" in said, (command, said)
