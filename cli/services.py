"""The services a command hands to the engine, built once from its arguments.

(Stub: the services helper replaces this with the typed Services object of models/services.py.)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from models.paths import ENV_MODEL_ROOTS, REPO_MODELS, ModelPaths


def services_from_args(args: argparse.Namespace) -> Any:
    """The command's services: model folders (ours, --models, then $STUDIO_MODELS) and settings."""
    roots = [REPO_MODELS, *(Path(p) for p in getattr(args, "models", []) or [])]
    roots += [Path(p) for p in os.environ.get(ENV_MODEL_ROOTS, "").split(os.pathsep) if p]
    paths = ModelPaths(tuple(dict.fromkeys(r.expanduser() for r in roots)))

    class _Stub:
        pass

    services = _Stub()
    services.paths = paths  # type: ignore[attr-defined]
    return services
