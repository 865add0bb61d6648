"""Evaluation nodes: compare two IMAGE batches in a feature space and give FLOAT scores that
ShowValue shows (docs/evaluation.md says what each measures and why).

The feature model is a CLIP folder or CLIP vision file in ``models/clip`` (the bundled toy CLIP
by default). torch, transformers and torchmetrics are imported inside ``run`` only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output
from nodes.support import file_state, find_model, manager_of, model_choices

DEFAULT_FEATURES = "toy-clip"


def _features_input() -> Input:
    return Input(
        "features",
        T.STRING,
        default=DEFAULT_FEATURES,
        choices=model_choices("clip"),
        accepts="constant",
        description="The feature model: a CLIP folder or CLIP vision file in models/clip.",
    )


def _check_batch(name: str, images: Any, least: int) -> list[np.ndarray]:
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3:
        raise NodeInputError(
            name, f"expects an IMAGE (batch, height, width, 3), got shape {getattr(images, 'shape', None)}"
        )
    if images.shape[0] < least:
        raise NodeInputError(name, f"needs at least {least} pictures in the batch, got {images.shape[0]}")
    return list(images)


def _embed(
    ctx: Context, features: str, images: Any, reference: Any, least: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Features of both batches (reference first) with the chosen feature model."""
    from evaluation.features import load_features
    from evaluation.images import EvaluationInputError

    pictures = _check_batch("images", images, least)
    references = _check_batch("reference", reference, least)
    path = find_model(ctx, "clip", "features", features, what="a CLIP folder or CLIP vision file")
    # kept in the run's model manager, so a second evaluation node (or run) does not load it again
    key = ("evaluation-features", str(path.resolve()), file_state(path))
    try:
        model = manager_of(ctx).get(key, lambda: load_features(path))
    except EvaluationInputError as exc:
        raise NodeInputError("features", str(exc)) from None
    return model.embed(references), model.embed(pictures)


class _PairScore(Node):
    category = "evaluation"
    inputs = (
        Input("images", T.IMAGE, description="The pictures to measure (generated)."),
        Input("reference", T.IMAGE, description="The reference pictures (real)."),
        _features_input(),
    )


class FIDScore(_PairScore):
    display_name = "FID Score"
    description = (
        "Fréchet distance between Gaussians fitted to the two batches' features (torchmetrics FID with "
        "the chosen feature model). Lower is better; 0 for identical batches."
    )
    outputs = (Output("fid", T.FLOAT, "The FID (0 or more; lower is better)."),)

    def run(self, ctx: Context, images: Any, reference: Any, features: str) -> dict[str, Any]:
        from evaluation.metrics import fid

        real, fake = _embed(ctx, features, images, reference)
        return {"fid": fid(real, fake)}


class KIDScore(_PairScore):
    display_name = "KID Score"
    description = (
        "Kernel distance: the unbiased MMD² with a cubic polynomial kernel on the two batches' features "
        "(torchmetrics KID), mean and std over subsets. Lower is better; about 0 for one distribution."
    )
    outputs = (
        Output("kid", T.FLOAT, "The KID, the mean over subsets (lower is better)."),
        Output("std", T.FLOAT, "Its standard deviation over subsets."),
    )

    def run(self, ctx: Context, images: Any, reference: Any, features: str) -> dict[str, Any]:
        from evaluation.metrics import kid

        real, fake = _embed(ctx, features, images, reference)
        mean, std = kid(real, fake)
        return {"kid": mean, "std": std}


class CMMDScore(_PairScore):
    display_name = "CMMD Score"
    description = (
        "CMMD: 1000 x the unbiased MMD² with a Gaussian RBF kernel (sigma 10) on L2-normalised CLIP "
        "embeddings; no Gaussian assumption. Lower is better; about 0 for one distribution."
    )
    outputs = (Output("cmmd", T.FLOAT, "The CMMD (lower is better)."),)

    def run(self, ctx: Context, images: Any, reference: Any, features: str) -> dict[str, Any]:
        from evaluation.metrics import cmmd

        real, fake = _embed(ctx, features, images, reference)
        return {"cmmd": cmmd(real, fake)}


class PrecisionRecall(_PairScore):
    display_name = "Precision and Recall"
    description = (
        "Improved precision and recall (Kynkäänniemi et al. 2019): k-NN balls (k = 3) in feature space. "
        "Precision: share of the pictures inside the reference's manifold (fidelity); recall: share of "
        "the reference inside the pictures' manifold (diversity). Needs at least 4 pictures each."
    )
    outputs = (
        Output("precision", T.FLOAT, "0 to 1, higher is better."),
        Output("recall", T.FLOAT, "0 to 1, higher is better."),
    )

    def run(self, ctx: Context, images: Any, reference: Any, features: str) -> dict[str, Any]:
        from evaluation.metrics import PR_K, precision_recall

        real, fake = _embed(ctx, features, images, reference, least=PR_K + 1)
        precision, recall = precision_recall(real, fake)
        return {"precision": precision, "recall": recall}


NODES = (FIDScore, KIDScore, CMMDScore, PrecisionRecall)
