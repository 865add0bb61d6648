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
def test_example_is_valid(path, registry, models_root):
    result = validate(path.read_text(), registry)
    assert result.ok, [str(i) for i in result.issues]
    assert json.loads(path.read_text()).get("metadata", {}).get("description"), "say what the example does"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_headless(path, tmp_path, models_root):
    done = app("run", str(path), "--out", str(tmp_path), env={"STUDIO_MODELS": str(models_root)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    files = [Path(line) for line in lines if line.endswith(".png")]
    assert all(f.is_file() and f.parent == tmp_path for f in files)
    if path.stem in ("caption", "clip-score"):
        assert lines, "the value is shown"
    else:
        assert files, "the example saves an image"
        with Image.open(files[0]) as picture:
            assert picture.size[0] >= 48 and np.asarray(picture).std() > 1  # a picture, not a blank


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
