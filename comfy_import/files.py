"""ComfyUI files on disk: JSON of either format, or a PNG with ComfyUI's text chunks.

ComfyUI writes two text chunks into the PNGs it saves: ``prompt`` (the API format) and
``workflow`` (the UI format, with layout, notes and groups). The UI workflow is preferred;
the other is the fallback when one is missing or unreadable. The chunks are read by the
studio's own PNG reader (graph.workflow), which never decodes the pixels, so a picture
of any size is read at once.

:func:`recognise` is what ``run``, ``validate`` and the studio's Open use: a studio
workflow (or a PNG the studio saved) is ``None``, a ComfyUI one is converted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_import.convert import Conversion, convert
from comfy_import.formats import ComfyError, Prompt, looks_like_comfy, read_prompt

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: ComfyUI's PNG text chunks, in order of preference.
PNG_KEYS = ("workflow", "prompt")


def read_bytes(raw: bytes, shown: str) -> Prompt:
    """A ComfyUI workflow from a file's bytes (JSON or PNG); :class:`ComfyError` if none."""
    if raw.startswith(PNG_SIGNATURE):
        return _read_png(raw, shown)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ComfyError(f"{shown} is neither UTF-8 text nor a PNG (byte {exc.start})") from None
    return read_prompt(parse(text, shown))


def read_file(path: Path) -> Prompt:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ComfyError(f"cannot read {path}: {exc.strerror or exc}") from None
    return read_bytes(raw, str(path))


def parse(text: str, shown: str) -> Any:
    """JSON as ComfyUI writes it. Unlike studio files, whole numbers beyond 64 bits are
    accepted: ComfyUI's frontend writes 2**64 as 18446744073709552000 in converted widgets'
    settings. NaN and Infinity are still refused."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise ComfyError(
            f"{shown} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ComfyError(f"{shown} is not valid JSON: {exc}") from None


def png_texts(raw: bytes, shown: str) -> dict[str, str]:
    from graph.workflow import UnreadableFile
    from graph.workflow import png_texts as chunks

    try:
        return chunks(raw, shown, wanted=set(PNG_KEYS))
    except UnreadableFile as exc:
        raise ComfyError(str(exc)) from None


def _read_png(raw: bytes, shown: str) -> Prompt:
    texts = png_texts(raw, shown)
    if not texts:
        raise ComfyError(f"{shown} holds no ComfyUI workflow (no 'workflow' or 'prompt' text)")
    problems = []
    for key in PNG_KEYS:
        if key not in texts:
            continue
        try:
            prompt = read_prompt(parse(texts[key], f"the {key!r} text of {shown}"))
        except ComfyError as exc:
            problems.append(str(exc))
            continue
        prompt.label += f" in a PNG's {key!r} text"
        if problems:
            prompt.warnings.append(f"{problems[0]}; the {key!r} text is used instead")
        return prompt
    raise ComfyError("; ".join(problems))


@dataclass(frozen=True)
class Recognised:
    """A ComfyUI file converted on the fly."""

    conversion: Conversion
    #: The converted workflow as JSON text.
    text: str


def is_comfy(raw: bytes) -> bool:
    """Whether a file's bytes are a ComfyUI workflow (and not a studio one)."""
    if raw.startswith(PNG_SIGNATURE):
        from graph.workflow import PNG_SEED_KEY, UnreadableFile
        from graph.workflow import png_texts as chunks

        try:
            texts = chunks(raw, "", wanted={*PNG_KEYS, PNG_SEED_KEY})
        except UnreadableFile:
            return False
        if "workflow" in texts:  # the studio's own key too: a studio PNG has its seed or a dict of nodes
            try:
                return looks_like_comfy(json.loads(texts["workflow"]))
            except ValueError:
                return "prompt" in texts
        return "prompt" in texts
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return looks_like_comfy(data)


def recognise(path: Path) -> Recognised | None:
    """``None`` for a studio workflow (or an unreadable file: the usual reader says why);
    the conversion for a ComfyUI one. :class:`ComfyError` if it is ComfyUI but unreadable."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if not is_comfy(raw):
        return None
    result = convert(read_bytes(raw, str(path)), path.name)
    return Recognised(result, json.dumps(result.workflow, indent=2))
