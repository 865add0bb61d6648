"""Run the chosen metrics over a set of pictures (and a reference set) and gather one result.

A metric that cannot run (no reference, no prompts, too few pictures) is skipped with its reason
rather than failing the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluation import metrics as M
from evaluation.choices import DEFAULT_METRICS, METRICS, NEEDS_REFERENCE
from evaluation.images import EvaluationInputError, ImageSet


@dataclass
class Evaluation:
    """What an evaluation measured: ``metrics`` {name: {"value", ...}}, ``skipped`` {name: reason},
    and what the report plots (features of both sets, per-image CLIP scores)."""

    images: dict[str, Any]
    reference: dict[str, Any] | None
    features: dict[str, Any]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    image_features: np.ndarray | None = None
    reference_features: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "reference": self.reference,
            "features": self.features,
            "metrics": self.metrics,
            "skipped": self.skipped,
        }


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"fid,kid"`` -> ("fid", "kid"); unknown names are an error naming the known ones."""
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise EvaluationInputError(
            f"unknown metric {', '.join(unknown) or '(none given)'}; known: {', '.join(METRICS)}"
        )
    return names


def evaluate(
    images: ImageSet,
    reference: ImageSet | None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    features: Any = None,
) -> Evaluation:
    """Measure ``images`` (against ``reference`` where a metric needs one) with ``features`` (a
    :class:`~evaluation.features.FeatureModel`; the bundled toy CLIP when None)."""
    from evaluation.features import load_features

    model = features if features is not None else load_features()
    result = Evaluation(
        images={"source": images.source, "count": len(images), "prompts": len(images.prompts)},
        reference={"source": reference.source, "count": len(reference)} if reference is not None else None,
        features={"model": model.name, "dim": model.dim},
    )
    needs_features = any(m in metrics for m in (*NEEDS_REFERENCE, "clip"))
    if needs_features:
        result.image_features = model.embed(images.pixels)
    if reference is not None and any(m in metrics for m in NEEDS_REFERENCE):
        result.reference_features = model.embed(reference.pixels)
    for name in metrics:
        try:
            measured = _measure(name, images, reference, model, result)
        except (M.MetricError, EvaluationInputError) as exc:
            result.skipped[name] = str(exc)
            continue
        result.metrics[name] = measured
    return result


def _measure(
    name: str, images: ImageSet, reference: ImageSet | None, model: Any, result: Evaluation
) -> dict[str, Any]:
    if name in NEEDS_REFERENCE and reference is None:
        raise M.MetricError("needs a reference set (--reference DIR)")
    real, fake = result.reference_features, result.image_features
    if name == "fid":
        return {"value": round(M.fid(real, fake), 6)}
    if name == "kid":
        mean, std = M.kid(real, fake)
        return {"value": round(mean, 8), "std": round(std, 8)}
    if name == "cmmd":
        return {"value": round(M.cmmd(real, fake), 6), "sigma": M.CMMD_SIGMA, "scale": M.CMMD_SCALE}
    if name == "precision_recall":
        precision, recall = M.precision_recall(real, fake)
        return {
            "value": round(precision, 4),
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "k": M.PR_K,
        }
    if name == "clip":
        return _clip(images, model, result)
    if name == "analyzer":
        prompts = [images.prompts.get(n) for n in images.names]
        if not any(prompts):
            raise M.MetricError("no prompts known (give --prompts FILE, or pictures saved by the studio)")
        return M.analyzer_accuracy(images.pixels, prompts)
    raise M.MetricError(f"unknown metric {name!r}")


def _clip(images: ImageSet, model: Any, result: Evaluation) -> dict[str, Any]:
    if not model.has_text:
        raise M.MetricError(
            f"the feature model {model.name} has no text tower: give a CLIPModel folder with --features"
        )
    known = [i for i, n in enumerate(images.names) if images.prompts.get(n)]
    if not known:
        raise M.MetricError("no prompts known (give --prompts FILE, or pictures saved by the studio)")
    assert result.image_features is not None
    texts = [images.prompts[images.names[i]] for i in known]
    scores = M.clip_scores(result.image_features[known], model.embed_texts(texts))
    return {
        "value": round(float(scores.mean()), 4),
        "count": len(known),
        "per_image": M.per_image([images.names[i] for i in known], scores),
    }
