"""napari dock widget for X-ray diffraction patterns: open a pattern file, classify it, and see
the pattern with its class activation and the top 5 as a plot in the dock.

A 1-D pattern is not an image, so there is no layer: the plot lives in the dock (a matplotlib
canvas, as napari plugins do for non-image data), drawn by the same :func:`.xrd.plot.draw` that
writes ``nanoclass xrd``'s PNGs. The classification runs in the shared :class:`TaskRunner`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, PushButton

from napari_nanoclass._napari.common import TaskRunner, model_choices, remember, text_label
from napari_nanoclass.core.devices import available_devices
from napari_nanoclass.models.registry import load_model
from napari_nanoclass.xrd import DEFAULT_MODEL, INPUT_SUFFIXES
from napari_nanoclass.xrd.predict import XrdResult, classify_steps

TASK = "pattern-classification"


class XrdWidget(Container):
    """Pattern file → predicted space group, confidence, top 5 and the activation over 2θ."""

    def __init__(self, napari_viewer: Any = None) -> None:
        self.viewer = napari_viewer
        self.file = FileEdit(label="pattern", mode="r", filter=" ".join(f"*{s}" for s in INPUT_SUFFIXES))
        self.model = ComboBox(label="model", choices=model_choices(TASK))
        self.device = ComboBox(label="device", choices=available_devices())
        self.lowpass = FloatSpinBox(label="FFT low-pass", value=0.0, min=0.0, max=1.0, step=0.05,
                                    tooltip="keep this fraction of the frequencies (0: the model's own setting)")
        self.verdict = text_label()
        self.run_button = PushButton(text="Classify")
        self.runner = TaskRunner(self.run_button)
        self.figure, canvas = _figure()
        super().__init__(widgets=[self.file, self.model, self.device, self.lowpass, self.run_button, self.runner,
                                  self.verdict])
        if canvas is not None:
            self.native.layout().addWidget(canvas)
        self.canvas = canvas
        self.result: XrdResult | None = None
        if DEFAULT_MODEL in self.model.choices:
            self.model.value = DEFAULT_MODEL
        remember(self, model=self.model, device=self.device, lowpass=self.lowpass)
        self.run_button.changed.connect(self.run)

    def run(self) -> None:
        path = Path(self.file.value)
        if not path.is_file() or self.model.value is None:
            self.runner.on_error(ValueError("choose a pattern file (.xy, .xye, .csv) and a model first"))
            return
        model = load_model(self.model.value, self.device.value)
        steps = classify_steps(path, model, lowpass=self.lowpass.value or None)
        self.runner.start(steps, self.show)

    def show(self, result: XrdResult) -> None:
        from napari_nanoclass.xrd.plot import draw

        self.result = result
        draw(self.figure, result)
        if self.canvas is not None:
            self.canvas.draw_idle()
        top = ", ".join(f"{name} {p:.2f}" for name, p in result.ranked[:5])
        self.verdict.value = f"{result.predicted} (confidence {result.confidence:.2f}); top 5: {top}"
        self.runner.status.value = "done"


def _figure() -> tuple[Any, Any]:
    """A matplotlib figure and its Qt canvas for the dock (no canvas without Qt: still drawable)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3), layout="constrained")
    try:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    except ImportError:
        return figure, None
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumHeight(260)
    return figure, canvas
