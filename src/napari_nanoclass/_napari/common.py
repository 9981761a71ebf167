"""What every napari-nanoclass dock widget shares.

:class:`TaskRunner` runs a core step generator in a napari ``thread_worker`` with a progress bar
and a Cancel button, mirrored in napari's activity dock (``napari.utils.progress``) so a run can be
followed with its dock closed; errors always clear the bar and are shown, never swallowed.
``runner.synchronous = True`` runs the same generator in the calling thread (tests, scripting).
:class:`ViewerWidget` is a form bound to a viewer whose combo boxes follow its layer list.
"""

from __future__ import annotations

import html
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, ProgressBar, PushButton

from napari_nanoclass.core.analysis import FILL_SIDE
from napari_nanoclass.core.memory import release_memory
from napari_nanoclass.core.progress import Progress, Steps, run_sync
from napari_nanoclass.core.settings import load_settings, save_settings
from napari_nanoclass.engine.scaling import scale_note
from napari_nanoclass.models.registry import LoadedModel, list_models, load_model, registered_info


class WrappedLabel(Label):
    """A read-only text that wraps and takes the height its wrapped lines need: a dock lays a
    label out at its one-line height, so a longer status or verdict line was cut off."""

    def __init__(self) -> None:
        from qtpy.QtWidgets import QSizePolicy

        super().__init__(value="")
        self.native.setWordWrap(True)
        self.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)

    @property
    def value(self) -> str:
        return str(Label.value.fget(self))

    @value.setter
    def value(self, text: str) -> None:
        Label.value.fset(self, text)
        native = self.native
        native.setMinimumHeight(max(native.heightForWidth(max(native.width(), 200)), 0))


def text_label() -> Label:
    """A status, verdict or legend line under a dock's form."""
    return WrappedLabel()


def results_panel(*lines: Label) -> Container:
    """Result lines under a dock's form, outside its label column: in the form's rows a wrapped
    line is laid out one line high and cut off."""
    return Container(widgets=list(lines), labels=False)


def legend_html(entries: Sequence[tuple[str, str]], title: str = "") -> str:
    """A colour legend for a dock label: a swatch in each colour, then its name; lines break
    between entries only. A transparent colour (a background class that is not drawn) gets an
    empty swatch."""
    def swatch(colour: str) -> str:
        clear = len(colour) == 9 and colour.endswith("00")
        return "□" if clear else f"<span style='color:{colour[:7]}'>■</span>"

    items = "&nbsp; ".join(f"{swatch(colour)}&nbsp;{html.escape(name)}" for name, colour in entries)
    return f"<b>{html.escape(title)}</b>&nbsp; {items}" if title else items


CANCELLED = object()  # what a job stopped by Cancel returns


def _until_cancelled(steps: Steps[Any], cancelled: threading.Event) -> Steps[Any]:
    """``steps`` until it ends or ``cancelled`` is set, then closed — in the worker thread that ran
    it, so its clean-up (partial outputs removed, output folder and its lock released, a dask
    cluster closed) is done where it ran and before Run is enabled again. napari's own ``quit``
    would leave the job suspended, cleaned up whenever and wherever it is garbage-collected."""
    try:
        while not cancelled.is_set():
            try:
                step = next(steps)
            except StopIteration as stop:
                return stop.value
            yield step
        return CANCELLED
    finally:
        steps.close()


class TaskRunner(Container):
    """Progress bar + Cancel button that run one step generator at a time off the GUI thread."""

    def __init__(self, run_button: PushButton) -> None:
        self.bar = ProgressBar(value=0, max=1, visible=False)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = text_label()
        super().__init__(widgets=[self.bar, self.cancel_button, self.status], labels=False)
        self.run_button = run_button
        self.synchronous = False
        self.worker: Any = None
        self.cancelled = threading.Event()  # set by Cancel; a new one per run
        self.activity: Any = None  # the run's napari.utils.progress (activity dock), while it runs
        self.last_error: BaseException | None = None
        self.cancel_button.changed.connect(self.cancel)

    def start(self, steps: Steps[Any], on_result: Callable[[Any], None],
              on_step: Callable[[Progress], None] | None = None,
              on_cancel: Callable[[], None] | None = None) -> None:
        """Run ``steps``, then ``on_result`` with what it returns; ``on_step`` sees every step too
        (in the GUI thread, after the bar), for docks that show more than a bar; ``on_cancel``
        runs after a Cancel, once the job has cleaned up (default: the status says "cancelled")."""
        self.last_error = None
        self._busy(True)
        show = self.show_progress if on_step is None else (lambda step: (self.show_progress(step), on_step(step)))
        if self.synchronous:
            try:
                on_result(run_sync(steps, progress=show))
            except Exception as exc:
                self.on_error(exc)
            finally:
                self._busy(False)
            return
        from napari.qt.threading import create_worker

        self.cancelled = threading.Event()
        self.worker = create_worker(_until_cancelled, steps, self.cancelled, _start_thread=False,
                                    _ignore_errors=True)  # on_error shows them
        self.worker.yielded.connect(show)
        cancelled = on_cancel or (lambda: self.status.__setattr__("value", "cancelled"))
        self.worker.returned.connect(lambda result: cancelled() if result is CANCELLED else on_result(result))
        self.worker.errored.connect(self.on_error)
        self.worker.finished.connect(lambda: self._busy(False))
        self.worker.start()

    def cancel(self) -> None:
        """Stops the running job at its next step (at most one tile or iteration away)."""
        if self.worker is not None:
            self.cancelled.set()

    def show_progress(self, step: Progress) -> None:
        self.bar.max = max(step.total, 1)
        self.bar.value = min(step.done, self.bar.max)
        self.status.value = step.message
        if self.activity is not None:
            self.activity.total, self.activity.n = self.bar.max, self.bar.value
            self.activity.refresh()

    def on_error(self, exc: BaseException) -> None:
        self.last_error = exc
        self._busy(False)
        self.status.value = f"error: {exc}"
        from napari.utils.notifications import show_error

        show_error(f"napari-nanoclass: {exc}")

    def _busy(self, busy: bool) -> None:
        self.bar.visible = busy
        if busy and self.activity is None:
            from napari.utils import progress

            self.activity = progress(total=1, desc="napari-nanoclass")
        if not busy:
            release_memory()  # what the job's forwards kept for reuse is not kept by napari
            self.bar.value = 0
            self.worker = None
            if self.activity is not None:
                self.activity.close()
                self.activity = None
        self.cancel_button.enabled = busy
        self.run_button.enabled = not busy


def layer_choices(viewer: Any, kind: str) -> Callable[[Any], list[tuple[str, Any]]]:
    def choices(_widget: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers if type(layer).__name__ == kind]

    return choices


NO_EXCLUSION = "(none)"  # the exclusion choice that leaves nothing out (a string: magicgui signals no change to None)
EXCLUDE_TIP = ("leave out the regions of a Shapes or Labels layer drawn on the image (a carbon film, contamination, "
               f"a grid bar): not normalised with, nothing found there. Regions narrower than {FILL_SIDE} px stay in")


def exclusion_choices(viewer: Any) -> Callable[[Any], list[tuple[str, Any]]]:
    """(none), then the viewer's Shapes and Labels layers: regions the user drew to leave out."""
    def choices(_widget: Any) -> list[tuple[str, Any]]:
        return [(NO_EXCLUSION, NO_EXCLUSION), *((layer.name, layer) for layer in viewer.layers
                                                if type(layer).__name__ in ("Shapes", "Labels"))]

    return choices


def exclusion_of(layer: Any, image: Any) -> np.ndarray | None:
    """The mask (nonzero: left out) that a Shapes or Labels layer draws on the Image layer
    ``image``'s planes (the analyses' ``exclude``), or None for no layer. Shapes are placed on the
    image's pixels through both layers' scale and translation, as the viewer shows them; a Labels
    layer is taken pixel for pixel (the core refuses one of another size)."""
    if layer is None or isinstance(layer, str):
        return None
    if type(layer).__name__ != "Shapes":
        return np.asarray(base_data(layer)) != 0
    from napari.layers import Shapes

    scale, translate = np.asarray(layer.scale[-2:]), np.asarray(layer.translate[-2:])
    image_scale, image_translate = np.asarray(image.scale[-2:]), np.asarray(image.translate[-2:])
    placed = [(np.asarray(v)[:, -2:] * scale + translate - image_translate) / image_scale for v in layer.data]
    drawn = Shapes(placed, shape_type=layer.shape_type) if placed else None
    plane = tuple(np.shape(base_data(image))[-2:])
    return np.zeros(plane, bool) if drawn is None else np.asarray(drawn.to_labels(labels_shape=plane)) > 0


def model_choices(task: str, architecture: str | None = None) -> Callable[[Any], list[str]]:
    def choices(_widget: Any) -> list[str]:
        return [info.name for info in list_models()
                if info.task == task and architecture in (None, info.architecture)]

    return choices


def layer_pixel_size(layer: Any) -> float | None:
    """The pixel size (nm) recorded with a layer — by this plugin's reader, its samples or a widget
    — else the one the file it was opened from records (napari's own TIFF reader drops the
    calibration), or None: a layer's ``scale`` alone may be in any unit, so it is not taken for nm."""
    size = (getattr(layer, "metadata", None) or {}).get("pixel_size_nm")
    try:
        return float(size) if size else _source_pixel_size(layer)
    except (TypeError, ValueError):
        return None


def _source_pixel_size(layer: Any) -> float | None:
    """The pixel size recorded in the file ``layer`` was opened from; None without one, or when
    the file is gone or unreadable (the analysis itself names the problem when it reads it)."""
    from napari_nanoclass.io.images import file_calibration

    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or not Path(path).exists():
        return None
    try:
        return file_calibration(path).pixel_size_nm
    except Exception:  # each format's library raises its own kinds for a damaged file
        return None


class PixelSize:
    """A pixel-size field (nm/px; 0 = unknown) for a dock's form, filled from the chosen layer, and
    the line under the form that says at which scale the chosen model will see the image: a
    mismatch or a missing pixel size is seen before a run, not after the results are misread."""

    def __init__(self, image: ComboBox, model: ComboBox) -> None:
        self.field = FloatSpinBox(label="pixel size (nm/px)", value=0.0, min=0.0, max=100000.0, step=0.1,
                                  tooltip="0 = unknown: the image is analysed at its own pixels; filled in from "
                                          "the layer when its file records a pixel size")
        self.note = text_label()
        self.image, self.model = image, model
        image.changed.connect(lambda _v: self.from_layer())
        for widget in (model, self.field):
            widget.changed.connect(lambda _v: self.update_note())
        self.from_layer()

    @property
    def value(self) -> float | None:
        return float(self.field.value) or None

    def from_layer(self) -> None:
        self.field.value = layer_pixel_size(self.image.value) or 0.0
        self.update_note()

    def update_note(self) -> None:
        if self.model.value is None:
            self.note.value = ""
            return
        info = registered_info(self.model.value)
        self.note.value = scale_note(self.value, info.pixel_size_nm if info else None, self.model.value)


def pixel_size_note(size: float | None) -> str:
    """What a dock says about the pixel size it used."""
    return f"pixel size {size:g} nm/px" if size else "pixel size unknown (used as is)"


PREVIOUS = " (previous)"


def keep_previous(viewer: Any, name: str) -> str | None:
    """Rename an existing result layer ``name`` to "<name> (previous)" so a re-run never silently
    replaces a result (corrections included); returns the kept layer's name, or None if there was none.
    Renaming, not a dialog: nothing blocks, so scripts and headless tests run the same way."""
    if name not in viewer.layers:
        return None
    layer = viewer.layers[name]
    layer.name = name + PREVIOUS  # napari appends " [1]" ... if that name is taken too
    return layer.name


def kept_note(kept: str | None) -> str:
    """What the dock says after a re-run kept the earlier result."""
    return f"; earlier result kept as {kept!r}" if kept else ""


def base_data(layer: Any) -> Any:
    """Full-resolution data of a layer (level 0 of a multiscale pyramid)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def fresh_workdir() -> Path:
    """A new folder name for one run's results too big for memory (created only if needed)."""
    return Path(tempfile.gettempdir()) / "napari-nanoclass" / uuid.uuid4().hex


class ViewerWidget(Container):
    """A dock widget bound to a viewer whose combo boxes follow the viewer's layer list."""

    def __init__(self, viewer: Any, widgets: list[Any], notes: Sequence[Any] = ()) -> None:
        self.viewer = viewer
        self.run_button = PushButton(text="Run")
        self.runner = TaskRunner(self.run_button)
        # the form's label column holds the inputs only: notes, buttons, status and results below
        # it get the dock's full width
        self.form = Container(widgets=widgets)
        super().__init__(widgets=[self.form, *notes, self.run_button, self.runner], labels=False)
        narrow_choices(self.native)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(lambda _e: self.reset_choices())
        self.reset_choices()

    def image_and_model(self, analysis: str) -> tuple[Any, LoadedModel, Path] | None:
        """The chosen greyscale Image layer, its model (cached, not reloaded per click) and a fresh
        workdir for results too big for memory; None after showing what is missing."""
        layer = self.image.value
        if layer is None or self.model.value is None:
            self.runner.on_error(ValueError("choose an image layer and a model first"))
            return None
        if getattr(layer, "rgb", False):
            self.runner.on_error(ValueError(f"layer {layer.name!r} is RGB; {analysis} needs a greyscale image"))
            return None
        return layer, load_model(self.model.value, self.device.value), fresh_workdir()


def narrow_choices(native: Any) -> None:
    """Let every drop-down under ``native`` be narrower than its longest entry (shown elided): a
    long model name must not widen the dock and squeeze napari's canvas."""
    from qtpy.QtWidgets import QComboBox

    for combo in native.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(12)


def remember(dock: Any, **widgets: Any) -> None:
    """Give ``widgets`` (by the names they are saved under) of ``dock`` the values they had when
    such a dock was last used, and keep them up to date (magicgui's ``persist``, for a form that is
    not one function's signature). A remembered choice that no longer exists (a model removed), or
    a path left empty, leaves the default."""
    name = type(dock).__name__
    saved = load_settings(name)
    for key, widget in widgets.items():
        if key in saved:
            _restore(widget, saved[key])
    for widget in widgets.values():
        widget.changed.connect(lambda _v: save_settings(name, {k: _saved(w) for k, w in widgets.items()}))


def _saved(widget: Any) -> Any:
    """A widget's value as remembered: a path field as its text ("" when empty, not ".")."""
    line_edit = getattr(widget, "line_edit", None)
    return line_edit.value if line_edit is not None else widget.value


def _restore(widget: Any, value: Any) -> None:
    choices = getattr(widget, "choices", None)
    if (choices is not None and value not in choices) or value == "":
        return
    try:
        widget.value = value
    except (TypeError, ValueError):  # out of the widget's range since it was saved
        pass


def format_metrics(metrics: dict[str, float]) -> str:
    parts = [f"{k} {metrics[k]:.3f}" for k in ("loss", "val_miou") if k in metrics]
    return (" | " + ", ".join(parts)) if parts else ""

