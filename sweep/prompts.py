"""Prompt files for ``app.py sweep --prompts``: the rows of values one sweep axis tries.

- ``.txt``: one prompt per line; blank lines and lines starting with ``#`` are skipped. Each
  prompt goes to ``--prompt-input`` (one or several ``NODE.INPUT``, comma-separated), or by
  default to the text input(s) of the prompt node feeding the samplers' ``positive`` input.
- ``.csv``: a header row of ``NODE.INPUT`` columns, then one row per item.
- ``.jsonl``: one JSON object per line, mapping ``NODE.INPUT`` to a value.

A row that repeats an earlier one is skipped with a note (it would be the same item).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph.strict_json import parse_json, printable, printable_repr
from nodes import types as T
from nodes.registry import Registry
from sweep.targets import PlanError, Target, resolve

#: Input names that hold a prompt's text (CLIPTextEncode's ``text``, SDXL's ``text_g``/``text_l``).
PROMPT_NAMES = ("text",)
PROMPT_PREFIX = "text_"


@dataclass
class PromptRows:
    """The rows a prompts file gives: each maps ``NODE.INPUT`` to a typed value."""

    rows: list[dict[str, Any]]
    targets: dict[str, Target]
    #: Things worth telling the user (rows skipped as repeats).
    notes: list[str] = field(default_factory=list)


def read_prompts(
    path: Path, data: dict[str, Any], registry: Registry, prompt_input: str | None = None
) -> PromptRows:
    """The rows of the prompts file at ``path`` for the workflow ``data``. Raises PlanError."""
    shown = printable(str(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PlanError(f"--prompts {shown}: the file is not UTF-8 text") from None
    except OSError as exc:
        raise PlanError(f"--prompts {shown}: cannot read it ({exc.strerror or exc})") from None
    suffix = path.suffix.lower()
    if suffix == ".txt":
        targets = _prompt_targets(data, registry, prompt_input)
        rows = [(n, {t.name: value for t in targets}) for n, value in _text_lines(text)]
        found = PromptRows([], {t.name: t for t in targets})
    elif suffix == ".csv":
        found, rows = _csv_rows(text, shown, data, registry)
    elif suffix == ".jsonl":
        found, rows = _jsonl_rows(text, shown, data, registry)
    else:
        raise PlanError(
            f"--prompts {shown}: use a .txt (one prompt per line), .csv (a header row of NODE.INPUT "
            "columns) or .jsonl file (one object per line mapping NODE.INPUT to a value)"
        )
    seen: dict[str, int] = {}
    for line, row in rows:
        canonical = json.dumps(row, sort_keys=True)
        if canonical in seen:
            found.notes.append(f"{shown}: line {line} repeats line {seen[canonical]}; skipped")
            continue
        seen[canonical] = line
        found.rows.append(row)
    if not found.rows:
        raise PlanError(f"--prompts {shown}: the file holds no prompts")
    return found


def _text_lines(text: str) -> list[tuple[int, str]]:
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            lines.append((number, prompt))
    return lines


def _csv_rows(
    text: str, shown: str, data: dict[str, Any], registry: Registry
) -> tuple[PromptRows, list[tuple[int, dict[str, Any]]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[Target] | None = None
    rows: list[tuple[int, dict[str, Any]]] = []
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if header is None:
            header = [resolve(data, registry, c, f"--prompts {shown}, column {c.strip()!r}") for c in cells]
            _no_repeats([t.name for t in header], f"--prompts {shown}: the header")
            continue
        if len(cells) != len(header):
            raise PlanError(
                f"--prompts {shown}, line {line}: {len(cells)} values for {len(header)} columns "
                f"({', '.join(t.name for t in header)})"
            )
        row: dict[str, Any] = {}
        for target, cell in zip(header, cells, strict=True):
            try:
                row[target.name] = target.typed(cell)
            except PlanError as exc:
                raise PlanError(f"--prompts {shown}, line {line}: {exc}") from None
        rows.append((line, row))
    if header is None:
        raise PlanError(f"--prompts {shown}: the file is empty; its first row names the NODE.INPUT columns")
    return PromptRows([], {t.name: t for t in header}), rows


def _jsonl_rows(
    text: str, shown: str, data: dict[str, Any], registry: Registry
) -> tuple[PromptRows, list[tuple[int, dict[str, Any]]]]:
    targets: dict[str, Target] = {}
    rows: list[tuple[int, dict[str, Any]]] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"--prompts {shown}, line {line}"
        try:
            value = parse_json(raw)
        except ValueError as exc:
            raise PlanError(f"{where}: not JSON ({exc})") from None
        if not isinstance(value, dict) or not value:
            raise PlanError(
                f'{where}: write an object mapping NODE.INPUT to a value, e.g. {{"pos.text": "a cat"}}'
            )
        row: dict[str, Any] = {}
        for name, item in value.items():
            if name not in targets:
                targets[name] = resolve(data, registry, name, f"{where}, key {printable_repr(name)}")
            target = targets[name]
            if isinstance(item, dict | list) or item is None:
                raise PlanError(f"{where}: {target.name} must be a single value, got {printable_repr(item)}")
            try:
                row[target.name] = target.coerced(item)
            except PlanError as exc:
                raise PlanError(f"{where}: {exc}") from None
        rows.append((line, row))
    return PromptRows([], {t.name: t for t in targets.values()}), rows


def _no_repeats(names: Sequence[str], where: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise PlanError(f"{where} names {', '.join(repeated)} more than once")


def _prompt_targets(data: dict[str, Any], registry: Registry, prompt_input: str | None) -> list[Target]:
    """Where the prompts of a .txt file go: ``--prompt-input``, else the positive prompt's text."""
    if prompt_input is not None:
        names = [n for n in (part.strip() for part in prompt_input.split(",")) if n]
        if not names:
            raise PlanError("--prompt-input: name an input as NODE.INPUT, e.g. pos.text")
        _no_repeats(names, "--prompt-input")
        targets = [resolve(data, registry, n, f"--prompt-input {printable_repr(n)}") for n in names]
        for target in targets:
            if target.type != T.STRING:
                raise PlanError(
                    f"--prompt-input {target.name}: takes {target.type}, not text; name a text input"
                )
        return targets
    found = positive_prompt_inputs(data, registry)
    if not found:
        raise PlanError(
            "--prompts: found no prompt to fill: no sampler's 'positive' input comes from a node with a "
            "text input; say where the prompts go with --prompt-input NODE.INPUT (e.g. pos.text)"
        )
    nodes = {t.node_id for t in found}
    if len(nodes) > 1:
        listed = ",".join(t.name for t in found)
        raise PlanError(
            "--prompts: the samplers' positive prompts come from several nodes "
            f"({', '.join(sorted(nodes))}); "
            f"say which get the prompts with --prompt-input, e.g. --prompt-input {listed}"
        )
    return found


def positive_prompt_inputs(data: dict[str, Any], registry: Registry) -> list[Target]:
    """The text inputs of the nodes that make the samplers' positive conditioning.

    From every ``positive`` link, walk upstream through CONDITIONING links (a ControlNet or a
    combine node may sit between) to the first nodes that have a constant text input.
    """
    nodes: dict[str, Any] = data["nodes"] if isinstance(data.get("nodes"), dict) else {}
    found: dict[str, Target] = {}
    queue = [_link_source(entry, "positive") for entry in nodes.values() if isinstance(entry, dict)]
    queue = [source for source in queue if source is not None]
    seen: set[str] = set()
    while queue:
        node_id = queue.pop(0)
        if node_id in seen or not isinstance(nodes.get(node_id), dict):
            continue
        seen.add(node_id)
        entry = nodes[node_id]
        cls = registry.get(str(entry.get("type")))
        if cls is None:
            continue
        texts = [
            spec
            for spec in cls.inputs
            if spec.type == T.STRING
            and spec.accepts_constant
            and (spec.name in PROMPT_NAMES or spec.name.startswith(PROMPT_PREFIX))
            and _link_source(entry, spec.name) is None
        ]
        if texts:
            for spec in texts:
                target = Target(node_id, spec.name, spec.type)
                found[target.name] = target
            continue
        for spec in cls.inputs:
            if spec.type == T.CONDITIONING and (source := _link_source(entry, spec.name)) is not None:
                queue.append(source)
    return list(found.values())


def _link_source(entry: Any, name: str) -> str | None:
    """The node id that feeds ``entry``'s input ``name`` through a link, else None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("inputs"), dict):
        return None
    value = entry["inputs"].get(name)
    if isinstance(value, dict) and isinstance(value.get("node"), str) and "output" in value:
        return value["node"]
    return None
