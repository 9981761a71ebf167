"""Real napari viewer (Qt + display, e.g. under xvfb-run): manifest, sample, dock widget end to end."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.viewer


def test_plugin_dock_widget_runs_on_the_sample(make_napari_viewer, tiny_model, qtbot):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-nanoclass", "drosophila")
    assert layers[0].data.shape == (1024, 1024)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-nanoclass", "Segment")
    widget.reset_choices()
    widget.model.value = tiny_model
    widget.tile.value = 512
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: len(viewer.layers) == 2, timeout=120000)
    labels = viewer.layers[-1]
    assert type(labels).__name__ == "Labels" and labels.data.shape == (1024, 1024)
    assert set(labels.features["class"]) == {"c0", "c1", "c2"}


def test_train_widget_docks_from_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-nanoclass", "Train / fine-tune")
    assert widget.run_button.text == "Train"


def test_all_docks_open_as_tabs_of_one_dock_no_taller_than_the_window(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    dock, tabs = viewer.window.add_plugin_dock_widget("napari-nanoclass", "All analyses (tabs)")
    for index in range(tabs.count()):  # the tallest dock (liposomes) scrolls inside its tab
        tabs.setCurrentIndex(index)
    assert viewer.window._qt_window.height() <= 900 and len(tabs.docks) == tabs.count()
    for name, widget in tabs.docks.items():  # long model names are elided rather than widening the dock
        assert getattr(widget, "native", widget).minimumSizeHint().width() < 400, name


def test_batch_folder_docks_from_the_manifest_and_opens_its_results(make_napari_viewer, tiny_model, tmp_path, qtbot):
    import tifffile

    viewer = make_napari_viewer()
    (section,) = viewer.open_sample("napari-nanoclass", "drosophila")
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "corner.tif", section.data[:256, :256])
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-nanoclass", "Batch folder")
    widget.reset_choices()
    widget.model.value = tiny_model
    widget.folder.value, widget.out.value = str(tmp_path / "in"), str(tmp_path / "out")
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: "corner labels" in viewer.layers, timeout=120000)
    assert viewer.layers["corner labels"].data.shape == (256, 256)
    assert widget.table.data.to_list()[0][:2] == ["corner", "done"]


def test_liposome_widget_on_the_sample_draws_the_size_histogram(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, truth = viewer.open_sample("napari-nanoclass", "liposomes")
    assert truth.features["index"].tolist() == sorted(set(truth.data.ravel()) - {0})
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-nanoclass", "Liposomes")
    widget.reset_choices()
    widget.objects.value = truth  # classify the true instances with the shipped classifiers (in a worker)
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: "simulated liposomes liposomes" in viewer.layers, timeout=120000)
    axes = widget._canvas.figure.axes[0]
    assert sum(bar.get_height() for bar in axes.patches) == len(truth.features)


def test_liposome_corrections_redraw_the_summary_and_histogram(make_napari_viewer, qtbot):
    from matplotlib.colors import to_hex

    from napari_nanoclass.liposomes import CLASS_COLOURS

    viewer = make_napari_viewer()
    _image, truth = viewer.open_sample("napari-nanoclass", "liposomes")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-nanoclass", "Liposomes")
    widget.reset_choices()
    widget.objects.value = truth
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: "simulated liposomes liposomes" in viewer.layers, timeout=120000)
    panel = widget.correction
    panel.classes["lamellarity"].value = "multilamellar"
    for label in truth.features["index"]:
        panel.object_label.value = int(label)
        panel.set_button.clicked.emit()
    assert "multilamellar 100.0 %" in widget.summary.value
    axes = widget._canvas.figure.axes[0]
    assert {to_hex(bar.get_facecolor()) for bar in axes.patches} == {CLASS_COLOURS["multilamellar"]}
    assert sum(bar.get_height() for bar in axes.patches) == len(truth.features)


def test_the_real_vesicle_sample_opens_in_nm(make_napari_viewer):
    viewer = make_napari_viewer()
    (layer,) = viewer.open_sample("napari-nanoclass", "cryoem_vesicles")
    assert layer.data.shape == (1024, 1024) and tuple(layer.scale) == (0.2, 0.2)
    assert layer.metadata["pixel_size_nm"] == 0.2 and "vesicle-picker" in layer.metadata["source"]
