"""``app.py eval``: measure a folder of pictures, against a reference folder where a metric needs
one, with metrics that answer FID's critics (docs/evaluation.md).

Exit codes: 0 measured (a metric that could not run is listed as skipped with its reason),
2 bad arguments (a missing folder, an unknown metric, a feature model that cannot be loaded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from evaluation.choices import DEFAULT_METRICS, METRICS
from evaluation.report import details_of

EXIT_OK = 0
EXIT_INVALID = 2  # as cli/info.py: bad arguments


def add_eval_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to ``commands`` (app.py's subparsers)."""
    parser = commands.add_parser(
        "eval",
        help="measure pictures: FID, KID, CMMD, precision/recall, CLIP score, the toy-world analyzer",
    )
    parser.add_argument("--images", required=True, metavar="DIR", help="the folder of pictures to measure")
    parser.add_argument(
        "--reference",
        metavar="DIR",
        help="the folder of reference pictures (FID, KID, CMMD, precision/recall)",
    )
    parser.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRICS),
        help=f"comma-separated, of {', '.join(METRICS)} (default: {','.join(DEFAULT_METRICS)})",
    )
    parser.add_argument(
        "--features",
        metavar="MODEL",
        help="the feature model: a transformers CLIP folder or a CLIP vision .safetensors "
        "(default: the bundled toy CLIP, models/clip/toy-clip)",
    )
    parser.add_argument(
        "--prompts",
        metavar="FILE",
        help="prompts for CLIP score and the analyzer: JSON {file name: prompt}, or text with one line "
        "(every picture) or one line per picture in name order (default: the workflows in studio PNGs)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--report", metavar="OUT.html", help="write a one-page HTML report with plots")
    return parser


def eval_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from evaluation.evaluate import evaluate, parse_metrics
    from evaluation.features import load_features
    from evaluation.images import EvaluationInputError, load_folder, read_prompts

    try:
        metrics = parse_metrics(args.metrics)
        images = load_folder(Path(args.images))
        reference = load_folder(Path(args.reference), read_prompts=False) if args.reference else None
        if args.prompts:
            images.prompts = read_prompts(Path(args.prompts), images)
        features = load_features(args.features)
    except EvaluationInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    result = evaluate(images, reference, metrics, features)
    if args.report:
        from evaluation.report import write_report

        write_report(result, Path(args.report), title=f"Evaluation of {Path(args.images).name}")
    if args.json:
        out.write(json.dumps(result.to_json()) + "\n")
    else:
        out.write(format_table(result.to_json()) + "\n")
    return EXIT_OK


def format_table(data: dict[str, Any]) -> str:
    """The result as a readable table."""
    lines = [f"images: {data['images']['source']} ({data['images']['count']} pictures)"]
    if data["reference"]:
        lines.append(f"reference: {data['reference']['source']} ({data['reference']['count']} pictures)")
    lines.append(f"features: {data['features']['model']} ({data['features']['dim']} dimensions)")
    lines.append("")
    lines.append(f"{'metric':<18} {'value':>12}  details")
    for name, measured in data["metrics"].items():
        value = measured.get("value")
        shown = f"{value:.6g}" if isinstance(value, int | float) else str(value)
        lines.append(f"{name:<18} {shown:>12}  {details_of(measured)}")
    for name, reason in data["skipped"].items():
        lines.append(f"{name:<18} {'skipped':>12}  {reason}")
    return "\n".join(lines)
