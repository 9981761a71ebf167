"""Why the model decided: liposome explanation maps (Grad-CAM per object) and per-class
segmentation probabilities, from Python, the command line, the reader and the widgets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_nanoclass.cli import main
from napari_nanoclass.liposomes import objects as liposome_objects
from napari_nanoclass.liposomes.predict import analyse
from napari_nanoclass.liposomes.simulator import SimulationConfig, simulate_field
from napari_nanoclass.segmentation import predict as segmentation
from napari_nanoclass.segmentation.predict import segment
from tests.conftest import reader_layers, save_responsive, tiny_info

FIELD = SimulationConfig(shape=(160, 160), objects=(4, 6), diameter_nm=(40, 120))
PROBLEMS = ("lamellarity", "encapsulation")


# -- liposomes -------------------------------------------------------------------------------------


def test_shared_log_odds_is_the_fibre_defect_score():
    from napari_nanoclass.models.cam import log_odds
    from napari_nanoclass.models.fibre_cnn import defect_score

    logits = torch.randn(5, 3)
    expected = torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]
    torch.testing.assert_close(defect_score(logits), expected)
    one = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 2, 1]), 3).bool()
    torch.testing.assert_close(log_odds(logits, one), torch.log_softmax(logits, 1)[one] - torch.log(
        1 - torch.softmax(logits, 1)[one]))


def test_maps_go_back_where_their_crops_were_cut():
    """paste_maps inverts crops: a map that is the crop itself comes back as the image's pattern on
    each object's own pixels (scaled to a maximum of 1 per object), objects cut by the border too;
    two pixels off would correlate far less."""
    yy, xx = np.mgrid[:120, :100]
    image = (2 + np.sin(xx / 4) * np.cos(yy / 5)).astype(np.float32)
    labels = np.zeros(image.shape, np.int32)
    labels[(yy - 40) ** 2 + (xx - 30) ** 2 < 20**2] = 1
    labels[(yy - 100) ** 2 + (xx - 95) ** 2 < 15**2] = 2  # runs over the right and bottom edges
    for mode in ("cropped", "masked", "surroundings"):
        maps = liposome_objects.crops(image, labels, mode, size=64, margin=10)
        pasted = liposome_objects.paste_maps(maps, labels, mode, margin=10)
        assert pasted.shape == image.shape and pasted.dtype == np.float32
        assert not pasted[labels == 0].any()
        for label in (1, 2):
            own = labels == label
            assert pasted[own].max() == pytest.approx(1.0)
            assert np.corrcoef(pasted[own], image[own])[0, 1] > 0.98, (mode, label)
            assert np.corrcoef(pasted[own], np.roll(image, 2, axis=1)[own])[0, 1] < 0.95


def test_explanations_lie_on_the_objects_and_follow_the_crops(tiny_liposome_models):
    """At another pixel size than the models': maps at the input's size, 0 off the objects,
    non-trivial on them, the same objects and classes as without; an object whose crop changes
    gets another map."""
    detector, classifiers = tiny_liposome_models
    field = simulate_field(FIELD, seed=11)
    image = np.kron(field.image, np.ones((2, 2), np.float32))  # 1.25 nm/px; the pipeline works at 2.5
    labels = np.kron(field.labels, np.ones((2, 2), np.int32))
    plain = analyse(image, 1.25, labels=labels, detector=detector, classifiers=classifiers)
    result = analyse(image, 1.25, labels=labels, detector=detector, classifiers=classifiers, explain=True)
    assert plain.explanations == {} and result.objects == plain.objects
    assert set(result.explanations) == set(PROBLEMS)
    ids = np.unique(labels)[1:]
    for problem, values in result.explanations.items():
        assert values.shape == image.shape and values.dtype == np.float32
        assert not values[labels == 0].any() and values.min() >= 0 and values.max() <= 1
        peaks = [values[labels == i].max() for i in ids]
        assert sum(p > 0.5 for p in peaks) >= len(ids) // 2, (problem, peaks)
        assert any(np.std(values[labels == i]) > 0.05 for i in ids)  # a pattern inside, not a flat fill

    target = int(ids[np.argmax([(labels == i).sum() for i in ids])])
    changed = image.copy()
    inside = labels == target
    changed[inside] = changed[inside] + 3 * image.std() * np.sin(np.arange(inside.sum()) / 7.0)
    again = analyse(changed, 1.25, labels=labels, detector=detector, classifiers=classifiers, explain=True)
    for problem in PROBLEMS:
        before, after = result.explanations[problem][inside], again.explanations[problem][inside]
        assert np.abs(before - after).mean() > 0.02, problem


@pytest.mark.timeout(300)
def test_block_wise_explanations_match_the_in_memory_ones(tmp_path, monkeypatch):
    """Large images are explained block by block into zarr maps that agree with the in-memory ones
    (shipped models: real detections)."""
    from napari_nanoclass.liposomes import predict

    field = simulate_field(SimulationConfig(shape=(384, 384), objects=(8, 10), diameter_nm=(40.0, 120.0)), seed=11)
    whole = analyse(field.image, 2.5, explain=True)
    monkeypatch.setattr(predict, "STREAM_ABOVE", 0)
    monkeypatch.setattr(predict, "BLOCK_PX", 480)  # 4 blocks: counted at the small-vesicle detector's 1 nm/px
    monkeypatch.setattr(predict, "MAX_DIAMETER_NM", 150.0)
    blocks = analyse(field.image, 2.5, explain=True, workdir=tmp_path)
    labels = np.asarray(blocks.labels)
    assert len(blocks.objects) == len(whole.objects) >= 5
    for problem in PROBLEMS:
        stored = blocks.explanations[problem]
        assert stored.__class__.__module__.startswith("zarr")
        values = np.asarray(stored)
        assert not values[labels == 0].any()
        both = (labels > 0) & (whole.labels > 0)
        assert np.mean(np.abs(values - whole.explanations[problem])[both] < 0.1) > 0.95


def test_cli_explain_writes_maps_that_the_reader_opens(tiny_liposome_models, tmp_path):
    detector, classifiers = tiny_liposome_models
    field = simulate_field(FIELD, seed=5)
    image_path = tmp_path / "cryo.tif"
    tifffile.imwrite(image_path, (field.image * 30 + 120).clip(0, 255).astype(np.uint8))
    out = tmp_path / "out"
    assert main(["liposomes", str(image_path), "--out", str(out), "--pixel-size", "2.5", "--detector", detector,
                 "--lamellarity-model", classifiers["lamellarity"], "--encapsulation-model",
                 classifiers["encapsulation"], "--explain", "--quiet"]) == 0
    labels = tifffile.imread(out / "cryo_labels.tif")
    for problem in PROBLEMS:
        with tifffile.TiffFile(out / f"cryo_cam_{problem}.tif") as tif:
            values = tif.asarray()
            assert tif.pages[0].tags["XResolution"].value == (int(1e7 / 2.5), 1)  # pixels per cm
        assert values.shape == labels.shape and values.dtype == np.float32 and not values[labels == 0].any()
    layers = reader_layers(out)
    maps = [layer for layer in layers if layer.name.endswith("explanation")]
    assert [layer.name for layer in maps] == [f"cryo {p} explanation" for p in PROBLEMS]
    assert [layer.visible for layer in maps] == [True, False]
    objects = layers["cryo liposomes"]
    for layer in maps:
        assert layer.blending == "additive" and tuple(layer.scale) == tuple(objects.scale) == (2.5, 2.5)
    assert main(["liposomes", str(image_path), "--out", str(tmp_path / "plain"), "--pixel-size", "2.5",
                 "--detector", detector, "--quiet"]) == 0
    assert not list((tmp_path / "plain").glob("*_cam_*"))
    # a rerun without --explain into the same folder: the earlier maps stay on disk, but they are
    # not this result's, so the reader does not open them over the new objects
    assert main(["liposomes", str(image_path), "--out", str(out), "--pixel-size", "2.5", "--detector", detector,
                 "--quiet"]) == 0
    assert list(out.glob("*_cam_*")) and not any(layer.name.endswith("explanation") for layer in reader_layers(out))


def test_liposome_widget_explain_adds_aligned_map_layers(viewer, tiny_liposome_models):
    from napari_nanoclass._napari.liposomes import LiposomeWidget

    detector, classifiers = tiny_liposome_models
    field = simulate_field(FIELD, seed=13)
    viewer.add_image(field.image, name="cryo", scale=(2.5, 2.5), metadata={"pixel_size_nm": 2.5})
    viewer.add_labels(field.labels, name="mine")
    widget = LiposomeWidget(viewer)
    widget.detector.value = detector
    for problem, name in classifiers.items():
        widget.models[problem].value = name
    widget.objects.value = viewer.layers["mine"]
    widget.runner.synchronous = True
    widget.run_button.clicked.emit()
    assert not any(layer.name.endswith("explanation") for layer in viewer.layers)
    widget.explain.value = True
    widget.run_button.clicked.emit()
    assert widget.runner.last_error is None, widget.runner.last_error
    objects = viewer.layers["cryo liposomes"]
    for problem in PROBLEMS:
        layer = viewer.layers[f"cryo {problem} explanation"]
        assert layer.data.shape == field.image.shape and not np.asarray(layer.data)[field.labels == 0].any()
        assert tuple(layer.scale) == tuple(objects.scale) == (2.5, 2.5) and layer.blending == "additive"
        assert viewer.layers.index(layer) > viewer.layers.index(objects)  # drawn over the objects
    assert not widget.runner.bar.visible and widget.run_button.enabled
    widget.explain.value = False  # a run without explanations keeps the last ones, renamed
    widget.run_button.clicked.emit()
    assert all(f"cryo {problem} explanation" not in viewer.layers for problem in PROBLEMS)
    assert all(f"cryo {problem} explanation (previous)" in viewer.layers for problem in PROBLEMS)


# -- segmentation ---------------------------------------------------------------------------------


@pytest.fixture
def scaled_model(user_registry) -> str:
    """A responsive tiny SE U-Net (see conftest.save_responsive) trained, it says, at 4 nm/px."""
    return save_responsive(replace(tiny_info("scaled-seg"), pixel_size_nm=4.0))


@pytest.mark.parametrize("pixel_size_nm", [None, 2.0])  # 2.0: segmented at half size, brought back
def test_probabilities_sum_to_one_and_their_argmax_is_the_labels(scaled_model, em_image, pixel_size_nm):
    labels_only = segment(em_image, scaled_model, pixel_size_nm=pixel_size_nm)
    result = segment(em_image, scaled_model, pixel_size_nm=pixel_size_nm, probabilities=True)
    p = result.probabilities
    assert p.shape == (3, *em_image.shape) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(p.argmax(0), result.labels)
    np.testing.assert_array_equal(result.labels, labels_only.labels)  # asking for them changes no label
    assert len(np.unique(result.labels)) > 1


def test_probabilities_of_large_images_stream_with_the_labels(responsive_model, em_image, tmp_path, monkeypatch):
    whole = segment(em_image, responsive_model, probabilities=True)
    monkeypatch.setattr(segmentation, "IN_MEMORY_LIMIT", 1000)
    big = segment(zarr.array(em_image), responsive_model, probabilities=True, workdir=tmp_path, tile=64)
    assert not isinstance(big.probabilities, np.ndarray) and not isinstance(big.labels, np.ndarray)
    p = np.asarray(big.probabilities)
    np.testing.assert_allclose(p.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(p.argmax(0), np.asarray(big.labels))
    np.testing.assert_allclose(p, whole.probabilities, atol=1e-4)


@pytest.mark.parametrize("output_format", ["tif", "ome-zarr"])
def test_cli_probabilities_carry_class_names_and_open_as_layers(responsive_model, em_image, tmp_path, output_format):
    from napari_nanoclass.io.images import output_path, read_label_image, read_output

    tifffile.imwrite(tmp_path / "em.tif", em_image, resolution=(1e7 / 4.6, 1e7 / 4.6), resolutionunit="CENTIMETER")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "em.tif"), "--out", str(out), "--model", responsive_model,
                 "--probabilities", "--format", output_format, "--quiet"]) == 0
    path = output_path(out, "em_probabilities", output_format)
    p = np.asarray(read_output(path))
    assert p.shape == (3, *em_image.shape) and p.dtype == np.float32
    labels = read_label_image(output_path(out, "em_labels", output_format))[0]
    np.testing.assert_array_equal(p.argmax(0), np.asarray(labels))
    if output_format == "tif":
        with tifffile.TiffFile(path) as tif:
            names = tif.shaped_metadata[0]["channel_names"]
    else:
        names = [c["label"] for c in zarr.open_group(str(path), mode="r").attrs["omero"]["channels"]]
    assert names == ["c0", "c1", "c2"]
    layers = reader_layers(out)
    maps = [layers[f"em p({c})"] for c in names]
    assert all(not layer.visible for layer in maps) and tuple(maps[0].scale) == (4.6, 4.6)
    np.testing.assert_allclose(np.asarray(maps[1].data), p[1])


def test_segment_widget_adds_one_probability_layer_per_class(viewer, responsive_model, em_image):
    from napari_nanoclass._napari.segmentation import SegmentWidget

    viewer.add_image(em_image, name="em", scale=(4.6, 4.6), metadata={"pixel_size_nm": 4.6})
    widget = SegmentWidget(viewer)
    widget.model.value = responsive_model
    widget.probabilities.value = True
    widget.runner.synchronous = True
    widget.run_button.clicked.emit()
    assert widget.runner.last_error is None, widget.runner.last_error
    labels = np.asarray(viewer.layers[f"{responsive_model} labels"].data)
    layers = [viewer.layers[f"{responsive_model} p(c{i})"] for i in range(3)]
    stacked = np.stack([np.asarray(layer.data) for layer in layers])
    np.testing.assert_array_equal(stacked.argmax(0), labels)
    assert all(tuple(layer.scale) == (4.6, 4.6) for layer in layers)


def test_wall_maps_go_back_to_each_pixel_s_distance_from_the_outline_and_angle():
    """paste_maps inverts wall crops: a band of rows lights a ring at that depth inside each
    outline, a column the pixels at that angle around the centre, and nothing lies off the objects
    or deeper inside than the crop's last row."""
    yy, xx = np.mgrid[:160, :200]
    labels = np.zeros((160, 200), np.int32)
    disks = {1: (60, 60, 25), 2: (90, 140, 50)}  # the second deeper than the crop's rows reach
    depth, angle = np.zeros(labels.shape), np.zeros(labels.shape)
    for label, (cy, cx, r) in disks.items():
        own = np.hypot(yy - cy, xx - cx) < r
        labels[own] = label
        depth[own] = r - np.hypot(yy - cy, xx - cx)[own]
        angle[own] = np.arctan2(yy - cy, xx - cx)[own]
    size, outside = 32, liposome_objects.WALL_OUTSIDE_NM
    rows = np.zeros((2, size, size), np.float32)
    rows[:, 14:17] = 1.0  # rows 14–16: 8–10 nm inside the outline at 1 nm/px
    ring = liposome_objects.paste_maps(rows, labels, "wall", pixel_size_nm=1.0)
    assert ring.shape == labels.shape and ring.dtype == np.float32 and not ring[labels == 0].any()
    assert ring[(labels > 0) & (np.abs(depth - 9) < 0.8)].min() == 1.0
    assert ring[(labels > 0) & ((depth < 7) | (depth > 11))].max() == 0.0
    column = np.zeros((2, size, size), np.float32)
    column[:, :, size // 4] = 1.0  # around +90°: below the centre (rows grow downwards)
    wedge = liposome_objects.paste_maps(column, labels, "wall", pixel_size_nm=1.0)
    inside_rows = (labels > 0) & (depth > 1) & (depth < size - outside - 2)
    assert wedge[inside_rows & (np.abs(angle - np.pi / 2) < 0.8 * np.pi / size)].min() == 1.0
    assert wedge[inside_rows & (np.abs(angle - np.pi / 2) > 1.2 * np.pi / size)].max() == 0.0
    assert not wedge[(labels == 2) & (depth > size - outside + 1)].any()
    with pytest.raises(ValueError, match="pixel_size_nm"):
        liposome_objects.paste_maps(rows, labels, "wall")


def test_a_wall_classifier_classifies_and_explains_through_the_analysis(tiny_liposome_models, monkeypatch):
    """A classifier trained on wall crops is cut its own crops by the analysis (at the working
    pixel size, in nm) and its explanation lies on the objects, at the input's size."""
    from napari_nanoclass.liposomes.train import ClassifierConfig, objects_from_fields, train_classifier

    detector, classifiers = tiny_liposome_models
    objects = objects_from_fields([simulate_field(FIELD, seed) for seed in range(6)], mode="wall")
    train_classifier(objects, ClassifierConfig(name="tiny-wall-lamellarity", problem="lamellarity", epochs=1,
                                               input_mode="wall"), register=True)
    field = simulate_field(FIELD, seed=12)
    image = np.kron(field.image, np.ones((2, 2), np.float32))  # 1.25 nm/px; the pipeline works at 2.5
    labels = np.kron(field.labels, np.ones((2, 2), np.int32))
    chosen = {**classifiers, "lamellarity": "tiny-wall-lamellarity"}
    cut_at = []
    wall_crops = liposome_objects.wall_crops
    monkeypatch.setattr(liposome_objects, "wall_crops",
                        lambda image, labels, pixel_size_nm, size=32, threads=1: cut_at.append(pixel_size_nm)
                        or wall_crops(image, labels, pixel_size_nm, size, threads))
    result = analyse(image, 1.25, labels=labels, detector=detector, classifiers=chosen, explain=True)
    assert cut_at == [2.5]  # the detector's working scale, where the analysis classifies
    assert result.models["lamellarity_model"] == "tiny-wall-lamellarity"
    assert len(result.objects) == len(np.unique(labels)) - 1
    assert all(o["lamellarity"] in ("unilamellar", "multilamellar", "uncertain") for o in result.objects)
    values = result.explanations["lamellarity"]
    assert values.shape == image.shape and not values[labels == 0].any() and values.max() > 0.5
