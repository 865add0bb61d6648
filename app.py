#!/usr/bin/env python3
"""Workflow Studio: one entry point.

    python app.py                      serve the browser studio on http://127.0.0.1:7860
    python app.py run WORKFLOW         run a workflow (JSON, a studio PNG, or a ComfyUI file) headless
    python app.py validate WORKFLOW    report every problem in a workflow
    python app.py nodes [--json]       list the node types
    python app.py schema               print the JSON Schema of the workflow format
    python app.py import-comfy FILE    convert a ComfyUI workflow into a studio one
    python app.py sweep WORKFLOW ...   run every combination of inputs and seeds, locally or on Ray
    python app.py eval --images DIR    measure pictures: FID, KID, CMMD, precision/recall, CLIP score
    python app.py train-lora ...       train a LoRA from pictures with captions (docs/training.md)
    python app.py train-embedding ...  train a textual-inversion embedding from pictures with captions

Only the standard library is imported here, so --help, validate, nodes and schema
start fast; torch, diffusers and gradio are loaded only by what needs them.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="Node-based workflow studio for image generation and understanding.",
    )
    parser.add_argument(
        "--pack",
        action="append",
        default=[],
        metavar="MODULE",
        help="also load the node pack MODULE (a module with a NODES tuple); repeatable",
    )
    parser.add_argument(
        "--models",
        action="append",
        default=[],
        metavar="DIR",
        help="another models folder to search (a ComfyUI or A1111 one works); repeatable",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load pickle weight files (.ckpt/.pt/.bin), tensors only (weights_only=True)",
    )
    parser.add_argument(
        "--model-memory",
        type=float,
        default=None,
        metavar="GIB",
        help="most memory loaded models may take on the device, in GiB; the least recently used "
        "are offloaded (GPU) or dropped (CPU) beyond it (default: 80%% of a GPU, 12 GiB on the CPU)",
    )
    parser.add_argument(
        "--attention",
        choices=("auto", "triton", "sdpa"),
        default="auto",
        help="attention kernel: auto = our Triton kernel on CUDA, PyTorch SDPA elsewhere",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    studio = commands.add_parser("studio", help="serve the browser studio (the default)")
    _studio_args(parser)  # so `app.py --port 8000` works without naming the command
    _studio_args(studio, suppress_defaults=True)

    run = commands.add_parser("run", help="run a workflow headless")
    run.add_argument(
        "workflow",
        help="a workflow .json, a .png the studio saved, or a ComfyUI workflow (imported on the fly)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help="override a constant input; repeatable",
    )
    run.add_argument("--out", default="output", metavar="DIR", help="output folder (default: output/)")
    run.add_argument(
        "--input-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="where LoadImage looks for files (default: the workflow's folder, "
        "the current folder and input/)",
    )
    run.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the run's seed (default: the seed stored in a PNG, else random)",
    )
    run.add_argument("--json", action="store_true", help="print one JSON event per line")

    sweep = commands.add_parser(
        "sweep",
        help="run every combination of input values, prompts and seeds (local workers or a Ray cluster)",
    )
    sweep.add_argument("workflow", help="a workflow .json, a studio .png or a ComfyUI workflow")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NODE.INPUT=V1,V2,...",
        help="an input and the values to try; repeatable (every combination runs); quote a value "
        "or write \\, to keep a comma in it",
    )
    sweep.add_argument(
        "--seeds",
        default=None,
        metavar="A-B",
        help="run each combination with seeds A to B (or a list: 1,5,9): the seed goes into every node's "
        "seed input and is the run seed, so an item draws what `run --set NODE.seed=N --seed N` draws; "
        "without --seeds items keep the workflow's seeds and run with seed 0, so a rerun reproduces",
    )
    sweep.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="prompts to try: .txt (one per line), .csv or .jsonl (columns or keys NODE.INPUT)",
    )
    sweep.add_argument(
        "--prompt-input",
        default=None,
        metavar="NODE.INPUT",
        help="where the prompts of a .txt file go, several separated by commas "
        "(default: the text input of the positive prompt)",
    )
    sweep.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help="override a constant input for every item; repeatable",
    )
    sweep.add_argument("--out", required=True, metavar="DIR", help="where the pictures and manifest.jsonl go")
    sweep.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="workers running items at once (default: 1 locally; with --ray, one per GPU, else per CPU)",
    )
    sweep.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run the workers as Ray actors on the cluster at ADDRESS (`auto`: start a local Ray)",
    )
    sweep.add_argument(
        "--resume", action="store_true", help="skip the items DIR/manifest.jsonl already has as done"
    )
    sweep.add_argument(
        "--input-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="where LoadImage looks for files (default: the workflow's folder, the current folder, input/)",
    )
    sweep.add_argument("--json", action="store_true", help="print one JSON line per finished item")

    from cli.evaluate import add_eval_parser

    add_eval_parser(commands)

    from cli.train import add_train_parsers

    add_train_parsers(commands)

    validate = commands.add_parser("validate", help="report every problem in a workflow")
    validate.add_argument("workflow")
    validate.add_argument("--json", action="store_true", help="print the issues as JSON")

    nodes = commands.add_parser("nodes", help="list the node types")
    nodes.add_argument("--json", action="store_true", help="full descriptions as JSON")

    commands.add_parser("schema", help="print the JSON Schema of the workflow file")

    comfy = commands.add_parser(
        "import-comfy", help="convert a ComfyUI workflow (API or UI format, or a PNG that carries one)"
    )
    comfy.add_argument("file", help="a ComfyUI workflow .json, or a PNG ComfyUI saved")
    comfy.add_argument("--out", default=None, help="where to write (default: FILE's stem + .studio.json)")
    comfy.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _studio_args(parser: argparse.ArgumentParser, suppress_defaults: bool = False) -> None:
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress_defaults else value

    parser.add_argument(
        "--host",
        default=default("127.0.0.1"),
        help="address to bind (default 127.0.0.1; any other needs a token)",
    )
    parser.add_argument("--port", type=int, default=default(7860), help="port (default 7860)")
    parser.add_argument(
        "--token",
        default=default(None),
        help="access token; generated and printed when binding beyond loopback",
    )
    parser.add_argument(
        "--out",
        default=default("output"),
        metavar="DIR",
        help="output folder of the studio (default output/)",
    )
    parser.add_argument(
        "--input",
        default=default("input"),
        metavar="DIR",
        help="input folder: LoadImage's pictures, uploads and painted masks (default input/)",
    )
    parser.add_argument(
        "--library",
        default=default("user/workflows"),
        metavar="DIR",
        help="where the page saves named workflows (default user/workflows/)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default(None),
        metavar="N",
        help="worker processes that run jobs, N jobs at once (default: one per GPU, else 1; "
        "0 runs jobs in the server's own threads, for debugging: a busy job then slows the page)",
    )
    parser.add_argument(
        "--ray",
        default=default(None),
        metavar="ADDRESS",
        help="run the job queue's workers as Ray actors on the cluster at ADDRESS "
        "(`auto`: start a local Ray); --workers then counts actors",
    )
    parser.add_argument(
        "--state",
        default=default(None),
        metavar="DIR",
        help="where the studio keeps its run history, never served and not inside --out "
        "(default: $XDG_STATE_HOME/workflow-studio/ plus a folder for the output folder)",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "studio"
    # --models and $STUDIO_MODELS become the command's services (cli/services.py), handed down.
    if args.model_memory is not None and not 0 < args.model_memory < 1e9:
        print(f"error: --model-memory takes GiB above 0, not {args.model_memory:g}", file=sys.stderr)
        return 2
    if command == "run":
        from cli.run import run_command

        return run_command(args)
    if command == "sweep":
        from cli.sweep import sweep_command

        return sweep_command(args)
    if command == "eval":
        from cli.evaluate import eval_command

        return eval_command(args)
    if command in ("train-lora", "train-embedding"):
        from cli.train import train_command

        return train_command(args)
    if command == "validate":
        from cli.info import validate_command

        return validate_command(args)
    if command == "nodes":
        from cli.info import nodes_command

        return nodes_command(args)
    if command == "import-comfy":
        from cli.comfy import import_comfy_command

        return import_comfy_command(args)
    if command == "schema":
        from cli.info import schema_command

        return schema_command(args)
    from cli.studio import studio_command

    return studio_command(args)


if __name__ == "__main__":
    sys.exit(main())
