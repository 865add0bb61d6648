"""The workflow file: schema, migrations of the file and of node versions, node registration."""

from __future__ import annotations

import json
import struct
import time
import zlib
from typing import Any

import pytest

from graph.executor import Executor
from graph.validate import validate
from graph.workflow import (
    FORMAT_VERSION,
    MAX_PNG_TEXT,
    MIGRATIONS,
    PNG_SEED_KEY,
    PNG_WORKFLOW_KEY,
    Migration,
    UnreadableFile,
    VersionError,
    WorkflowSource,
    json_schema,
    migrate,
    parse_json,
    read_source,
)
from nodes import types as T
from nodes.base import Context, Input, Node, NodeDefinitionError, Output
from nodes.registry import Registry, default_registry
from tests.helpers import link, node, valid, workflow


def test_schema_describes_the_format():
    schema = json_schema()
    assert schema["properties"]["version"]["const"] == FORMAT_VERSION
    assert "nodes" in schema["required"]
    entry = schema["$defs"]["NodeEntry"]
    assert set(entry["properties"]) >= {"type", "version", "inputs", "title", "position", "size"}
    assert "Link" in schema["$defs"]


def test_version_0_file_is_migrated(registry):
    old = {
        "version": 0,
        "nodes": [
            {"id": "a", "type": "Int", "inputs": {"value": 4}},
            {"id": "show", "type": "ShowValue", "inputs": {"value": ["a", "value"]}},
        ],
    }
    result = validate(old, registry)
    assert result.ok, [str(i) for i in result.issues]
    assert result.workflow.nodes["show"].inputs["value"].node == "a"
    assert Executor(registry).run(result.workflow).outputs["show"]["text"] == "4"


def test_migrations_apply_in_order():
    seen = []

    def step(n):
        def apply(data):
            seen.append(n)
            return {**data, f"step{n}": True}

        return apply

    chain = (Migration(1, "b", step(1)), Migration(-1, "a", step(-1)), Migration(0, "c", step(0)))
    data = migrate({"version": -1}, chain)
    assert seen == [-1, 0, 1][: FORMAT_VERSION + 1] and data["version"] == FORMAT_VERSION


def test_migration_failure_is_a_version_error():
    with pytest.raises(VersionError, match="could not migrate"):
        migrate({"version": 0, "nodes": "not a list"}, MIGRATIONS)


class Resize(Node):
    """Version 3 of a node: v1 had 'size', v2 split it into width/height, v3 added 'method'."""

    version = 3
    category = "test"
    description = "A node that changed twice."
    inputs = (
        Input("width", T.INT, default=64, min=1),
        Input("height", T.INT, default=64, min=1),
        Input("method", T.STRING, default="nearest", choices=("nearest", "bilinear")),
    )
    outputs = (Output("text", T.STRING),)
    output_node = True
    input_migrations = {1: lambda inputs: {"width": inputs["size"], "height": inputs["size"]}}

    def run(self, ctx: Context, width: int, height: int, method: str) -> dict[str, Any]:
        return {"text": f"{width}x{height} {method}"}


def test_old_node_versions_still_load_and_run():
    registry = Registry()
    registry.add(Resize)
    data = workflow(r=node("Resize", size=32))
    data["nodes"]["r"]["version"] = 1
    result = validate(data, registry)
    assert result.ok, [str(i) for i in result.issues]
    assert result.workflow.nodes["r"].version == 3
    assert Executor(registry).run(result.workflow).outputs["r"]["text"] == "32x32 nearest"
    data["nodes"]["r"] = {"type": "Resize", "version": 2, "inputs": {"width": 5, "height": 6}}
    assert Executor(registry).run(validate(data, registry).workflow).outputs["r"]["text"] == "5x6 nearest"


def test_registry_catches_declaration_mistakes():
    class NoDescription(Node):
        outputs = (Output("x", T.INT),)

    class BadDefault(Node):
        description = "x"
        inputs = (Input("n", T.INT, default=0, min=1),)

    class TwiceNamed(Node):
        description = "x"
        inputs = (Input("a", T.INT), Input("a", T.INT))

    class ConstantImage(Node):
        description = "x"
        inputs = (Input("image", T.IMAGE, accepts="constant"),)

    for cls in (NoDescription, BadDefault, TwiceNamed, ConstantImage):
        with pytest.raises(NodeDefinitionError):
            Registry().add(cls)


def test_broken_pack_is_recorded_not_fatal():
    registry = default_registry(("nodes.primitives", "nodes.does_not_exist"))
    assert "Int" in registry
    assert [p.pack for p in registry.problems] == ["nodes.does_not_exist"]


def test_every_builtin_node_describes_itself():
    registry = default_registry()
    assert not registry.problems
    for described in registry.describe():
        assert described["description"] and described["category"]
        for spec in described["inputs"]:
            assert spec["type"] and spec["accepts"] in ("both", "link", "constant")


def test_dynamic_choices_are_read_each_time(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()

    class Pick(Node):
        description = "Pick a file."
        output_node = True
        inputs = (Input("name", T.STRING, choices=lambda services: sorted(p.name for p in folder.iterdir())),)
        outputs = (Output("text", T.STRING),)

        def run(self, ctx: Context, name: str) -> dict[str, Any]:
            return {"text": name}

    registry = Registry()
    registry.add(Pick)
    data = workflow(p=node("Pick", name="a.safetensors"))
    assert [i.code for i in validate(data, registry).issues] == ["bad_value"]
    (folder / "a.safetensors").write_bytes(b"")
    assert validate(data, registry).ok
    assert registry.describe()[0]["inputs"][0]["choices"] == ["a.safetensors"]


def test_link_and_constant_sockets_are_compatible_only_by_type():
    assert T.compatible(T.IMAGE, T.IMAGE)
    assert not T.compatible(T.IMAGE, T.MASK)
    assert T.compatible(T.ANY, T.MASK) and T.compatible(T.INT, T.ANY)


def test_workflow_round_trips_through_json(registry):
    data = workflow(a=node("Int", value=2), show=node("ShowValue", value=link("a", "value")))
    wf = validate(data, registry).workflow
    again = validate(wf.to_json(), registry).workflow
    assert again == wf


# --- the strict JSON reader ----------------------------------------------------------------


def _nested(depth: int) -> str:
    """An object nested ``depth`` levels deep in total (the top level counts as one)."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"a": NaN}', ["NaN", "a"]),
        ('{"a": [1, -Infinity]}', ["-Infinity", "a[1]"]),
        ('{"metadata": {"zoom": 1e400}}', ["1e400", "metadata.zoom", "too large"]),
        ('{"x": -1e400}', ["-1e400", "too large"]),
        ('{"n": ' + "1" + "0" * 400 + "}", ["401 digits", "64-bit", "n"]),
        ('{"n": ' + str(2**64) + "}", ["64-bit", "n"]),
        ('{"n": ' + str(-(2**63) - 1) + "}", ["64-bit"]),
        ('{"n": "\\ud800"}', ["lone surrogate", "\\ud800", "n"]),
        ('{"\\udc80": 1}', ["lone surrogate", "key"]),
        ('{"a": ["ok", "x\\udfffy"]}', ["lone surrogate", "a[1]"]),
        ("[" * 100_000 + "]" * 100_000, ["deeper than 64", "line 1, column 65"]),
        ('{"metadata": ' + _nested(900) + "}", ["deeper than 64", "line 1"]),
        ('{"a": 1,\n "b": ' + "[" * 70 + "]" * 70 + "}", ["deeper than 64", "line 2"]),
    ],
    ids=[
        "nan",
        "-infinity",
        "1e400",
        "-1e400",
        "401-digit-int",
        "2**64",
        "-2**63-1",
        "surrogate-value",
        "surrogate-key",
        "surrogate-in-list",
        "100k-deep",
        "metadata-900-deep",
        "70-deep-line-2",
    ],
)
def test_parse_json_refuses_what_json_cannot_hold_saying_what_and_where(text, words):
    with pytest.raises(ValueError) as err:
        parse_json(text)
    message = str(err.value)
    for word in words:
        assert word in message, (word, message)
    message.encode("utf-8")  # the message itself holds no lone surrogate


def test_parse_json_accepts_the_edges_of_what_it_holds():
    assert parse_json(str(2**63 - 1)) == 2**63 - 1
    assert parse_json(str(2**64 - 1)) == 2**64 - 1  # ComfyUI's seeds go this far (the importer reduces them)
    assert parse_json(str(-(2**63))) == -(2**63)
    assert parse_json("1.7976931348623157e308") == 1.7976931348623157e308
    assert parse_json("1e-400") == 0.0  # underflow to zero is a fine double
    assert parse_json('"\\ud83d\\ude00 caf\\u00e9"') == "\U0001f600 café"  # a surrogate pair is fine
    assert parse_json(_nested(64)) is not None
    with pytest.raises(ValueError, match="deeper than 64"):
        parse_json(_nested(65))
    assert parse_json('["[[[[", "{{{{", "\\"[["]' + " " * 10) == ["[[[[", "{{{{", '"[[']
    brackets_in_text = '{"t": "' + "[" * 200 + '"}'
    assert parse_json(brackets_in_text) == {"t": "[" * 200}


def test_parse_json_keeps_syntax_errors_as_decode_errors():
    with pytest.raises(json.JSONDecodeError):
        parse_json('{"a": }')
    with pytest.raises(json.JSONDecodeError):
        parse_json('"unterminated \\')


def test_parse_json_deep_nesting_is_quick_and_not_a_recursion_error():
    start = time.perf_counter()
    for text in ("[" * 1_000_000, "[]" * 1_000_000, '"' + '\\"' * 100_000):
        with pytest.raises(ValueError):
            parse_json(text)
    assert time.perf_counter() - start < 5


# --- reading files ---------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, text: dict[str, str] | None = None, *, idat: bytes = b"") -> bytes:
    """A PNG whose header claims ``width`` x ``height`` without holding that many pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    for key, value in (text or {}).items():
        chunks.append(_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")))
    chunks.append(_chunk(b"IDAT", idat or zlib.compress(b"\0" * 64)))
    chunks.append(_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


SMALL_WORKFLOW = '{"version": 1, "nodes": {}}'


def test_non_utf8_workflow_file_is_unreadable(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"version": 1, "nodes": {}, "metadata": {"a": "café"}}'.encode("latin-1"))
    with pytest.raises(UnreadableFile, match="neither UTF-8 JSON nor a PNG"):
        read_source(path)


@pytest.mark.parametrize(
    ("seed_text", "expected"),
    [
        (None, None),
        ("", None),
        ("abc", None),
        ("-5", None),
        ("1.5", None),
        ("\u00b2", None),  # a superscript two: isdigit() but not a number int() reads
        ("9" * 5000, None),  # longer than int() reads, and beyond the largest seed anyway
        (str(2**53), None),
        (str(2**53 - 1), 2**53 - 1),
        ("42", 42),
    ],
    ids=[
        "none",
        "empty",
        "letters",
        "negative",
        "decimal",
        "superscript",
        "5000-digits",
        "2**53",
        "max",
        "42",
    ],
)
def test_png_seed_is_read_when_it_is_a_valid_seed_and_none_otherwise(tmp_path, seed_text, expected):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_WORKFLOW_KEY, SMALL_WORKFLOW)
    if seed_text is not None:
        info.add_text(PNG_SEED_KEY, seed_text)
    path = tmp_path / "saved.png"
    Image.new("RGB", (2, 2)).save(path, pnginfo=info)
    source = read_source(path)
    assert source.text == SMALL_WORKFLOW and source.run_seed == expected


def test_png_text_in_compressed_and_international_chunks(tmp_path):
    from PIL import Image, PngImagePlugin

    text = '{"version": 1, "nodes": {}, "metadata": {"prompt": "猫 café"}}'
    for how in ("itxt", "itxt-zip", "ztxt"):
        info = PngImagePlugin.PngInfo()
        if how == "ztxt":
            info.add_text(PNG_WORKFLOW_KEY, text.replace("猫 ", ""), zip=True)
        else:
            info.add_itxt(PNG_WORKFLOW_KEY, text, zip=how == "itxt-zip")
        info.add_text(PNG_SEED_KEY, "7")
        path = tmp_path / f"{how}.png"
        Image.new("RGB", (2, 2)).save(path, pnginfo=info)
        source = read_source(path)
        assert parse_json(source.text)["metadata"]["prompt"].endswith("café") and source.run_seed == 7


def test_png_decompression_bomb_is_read_without_decoding_pixels(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(30000, 30000))
    with pytest.raises(UnreadableFile, match="holds no workflow"):
        read_source(bomb)
    carrying = tmp_path / "bomb-with-workflow.png"
    carrying.write_bytes(png_bytes(30000, 30000, {PNG_WORKFLOW_KEY: SMALL_WORKFLOW, PNG_SEED_KEY: "3"}))
    assert read_source(carrying) == WorkflowSource(SMALL_WORKFLOW, 3)


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[:20],  # cut inside the header chunk
        lambda raw: raw[:8],  # the signature alone
        lambda raw: raw[:33] + b"\xff\xff\xff\xf0tEXt",  # a chunk longer than the file
        lambda raw: raw.replace(b"run_seed", b"run_seee"),  # a text chunk whose checksum fails
    ],
)
def test_damaged_png_is_unreadable_not_a_crash(tmp_path, damage):
    raw = png_bytes(4, 4, {PNG_SEED_KEY: "1", PNG_WORKFLOW_KEY: SMALL_WORKFLOW})
    path = tmp_path / "damaged.png"
    path.write_bytes(damage(raw))
    try:
        source = read_source(path)
    except UnreadableFile as exc:
        assert str(path) in str(exc)
    else:
        assert source.text == SMALL_WORKFLOW


def test_a_compressed_text_chunk_cannot_inflate_without_bound(tmp_path):
    huge = zlib.compress(b" " * (MAX_PNG_TEXT + 1024), 9)
    raw = png_bytes(4, 4)
    ztxt = _chunk(b"zTXt", PNG_WORKFLOW_KEY.encode() + b"\0\0" + huge)
    path = tmp_path / "ztxt-bomb.png"
    path.write_bytes(raw[:33] + ztxt + raw[33:])
    with pytest.raises(UnreadableFile, match="too large"):
        read_source(path)


# --- node versions ---------------------------------------------------------------------------


class Renamed(Node):
    """Version 2 renamed 'n' to 'count'; the migration fails on inputs it cannot read."""

    version = 2
    category = "test"
    description = "A node whose old inputs may not migrate."
    inputs = (Input("count", T.INT, default=1),)
    outputs = (Output("text", T.STRING),)
    output_node = True
    input_migrations = {1: lambda inputs: {"count": inputs["n"] + 1}}

    def run(self, ctx: Context, count: int) -> dict[str, Any]:
        return {"text": str(count)}


def test_a_failing_input_migration_is_a_node_version_issue():
    registry = Registry()
    registry.add(Renamed)
    data = workflow(r={"type": "Renamed", "version": 1, "inputs": {"m": 3}})
    result = validate(data, registry)
    (issue,) = result.issues
    assert (issue.code, issue.node_id, issue.node_type) == ("node_version", "r", "Renamed")
    assert "could not upgrade from version 1" in issue.message
    assert not result.ok and result.workflow is None
    data["nodes"]["r"]["inputs"] = {"n": 3}
    assert Executor(registry).run(valid(data, registry)).outputs["r"]["text"] == "4"


def test_the_largest_seed_is_the_same_everywhere():
    from graph.executor import MAX_SEED as EXECUTOR_MAX_SEED
    from graph.workflow import MAX_SEED
    from nodes.support import SEED_MAX

    assert MAX_SEED == EXECUTOR_MAX_SEED == SEED_MAX == 2**53 - 1
