"""Every example in workflows/ is valid and runs headless, as a user would run it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graph.validate import validate
from tests.test_cli import app

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "workflows").glob("*.json"))


TASKS = {
    "txt2img",
    "img2img",
    "inpaint",
    "outpaint",
    "controlnet",
    "instruct-edit",
    "prompt-to-prompt",
    "colorize",
    "regional-prompt",
    "caption",
    "clip-score",
}


def test_there_is_an_example_per_task():
    assert TASKS <= {p.stem for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid(path, registry):
    result = validate(path.read_text(), registry)
    assert result.ok, [str(i) for i in result.issues]
    assert json.loads(path.read_text()).get("metadata", {}).get("description"), "say what the example does"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_headless(path, tmp_path, models_root):
    done = app("--models", str(models_root), "run", str(path), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    files = [Path(line) for line in lines if line.endswith(".png")]
    assert all(f.is_file() and f.parent == tmp_path for f in files)
    if path.stem in ("caption", "clip-score"):
        assert lines, "the value is shown"
    else:
        assert files, "the example saves an image"
        with Image.open(files[0]) as picture:
            assert picture.size[0] >= 32 and np.asarray(picture).std() > 1  # a picture, not a blank


#: What the toy world's analyzer reads in the pictures the toy-model examples save (file prefix -> text).
SHOWS = {
    "txt2img": {"txt2img": "a red circle at the top left and a blue square in the center"},
    "txt2img-sd3": {"txt2img-sd3": "a red circle at the top left and a blue square in the center"},
    "img2img": {"img2img": "a green circle at the top left and a blue square in the center"},
    "inpaint": {"inpaint": "a red circle at the top left and a yellow triangle in the center"},
    "colorize": {"colorized": "a yellow triangle at the top right and a green circle at the bottom left"},
    "regional-prompt": {"regional": "a red circle at the top left and a blue square at the bottom right"},
    "attend-and-excite": {"attend-excite": "a red circle at the top left and a blue square in the center"},
    "controlnet": {"controlnet": "a yellow circle at the top left and a green square in the center"},
    "prompt-to-prompt": {
        "p2p-source": "a red circle at the top left",
        "p2p-edited": "a blue circle at the top left",
    },
}


def run_example(name: str, out: Path, *settings: str) -> list[str]:
    sets = [arg for setting in settings for arg in ("--set", setting)]
    done = app("run", str(REPO / "workflows" / f"{name}.json"), "--out", str(out), *sets)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("name", sorted(SHOWS))
def test_toy_model_example_draws_what_it_says(name, tmp_path):
    from toyworld import analyze, describe

    files = [Path(line) for line in run_example(name, tmp_path) if line.endswith(".png")]
    read = {}
    for file in files:
        with Image.open(file) as picture:
            read[file.stem.rsplit("_", 1)[0]] = describe(analyze(np.asarray(picture.convert("RGB"))))
    assert read == SHOWS[name]


def test_concept_lora_example_draws_the_shape_the_base_model_never_saw(tmp_path):
    """toy-heart.safetensors teaches toy-sd a heart (a shape outside its world): the example's picture
    reads as a red heart at the top left, when the analyzer is allowed the new kinds."""
    from toyworld import analyze, describe
    from toyworld.world import ALL_SHAPES

    (file,) = [Path(line) for line in run_example("concept-lora", tmp_path) if line.endswith(".png")]
    with Image.open(file) as picture:
        read = describe(analyze(np.asarray(picture.convert("RGB")), kinds=ALL_SHAPES))
    assert read == "a red heart at the top left"


def test_concept_lora_example_loads_the_lora_at_the_strength_the_bench_measures():
    """The toy-heart LoRA trades hearts against other prompts' shapes by its strength: the example, the
    bench's figures and the model card all use the one strength."""
    from training.quality_concept import LORA, LORA_STRENGTH

    nodes = json.loads((REPO / "workflows" / "concept-lora.json").read_text())["nodes"]
    (loader,) = [node["inputs"] for node in nodes.values() if node["type"] == "LoraLoader"]
    assert loader["lora_name"] == LORA
    assert loader["strength_model"] == loader["strength_clip"] == LORA_STRENGTH
    card = (REPO / "models" / "loras" / LORA).with_suffix(".md").read_text()
    assert f"**{LORA_STRENGTH}**" in card


def test_inpaint_example_keeps_every_pixel_outside_the_mask(tmp_path):
    (file,) = [Path(line) for line in run_example("inpaint", tmp_path) if line.endswith(".png")]
    assets = REPO / "workflows" / "assets"
    with Image.open(file) as out, Image.open(assets / "toy-scene.png") as source:
        changed = np.asarray(out.convert("RGB")) != np.asarray(source.convert("RGB"))
    with Image.open(assets / "toy-scene-mask.png") as mask:
        inside = np.asarray(mask.convert("L")) > 127
    assert changed.any(axis=-1)[inside].mean() > 0.2 and not changed[~inside].any()


def test_caption_example_reads_the_picture(tmp_path):
    (line,) = run_example("caption", tmp_path)
    assert (
        line
        == "show.text: 'a red circle at the top left and a blue square in the center on a white background'"
    )


def test_clip_score_example_drops_for_a_wrong_word(tmp_path):
    def score(*settings: str) -> float:
        (line,) = run_example("clip-score", tmp_path, *settings)
        return float(line.removeprefix("show.text: "))

    right = score()
    wrong = [
        score(f"score.text={text}")
        for text in (
            "a blue circle at the top left and a blue square in the center",
            "a red circle at the top left and a blue triangle in the center",
        )
    ]
    assert all(right > w for w in wrong), (right, wrong)


def test_switch_example_follows_the_switch(tmp_path):
    path = REPO / "workflows" / "switch.json"
    photo = app("run", str(path), "--out", str(tmp_path / "a"))
    blank = app("run", str(path), "--out", str(tmp_path / "b"), "--set", "use_photo.value=false")
    with Image.open(photo.stdout.strip()) as a, Image.open(blank.stdout.strip()) as b:
        mask_photo, mask_blank = np.asarray(a.convert("L")), np.asarray(b.convert("L"))
    with Image.open(REPO / "workflows" / "assets" / "shapes.png") as source:
        red = np.asarray(source.convert("RGB"))[..., 0] / 255.0
    assert np.array_equal(mask_photo > 127, red >= 0.6)
    assert not mask_blank.any()  # #3366cc has red 0x33 = 0.2 < 0.6 everywhere
