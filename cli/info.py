"""The quick commands: validate, nodes, schema. None of them imports torch or gradio."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from graph.issues import Issue
from graph.strict_json import printable
from graph.validate import validate
from graph.workflow import UnreadableFile, json_schema, read_source
from nodes.registry import Registry, default_registry

EXIT_OK = 0
EXIT_INVALID = 2


def load_registry(args: argparse.Namespace) -> Registry:
    registry = default_registry()
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


def validate_command(args: argparse.Namespace) -> int:
    write_safely()
    registry = load_registry(args)
    name = printable(args.workflow)
    try:
        source = read_source(Path(args.workflow))
        issues = validate(source.text, registry).issues
    except UnreadableFile as exc:
        issues = [Issue("file", str(exc))]
    if args.json:
        print(json.dumps({"valid": not issues, "issues": [i.to_dict() for i in issues]}, indent=2))
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
        print(f"  {cls.type} (v{cls.version}): {cls.description}\n      in: {ins or '-'}\n      out: {outs}")
    return EXIT_OK


def schema_command(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK
