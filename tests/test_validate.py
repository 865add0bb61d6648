"""Validation reports every problem at once, each naming node id, node type, input and reason."""

from __future__ import annotations

import json

import pytest

from graph.validate import validate
from tests.helpers import link, node, workflow


def codes(result) -> list[tuple]:
    return sorted((i.code, i.node_id, i.input) for i in result.issues)


def test_valid_workflow_has_no_issues(registry):
    data = workflow(a=node("Int", value=3), show=node("ShowValue", value=link("a", "value")))
    result = validate(data, registry)
    assert result.ok and result.workflow is not None
    assert result.workflow.nodes["a"].version == registry.get("Int").version


def test_unreadable_json_is_reported_with_position(registry):
    result = validate('{"version": 1, "nodes": {', registry)
    assert [i.code for i in result.issues] == ["json"]
    assert "line 1" in result.issues[0].message


@pytest.mark.parametrize(
    "text", ["NaN", '{"version": 1, "nodes": {"a": {"type": "Float", "inputs": {"value": NaN}}}}']
)
def test_nan_is_not_json(registry, text):
    assert [i.code for i in validate(text, registry).issues] == ["json"]


def test_not_utf8(registry):
    assert [i.code for i in validate(b"\xff\xfe\x00garbage", registry).issues] == ["json"]


@pytest.mark.parametrize("data", [[], 3, None, "[]", '"text"', "3", "null"])
def test_top_level_must_be_an_object(registry, data):
    assert [i.code for i in validate(data, registry).issues] == ["structure"]


def test_newer_version_is_refused_with_a_message_that_says_so(registry):
    result = validate({"version": 99, "nodes": {}}, registry)
    assert [i.code for i in result.issues] == ["version"]
    assert "newer" in result.issues[0].message and "update" in result.issues[0].message


@pytest.mark.parametrize("version", [None, "1", 1.5, True])
def test_missing_or_malformed_version(registry, version):
    data = {"nodes": {}} if version is None else {"version": version, "nodes": {}}
    assert [i.code for i in validate(data, registry).issues] == ["version"]


def test_every_problem_at_once(registry):
    data = workflow(
        ghost=node("NoSuchNode"),
        math=node("IntMath", a="three", b=link("missing", "value"), c=1),
        resize=node("ImageResize", image=link("num", "value"), width=0, height=64, method="fuzzy"),
        num=node("Int", value=1.5),
        save=node("SaveImage"),
        text=node("String", value=link("num", "value")),
    )
    result = validate(data, registry)
    assert codes(result) == sorted(
        [
            ("unknown_node_type", "ghost", None),
            ("unknown_input", "math", "c"),
            ("bad_value", "math", "a"),
            ("link_missing_node", "math", "b"),
            ("type_mismatch", "resize", "image"),
            ("bad_value", "resize", "width"),
            ("bad_value", "resize", "method"),
            ("bad_value", "num", "value"),
            ("missing_input", "save", "images"),
            ("link_not_allowed", "text", "value"),
        ]
    )
    by_key = {(i.node_id, i.input): i for i in result.issues}
    assert by_key[("resize", "width")].node_type == "ImageResize"
    assert "minimum" in by_key[("resize", "width")].message
    assert (
        "'fuzzy'" in by_key[("resize", "method")].message
        and "lanczos" in by_key[("resize", "method")].message
    )
    assert "INT" in by_key[("resize", "image")].message and "IMAGE" in by_key[("resize", "image")].message
    text = str(by_key[("math", "c")])
    assert text.startswith("node 'math' (IntMath), input 'c':")
    assert result.workflow is None


def test_link_to_missing_output(registry):
    data = workflow(a=node("Int"), show=node("ShowValue", value=link("a", "nope")))
    (issue,) = validate(data, registry).issues
    assert issue.code == "link_missing_output" and "value" in issue.hint


def test_constant_where_a_link_is_needed(registry):
    data = workflow(save=node("SaveImage", images="picture.png"))
    (issue,) = validate(data, registry).issues
    assert (issue.code, issue.input) == ("constant_not_allowed", "images")


def test_malformed_link(registry):
    data = workflow(show=node("ShowValue", value={"node": "a"}))
    assert codes(validate(data, registry)) == [("bad_link", "show", "value")]


def test_cycles_are_reported(registry):
    data = workflow(
        a=node("IntMath", a=link("b", "value")),
        b=node("IntMath", a=link("a", "value")),
        c=node("IntMath", a=link("c", "value")),
        show=node("ShowValue", value=link("a", "value")),
    )
    result = validate(data, registry)
    assert sorted((i.code, i.node_id) for i in result.issues) == [("cycle", "a"), ("cycle", "c")]
    assert "'a' -> 'b'" in result.issues[0].message or "'a' -> 'b'" in result.issues[1].message


def test_no_output_node(registry):
    result = validate(workflow(a=node("Int")), registry)
    assert [i.code for i in result.issues] == ["no_outputs"]
    assert validate(workflow(a=node("Int")), registry, require_outputs=False).ok


def test_unknown_top_level_key_and_bad_groups(registry):
    data = workflow(a=node("Int"), show=node("ShowValue", value=link("a", "value")))
    data["extra"] = 1
    data["groups"] = [{"title": "g"}]
    result = validate(data, registry)
    assert sorted(i.code for i in result.issues) == ["structure", "structure"]


def test_layout_is_kept(registry):
    data = workflow(a=node("Int"), show=node("ShowValue", value=link("a", "value")))
    data["nodes"]["a"].update(title="Count", position=[10, 20], size=[200, 80])
    data["groups"] = [{"title": "numbers", "bounds": [0, 0, 300, 200]}]
    data["notes"] = [{"text": "hello", "position": [5, 5]}]
    data["metadata"] = {"author": "me"}
    wf = validate(data, registry).workflow
    back = json.loads(wf.to_json())
    assert back["nodes"]["a"]["title"] == "Count" and back["nodes"]["a"]["position"] == [10.0, 20.0]
    assert back["groups"][0]["title"] == "numbers" and back["notes"][0]["text"] == "hello"
    assert back["metadata"] == {"author": "me"}
    assert validate(back, registry).ok


def test_saved_node_version_newer_than_ours(registry):
    data = workflow(a=node("Int"), show=node("ShowValue", value=link("a", "value")))
    data["nodes"]["a"]["version"] = 7
    (issue,) = validate(data, registry).issues
    assert (issue.code, issue.node_id) == ("node_version", "a")
