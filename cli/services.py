"""The services a command hands to the engine, built once from its arguments.

This is the one place that reads ``$STUDIO_MODELS``: a user's setting, like ``--models DIR``,
read by the commands. Everything below the command layer is handed the :class:`Services`
built here (the registry, the executor's runs, the workers' specs) and never looks at the
environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from models.paths import ENV_MODEL_ROOTS, ModelPaths
from models.services import Services


def model_roots_from_env(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The model folders ``$STUDIO_MODELS`` names (separated like ``PATH``), in order."""
    environ = os.environ if environ is None else environ
    return [Path(part) for part in environ.get(ENV_MODEL_ROOTS, "").split(os.pathsep) if part]


def services_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Services:
    """The command's services: the model folders (the repository's ``models/``, each
    ``--models DIR``, then those ``$STUDIO_MODELS`` names) and the model manager's settings
    (``--allow-pickle``, ``--attention``)."""
    extra = [Path(folder) for folder in getattr(args, "models", None) or []]
    # Absolute, so workers started elsewhere (Ray actors, in their own folder) find the same ones.
    roots = [root.expanduser().absolute() for root in [*extra, *model_roots_from_env(environ)]]
    paths = ModelPaths.with_roots(roots)
    memory = getattr(args, "model_memory", None)
    return Services(
        paths=paths,
        allow_pickle=bool(getattr(args, "allow_pickle", False)),
        attention=getattr(args, "attention", None) or "auto",
        budget_bytes=int(memory * 1024**3) if memory is not None else None,
    )
