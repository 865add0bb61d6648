"""Run events: their kinds, fields and JSON form, as docs/api.md lists them."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from graph.events import (
    Event,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodePreview,
    NodeProgress,
    NodeStarted,
    RunFinished,
    RunStarted,
)

EVERY_KIND = {
    RunStarted: ("run_started", RunStarted("r", seed=7, planned=["a", "b"])),
    NodeStarted: ("node_started", NodeStarted("r", "a", "Int")),
    NodeCached: ("node_cached", NodeCached("r", "a", "Int", ["x.png"])),
    NodeProgress: ("node_progress", NodeProgress("r", "a", step=2, total=5)),
    NodePreview: ("node_preview", NodePreview("r", "a", image=np.zeros((1, 4, 6, 3), np.float32))),
    NodeFinished: ("node_finished", NodeFinished("r", "a", "Int", 0.5, ["x.png"])),
    NodeFailed: ("node_failed", NodeFailed("r", "a", "Int", "broke", "value", "Traceback ...")),
    RunFinished: ("run_finished", RunFinished("r", status="done", seconds=1.5, executed=2, cached=1)),
}


@pytest.mark.parametrize("cls", list(EVERY_KIND))
def test_each_event_has_its_own_kind_and_a_json_form(cls):
    kind, event = EVERY_KIND[cls]
    assert cls.kind == kind and event.kind == kind
    data = event.to_dict()
    assert data["event"] == kind and data["run_id"] == "r"
    assert set(data) == {"event"} | {f.name for f in dataclasses.fields(cls)}
    assert json.loads(json.dumps(data)) == data


def test_the_json_form_keeps_every_field_value():
    assert EVERY_KIND[RunStarted][1].to_dict() == {
        "event": "run_started",
        "run_id": "r",
        "seed": 7,
        "planned": ["a", "b"],
        "bypassed": [],
        "muted": [],
        "skipped": [],
    }
    assert EVERY_KIND[NodeFailed][1].to_dict() == {
        "event": "node_failed",
        "run_id": "r",
        "node_id": "a",
        "node_type": "Int",
        "message": "broke",
        "input": "value",
        "details": "Traceback ...",
    }
    assert EVERY_KIND[RunFinished][1].to_dict() == {
        "event": "run_finished",
        "run_id": "r",
        "status": "done",
        "seconds": 1.5,
        "executed": 2,
        "cached": 1,
        "error": None,
    }


def test_images_travel_as_their_shape_only():
    data = EVERY_KIND[NodePreview][1].to_dict()
    assert data == {"event": "node_preview", "run_id": "r", "node_id": "a", "image": {"shape": [1, 4, 6, 3]}}

    class ShapeOnly:  # something with a shape but no dtype is not an image
        shape = (2, 2)

    assert NodePreview("r", "a", image=ShapeOnly()).to_dict()["image"].__class__ is ShapeOnly


def test_defaults():
    assert NodeCached("r", "a", "Int").files == [] and NodeFinished("r", "a", "Int", 0.1).files == []
    failed = NodeFailed("r", "a", "Int", "broke")
    assert failed.input is None and failed.details == ""
    assert RunFinished("r", status="failed", seconds=0.0, executed=0, cached=0).error is None
    assert NodeCached("r", "a", "Int").files is not NodeCached("r", "b", "Int").files


def test_a_failure_reads_as_where_and_why():
    assert str(NodeFailed("r", "n1", "IntMath", "division by zero", "b")) == (
        "node 'n1' (IntMath), input 'b': division by zero"
    )
    assert str(NodeFailed("r", "n1", "IntMath", "it broke")) == "node 'n1' (IntMath): it broke"
    assert str(NodeFailed("r", "n1", "IntMath", "it broke", "")) == "node 'n1' (IntMath): it broke"


def test_events_are_frozen():
    event = NodeStarted("r", "a", "Int")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.node_id = "b"  # type: ignore[misc]
    assert Event.kind == "event"
