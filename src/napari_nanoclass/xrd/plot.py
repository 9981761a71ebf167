"""The picture of one classified pattern: what the model saw, where its decision came from, and
the ranked classes. Shared by ``nanoclass xrd`` (a PNG per pattern) and the napari dock widget;
:func:`layers` opens a saved result again in napari (the reader of the ``xrd`` analysis).

matplotlib is imported here only, and only when a plot is drawn: inference stays free of it, and
so does opening results (no torch either).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_nanoclass.core.atomic import atomic_path

ACTIVATION_COLOUR = "#d7191c"
EVIDENCE_COLOUR = "#e66101"
ASPECT = 3.0  # a pattern layer is this many times wider (its 2θ span, degrees) than tall


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


# -- opening results in napari ----------------------------------------------------------------------


def layers(folder: Path, stem: str, result: dict[str, Any]) -> list[Any]:
    """One classified pattern of a ``nanoclass xrd`` output folder or a batch folder, as napari
    LayerData: the pattern itself as a curve over 2θ with its ``xrd.csv`` row as the features
    (when its file is still where the row says), then the saved picture of what the model saw,
    below the curve and as wide (``--no-plots``: none).

    Curves share one axis (2θ in degrees across, intensity up), so the patterns of a folder
    overlay like the curves of one plot and their classes can be compared on the canvas.
    """
    pattern = _pattern(result.get("path"))
    plot = folder / f"{stem}_xrd.png"
    if pattern is None and not plot.is_file():
        raise ValueError(f"{folder}: {stem}: neither {plot.name} nor the pattern file "
                         f"{result.get('path') or '(no path recorded)'} can be found; rerun nanoclass xrd")
    found: list[Any] = [] if pattern is None else [curve_layer(pattern, stem, result)]
    if plot.is_file():
        found.append(_plot_layer(plot, stem, result))
    return found


def _pattern(path: str | None) -> Any:
    """The pattern at ``path``, or None when it is gone or no longer reads (the results still open)."""
    from napari_nanoclass.xrd.patterns import PatternError, read_pattern

    if not path or not Path(path).is_file():
        return None
    try:
        return read_pattern(path)
    except PatternError:
        return None


def _title(stem: str, result: dict[str, Any]) -> str:
    group, confidence = result.get("space_group") or "", _float(result.get("confidence"))
    return f"{stem}: {group} ({confidence:.0%})" if group and confidence is not None else stem


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def curve_layer(pattern: Any, stem: str, result: dict[str, Any]) -> tuple[Any, dict[str, Any], str]:
    """A Shapes layer of one path, (-height, 2θ) per point: 2θ across in degrees, the intensity
    scaled to 0–1 of a height of span / ASPECT, upwards (napari's rows grow downwards).
    Its one row of ``features`` is the pattern's table row, with a ``title`` shown beside it."""
    two_theta = np.asarray(pattern.two_theta, np.float64)
    intensity = np.asarray(pattern.intensity, np.float64)
    low, high = float(intensity.min()), float(intensity.max())
    height = (two_theta[-1] - two_theta[0]) / ASPECT
    up = -(intensity - low) / (high - low or 1.0) * height
    features = {k: [v] for k, v in result.items() if not isinstance(v, (dict, list))}
    features["title"] = [_title(stem, result)]
    meta = {"name": f"{stem} pattern", "shape_type": "path", "edge_width": height / 200, "edge_color": "white",
            "features": features, "text": {"string": "{title}", "anchor": "upper_left", "size": 10},
            "metadata": {"summary": result, "axes": ["intensity (0-1, up)", "2θ (degrees)"]}}
    return [np.column_stack([up, two_theta])], meta, "shapes"


def _plot_layer(plot: Path, stem: str, result: dict[str, Any]) -> tuple[Any, dict[str, Any], str]:
    """The saved PNG as an RGB layer; placed under the curve and as wide as the file's 2θ range
    when the row records it, so the two line up on the canvas."""
    from skimage.io import imread

    picture = imread(plot)[..., :3]
    meta: dict[str, Any] = {"name": f"{stem} XRD {result.get('space_group') or ''}".strip(), "rgb": True,
                            "metadata": {"summary": result}}
    low, high = _float(result.get("two_theta_min")), _float(result.get("two_theta_max"))
    if low is not None and high is not None and high > low:
        per_pixel = (high - low) / picture.shape[1]
        meta.update(scale=[per_pixel, per_pixel], translate=[(high - low) / ASPECT * 0.1, low])
    return picture, meta, "image"
