"""napari dock widgets for segmentation: segment an image layer, train or fine-tune on layers.

Thin forms over :mod:`napari_nanoclass.segmentation`: each builds a step generator from the core
(``segment_steps``, ``train_steps``) and hands it to :class:`.common.TaskRunner`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, LineEdit, SpinBox

from napari_nanoclass._napari.common import (
    EXCLUDE_TIP,
    PixelSize,
    ViewerWidget,
    base_data,
    exclusion_choices,
    exclusion_of,
    format_metrics,
    keep_previous,
    kept_note,
    layer_choices,
    legend_html,
    model_choices,
    pixel_size_note,
    remember,
    text_label,
)
from napari_nanoclass.core.devices import available_devices
from napari_nanoclass.core.progress import Progress, Steps, mapped
from napari_nanoclass.io.reader import probability_layer
from napari_nanoclass.segmentation import DEFAULT_MODEL
from napari_nanoclass.segmentation.data import Pair
from napari_nanoclass.segmentation.predict import SegmentationResult, segment_steps
from napari_nanoclass.segmentation.train import TrainConfig, TrainResult, default_patience, holdout_pairs, train_steps


class SegmentWidget(ViewerWidget):
    """Image layer → Labels layer of classes (colours, names and a per-class features table)."""

    def __init__(self, napari_viewer: Any) -> None:
        self.image = ComboBox(label="image", choices=layer_choices(napari_viewer, "Image"))
        self.model = ComboBox(label="model", choices=model_choices("segmentation"))
        # a fixed tile keeps progress and Cancel moving window by window on big images; 0 runs the
        # fewest, largest windows the memory allows (faster, but Cancel waits for a whole window)
        self.tile = SpinBox(label="tile (px)", value=1024, min=0, max=8192, step=64,
                            tooltip="0 = the largest windows half the memory allows: fastest, but progress and "
                                    "Cancel move only between windows")
        self.pixel_size = PixelSize(self.image, self.model)
        self.device = ComboBox(label="device", choices=available_devices())
        self.exclude = ComboBox(label="exclude", choices=exclusion_choices(napari_viewer), tooltip=EXCLUDE_TIP)
        self.probabilities = CheckBox(text="add probability layers", value=False,
                                      tooltip="one layer per class: its softmax probability at every pixel")
        self.tta = CheckBox(text="test-time augmentation (8× slower)", value=False,
                            tooltip="average over the 8 rotations and flips of every tile")
        super().__init__(napari_viewer, [self.image, self.model, self.pixel_size.field, self.exclude, self.tile,
                                         self.device, self.probabilities, self.tta], notes=[self.pixel_size.note])
        self.legend = text_label()
        self.extend([self.legend])
        if DEFAULT_MODEL in self.model.choices:
            self.model.value = DEFAULT_MODEL
        remember(self, model=self.model, tile=self.tile, device=self.device, probabilities=self.probabilities,
                 tta=self.tta)
        self.run_button.changed.connect(self.run)

    def run(self) -> None:
        chosen = self.image_and_model("segmentation")
        if chosen is None:
            return
        layer, model, workdir = chosen
        steps = segment_steps(base_data(layer), model, tile=self.tile.value or None,
                              probabilities=self.probabilities.value, workdir=workdir, tta=self.tta.value,
                              pixel_size_nm=self.pixel_size.value, name=layer.name,
                              exclude=exclusion_of(self.exclude.value, layer))
        self.runner.start(steps, lambda result: self.add_layers(result, layer))

    def add_layers(self, result: SegmentationResult, source: Any) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        colours = {i: c for i, c in enumerate(result.class_colours)}
        colours[None] = "transparent"
        kept = keep_previous(self.viewer, f"{result.model_name} labels")
        self.viewer.add_labels(
            result.labels, name=f"{result.model_name} labels", scale=source.scale, translate=source.translate,
            features=result.class_table(), colormap=DirectLabelColormap(color_dict=colours) if result.class_colours else None,
            metadata={"class_names": result.class_names, "model": result.model_name, "model_sha256": result.model_sha256,
                      "pixel_size_nm": result.pixel_size_nm},
        )
        if result.probabilities is not None:
            data, meta, _ = probability_layer(result.probabilities, result.class_names, result.model_name)
            for name in meta["name"]:
                keep_previous(self.viewer, name)
            for layer in self.viewer.add_image(data, **meta, scale=source.scale, translate=source.translate):
                layer.colorbar.visible = True
        self.legend.value = (legend_html(list(zip(result.class_names, result.class_colours)), "classes")
                             if result.class_colours else "")
        self.runner.status.value = f"done ({pixel_size_note(result.pixel_size_nm)}): " + ", ".join(
            f"{r['class']} {r['fraction']:.1%}" for r in result.class_table()) + kept_note(kept)


class TrainWidget(ViewerWidget):
    """Train or fine-tune a segmentation model on Image + (hand-corrected) Labels layers.

    The bottom quarter of each image is held out for validation (:func:`holdout_pairs`); the best
    epoch is saved into the user registry under ``name``, where the Segment widget finds it.
    """

    def __init__(self, napari_viewer: Any) -> None:
        self.image = ComboBox(label="image", choices=layer_choices(napari_viewer, "Image"))
        self.mask = ComboBox(label="labels", choices=layer_choices(napari_viewer, "Labels"))
        self.base = ComboBox(label="start from", choices=lambda _w: ["(new model)", *model_choices("segmentation")(_w)],
                             tooltip="fine-tune a registered model (keeps its classes), or train a new one")
        self.classes = LineEdit(label="classes (new model)", value="background,foreground",
                                tooltip="class names in label order, comma-separated: label 0 is the first")
        self.save_as = LineEdit(label="save as", value="my-finetuned-seunet",
                                tooltip="name in your model registry; the Segment dock lists it after training")
        self.epochs = SpinBox(label="epochs", value=10, min=1, max=1000,
                              tooltip="the epoch with the best validation mIoU (bottom quarter of the image) is kept")
        self.iters = SpinBox(label="iterations/epoch", value=20, min=1, max=10000,
                             tooltip="random crops per epoch, each one optimiser step")
        self.crop = SpinBox(label="crop (px)", value=256, min=32, max=1024, step=32,
                            tooltip="side of the random training crops; larger sees more context, costs more")
        self.frem = CheckBox(text="FREM", value=True,
                             tooltip="Feature Random Enhancement Module: in training only, multiplies B randomly "
                                     "chosen bottleneck channels by X, redrawn every epoch")
        self.frem_b = SpinBox(label="FREM B", value=3, min=1, max=4096,
                              tooltip="FREM: how many bottleneck channels are amplified (at most the bottleneck's width)")
        self.frem_x = FloatSpinBox(label="FREM X", value=250.0, min=1.0, max=10000.0,
                                   tooltip="FREM: the factor those channels are multiplied by")
        super().__init__(napari_viewer, [self.image, self.mask, self.base, self.classes, self.save_as, self.epochs,
                                         self.iters, self.crop, self.frem, self.frem_b, self.frem_x])
        remember(self, base=self.base, classes=self.classes, save_as=self.save_as, epochs=self.epochs,
                 iters=self.iters, crop=self.crop, frem=self.frem, frem_b=self.frem_b, frem_x=self.frem_x)
        self.result: TrainResult | None = None
        self.run_button.text = "Train"
        self.run_button.changed.connect(self.run)

    def pairs(self) -> tuple[list[Pair], list[Pair]]:
        """Training and validation pairs from the chosen layers (planes of stacks separately)."""
        image, labels = self.image.value, self.mask.value
        if image is None or labels is None:
            raise ValueError("choose an image layer and a labels layer")
        return holdout_pairs(np.asarray(base_data(image)), np.asarray(base_data(labels)), image.name)

    def config(self) -> TrainConfig:
        base = None if self.base.value in (None, "(new model)") else self.base.value
        classes = [c.strip() for c in self.classes.value.split(",") if c.strip()]
        return TrainConfig(name=self.save_as.value.strip(), class_names=classes, init_from=base,
                           epochs=self.epochs.value, iters_per_epoch=self.iters.value, crop=self.crop.value,
                           frem_b=self.frem_b.value if self.frem.value else 0, frem_x=self.frem_x.value,
                           patience=default_patience(self.epochs.value), tile=512)

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

        def with_latest(step: Progress) -> Progress:
            latest.update(step.metrics or {})
            return Progress(step.done, step.total, step.message + format_metrics(latest), step.metrics)

        return mapped(steps, with_latest)

    def finished(self, result: TrainResult) -> None:
        self.result = result
        adjusted = result.info.training.get("logit_adjustment", {}).get("val_miou")
        calibrated = f", {adjusted:.3f} with calibrated decisions" if adjusted is not None else ""
        self.runner.status.value = f"saved model {result.info.name!r} (best val mIoU {result.best_miou:.3f}{calibrated})"
        self.reset_choices()
