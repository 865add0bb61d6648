"""The toy world: deterministic pictures and captions, and the rule-based analyzer that reads them back."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from toyworld import (
    COLORS,
    POSITIONS,
    SHAPES,
    Scene,
    Shape,
    all_instructions,
    analyze,
    caption,
    dataset,
    describe,
    edges,
    edit,
    grayscale,
    held_out_combinations,
    instructions,
    mask,
    random_scene,
    render,
    score,
    split_of,
)
from toyworld.__main__ import main
from toyworld.world import alpha_map, position_name

SIZES = (32, 48, 64)


def accuracy(data: list[tuple[np.ndarray, str, Scene]], degrade=None, seed: int = 0) -> dict[str, float]:
    """Per-attribute accuracy of the analyzer over (image, caption, scene) triples."""
    rng = np.random.default_rng(seed)
    totals = dict.fromkeys(("kind", "color", "position"), 0.0)
    count = background = exact = 0
    shapes = 0
    for image, _, scene in data:
        result = score(scene, degrade(image, rng) if degrade else image)
        shapes += len(scene.shapes)
        for key in totals:
            totals[key] += result[key] * len(scene.shapes)
        count += result["count"]
        background += result["background"]
        exact += result["exact"]
    out = {key: value / shapes for key, value in totals.items()}
    out |= {"count": count / len(data), "background": background / len(data), "exact": exact / len(data)}
    return out


def blur_and_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    blurred = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.7)
    noisy = blurred + rng.integers(-8, 9, size=image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------
# Generation


def test_generation_is_deterministic() -> None:
    a = dataset(20, seed=3, size=32)
    b = dataset(20, seed=3, size=32)
    for (ia, ca, sa), (ib, cb, sb) in zip(a, b, strict=True):
        assert np.array_equal(ia, ib) and ca == cb and sa == sb
    # Item i depends only on (seed, i): a longer data set starts with the shorter one.
    longer = dataset(25, seed=3, size=32)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, longer, strict=False))
    other = dataset(20, seed=4, size=32)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, other, strict=True))
    scene = random_scene(np.random.default_rng(1), size=48)
    assert scene == random_scene(np.random.default_rng(1), size=48)
    assert np.array_equal(render(scene), render(scene))


def test_images_and_scenes_are_well_formed() -> None:
    counts = {1: 0, 2: 0}
    seen: dict[str, set] = {"kind": set(), "color": set(), "cell": set(), "background": set()}
    for image, text, scene in dataset(300, seed=0, size=48):
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        assert text == caption(scene)
        counts[len(scene.shapes)] += 1
        assert [s.cell for s in scene.shapes] == sorted(s.cell for s in scene.shapes)
        seen["background"].add(scene.background)
        for s in scene.shapes:
            seen["kind"].add(s.kind)
            seen["color"].add(s.color)
            seen["cell"].add(s.cell)
    assert min(counts.values()) > 100
    assert seen["kind"] == set(SHAPES) and seen["color"] == set(COLORS) and len(seen["cell"]) == 9
    assert len(seen["background"]) >= 4
    assert len(SHAPES) >= 4 and {"circle", "square", "triangle"} <= set(SHAPES)
    assert len(COLORS) >= 6 and {"red", "green", "blue", "yellow"} <= set(COLORS)


def test_shapes_stay_inside_their_cell() -> None:
    for size in SIZES:
        rng = np.random.default_rng(size)
        for _ in range(200):
            scene = random_scene(rng, size=size, shapes=1)
            cover = alpha_map(scene)
            row, col = scene.shapes[0].cell
            c = size / 3
            ys, xs = np.nonzero(cover > 0)
            assert xs.min() >= np.floor(col * c) and xs.max() < np.ceil((col + 1) * c)
            assert ys.min() >= np.floor(row * c) and ys.max() < np.ceil((row + 1) * c)
        # The extremes of jitter and size still keep a margin.
        for jitter in itertools.product((-1.0, 1.0), repeat=2):
            scene = Scene((Shape("square", "red", (1, 1), scale=1.0, jitter=jitter),), "white", size)
            ys, xs = np.nonzero(alpha_map(scene) > 0)
            assert xs.min() >= c and xs.max() < 2 * c and ys.min() >= c and ys.max() < 2 * c


def test_captions_of_hand_made_scenes() -> None:
    one = Scene((Shape("circle", "red", (0, 0)),), "white", 32)
    assert caption(one) == "a red circle at the top left"
    two = Scene((Shape("square", "blue", (1, 1)), Shape("circle", "red", (0, 0))), "gray", 64)
    assert caption(two) == "a red circle at the top left and a blue square in the center"
    assert caption(two, background=True) == (
        "a red circle at the top left and a blue square in the center on a gray background"
    )
    assert caption(Scene((Shape("triangle", "orange", (1, 2)),))) == "an orange triangle on the right"
    assert caption(Scene((Shape("diamond", "green", (2, 1)),))) == "a green diamond at the bottom"
    assert caption(Scene((Shape("cross", "yellow", (1, 0)),), "dark")) == "a yellow cross on the left"
    assert caption(Scene((), "sand")) == "nothing"
    assert [position_name((r, c)) for r in range(3) for c in range(3)] == list(POSITIONS)


def test_invalid_scenes_are_refused() -> None:
    with pytest.raises(ValueError, match="share a cell"):
        Scene((Shape("circle", "red", (0, 0)), Shape("square", "blue", (0, 0))))
    with pytest.raises(ValueError, match="unknown color"):
        Shape("circle", "mauve", (0, 0))
    with pytest.raises(ValueError, match="unknown shape"):
        Shape("hexagon", "red", (0, 0))
    with pytest.raises(ValueError, match="outside the 3x3 grid"):
        Shape("circle", "red", (3, 0))
    with pytest.raises(ValueError, match="background"):
        Scene((), "plaid")


def test_grayscale_and_mask() -> None:
    image, _, scene = dataset(1, seed=5, size=32)[0]
    gray = grayscale(image)
    assert gray.shape == image.shape and gray.dtype == np.uint8
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    luma = 0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]
    assert np.abs(gray[..., 0].astype(float) - luma).max() <= 0.5 + 1e-3
    assert grayscale(image, channels=1).shape == (32, 32)
    m = mask(scene)
    assert set(np.unique(m)) <= {0, 255} and m.any()
    assert np.array_equal(m > 0, alpha_map(scene) >= 0.5)


def test_edges_follow_the_outlines() -> None:
    for size in SIZES:
        for _, _, scene in dataset(40, seed=11, size=size):
            e = edges(scene)
            assert e.shape == (size, size) and e.dtype == np.uint8 and set(np.unique(e)) <= {0, 255}
            cover = alpha_map(scene)
            # Pixels with a covered and a not fully covered pixel among their 3x3 neighbors: an outline of
            # a shape passes within about a pixel.
            kernel = np.ones((3, 3), np.uint8)
            near = (cv2.dilate((cover > 0).astype(np.uint8), kernel) > 0) & (
                cv2.dilate((cover < 1).astype(np.uint8), kernel) > 0
            )
            assert np.all(near[e > 0]), "edge pixels away from every outline"
            for index, shape in enumerate(scene.shapes):
                own = alpha_map(scene, index)
                ys, xs = np.nonzero(own > 0)
                inside_box = e[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] > 0
                side = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
                assert inside_box.sum() >= 1.2 * side, f"{shape.kind} has too little outline"
                # An outline, not a filled shape: the inside of any shape but the thin cross stays empty.
                if shape.kind != "cross":
                    solid = (own >= 0.5).sum()
                    assert inside_box.sum() < 0.9 * solid or solid < 30


# --------------------------------------------------------------------------------------------------------
# Analyzer


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_analyzer_reads_clean_pictures(size: int) -> None:
    figures = accuracy(dataset(1000, seed=100 + size, size=size))
    print(f"analyzer on 1000 clean {size}px pictures: {figures}")
    for key in ("kind", "color", "position", "count", "background"):
        assert figures[key] >= 0.99, (key, figures)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_analyzer_survives_blur_and_noise(size: int) -> None:
    figures = accuracy(dataset(300, seed=200 + size, size=size), degrade=blur_and_noise, seed=size)
    print(f"analyzer on 300 blurred (sigma 0.7) and noisy (+-8) {size}px pictures: {figures}")
    for key in ("kind", "color", "position", "count"):
        assert figures[key] >= 0.95, (key, figures)


def test_describe_matches_caption() -> None:
    for image, text, _ in dataset(50, seed=9, size=32):
        assert describe(analyze(image)) == text


def test_analysis_round_trips_to_a_scene() -> None:
    for image, _, scene in dataset(30, seed=12, size=64):
        again = analyze(image).to_scene()
        assert again.attributes == scene.attributes and again.background == scene.background
        assert np.abs(render(again).astype(int) - image.astype(int)).mean() < 3.0


def test_score_reports_what_is_wrong() -> None:
    scene = Scene((Shape("circle", "red", (0, 0)), Shape("square", "blue", (2, 2))), "white", 48)
    right = score(scene, render(scene))
    assert right["exact"] and right["kind"] == right["color"] == right["position"] == 1.0
    wrong_color = score(scene, render(edit(scene, "make the circle green")))
    assert wrong_color["color"] == 0.5 and wrong_color["kind"] == 1.0 and wrong_color["position"] == 1.0
    assert not wrong_color["exact"]
    moved = score(scene, render(edit(scene, "move the square up")))
    assert moved["position"] == 0.5 and moved["kind"] == 1.0 and moved["color"] == 1.0
    missing = score(scene, render(Scene(scene.shapes[:1], "white", 48)))
    assert not missing["count"] and missing["shapes"][1]["found"] is False and missing["kind"] == 0.5
    blank = analyze(np.full((32, 32, 3), 128, np.uint8))
    assert blank.background == "gray" and blank.shapes == () and describe(blank) == "nothing"
    # Specks are ignored.
    specked = render(scene).copy()
    specked[20, 20] = (0, 0, 0)
    assert score(scene, specked)["exact"]


# --------------------------------------------------------------------------------------------------------
# Edits


def test_edit_changes_exactly_what_it_says() -> None:
    scene = Scene(
        (Shape("circle", "red", (0, 0), 0.7, (0.3, -0.2)), Shape("square", "blue", (1, 1), 0.65)), "sand", 48
    )
    recolored = edit(scene, "make the circle blue")
    assert recolored.shapes[0] == Shape("circle", "blue", (0, 0), 0.7, (0.3, -0.2))
    assert recolored.shapes[1] == scene.shapes[1] and recolored.background == scene.background
    moved = edit(scene, "move the square to the right")
    assert moved.shapes[1] == Shape("square", "blue", (1, 2), 0.65) and moved.shapes[0] == scene.shapes[0]
    assert edit(scene, "Move the square up.").shapes[1].cell == (0, 1)
    assert edit(scene, "move the square left").shapes[1].cell == (1, 0)
    assert edit(scene, "move the red circle down").shapes[0].cell == (1, 0)
    for bad in (
        "move the circle up",  # off the grid
        "move the circle to the left",
        "make the circle mauve",
        "make the triangle red",
        "rotate the square",
    ):
        with pytest.raises(ValueError):
            edit(scene, bad)
    blocked = Scene((Shape("circle", "red", (0, 0)), Shape("square", "blue", (0, 1))))
    with pytest.raises(ValueError, match="taken"):
        edit(blocked, "move the circle to the right")
    twins = Scene((Shape("circle", "red", (0, 0)), Shape("circle", "red", (2, 2))))
    with pytest.raises(ValueError, match="ambiguous"):
        edit(twins, "make the circle blue")
    assert edit(twins, "make the circle at the bottom right blue").shapes[1].color == "blue"


def test_generated_instructions_are_valid_and_show_in_the_picture() -> None:
    rng = np.random.default_rng(0)
    kinds_seen = set()
    for _, _, scene in dataset(60, seed=21, size=48):
        every = all_instructions(scene)
        assert len(set(every)) == len(every)
        chosen = instructions(scene, rng, n=2)
        assert 1 <= len(chosen) <= 2 and set(chosen) <= set(every)
        for text in chosen:
            kinds_seen.add(text.split()[0])
            after = edit(scene, text)
            changed = [(a, b) for a, b in zip(scene.shapes, after.shapes, strict=True) if a != b]
            assert len(changed) == 1
            before, now = changed[0]
            if text.startswith("move"):
                assert now.color == before.color and now.kind == before.kind
                assert abs(now.cell[0] - before.cell[0]) + abs(now.cell[1] - before.cell[1]) == 1
            else:
                assert now.cell == before.cell and now.kind == before.kind and now.color != before.color
            assert describe(analyze(render(after))) == caption(after)
        for text in instructions(scene, rng, n=3, split="train"):
            assert split_of(edit(scene, text)) == "train"
        assert all(t.startswith("move") for t in instructions(scene, rng, n=3, kinds=("move",)))
    assert kinds_seen == {"make", "move"}


# --------------------------------------------------------------------------------------------------------
# Held-out combinations


def test_split_holds_out_some_combinations_and_keeps_every_value_in_training() -> None:
    combos = [(k, c, (i // 3, i % 3)) for k in SHAPES for c in COLORS for i in range(9)]
    test = [a for a in combos if split_of(a) == "test"]
    assert set(test) == held_out_combinations()
    assert 0.10 <= len(test) / len(combos) <= 0.20
    train = [a for a in combos if split_of(a) == "train"]
    for slot in range(3):
        assert {a[slot] for a in train} == {a[slot] for a in combos}
    # Every pair of values is seen in training too: held-out triples are new combinations of seen pairs.
    for pair in ((0, 1), (0, 2), (1, 2)):
        assert {(a[pair[0]], a[pair[1]]) for a in train} == {(a[pair[0]], a[pair[1]]) for a in combos}
    k, c, cell = test[0]
    assert split_of(Shape(k, c, cell)) == "test" and split_of((k, c, position_name(cell))) == "test"
    rng = np.random.default_rng(2)
    for _ in range(100):
        assert split_of(random_scene(rng, split="train")) == "train"
        scene = random_scene(rng, split="test")
        assert any(split_of(s) == "test" for s in scene.shapes) and split_of(scene) == "test"


# --------------------------------------------------------------------------------------------------------
# Command line


def test_sample_command_writes_a_contact_sheet(tmp_path: Path) -> None:
    assert main(["sample", "--n", "4", "--size", "32", "--out", str(tmp_path)]) == 0
    for name in ("sheet.png", "edges.png", "analyzed.png", "0000.png", "captions.txt"):
        assert (tmp_path / name).is_file()
    lines = (tmp_path / "captions.txt").read_text().splitlines()
    assert len(lines) == 4 and lines[0].split("\t")[1] == dataset(1, seed=0, size=32)[0][1]


def test_the_captions_command_writes_training_captions_one_per_line(tmp_path: Path) -> None:
    """One caption per line, naming colors and shapes; the same seed writes the same file."""
    from toyworld.world import COLORS, SHAPES

    out = tmp_path / "keep.txt"
    assert main(["captions", "--n", "50", "--seed", "3", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 50 and len(set(lines)) > 25
    assert all(any(c in line for c in COLORS) and any(k in line for k in SHAPES) for line in lines)
    again = tmp_path / "again.txt"
    main(["captions", "--n", "50", "--seed", "3", "--out", str(again)])
    assert again.read_text() == out.read_text()
