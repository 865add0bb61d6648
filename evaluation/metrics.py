"""The metrics, each a function of two feature sets (or of pictures and prompts).

- :func:`fid`: Fréchet distance between Gaussians fitted to the two feature sets (torchmetrics'
  FrechetInceptionDistance, fed the chosen feature model's features).
- :func:`kid`: Kernel distance: the unbiased MMD² with a cubic polynomial kernel (torchmetrics'
  KernelInceptionDistance), mean and std over random subsets.
- :func:`cmmd`: CMMD (Jayasumana et al. 2024): the unbiased MMD² with a Gaussian RBF kernel
  (sigma 10) on L2-normalised CLIP embeddings, times 1000. No Gaussian assumption.
- :func:`precision_recall`: Kynkäänniemi et al. 2019: k-NN balls (k = 3) around each set's
  features approximate its manifold; precision is the share of generated samples inside the
  reference manifold, recall the share of reference samples inside the generated one.
- :func:`clip_scores`: 100 x the cosine of each picture's and its prompt's CLIP embeddings.
- :func:`analyzer_accuracy`: on toy-world pictures, the share the rule-based analyzer
  (toyworld/analyzer.py) reads as their prompt says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0
PR_K = 3
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


class MetricError(ValueError):
    """A metric that cannot be computed on these sets (too few samples), in plain words."""


def _features(x: np.ndarray, name: str, least: int = 2) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise MetricError(f"{name}: features must be N x D, got shape {array.shape}")
    if array.shape[0] < least:
        raise MetricError(f"{name}: at least {least} pictures are needed, got {array.shape[0]}")
    return array


def _given_features(dim: int) -> Any:
    """A pass-through feature module for torchmetrics: features computed once are handed in as
    the "images" (torchmetrics calls ``module(imgs)`` and counts ``imgs.shape[0]``)."""
    import torch

    class GivenFeatures(torch.nn.Module):
        num_features = dim

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return features

    return GivenFeatures()


def fid(reference: np.ndarray, generated: np.ndarray) -> float:
    """FID between two feature sets (torchmetrics, float64)."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    real = _features(reference, "FID")
    fake = _features(generated, "FID")
    metric = FrechetInceptionDistance(feature=_given_features(real.shape[1]), reset_real_features=True)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    return max(float(metric.compute()), 0.0)


def kid(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (mean, std over ``subsets`` random subsets of ``subset_size``, capped at the smaller
    set's size) between two feature sets (torchmetrics; the subsets drawn from ``seed``)."""
    import warnings

    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    real = _features(reference, "KID")
    fake = _features(generated, "KID")
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": they are in memory already
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(
            feature=_given_features(real.shape[1]), subsets=subsets, subset_size=size
        )
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def rbf_kernel(x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-|x - y|² / (2 sigma²)) for every pair of rows."""
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.exp(-np.maximum(sq, 0.0) / (2.0 * sigma * sigma))


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """The unbiased estimator of MMD² from kernel matrices (Gretton et al. 2012, eq. 3): the
    within-set means leave out the diagonal (a sample with itself)."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * k_xy.mean())


def cmmd(
    reference: np.ndarray, generated: np.ndarray, *, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE
) -> float:
    """CMMD: ``scale`` x the unbiased MMD² with a Gaussian RBF kernel on L2-normalised embeddings.
    (The reference implementation uses the biased estimator; the unbiased one is 0 in expectation
    for two samples of one distribution, so it can come out slightly below 0.)"""
    x = l2_normalize(_features(reference, "CMMD"))
    y = l2_normalize(_features(generated, "CMMD"))
    value = mmd2_unbiased(rbf_kernel(x, x, sigma), rbf_kernel(y, y, sigma), rbf_kernel(x, y, sigma))
    return scale * value


def _pairwise(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.maximum(sq, 0.0))


def _radii(x: np.ndarray, k: int) -> np.ndarray:
    """Each sample's distance to its k-th nearest neighbour in its own set (itself left out)."""
    d = _pairwise(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the sample itself (distance 0)


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """Share of ``points`` inside at least one ball (centre, radius)."""
    d = _pairwise(points, centres)
    return float(np.mean((d <= radii[None, :] + 1e-9).any(axis=1)))


def precision_recall(reference: np.ndarray, generated: np.ndarray, *, k: int = PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds."""
    real = _features(reference, "precision/recall", k + 1)
    fake = _features(generated, "precision/recall", k + 1)
    precision = _coverage(fake, real, _radii(real, k))
    recall = _coverage(real, fake, _radii(fake, k))
    return precision, recall


def clip_scores(image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
    """100 x cosine of each image embedding with its text embedding (row by row)."""
    a, b = l2_normalize(image_embeds), l2_normalize(text_embeds)
    return 100.0 * (a * b).sum(axis=1)


def analyzer_accuracy(pictures: Sequence[np.ndarray], prompts: Sequence[str | None]) -> dict[str, Any]:
    """How often the toy-world analyzer reads each picture as its prompt says.

    Only prompts the toy world's caption parser reads count. Returns ``{"value": share of pictures
    read exactly as prompted (every shape's kind, color and place, no extra shape), "shape",
    "color", "position": share of prompted shapes read right on that, "background": share right
    where the prompt names one, "count": pictures scored, "skipped": pictures whose prompt is not a
    toy-world caption}``.
    """
    from toyworld.analyzer import score
    from toyworld.world import Scene, Shape, caption_background, parse_caption

    rows, backgrounds, skipped = [], [], 0
    for picture, prompt in zip(pictures, prompts, strict=True):
        shapes = _toy_shapes(prompt, parse_caption)
        if shapes is None:
            skipped += 1
            continue
        background = caption_background(prompt or "")
        size = int(min(picture.shape[:2]))
        scene = Scene(
            tuple(Shape(kind, color, cell) for kind, color, cell in shapes),
            background or "white",
            max(size, 24),
        )
        try:
            result = score(scene, picture)
        except ValueError:  # a picture the analyzer cannot read at all (e.g. NaN pixels) is read wrong
            result = {"exact": False, "kind": 0.0, "color": 0.0, "position": 0.0, "background": False}
        rows.append(result)
        if background:
            backgrounds.append(result["background"])
    if not rows:
        raise MetricError("no picture has a toy-world prompt (such as 'a red circle at the top left')")

    def share(key: str) -> float:
        return round(float(np.mean([r[key] for r in rows])), 4)

    return {
        "value": share("exact"),
        "shape": share("kind"),
        "color": share("color"),
        "position": share("position"),
        "background": round(float(np.mean(backgrounds)), 4) if backgrounds else None,
        "count": len(rows),
        "skipped": skipped,
    }


def _toy_shapes(prompt: str | None, parse: Any) -> list[tuple[str, str, Any]] | None:
    if not prompt:
        return None
    try:
        shapes = parse(prompt, strict=True)
    except ValueError:
        return None
    cells = [cell for _, _, cell in shapes]
    return shapes if len(set(cells)) == len(cells) else None


def per_image(names: Sequence[str], values: np.ndarray) -> Mapping[str, float]:
    return {name: round(float(v), 4) for name, v in zip(names, values, strict=True)}
