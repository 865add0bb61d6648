"""The quick commands: validate, nodes, schema. None of them imports torch or gradio."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.services import services_from_args
from graph.issues import Issue
from graph.strict_json import printable
from graph.validate import validate
from graph.workflow import UnreadableFile, WorkflowSource, json_schema, read_source
from nodes.registry import Registry, default_registry

if TYPE_CHECKING:
    from comfy_import import Conversion

EXIT_OK = 0
EXIT_INVALID = 2


def load_registry(args: argparse.Namespace) -> Registry:
    """The built-in packs and each ``--pack``, over the command's services (model folders from
    ``--models`` and ``$STUDIO_MODELS``; see cli/services.py), which runs use too."""
    registry = default_registry(services=services_from_args(args))
    for pack in getattr(args, "pack", []) or []:
        registry.add_pack(pack)
    for problem in registry.problems:
        print(f"warning: node pack {problem.pack} not loaded: {problem.reason}", file=sys.stderr)
    return registry


def write_safely() -> None:
    """Let stdout and stderr write any text: a file name with bytes that are not UTF-8
    (surrogate escapes) is shown escaped instead of ending the command with a traceback."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def read_workflow(path: Path) -> tuple[WorkflowSource, Conversion | None]:
    """A workflow file's text; a ComfyUI file (JSON or PNG) is imported on the fly, saying
    so on stderr (the conversion is returned too). Raises UnreadableFile."""
    from comfy_import import ComfyError, recognise
    from comfy_import.report import missing_lines, summary

    try:
        found = recognise(path)
    except ComfyError as exc:
        raise UnreadableFile(
            f"{printable(str(path))}: a ComfyUI workflow that cannot be read: {exc}"
        ) from None
    if found is None:
        return read_source(path), None
    print(f"{printable(str(path))}: {summary(found.conversion)}", file=sys.stderr)
    for line in missing_lines(found.conversion):
        print(f"  {line}", file=sys.stderr)
    return WorkflowSource(found.text), found.conversion


def read_runnable(name: str, verb: str) -> WorkflowSource | None:
    """The workflow file ``name`` to run (``verb``: "run", "sweep"), or None after saying on
    stderr why it cannot be: unreadable, or a ComfyUI file with nodes that did not convert."""
    try:
        source, conversion = read_workflow(Path(name))
    except UnreadableFile as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if conversion is not None and not conversion.complete:
        print(
            f"error: not run: {len(conversion.not_converted)} ComfyUI node(s) could not be converted "
            f"(listed above); inspect the conversion with `app.py import-comfy {printable(name)} "
            f"--out NEW.json`, then edit and {verb} NEW.json",
            file=sys.stderr,
        )
        return None
    return source


def comfy_issues(conversion: Conversion | None) -> list[Issue]:
    """The ComfyUI nodes an on-the-fly import could not convert, as issues."""
    if conversion is None:
        return []
    hint = "Run `app.py import-comfy FILE --out NEW.json` to see the whole report and edit the result"
    return [
        Issue(
            "comfyui_not_converted",
            f"ComfyUI node {n.comfy_id} ({n.comfy_type}) was not converted: {n.reason}",
            hint=hint,
        )
        for n in conversion.not_converted
    ]


def _comfy_json(conversion: Conversion | None) -> dict[str, Any]:
    if conversion is None:
        return {}
    return {
        "comfyui": {
            "format": conversion.label,
            "converted": len(conversion.converted),
            "total": conversion.total,
            "complete": conversion.complete,
        }
    }


def validate_command(args: argparse.Namespace) -> int:
    write_safely()
    registry = load_registry(args)
    name = printable(args.workflow)
    conversion = None
    try:
        source, conversion = read_workflow(Path(args.workflow))
        issues = comfy_issues(conversion) + validate(source.text, registry).issues
    except UnreadableFile as exc:
        issues = [Issue("file", str(exc))]
    if args.json:
        report = {"valid": not issues, "issues": [i.to_dict() for i in issues], **_comfy_json(conversion)}
        print(json.dumps(report, indent=2))
    elif issues:
        print(f"{name}: {len(issues)} problem{'s' if len(issues) != 1 else ''}:")
        for issue in issues:
            print(f"  - {issue}")
    else:
        print(f"{name}: valid")
    return EXIT_INVALID if issues else EXIT_OK


def nodes_command(args: argparse.Namespace) -> int:
    registry = load_registry(args)
    if args.json:
        problems = [{"pack": p.pack, "reason": p.reason} for p in registry.problems]
        print(json.dumps({"nodes": registry.describe(), "problems": problems}, indent=2))
        return EXIT_OK
    category = None
    for cls in registry:
        if cls.category != category:
            category = cls.category
            print(f"\n{category}")
        ins = ", ".join(f"{s.name}:{s.type}" for s in cls.inputs)
        outs = ", ".join(f"{o.name}:{o.type}" for o in cls.outputs) or "-"
        shown = cls.readable_name()
        name = cls.type if shown == cls.type else f'{cls.type} "{shown}"'
        print(f"  {name} (v{cls.version}): {cls.description}\n      in: {ins or '-'}\n      out: {outs}")
    return EXIT_OK


def schema_command(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK
