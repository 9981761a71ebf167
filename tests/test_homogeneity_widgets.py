"""Fibre homogeneity widgets on napari's ViewerModel (no canvas), run synchronously."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nanoclass._napari.homogeneity import (
    HomogeneityTrainWidget,
    HomogeneityWidget,
)
from napari_nanoclass.homogeneity import DEFAULT_CAM_MODEL, DEFAULT_MODEL
from napari_nanoclass.models.registry import list_models

from .synthetic_fibres import fibres


def _run(widget) -> None:
    widget.runner.synchronous = True
    widget.run_button.clicked.emit()
    assert widget.runner.last_error is None, widget.runner.last_error


def test_homogeneity_widget_adds_aligned_heat_map_cam_views_and_verdict(viewer, fibre_model):
    image = fibres((200, 300), np.random.default_rng(0))
    viewer.add_image(image, name="sem", scale=(2.0, 2.0), translate=(10.0, 20.0))
    widget = HomogeneityWidget(viewer)
    widget.model.value = fibre_model
    widget.view.value = 128
    _run(widget)
    heat = viewer.layers[f"{fibre_model} p(NHNF)"]
    assert heat.data.shape == image.shape  # drawn over the image, never past its edge
    assert tuple(heat.scale) == (2.0, 2.0) and tuple(heat.translate) == (10.0, 20.0)
    pixels = np.asarray(heat.data)
    # one value per 32 px patch, the last (partial) row and column of patches cut at the image's edge
    assert pixels[0, 0] == pixels[31, 31] and pixels[199, 299] == pixels[192, 288]
    assert len(np.unique(pixels[::32, ::32])) > 1 and pixels[::32, ::32].shape == (7, 10)
    assert heat.blending == "additive" and tuple(heat.contrast_limits) == (0, 1)
    cam = viewer.layers[f"{fibre_model} defect map"]
    assert cam.data.shape == image.shape and tuple(cam.translate) == (10.0, 20.0)
    views = viewer.layers[f"{fibre_model} views"]
    assert len(views.data) == 2 * 3 and set(views.features["verdict"]) <= {"HNF", "NHNF"}
    summary = heat.metadata["summary"]
    assert summary["verdict"] in widget.verdict.value and "views NHNF" in widget.verdict.value
    assert not widget.runner.bar.visible and widget.run_button.enabled


def test_default_texture_model_gets_its_defect_map_from_the_cnn_and_is_no_base_to_fine_tune(viewer, fibre_model):
    viewer.add_image(fibres((256, 256), np.random.default_rng(2)), name="sem")
    widget = HomogeneityWidget(viewer)
    assert widget.model.value == DEFAULT_MODEL and widget.cam.value
    _run(widget)
    assert viewer.layers[f"{DEFAULT_MODEL} p(NHNF)"].data.shape == (256, 256)
    cam = viewer.layers[f"{DEFAULT_CAM_MODEL} defect map"]
    assert cam.data.shape == (256, 256) and cam.metadata["weighted_by"] == DEFAULT_MODEL
    trainer = HomogeneityTrainWidget(viewer)
    assert fibre_model in trainer.base.choices and DEFAULT_MODEL not in trainer.base.choices


def test_homogeneity_widget_refuses_rgb_with_a_clear_error(viewer, fibre_model):
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="colour", rgb=True)
    widget = HomogeneityWidget(viewer)
    widget.model.value = fibre_model
    widget.runner.synchronous = True
    widget.run_button.clicked.emit()
    assert "RGB" in str(widget.runner.last_error) and not widget.runner.bar.visible


@pytest.mark.filterwarnings("ignore:training loss")  # 5 steps: plumbing only; learning is tested in the core
def test_train_widget_fine_tunes_from_marks_and_registers_the_model(viewer, fibre_model):
    rng = np.random.default_rng(1)
    left = fibres((64, 64), rng, n_fibres=4)
    right = fibres((64, 64), rng, n_fibres=4, beads=[(16, 16, 6), (48, 48, 6)])
    viewer.add_image(np.concatenate([left, right], axis=1), name="sem")
    marks = np.concatenate([np.ones((64, 64), np.uint8), np.full((64, 64), 2, np.uint8)], axis=1)
    viewer.add_labels(marks, name="marks")
    widget = HomogeneityTrainWidget(viewer)
    widget.marks.value = viewer.layers["marks"]
    widget.base.value = fibre_model  # fine-tune: keeps the base architecture
    widget.save_as.value = "my-marked"
    widget.steps.value = 5
    _run(widget)
    assert "my-marked" in [i.name for i in list_models()]
    assert widget.result.info.arch_params["widths"] == [4, 8]
    assert "my-marked" in HomogeneityWidget(viewer).model.choices


def test_train_widget_whole_image_label_and_missing_marks(viewer):
    viewer.add_image(fibres((64, 64), np.random.default_rng(2)), name="sem")
    widget = HomogeneityTrainWidget(viewer)
    widget.runner.synchronous = True
    widget.run_button.clicked.emit()
    assert "marks" in str(widget.runner.last_error)
    widget.whole.value = "HNF"
    assert [m.label for m in widget.micrographs()] == [0]
    widget.mode.value = "three"
    assert "slightly_defective" in widget.whole.choices


def test_homogeneity_rerun_keeps_the_earlier_maps(viewer, fibre_model):
    viewer.add_image(fibres((200, 300), np.random.default_rng(1)), name="sem")
    widget = HomogeneityWidget(viewer)
    widget.model.value = fibre_model
    widget.view.value = 128
    _run(widget)
    first = [viewer.layers[f"{fibre_model} {what}"] for what in ("p(NHNF)", "defect map", "views")]
    _run(widget)
    for layer, what in zip(first, ("p(NHNF)", "defect map", "views")):
        assert viewer.layers[f"{fibre_model} {what} (previous)"] is layer
        assert viewer.layers[f"{fibre_model} {what}"] is not layer
    assert "earlier result kept as" in widget.runner.status.value
    widget.cam.value = False  # a run without a defect map must not leave the last one passing for its own
    _run(widget)
    assert f"{fibre_model} defect map" not in viewer.layers
