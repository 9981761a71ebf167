"""napari dock widgets: thin forms over the compute core.

Each widget builds a step generator from the core (``segment_steps``, ``train_steps``) and hands
it to :class:`TaskRunner`, which runs it in a napari ``thread_worker`` with a progress bar and a
Cancel button; errors always clear the bar and are shown, never swallowed. ``runner.synchronous
= True`` runs the same generator in the calling thread (tests, scripting).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FloatSpinBox, Label, LineEdit, ProgressBar, PushButton,
                              SpinBox)

from .datasets import Pair, pair_from_arrays
from .engine import available_devices
from .models.registry import LoadedModel, list_models, load_model
from .progress import Progress, Steps, run_sync
from .segmentation import DEFAULT_MODEL, SegmentationResult, segment_steps
from .training import TrainConfig, TrainResult, train_steps


class TaskRunner(Container):
    """Progress bar + Cancel button that run one step generator at a time off the GUI thread."""

    def __init__(self, run_button: PushButton) -> None:
        self.bar = ProgressBar(value=0, max=1, visible=False)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        super().__init__(widgets=[self.bar, self.cancel_button, self.status], labels=False)
        self.run_button = run_button
        self.synchronous = False
        self.worker: Any = None
        self.last_error: BaseException | None = None
        self.cancel_button.changed.connect(self.cancel)

    def start(self, steps: Steps[Any], on_result: Callable[[Any], None]) -> None:
        self.last_error = None
        self._busy(True)
        if self.synchronous:
            try:
                on_result(run_sync(steps, progress=self.show_progress))
            except Exception as exc:
                self.on_error(exc)
            finally:
                self._busy(False)
            return
        from napari.qt.threading import create_worker

        def run() -> Any:
            return (yield from steps)

        self.worker = create_worker(run, _start_thread=False, _ignore_errors=True)  # on_error shows them
        self.worker.yielded.connect(self.show_progress)
        self.worker.returned.connect(on_result)
        self.worker.errored.connect(self.on_error)
        self.worker.aborted.connect(lambda: self.status.__setattr__("value", "cancelled"))
        self.worker.finished.connect(lambda: self._busy(False))
        self.worker.start()

    def cancel(self) -> None:
        """Stops the running job at its next step (at most one tile or iteration away)."""
        if self.worker is not None:
            self.worker.quit()

    def show_progress(self, step: Progress) -> None:
        self.bar.max = max(step.total, 1)
        self.bar.value = min(step.done, self.bar.max)
        self.status.value = step.message

    def on_error(self, exc: BaseException) -> None:
        self.last_error = exc
        self._busy(False)
        self.status.value = f"error: {exc}"
        from napari.utils.notifications import show_error

        show_error(f"napari-nanoclass: {exc}")

    def _busy(self, busy: bool) -> None:
        self.bar.visible = busy
        if not busy:
            self.bar.value = 0
            self.worker = None
        self.cancel_button.enabled = busy
        self.run_button.enabled = not busy


def _layer_choices(viewer: Any, kind: str) -> Callable[[Any], list[tuple[str, Any]]]:
    def choices(_widget: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers if type(layer).__name__ == kind]

    return choices


def _model_choices(task: str, architecture: str | None = None) -> Callable[[Any], list[str]]:
    def choices(_widget: Any) -> list[str]:
        return [info.name for info in list_models()
                if info.task == task and architecture in (None, info.architecture)]

    return choices


def _base_data(layer: Any) -> Any:
    """Full-resolution data of a layer (level 0 of a multiscale pyramid)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


class _ViewerWidget(Container):
    """A dock widget bound to a viewer whose combo boxes follow the viewer's layer list."""

    def __init__(self, viewer: Any, widgets: list[Any]) -> None:
        self.viewer = viewer
        self.run_button = PushButton(text="Run")
        self.runner = TaskRunner(self.run_button)
        super().__init__(widgets=[*widgets, self.run_button, self.runner])
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
        model = load_model(self.model.value, self.device.value)
        workdir = Path(tempfile.gettempdir()) / "napari-nanoclass" / uuid.uuid4().hex  # created only if needed
        return layer, model, workdir


class SegmentWidget(_ViewerWidget):
    """Image layer → Labels layer of classes (colours, names and a per-class features table)."""

    def __init__(self, napari_viewer: Any) -> None:
        self.image = ComboBox(label="image", choices=_layer_choices(napari_viewer, "Image"))
        self.model = ComboBox(label="model", choices=_model_choices("segmentation"))
        self.tile = SpinBox(label="tile (px)", value=0, min=0, max=8192, step=64, tooltip="0 = the model's default")
        self.device = ComboBox(label="device", choices=available_devices())
        self.probabilities = CheckBox(text="add probability layer", value=False)
        self.tta = CheckBox(text="test-time augmentation (8× slower)", value=False,
                            tooltip="average over the 8 rotations and flips of every tile")
        super().__init__(napari_viewer, [self.image, self.model, self.tile, self.device, self.probabilities, self.tta])
        if DEFAULT_MODEL in self.model.choices:
            self.model.value = DEFAULT_MODEL
        self.run_button.changed.connect(self.run)

    def run(self) -> None:
        chosen = self.image_and_model("segmentation")
        if chosen is None:
            return
        layer, model, workdir = chosen
        steps = segment_steps(_base_data(layer), model, tile=self.tile.value or None,
                              probabilities=self.probabilities.value, workdir=workdir, tta=self.tta.value)
        self.runner.start(steps, lambda result: self.add_layers(result, layer))

    def add_layers(self, result: SegmentationResult, source: Any) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        colours = {i: c for i, c in enumerate(result.class_colours)}
        colours[None] = "transparent"
        self.viewer.add_labels(
            result.labels, name=f"{result.model_name} labels", scale=source.scale, translate=source.translate,
            features=result.class_table(), colormap=DirectLabelColormap(color_dict=colours) if result.class_colours else None,
            metadata={"class_names": result.class_names, "model": result.model_name, "model_sha256": result.model_sha256},
        )
        if result.probabilities is not None:
            self.viewer.add_image(result.probabilities, name=f"{result.model_name} probabilities", channel_axis=0,
                                  scale=source.scale, translate=source.translate, visible=False,
                                  colormap="magma", contrast_limits=(0, 1))
        self.runner.status.value = "done: " + ", ".join(
            f"{r['class']} {r['fraction']:.1%}" for r in result.class_table())


class TrainWidget(_ViewerWidget):
    """Train or fine-tune a segmentation model on Image + (hand-corrected) Labels layers.

    The bottom quarter of each image is held out for validation unless validation layers are
    given; the best epoch is saved into the user registry under ``name``, where the Segment
    widget finds it.
    """

    def __init__(self, napari_viewer: Any) -> None:
        self.image = ComboBox(label="image", choices=_layer_choices(napari_viewer, "Image"))
        self.mask = ComboBox(label="labels", choices=_layer_choices(napari_viewer, "Labels"))
        self.base = ComboBox(label="start from", choices=lambda _w: ["(new model)", *_model_choices("segmentation")(_w)])
        self.classes = LineEdit(label="classes (new model)", value="background,foreground")
        self.save_as = LineEdit(label="save as", value="my-finetuned-seunet")
        self.epochs = SpinBox(label="epochs", value=10, min=1, max=1000)
        self.iters = SpinBox(label="iterations/epoch", value=20, min=1, max=10000)
        self.crop = SpinBox(label="crop (px)", value=256, min=32, max=1024, step=32)
        self.frem = CheckBox(text="FREM", value=True)
        self.frem_b = SpinBox(label="FREM B", value=3, min=1, max=4096)
        self.frem_x = FloatSpinBox(label="FREM X", value=250.0, min=1.0, max=10000.0)
        super().__init__(napari_viewer, [self.image, self.mask, self.base, self.classes, self.save_as, self.epochs,
                                         self.iters, self.crop, self.frem, self.frem_b, self.frem_x])
        self.result: TrainResult | None = None
        self.run_button.text = "Train"
        self.run_button.changed.connect(self.run)

    def pairs(self) -> tuple[list[Pair], list[Pair]]:
        """Training and validation pairs from the chosen layers (planes of stacks separately)."""
        image, labels = self.image.value, self.mask.value
        if image is None or labels is None:
            raise ValueError("choose an image layer and a labels layer")
        data, mask = np.asarray(_base_data(image)), np.asarray(_base_data(labels))
        planes = [(data, mask)] if data.ndim == 2 else list(zip(data, mask))
        train, val = [], []
        for z, (img, lab) in enumerate(planes):
            cut = img.shape[0] * 3 // 4
            train.append(pair_from_arrays(img[:cut], lab[:cut], f"{image.name}[{z}] top"))
            val.append(pair_from_arrays(img[cut:], lab[cut:], f"{image.name}[{z}] bottom"))
        return train, val

    def config(self) -> TrainConfig:
        base = None if self.base.value in (None, "(new model)") else self.base.value
        classes = [c.strip() for c in self.classes.value.split(",") if c.strip()]
        return TrainConfig(name=self.save_as.value.strip(), class_names=classes, init_from=base,
                           epochs=self.epochs.value, iters_per_epoch=self.iters.value, crop=self.crop.value,
                           frem_b=self.frem_b.value if self.frem.value else 0, frem_x=self.frem_x.value,
                           patience=max(3, self.epochs.value // 3), tile=512)

    def run(self) -> None:
        try:
            train, val = self.pairs()
            steps = train_steps(train, val, self.config(), register=True)
        except Exception as exc:
            self.runner.on_error(exc)
            return
        self.runner.start(self._with_metrics(steps), self.finished)

    def _with_metrics(self, steps: Steps[TrainResult]) -> Steps[TrainResult]:
        """Pass progress through, remembering the latest loss / validation mIoU for the dock."""
        latest: dict[str, float] = {}
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                return stop.value
            latest.update(step.metrics or {})
            yield Progress(step.done, step.total, step.message + _format_metrics(latest), step.metrics)

    def finished(self, result: TrainResult) -> None:
        self.result = result
        adjusted = result.info.training.get("logit_adjustment", {}).get("val_miou")
        calibrated = f", {adjusted:.3f} with calibrated decisions" if adjusted is not None else ""
        self.runner.status.value = f"saved model {result.info.name!r} (best val mIoU {result.best_miou:.3f}{calibrated})"
        self.reset_choices()


def _format_metrics(metrics: dict[str, float]) -> str:
    parts = [f"{k} {metrics[k]:.3f}" for k in ("loss", "val_miou") if k in metrics]
    return (" | " + ", ".join(parts)) if parts else ""

