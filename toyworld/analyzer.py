"""A rule-based reader of toy-world pictures: background, then each shape's color, kind and cell.

How it works:

1. Background: a linear-in-height color model (uniform or vertical gradient) fitted robustly to the
   one-pixel border ring, named after the nearest of :data:`~toyworld.world.BACKGROUNDS`.
2. Every pixel is explained as a blend ``bg + alpha * (color - bg)`` of the background with each palette
   color; its label is the color that explains it best and ``alpha`` its coverage by that color. Pixels
   with ``alpha >= 0.5`` are shape pixels (the half-coverage threshold keeps the outline where it was
   under blur and does not depend on the contrast of a color against the background). Their 8-connected
   components are the shape candidates; a component whose core holds two colors in force is split by
   color, and tiny components (noise, specks of a generated image) are ignored.
3. Color: the palette color nearest the median of the component's core pixels (the most saturated ones).
4. Kind: the component's coverage (alpha, recomputed for its color over the component and a two-pixel
   ring) has an area and a centroid. For each kind, these give the box the shape would need (the area
   fraction of its box and the centroid offset are known), and the kind whose antialiased template in
   that box overlaps the coverage best (soft intersection over union) wins. Area and centroid survive
   blur and noise, so this holds up on imperfect pictures. The kinds tried are :data:`SHAPES` unless
   asked otherwise (``kinds=ALL_SHAPES`` adds the star, which the bundled models never saw), so
   pictures of the usual kinds are read exactly as they were before the star existed; :func:`score`
   adds the new kinds its expected scene holds.
5. Position: the cell holding the centroid of the fitted box.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from toyworld.world import (
    ALL_SHAPES,
    AREA_FRACTION,
    BACKGROUNDS,
    CENTROID_OFFSET,
    COLORS,
    POSITION_PHRASES,
    SHAPES,
    Cell,
    Scene,
    Shape,
    article,
    cell_side,
    coverage,
    join_phrases,
    margin,
    position_name,
)

MIN_AREA_FRACTION = 0.05
"""Components covering less than this fraction of a cell are ignored as noise."""

CORE_SPLIT_SHARE = 0.25
"""A component is split by color when a second color holds at least this share of its core pixels."""


@dataclass(frozen=True)
class Detection:
    """One shape read from a picture."""

    kind: str
    color: str
    cell: Cell
    center: tuple[float, float]
    """(x, y) of the fitted box's center in pixels."""
    side: float
    """Side of the fitted box in pixels."""
    area: float
    """Covered area in pixels (sum of the coverage)."""
    match: float
    """Soft IoU of the coverage with the winning kind's template (1 = perfect)."""
    scores: dict[str, float] = field(default_factory=dict, compare=False)
    """Soft IoU for every kind."""

    @property
    def position(self) -> str:
        return position_name(self.cell)

    @property
    def attributes(self) -> tuple[str, str, Cell]:
        return (self.kind, self.color, self.cell)

    def phrase(self) -> str:
        return f"{article(self.color)} {self.color} {self.kind} {POSITION_PHRASES[self.position]}"


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyze` read from a picture: its background and shapes (in reading order)."""

    background: str
    shapes: tuple[Detection, ...]
    size: int

    def to_scene(self) -> Scene:
        """The scene this picture shows (the largest shape wins when two were read in one cell), with
        each shape's size and jitter estimated so that rendering it gives back a similar picture."""
        by_cell: dict[Cell, Detection] = {}
        for d in sorted(self.shapes, key=lambda d: -d.area):
            by_cell.setdefault(d.cell, d)
        c, m = cell_side(self.size), margin(self.size)
        shapes = []
        for cell, d in sorted(by_cell.items()):
            side = min(max(d.side, 1.0), c - 2 * m)
            room = (c - side) / 2 - m
            center = ((cell[1] + 0.5) * c, (cell[0] + 0.5) * c)
            jx, jy = (
                float(np.clip((d.center[i] - center[i]) / room, -1, 1)) if room > 1e-6 else 0.0
                for i in (0, 1)
            )
            shapes.append(Shape(d.kind, d.color, cell, scale=float(side / c), jitter=(jx, jy)))
        return Scene(tuple(shapes), self.background, self.size)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {img.shape}")
    img = img[:, :, :3]
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255)
    return img.astype(np.float32)


def fit_background(img: np.ndarray) -> tuple[str, np.ndarray]:
    """Name of the background and its estimated (H, W, 3) float32 image (a color per row)."""
    h, w = img.shape[:2]
    ys = np.concatenate([np.zeros(w), np.full(w, h - 1), np.arange(h), np.arange(h)]).astype(np.int64)
    xs = np.concatenate([np.arange(w), np.arange(w), np.zeros(h), np.full(h, w - 1)]).astype(np.int64)
    values = img[ys, xs]  # (n, 3)
    t = (ys + 0.5) / h
    design = np.stack([np.ones_like(t), t], axis=1)
    keep = np.ones(len(t), dtype=bool)
    coef = np.zeros((2, 3))
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        residual = np.linalg.norm(values - design @ coef, axis=1)
        limit = max(12.0, 3.0 * float(np.median(residual[keep])))
        new_keep = residual <= limit
        if new_keep.sum() < len(t) // 3 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    top, bottom = coef[0], coef[0] + coef[1]
    name = min(
        BACKGROUNDS,
        key=lambda n: float(
            np.linalg.norm(top - np.asarray(BACKGROUNDS[n][0]))
            + np.linalg.norm(bottom - np.asarray(BACKGROUNDS[n][1]))
        ),
    )
    rows = coef[0] + coef[1] * ((np.arange(h) + 0.5) / h)[:, None]
    return name, np.broadcast_to(rows[:, None, :], (h, w, 3)).astype(np.float32)


LUMA_WEIGHT = 2.0
"""Blends are measured in a YCbCr space with luma stretched by this factor: luma is what survives best
(chroma subsampling, color bleeding), and colors unlike the background in luma get sharper coverage."""


def _weighted_space() -> np.ndarray:
    """RGB -> (LUMA_WEIGHT * Y, Cb, Cr), as a (3, 3) matrix acting on row vectors."""
    ycbcr = np.array(
        [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32
    )
    ycbcr[0] *= LUMA_WEIGHT
    return ycbcr.T


def _blend(diff: np.ndarray, colors: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pixels (N, 3) of ``diff = pixel - bg`` and palette colors (K, 3): alpha (N, K) in [0, 1] and the
    residual distance (N, K) of the pixel from the segment bg -> color (in the luma-weighted space)."""
    space = _weighted_space()
    diff, colors, bg = diff @ space, colors @ space, bg @ space
    direction = colors[None, :, :] - bg[:, None, :]  # (N, K, 3)
    norm2 = np.maximum((direction**2).sum(-1), 1.0)
    alpha = np.clip((diff[:, None, :] * direction).sum(-1) / norm2, 0.0, 1.0)
    residual = np.linalg.norm(diff[:, None, :] - alpha[..., None] * direction, axis=-1)
    return alpha, residual


BLUR_LEVELS: tuple[float, ...] = (0.0, 0.5, 0.8, 1.1, 1.5)
"""Gaussian sigmas (pixels) the templates are also blurred with, so that blurred shapes are compared with
equally blurred templates (a blurred square is not a circle)."""


def _template_iou(
    kind: str, alpha: np.ndarray, x0: int, y0: int, area: float, cx: float, cy: float
) -> tuple[float, float, float]:
    """Best soft IoU of the coverage window ``alpha`` (origin x0, y0) with ``kind``'s template of the same
    area and centroid, sharp or blurred; also the template box's center y and side."""
    side = float(np.sqrt(area / AREA_FRACTION[kind]))
    by = cy - CENTROID_OFFSET[kind] * side
    h, w = alpha.shape
    pad = 4
    template = coverage(kind, cx, by, side, x0 - pad, y0 - pad, w + 2 * pad, h + 2 * pad)
    best = 0.0
    for sigma in BLUR_LEVELS:
        t = cv2.GaussianBlur(template, (0, 0), sigma) if sigma > 0 else template
        t = t[pad:-pad, pad:-pad]
        union = float(np.maximum(t, alpha).sum())
        if union > 0:
            best = max(best, float(np.minimum(t, alpha).sum()) / union)
    return best, by, side


def _coverage(img: np.ndarray) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(background name, background picture, per-pixel residual of each palette color, best color
    index per pixel, that color's coverage per pixel) of an RGB float picture."""
    h, w = img.shape[:2]
    background, bg = fit_background(img)
    palette = np.asarray([COLORS[c] for c in COLORS], dtype=np.float32)
    alpha_all, residual = _blend((img - bg).reshape(-1, 3), palette, bg.reshape(-1, 3))
    label = residual.argmin(axis=1)
    alpha = alpha_all[np.arange(len(label)), label].reshape(h, w)
    return background, bg, residual, label.reshape(h, w), alpha


def foreground(image: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of the pixels a shape covers at least half of (whatever its shape or color)."""
    return _coverage(_as_rgb(image))[4] >= 0.5


def analyze(image: np.ndarray, kinds: Sequence[str] = SHAPES) -> Analysis:
    """Read the background and the shapes of a toy-world picture (uint8 RGB, any size from 24 px),
    each shape as the best fitting of ``kinds`` (by default the bundled models' five)."""
    unknown = [k for k in kinds if k not in ALL_SHAPES]
    if unknown or not kinds:
        raise ValueError(f"kinds must be some of {', '.join(ALL_SHAPES)}, not {list(kinds)}")
    img = _as_rgb(image)
    h, w = img.shape[:2]
    background, bg, residual, label, alpha = _coverage(img)
    palette_names = tuple(COLORS)
    palette = np.asarray([COLORS[c] for c in palette_names], dtype=np.float32)
    solid = (alpha >= 0.5).astype(np.uint8)
    count, components = cv2.connectedComponents(solid, connectivity=8)

    cell_area = (h / 3.0) * (w / 3.0)
    min_area = MIN_AREA_FRACTION * cell_area
    regions: list[np.ndarray] = []
    for index in range(1, count):
        region = components == index
        core = region & (alpha >= 0.8)
        labels, counts = np.unique(label[core], return_counts=True)
        strong = labels[counts >= max(3, CORE_SPLIT_SHARE * core.sum())]
        if len(strong) < 2:
            regions.append(region)
            continue
        # Two colors touch: give each pixel to the strong color that explains it best, then re-split.
        sub = residual.reshape(h, w, -1)[:, :, strong].argmin(axis=2)
        for j in range(len(strong)):
            n, parts = cv2.connectedComponents((region & (sub == j)).astype(np.uint8), connectivity=8)
            regions.extend(parts == k for k in range(1, n))
    regions = [r for r in regions if alpha[r].sum() >= min_area]

    # Support of each region: its pixels plus a two-pixel ring, each ring pixel going to the nearest region.
    if regions:
        distances = np.stack(
            [cv2.distanceTransform((~r).astype(np.uint8), cv2.DIST_L2, 3) for r in regions], axis=0
        )
        nearest = distances.argmin(axis=0)
        near = distances.min(axis=0) <= 2.5
    detections = []
    for index, region in enumerate(regions):
        support = near & (nearest == index)
        solid_alpha = alpha[region]
        core = region & (alpha >= 0.8 * float(solid_alpha.max()))
        median = np.median(img[core], axis=0)
        color_index = int(np.linalg.norm(palette - median, axis=1).argmin())
        ys, xs = np.nonzero(support)
        a_support, _ = _blend(img[ys, xs] - bg[ys, xs], palette[color_index : color_index + 1], bg[ys, xs])
        coverage_values = a_support[:, 0]
        area = float(coverage_values.sum())
        cx = float(((xs + 0.5) * coverage_values).sum() / area)
        cy = float(((ys + 0.5) * coverage_values).sum() / area)
        # Window around the support, big enough for every template of this area.
        reach = int(np.ceil(np.sqrt(area / min(AREA_FRACTION[k] for k in kinds)))) + 2
        x0, x1 = max(0, min(int(xs.min()), int(cx) - reach)), min(w, max(int(xs.max()) + 1, int(cx) + reach))
        y0, y1 = max(0, min(int(ys.min()), int(cy) - reach)), min(h, max(int(ys.max()) + 1, int(cy) + reach))
        window = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
        window[ys - y0, xs - x0] = coverage_values
        scores, boxes = {}, {}
        for kind in kinds:
            scores[kind], by, side = _template_iou(kind, window, x0, y0, area, cx, cy)
            boxes[kind] = (by, side)
        kind = max(kinds, key=lambda k: scores[k])
        by, side = boxes[kind]
        row = int(np.clip(by // (h / 3.0), 0, 2))
        col = int(np.clip(cx // (w / 3.0), 0, 2))
        detections.append(
            Detection(
                kind, palette_names[color_index], (row, col), (cx, by), side, area, scores[kind], scores
            )
        )
    detections.sort(key=lambda d: (d.cell, -d.area))
    return Analysis(background, tuple(detections), h)


def describe(result: Analysis) -> str:
    """The caption of what was read, in the generator's style (shapes in reading order)."""
    return join_phrases([d.phrase() for d in result.shapes])


def kinds_for(scene: Scene) -> tuple[str, ...]:
    """The kinds to read a picture of ``scene`` with: the usual five, plus any new kind it holds."""
    extra = {s.kind for s in scene.shapes} - set(SHAPES)
    return SHAPES + tuple(k for k in ALL_SHAPES if k in extra)


def score(expected: Scene, image: np.ndarray | Analysis) -> dict:
    """Per-attribute correctness of a picture (or its analysis) against the scene it should show.

    Each expected shape is matched to at most one detected shape (same cell first, then same kind and
    color). Returns ``{"background": bool, "count": bool (as many shapes read as expected),
    "extra": shapes read beyond those matched, "shapes": [per expected shape, in reading order: {"cell",
    "found", "kind", "color", "position", "all"}], "kind"/"color"/"position"/"all": fraction of expected
    shapes right on that, "exact": everything right (background aside)}``.
    """
    result = image if isinstance(image, Analysis) else analyze(image, kinds_for(expected))
    wanted = sorted(expected.shapes, key=lambda s: s.cell)
    found = list(result.shapes)

    def affinity(s: Shape, d: Detection) -> int:
        return 4 * (s.cell == d.cell) + 2 * (s.kind == d.kind) + (s.color == d.color)

    pairs = sorted(
        itertools.product(range(len(wanted)), range(len(found))),
        key=lambda p: (-affinity(wanted[p[0]], found[p[1]]), p),
    )
    match: dict[int, int] = {}
    used: set[int] = set()
    for i, j in pairs:
        if i not in match and j not in used:
            match[i] = j
            used.add(j)
    per_shape = []
    for i, s in enumerate(wanted):
        d = found[match[i]] if i in match else None
        row = {
            "cell": s.cell,
            "found": d is not None,
            "kind": d is not None and d.kind == s.kind,
            "color": d is not None and d.color == s.color,
            "position": d is not None and d.cell == s.cell,
        }
        row["all"] = row["kind"] and row["color"] and row["position"]
        per_shape.append(row)
    n = max(len(wanted), 1)
    out: dict = {
        "background": result.background == expected.background,
        "count": len(found) == len(wanted),
        "extra": len(found) - len(match),
        "shapes": per_shape,
    }
    for key in ("kind", "color", "position", "all"):
        out[key] = sum(r[key] for r in per_shape) / n if wanted else float(not found)
    out["exact"] = out["count"] and all(r["all"] for r in per_shape)
    return out
