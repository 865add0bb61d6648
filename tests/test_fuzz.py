"""Property-based tests: no workflow file, however malformed, crashes validation or a run.

Every input is either valid (and then it runs to "done" or a clean node failure) or
answered with validation issues that each name where the problem is.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph.executor import Executor
from graph.issues import Issue
from graph.validate import validate
from nodes import types as T
from nodes.base import RunSettings
from nodes.registry import default_registry

REPO = Path(__file__).resolve().parent.parent
REGISTRY = default_registry()
MODEL_FREE_PACKS = ("nodes.primitives", "nodes.image_io", "nodes.image", "nodes.mask")
#: Fuzzing runs what is valid; keep to examples and node types that need no model files.
EXAMPLES = [
    data
    for data in (json.loads(p.read_text()) for p in sorted((REPO / "workflows").glob("*.json")))
    if all(REGISTRY.get(n["type"]).__module__ in MODEL_FREE_PACKS for n in data["nodes"].values())
]
BASE = EXAMPLES + [
    {
        "version": 1,
        "nodes": {
            "a": {"type": "Int", "inputs": {"value": 2}},
            "b": {"type": "IntMath", "inputs": {"a": {"node": "a", "output": "value"}, "b": 3}},
            "flag": {"type": "Boolean", "inputs": {"value": True}},
            "sw": {
                "type": "Switch",
                "inputs": {
                    "select": {"node": "flag", "output": "value"},
                    "on_true": {"node": "b", "output": "value"},
                    "on_false": {"node": "a", "output": "value"},
                },
            },
            "img": {"type": "EmptyImage", "inputs": {"width": 8, "height": 6, "color": "#336699"}},
            "gray": {"type": "ImageGrayscale", "inputs": {"image": {"node": "img", "output": "image"}}},
            "show": {"type": "ShowValue", "inputs": {"value": {"node": "sw", "output": "value"}}},
            "prev": {"type": "PreviewImage", "inputs": {"images": {"node": "gray", "output": "image"}}},
        },
    }
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()  # NaN and the infinities too: Python callers can hand them over
    | st.text(max_size=12)
    | st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(["\ud800", "a\udcff"]), children, max_size=4)
    ),
    max_leaves=20,
)


def check_outcome(data: Any, tmp: Path) -> None:
    result = validate(data, REGISTRY)
    for issue in result.issues:
        assert isinstance(issue, Issue) and issue.message and str(issue)
    # issues travel as JSON (the API's JSONResponse refuses NaN) and as UTF-8 text
    json.dumps([i.to_dict() for i in result.issues], allow_nan=False, ensure_ascii=False).encode("utf-8")
    if result.ok:
        assert result.workflow is not None
        run = Executor(REGISTRY).run(
            result.workflow,
            settings=RunSettings(output_dir=tmp, input_dirs=(tmp,), allow_absolute_paths=False),
            seed=0,
        )
        assert run.status in ("done", "failed")
        if run.status == "failed":
            assert run.error is not None and run.error.node_id in result.workflow.nodes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(json_values)
def test_any_json_value_is_answered(tmp_path, value):
    check_outcome(value, tmp_path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_or_text_is_answered(tmp_path, raw):
    check_outcome(raw, tmp_path)


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += _paths(value, prefix + (index,))
    return out


def _small_constant(spec_type: str) -> st.SearchStrategy:
    if spec_type == T.INT:
        return st.integers(-3, 64)
    if spec_type == T.FLOAT:
        return st.floats(-2, 2, allow_nan=False)
    if spec_type == T.BOOLEAN:
        return st.booleans()
    return st.text(max_size=8) | st.sampled_from(["lanczos", "fit", "red", "#ff0000", "add", "random"])


@st.composite
def mutated_workflows(draw: st.DrawFn) -> Any:
    data = copy.deepcopy(draw(st.sampled_from(BASE)))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "small", "relink", "retype"]))
        if not path:
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(json_values)
        elif action == "small":
            parent[key] = draw(_small_constant(draw(st.sampled_from([T.INT, T.FLOAT, T.BOOLEAN, T.STRING]))))
        elif action == "relink" and isinstance(data.get("nodes"), dict) and data["nodes"]:
            target = draw(st.sampled_from(sorted(data["nodes"])))
            parent[key] = {"node": target, "output": draw(st.sampled_from(["value", "image", "mask", "x"]))}
        elif action == "retype":
            parent[key] = draw(st.sampled_from([c.type for c in REGISTRY]))
        if not isinstance(data, dict):
            break
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated_workflows())
def test_mutated_workflows_are_valid_or_answered(tmp_path, data):
    check_outcome(data, tmp_path)


@st.composite
def random_graphs(draw: st.DrawFn) -> dict[str, Any]:
    """Random node types wired at random, mostly well-typed: links to compatible earlier
    outputs, small constants, and an output node at the end."""
    classes = [
        c
        for c in REGISTRY
        if c.type != "LoadImage" and not c.output_node and c.__module__ in MODEL_FREE_PACKS
    ]
    nodes: dict[str, Any] = {}
    for index in range(draw(st.integers(1, 7))):
        cls = draw(st.sampled_from(classes))
        inputs: dict[str, Any] = {}
        for spec in cls.inputs:
            if not spec.required and not draw(st.booleans()):
                continue
            earlier = [
                (nid, o.name)
                for nid, e in nodes.items()
                for o in REGISTRY.get(e["type"]).outputs
                if T.compatible(o.type, spec.type) or draw(st.integers(0, 9)) == 0
            ]
            if earlier and spec.accepts_link and (not spec.accepts_constant or draw(st.booleans())):
                nid, out = draw(st.sampled_from(earlier))
                inputs[spec.name] = {"node": nid, "output": out}
            elif spec.accepts_constant:
                choices = spec.current_choices(REGISTRY.services)
                inputs[spec.name] = (
                    draw(st.sampled_from(choices)) if choices else draw(_small_constant(spec.type))
                )
        nodes[f"n{index}"] = {"type": cls.type, "inputs": inputs}
    images = [
        (nid, o.name)
        for nid, e in nodes.items()
        for o in REGISTRY.get(e["type"]).outputs
        if o.type == T.IMAGE
    ]
    anything = [(nid, o.name) for nid, e in nodes.items() for o in REGISTRY.get(e["type"]).outputs]
    if images and draw(st.booleans()):
        nid, out = draw(st.sampled_from(images))
        nodes["out"] = {
            "type": draw(st.sampled_from(["PreviewImage", "SaveImage"])),
            "inputs": {"images": {"node": nid, "output": out}},
        }
    elif anything:
        nid, out = draw(st.sampled_from(anything))
        nodes["out"] = {"type": "ShowValue", "inputs": {"value": {"node": nid, "output": out}}}
    return {"version": 1, "nodes": nodes}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(random_graphs())
def test_random_graphs_are_valid_or_answered(tmp_path, data):
    check_outcome(data, tmp_path)
