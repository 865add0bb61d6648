"""TrainLoRA and TrainEmbedding: training a concept as a job of the studio.

A few steps on the bundled toy-sd through the executor: each step is reported, loss plots are
sent as previews, the new file lands in the models folder (never over another: a name taken is an
error on ``name``) and LoraLoader lists and uses it at once; a cancel stops the training and keeps
what it learnt, as the trainer does; a training is never answered from the cache; checkpoints
that are not SD 1.x/2.x are refused on ``ckpt_name``. In a worker process (as the studio runs
jobs) the progress, previews and cancel travel the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from graph.events import Event, NodeCached, NodeFailed, NodePreview, NodeProgress, NodeStarted
from graph.executor import Executor
from models.paths import REPO_MODELS, ModelPaths
from models.services import Services
from nodes.base import CancelToken, RunSettings
from nodes.registry import Registry, default_registry
from tests.helpers import link, node, valid, workflow

COLORS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 60), "yellow": (230, 210, 40)}


def write_dataset(folder: Path, count: int = 4) -> Path:
    """``count`` 32x32 pictures of a small cross (the concept) in turn of colours, each captioned."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name, color = list(COLORS.items())[i % len(COLORS)]
        picture = Image.new("RGB", (32, 32), (245, 245, 245))
        draw = ImageDraw.Draw(picture)
        x, y = 4 + 3 * i, 6 + 2 * i
        draw.rectangle((x + 4, y, x + 8, y + 12), fill=color)
        draw.rectangle((x, y + 4, x + 12, y + 8), fill=color)
        picture.save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(f"a {name} <plus>")
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, manager: Any) -> dict[str, Any]:
    """A models folder of this module's own (first, so new files go there), the repository's
    after it (toy-sd), and an input folder with a dataset."""
    root = tmp_path_factory.mktemp("training-nodes")
    models = root / "models"
    for kind in ("loras", "embeddings"):
        (models / kind).mkdir(parents=True)
    inputs = root / "input"
    write_dataset(inputs / "datasets" / "plus")
    services = Services.sharing(manager, ModelPaths((models, REPO_MODELS)))
    return {"root": root, "models": models, "inputs": inputs, "services": services}


@pytest.fixture
def registry(world: dict[str, Any]) -> Registry:
    registry = default_registry(services=world["services"])
    assert not registry.problems, registry.problems
    return registry


@pytest.fixture
def run(world: dict[str, Any], registry: Registry) -> Iterator[Any]:
    """Run a workflow (dict) through one executor: (result, events)."""
    executor = Executor(registry)
    settings = RunSettings(
        output_dir=world["root"] / "out",
        input_dirs=(world["inputs"],),
        allow_absolute_paths=False,
        services=world["services"],
    )

    def go(data: dict[str, Any], cancel_at: int | None = None) -> tuple[Any, list[Event]]:
        events: list[Event] = []
        token = CancelToken()

        def listen(event: Event) -> None:
            events.append(event)
            if cancel_at is not None and isinstance(event, NodeProgress) and event.step >= cancel_at:
                token.cancel()

        result = executor.run(valid(data, registry), settings=settings, listener=listen, cancel=token)
        return result, events

    yield go


def lora_flow(name: str, **inputs: Any) -> dict[str, Any]:
    settings = {"steps": 4, "batch": 2, "token": "<plus>", "seed": 3, **inputs}
    return workflow(t=node("TrainLoRA", ckpt_name="toy-sd", dataset="plus", name=name, **settings))


def failure(events: list[Event]) -> NodeFailed:
    failed = [e for e in events if isinstance(e, NodeFailed)]
    assert failed, [e.kind for e in events]
    return failed[0]


def draw_flow(lora: str | None, prompt: str = "a red <plus>") -> dict[str, Any]:
    """toy-sd's txt2img (4 steps), through LoraLoader when ``lora`` is given."""
    model, clip = link("ck", "model"), link("ck", "clip")
    nodes = {"ck": node("CheckpointLoader", ckpt_name="toy-sd")}
    if lora is not None:
        nodes["lora"] = node("LoraLoader", model=model, clip=clip, lora_name=lora, strength_model=1.0)
        model, clip = link("lora", "model"), link("lora", "clip")
    nodes |= {
        "pos": node("CLIPTextEncode", clip=clip, text=prompt),
        "neg": node("CLIPTextEncode", clip=clip, text=""),
        "lat": node("EmptyLatent", width=32, height=32, batch_size=1, vae=link("ck", "vae")),
        "s": node(
            "Sampler",
            model=model,
            positive=link("pos", "conditioning"),
            negative=link("neg", "conditioning"),
            latent=link("lat", "latent"),
            seed=5,
            steps=4,
            cfg=5.0,
            sampler="euler",
        ),
        "d": node("VAEDecode", vae=link("ck", "vae"), latent=link("s", "latent")),
        "show": node("PreviewImage", images=link("d", "image")),
    }
    return workflow(**nodes)


def test_a_lora_trains_as_a_job_and_lora_loader_uses_it_at_once(
    world: dict[str, Any], registry: Registry, run: Any
) -> None:
    result, events = run(lora_flow("plus-lora"))
    assert result.status == "done", result.error
    progress = [e for e in events if isinstance(e, NodeProgress)]
    assert [(e.step, e.total) for e in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # each a node_progress event to every listener, with the step's loss for the Train panel
    shown = [e.to_dict() for e in progress]
    assert all(d["event"] == "node_progress" and d["metrics"]["loss"] > 0 for d in shown)
    previews = [e.image for e in events if isinstance(e, NodePreview)]
    assert previews and all(p.shape[0] == 1 and p.shape[-1] == 3 and p.dtype == np.float32 for p in previews)
    outputs = result.outputs["t"]
    assert outputs["name"] == "plus-lora.safetensors" and outputs["steps_done"] == 4
    assert np.isfinite(outputs["loss"]) and outputs["loss"] > 0
    assert np.array_equal(outputs["loss_plot"], previews[-1])  # the last plot is the final one
    written = world["models"] / "loras" / "plus-lora.safetensors"
    assert written.is_file()
    assert not (REPO_MODELS / "loras" / "plus-lora.safetensors").exists()

    # LoraLoader offers it at once (choices are read afresh) and draws something else with it
    described = {d["type"]: d for d in registry.describe()}
    lora_input = next(s for s in described["LoraLoader"]["inputs"] if s["name"] == "lora_name")
    assert "plus-lora.safetensors" in lora_input["choices"]
    with_lora, _ = run(draw_flow("plus-lora.safetensors"))
    without, _ = run(draw_flow(None))
    assert with_lora.status == without.status == "done", (with_lora.error, without.error)
    picture = with_lora.outputs["show"]["images"]
    assert picture.shape == (1, 32, 32, 3)
    assert np.abs(picture - without.outputs["show"]["images"]).max() > 1e-3


def test_the_lora_nodes_targets_reach_the_trainer(world: dict[str, Any], run: Any) -> None:
    """``targets`` "all" puts LoRA layers on the ResNet convolutions too (the toy heart's recipe);
    the default, attention only, does not."""
    from safetensors import safe_open

    files = {}
    for targets in ("attention", "all"):
        result, _ = run(lora_flow(f"plus-{targets}", steps=1, targets=targets))
        assert result.status == "done", result.error
        with safe_open(str(world["models"] / "loras" / f"plus-{targets}.safetensors"), "pt") as handle:
            files[targets] = set(handle.keys())
    assert not any("conv1" in k for k in files["attention"])
    assert any("conv1" in k for k in files["all"]) and files["attention"] < files["all"]


def test_the_lora_nodes_protected_prompts_reach_the_trainer(world: dict[str, Any], run: Any) -> None:
    """``protect_prompts`` (one per line, blank lines skipped) constrains a cross-attention LoRA, and
    the file's settings say so; with other targets the training is refused before it starts."""
    import json

    from safetensors import safe_open

    keep = "a red circle at the top left\n\n a blue square \n"
    result, _ = run(lora_flow("plus-kept", steps=1, targets="cross", protect_prompts=keep))
    assert result.status == "done", result.error
    with safe_open(str(world["models"] / "loras" / "plus-kept.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["settings"])["protected_prompts"] == 2
    assert int(metadata["protected_directions"]) >= 1

    refused, events = run(lora_flow("plus-refused", steps=1, protect_prompts=keep))
    assert refused.status == "failed" and "targets 'cross'" in failure(events).message
    assert not (world["models"] / "loras" / "plus-refused.safetensors").exists()


def test_the_lora_nodes_pivotal_rows_go_into_the_lora_and_prompts_through_it_use_them(
    world: dict[str, Any], run: Any
) -> None:
    """``pivotal``: the token's learnt rows are bundled into the LoRA file (``bundle_emb.TOKEN.``), so
    a prompt through LoraLoader says the new word; the same LoRA without its bundle draws otherwise.
    The loss settings reach the trainer (its metadata lists them)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    loss_settings = {"snr_gamma": 5.0, "shift": 2, "timestep_bias": "later"}
    result, _ = run(lora_flow("pivot", steps=2, pivotal=True, init_word="circle", vectors=2, **loss_settings))
    assert result.status == "done", result.error
    written = world["models"] / "loras" / "pivot.safetensors"
    state = load_file(str(written))
    assert state["bundle_emb.<plus>.emb_params"].shape == (2, 64)
    with safe_open(str(written), "pt") as handle:
        settings = json.loads(handle.metadata()["settings"])
    assert settings["pivotal"] is True
    assert {k: settings[k] for k in loss_settings} == loss_settings
    save_file(
        {k: v for k, v in state.items() if not k.startswith("bundle_emb.")}, str(written.with_stem("bare"))
    )
    with_rows, _ = run(draw_flow("pivot.safetensors"))
    without_rows, _ = run(draw_flow("bare.safetensors"))
    assert with_rows.status == without_rows.status == "done", (with_rows.error, without_rows.error)
    difference = with_rows.outputs["show"]["images"] - without_rows.outputs["show"]["images"]
    assert np.abs(difference).max() > 1e-3


def test_a_training_is_never_served_from_the_cache_and_a_taken_name_is_refused(
    world: dict[str, Any], run: Any
) -> None:
    (world["models"] / "loras" / "taken.safetensors").write_bytes(b"not trained here")
    result, events = run(lora_flow("taken"))
    assert result.status == "failed"
    problem = failure(events)
    assert (
        problem.input == "name"
        and "taken.safetensors" in problem.message
        and "another name" in problem.message
    )
    assert (world["models"] / "loras" / "taken.safetensors").read_bytes() == b"not trained here"

    flow = lora_flow("once", steps=1)
    first, _ = run(flow)
    assert first.status == "done", first.error
    again, events = run(flow)  # the same workflow: it runs again (and the name is taken now)
    assert not [e for e in events if isinstance(e, NodeCached)]
    assert [e for e in events if isinstance(e, NodeStarted)]
    assert again.status == "failed" and failure(events).input == "name"


def test_cancel_stops_the_training_and_keeps_what_it_learnt(world: dict[str, Any], run: Any) -> None:
    from safetensors import safe_open

    result, events = run(lora_flow("stopped", steps=200), cancel_at=2)
    assert result.status == "cancelled"
    done = max(e.step for e in events if isinstance(e, NodeProgress))
    assert done < 10
    written = world["models"] / "loras" / "stopped.safetensors"
    with safe_open(str(written), "pt") as handle:  # saved as the trainer does on a stop
        assert int(handle.metadata()["steps_done"]) <= done + 1
    assert [e for e in events if isinstance(e, NodePreview)]  # the plot of what was done


@pytest.mark.parametrize(
    ("change", "where", "words"),
    [
        ({"ckpt_name": "toy-sd3"}, "ckpt_name", "not SD3, Flux or SDXL"),
        ({"dataset": "nothing-here"}, "dataset", "there is no dataset 'nothing-here'"),
        ({"dataset": "../plus"}, "dataset", "not a dataset name"),
        ({"name": "../escape"}, "name", "cannot name a file"),
        ({"token": "two words"}, "token", "one word"),
        ({"resolution": 30}, "resolution", "multiple of 8"),
        ({"prior_preservation": True}, "class_prompt", "class prompt"),
    ],
)
def test_bad_inputs_fail_before_training_naming_the_input(
    run: Any, change: dict[str, Any], where: str, words: str
) -> None:
    flow = lora_flow("never-written")
    flow["nodes"]["t"]["inputs"].update(change)
    result, events = run(flow)
    assert result.status == "failed"
    problem = failure(events)
    assert problem.input == where and words in problem.message, problem
    assert not [e for e in events if isinstance(e, NodeProgress)]


def test_an_embedding_trains_as_a_job_and_prompts_use_it_by_name(world: dict[str, Any], run: Any) -> None:
    flow = workflow(
        t=node(
            "TrainEmbedding",
            ckpt_name="toy-sd",
            dataset="plus",
            name="plus-word",
            token="<plus>",
            init_word="cross",
            steps=3,
            batch=2,
        )
    )
    result, events = run(flow)
    assert result.status == "done", result.error
    assert result.outputs["t"]["name"] == "plus-word.safetensors"
    assert [e.step for e in events if isinstance(e, NodeProgress)] == [1, 2, 3]
    assert (world["models"] / "embeddings" / "plus-word.safetensors").is_file()
    with_word, _ = run(draw_flow(None, "a red embedding:plus-word"))
    plain, _ = run(draw_flow(None, "a red"))
    assert with_word.status == plain.status == "done", (with_word.error, plain.error)
    assert np.abs(with_word.outputs["show"]["images"] - plain.outputs["show"]["images"]).max() > 1e-3


def test_the_dataset_input_is_marked_for_the_page_to_list_datasets(registry: Registry) -> None:
    described = {d["type"]: d for d in registry.describe()}
    for node_type in ("TrainLoRA", "TrainEmbedding"):
        spec = next(s for s in described[node_type]["inputs"] if s["name"] == "dataset")
        assert spec["dataset_folder"] is True
        assert described[node_type]["output_node"] is True


@pytest.mark.slow
def test_in_a_worker_process_progress_previews_and_cancel_travel_to_the_server(world: dict[str, Any]) -> None:
    """As the studio runs jobs: in a child process (spawned), events back over the pipe."""
    import json
    import threading

    from server.engine import EngineSpec
    from server.worker import ProcessRunner, RunRequest

    spec = EngineSpec(
        output_dir=world["root"] / "worker-out",
        input_dirs=(world["inputs"],),
        model_roots=(world["models"], REPO_MODELS),
        device="cpu",
        cpu_threads=1,
    )
    runner = ProcessRunner(spec, cancel_grace=30.0)
    try:
        registry = default_registry(services=world["services"])
        flow = lora_flow("from-worker", steps=300)
        checked = valid(flow, registry)
        events: list[Event] = []
        token = CancelToken()
        seen_preview = threading.Event()

        def listen(event: Event) -> None:
            events.append(event)
            if isinstance(event, NodePreview):
                seen_preview.set()
            if isinstance(event, NodeProgress) and event.step >= 3 and seen_preview.is_set():
                token.cancel()

        request = RunRequest("job-1", checked, json.dumps(flow), 1)
        outcome = runner.run(request, listen, token)
    finally:
        runner.close()
    assert outcome.status == "cancelled", outcome.error
    assert [e for e in events if isinstance(e, NodeProgress)]
    previews = [e for e in events if isinstance(e, NodePreview)]
    assert previews and previews[-1].image.shape[-1] == 3
    assert max(e.step for e in events if isinstance(e, NodeProgress)) < 300
    assert (world["models"] / "loras" / "from-worker.safetensors").is_file()  # kept, as the trainer does
