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


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid(path, registry):
    result = validate(path.read_text(), registry)
    assert result.ok, [str(i) for i in result.issues]
    assert json.loads(path.read_text()).get("metadata", {}).get("description"), "say what the example does"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_headless(path, tmp_path):
    done = app("run", str(path), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    files = [Path(line) for line in done.stdout.splitlines()]
    assert files and all(f.is_file() and f.parent == tmp_path for f in files)


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
