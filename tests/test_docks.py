"""What every dock shares: one tabbed dock, remembered settings, the pixel-size line, legends,
result lines that are not cut off, and homogeneity results drawn so the micrograph stays visible."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_nanoclass._napari.common import text_label
from napari_nanoclass._napari.homogeneity import HomogeneityWidget
from napari_nanoclass._napari.segmentation import SegmentWidget, TrainWidget
from napari_nanoclass._napari.tabs import AnalysesWidget, dock_contributions
from napari_nanoclass.core.settings import settings_file
from napari_nanoclass.engine.tiling import patch_map_pixels, patch_outline_pixels
from napari_nanoclass.homogeneity import DEFAULT_MODEL as FIBRE_DEFAULT
from napari_nanoclass.io.reader import NHNF_OUTLINE
from napari_nanoclass.segmentation import DEFAULT_MODEL

from .synthetic_fibres import fibres


def test_one_tabbed_dock_holds_every_dock_and_builds_each_on_first_view(viewer, qtbot):
    tabs = AnalysesWidget(viewer)
    qtbot.addWidget(tabs)
    names = [tabs.tabText(i) for i in range(tabs.count())]
    assert names == [name for name, _ in dock_contributions()] and "All analyses (tabs)" not in names
    assert {"Segment", "Fibre homogeneity", "Liposomes", "XRD pattern"} <= set(names)
    assert list(tabs.docks) == [names[0]]  # only the visible tab was built
    tabs.setCurrentIndex(names.index("Fibre homogeneity"))
    assert isinstance(tabs.docks["Fibre homogeneity"], HomogeneityWidget)
    assert tabs.widget(names.index("Fibre homogeneity")).widget() is tabs.docks["Fibre homogeneity"].native


def test_docks_remember_their_settings_and_fall_back_to_defaults(viewer, user_registry):
    first = SegmentWidget(viewer)
    first.tile.value, first.tta.value = 512, True
    again = SegmentWidget(viewer)
    assert (again.tile.value, again.tta.value, again.probabilities.value) == (512, True, False)
    trainer = TrainWidget(viewer)
    trainer.frem_b.value, trainer.save_as.value = 7, "mine"
    assert (TrainWidget(viewer).frem_b.value, TrainWidget(viewer).save_as.value) == (7, "mine")
    # a remembered model that is gone, and a file that is not settings, leave the defaults
    saved = json.loads(settings_file("SegmentWidget").read_text())
    settings_file("SegmentWidget").write_text(json.dumps({**saved, "model": "deleted-model"}))
    assert SegmentWidget(viewer).model.value == DEFAULT_MODEL and SegmentWidget(viewer).tile.value == 512
    from napari_nanoclass._napari.batch import BatchWidget

    batch = BatchWidget(viewer)
    batch.analysis.value = "homogeneity"
    assert not BatchWidget(viewer).folder.line_edit.value  # an empty folder stays empty, not "."
    batch.folder.value = user_registry.parent
    assert (BatchWidget(viewer).analysis.value, BatchWidget(viewer).folder.value) == ("homogeneity", user_registry.parent)
    settings_file("SegmentWidget").write_text("{not json")
    assert SegmentWidget(viewer).tile.value == 1024
    assert settings_file("SegmentWidget").is_relative_to(user_registry.parent)  # never the user's real home


def test_the_dock_says_before_a_run_at_which_scale_the_model_sees_the_image(viewer):
    widget = SegmentWidget(viewer)
    viewer.add_image(np.zeros((64, 64), np.uint8), name="plain")
    assert widget.pixel_size.value is None and "⚠ pixel size unknown" in widget.pixel_size.note.value
    assert "4.6 nm/px" in widget.pixel_size.note.value  # what the model expects
    viewer.add_image(np.zeros((64, 64), np.uint8), name="fine", metadata={"pixel_size_nm": 2.3})
    widget.image.value = viewer.layers["fine"]
    assert widget.pixel_size.value == pytest.approx(2.3) and "resampled ×0.5" in widget.pixel_size.note.value
    widget.pixel_size.field.value = 4.6  # the user's correction wins and the line follows it
    assert "as drosophila-seunet was trained at" in widget.pixel_size.note.value


def test_a_tiff_opened_by_napari_s_own_reader_gives_the_dock_its_file_s_pixel_size(viewer, tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((64, 64), np.uint8), imagej=True, resolution=(1 / 2.3, 1 / 2.3),
                     metadata={"unit": "nm"})
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((64, 64), np.uint8))
    from napari.layers._source import layer_source

    widget = SegmentWidget(viewer)
    for name in ("ij", "plain"):  # as napari's own reader opens them: pixels only, the file as the layer's source
        with layer_source(path=str(tmp_path / f"{name}.tif"), reader_plugin="napari"):
            viewer.add_image(tifffile.imread(tmp_path / f"{name}.tif"), name=name)
    assert "pixel_size_nm" not in viewer.layers["ij"].metadata and tuple(viewer.layers["ij"].scale) == (1, 1)
    widget.image.value = viewer.layers["ij"]
    assert widget.pixel_size.value == pytest.approx(2.3) and "resampled ×0.5" in widget.pixel_size.note.value
    widget.image.value = viewer.layers["plain"]
    assert widget.pixel_size.value is None


def test_segment_dock_shows_a_legend_of_the_model_classes(viewer, tiny_model, em_image):
    viewer.add_image(em_image, name="em")
    widget = SegmentWidget(viewer)
    widget.model.value = tiny_model
    widget.runner.synchronous = True
    widget.run()
    labels = viewer.layers[f"{tiny_model} labels"]
    for name in labels.metadata["class_names"]:
        assert name in widget.legend.value
    assert "classes" in widget.legend.value


def test_result_lines_wrap_and_take_the_height_their_text_needs(qtbot):
    label = text_label()
    qtbot.addWidget(label.native)
    label.native.resize(200, 20)
    label.value = "short"
    one_line = label.native.minimumHeight()
    label.value = "a verdict line much longer than the dock is wide, " * 4
    assert label.native.wordWrap() and label.native.minimumHeight() >= 3 * one_line > 0


def test_patch_maps_stop_at_the_image_edge_and_outlines_surround_flagged_regions():
    grid = np.array([[0.1, 0.9, 0.9], [0.2, 0.8, 0.3]])
    heat = np.asarray(patch_map_pixels(grid, 10.5, (20, 30)))  # fractional patch: an image rescaled
    assert heat.shape == (20, 30) and heat[0, 0] == 0.1 and heat[0, 11] == 0.9 and heat[19, 29] == 0.3
    outline = np.asarray(patch_outline_pixels(grid >= 0.5, 10, (20, 30), width=2))
    flagged = np.asarray(patch_map_pixels(grid >= 0.5, 10, (20, 30)))
    assert outline.dtype == np.uint8 and not outline[~flagged].any()  # only on flagged patches
    assert outline[0, 10:30].all() and outline[0:20, 10].all()  # image edge, and the border to HNF
    assert not outline[5, 15] and not outline[5, 20]  # inside the region, between two flagged patches
    assert outline[12, 19] and not outline[12, 17]  # the border to the HNF patch (1, 2) only
    stack = np.stack([grid, grid[:, ::-1]])  # (Z, rows, cols): drawn a plane at a time
    lazy = patch_outline_pixels(stack >= 0.5, 10, (20, 30), width=2)
    assert lazy.chunksize[0] == 1 and np.array_equal(np.asarray(lazy[0]), outline)
    assert np.array_equal(np.asarray(lazy[1]), outline[:, ::-1])
    assert np.array_equal(np.asarray(patch_map_pixels(stack, 10.5, (20, 30))[1]),
                          np.asarray(patch_map_pixels(grid[:, ::-1], 10.5, (20, 30))))


def test_homogeneity_dock_outlines_defects_keeps_the_heat_map_hidden_with_legend_and_colour_bars(viewer, qtbot):
    viewer.add_image(fibres((256, 256), np.random.default_rng(2)), name="sem")
    widget = HomogeneityWidget(viewer)
    widget.runner.synchronous = True
    widget.run()
    assert widget.runner.last_error is None
    outline = viewer.layers[f"{FIBRE_DEFAULT} NHNF patches"]
    heat = viewer.layers[f"{FIBRE_DEFAULT} p(NHNF)"]
    assert outline.data.shape == (256, 256) and set(np.unique(np.asarray(outline.data))) <= {0, 1}
    assert not heat.visible and heat.colorbar.visible
    cam = next(layer for layer in viewer.layers if layer.name.endswith("defect map"))
    assert cam.visible and cam.colorbar.visible and cam.blending == "additive"
    assert NHNF_OUTLINE in widget.legend.value and "HNF = homogeneous nanofibres" in widget.legend.value
