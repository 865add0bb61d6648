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
node's output, named by node id and output name. A node may carry a ``mode``,
"bypass" or "mute" (graph/modes.py says what they mean for a run). Title, position,
size, groups, notes and metadata carry the studio's layout in the same file.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

# parse_json and JsonValueError are re-exported: callers read workflow text through this module.
from graph.strict_json import JsonValueError, parse_json, printable  # noqa: F401

#: The format version this code writes, and the newest it reads.
FORMAT_VERSION = 1

#: Text chunk names under which a saved PNG carries its workflow and run seed.
PNG_WORKFLOW_KEY = "workflow"
PNG_SEED_KEY = "run_seed"

#: Run seeds stay below 2**53 so they survive a round trip through JavaScript
#: (the same bound as graph.executor.MAX_SEED, which imports this module).
MAX_SEED = 2**53 - 1


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
    mode: Annotated[
        Literal["bypass", "mute"] | None,
        Field(
            description=(
                "Absent for a node that runs. 'bypass': the node does not run and each of its outputs "
                "hands on its first given input of the same type. 'mute': the node does not run, "
                "nor does any node whose required input comes from it."
            )
        ),
    ] = None
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
    shown = printable(str(path))
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"cannot read {shown}: {exc.strerror or exc}") from None
    if raw.startswith(_PNG_SIGNATURE):
        return read_png_workflow(raw, shown)
    try:
        return WorkflowSource(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise UnreadableFile(f"{shown} is neither UTF-8 JSON nor a PNG") from None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: A text chunk may inflate to at most this many bytes (the API takes workflows up to 16 MB).
MAX_PNG_TEXT = 16 * 1024 * 1024


def read_png_workflow(raw: bytes, shown: str) -> WorkflowSource:
    """The workflow and seed from a PNG's text chunks. Pixels are never decoded, so a
    picture of any size (a decompression bomb included) is read in no time."""
    texts = png_texts(raw, shown, wanted={PNG_WORKFLOW_KEY, PNG_SEED_KEY})
    workflow = texts.get(PNG_WORKFLOW_KEY)
    if workflow is None:
        raise UnreadableFile(f"{shown} holds no workflow: only PNGs saved by the studio do")
    return WorkflowSource(workflow, _seed(texts.get(PNG_SEED_KEY)))


def _seed(text: str | None) -> int | None:
    """A stored run seed, or ``None`` (then the run draws one) when it is not a valid seed."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > 16:
        return None
    seed = int(text)
    return seed if seed <= MAX_SEED else None


def png_texts(raw: bytes, shown: str, wanted: set[str]) -> dict[str, str]:
    """The ``wanted`` text chunks (tEXt, zTXt, iTXt) of a PNG, the first of each name.

    A file cut short keeps what came before the cut; a damaged text chunk is an error.
    """
    texts: dict[str, str] = {}
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(raw):
        length, kind = struct.unpack_from(">I4s", raw, pos)
        start, end = pos + 8, pos + 8 + length
        if end + 4 > len(raw) or kind == b"IEND":
            break
        pos = end + 4
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        data = raw[start:end]
        name, _, body = data.partition(b"\0")
        key = name.decode("latin-1")
        if key not in wanted or key in texts:
            continue
        if zlib.crc32(kind + data) != struct.unpack_from(">I", raw, end)[0]:
            raise UnreadableFile(f"the PNG {shown} is damaged: its {key!r} text fails its checksum")
        try:
            texts[key] = _png_text(kind, body)
        except (zlib.error, IndexError, UnicodeDecodeError) as exc:
            raise UnreadableFile(f"the PNG {shown} has a damaged {key!r} text ({exc})") from None
        except _TooLarge:
            raise UnreadableFile(
                f"the PNG {shown} has a {key!r} text too large to read (over {MAX_PNG_TEXT // 2**20} MB)"
            ) from None
    return texts


class _TooLarge(Exception):
    pass


def _png_text(kind: bytes, body: bytes) -> str:
    if kind == b"tEXt":
        return body.decode("latin-1")
    if kind == b"zTXt":  # compression method byte, then zlib data
        return _inflate(body[1:]).decode("latin-1")
    # iTXt: compressed flag, method, language\0, translated keyword\0, UTF-8 text
    compressed = body[0]
    _language, _, rest = body[2:].partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    return (_inflate(text) if compressed else text).decode("utf-8")


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_PNG_TEXT + 1)
    if len(out) > MAX_PNG_TEXT:
        raise _TooLarge
    return out
