"""The toy BLIP captioner: toyworld's caption parser reads back every caption, the training script trains
a tiny captioner, resumes to the same weights as a straight run and exports a folder the studio's
CaptionerLoader and Captioner nodes run; and the shipped models/captioners/toy-blip (when present)
captions held-out toy pictures right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from toyworld import (  # noqa: E402
    BACKGROUNDS,
    Scene,
    Shape,
    caption,
    caption_background,
    caption_words,
    parse_caption,
    random_scene,
    render,
)
from training import captioner  # noqa: E402
from training.run_folder import read_log, read_state  # noqa: E402
from training.toy_data import toy_batch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "captioners" / "toy-blip"
TINY = (
    "--patch 8 --vision-hidden 16 --vision-layers 1 --vision-heads 2 --text-hidden 16 --text-layers 1 "
    "--text-heads 2 --batch 4 --warmup 2 --threads 1"
).split()
NAME = "tiny-toy-blip"  # not the shipped name: the repository's models/ is searched first


@pytest.fixture(autouse=True)
def _keep_torch_settings():
    """The script switches on deterministic algorithms, seeds torch and sets its threads; put them back."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_rng_state(rng)


def train_args(root: Path, name: str, steps: int, *extra: str) -> list[str]:
    export = root / "models" / "captioners" / NAME
    return ["--out", str(root / name), "--steps", str(steps), "--export", str(export), *TINY, *extra]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A straight 4-step run of a tiny captioner, exported (and scored on 4 pictures per split)."""
    root = tmp_path_factory.mktemp("captioner")
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    try:
        assert captioner.main(train_args(root, "run", 4, "--eval", "4")) == 0
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_rng_state(rng)
    return root


def state_tensors(run: Path) -> dict[str, torch.Tensor]:
    return {
        f"{f.stem}/{k}": v
        for f in sorted((run / "state").glob("*.safetensors"))
        for k, v in load_file(f).items()
    }


# --------------------------------------------------------------------------- the caption parser


@pytest.mark.parametrize("shapes", [None, 0, 1, 2, 3, 9])
def test_parse_caption_reads_back_every_caption(shapes: int | None) -> None:
    for i in range(150):
        rng = np.random.default_rng([shapes or 0, i])
        scene = random_scene(rng, shapes=shapes, size=32)
        for background in (False, True):
            text = caption(scene, background=background)
            assert parse_caption(text) == list(scene.attributes), text
            assert caption_background(text) == (scene.background if background else None)


def test_parse_caption_takes_decoder_spacing_and_case() -> None:
    scene = Scene(
        (Shape("circle", "red", (0, 0)), Shape("cross", "orange", (1, 1)), Shape("square", "blue", (2, 1)))
    )
    text = caption(scene, background=True)
    assert text == (
        "a red circle at the top left, an orange cross in the center and a blue square at the bottom "
        "on a white background"
    )
    spaced = "  A red circle at the top left , an orange cross in the center and a blue square at the bottom."
    assert parse_caption(spaced) == parse_caption(text) == list(scene.attributes)
    assert parse_caption("nothing") == [] and caption_background("nothing on a dark background") == "dark"
    assert parse_caption("a orange cross on the right") == [("cross", "orange", (1, 2))]


def test_parse_caption_refuses_or_skips_what_it_cannot_read() -> None:
    for text in ("a red blob at the top", "a red circle somewhere", "a circle at the top", "hello"):
        with pytest.raises(ValueError, match="cannot read"):
            parse_caption(text)
    mixed = "a red circle at the top and a red blob on the left"
    assert parse_caption(mixed, strict=False) == [("circle", "red", (0, 1))]


def test_caption_words_are_the_vocabulary_of_every_caption() -> None:
    words = set(caption_words())
    assert {"circle", "pink", "gradient", "center", "an", "and", ",", "nothing", "background"} <= words
    tokenizer = captioner.build_tokenizer()
    assert captioner.vocabulary()[:6] == list(captioner.SPECIALS) and len(tokenizer) == len(words) + 6
    assert tokenizer.bos_token == "[DEC]"
    for i in range(100):
        scene = random_scene(
            np.random.default_rng([5, i]), shapes=1 + i % 4, background=tuple(BACKGROUNDS)[i % 5]
        )
        text = caption(scene, background=True)
        ids = tokenizer(text).input_ids
        assert tokenizer.unk_token_id not in ids
        assert parse_caption(tokenizer.decode(ids, skip_special_tokens=True)) == list(scene.attributes)


def test_score_caption_counts_each_attribute() -> None:
    scene = Scene((Shape("circle", "red", (0, 0)), Shape("square", "blue", (1, 1))), background="gray")
    perfect = captioner.score_caption(scene, caption(scene, background=True))
    assert all(perfect[key] == 1.0 for key in captioner.METRICS)
    wrong = captioner.score_caption(
        scene, "a red diamond at the top left and a green square at the top on a dark background"
    )
    assert (wrong["kind"], wrong["color"], wrong["position"], wrong["all"]) == (0.5, 0.5, 0.5, 0.0)
    assert (wrong["count"], wrong["exact"], wrong["background"], wrong["readable"]) == (1, 0, 0, 1)
    short = captioner.score_caption(scene, "a blue square in the center and garbage")
    assert (short["kind"], short["all"], short["count"], short["readable"]) == (0.5, 0.5, 0.0, 0.0)


def test_the_processor_gives_exactly_the_training_pixels() -> None:
    processor = captioner.build_processor(captioner.build_tokenizer())
    batch = toy_batch(3, 4, seed=1)
    pixels = processor(images=[render(s) for s in batch.scenes], return_tensors="pt").pixel_values
    assert torch.allclose(pixels, batch.images, atol=1e-6)


# --------------------------------------------------------------------------- training and export


def test_trains_logs_and_exports_a_folder(straight: Path) -> None:
    state = read_state(straight / "run")
    assert state is not None and (state.step, state.status) == (4, "done")
    log = read_log(straight / "run")
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in log)
    assert all(0 <= r["token_acc"] <= 1 for r in log)
    folder = straight / "models" / "captioners" / NAME
    for part in ("config.json", "model.safetensors", "processor_config.json", "README.md", "eval.json"):
        assert (folder / part).is_file(), part
    assert not list(folder.glob("*.bin")) and not (folder.parent / f".{NAME}.tmp").exists()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "blip" and config["vision_config"]["image_size"] == 32
    results = json.loads((folder / "eval.json").read_text())
    assert set(results) == {"test", "train"} and results["test"]["n"] == 4
    assert all(0 <= results["test"][key] <= 1 for key in captioner.METRICS)
    card = (folder / "README.md").read_text()
    assert "4 steps" in card and "batch 4" in card and "seed 0" in card and "| test |" in card
    assert f"--steps 4 --batch 4 --lr {captioner.parse_args(['--out', 'x']).lr}" in card
    run_state = load_file(straight / "run" / "state" / "blip.safetensors")
    exported = load_file(folder / "model.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in run_state.items())


def test_resuming_in_a_new_process_equals_a_straight_run(straight: Path, tmp_path: Path) -> None:
    assert captioner.main(train_args(tmp_path, "run", 2, "--eval", "0")) == 0
    assert read_state(tmp_path / "run").step == 2
    command = [sys.executable, "-m", "training.captioner", *train_args(tmp_path, "run", 4, "--eval", "0")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed, expected = state_tensors(tmp_path / "run"), state_tensors(straight / "run")
    assert resumed.keys() == expected.keys()
    weights = [k for k in expected if not k.startswith("rng/")]
    assert [k for k in weights if not torch.equal(resumed[k], expected[k])] == []
    assert [r["loss"] for r in read_log(tmp_path / "run")] == [r["loss"] for r in read_log(straight / "run")]


def test_resuming_with_other_sizes_is_refused(tmp_path: Path) -> None:
    assert captioner.main(train_args(tmp_path, "run", 1, "--eval", "0")) == 0
    with pytest.raises(ValueError, match="text_hidden"):
        captioner.main(train_args(tmp_path, "run", 2, "--eval", "0", "--text-hidden", "32"))


def node_captions(root: Path, name: str, images: np.ndarray) -> list[str]:
    """Captions by the studio's CaptionerLoader and Captioner nodes, with ``root`` as a model root."""
    from models.paths import ModelPaths
    from models.services import Services
    from nodes.vision import Captioner, CaptionerLoader
    from tests.helpers import make_ctx

    ctx = make_ctx()
    ctx.settings.services = Services(paths=ModelPaths.with_roots([root]), device="cpu")
    handle = CaptionerLoader().run(ctx, captioner_name=name)["captioner"]
    inputs: dict[str, Any] = {"prompt": "", "max_new_tokens": 30, "num_beams": 1}
    text = Captioner().run(ctx, captioner=handle, image=images.astype(np.float32) / 255, **inputs)["text"]
    return str(text).split("\n")


def test_the_export_runs_in_the_studio_nodes(straight: Path) -> None:
    scenes = [random_scene(np.random.default_rng([9, i]), split="test") for i in range(3)]
    images = np.stack([render(s) for s in scenes])
    lines = node_captions(straight / "models", NAME, images)
    assert len(lines) == 3
    words = set(caption_words())
    assert all(set(line.replace(",", " , ").split()) <= words for line in lines), lines
    folder = straight / "models" / "captioners" / NAME
    assert captioner.studio_captions(folder, images, max_new_tokens=30) == lines
    result = captioner.evaluate_captioner(folder, n=3, seed=9, split="test")
    assert result["n"] == 3 and all(0 <= result[key] <= 1 for key in captioner.METRICS)


# --------------------------------------------------------------------------- the shipped model


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="models/captioners/toy-blip not trained")
def test_the_shipped_captioner_reads_held_out_pictures() -> None:
    result = captioner.evaluate_captioner(SHIPPED, n=50, seed=99, split="test")
    low = {key: result[key] for key in ("kind", "color", "position", "count") if result[key] < 0.9}
    assert low == {}, result
