"""``app.py`` (no command): serve the browser studio."""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
from pathlib import Path

from cli.info import load_registry
from server.net import is_loopback  # noqa: F401 - part of this module's interface

REPO = Path(__file__).resolve().parent.parent


def studio_command(args: argparse.Namespace) -> int:
    from graph.executor import Executor
    from nodes.base import RunSettings

    # Ctrl-C (SIGINT) stops the studio even when the process that started it ignored SIGINT, which
    # a child inherits and Python then leaves ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    token = args.token
    if not is_loopback(args.host) and not token:
        token = secrets.token_urlsafe(18)
        print(f"Binding to {args.host}, beyond this machine: access needs the token {token}", flush=True)
    registry = load_registry(args)
    output_dir = Path(args.out).resolve()
    input_dir = Path(getattr(args, "input", "input")).resolve()
    input_dirs = (input_dir, REPO / "workflows")
    workers = getattr(args, "workers", None)
    ray = getattr(args, "ray", None)
    if workers is not None and workers < 0 or (ray is not None and workers == 0):
        print(
            "error: --workers takes 0 (jobs in the server) or more worker processes; with --ray, "
            "1 or more actors",
            file=sys.stderr,
        )
        return 2
    if workers is None and ray is None:
        from server.engine import default_workers

        workers = default_workers()

    services = registry.services  # the command's: model folders, and the manager of in-server runs
    runners = None
    if workers or ray is not None:
        from cli.workers import WorkersUnavailable, engine_spec, make_workers

        packs = tuple(getattr(args, "pack", []) or ())
        spec = engine_spec(services, output_dir, input_dirs, packs)
        try:
            made = make_workers(spec, workers, ray, "studio-", spare_cores=1)
        except WorkersUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        runners = made.runners
        print(f"Jobs run on {made.where}", flush=True)

    def settings_factory() -> RunSettings:
        return RunSettings(
            output_dir=output_dir,
            input_dirs=input_dirs,
            allow_absolute_paths=False,
            services=services,  # one model manager, made on first use, shared by every in-server run
        )

    from server.folders import StudioFolders
    from server.history import StateFolderRefused
    from ui.serve import serve

    folders = StudioFolders(
        input_dir=input_dir,
        library_dir=Path(getattr(args, "library", "user/workflows")).resolve(),
        examples_dir=REPO / "workflows",
    )

    state = getattr(args, "state", None)
    try:
        serve(
            args.host,
            args.port,
            registry,
            Executor(registry),
            settings_factory,
            folders,
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
