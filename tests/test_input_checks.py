"""Inputs refused before any compute with one message that says what is wrong (issue 25, point 5):
from Python (the core) and in the dock (the widget shows the same message, the bar is cleared)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nanoclass._napari.homogeneity import HomogeneityTrainWidget, HomogeneityWidget
from napari_nanoclass._napari.segmentation import SegmentWidget, TrainWidget
from napari_nanoclass.homogeneity.predict import analyse_steps
from napari_nanoclass.homogeneity.train import micrographs_from_arrays
from napari_nanoclass.io.images import ImageError
from napari_nanoclass.models.registry import load_model
from napari_nanoclass.segmentation.predict import segment_steps
from napari_nanoclass.segmentation.train import TrainConfig, holdout_pairs, train_steps

from .test_training import synthetic_pair


def _run(widget) -> str:
    """Run a widget synchronously; the message its dock shows."""
    widget.runner.synchronous = True
    widget.run_button.clicked.emit()
    assert widget.runner.last_error is not None, "the bad input was accepted"
    assert not widget.runner.bar.visible and widget.run_button.enabled
    assert widget.runner.status.value == f"error: {widget.runner.last_error}"
    return str(widget.runner.last_error)


def test_segmentation_refuses_an_image_smaller_than_the_receptive_radius(viewer, tiny_model):
    halo = load_model(tiny_model).halo
    small = np.random.default_rng(0).integers(0, 255, (halo - 1, 3 * halo), dtype=np.uint8)
    with pytest.raises(ValueError, match=f"smaller than '{tiny_model}' needs .{halo}×{halo} px"):
        next(segment_steps(small, tiny_model))
    next(segment_steps(np.pad(small, ((0, 1), (0, 0))), tiny_model))  # exactly the minimum is fine
    viewer.add_image(small, name="crop")
    widget = SegmentWidget(viewer)
    widget.model.value = tiny_model
    assert "receptive radius" in _run(widget) and len(viewer.layers) == 1


def test_homogeneity_refuses_an_image_smaller_than_one_patch(viewer, fibre_model):
    small = np.random.default_rng(0).random((31, 200)).astype(np.float32)
    with pytest.raises(ValueError, match="32×32 px at the model's pixel size: one patch"):
        next(analyse_steps(small, fibre_model))
    viewer.add_image(small, name="strip")
    widget = HomogeneityWidget(viewer)
    widget.model.value = fibre_model
    assert "smaller than 'tiny-fibre' needs" in _run(widget) and len(viewer.layers) == 1


def test_segmentation_training_refuses_an_rgb_image(viewer, tiny_model):
    pair = synthetic_pair(1, size=64)
    rgb = np.stack([pair.image, pair.image * 0.5, pair.image * 0.2], axis=-1)
    with pytest.raises(ImageError, match="colour .RGB. image.*convert it to greyscale"):
        holdout_pairs(rgb, pair.labels, "rgb")
    viewer.add_image(rgb, name="rgb", rgb=False)
    viewer.add_labels(pair.labels.astype(np.uint8), name="mask")
    widget = TrainWidget(viewer)
    message = _run(widget)
    assert "greyscale" in message and "differ" not in message


def test_homogeneity_training_refuses_an_rgb_image(viewer):
    rgb = np.random.default_rng(0).random((64, 80, 3)).astype(np.float32)
    with pytest.raises(ImageError, match="colour .RGB. image"):
        micrographs_from_arrays(rgb, "rgb", label=0)
    viewer.add_image(rgb, name="rgb", rgb=False)
    widget = HomogeneityTrainWidget(viewer)
    widget.whole.value = widget.whole.choices[1]
    assert "greyscale" in _run(widget)


def test_segmentation_training_names_labels_past_the_declared_classes(viewer):
    pair = synthetic_pair(2, size=64)
    labels = pair.labels.astype(np.uint8)
    labels[:4, :4], labels[-4:, -4:] = 3, 5
    train, val = holdout_pairs(pair.image, labels, "img")
    config = TrainConfig(name="x", class_names=["background", "disc", "rim"], epochs=1, iters_per_epoch=1, crop=32)
    with pytest.raises(ValueError, match=r"label values 3 exceed the 3 declared classes \(0 background, 1 disc, 2 rim\)"):
        next(train_steps(train, val, config))
    viewer.add_image(pair.image, name="img")
    viewer.add_labels(labels, name="mask")
    widget = TrainWidget(viewer)
    widget.classes.value = "background,disc,rim"
    message = _run(widget)
    assert "label values" in message and "out of bounds" not in message


def test_homogeneity_training_names_marks_past_the_classes(viewer):
    image = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    marks = np.zeros((96, 96), np.uint8)
    marks[:40], marks[50:] = 1, 3
    viewer.add_image(image, name="sem")
    viewer.add_labels(marks, name="marks")
    widget = HomogeneityTrainWidget(viewer)
    widget.marks.value = viewer.layers["marks"]
    widget.steps.value = 1
    assert "marks 3 exceed the 2 classes (0 unmarked, 1 HNF, 2 NHNF)" in _run(widget)
