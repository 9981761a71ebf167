"""The picture of one classified pattern: what the model saw, where its decision came from, and
the ranked classes. Shared by ``nanoclass xrd`` (a PNG per pattern) and the napari dock widget.

matplotlib is imported here only, and only when a plot is drawn: inference stays free of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_nanoclass.core.atomic import atomic_path

ACTIVATION_COLOUR = "#d7191c"
EVIDENCE_COLOUR = "#e66101"


def draw(figure: Any, result: Any) -> None:
    """Draw ``result`` (an XrdResult) on a matplotlib ``figure``: the prepared pattern with the
    class activation (Grad-CAM) shaded light behind it and the peaks that decided (strong
    gradient × input) filled in orange (left); the top-5 probabilities (right)."""
    figure.clear()
    grid = figure.add_gridspec(1, 2, width_ratios=(4, 1.3))
    ax = figure.add_subplot(grid[0])
    x, signal, activation = result.two_theta, result.signal, result.activation
    ax.fill_between(x, 0, activation * 1.05, color=ACTIVATION_COLOUR, alpha=0.15, lw=0,
                    label="class activation (Grad-CAM)")
    for low, alpha, label in ((0.15, 0.35, None), (0.5, 0.9, "deciding peaks (gradient × input ≥ 0.5; paler ≥ 0.15)")):
        ax.fill_between(x, 0, signal, where=result.evidence >= low, color=EVIDENCE_COLOUR, alpha=alpha, lw=0,
                        label=label)
    ax.plot(x, signal, color="black", lw=0.8, label="pattern (model input)")
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("2θ (degrees)")
    ax.set_ylabel("√intensity, background removed (0–1)")
    ax.set_title(f"{result.name}: {result.predicted} ({result.confidence:.0%})", fontsize=10)
    ax.legend(loc="upper right", fontsize=7, frameon=False)
    bars = figure.add_subplot(grid[1])
    ranked = result.ranked[:5][::-1]
    bars.barh([name for name, _ in ranked], [p for _, p in ranked], color="#2b83ba")
    bars.set_xlim(0, 1)
    bars.set_xlabel("probability")
    bars.set_title("top 5", fontsize=10)
    for i, (_, p) in enumerate(ranked):
        bars.text(min(p + 0.02, 0.75), i, f"{p:.2f}", va="center", fontsize=7)


def write_plot(path: str | Path, result: Any, dpi: int = 100) -> Path:
    """``draw`` into a PNG, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    draw(figure, result)
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")
    return path
