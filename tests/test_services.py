"""Services are handed in, not reached for: model folders and the model manager come from the
command, through the registry and the run's context, never from the environment.

Oracles: the files a test puts in its own folders (a registry lists exactly those), the roots a
test gives (the services hold exactly those, in order), and the source tree itself (only the
command layer names the environment variable).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cli.services import services_from_args
from graph.executor import Executor
from graph.validate import validate
from models.paths import ENV_MODEL_ROOTS, REPO_MODELS, ModelPaths
from models.services import Services
from nodes import types as T
from nodes.base import Context, Input, Node, Output, RunSettings
from nodes.registry import Registry, default_registry
from nodes.support import model_input
from tests.helpers import link, node, workflow

REPO = Path(__file__).resolve().parent.parent


def checkpoints_folder(root: Path, *names: str) -> Path:
    """A models folder whose checkpoints/ holds empty files ``names``."""
    (root / "checkpoints").mkdir(parents=True)
    for name in names:
        (root / "checkpoints" / name).write_bytes(b"")
    return root


def ckpt_choices(registry: Registry) -> list[str]:
    (loader,) = [d for d in registry.describe() if d["type"] == "CheckpointLoader"]
    return next(spec["choices"] for spec in loader["inputs"] if spec["name"] == "ckpt_name")


# --------------------------------------------------------------------------- registries and runs


def test_two_registries_over_different_folders_offer_different_checkpoints(tmp_path: Path) -> None:
    first = default_registry(services=Services(ModelPaths((checkpoints_folder(tmp_path / "a", "a.ckpt"),))))
    second = default_registry(services=Services(ModelPaths((checkpoints_folder(tmp_path / "b", "b.ckpt"),))))
    assert ckpt_choices(first) == ["a.ckpt"] and ckpt_choices(second) == ["b.ckpt"]
    loads_a = workflow(
        ck=node("CheckpointLoader", ckpt_name="a.ckpt"), out=node("ShowValue", value=link("ck", "model"))
    )
    assert validate(loads_a, first).ok
    (issue,) = validate(loads_a, second).issues
    assert (issue.code, issue.node_id, issue.input) == ("bad_value", "ck", "ckpt_name")
    assert "'b.ckpt'" in issue.message  # the choices of the registry that checked it


def test_a_registry_without_services_lists_the_repository_models_only() -> None:
    registry = default_registry()
    assert registry.services.paths.roots == (REPO_MODELS,)
    assert ckpt_choices(registry) == ModelPaths((REPO_MODELS,)).list("checkpoints")


class RootsSeen(Node):
    """Shows the model roots of the services its run handed it (a node of this test only)."""

    description = "Show the run's model roots."
    output_node = True
    inputs = (model_input("ckpt_name", "checkpoints", "any checkpoint"),)
    outputs = (Output("roots", T.STRING),)

    def run(self, ctx: Context, ckpt_name: str) -> dict[str, Any]:
        return {"roots": os.pathsep.join(str(root) for root in ctx.services.paths.roots)}


def test_a_run_hands_its_services_to_the_nodes(tmp_path: Path) -> None:
    ours = Services(ModelPaths((checkpoints_folder(tmp_path / "ours", "m.ckpt"),)))
    theirs = Services(ModelPaths((checkpoints_folder(tmp_path / "theirs", "m.ckpt"),)))
    registry = Registry(services=ours)
    registry.add(RootsSeen)
    checked = validate(workflow(r=node("RootsSeen", ckpt_name="m.ckpt")), registry)
    assert checked.ok and checked.workflow is not None
    executor = Executor(registry)
    unsaid = executor.run(checked.workflow)  # no settings: the registry's services
    said = Executor(registry).run(checked.workflow, settings=RunSettings(services=theirs))
    assert unsaid.outputs["r"]["roots"] == str(tmp_path / "ours")
    assert said.outputs["r"]["roots"] == str(tmp_path / "theirs")


def test_a_loader_fingerprints_the_file_in_the_runs_folders(tmp_path: Path) -> None:
    from nodes.diffusion import CheckpointLoader

    there = RunSettings(services=Services(ModelPaths((checkpoints_folder(tmp_path / "a", "m.ckpt"),))))
    elsewhere = RunSettings(services=Services(ModelPaths((checkpoints_folder(tmp_path / "b"),))))
    inputs = {"ckpt_name": "m.ckpt", "prediction": "auto"}
    assert CheckpointLoader().fingerprint(inputs, elsewhere) == "missing"
    assert CheckpointLoader().fingerprint(inputs, there) not in (None, "missing")


def test_choices_from_the_disk_need_the_services() -> None:
    spec = Input("name", T.STRING, choices=lambda services: services.paths.list("checkpoints"))
    with pytest.raises(TypeError, match="services"):
        spec.current_choices()
    assert Input("fixed", T.STRING, choices=("a", "b")).current_choices() == ["a", "b"]


# --------------------------------------------------------------------------- the model manager


def test_the_manager_is_made_once_by_whichever_thread_asks_first() -> None:
    services = Services(allow_pickle=True, attention="sdpa", device="cpu")
    assert not services.has_models and services.loads == 0
    start = threading.Barrier(8)
    made: list[Any] = []

    def ask() -> None:
        start.wait()
        made.append(services.models())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 8 and all(manager is made[0] for manager in made)
    manager = made[0]
    assert (manager.device, manager.allow_pickle, manager.attention) == ("cpu", True, "sdpa")
    assert services.has_models and services.models() is manager


def test_services_sharing_a_manager_take_its_settings() -> None:
    from models.manager import ModelManager

    manager = ModelManager(device="cpu", allow_pickle=True, attention="sdpa")
    services = Services.sharing(manager, ModelPaths((REPO_MODELS,)))
    assert services.models() is manager
    assert (services.device, services.allow_pickle, services.attention) == ("cpu", True, "sdpa")
    manager.loads = 3
    assert services.loads == 3


def test_listing_and_validating_never_import_torch() -> None:
    script = (
        "import sys\n"
        "from models.services import Services\n"
        "from nodes.registry import default_registry\n"
        "registry = default_registry(services=Services())\n"
        "assert registry.describe() and not registry.problems\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- the command layer


def args(*models: Path, allow_pickle: bool = False, attention: str = "auto") -> argparse.Namespace:
    return argparse.Namespace(models=[str(m) for m in models], allow_pickle=allow_pickle, attention=attention)


def test_the_command_searches_models_then_the_environment_folders(tmp_path: Path) -> None:
    given, first, second = tmp_path / "given", tmp_path / "first", tmp_path / "second"
    environ: Mapping[str, str] = {ENV_MODEL_ROOTS: os.pathsep.join([str(first), "", str(second)])}
    before = dict(os.environ)
    services = services_from_args(args(given, allow_pickle=True, attention="sdpa"), environ)
    assert services.paths.roots == (REPO_MODELS, given, first, second)
    assert (services.allow_pickle, services.attention, services.device) == (True, "sdpa", None)
    assert not services.has_models  # made by the first node that needs it
    assert dict(os.environ) == before  # read, never written
    assert services_from_args(args(), {}).paths.roots == (REPO_MODELS,)


def app_nodes(*arguments: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The checkpoints ``app.py ... nodes --json`` offers in CheckpointLoader."""
    env = {key: value for key, value in os.environ.items() if key != ENV_MODEL_ROOTS}
    done = subprocess.run(
        [sys.executable, str(REPO / "app.py"), *arguments, "nodes", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(REPO), **(environ or {})},
    )
    assert done.returncode == 0, done.stderr
    (loader,) = [d for d in json.loads(done.stdout)["nodes"] if d["type"] == "CheckpointLoader"]
    return next(spec["choices"] for spec in loader["inputs"] if spec["name"] == "ckpt_name")


def test_app_offers_the_checkpoints_of_models_and_of_the_environment(tmp_path: Path) -> None:
    given = checkpoints_folder(tmp_path / "given", "given.ckpt")
    named = checkpoints_folder(tmp_path / "named", "named.ckpt")
    assert "given.ckpt" in app_nodes("--models", str(given))
    from_env = app_nodes(environ={ENV_MODEL_ROOTS: str(named)})
    assert "named.ckpt" in from_env and "given.ckpt" not in from_env


def test_a_worker_builds_its_services_from_the_spec(tmp_path: Path) -> None:
    from server.engine import EngineSpec, WorkerEngine

    root = checkpoints_folder(tmp_path / "models", "w.ckpt")
    engine = WorkerEngine(EngineSpec(output_dir=tmp_path, model_roots=(root,), allow_pickle=True))
    assert engine.registry.services is engine.services
    assert engine.services.paths.roots == (root,) and engine.services.allow_pickle
    assert ckpt_choices(engine.registry) == ["w.ckpt"]
    assert engine.loads == 0 and not engine.services.has_models
    assert WorkerEngine(EngineSpec(output_dir=tmp_path)).services.paths.roots == (REPO_MODELS,)


# --------------------------------------------------------------------------- the source tree


#: Where the name of the models variable may appear: its definition, the command layer (cli/ and
#: app.py, where cli/services.py reads it), and this test.
MAY_NAME_IT = {"models/paths.py", "app.py", "tests/test_services.py"}
SKIPPED = {".venv", "node_modules", ".git", "test-artifacts"}


def python_files() -> list[Path]:
    found = []
    for path in REPO.rglob("*.py"):
        parts = path.relative_to(REPO).parts
        if not SKIPPED.intersection(parts):
            found.append(path)
    return found


def test_only_the_commands_name_the_models_variable() -> None:
    """Nothing below the command layer (nodes, models, graph, server, training, bench, tests) reads
    or writes STUDIO_MODELS: they are handed services instead."""
    offenders = []
    for path in python_files():
        where = path.relative_to(REPO).as_posix()
        if where in MAY_NAME_IT or where.startswith("cli/"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if ENV_MODEL_ROOTS in text or "ENV_MODEL_ROOTS" in text:
            offenders.append(where)
    assert not offenders, f"name the services instead of the models variable in: {offenders}"
    for path in [REPO / "app.py", *sorted((REPO / "cli").glob("*.py"))]:  # the commands read it only
        for line in path.read_text(encoding="utf-8").splitlines():
            if ENV_MODEL_ROOTS in line or "ENV_MODEL_ROOTS" in line:
                assert not any(write in line for write in ("environ[", "setenv", "putenv")), (path.name, line)
