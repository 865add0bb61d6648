"""Validation reports every problem at once, each naming node id, node type, input and reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graph.validate import validate
from tests.helpers import link, node, workflow

REPO = Path(__file__).resolve().parent.parent


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
    ("text", "where"),
    [
        ("NaN", ("json", None, None)),
        (
            '{"version": 1, "nodes": {"a": {"type": "Float", "inputs": {"value": NaN}}}}',
            ("bad_value", "a", "value"),
        ),
    ],
)
def test_nan_is_not_json(registry, text, where):
    (issue,) = validate(text, registry).issues
    assert (issue.code, issue.node_id, issue.input) == where
    assert "NaN is not a number JSON can hold" in issue.message


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


# --- the header: a structure problem is always an issue, never a silent "no workflow" --------


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("metadata", [1, 2], "'metadata' must be an object, got a list"),
        ("metadata", "text", "'metadata' must be an object, got text"),
        ("groups", {"title": "g"}, "'groups' must be a list, got an object"),
        ("notes", "hello", "'notes' must be a list, got text"),
    ],
)
def test_malformed_header_is_an_issue(registry, key, value, words):
    data = workflow(a=node("Int"), show=node("ShowValue", value=link("a", "value")))
    data[key] = value
    result = validate(data, registry)
    assert [(i.code, i.message) for i in result.issues] == [("structure", words)]
    assert not result.ok and result.workflow is None


def test_ok_means_no_issues_and_a_workflow():
    from graph.issues import Issue
    from graph.validate import Validated
    from graph.workflow import Workflow

    assert not Validated().ok  # no issues but no workflow either: not ok
    assert not Validated([Issue("x", "y")], Workflow(version=1, nodes={})).ok
    assert Validated([], Workflow(version=1, nodes={})).ok


@pytest.mark.parametrize(
    ("where", "code"),
    [("node", "structure"), ("link", "bad_link"), ("group", "structure"), ("note", "structure")],
)
def test_unknown_keys_are_issues_everywhere(registry, where, code):
    data = workflow(a=node("Int"), show=node("ShowValue", value=link("a", "value")))
    data["groups"] = [{"title": "g", "bounds": [0, 0, 1, 1]}]
    data["notes"] = [{"text": "n"}]
    assert validate(data, registry).ok
    if where == "node":
        data["nodes"]["a"]["colour"] = "red"
    elif where == "link":
        data["nodes"]["show"]["inputs"]["value"]["slot"] = 0
    elif where == "group":
        data["groups"][0]["nodes"] = ["a"]
    else:
        data["notes"][0]["author"] = "me"
    result = validate(data, registry)
    assert [i.code for i in result.issues] == [code]
    assert not result.ok and result.workflow is None
    if where in ("node", "link"):
        assert result.issues[0].node_id == ("a" if where == "node" else "show")


# --- numbers a workflow can hold ---------------------------------------------------------


def show_of(type_: str, value: object) -> dict:
    return workflow(a=node(type_, value=value), show=node("ShowValue", value=link("a", "value")))


@pytest.mark.parametrize(
    ("value", "ok"),
    [(2**63 - 1, True), (-(2**63), True), (2**63, False), (-(2**63) - 1, False), (10**4000, False)],
    ids=["max", "min", "max+1", "min-1", "10**4000"],
)
def test_int_is_a_64_bit_signed_integer(registry, value, ok):
    for source in (show_of("Int", value), json.dumps(show_of("Int", value))):
        result = validate(source, registry)
        assert result.ok is ok
        if not ok:
            (issue,) = result.issues
            assert (issue.node_id, issue.input) == ("a", "value")
            assert "64-bit" in issue.message and len(issue.message) < 300


def test_seed_value_stops_at_2_53_minus_1(registry):
    def seed(value: int) -> dict:
        return workflow(s=node("Seed", value=value), show=node("ShowValue", value=link("s", "seed")))

    assert validate(seed(2**53 - 1), registry).ok
    (issue,) = validate(seed(2**53), registry).issues
    assert (issue.code, issue.node_id, issue.input) == ("bad_value", "s", "value")
    assert "maximum 9007199254740991" in issue.message


def sampler_with_cfg(cfg_json: str) -> str:
    """txt2img with its sampler's cfg written as the given JSON text."""
    text = (REPO / "workflows" / "txt2img.json").read_text()
    data = json.loads(text)
    data["nodes"]["s"]["inputs"]["cfg"] = "@CFG@"
    return json.dumps(data).replace('"@CFG@"', cfg_json)


@pytest.mark.parametrize(
    "cfg",
    ["1e400", "-1e400", "1" + "0" * 400, '{"x": 1}', '"1e400"', "NaN", "Infinity", "[1]", "true"],
    ids=["1e400", "-1e400", "401-digits", "object", "text", "nan", "infinity", "list", "bool"],
)
def test_cfg_out_of_reach_is_an_issue_naming_node_and_input(registry, cfg):
    result = validate(sampler_with_cfg(cfg), registry)
    assert not result.ok
    (issue,) = result.issues
    assert (issue.node_id, issue.node_type, issue.input) == ("s", "Sampler", "cfg"), str(issue)
    # the API returns issues through JSONResponse, which refuses NaN and lone surrogates
    json.dumps([i.to_dict() for i in result.issues], allow_nan=False, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize(
    "cfg",
    [10**400, float("inf"), float("nan"), -(10**309)],
    ids=["10**400", "inf", "nan", "-10**309"],
)
def test_cfg_out_of_reach_from_python_callers(registry, cfg):
    data = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    data["nodes"]["s"]["inputs"]["cfg"] = cfg
    result = validate(data, registry)
    (issue,) = result.issues
    assert (issue.node_id, issue.input) == ("s", "cfg"), str(issue)
    json.dumps([i.to_dict() for i in result.issues], allow_nan=False, ensure_ascii=False).encode("utf-8")


# --- parsed JSON gets the same checks as text ------------------------------------------------


def test_nan_and_infinity_in_layout_and_metadata_are_issues(registry):
    data = workflow(a=node("Int"), show=node("ShowValue", value=link("a", "value")))
    data["nodes"]["a"]["position"] = [float("nan"), 1.0]
    data["nodes"]["show"]["size"] = [float("inf"), 1.0]
    data["metadata"] = {"view": {"zoom": float("-inf")}}
    data["groups"] = [{"title": "g", "bounds": [0, 0, float("nan"), 1]}]
    result = validate(data, registry)
    assert not result.ok and result.workflow is None
    where = sorted((i.node_id or "", i.message.split(":")[0]) for i in result.issues)
    assert where == [
        ("", "groups[0].bounds[2]"),
        ("", "metadata.view.zoom"),
        ("a", "position[0]"),
        ("show", "size[0]"),
    ]
    json.dumps([i.to_dict() for i in result.issues], allow_nan=False)


def test_lone_surrogates_are_issues_and_issues_stay_encodable(registry):
    data = workflow(a=node("String", value="x\udcffy"), show=node("ShowValue", value=link("a", "value")))
    data["nodes"]["\ud800"] = node("Int")
    data["metadata"] = {"\udc80key": 1}
    data["nodes"]["show"]["title"] = "\ud83d"
    result = validate(data, registry)
    assert not result.ok
    by_input = {(i.node_id, i.input) for i in result.issues}
    assert ("a", "value") in by_input
    text = json.dumps([i.to_dict() for i in result.issues], allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert "\\udcff" in text and "lone surrogate" in text


def test_deep_metadata_is_an_issue_not_a_crash(registry):
    deep: dict = {}
    for _ in range(100_000):
        deep = {"a": deep}
    data = workflow(a=node("Int"), show=node("ShowValue", value=link("a", "value")))
    data["metadata"] = deep
    (issue,) = validate(data, registry).issues
    assert issue.code == "json" and "deeper than 64" in issue.message and "metadata" in issue.message
    data["metadata"] = {"a": [[[["fine"]]]]}
    assert validate(data, registry).ok


def test_values_json_does_not_have_are_issues(registry):
    data = workflow(a=node("Int"), show=node("ShowValue", value=link("a", "value")))
    data["metadata"] = {"when": object(), 3: "numbered key", "tuple": (1, 2)}
    messages = sorted(i.message for i in validate(data, registry).issues)
    assert messages == [
        "metadata.when: object is not a JSON value",
        "metadata: the key 3 is a number: keys must be text",
    ]


def test_issues_are_capped_for_huge_inputs(registry):
    data = workflow(a=node("Int"), show=node("ShowValue", value=link("a", "value")))
    data["metadata"] = {"many": [float("nan")] * 100_000}
    issues = validate(data, registry).issues
    assert 1 <= len(issues) <= 25 and "more" in issues[-1].message
