"""The toy world: scenes of one or two simple colored shapes on a 3x3 grid, their pictures and captions.

A :class:`Scene` fully determines its picture: the random jitter of each shape (size and position inside
its grid cell) is stored in the :class:`Shape`, so :func:`render` is a pure function and everything is
deterministic given a seed.

Geometry: the image is ``size`` x ``size`` pixels split into 3x3 cells of side ``size / 3`` (pixel
coordinates are continuous, pixel ``(x, y)`` covers ``[x, x + 1) x [y, y + 1)``). Every shape lies inside a
square box of side ``s`` that is kept inside its cell with a margin of at least one pixel, so shapes in
neighboring cells never touch. Shapes are drawn with exact antialiasing (4x4 supersampling of the
analytic shape).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
"""Shape kinds. The triangle points up; the cross is a plus sign with arms a third of its size wide.

These are the kinds random scenes, the data sets, the held-out split and the bundled models use."""

NEW_SHAPES: tuple[str, ...] = ("star", "heart")
"""Kinds the bundled models never saw (a five-pointed star, point up; a heart, point down), for
teaching a model a new concept (``python -m toyworld concept``): drawn, captioned, parsed and analyzed
like the others, but never drawn by :func:`random_scene` and never part of the training split. At
32 px toy-sd's VAE cannot carry the star's points (its round trip reads no star as a star), but it
carries the heart (docs/training.md)."""

ALL_SHAPES: tuple[str, ...] = SHAPES + NEW_SHAPES

COLORS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (220, 30, 30),
        "orange": (245, 135, 15),
        "yellow": (245, 215, 20),
        "green": (30, 165, 55),
        "cyan": (20, 195, 215),
        "blue": (35, 75, 225),
        "purple": (125, 35, 200),
        "pink": (250, 110, 185),
    }
)
"""Shape colors (name -> RGB), well apart in hue and away from every background."""

BACKGROUNDS: Mapping[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = MappingProxyType(
    {
        "white": ((245, 245, 245), (245, 245, 245)),
        "gray": ((128, 128, 128), (128, 128, 128)),
        "dark": ((28, 28, 32), (28, 28, 32)),
        "sand": ((225, 210, 170), (225, 210, 170)),
        "gradient": ((215, 215, 225), (70, 70, 82)),
    }
)
"""Backgrounds (name -> (top RGB, bottom RGB)): uniform, except "gradient" (fades from top to bottom)."""

POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
"""Grid positions in reading order: ``POSITIONS[3 * row + col]`` names cell ``(row, col)``."""

POSITION_PHRASES: Mapping[str, str] = MappingProxyType(
    {
        "top left": "at the top left",
        "top": "at the top",
        "top right": "at the top right",
        "left": "on the left",
        "center": "in the center",
        "right": "on the right",
        "bottom left": "at the bottom left",
        "bottom": "at the bottom",
        "bottom right": "at the bottom right",
    }
)

SIZES: tuple[int, ...] = (32, 48, 64)
"""Image sizes the world is tested at (any size from 24 up works)."""

SCALE_RANGE: tuple[float, float] = (0.6, 0.82)
"""Range of a random shape's box side, as a fraction of the cell side (before the margin clamp)."""

SUPERSAMPLE = 4
"""Subpixel samples per axis used to antialias shapes."""

MOVES: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"up": (-1, 0), "down": (1, 0), "to the left": (0, -1), "to the right": (0, 1)}
)
"""Move directions of edit instructions -> (d_row, d_col)."""

HOLDOUT_MODULUS = 7
"""A combination (kind, color, cell) is held out for testing when the sum of the three indices
(kind in SHAPES, color in COLORS, position in POSITIONS) is ``HOLDOUT_RESIDUE`` modulo this."""
HOLDOUT_RESIDUE = 3

Cell = tuple[int, int]


def position_name(cell: Cell) -> str:
    """``(0, 0)`` -> ``"top left"``."""
    row, col = cell
    return POSITIONS[3 * row + col]


def cell_of(position: str) -> Cell:
    """``"top left"`` -> ``(0, 0)``."""
    index = POSITIONS.index(position)
    return (index // 3, index % 3)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Shape:
    """One shape: its kind, color and grid cell, plus the jitter that places it inside the cell.

    ``scale`` is the side of the shape's square box as a fraction of the cell side (clamped so that the
    box keeps a margin inside the cell); ``jitter`` = (jx, jy) in [-1, 1] moves the box within the free
    room left in the cell (0 = centered, +-1 = against the margin).
    """

    kind: str
    color: str
    cell: Cell
    scale: float = 0.72
    jitter: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.kind not in ALL_SHAPES:
            raise ValueError(f"unknown shape kind {self.kind!r}; known: {', '.join(ALL_SHAPES)}")
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}; known: {', '.join(COLORS)}")
        row, col = self.cell
        if not (0 <= row <= 2 and 0 <= col <= 2):
            raise ValueError(f"cell {self.cell} outside the 3x3 grid")
        object.__setattr__(self, "cell", (int(row), int(col)))
        if not 0.0 < self.scale <= 1.0:
            raise ValueError(f"scale {self.scale} outside (0, 1]")
        jx, jy = self.jitter
        if not (-1.0 <= jx <= 1.0 and -1.0 <= jy <= 1.0):
            raise ValueError(f"jitter {self.jitter} outside [-1, 1]")
        object.__setattr__(self, "jitter", (float(jx), float(jy)))

    @property
    def position(self) -> str:
        return position_name(self.cell)

    @property
    def attributes(self) -> tuple[str, str, Cell]:
        """(kind, color, cell): what a caption says about the shape."""
        return (self.kind, self.color, self.cell)

    def phrase(self) -> str:
        """``"a red circle at the top left"``."""
        return f"{article(self.color)} {self.color} {self.kind} {POSITION_PHRASES[self.position]}"


@dataclass(frozen=True)
class Scene:
    """Shapes (in distinct cells) on a background, drawn at ``size`` x ``size`` pixels."""

    shapes: tuple[Shape, ...]
    background: str = "white"
    size: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", tuple(self.shapes))
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; known: {', '.join(BACKGROUNDS)}")
        if self.size < 24:
            raise ValueError(f"size {self.size} too small (at least 24 pixels)")
        cells = [s.cell for s in self.shapes]
        if len(set(cells)) != len(cells):
            raise ValueError(f"two shapes share a cell: {cells}")

    def shape_at(self, cell: Cell) -> Shape | None:
        for shape in self.shapes:
            if shape.cell == cell:
                return shape
        return None

    @property
    def attributes(self) -> tuple[tuple[str, str, Cell], ...]:
        """Each shape's (kind, color, cell), in reading order of the cells."""
        return tuple(sorted((s.attributes for s in self.shapes), key=lambda a: a[2]))

    def is_free(self, cell: Cell) -> bool:
        return all(s.cell != cell for s in self.shapes)


# ----------------------------------------------------------------------------------------------------------
# Geometry and rendering


def cell_side(size: int) -> float:
    return size / 3.0


def margin(size: int) -> float:
    """Minimum distance in pixels between a shape's box and its cell's border."""
    return max(1.0, 0.07 * cell_side(size))


def shape_box(shape: Shape, size: int) -> tuple[float, float, float]:
    """(cx, cy, side) of the shape's square box in pixel coordinates."""
    c = cell_side(size)
    m = margin(size)
    side = min(shape.scale * c, c - 2.0 * m)
    room = (c - side) / 2.0 - m
    row, col = shape.cell
    cx = (col + 0.5) * c + shape.jitter[0] * room
    cy = (row + 0.5) * c + shape.jitter[1] * room
    return cx, cy, side


STAR_INNER = 0.25
"""The star's inner radius (its tips reach 0.5 from the box center): 0.5 of the outer radius, fatter
than a regular pentagram's 0.38 so that it survives 32 px pictures."""

AREA_FRACTION: Mapping[str, float] = MappingProxyType(
    {
        "circle": np.pi / 4.0,
        "square": 1.0,
        "triangle": 0.5,
        "diamond": 0.5,
        "cross": 5.0 / 9.0,
        "star": 5.0 * 0.5 * STAR_INNER * float(np.sin(np.pi / 5.0)),
        "heart": 0.58043,  # measured on a 6000 x 6000 grid (tests/test_toyworld_star.py checks it)
    }
)
"""Area of each kind as a fraction of its box's area."""

CENTROID_OFFSET: Mapping[str, float] = MappingProxyType(
    {
        "circle": 0.0,
        "square": 0.0,
        "triangle": 1.0 / 6.0,
        "diamond": 0.0,
        "cross": 0.0,
        "star": 0.0,
        "heart": -0.12692,
    }
)
"""Vertical offset of each kind's centroid from its box's center, as a fraction of the box side."""


def inside(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u, v) in box coordinates (box = [-0.5, 0.5]^2, v down) are inside the shape."""
    au, av = np.abs(u), np.abs(v)
    if kind == "circle":
        return u * u + v * v <= 0.25
    if kind == "square":
        return (au <= 0.5) & (av <= 0.5)
    if kind == "triangle":  # apex at the top middle, base along the bottom
        return (av <= 0.5) & (au <= (v + 0.5) / 2.0)
    if kind == "diamond":
        return au + av <= 0.5
    if kind == "cross":
        arm = 1.0 / 6.0
        return ((au <= arm) & (av <= 0.5)) | ((av <= arm) & (au <= 0.5))
    if kind == "star":
        return _inside_star(u, v)
    if kind == "heart":  # two round lobes at the top, a point at the bottom middle
        lobes = ((u + 0.2) ** 2 + (v + 0.22) ** 2 <= 0.0784) | ((u - 0.2) ** 2 + (v + 0.22) ** 2 <= 0.0784)
        return lobes | ((v >= -0.22) & (au <= (0.5 - v) * 0.62))
    raise ValueError(f"unknown shape kind {kind!r}")


def _inside_star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A five-pointed star centred in the box, one tip straight up, tips at radius 0.5."""
    radius = np.hypot(u, v)
    angle = np.arctan2(u, -v)  # 0 = up, clockwise
    step = 2.0 * np.pi / 5.0
    off_tip = np.abs(np.mod(angle + step / 2.0, step) - step / 2.0)  # angle from the nearest tip
    x, y = radius * np.cos(off_tip), radius * np.sin(off_tip)  # tip along +x
    tip = (0.5, 0.0)
    notch = (STAR_INNER * np.cos(step / 2.0), STAR_INNER * np.sin(step / 2.0))
    # the origin's side of the edge from the tip to the notch
    edge = (notch[0] - tip[0], notch[1] - tip[1])
    side = edge[0] * (y - tip[1]) - edge[1] * (x - tip[0])
    origin_side = edge[0] * (0.0 - tip[1]) - edge[1] * (0.0 - tip[0])
    return side * origin_side >= 0.0


def coverage(
    kind: str, cx: float, cy: float, side: float, x0: int, y0: int, w: int, h: int, ss: int = SUPERSAMPLE
) -> np.ndarray:
    """Fraction of each pixel of the window ``[x0, x0 + w) x [y0, y0 + h)`` covered by the shape, (h, w)."""
    offsets = (np.arange(ss) + 0.5) / ss
    xs = (x0 + np.arange(w)[:, None] + offsets[None, :]).reshape(-1)
    ys = (y0 + np.arange(h)[:, None] + offsets[None, :]).reshape(-1)
    u = (xs[None, :] - cx) / side
    v = (ys[:, None] - cy) / side
    hit = inside(kind, u, v).astype(np.float32)
    return hit.reshape(h, ss, w, ss).mean(axis=(1, 3))


def shape_coverage(shape: Shape, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The shape's coverage over its box's pixel window, and the window's (x0, y0)."""
    cx, cy, side = shape_box(shape, size)
    x0, y0 = int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2))
    x1, y1 = int(np.ceil(cx + side / 2)), int(np.ceil(cy + side / 2))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    return coverage(shape.kind, cx, cy, side, x0, y0, x1 - x0, y1 - y0), (x0, y0)


def background_image(name: str, size: int) -> np.ndarray:
    """The background alone, float32 (size, size, 3) in 0..255."""
    top, bottom = (np.asarray(c, dtype=np.float32) for c in BACKGROUNDS[name])
    t = ((np.arange(size, dtype=np.float32) + 0.5) / size)[:, None, None]
    return np.broadcast_to(top + (bottom - top) * t, (size, size, 3)).copy()


def alpha_map(scene: Scene, index: int | None = None) -> np.ndarray:
    """Coverage in [0, 1] of all shapes (or the one at ``index``), float32 (size, size)."""
    out = np.zeros((scene.size, scene.size), dtype=np.float32)
    shapes = scene.shapes if index is None else (scene.shapes[index],)
    for shape in shapes:
        cov, (x0, y0) = shape_coverage(shape, scene.size)
        h, w = cov.shape
        out[y0 : y0 + h, x0 : x0 + w] = np.maximum(out[y0 : y0 + h, x0 : x0 + w], cov)
    return out


def render(scene: Scene) -> np.ndarray:
    """The scene's picture, uint8 (size, size, 3) RGB."""
    img = background_image(scene.background, scene.size)
    for shape in scene.shapes:
        cov, (x0, y0) = shape_coverage(shape, scene.size)
        h, w = cov.shape
        a = cov[:, :, None]
        color = np.asarray(COLORS[shape.color], dtype=np.float32)
        patch = img[y0 : y0 + h, x0 : x0 + w]
        img[y0 : y0 + h, x0 : x0 + w] = patch * (1.0 - a) + color * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def mask(scene: Scene, index: int | None = None, threshold: float = 0.5) -> np.ndarray:
    """Binary mask (0/255 uint8, (size, size)) of all shapes or the one at ``index`` (for inpainting)."""
    return np.where(alpha_map(scene, index) >= threshold, 255, 0).astype(np.uint8)


def edges(scene: Scene) -> np.ndarray:
    """Outlines of the shapes: 255 on a one-pixel-wide inner border of each shape, 0 elsewhere.

    uint8 (size, size), the conditioning image for an edge ControlNet (stack it to 3 channels if needed).
    """
    out = np.zeros((scene.size, scene.size), dtype=bool)
    for index in range(len(scene.shapes)):
        m = np.pad(alpha_map(scene, index) >= 0.5, 1)
        interior = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        out |= m[1:-1, 1:-1] & ~interior
    return np.where(out, 255, 0).astype(np.uint8)


def grayscale(image: np.ndarray, channels: int = 3) -> np.ndarray:
    """Luma (ITU-R BT.601) of an RGB uint8 image: (H, W, 3) with equal channels, or (H, W) if channels=1."""
    rgb = np.asarray(image, dtype=np.float32)[..., :3]
    luma = np.clip(np.rint(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)), 0, 255).astype(np.uint8)
    if channels == 1:
        return luma
    if channels == 3:
        return np.repeat(luma[..., None], 3, axis=-1)
    raise ValueError("channels must be 1 or 3")


# ----------------------------------------------------------------------------------------------------------
# Captions


def join_phrases(phrases: Sequence[str]) -> str:
    if not phrases:
        return "nothing"
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption(scene: Scene, background: bool = False, positions: bool = True) -> str:
    """``"a red circle at the top left and a blue square in the center"``.

    Shapes are named in reading order of their cells (so the caption does not depend on the order of
    ``scene.shapes``); ``background=True`` appends ``" on a gray background"``; ``positions=False``
    leaves the places out: ``"a red circle and a blue square"``.
    """
    shapes = sorted(scene.shapes, key=lambda s: s.cell)
    phrases = [s.phrase() if positions else f"{article(s.color)} {s.color} {s.kind}" for s in shapes]
    text = join_phrases(phrases)
    if background:
        text += f" on {article(scene.background)} {scene.background} background"
    return text


_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_BACKGROUND_RE = re.compile(r"^(?P<body>.*) on (?:a|an) (?P<background>\w+) background$")
_PHRASE_RE = re.compile(r"^(?:a|an) (?P<color>\w+) (?P<kind>\w+) (?P<where>.+)$")
_POSITION_OF_PHRASE = {phrase: name for name, phrase in POSITION_PHRASES.items()}


def caption_words() -> tuple[str, ...]:
    """Every word (and punctuation mark) a caption can hold, sorted.

    Found by writing captions with every kind, color, position and background, an empty scene and a
    three-shape scene (for the commas and "and"), so the list follows :func:`caption` if it changes.
    """
    phrases = [Shape(k, c, cell_of(p)).phrase() for k in SHAPES for c in COLORS for p in POSITIONS]
    three = Scene(tuple(Shape("circle", "red", (0, col)) for col in range(3)))
    texts = [*phrases, caption(three), *(caption(Scene((), b), background=True) for b in BACKGROUNDS)]
    return tuple(sorted({word for text in texts for word in _TOKEN_RE.findall(text)}))


def _normalized(text: str) -> str:
    """Lower case, one space between words, commas as separate words (as a WordPiece decoder may write)."""
    return " ".join(_TOKEN_RE.findall(text.strip().lower().rstrip(".")))


def _split_background(text: str) -> tuple[str, str | None]:
    """(the shapes part, the background named at the end or None) of a normalized caption."""
    found = _BACKGROUND_RE.match(text)
    if found and found["background"] in BACKGROUNDS:
        return found["body"], found["background"]
    return text, None


def _read_phrase(phrase: str) -> tuple[str, str, Cell] | None:
    """``"a red circle at the top left"`` -> ``("circle", "red", (0, 0))``; None when unreadable."""
    found = _PHRASE_RE.match(phrase)
    if not found or found["color"] not in COLORS or found["kind"] not in ALL_SHAPES:
        return None
    position = _POSITION_OF_PHRASE.get(found["where"])
    return None if position is None else (found["kind"], found["color"], cell_of(position))


def parse_caption(text: str, strict: bool = True) -> list[tuple[str, str, Cell]]:
    """The shapes a caption names, as (kind, color, cell) in the caption's order: the inverse of
    :func:`caption` (``parse_caption(caption(scene)) == list(scene.attributes)``, with or without the
    background, which :func:`caption_background` reads).

    Case, spacing, a final period and spaces around commas do not matter, nor "a" for "an". A phrase
    that cannot be read raises ValueError, or is skipped when ``strict`` is False (to score a model's
    captions shape by shape).
    """
    body, _ = _split_background(_normalized(text))
    if body == "nothing":
        return []
    shapes = []
    for phrase in re.split(r" , | and ", body):
        shape = _read_phrase(phrase)
        if shape is None and strict:
            raise ValueError(f"cannot read {phrase!r} in the caption {text!r}")
        if shape is not None:
            shapes.append(shape)
    return shapes


def caption_background(text: str) -> str | None:
    """The background a caption names (``"... on a gray background"`` -> ``"gray"``), or None."""
    return _split_background(_normalized(text))[1]


# ----------------------------------------------------------------------------------------------------------
# Random scenes and data sets


def random_shape(rng: np.random.Generator, cell: Cell) -> Shape:
    kind = SHAPES[int(rng.integers(len(SHAPES)))]
    color = tuple(COLORS)[int(rng.integers(len(COLORS)))]
    scale = float(rng.uniform(*SCALE_RANGE))
    jitter = (float(rng.uniform(-1.0, 1.0)), float(rng.uniform(-1.0, 1.0)))
    return Shape(kind, color, cell, scale=scale, jitter=jitter)


def random_scene(
    rng: np.random.Generator,
    size: int = 32,
    shapes: int | None = None,
    split: str | None = None,
    background: str | None = None,
) -> Scene:
    """A random scene of ``shapes`` shapes (1 or 2 at random when None) in distinct cells, listed in
    reading order, on a random background (or ``background``).

    ``split="train"`` draws only scenes whose every shape is a training combination; ``split="test"`` only
    scenes with at least one held-out combination (see :func:`split_of`).
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', not {split!r}")
    n = int(rng.integers(1, 3)) if shapes is None else shapes
    if not 0 <= n <= 9:
        raise ValueError(f"a scene holds 0 to 9 shapes, not {n}")
    for _ in range(10_000):
        bg = background or tuple(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
        cells = sorted(int(i) for i in rng.choice(9, size=n, replace=False))
        scene = Scene(tuple(random_shape(rng, (i // 3, i % 3)) for i in cells), bg, size)
        if split is None or split_of(scene) == split:
            return scene
    raise RuntimeError(f"could not draw a {split} scene")  # pragma: no cover - not reachable in practice


def dataset(
    n: int,
    seed: int = 0,
    size: int = 32,
    shapes: int | None = None,
    split: str | None = None,
) -> list[tuple[np.ndarray, str, Scene]]:
    """``n`` (image, caption, scene) triples. Item ``i`` depends only on (seed, i), so a longer data set
    starts with a shorter one."""
    out = []
    for i in range(n):
        scene = random_scene(np.random.default_rng([seed, i]), size=size, shapes=shapes, split=split)
        out.append((render(scene), caption(scene), scene))
    return out


# ----------------------------------------------------------------------------------------------------------
# Held-out combinations

Attributes = Shape | Scene | tuple[str, str, Cell | str]


def is_held_out(kind: str, color: str, cell: Cell | str) -> bool:
    """Whether the combination (kind, color, cell or position name) is held out for testing (always,
    for the kinds of :data:`NEW_SHAPES`, which no bundled model saw)."""
    if kind in NEW_SHAPES:
        return True
    position = cell if isinstance(cell, str) else position_name(cell)
    index = SHAPES.index(kind) + tuple(COLORS).index(color) + POSITIONS.index(position)
    return index % HOLDOUT_MODULUS == HOLDOUT_RESIDUE


def held_out_combinations() -> frozenset[tuple[str, str, Cell]]:
    """Every held-out (kind, color, cell): about 14% of them, such that every kind, color and position,
    and every pair of them, still appears in training."""
    return frozenset(
        (k, c, (i // 3, i % 3))
        for k in SHAPES
        for c in COLORS
        for i in range(9)
        if is_held_out(k, c, POSITIONS[i])
    )


def split_of(attributes: Attributes) -> str:
    """``"test"`` for a held-out (kind, color, cell) combination, else ``"train"``.

    Accepts a (kind, color, cell or position name) tuple, a Shape, or a Scene (``"test"`` when any of its
    shapes is held out).
    """
    if isinstance(attributes, Scene):
        return "test" if any(split_of(s) == "test" for s in attributes.shapes) else "train"
    if isinstance(attributes, Shape):
        attributes = attributes.attributes
    kind, color, cell = attributes
    return "test" if is_held_out(kind, color, cell) else "train"


# ----------------------------------------------------------------------------------------------------------
# Edit instructions

_COLOR_RE = re.compile(r"^(?:make|color|paint|turn) the (?P<ref>.+) (?P<color>\w+)$")
_MOVE_RE = re.compile(r"^move the (?P<ref>.+?) (?P<dir>up|down|(?:to the )?left|(?:to the )?right)$")


def reference(scene: Scene, shape: Shape) -> str:
    """The shortest unambiguous way to name ``shape`` in ``scene``: "circle", "red circle" or
    "circle at the top left"."""
    same_kind = [s for s in scene.shapes if s.kind == shape.kind]
    if len(same_kind) == 1:
        return shape.kind
    if sum(s.color == shape.color for s in same_kind) == 1:
        return f"{shape.color} {shape.kind}"
    return f"{shape.kind} {POSITION_PHRASES[shape.position]}"


def resolve(scene: Scene, ref: str) -> int:
    """Index in ``scene.shapes`` of the shape that ``ref`` ("circle", "red circle", "circle at the top",
    "red circle on the left") names; ValueError when none or several match."""
    words = ref.strip().split(" ")
    color = words[0] if words and words[0] in COLORS else None
    if color is not None:
        words = words[1:]
    if not words or words[0] not in ALL_SHAPES:
        raise ValueError(f"no shape kind in {ref!r}")
    kind, rest = words[0], " ".join(words[1:])
    position = None
    if rest:
        for name, phrase in POSITION_PHRASES.items():
            if rest == phrase:
                position = name
        if position is None:
            raise ValueError(f"cannot read the position {rest!r}")
    matches = [
        i
        for i, s in enumerate(scene.shapes)
        if s.kind == kind
        and (color is None or s.color == color)
        and (position is None or s.position == position)
    ]
    if not matches:
        raise ValueError(f"no {ref} in the scene")
    if len(matches) > 1:
        raise ValueError(f"{ref!r} is ambiguous: {len(matches)} shapes match")
    return matches[0]


def edit(scene: Scene, instruction: str) -> Scene:
    """Apply "make the <ref> <color>" or "move the <ref> up|down|to the left|to the right" (one cell).

    Only the named attribute of the named shape changes (a moved shape keeps its size and its jitter
    inside the cell). ValueError when the instruction cannot be read or applied (unknown or ambiguous
    shape, unknown color, a move off the grid or onto another shape).
    """
    text = " ".join(instruction.strip().lower().rstrip(".").split())
    move = _MOVE_RE.match(text)
    if move:
        index = resolve(scene, move["ref"])
        direction = move["dir"] if move["dir"] in MOVES else "to the " + move["dir"]
        d_row, d_col = MOVES[direction]
        shape = scene.shapes[index]
        row, col = shape.cell[0] + d_row, shape.cell[1] + d_col
        if not (0 <= row <= 2 and 0 <= col <= 2):
            raise ValueError(f"cannot move the {shape.kind} {direction}: it is at the edge of the grid")
        if not scene.is_free((row, col)):
            raise ValueError(f"cannot move the {shape.kind} {direction}: the cell is taken")
        new = replace(shape, cell=(row, col))
    else:
        recolor = _COLOR_RE.match(text)
        if not recolor:
            raise ValueError(f"cannot read the instruction {instruction!r}")
        if recolor["color"] not in COLORS:
            raise ValueError(f"unknown color {recolor['color']!r}")
        index = resolve(scene, recolor["ref"])
        new = replace(scene.shapes[index], color=recolor["color"])
    shapes = scene.shapes[:index] + (new,) + scene.shapes[index + 1 :]
    return replace(scene, shapes=shapes)


def all_instructions(scene: Scene) -> list[str]:
    """Every valid edit instruction for the scene (each recolor to another color, each possible move)."""
    out = []
    for shape in scene.shapes:
        ref = reference(scene, shape)
        out.extend(f"make the {ref} {color}" for color in COLORS if color != shape.color)
        for direction, (d_row, d_col) in MOVES.items():
            cell = (shape.cell[0] + d_row, shape.cell[1] + d_col)
            if 0 <= cell[0] <= 2 and 0 <= cell[1] <= 2 and scene.is_free(cell):
                out.append(f"move the {ref} {direction}")
    return out


def instructions(
    scene: Scene,
    rng: np.random.Generator,
    n: int = 1,
    kinds: Iterable[str] = ("color", "move"),
    split: str | None = None,
) -> list[str]:
    """Up to ``n`` distinct valid instructions drawn at random (recolors and/or moves, per ``kinds``).

    Moves and recolors are drawn equally often when both are possible. ``split`` keeps only instructions
    whose edited scene falls in that split.
    """
    wanted = set(kinds)
    pools: dict[str, list[str]] = {"color": [], "move": []}
    for text in all_instructions(scene):
        group = "move" if text.startswith("move ") else "color"
        if group in wanted and (split is None or split_of(edit(scene, text)) == split):
            pools[group].append(text)
    out: list[str] = []
    while len(out) < n and (pools["color"] or pools["move"]):
        available = [g for g in ("color", "move") if pools[g]]
        pool = pools[available[int(rng.integers(len(available)))]]
        out.append(pool.pop(int(rng.integers(len(pool)))))
    return out
