"""Opening a file the page was given: a studio workflow or picture, or a ComfyUI one.

:func:`import_file` recognises, from the bytes alone:

- ``studio``: a studio workflow JSON file;
- ``studio-png``: a PNG the studio saved (its ``workflow`` and ``run_seed`` text chunks,
  see nodes/image_io.py);
- ``comfyui-ui`` / ``comfyui-api``: a ComfyUI workflow in either of its JSON formats;
- ``comfyui-png``: a PNG ComfyUI saved (its ``workflow`` or ``prompt`` text chunk).

A ComfyUI file is converted as ``app.py run`` converts it (comfy_import): what has no
studio equivalent is named with the reason, and what did convert is opened all the
same. Studio files are checked to be workflow files, not validated: the page opens an
unfinished graph as it was saved. PNG pixels are never decoded (only the text chunks
are read), so a picture of any size opens at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from comfy_import.files import PNG_SIGNATURE, is_comfy, read_bytes
from comfy_import.formats import ComfyError
from graph.strict_json import printable
from graph.workflow import UnreadableFile, WorkflowSource
from server.library import NotAWorkflow, check_workflow_file

#: How many unconverted nodes the message names before "and N more".
_NAMED = 5


class ImportRefused(ValueError):
    """A file that holds no workflow the studio can open; the message says why."""


@dataclass
class Imported:
    """A file opened as a studio workflow, and what the page should say about it."""

    workflow: dict[str, Any]
    format: str
    message: str
    complete: bool = True
    #: ComfyUI nodes left out: ``{"node": comfy id, "type": comfy class, "reason": ...}``.
    unconverted: list[dict[str, str]] = field(default_factory=list)
    #: The run seed a studio PNG was made with (``None`` for every other file).
    seed: int | None = None
    #: What else the conversion changed or dropped (links, values without an equivalent).
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "format": self.format,
            "message": self.message,
            "complete": self.complete,
            "unconverted": self.unconverted,
            "seed": self.seed,
            "warnings": self.warnings,
        }


def import_file(raw: bytes, name: str = "") -> Imported:
    """The workflow in a file's bytes (``name`` is only shown); :class:`ImportRefused` if none."""
    shown = printable(name.strip())[:200] or "the file"
    if not raw:
        raise ImportRefused(f"{shown} is empty")
    if is_comfy(raw):
        return _comfy(raw, shown)
    if raw.startswith(PNG_SIGNATURE):
        return _studio_png(raw, shown)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRefused(
            f"{shown} is neither a workflow (JSON text) nor a PNG with one; open a .json file or a "
            "picture saved by the studio or ComfyUI"
        ) from None
    workflow = _checked(text, shown)
    return Imported(workflow, "studio", f"{shown}: a studio workflow ({_count(workflow)})")


def _studio_png(raw: bytes, shown: str) -> Imported:
    from graph.workflow import read_png_workflow  # the studio's PNG reader: text chunks only, never pixels

    try:
        source: WorkflowSource = read_png_workflow(raw, shown)
    except UnreadableFile as exc:
        raise ImportRefused(
            f"{exc} (pictures saved by SaveImage in the studio or ComfyUI carry their workflow)"
        ) from None
    workflow = _checked(source.text, f"the workflow in {shown}")
    seed = f", run seed {source.run_seed}" if source.run_seed is not None else ""
    message = f"{shown}: a picture the studio saved, with its workflow ({_count(workflow)}{seed})"
    return Imported(workflow, "studio-png", message, seed=source.run_seed)


def _comfy(raw: bytes, shown: str) -> Imported:
    from comfy_import.convert import convert
    from comfy_import.report import summary

    try:
        prompt = read_bytes(raw, shown)
    except ComfyError as exc:
        raise ImportRefused(f"{shown} is a ComfyUI workflow that cannot be read: {exc}") from None
    kind = "png" if raw.startswith(PNG_SIGNATURE) else prompt.format
    conversion = convert(prompt, shown)
    unconverted = [
        {"node": item.comfy_id, "type": item.comfy_type, "reason": item.reason}
        for item in conversion.not_converted
    ]
    message = f"{shown}: {summary(conversion)}"
    if unconverted:
        named = ", ".join(f"{item['type']} (id {item['node']})" for item in unconverted[:_NAMED])
        more = f" and {len(unconverted) - _NAMED} more" if len(unconverted) > _NAMED else ""
        message += f"; not converted: {named}{more}"
    return Imported(
        conversion.workflow,
        f"comfyui-{kind}",
        message,
        complete=conversion.complete,
        unconverted=unconverted,
        warnings=[*conversion.warnings, *(f"link dropped: {link}" for link in conversion.dropped_links)],
    )


def _checked(text: str, shown: str) -> dict[str, Any]:
    try:
        return check_workflow_file(text)
    except NotAWorkflow as exc:
        raise ImportRefused(f"{shown}: {exc}") from None


def _count(workflow: dict[str, Any]) -> str:
    count = len(workflow.get("nodes") or {})
    return f"{count} node{'s' if count != 1 else ''}"
