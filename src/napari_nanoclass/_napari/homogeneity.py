"""napari dock widgets for SEM nanofibre homogeneity: analyse an image, and train on marked regions.

Thin forms over :mod:`.homogeneity` and :mod:`.homogeneity_training`, run by the same
:class:`._widgets.TaskRunner` (worker thread, progress bar, Cancel, errors shown).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, LineEdit, SpinBox

from napari_nanoclass._napari.common import (
    PixelSize,
    ViewerWidget,
    base_data,
    format_metrics,
    keep_previous,
    kept_note,
    layer_choices,
    legend_html,
    model_choices,
    pixel_size_note,
    remember,
    results_panel,
    text_label,
)
from napari_nanoclass.core.devices import available_devices
from napari_nanoclass.core.progress import Progress, Steps, mapped
from napari_nanoclass.homogeneity import CLASS_COLOURS, CNN_ARCHITECTURE, DEFAULT_CAM_MODEL, DEFAULT_MODEL, VIEW
from napari_nanoclass.homogeneity.predict import HomogeneityResult, analyse_steps
from napari_nanoclass.homogeneity.train import (
    MODE_CLASSES,
    HomogeneityConfig,
    Micrograph,
    micrographs_from_arrays,
    train_steps,
)
from napari_nanoclass.io.reader import NHNF_OUTLINE, homogeneity_map_layers
from napari_nanoclass.models.registry import LoadedModel, load_model

TASK = "patch-classification"


def homogeneity_legend(cam: bool, views: bool) -> str:
    """What the result layers' colours mean, with the class names spelled out."""
    entries = [("NHNF patch outline (p(NHNF) ≥ 0.5)", NHNF_OUTLINE)]
    if cam:
        entries.append(("defect map: where the CNN saw defects", "#ff00ff"))
    if views:
        entries += [("HNF view", CLASS_COLOURS[0]), ("NHNF view", CLASS_COLOURS[-1])]
    return (legend_html(entries) + "<br>HNF = homogeneous nanofibres; NHNF = non-homogeneous (beads, "
            "defects). The p(NHNF) heat map layer is hidden: tick it in the layer list.")


class HomogeneityWidget(ViewerWidget):
    """Image layer → heat map of p(non-homogeneous) per patch, optional Grad-CAM layer, verdict in the dock.

    The defect map comes from the model itself if it is a FibreCNN, else from the shipped CNN
    (``DEFAULT_CAM_MODEL``), weighted by the chosen model's patch probabilities.

    The heat map is blended additively with a black-to-yellow colour map, so homogeneous patches
    add nothing and the fibres stay visible everywhere; images larger than one view also get a
    Shapes layer of the views, coloured by verdict, with the per-view table as its features.
    """

    def __init__(self, napari_viewer: Any) -> None:
        self.image = ComboBox(label="image", choices=layer_choices(napari_viewer, "Image"))
        self.model = ComboBox(label="model", choices=model_choices(TASK))
        self.pixel_size = PixelSize(self.image, self.model)
        self.device = ComboBox(label="device", choices=available_devices())
        self.cam = CheckBox(text="add defect map (Grad-CAM)", value=True,
                            tooltip=f"made by the model if it is a FibreCNN, else by {DEFAULT_CAM_MODEL}")
        self.view = SpinBox(label="view (px)", value=VIEW, min=128, max=16384, step=128,
                            tooltip="side of one SEM view; a verdict is given per view")
        self.verdict = text_label()
        self.legend = text_label()
        super().__init__(napari_viewer, [self.image, self.model, self.pixel_size.field, self.device, self.cam,
                                         self.view], notes=[self.pixel_size.note])
        self.extend([results_panel(self.verdict, self.legend)])
        if DEFAULT_MODEL in self.model.choices:
            self.model.value = DEFAULT_MODEL
        remember(self, model=self.model, device=self.device, cam=self.cam, view=self.view)
        self.run_button.changed.connect(self.run)

    def run(self) -> None:
        chosen = self.image_and_model("homogeneity")
        if chosen is None:
            return
        layer, model, workdir = chosen
        steps = analyse_steps(base_data(layer), model, cam=self.cam.value, view=self.view.value, workdir=workdir,
                              pixel_size_nm=self.pixel_size.value, name=layer.name)
        self.runner.start(steps, lambda result: self.add_layers(result, layer))

    def add_layers(self, result: HomogeneityResult, source: Any) -> None:
        from napari.layers import Layer

        # an earlier defect map is kept as "(previous)" even when this run makes none: under its
        # own name it would pass for the new result's
        names = [f"{result.model_name} {what}" for what in ("NHNF patches", "p(NHNF)", "views")]
        names += [layer.name for layer in self.viewer.layers if layer.name.endswith(" defect map")
                  and layer.metadata.get("weighted_by") == result.model_name]
        kept = [keep_previous(self.viewer, name) for name in names]
        shape = base_data(source).shape
        metadata = {"class_names": result.class_names, "model": result.model_name,
                    "model_sha256": result.model_sha256, "summary": result.summary}
        for data, meta, kind in homogeneity_map_layers(
                result.p_nhnf, result.patch_px, shape, result.model_name, cam=result.cam,
                cam_name=result.cam_model_name, metadata=metadata,
                cam_metadata={"model": result.cam_model_name, "weighted_by": result.model_name}):
            layer = self.viewer.add_layer(Layer.create(data, {**meta, "scale": source.scale,
                                                              "translate": source.translate}, kind))
            if kind == "image":
                layer.colorbar.visible = True
        if len(result.views) > 1:
            self._add_views(result, source)
        s = result.summary
        n_bad = sum(v["verdict"] == "NHNF" for v in result.views)
        self.verdict.value = (f"{s['verdict']} (p={s['p_nhnf']:.2f}, confidence {s['confidence']:.2f}); "
                              f"{s['nonhomogeneous_fraction']:.0%} of the area non-homogeneous; "
                              f"{n_bad} of {len(result.views)} views NHNF")
        self.legend.value = homogeneity_legend(result.cam is not None, len(result.views) > 1)
        self.runner.status.value = f"done ({pixel_size_note(result.pixel_size_nm)})" + kept_note(", ".join(k for k in kept if k))

    def _add_views(self, result: HomogeneityResult, source: Any) -> None:
        height, width = source.data.shape[-2:] if not getattr(source, "multiscale", False) else source.data[0].shape[-2:]
        side = self.view.value
        boxes = [np.array([[v["y0_px"], v["x0_px"]], [min(v["y0_px"] + side, height), min(v["x0_px"] + side, width)]])
                 - 0.5
                 for v in result.views if v.get("plane", 0) == 0]
        rows = [v for v in result.views if v.get("plane", 0) == 0]
        colours = [CLASS_COLOURS[-1] if v["verdict"] == "NHNF" else CLASS_COLOURS[0] for v in rows]
        self.viewer.add_shapes(boxes, shape_type="rectangle", name=f"{result.model_name} views", edge_color=colours,
                               face_color="transparent", edge_width=4, scale=source.scale[-2:],
                               translate=source.translate[-2:],
                               features={k: [v[k] for v in rows] for k in rows[0]})


class HomogeneityTrainWidget(ViewerWidget):
    """Train or fine-tune a patch classifier on an image whose regions a user marked on a Labels layer.

    Marks: label 1 = the homogeneous class, 2 = the next class, and so on (two-class: 1 HNF,
    2 NHNF). Or give the whole image one label. The model is saved into the user registry, where
    the Fibre homogeneity widget finds it.
    """

    def __init__(self, napari_viewer: Any) -> None:
        self.image = ComboBox(label="image", choices=layer_choices(napari_viewer, "Image"))
        self.marks = ComboBox(label="marks", choices=lambda w: [("(none)", None),
                                                                *layer_choices(napari_viewer, "Labels")(w)])
        self.mode = ComboBox(label="classes", choices=["two", "three"], value="two",
                             tooltip="two: HNF / NHNF; three: homogeneous, slightly and strongly defective")
        self.whole = ComboBox(label="whole-image label", choices=lambda _w: ["(use marks)", *MODE_CLASSES[self.mode.value]])
        self.base = ComboBox(label="start from", choices=lambda w: ["(new model)", *model_choices(TASK, CNN_ARCHITECTURE)(w)])
        self.save_as = LineEdit(label="save as", value="my-fibre-cnn",
                                tooltip="name in your model registry; the Fibre homogeneity dock lists it after training")
        self.steps = SpinBox(label="steps", value=100, min=1, max=100000,
                             tooltip="optimiser steps, each on a batch of random patches from the marked regions")
        super().__init__(napari_viewer, [self.image, self.marks, self.mode, self.whole, self.base, self.save_as,
                                         self.steps])
        self.mode.changed.connect(lambda _v: self.whole.reset_choices())
        remember(self, mode=self.mode, base=self.base, save_as=self.save_as, steps=self.steps)
        self.result: LoadedModel | None = None
        self.run_button.text = "Train"
        self.run_button.changed.connect(self.run)

    def micrographs(self) -> list[Micrograph]:
        """One training micrograph per plane of the chosen image, with marks or the whole-image label."""
        if self.image.value is None:
            raise ValueError("choose an image layer")
        data, name = np.asarray(base_data(self.image.value)), self.image.value.name
        if self.whole.value != "(use marks)":
            label = MODE_CLASSES[self.mode.value].index(self.whole.value)
            return micrographs_from_arrays(data, name, label=label)
        if self.marks.value is None:
            raise ValueError("choose a marks layer (1 = homogeneous, 2 = defective, ...) or a whole-image label")
        return micrographs_from_arrays(data, name, marks=np.asarray(base_data(self.marks.value)))

    def config(self) -> HomogeneityConfig:
        base = None if self.base.value in (None, "(new model)") else self.base.value
        arch: dict[str, Any] = {}
        if base is not None:  # fine-tuning keeps the base model's architecture
            params = load_model(base).info.arch_params
            arch = {k: params[k] for k in ("widths", "hidden", "patch", "head", "dropout") if k in params}
        return HomogeneityConfig(name=self.save_as.value.strip(), mode=self.mode.value, steps=self.steps.value,
                                 init_from=base, **arch)

    def run(self) -> None:
        try:
            steps = train_steps(self.micrographs(), self.config(), save=True)
        except Exception as exc:
            self.runner.on_error(exc)
            return
        self.runner.start(self._with_loss(steps), self.finished)

    @staticmethod
    def _with_loss(steps: Steps[LoadedModel]) -> Steps[LoadedModel]:
        return mapped(steps, lambda step: Progress(step.done, step.total,
                                                   step.message + format_metrics(step.metrics or {}), step.metrics))

    def finished(self, result: LoadedModel) -> None:
        self.result = result
        self.runner.status.value = f"saved model {result.info.name!r}"
        self.reset_choices()
