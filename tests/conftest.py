"""Shared fixtures. Tests run offline: nothing may reach a model hub."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Triton kernels run on the CPU through its interpreter in tests; this must be set before
# any kernel module is imported, and the model manager imports them when loading models.
os.environ.setdefault("TRITON_INTERPRET", "1")
# The studio keeps its history under $XDG_STATE_HOME; tests keep theirs out of the home folder.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="studio-test-state-")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from graph.executor import Executor  # noqa: E402
from models.services import Services  # noqa: E402
from nodes.registry import Registry, default_registry  # noqa: E402
from tests.fixtures.services import services_over  # noqa: E402

TEST_PACK = "tests.packs.testing"


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with tiny checkpoints in every format (built once for the session); the
    ``services`` fixture searches it, as a command does a folder given with ``--models``."""
    from tests.fixtures.models_root import build_models_root

    return build_models_root(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def manager():
    """One model manager for the session's diffusion tests (CPU, float32)."""
    from models.manager import ModelManager

    return ModelManager(device="cpu")


@pytest.fixture(scope="session")
def services(models_root: Path, manager) -> Services:
    """The session's services: the repository's models/ and then ``models_root``, with the
    session's model manager."""
    return services_over(models_root, manager=manager)


@pytest.fixture
def registry() -> Registry:
    reg = default_registry()
    reg.add_pack(TEST_PACK)
    assert not reg.problems, reg.problems
    return reg


@pytest.fixture
def executor(registry: Registry) -> Executor:
    return Executor(registry)
