"""Bypassed and muted nodes: the workflow file, validation, the run, the cache, events, the importer.

A bypassed node does not run and hands its first given input of each output's type on;
a muted node does not run, nor does what needs it (graph/modes.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from comfy_import import convert, read_prompt
from graph.events import Event, RunStarted
from graph.executor import Executor
from graph.validate import validate
from graph.workflow import Workflow, json_schema
from nodes.base import RunSettings
from nodes.registry import Registry
from tests.helpers import link, node, valid, workflow

REPO = Path(__file__).resolve().parent.parent


def with_mode(entry: dict[str, Any], mode: str) -> dict[str, Any]:
    return {**entry, "mode": mode}


def codes(data: dict[str, Any], registry: Registry) -> list[tuple[str, str | None, str | None]]:
    """(code, node id, input) of every issue validation finds."""
    return [(i.code, i.node_id, i.input) for i in validate(data, registry).issues]


def run(executor: Executor, data: dict[str, Any], registry: Registry, **kwargs: Any) -> Any:
    return executor.run(valid(data, registry), **kwargs)


def run_started(executor: Executor, data: dict[str, Any], registry: Registry) -> RunStarted:
    events: list[Event] = []
    run(executor, data, registry, listener=events.append)
    (started,) = [e for e in events if isinstance(e, RunStarted)]
    return started


# --- bypass -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A small RGB picture on disk and its pixels."""
    pixels = np.random.default_rng(3).integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("modes") / "in.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


def test_a_bypassed_image_filter_hands_its_input_image_to_save_image(registry, picture, tmp_path):
    path, pixels = picture
    data = workflow(
        load=node("LoadImage", path=str(path)),
        invert=with_mode(node("ImageInvert", image=link("load", "image")), "bypass"),
        save=node("SaveImage", images=link("invert", "image"), filename_prefix="out"),
    )
    result = run(Executor(registry), data, registry, settings=RunSettings(output_dir=tmp_path))
    assert result.status == "done", result.error
    assert result.executed == ["load", "save"]
    (saved,) = result.files
    assert np.array_equal(np.asarray(Image.open(saved).convert("RGB")), pixels)


def test_a_bypassed_node_hands_on_its_first_given_input_of_the_outputs_type(registry, executor):
    # IntMath's INT inputs are a, then b: a is not given here, so b is handed on
    data = workflow(
        seven=node("Int", value=7),
        math=with_mode(node("IntMath", b=link("seven", "value"), operation="multiply"), "bypass"),
        show=node("ShowValue", value=link("math", "value")),
    )
    assert run(executor, data, registry).outputs["show"]["text"] == "7"
    data["nodes"]["math"]["inputs"]["a"] = 5  # a constant typed on the node comes first
    assert run(executor, data, registry).outputs["show"]["text"] == "5"


def test_bypassed_nodes_in_a_row_hand_the_value_all_the_way_on(registry, executor):
    data = workflow(
        start=node("Int", value=4),
        one=with_mode(node("IntMath", a=link("start", "value"), b=100), "bypass"),
        two=with_mode(node("IntMath", a=link("one", "value"), b=100), "bypass"),
        show=node("ShowValue", value=link("two", "value")),
    )
    result = run(executor, data, registry)
    assert result.outputs["show"]["text"] == "4" and result.executed == ["start", "show"]


def test_a_bypassed_output_with_nothing_of_its_type_to_hand_on_is_an_issue(registry):
    data = workflow(
        image=node("EmptyImage", width=8, height=8),
        size=with_mode(node("GetImageSize", image=link("image", "image")), "bypass"),
        show=node("ShowValue", value=link("size", "width")),
    )
    (issue,) = validate(data, registry).issues
    assert (issue.code, issue.node_id, issue.input) == ("bypass_gap", "show", "value")
    assert "output 'width' of node 'size' (GetImageSize)" in issue.message
    assert "no INT input" in issue.message
    assert issue.hint == "Un-bypass node 'size', or mute it"
    data["nodes"]["size"]["mode"] = "mute"  # as the hint says: then show simply does not run
    assert codes(data, registry) == [("no_outputs", None, None)]


def test_a_bypassed_output_nothing_running_uses_is_no_issue(registry):
    data = workflow(
        image=node("EmptyImage", width=8, height=8),
        pad=with_mode(node("ImagePad", image=link("image", "image"), left=8), "bypass"),
        show=node("PreviewImage", images=link("pad", "image")),  # its mask output is unused
    )
    assert codes(data, registry) == []


def test_a_constant_handed_on_is_checked_against_the_input_that_takes_it(registry):
    data = workflow(
        math=with_mode(node("IntMath", a=-5, b=1), "bypass"),
        image=node("EmptyImage", width=link("math", "value"), height=8),
        show=node("PreviewImage", images=link("image", "image")),
    )
    (issue,) = validate(data, registry).issues
    assert (issue.code, issue.node_id, issue.input) == ("bad_value", "image", "width")
    assert "handed on by bypassed node 'math'" in issue.message


# --- mute ---------------------------------------------------------------------------------------


def test_muting_an_output_node_skips_it_and_what_only_it_needs(registry, executor):
    data = workflow(
        a=node("Int", value=2),
        double=node("IntMath", a=link("a", "value"), b=2, operation="multiply"),
        shown=with_mode(node("ShowValue", value=link("double", "value")), "mute"),
        other=node("ShowValue", value=link("a", "value")),
    )
    result = run(executor, data, registry)
    assert result.status == "done"
    assert result.executed == ["a", "other"] and set(result.outputs) == {"other"}


def test_muting_a_node_skips_its_dependents_but_not_the_independent_branch(registry, executor):
    data = workflow(
        blank=with_mode(node("EmptyImage", width=8, height=8), "mute"),
        invert=node("ImageInvert", image=link("blank", "image")),  # needs it: skipped
        grey=with_mode(node("ImageGrayscale", image=link("invert", "image")), "bypass"),
        shown=node("PreviewImage", images=link("grey", "image")),  # needs it through the bypass
        b=node("Int", value=9),
        other=node("ShowValue", value=link("b", "value")),
    )
    result = run(executor, data, registry)
    assert result.executed == ["b", "other"] and result.outputs == {"other": {"text": "9"}}


def test_an_input_that_need_not_be_given_is_not_given_when_it_comes_from_a_muted_node(registry, executor):
    data = workflow(
        five=with_mode(node("Int", value=5), "mute"),
        math=node("IntMath", a=link("five", "value"), b=2),  # a defaults to 0
        show=node("ShowValue", value=link("math", "value")),
    )
    result = run(executor, data, registry)
    assert result.outputs["show"]["text"] == "2" and result.executed == ["math", "show"]


def test_an_optional_input_from_a_muted_node_is_absent(registry, executor):
    """A black destination, a white source, and a mask of zeros (keep the destination) from
    a node that is then muted: without a mask the whole source is pasted."""
    data = workflow(
        black=node("EmptyImage", width=4, height=4),
        white=node("ImageInvert", image=link("black", "image")),
        pad=node("ImagePad", image=link("black", "image")),  # no border: a mask of zeros
        paste=node("ImageComposite", destination=link("black", "image"), source=link("white", "image")),
        show=node("PreviewImage", images=link("paste", "image")),
    )
    data["nodes"]["paste"]["inputs"]["mask"] = link("pad", "mask")
    assert run(executor, data, registry).outputs["show"]["images"].max() == 0.0
    data["nodes"]["pad"]["mode"] = "mute"
    result = run(executor, data, registry)
    assert "pad" not in result.executed and result.outputs["show"]["images"].min() == 1.0


def test_a_node_set_aside_is_not_checked_for_values_but_its_type_must_exist(registry):
    half_edited = node("IntMath", a="not a number", operation="nope")
    data = workflow(
        a=node("Int", value=1),
        muted=with_mode(half_edited, "mute"),
        bypassed=with_mode(half_edited, "bypass"),
        needs_muted=node("ImageInvert", image=link("blank", "image")),
        blank=with_mode(node("EmptyImage", width=-1), "mute"),
        show=node("ShowValue", value=link("a", "value")),
    )
    assert codes(data, registry) == []
    data["nodes"]["muted"] = with_mode(node("NoSuchNode"), "mute")
    data["nodes"]["bypassed"]["inputs"]["colour"] = 3
    assert codes(data, registry) == [
        ("unknown_node_type", "muted", None),
        ("unknown_input", "bypassed", "colour"),
    ]


def test_a_node_set_aside_still_may_not_be_wired_wrongly(registry):
    data = workflow(
        a=node("Int", value=1),
        muted=with_mode(node("ImageInvert", image=link("a", "value")), "mute"),
        show=node("ShowValue", value=link("a", "value")),
    )
    assert codes(data, registry) == [("type_mismatch", "muted", "image")]


def test_bypassed_nodes_in_a_loop_are_reported_as_a_loop(registry):
    data = workflow(
        one=with_mode(node("IntMath", a=link("two", "value")), "bypass"),
        two=with_mode(node("IntMath", a=link("one", "value")), "bypass"),
        show=node("ShowValue", value=link("two", "value")),
    )
    assert codes(data, registry) == [("cycle", "one", None)]


def test_every_output_node_set_aside_is_an_issue(registry):
    data = workflow(
        a=node("Int", value=1),
        shown=node("ShowValue", value=link("a", "value")),
        other=with_mode(node("ShowValue", value=link("a", "value")), "bypass"),
    )
    data["nodes"]["a"]["mode"] = "mute"
    (issue,) = validate(data, registry).issues
    assert issue.code == "no_outputs"
    assert "every output node is bypassed, muted or needs a muted node" in issue.message


def test_an_unknown_mode_is_an_issue_naming_the_node(registry):
    data = workflow(
        a=with_mode(node("Int", value=1), "Bypass"),
        show=node("ShowValue", value=link("a", "value")),
    )
    (issue,) = validate(data, registry).issues
    assert (issue.code, issue.node_id) == ("structure", "a") and "'bypass' or 'mute'" in issue.message


# --- cache and events ---------------------------------------------------------------------------


def test_toggling_bypass_reuses_the_cache_downstream_where_the_value_is_the_same(registry):
    executor = Executor(registry)
    direct = workflow(
        start=node("Int", value=3),
        plus=node("IntMath", a=link("start", "value"), b=1),
        show=node("ShowValue", value=link("plus", "value")),
    )
    first = run(executor, direct, registry)
    assert first.executed == ["start", "plus", "show"]

    bypassed = workflow(
        start=node("Int", value=3),
        times=with_mode(node("IntMath", a=link("start", "value"), b=10, operation="multiply"), "bypass"),
        plus=node("IntMath", a=link("times", "value"), b=1),
        show=node("ShowValue", value=link("plus", "value")),
    )
    second = run(executor, bypassed, registry)
    assert second.executed == [] and second.cached == ["show"]  # the same value reaches plus
    assert second.outputs == first.outputs

    bypassed["nodes"]["times"].pop("mode")
    third = run(executor, bypassed, registry)
    assert third.executed == ["times", "plus", "show"] and third.outputs["show"]["text"] == "31"
    bypassed["nodes"]["times"]["mode"] = "bypass"
    assert run(executor, bypassed, registry).executed == []


def test_run_started_lists_the_nodes_set_aside(registry, executor):
    data = workflow(
        a=node("Int", value=2),
        muted=with_mode(node("Int", value=5), "mute"),
        needs=node("IntMath", a=link("a", "value"), b=link("muted", "value")),  # b: default 0
        math=with_mode(node("IntMath", a=link("a", "value")), "bypass"),
        gone=node("ShowValue", value=link("muted", "value")),
        shown=node("ShowValue", value=link("math", "value")),
        other=node("ShowValue", value=link("needs", "value")),
    )
    started = run_started(executor, data, registry)
    assert started.planned == ["a", "needs", "other", "shown"]
    assert (started.bypassed, started.muted, started.skipped) == (["math"], ["muted"], ["gone"])
    assert started.to_dict()["skipped"] == ["gone"]


def test_explicit_targets_that_are_set_aside_do_not_run(registry, executor):
    data = workflow(
        a=node("Int", value=2),
        shown=node("ShowValue", value=link("a", "value")),
        muted=with_mode(node("ShowValue", value=link("a", "value")), "mute"),
    )
    result = run(executor, data, registry, targets=["muted", "shown"])
    assert result.executed == ["a", "shown"] and set(result.outputs) == {"shown"}


# --- the file -----------------------------------------------------------------------------------

#: A workflow as format 1 has always written it: no node writes a mode when it has none.
PLAIN = {
    "version": 1,
    "nodes": {"a": {"type": "Int", "inputs": {"value": 1}, "title": "One", "position": [1.0, 2.0]}},
}
PLAIN_TEXT = """{
  "version": 1,
  "nodes": {
    "a": {
      "type": "Int",
      "inputs": {
        "value": 1
      },
      "title": "One",
      "position": [
        1.0,
        2.0
      ]
    }
  },
  "groups": [],
  "notes": [],
  "metadata": {}
}"""


def test_a_file_without_modes_is_written_exactly_as_before():
    assert Workflow.model_validate(PLAIN).to_json() == PLAIN_TEXT


@pytest.mark.parametrize("path", sorted((REPO / "workflows").glob("*.json")), ids=lambda p: p.name)
def test_bundled_workflows_write_no_mode(path):
    parsed = Workflow.model_validate_json(path.read_text())
    written = parsed.to_json()
    without_modes = {"nodes": {"__all__": {"mode"}}}
    assert written == parsed.model_dump_json(indent=2, exclude_none=True, exclude=without_modes)
    assert all("mode" not in entry for entry in json.loads(written)["nodes"].values())


def test_modes_round_trip_through_parse_and_write(registry):
    data = workflow(
        a=with_mode(node("Int", value=1), "mute"),
        b=with_mode(node("IntMath", a=link("a", "value")), "bypass"),
        c=node("ShowValue", value=link("b", "value")),
        d=node("ShowValue", value=link("e", "value")),
        e=node("Int", value=2),
    )
    written = valid(data, registry).to_json()
    again = valid(json.loads(written), registry).to_json()
    assert again == written
    nodes = json.loads(written)["nodes"]
    modes = {k: n.get("mode") for k, n in nodes.items()}
    assert modes == {"a": "mute", "b": "bypass", "c": None, "d": None, "e": None}


def test_the_json_schema_describes_the_mode():
    mode = json_schema()["$defs"]["NodeEntry"]["properties"]["mode"]
    assert "bypass" in mode["description"] and "mute" in mode["description"]
    assert {"enum": ["bypass", "mute"], "type": "string"} in mode["anyOf"]


# --- the ComfyUI importer -----------------------------------------------------------------------


def comfy_ui(*nodes: dict[str, Any], links: list[list[Any]]) -> dict[str, Any]:
    return {"version": 0.4, "nodes": list(nodes), "links": links}


def comfy_node(node_id: int, type_: str, mode: int = 0, **parts: Any) -> dict[str, Any]:
    return {"id": node_id, "type": type_, "mode": mode, "pos": [node_id * 100, 0], **parts}


def images_from(link_id: int) -> list[dict[str, Any]]:
    return [{"name": "images", "type": "IMAGE", "link": link_id}]


def image_chain(middle: dict[str, Any]) -> dict[str, Any]:
    """LoadImage 1 -> ``middle`` (id 2) -> SaveImage 3, and PreviewImage 4 (muted) of the load."""
    return comfy_ui(
        comfy_node(
            1,
            "LoadImage",
            outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1, 3]}, {"name": "MASK", "type": "MASK"}],
            widgets_values=["cat.png", "image"],
        ),
        middle,
        comfy_node(3, "SaveImage", inputs=images_from(2), widgets_values=["x"]),
        comfy_node(4, "PreviewImage", 2, inputs=images_from(3)),
        links=[[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 1, 0, 4, 0, "IMAGE"]],
    )


def filter_node(type_: str, mode: int) -> dict[str, Any]:
    return comfy_node(
        2,
        type_,
        mode,
        inputs=[{"name": "image", "type": "IMAGE", "link": 1}],
        outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
    )


def test_imported_comfy_nodes_muted_or_bypassed_keep_their_mode(registry):
    result = convert(read_prompt(image_chain(filter_node("ImageInvert", 4))), "t.json")
    nodes = result.workflow["nodes"]
    assert (nodes["2"]["mode"], nodes["4"]["mode"]) == ("bypass", "mute")
    assert "mode" not in nodes["1"] and "mode" not in nodes["3"]
    assert nodes["3"]["inputs"]["images"] == link("2", "image")  # still wired through the bypass
    assert result.complete and not result.warnings and not result.dropped_links
    modes = {c.comfy_id: c.mode for c in result.converted}
    assert modes == {"1": None, "2": "bypass", "3": None, "4": "mute"}
    assert validate(result.workflow, registry).ok


def test_imported_nodes_of_types_that_do_not_convert_are_resolved_at_import_as_before():
    bypassed = convert(read_prompt(image_chain(filter_node("FancyFilter", 4))), "t.json")
    assert "2" not in bypassed.workflow["nodes"]
    assert bypassed.workflow["nodes"]["3"]["inputs"]["images"] == link("1", "image")
    assert any("comfy id 2 FancyFilter: bypassed in ComfyUI" in w for w in bypassed.warnings)

    muted = convert(read_prompt(image_chain(filter_node("FancyFilter", 2))), "t.json")
    assert "2" not in muted.workflow["nodes"] and "images" not in muted.workflow["nodes"]["3"]["inputs"]
    assert "comfy id 2 FancyFilter: muted in ComfyUI; left out" in muted.warnings
    assert [(d.source_id, d.reason) for d in muted.dropped_links] == [("2", "its source is muted")]
    assert muted.workflow["nodes"]["4"]["mode"] == "mute"  # a muted node of a converting type is kept


def test_the_import_report_says_which_nodes_kept_a_mode():
    from comfy_import.report import converted_line, json_report

    result = convert(read_prompt(image_chain(filter_node("ImageInvert", 4))), "t.json")
    lines = {c.comfy_id: converted_line(c) for c in result.converted}
    assert lines["2"] == "comfy id 2 ImageInvert -> ImageInvert (bypassed in ComfyUI, kept bypassed)"
    assert lines["4"] == "comfy id 4 PreviewImage -> PreviewImage (muted in ComfyUI, kept muted)"
    assert lines["1"] == "comfy id 1 LoadImage -> LoadImage"
    report = json_report(result, [], None, 0)
    assert {c["comfy_id"]: c["mode"] for c in report["converted"]}["2"] == "bypass"
