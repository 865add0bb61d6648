"""The workflow file: schema, migrations of the file and of node versions, node registration."""

from __future__ import annotations

from typing import Any

import pytest

from graph.executor import Executor
from graph.validate import validate
from graph.workflow import FORMAT_VERSION, MIGRATIONS, Migration, VersionError, json_schema, migrate
from nodes import types as T
from nodes.base import Context, Input, Node, NodeDefinitionError, Output
from nodes.registry import Registry, default_registry
from tests.helpers import link, node, workflow


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
        inputs = (Input("name", T.STRING, choices=lambda: sorted(p.name for p in folder.iterdir())),)
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
