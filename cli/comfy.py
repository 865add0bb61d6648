"""``app.py import-comfy``: turn a ComfyUI workflow (API or UI format, or a PNG) into a
studio workflow file and report what came across.

The importer itself is the :mod:`comfy_import` package; the names other code uses are
re-exported here so ``from cli.comfy import read_prompt, convert`` keeps working.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from comfy_import import (
    RULES,
    SEED_MAX,
    ComfyError,
    Conversion,
    clean_prefix,
    convert,
    map_sampler,
    read_file,
    read_prompt,
)
from comfy_import.report import json_report, print_report

__all__ = [
    "RULES",
    "SEED_MAX",
    "ComfyError",
    "Conversion",
    "clean_prefix",
    "convert",
    "import_comfy_command",
    "map_sampler",
    "read_prompt",
]

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_INVALID = 2


def default_out(path: Path) -> Path:
    """FILE.json -> FILE.studio.json (FILE.png -> FILE.studio.json)."""
    return path.with_name(path.stem + ".studio.json")


def import_comfy_command(args: argparse.Namespace) -> int:
    path = Path(args.file)
    out = Path(args.out) if args.out else default_out(path)
    try:
        prompt = read_file(path)
    except ComfyError as exc:
        return _fail(str(exc), args.json)
    if out.exists():
        return _fail(f"{out} already exists; it is never overwritten: choose another --out", args.json)

    result = convert(prompt, path.name)
    written = bool(result.converted)
    issues: list[Any] = []
    if written:
        from cli.info import load_registry  # the built-in packs and any --pack
        from graph.validate import validate

        issues = validate(result.workflow, load_registry(args)).issues
        try:
            with out.open("x", encoding="utf-8") as handle:
                handle.write(json.dumps(result.workflow, indent=2) + "\n")
        except FileExistsError:
            return _fail(f"{out} already exists; it is never overwritten: choose another --out", args.json)
        except OSError as exc:
            return _fail(f"cannot write {out}: {exc.strerror or exc}", args.json)
    code = EXIT_OK if result.complete else EXIT_PARTIAL
    if args.json:
        print(json.dumps(json_report(result, issues, out if written else None, code), indent=2))
    else:
        print_report(result, issues, path, out if written else None)
    return code


def _fail(message: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"exit_code": EXIT_INVALID, "error": message}))
    else:
        print(f"error: {message}", file=sys.stderr)
    return EXIT_INVALID
