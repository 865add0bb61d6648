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
    input_dirs = (Path("input").resolve(), REPO / "workflows")
    from server.engine import default_workers

    workers = getattr(args, "workers", None)
    workers = default_workers() if workers is None else workers
    if workers < 0:
        print("error: --workers takes 0 (jobs in the server) or more worker processes", file=sys.stderr)
        return 2

    runners = None
    models = None
    if workers:
        from server.engine import EngineSpec
        from server.worker import ProcessRunner

        spec = EngineSpec(
            output_dir=output_dir,
            input_dirs=input_dirs,
            allow_absolute_paths=False,
            packs=tuple(getattr(args, "pack", []) or ()),
            allow_pickle=args.allow_pickle,
            attention=args.attention,
        )
        runners = [ProcessRunner(spec.for_slot(n), name=f"studio-worker-{n}") for n in range(workers)]
    else:
        from models.manager import ModelManager

        models = ModelManager(allow_pickle=args.allow_pickle, attention=args.attention)  # shared by every run

    def settings_factory() -> RunSettings:
        return RunSettings(
            output_dir=output_dir,
            input_dirs=input_dirs,
            allow_absolute_paths=False,
            models=models,
            allow_pickle=args.allow_pickle,
            attention=args.attention,
        )

    from server.history import StateFolderRefused
    from ui.studio import serve

    state = getattr(args, "state", None)
    try:
        serve(
            args.host,
            args.port,
            registry,
            Executor(registry),
            settings_factory,
            REPO / "workflows",
            token,
            state_dir=Path(state).resolve() if state else None,
            runners=runners,
        )
    except StateFolderRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    finally:
        for runner in runners or ():
            runner.close()
    return 0
