"""More of the workflow file and its validation: what mutation testing found unchecked.

PNG text chunks read defensively, the file's version, values JSON cannot hold named by
node, and the exact issues (and hints) a person sees for missing or null inputs.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

import graph.validate as validate_module
from graph.validate import validate
from graph.workflow import (
    PNG_SEED_KEY,
    PNG_WORKFLOW_KEY,
    NodeEntry,
    UnreadableFile,
    VersionError,
    Workflow,
    migrate,
    read_source,
)
from nodes import types as T
from nodes.base import Input, Node, Output

SIGNATURE = b"\x89PNG\r\n\x1a\n"
FLOW = {"version": 1, "nodes": {"a": {"type": "Int", "inputs": {"value": 3}}}}


def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def text_chunk(key: str, text: str) -> bytes:
    return chunk(b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1"))


HEADER = SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
END = chunk(b"IEND", b"")


def png(tmp_path: Path, *chunks: bytes, end: bytes = END) -> Path:
    path = tmp_path / "saved.png"
    path.write_bytes(HEADER + b"".join(chunks) + end)
    return path


def flow_text(value: int) -> str:
    return json.dumps({"version": 1, "nodes": {"a": {"type": "Int", "inputs": {"value": value}}}})


# -- the workflow in a PNG ----------------------------------------------------------------------


def test_the_first_workflow_chunk_wins(tmp_path):
    path = png(
        tmp_path, text_chunk(PNG_WORKFLOW_KEY, flow_text(1)), text_chunk(PNG_WORKFLOW_KEY, flow_text(2))
    )
    assert json.loads(read_source(path).text)["nodes"]["a"]["inputs"]["value"] == 1


def test_only_text_chunks_are_read_as_text(tmp_path):
    """A private chunk whose bytes happen to start with "workflow\\0" is not the workflow."""
    impostor = chunk(b"prVt", PNG_WORKFLOW_KEY.encode() + b"\0" + flow_text(666).encode())
    path = png(tmp_path, impostor, text_chunk(PNG_WORKFLOW_KEY, flow_text(7)))
    assert json.loads(read_source(path).text)["nodes"]["a"]["inputs"]["value"] == 7


def test_other_text_chunks_are_not_checked(tmp_path):
    """A comment with a wrong checksum does not matter: only the workflow and seed are read."""
    comment = chunk(b"tEXt", b"Comment\0hello", crc=12345)
    path = png(tmp_path, comment, text_chunk(PNG_WORKFLOW_KEY, flow_text(4)), text_chunk(PNG_SEED_KEY, "99"))
    source = read_source(path)
    assert json.loads(source.text)["nodes"]["a"]["inputs"]["value"] == 4 and source.run_seed == 99


def test_a_damaged_compressed_workflow_is_said_to_be_damaged(tmp_path):
    broken = chunk(b"zTXt", PNG_WORKFLOW_KEY.encode() + b"\0\0" + b"not zlib data at all")
    with pytest.raises(UnreadableFile, match="damaged 'workflow' text"):
        read_source(png(tmp_path, broken))


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 6, 7, 8, 11])
def test_a_file_cut_short_keeps_what_came_before_the_cut(tmp_path, cut):
    """However many bytes of a following chunk are left, the whole chunks before it are read."""
    whole = text_chunk(PNG_WORKFLOW_KEY, flow_text(5))
    following = text_chunk("Comment", "more text after the workflow")
    path = png(tmp_path, whole, following[:cut], end=b"")
    assert json.loads(read_source(path).text)["nodes"]["a"]["inputs"]["value"] == 5


def test_a_workflow_chunk_missing_part_of_its_checksum_is_not_read(tmp_path):
    whole = text_chunk(PNG_WORKFLOW_KEY, flow_text(5))
    path = png(tmp_path, whole[:-1], end=b"")  # three of the four checksum bytes
    with pytest.raises(UnreadableFile, match="holds no workflow"):
        read_source(path)


# -- the file's version and format --------------------------------------------------------------


def test_a_file_without_a_version_is_told_to_add_one():
    with pytest.raises(VersionError, match="has no 'version'"):
        migrate({"nodes": {}})


def test_saved_text_keeps_every_part_of_the_format():
    workflow = Workflow(version=1, nodes={"a": NodeEntry(type="Int")})
    saved = json.loads(workflow.to_json())
    assert saved == {
        "version": 1,
        "nodes": {"a": {"type": "Int", "inputs": {}}},
        "groups": [],
        "notes": [],
        "metadata": {},
    }


# -- values JSON cannot hold, named by node -------------------------------------------------------


def test_a_node_that_is_itself_out_of_reach_is_named(registry):
    issues = validate('{"version": 1, "nodes": {"a": NaN}}', registry).issues
    assert [(i.code, i.node_id, i.node_type, i.input) for i in issues] == [("json", "a", None, None)]


@pytest.mark.parametrize("node_type", ["5", "null", "true", '["Int"]'])
def test_a_type_that_is_not_text_is_not_shown_as_the_node_type(registry, node_type):
    text = '{"version": 1, "nodes": {"a": {"type": TYPE, "inputs": {"x": NaN}}}}'.replace("TYPE", node_type)
    (issue,) = validate(text, registry).issues
    assert (issue.code, issue.node_id, issue.node_type, issue.input) == ("bad_value", "a", None, "x")


@pytest.mark.parametrize("error", [RecursionError("too deep"), ValueError("odd")])
def test_any_other_parser_failure_is_an_issue_not_a_crash(registry, monkeypatch, error):
    def load(text: str) -> None:
        raise error

    monkeypatch.setattr(validate_module, "load", load)
    result = validate('{"version": 1, "nodes": {}}', registry)
    assert [(i.code, i.message) for i in result.issues] == [("json", f"not valid JSON: {error}")]
    assert result.workflow is None


# -- the issues a person reads -----------------------------------------------------------------


def test_a_node_without_a_type_gets_one_issue(registry):
    data = {"version": 1, "nodes": {"a": {"inputs": {}}, "show": {"type": "PreviewImage", "inputs": {}}}}
    issues = [i for i in validate(data, registry).issues if i.node_id == "a"]
    assert [(i.code, i.message, i.hint) for i in issues] == [
        ("structure", "has no 'type'", "Say which node it is")
    ]


class NeedsANumber(Node):
    description = "Has a required INT input (testing)."
    inputs = (Input("n", T.INT),)
    outputs = (Output("value", T.INT),)
    output_node = True


def test_a_required_input_given_null(registry):
    data = {
        "version": 1,
        "nodes": {
            "a": {"type": "Int", "inputs": {"value": 1}},
            "show": {"type": "ShowValue", "inputs": {"value": None}},
        },
    }
    (issue,) = validate(data, registry).issues
    assert (issue.code, issue.node_id, issue.input) == ("missing_input", "show", "value")
    assert issue.message == "is required but null" and issue.hint == f"Connect a {T.ANY} output to it"


def test_how_to_give_a_missing_input_depends_on_what_it_accepts(registry):
    registry.add(NeedsANumber)
    (link_only,) = validate({"version": 1, "nodes": {"p": {"type": "PreviewImage"}}}, registry).issues
    assert (link_only.code, link_only.input, link_only.message) == (
        "missing_input",
        "images",
        "is required but not given",
    )
    assert link_only.hint == "Connect a IMAGE output to it"
    (either,) = validate({"version": 1, "nodes": {"n": {"type": "NeedsANumber"}}}, registry).issues
    assert (either.code, either.input) == ("missing_input", "n")
    assert either.hint == "Give it a INT value or connect a INT output"
    (null,) = validate(
        {"version": 1, "nodes": {"n": {"type": "NeedsANumber", "inputs": {"n": None}}}}, registry
    ).issues
    assert null.message == "is required but null" and null.hint == either.hint
