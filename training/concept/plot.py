"""The loss curve of a training as a picture (matplotlib, off-screen)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def loss_plot(losses: Sequence[float], title: str = "") -> np.ndarray:
    """An (H, W, 3) uint8 picture of the losses per step, with a moving average over them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.2), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    values = np.asarray(list(losses), dtype=np.float64)
    steps = np.arange(1, len(values) + 1)
    if len(values):
        axes.plot(steps, values, color="#9bb8d8", linewidth=0.8, label="loss")
        window = max(1, len(values) // 20)
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            axes.plot(steps[window - 1 :], smooth, color="#1f4e8c", linewidth=1.6, label=f"mean of {window}")
        axes.legend(loc="upper right", fontsize=8)
    else:
        axes.text(0.5, 0.5, "no steps yet", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title or "training loss", fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
