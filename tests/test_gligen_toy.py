"""The toy GLIGEN adapter: its training script (deterministic, resumable, exported in the original
layout that GLIGENLoader reads) and the shipped adapter with toy-sd, read by the toy world's analyzer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.run_folder import read_log, read_state

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "gligen" / "toy-gligen.safetensors"


def train_args(run: Path, steps: int, *extra: str) -> list[str]:
    return ["--out", str(run), "--steps", str(steps), "--batch", "2", "--pool", "8", "--threads", "1", *extra]


def state_tensors(run: Path) -> dict[str, torch.Tensor]:
    folder = run / "state"
    return {f"{p.stem}/{k}": v for p in sorted(folder.glob("*.safetensors")) for k, v in load_file(p).items()}


@pytest.mark.slow
def test_training_resumes_exactly_and_exports_what_the_loader_reads(tmp_path: Path) -> None:
    from models.gligen import load_gligen
    from toyworld import Scene, Shape
    from training import gligen, quality, quality_gligen

    assert gligen.main(train_args(tmp_path / "straight", 3)) == 0
    assert gligen.main(train_args(tmp_path / "resumed", 2)) == 0
    assert read_state(tmp_path / "resumed").step == 2
    out = tmp_path / "models" / "gligen" / "toy-gligen.safetensors"
    assert gligen.main([*train_args(tmp_path / "resumed", 3), "--export", str(out)]) == 0
    straight, resumed = state_tensors(tmp_path / "straight"), state_tensors(tmp_path / "resumed")
    assert straight.keys() == resumed.keys() and any(k.startswith("ema_adapter/") for k in straight)
    assert [
        k for k in straight if not k.startswith("rng/") and not torch.equal(straight[k], resumed[k])
    ] == []
    assert [r["loss"] for r in read_log(tmp_path / "straight")] == [
        r["loss"] for r in read_log(tmp_path / "resumed")
    ]

    weights = load_gligen(out)
    assert weights.layout == "original" and len(weights.fusers) == 7 and weights.width == 64
    assert all(k.startswith(("input_blocks.", "middle_block.", "output_blocks.")) for k in weights.fusers)
    assert {v.dtype for v in load_file(out).values()} == {torch.float16}
    card = out.with_suffix(".md").read_text()
    assert "3 steps" in card and "--export" in card

    (tmp_path / "models" / "checkpoints").symlink_to(REPO / "models" / "checkpoints")
    studio = quality.Studio(models=tmp_path / "models")
    scene = Scene((Shape("circle", "red", (0, 0)), Shape("square", "blue", (2, 2))))
    nodes = quality_gligen.gligen_nodes(scene, seed=1, beta=1.0)
    nodes["s"]["inputs"]["steps"] = 2
    assert nodes["box1"]["inputs"] | {"conditioning_to": None} == {
        "conditioning_to": None,
        "clip": {"node": "ck", "output": "clip"},
        "gligen_textbox_model": {"node": "gl", "output": "gligen"},
        "text": "a blue square",
        "width": 11,
        "height": 11,
        "x": 21,
        "y": 21,
        "beta": 1.0,
    }
    picture = studio.picture(nodes, seed=1)
    assert picture.shape == (32, 32, 3)


@pytest.mark.slow
def test_a_second_phase_starts_from_the_first_runs_state_with_a_decaying_lr(tmp_path: Path) -> None:
    import json

    from training import gligen

    first, second = tmp_path / "first", tmp_path / "second"
    assert gligen.main(train_args(first, 2)) == 0
    out = tmp_path / "toy-gligen.safetensors"
    extra = ["--init-from", str(first), "--decay", "cosine", "--warmup", "1", "--seed", "1"]
    assert gligen.main([*train_args(second, 2, *extra), "--export", str(out)]) == 0
    # Adam's step count goes on from the first run's: its modules and optimizer were the start
    adam = load_file(second / "state" / "optimizer.safetensors")
    assert {v.item() for k, v in adam.items() if k.endswith("step")} == {4.0}
    config = json.loads((second / "config.json").read_text())
    assert config["init_from"] == str(first) and config["init_step"] == 2
    lrs = [r["lr"] for r in read_log(second)]
    assert lrs[0] > lrs[1] > 0
    # resuming the second phase keeps where it began
    assert gligen.main([*train_args(second, 3, *extra)]) == 0
    assert json.loads((second / "config.json").read_text())["init_step"] == 2
    card = out.with_suffix(".md").read_text()
    assert f"--out {first}" in card and f"--init-from {first}" in card and "4 steps" in card


@pytest.mark.slow
def test_a_run_can_start_from_an_exported_adapter_file(tmp_path: Path) -> None:
    from training import gligen

    run, out = tmp_path / "run", tmp_path / "toy-gligen.safetensors"
    # lr 0: the one step leaves the weights where the file put them, so the export is the file again
    assert (
        gligen.main([*train_args(run, 1, "--init-adapter", str(SHIPPED), "--lr", "0"), "--export", str(out)])
        == 0
    )
    shipped, again = load_file(SHIPPED), load_file(out)
    assert shipped.keys() == again.keys()
    assert all(torch.equal(shipped[k], again[k]) for k in shipped)
    assert f"--init-adapter {SHIPPED}" in out.with_suffix(".md").read_text()
    # without it the run starts from fresh weights
    fresh = tmp_path / "fresh.safetensors"
    assert gligen.main([*train_args(tmp_path / "fresh", 1, "--lr", "0"), "--export", str(fresh)]) == 0
    assert not torch.equal(
        load_file(fresh)["position_net.linears.0.weight"], shipped["position_net.linears.0.weight"]
    )


@pytest.mark.slow
def test_a_grounding_loss_steers_the_captions_words_through_the_adapter(tmp_path: Path) -> None:
    from training import gligen

    plain, grounded = tmp_path / "plain", tmp_path / "grounded"
    assert gligen.main(train_args(plain, 2, "--no-position", "1.0", "--drop", "0")) == 0
    out = tmp_path / "toy-gligen.safetensors"
    extra = ("--no-position", "1.0", "--drop", "0", "--ground", "0.3")
    assert gligen.main([*train_args(grounded, 2, *extra), "--export", str(out)]) == 0
    records = read_log(grounded)
    # the loss is the denoising loss plus 0.3 x the grounding loss of the captions' words
    assert all(0 < r["ground"] <= 1 for r in records)
    assert [r["loss"] for r in records] == pytest.approx([r["denoise"] + 0.3 * r["ground"] for r in records])
    assert [r["denoise"] for r in records][0] == pytest.approx(read_log(plain)[0]["loss"])
    # the UNet is frozen, so the loss's gradient reaches the adapter only: its weights differ
    a, b = state_tensors(plain), state_tensors(grounded)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("adapter/"))
    assert "--ground 0.3" in out.with_suffix(".md").read_text()


def test_boxes_only_items_keep_their_boxes_and_phrases_but_lose_the_caption() -> None:
    import argparse

    import numpy as np

    from toyworld import Scene, Shape
    from training import gligen

    scenes = [Scene((Shape("circle", "red", (0, 0)), Shape("square", "blue", (1, 2))))] * 40

    def phrases(text: str) -> torch.Tensor:  # a stand-in encoder: the phrase's length, 8 wide
        return torch.full((8,), float(len(text)))

    def batch(boxes_only: float | None) -> tuple[list[str], dict[str, torch.Tensor]]:
        args = argparse.Namespace(drop=0.0, no_position=0.5, size=32, cell_boxes=0.5, boxes_only=boxes_only)
        return gligen.grounding_batch(scenes, np.random.default_rng(0), phrases, args, torch.device("cpu"))

    captions, inputs = batch(1.0)
    assert captions == [""] * 40
    assert inputs["masks"].sum(dim=1).tolist() == [2.0] * 40  # both boxes, with their phrases
    assert sorted(inputs["positive_embeddings"][0, :2, 0].tolist()) == [12.0, 13.0]
    captions, _ = batch(0.25)
    assert 0 < captions.count("") < 40 and all("circle" in c for c in captions if c)
    captions, _ = batch(None)  # a run saved before the option existed draws no caption empty
    assert "" not in captions


def test_the_regions_baseline_builds_one_region_per_shape() -> None:
    from toyworld import Scene, Shape
    from training import quality_gligen

    scene = Scene((Shape("circle", "red", (0, 0)), Shape("square", "blue", (1, 2))))
    nodes = quality_gligen.region_nodes(scene, seed=3)
    texts = sorted(n["inputs"]["text"] for n in nodes.values() if n["type"] == "CLIPTextEncode")
    assert texts == ["", "a blue square on the right", "a red circle at the top left"]
    regions = [n["inputs"] for n in nodes.values() if n["type"] == "ConditioningRegion"]
    assert [(r["x"], r["y"]) for r in regions] == [(0.0, 0.0), (2 / 3, 1 / 3)]
    assert quality_gligen.placeless_prompt(scene) == "a red circle and a blue square"
    same_words = quality_gligen.region_nodes(scene, seed=3, places=False)
    texts = sorted(n["inputs"]["text"] for n in same_words.values() if n["type"] == "CLIPTextEncode")
    assert texts == ["", "a blue square", "a red circle"]  # the phrases the GLIGEN boxes get
    assert same_words.keys() == nodes.keys()


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the toy adapter is not exported yet")
def test_the_shipped_adapter_is_small_and_in_the_original_layout() -> None:
    from models.gligen import load_gligen

    weights = load_gligen(SHIPPED)
    assert weights.layout == "original" and weights.phrase_width == 64
    assert SHIPPED.stat().st_size < 2_000_000
    bundled = [p for p in (REPO / "models").glob("*/toy-*") if not p.is_symlink()]
    size = sum(
        f.stat().st_size for p in bundled for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()
    )
    assert size < 60 * 1000 * 1000  # all toy models together (issue 11's budget)
    assert "toy-sd" in SHIPPED.with_suffix(".md").read_text()


def test_the_decayed_lr_reaches_zero_at_decay_steps_not_at_the_step_a_run_is_exported() -> None:
    import argparse
    import math

    from training import gligen

    def args(**extra: object) -> argparse.Namespace:
        return argparse.Namespace(lr=1.0, warmup=1, decay="cosine", steps=100, **extra)

    plain, spread = gligen.lr_schedule(args()), gligen.lr_schedule(args(decay_steps=400))
    assert plain(50) == pytest.approx(0.5) and plain(100) == pytest.approx(0.0)
    assert spread(100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert spread(400) == pytest.approx(0.0) and spread(500) == pytest.approx(0.0)
    assert gligen.lr_schedule(argparse.Namespace(decay=None)) is None


def test_a_run_given_two_starts_is_refused_before_anything_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training import gligen

    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        gligen.main(train_args(run, 1, "--init-from", str(tmp_path / "old"), "--init-adapter", str(SHIPPED)))
    assert stopped.value.code == 2
    assert "give one" in capsys.readouterr().err
    assert not run.exists()
