"""The workflow file: pydantic models of format version 1, migrations, and reading files.

A workflow is JSON::

    {
      "version": 1,
      "nodes": {
        "load":   {"type": "LoadImage", "inputs": {"path": "cat.png"}},
        "invert": {"type": "ImageInvert", "inputs": {"image": {"node": "load", "output": "image"}}},
        "save":   {"type": "SaveImage", "inputs": {"images": {"node": "invert", "output": "image"}}}
      }
    }

Inputs are keyed by name. A value is either a constant or a link to another
node's output, named by node id and output name. Title, position, size, groups,
notes and metadata carry the studio's layout in the same file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

#: The format version this code writes, and the newest it reads.
FORMAT_VERSION = 1

#: Text chunk names under which a saved PNG carries its workflow and run seed.
PNG_WORKFLOW_KEY = "workflow"
PNG_SEED_KEY = "run_seed"


class Link(BaseModel):
    """A link from another node's output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: Annotated[str, Field(min_length=1, description="Id of the node the value comes from.")]
    output: Annotated[str, Field(min_length=1, description="Name of that node's output.")]


Constant = StrictBool | StrictInt | StrictFloat | StrictStr | None
InputValue = Link | Constant


class NodeEntry(BaseModel):
    """One node of the workflow."""

    model_config = ConfigDict(extra="forbid")

    type: Annotated[str, Field(min_length=1, description="Node type, as listed by `app.py nodes`.")]
    version: Annotated[
        int | None,
        Field(ge=1, description="Version of the node type when saved; older ones are migrated."),
    ] = None
    inputs: Annotated[dict[str, InputValue], Field(description="Inputs by name: a constant or a link.")] = {}
    title: str | None = None
    position: tuple[float, float] | None = None
    size: tuple[float, float] | None = None
    color: str | None = None


class Group(BaseModel):
    """A titled box around nodes on the canvas."""

    model_config = ConfigDict(extra="forbid")

    title: str = ""
    bounds: Annotated[tuple[float, float, float, float], Field(description="x, y, width, height")]
    color: str | None = None


class Note(BaseModel):
    """A free text note on the canvas."""

    model_config = ConfigDict(extra="forbid")

    text: str
    position: tuple[float, float] | None = None
    size: tuple[float, float] | None = None


class Workflow(BaseModel):
    """A workflow file, format version 1."""

    model_config = ConfigDict(extra="forbid", title="Studio workflow")

    version: Literal[1] = Field(description="Format version of the file.")
    nodes: dict[str, NodeEntry] = Field(description="Nodes keyed by their id.")
    groups: list[Group] = []
    notes: list[Note] = []
    metadata: dict[str, Any] = Field(default={}, description="Free data (studio view, author, ...).")

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent, exclude_none=True, exclude_defaults=False)


def json_schema() -> dict[str, Any]:
    schema = Workflow.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


# --- migrations ------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    """Turns a file of ``from_version`` into one of ``from_version + 1``."""

    from_version: int
    summary: str
    apply: Callable[[dict[str, Any]], dict[str, Any]]


def _v0_to_v1(data: dict[str, Any]) -> dict[str, Any]:
    # Format 0 (the draft before the first release) kept nodes as a list of
    # objects with an "id", and links as two-element lists [node_id, output].
    nodes: dict[str, Any] = {}
    for entry in data.get("nodes", []):
        entry = dict(entry)
        node_id = str(entry.pop("id"))
        inputs = {}
        for name, value in dict(entry.get("inputs", {})).items():
            if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
                value = {"node": value[0], "output": value[1]}
            inputs[name] = value
        entry["inputs"] = inputs
        nodes[node_id] = entry
    return {**data, "version": 1, "nodes": nodes}


MIGRATIONS: tuple[Migration, ...] = (
    Migration(0, "nodes keyed by id; links as {node, output} objects", _v0_to_v1),
)


class VersionError(Exception):
    """The file's format version cannot be read by this studio."""


def migrate(data: dict[str, Any], migrations: tuple[Migration, ...] = MIGRATIONS) -> dict[str, Any]:
    """Bring a parsed file up to :data:`FORMAT_VERSION` through the ordered chain."""
    version = data.get("version")
    if version is None:
        raise VersionError("the file has no 'version'; add \"version\": 1 at the top level")
    if isinstance(version, bool) or not isinstance(version, int):
        raise VersionError(f"'version' must be a whole number, got {version!r}")
    if version > FORMAT_VERSION:
        raise VersionError(
            f"the file is format version {version}, saved by a newer studio; this one reads "
            f"up to version {FORMAT_VERSION}: update the studio to open it"
        )
    steps = {m.from_version: m for m in migrations}
    while version < FORMAT_VERSION:
        step = steps.get(version)
        if step is None:
            raise VersionError(f"format version {version} is too old to migrate")
        try:
            data = step.apply(data)
        except Exception as exc:  # noqa: BLE001 - a broken old file must not crash the reader
            raise VersionError(
                f"could not migrate from format version {version}: {type(exc).__name__}: {exc}"
            ) from None
        version = step.from_version + 1
        data["version"] = version
    return data


# --- reading files -----------------------------------------------------------------


@dataclass(frozen=True)
class WorkflowSource:
    """The text of a workflow and, for a saved PNG, the run seed stored with it."""

    text: str
    run_seed: int | None = None


class UnreadableFile(Exception):
    """A file that holds no workflow we can read."""


def read_source(path: Path) -> WorkflowSource:
    """Read a workflow JSON file, or the workflow embedded in a PNG the studio saved."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return _read_png(path)
    try:
        return WorkflowSource(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise UnreadableFile(f"{path} is neither UTF-8 JSON nor a PNG") from None


def _read_png(path: Path) -> WorkflowSource:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            text_chunks = dict(getattr(image, "text", {}) or {})
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise UnreadableFile(f"cannot read the PNG {path}: {exc}") from None
    workflow = text_chunks.get(PNG_WORKFLOW_KEY)
    if workflow is None:
        raise UnreadableFile(f"{path} holds no workflow: only PNGs saved by the studio do")
    seed_text = text_chunks.get(PNG_SEED_KEY)
    seed = int(seed_text) if seed_text and seed_text.isdigit() else None
    return WorkflowSource(workflow, seed)


def parse_json(text: str) -> Any:
    """``json.loads`` that refuses NaN and Infinity, which JSON does not have."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")

    return json.loads(text, parse_constant=refuse)
