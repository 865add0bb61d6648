"""The star and the heart: shapes the bundled models never saw, drawn, captioned and read like the
others, while everything the datasets, the held-out split and the bundled models use stays as it was."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from toyworld import (
    ALL_SHAPES,
    NEW_SHAPES,
    SHAPES,
    Scene,
    Shape,
    analyze,
    caption,
    caption_words,
    dataset,
    describe,
    kinds_for,
    parse_caption,
    random_scene,
    render,
    score,
    split_of,
)
from toyworld.__main__ import concept_scenes, main
from toyworld.world import AREA_FRACTION, CENTROID_OFFSET, inside


def with_a(kind: str, scene: Scene) -> Scene:
    return replace(scene, shapes=(replace(scene.shapes[0], kind=kind), *scene.shapes[1:]))


def test_the_usual_kinds_and_the_training_data_are_unchanged() -> None:
    assert SHAPES == ("circle", "square", "triangle", "diamond", "cross")
    assert ALL_SHAPES == SHAPES + NEW_SHAPES and {"star", "heart"} <= set(NEW_SHAPES)
    assert not set(NEW_SHAPES) & set(caption_words())  # the captioner's vocabulary
    kinds = {s.kind for _, _, scene in dataset(300, seed=3) for s in scene.shapes}
    assert kinds == set(SHAPES)
    assert split_of(("star", "red", (1, 1))) == "test"  # never part of any training split


@pytest.mark.parametrize("kind", ["star", "heart"])
def test_area_and_centroid_of_the_new_kinds(kind: str) -> None:
    u = (np.arange(800) + 0.5) / 800 - 0.5
    grid_u, grid_v = np.meshgrid(u, u)
    shape = inside(kind, grid_u, grid_v)
    assert abs(shape.mean() - AREA_FRACTION[kind]) < 0.002
    assert abs((grid_v * shape).sum() / shape.sum() - CENTROID_OFFSET[kind]) < 0.002
    assert shape[:, :400].sum() == shape[:, 400:].sum()  # symmetric about the vertical axis


def test_star_geometry() -> None:
    u = (np.arange(400) + 0.5) / 400 - 0.5
    grid_u, grid_v = np.meshgrid(u, u)
    star = inside("star", grid_u, grid_v)
    assert star[:, :200].sum() == star[:, 200:].sum()  # symmetric about the vertical axis
    assert inside("star", np.array(0.0), np.array(-0.49)) and not inside(
        "star", np.array(0.0), np.array(0.45)
    )


def test_captions_name_the_star_and_read_back() -> None:
    scene = Scene((Shape("star", "red", (0, 0)), Shape("circle", "blue", (1, 1))))
    text = caption(scene)
    assert text == "a red star at the top left and a blue circle in the center"
    assert parse_caption(text) == [("star", "red", (0, 0)), ("circle", "blue", (1, 1))]


@pytest.mark.parametrize(("kind", "size"), [("star", 32), ("star", 64), ("heart", 32), ("heart", 48)])
def test_analyzer_reads_rendered_new_shapes_among_other_shapes(kind: str, size: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(40):
        scene = with_a(kind, random_scene(rng, size=size))
        picture = render(scene)
        assert score(scene, picture)["exact"], caption(scene)
        assert describe(analyze(picture, kinds=ALL_SHAPES)) == caption(scene)


def test_existing_shapes_read_as_before_and_with_the_star_among_the_kinds() -> None:
    """By default the analyzer tries the five usual kinds only (so earlier figures stand); with the
    star among the kinds, clean pictures of the usual shapes are still read right."""
    for image, text, scene in dataset(120, seed=11):
        assert kinds_for(scene) == SHAPES
        assert describe(analyze(image)) == text
        assert describe(analyze(image, kinds=ALL_SHAPES)) == text
    assert kinds_for(Scene((Shape("star", "red", (0, 0)),))) == (*SHAPES, "star")
    assert kinds_for(Scene((Shape("heart", "red", (0, 0)), Shape("star", "red", (1, 1))))) == ALL_SHAPES


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="kinds"):
        analyze(render(Scene(())), kinds=("hexagon",))


def test_concept_command_writes_pictures_and_captions(tmp_path: Path) -> None:
    assert main(["concept", "--shape", "star", "--n", "8", "--out", str(tmp_path), "--token", "sks"]) == 0
    pictures = sorted(tmp_path.glob("*.png"))
    assert [p.stem for p in pictures] == [f"{i:04d}" for i in range(8)]
    scenes = concept_scenes("star", 8)
    for path, scene in zip(pictures, scenes, strict=True):
        text = path.with_suffix(".txt").read_text().strip()
        assert text == caption(scene).replace(" star ", " sks ")
        from PIL import Image

        assert score(scene, np.asarray(Image.open(path)))["exact"]
    assert len({s.shapes[0].color for s in scenes}) == 8
    assert (tmp_path / "preview" / "sheet.png").is_file()
