"""Widgets on napari's ViewerModel (no canvas): synchronous runs, threaded runs, errors, cancel."""

from __future__ import annotations

import numpy as np

from napari_nanoclass._napari.segmentation import SegmentWidget, TrainWidget
from napari_nanoclass.models.registry import list_models

from .test_training import synthetic_pair


def test_segment_widget_adds_labels_with_classes_and_features(viewer, tiny_model, em_image):
    viewer.add_image(em_image, name="em", scale=(4.6, 4.6))
    widget = SegmentWidget(viewer)
    assert widget.image.value is viewer.layers["em"]  # choices follow the layer list
    widget.model.value = tiny_model
    widget.probabilities.value = True
    widget.runner.synchronous = True
    widget.run_button.clicked.emit()
    labels = viewer.layers[f"{tiny_model} labels"]
    assert labels.data.shape == em_image.shape and tuple(labels.scale) == (4.6, 4.6)
    assert list(labels.features["class"]) == ["c0", "c1", "c2"]
    assert labels.features["area_px"].sum() == em_image.size
    assert labels.metadata["class_names"] == ["c0", "c1", "c2"]
    assert f"{tiny_model} probabilities [0]" in viewer.layers or len(viewer.layers) == 5
    assert not widget.runner.bar.visible and widget.run_button.enabled


def test_segment_widget_on_a_stack(viewer, tiny_model, em_image):
    viewer.add_image(np.stack([em_image] * 2), name="stack")
    widget = SegmentWidget(viewer)
    widget.model.value = tiny_model
    widget.runner.synchronous = True
    widget.run()
    assert viewer.layers[-1].data.shape == (2, *em_image.shape)


def test_segment_widget_test_time_augmentation(viewer, responsive_model, em_image):
    from napari_nanoclass.segmentation.predict import segment

    viewer.add_image(em_image, name="em")
    widget = SegmentWidget(viewer)
    widget.model.value = responsive_model
    widget.tta.value = True
    widget.runner.synchronous = True
    widget.run()
    np.testing.assert_array_equal(viewer.layers[-1].data, segment(em_image, responsive_model, tta=True).labels)


def test_errors_clear_the_progress_bar_and_are_shown(viewer, tiny_model, em_image):
    bad = em_image.astype(np.float32)
    bad[0, 0] = np.nan
    viewer.add_image(bad, name="nan")
    widget = SegmentWidget(viewer)
    widget.model.value = tiny_model
    widget.runner.synchronous = True
    widget.run()
    assert "NaN" in str(widget.runner.last_error)
    assert widget.runner.status.value.startswith("error")
    assert not widget.runner.bar.visible and widget.run_button.enabled and not widget.runner.cancel_button.enabled
    assert len(viewer.layers) == 1


def test_threaded_run_keeps_gui_free_and_delivers_the_layer(viewer, tiny_model, em_image, qtbot):
    viewer.add_image(em_image, name="em")
    widget = SegmentWidget(viewer)
    widget.model.value = tiny_model
    widget.run()
    assert widget.runner.worker is not None and widget.runner.cancel_button.enabled
    qtbot.waitUntil(lambda: len(viewer.layers) == 2, timeout=60000)
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10000)
    assert viewer.layers[-1].data.shape == em_image.shape


def test_a_finished_run_hands_the_memory_its_forwards_kept_back(viewer, tiny_model, em_image, qtbot, monkeypatch):
    from napari_nanoclass._napari import common

    released = []
    monkeypatch.setattr(common, "release_memory", lambda: released.append(len(viewer.layers)))
    viewer.add_image(em_image, name="em")
    widget = SegmentWidget(viewer)
    widget.model.value = tiny_model
    widget.run()
    assert not released  # not while it runs
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=60000)
    assert released and released[-1] == 2  # after the labels layer came


def test_threaded_error_is_reported_not_swallowed(viewer, tiny_model, qtbot):
    viewer.add_image(np.full((64, 64), np.nan, np.float32), name="nan")
    widget = SegmentWidget(viewer)
    widget.model.value = tiny_model
    widget.run()
    qtbot.waitUntil(lambda: widget.runner.last_error is not None, timeout=30000)
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10000)
    assert "NaN" in widget.runner.status.value and not widget.runner.bar.visible


def test_cancel_stops_a_threaded_run(viewer, tiny_model, qtbot):
    viewer.add_image(np.random.default_rng(0).normal(size=(2048, 2048)).astype(np.float32), name="big")
    widget = SegmentWidget(viewer)
    widget.model.value = tiny_model
    widget.tile.value = 64
    widget.run()
    qtbot.waitUntil(lambda: widget.runner.bar.value > 0, timeout=30000)
    widget.runner.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=30000)
    assert widget.runner.status.value == "cancelled"
    assert len(viewer.layers) == 1


def test_train_widget_fine_tunes_on_layers_and_registers(viewer, tiny_model):
    pair = synthetic_pair(5, size=128)
    viewer.add_image(pair.image, name="img")
    viewer.add_labels(pair.labels.astype(np.uint8), name="corrected")
    widget = TrainWidget(viewer)
    widget.base.value = tiny_model
    widget.save_as.value = "my-tuned"
    widget.epochs.value, widget.iters.value, widget.crop.value = 2, 3, 64
    widget.frem_b.value = 2
    widget.runner.synchronous = True
    widget.run()
    assert widget.runner.last_error is None, widget.runner.last_error
    assert widget.result is not None and len(widget.result.history) == 2
    assert "my-tuned" in {m.name for m in list_models()}
    assert "saved model 'my-tuned'" in widget.runner.status.value
    assert "with calibrated decisions" in widget.runner.status.value
    segment = SegmentWidget(viewer)
    assert "my-tuned" in segment.model.choices


def test_train_widget_needs_layers(viewer):
    widget = TrainWidget(viewer)
    widget.runner.synchronous = True
    widget.run()
    assert "choose an image layer" in str(widget.runner.last_error)


def test_segment_widget_on_a_zarr_backed_image_streams_to_disk(viewer, tiny_model, em_image, monkeypatch):
    import zarr

    from napari_nanoclass.segmentation import predict as segmentation

    expected = segmentation.segment(em_image, tiny_model).labels
    monkeypatch.setattr(segmentation, "IN_MEMORY_LIMIT", 1000)
    viewer.add_image(zarr.array(em_image, chunks=(64, 64)), name="lazy")
    widget = SegmentWidget(viewer)
    widget.model.value = tiny_model
    widget.runner.synchronous = True
    widget.run()
    assert widget.runner.last_error is None, widget.runner.last_error
    labels = viewer.layers[-1]
    assert not isinstance(labels.data, np.ndarray)  # backed by a zarr on disk, not loaded
    np.testing.assert_array_equal(np.asarray(labels.data), expected)


def test_segment_rerun_keeps_the_earlier_labels_layer(viewer, tiny_model, em_image):
    viewer.add_image(em_image, name="em")
    widget = SegmentWidget(viewer)
    widget.model.value = tiny_model
    widget.runner.synchronous = True
    widget.run()
    first = viewer.layers[f"{tiny_model} labels"]
    widget.run()
    assert viewer.layers[f"{tiny_model} labels (previous)"] is first
    assert viewer.layers[f"{tiny_model} labels"] is not first
    assert f"earlier result kept as '{tiny_model} labels (previous)'" in widget.runner.status.value


def test_a_run_shows_in_napari_activity_dock_and_ends_there(viewer, tiny_model, monkeypatch):
    import napari.utils

    runs = []

    class Recorded(napari.utils.progress):
        def __init__(self, *args, **kwargs):
            self.seen = []
            super().__init__(*args, **kwargs)
            runs.append(self)

        def refresh(self, *args, **kwargs):
            self.seen.append((self.n, self.total))
            return super().refresh(*args, **kwargs)

    monkeypatch.setattr(napari.utils, "progress", Recorded)
    viewer.add_image(np.random.default_rng(0).normal(size=(256, 192)).astype(np.float32), name="img")
    widget = SegmentWidget(viewer)
    widget.model.value = tiny_model
    widget.tile.value = 64
    widget.runner.synchronous = True
    widget.run()
    (run,) = runs
    done = [n for n, total in run.seen if total > 1]
    assert len(done) > 1 and done == sorted(done) and run.seen[-1][0] == run.seen[-1][1]  # tile by tile, to the end
    assert widget.runner.activity is None  # closed with the run


def test_cancel_cleans_up_the_job_in_its_worker_thread_before_run_is_enabled(viewer, qtbot):
    """A cancelled job is closed where it ran (its output folder lock is thread-bound) and before
    the dock takes a new run, never left suspended for the garbage collector."""
    import threading
    import time

    from magicgui.widgets import PushButton

    from napari_nanoclass._napari.common import TaskRunner
    from napari_nanoclass.core.progress import Progress

    cleaned: list[tuple[str, bool]] = []

    def job():
        try:
            for i in range(1000):
                time.sleep(0.01)
                yield Progress(i, 1000, "working")
        finally:
            cleaned.append((threading.current_thread().name, run_button.enabled))

    run_button = PushButton()
    runner = TaskRunner(run_button)
    results = []
    runner.start(job(), results.append)
    qtbot.waitUntil(lambda: runner.bar.value > 2, timeout=10000)
    runner.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: run_button.enabled, timeout=5000)
    assert cleaned and cleaned[0][0] != threading.main_thread().name and not cleaned[0][1]
    assert runner.status.value == "cancelled" and not results


def test_segment_widget_leaves_out_a_region_drawn_as_shapes(viewer, responsive_model, em_image):
    """A rectangle drawn in a Shapes layer over a scaled image and chosen under 'exclude' is left
    out where the viewer shows it, as the core's ``exclude`` leaves it out: label 0 there, and the
    rest as segmented with that mask."""
    from napari_nanoclass._napari.common import NO_EXCLUSION
    from napari_nanoclass.segmentation.predict import segment

    viewer.add_image(em_image, name="em", scale=(2.0, 2.0))  # in nm; the shapes drawn in the same world units
    viewer.add_shapes([[[40, 60], [40, 260], [200, 260], [200, 60]]], shape_type="rectangle", name="film")
    widget = SegmentWidget(viewer)
    widget.model.value = responsive_model
    assert widget.exclude.value == NO_EXCLUSION and viewer.layers["film"] in widget.exclude.choices
    widget.exclude.value = viewer.layers["film"]
    widget.runner.synchronous = True
    widget.run()
    mask = np.zeros(em_image.shape, bool)
    mask[20:101, 30:131] = True
    labels = viewer.layers[-1].data
    assert not labels[25:95, 35:125].any() and labels.any()
    np.testing.assert_array_equal(labels, segment(em_image, responsive_model, exclude=mask).labels)
