"""The one-page HTML report of an evaluation: the metric values (a table and a chart), a PCA
scatter of both sets in feature space, and the per-image CLIP scores. Plots are drawn with
matplotlib (Agg) and embedded as PNG data URIs, so the page is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.evaluate import Evaluation

LOWER_IS_BETTER = {"fid", "kid", "cmmd"}


def pca_2d(*sets: np.ndarray) -> list[np.ndarray]:
    """The sets projected on the first two principal components of their union."""
    joined = np.concatenate(sets, axis=0)
    centred = joined - joined.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2].T if vt.shape[0] >= 2 else np.pad(vt.T, ((0, 0), (0, 2 - vt.shape[0])))
    projected = centred @ axes
    out, start = [], 0
    for s in sets:
        out.append(projected[start : start + len(s)])
        start += len(s)
    return out


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _metrics_figure(result: Evaluation) -> str | None:
    import matplotlib.pyplot as plt

    values = {k: v["value"] for k, v in result.metrics.items() if isinstance(v.get("value"), int | float)}
    if "precision_recall" in result.metrics:
        values.pop("precision_recall", None)
        values["precision"] = result.metrics["precision_recall"]["precision"]
        values["recall"] = result.metrics["precision_recall"]["recall"]
    if not values:
        return None
    figure, axes = plt.subplots(1, len(values), figsize=(2.0 * len(values) + 0.5, 2.6), squeeze=False)
    for ax, (name, value) in zip(axes[0], values.items(), strict=True):
        ax.bar([0], [value], color="#c0504d" if name in LOWER_IS_BETTER else "#4f81bd")
        ax.set_title(
            f"{name}\n{value:.4g}" + (" (lower better)" if name in LOWER_IS_BETTER else ""), fontsize=8
        )
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
    figure.tight_layout()
    return _png(figure)


def _scatter_figure(result: Evaluation) -> str | None:
    import matplotlib.pyplot as plt

    sets, labels = [], []
    if result.reference_features is not None:
        sets.append(result.reference_features)
        labels.append("reference")
    if result.image_features is not None:
        sets.append(result.image_features)
        labels.append("images")
    if not sets or sum(len(s) for s in sets) < 3:
        return None
    figure, ax = plt.subplots(figsize=(4.5, 4.0))
    for points, label, color in zip(pca_2d(*sets), labels, ("#4f81bd", "#c0504d"), strict=False):
        ax.scatter(points[:, 0], points[:, 1], s=14, alpha=0.7, label=f"{label} ({len(points)})", color=color)
    ax.set_title(f"{result.features['model']} features, first two principal components", fontsize=9)
    ax.legend(fontsize=8)
    ax.tick_params(labelsize=7)
    return _png(figure)


def _clip_figure(result: Evaluation) -> str | None:
    import matplotlib.pyplot as plt

    scores = result.metrics.get("clip", {}).get("per_image")
    if not scores:
        return None
    names, values = list(scores), list(scores.values())
    figure, ax = plt.subplots(figsize=(max(4.0, 0.25 * len(names) + 1.5), 2.8))
    ax.bar(range(len(values)), values, color="#9bbb59")
    ax.axhline(float(np.mean(values)), color="#333333", linewidth=1, linestyle="--", label="mean")
    ax.set_ylabel("CLIP score", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.legend(fontsize=7)
    ax.set_title("CLIP score of each picture against its prompt", fontsize=9)
    return _png(figure)


def details_of(measured: dict[str, Any]) -> str:
    """A metric's figures beside its value, as "precision 0.96, recall 1.0" (none that are unknown)."""
    return ", ".join(
        f"{k} {v}" for k, v in measured.items() if k not in ("value", "per_image") and v is not None
    )


def _rows(result: Evaluation) -> str:
    rows = []
    for name, measured in result.metrics.items():
        details = details_of(measured)
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(measured.get('value')))}</td>"
            f"<td>{html.escape(details)}</td></tr>"
        )
    for name, reason in result.skipped.items():
        rows.append(
            f"<tr class=skipped><td>{html.escape(name)}</td><td>skipped</td>"
            f"<td>{html.escape(reason)}</td></tr>"
        )
    return "\n".join(rows)


def render_html(result: Evaluation, title: str = "Evaluation") -> str:
    """The report page as HTML text."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    figures = [
        ("Metrics", _metrics_figure(result)),
        ("Feature space", _scatter_figure(result)),
        ("CLIP score per picture", _clip_figure(result)),
    ]
    images = "\n".join(
        f'<figure><img alt="{html.escape(caption)}" src="{uri}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, uri in figures
        if uri
    )
    reference = result.reference
    sets = f"Images: {html.escape(str(result.images['source']))} ({result.images['count']} pictures)"
    if reference:
        sets += f"; reference: {html.escape(str(reference['source']))} ({reference['count']} pictures)"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 12px 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
tr.skipped td {{ color: #888; }}
figure {{ display: inline-block; margin: 8px; vertical-align: top; }}
figcaption {{ font-size: 12px; color: #555; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{sets}. Feature model: {html.escape(str(result.features["model"]))} ({result.features["dim"]} dimensions).
FID, KID and CMMD: lower is better; precision, recall, CLIP score and the analyzer's share:
higher is better.</p>
<table><tr><th>metric</th><th>value</th><th>details</th></tr>
{_rows(result)}
</table>
{images}
</body></html>
"""


def write_report(result: Evaluation, path: Path, title: str = "Evaluation") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result, title), encoding="utf-8")
    return path
