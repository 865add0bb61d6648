"""``app.py`` (no command): serve the browser studio."""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from cli.info import load_registry
from server.net import is_loopback  # noqa: F401 - part of this module's interface

REPO = Path(__file__).resolve().parent.parent


def studio_command(args: argparse.Namespace) -> int:
    from graph.executor import Executor
    from nodes.base import RunSettings

    token = args.token
    if not is_loopback(args.host) and not token:
        token = secrets.token_urlsafe(18)
        print(f"Binding to {args.host}, beyond this machine: access needs the token {token}", flush=True)
    registry = load_registry(args)
    output_dir = Path(args.out).resolve()

    from models.manager import ModelManager

    models = ModelManager(allow_pickle=args.allow_pickle, attention=args.attention)  # shared by every run

    def settings_factory() -> RunSettings:
        return RunSettings(
            output_dir=output_dir,
            input_dirs=(Path("input").resolve(), REPO / "workflows"),
            allow_absolute_paths=False,
            models=models,
        )

    from ui.studio import serve

    try:
        serve(args.host, args.port, registry, Executor(registry), settings_factory, REPO / "workflows", token)
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0
