"""Padded images (aligned, rotated or stitched micrographs, registered sections): the padding is found,
left out of the normalisation and of the results, and the recorded part is analysed as if it had
been cut out by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_nanoclass import segment
from napari_nanoclass.io.images import (
    FILL_SIDE,
    ImageError,
    edge_bands,
    excluded,
    fill_mask,
    placed,
    recorded_box,
    recorded_part,
)
from napari_nanoclass.liposomes.predict import analyse


def _noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(120, 15, shape).astype(np.float32)


def _padded(image: np.ndarray, top: int, bottom: int, left: int, right: int, value: float = 0) -> np.ndarray:
    return np.pad(image, ((top, bottom), (left, right)), constant_values=value).astype(image.dtype)


def test_recorded_images_hold_no_padding_and_padding_is_found_where_it_is():
    image = _noise((120, 150))
    assert fill_mask(image) is None
    assert fill_mask(np.clip(image, 100, 140)) is None  # clipped values scattered through noise: recorded data
    padded = _padded(image, 10, 0, 0, 30)
    mask = fill_mask(padded)
    assert mask.sum() == padded.size - image.size and not mask[10:, :150].any()
    assert recorded_box(mask) == (slice(10, 130), slice(0, 150))
    mean_padded = _padded(image, 0, 20, 0, 0, value=float(image.mean()))  # as IMOD pads: found from the corners
    assert fill_mask(mean_padded).sum() == 20 * 150 and recorded_box(fill_mask(mean_padded))[0] == slice(0, 120)
    saturated = image.copy()
    saturated[40:80, 60:100] = image.max()  # a saturated square: nothing to analyse there either
    assert fill_mask(saturated)[40:80, 60:100].all() and fill_mask(saturated).sum() == 1600


def test_only_squares_of_the_fill_side_count_as_padding():
    """Away from the edges a band of padding must be ``FILL_SIDE`` wide; at an edge, which the
    erosion extends, half of that is enough (a border of padding)."""
    image = _noise((100, 100))
    image[:, 40:40 + FILL_SIDE - 1] = 0
    assert fill_mask(image) is None
    image[:, 40:40 + FILL_SIDE] = 0
    assert fill_mask(image)[:, 40:40 + FILL_SIDE].all() and fill_mask(image).sum() == 100 * FILL_SIDE
    edge = _noise((100, 100))
    edge[:, :FILL_SIDE // 2 + 1] = 0
    assert fill_mask(edge).sum() == 100 * (FILL_SIDE // 2 + 1)


def test_an_image_with_nan_is_not_searched_for_padding():
    image = np.ones((64, 64), np.float32)  # its corners fill squares, but the NaN is the problem to report
    image[3, 3] = np.nan
    assert fill_mask(image) is None


def test_an_image_of_one_value_has_nothing_recorded_and_is_left_as_it_is():
    with pytest.raises(ImageError, match="no recorded pixels"):
        recorded_box(fill_mask(np.zeros((40, 40))))
    blank = np.zeros((40, 40), np.uint8)  # e.g. a missing section: analysed as before, not refused
    same, fill, box = recorded_part(blank)
    assert same is blank and fill is None and box is None


def test_a_padded_stack_is_cut_to_what_any_plane_recorded_and_filled_with_each_plane_s_mean():
    a, b = _noise((60, 100), 1), _noise((80, 80), 2) + 50
    stack = np.stack([_padded(a, 20, 0, 0, 0), _padded(b, 0, 0, 0, 20)])  # each (80, 100): a padded on top, b right
    cut, fill, box = recorded_part(stack)
    assert box == (slice(0, 80), slice(0, 100))  # each side is recorded in one plane
    assert fill[0, :20].all() and not fill[0, 20:].any() and fill[1, :, 80:].all()
    assert np.allclose(cut[0, :20], a.mean(), atol=1e-3) and np.allclose(cut[1, :, 80:], b.mean(), atol=1e-3)
    np.testing.assert_array_equal(cut[0, 20:], a)
    same, none, nobox = recorded_part(a)
    assert same is a and none is None and nobox is None
    assert placed(np.ones((2, 3)), np.array([[True, False, False]] * 2), (slice(1, 3), slice(1, 4)),
                  (4, 5), outside=7).tolist() == [[7] * 5, [7, 0, 1, 1, 7], [7, 0, 1, 1, 7], [7] * 5]


def _montage(seed: int = 3) -> np.ndarray:
    """A stitched montage: noise tiles on a canvas of 0, a rotated tile's corners, squares of
    padding just wide enough and bands just too narrow, near and across the test's block seams,
    and a data bar under it."""
    image = np.clip(_noise((150, 190), seed), 1, 254).astype(np.uint8)
    image[20:20 + FILL_SIDE, 50:50 + FILL_SIDE] = 0  # a square across the seams at 32 and 64 px
    image[60:100, 90:90 + FILL_SIDE - 1] = 0  # one pixel too narrow: recorded
    image[110:140, 120:150] = 255  # saturated square
    image[:, 170:] = 0  # a gap between tiles reaching the right edge
    image[130:, :40] = 0  # a corner
    return _with_data_bar(_padded(image, 9, 0, 11, 0))


def test_a_lazy_image_is_searched_block_by_block_exactly_as_one_in_memory():
    """Padding squares and bands found in a zarr image, block by block with their neighbours' edges,
    are those found in the image held whole: the same box, mask and filled image, lazily."""
    import dask.array as da

    image = _montage()
    cut, fill, box = recorded_part(image)
    lazy_cut, lazy_fill, lazy_box = recorded_part(zarr.array(image, chunks=(32, 32)))
    assert isinstance(lazy_cut, da.Array) and isinstance(lazy_fill, da.Array)
    assert lazy_box == box == (slice(9, 159), slice(11, 181))  # the top, left, gap and bar cut off
    np.testing.assert_array_equal(lazy_fill.compute(), fill)
    np.testing.assert_array_equal(lazy_cut.compute(), cut)
    stack = np.stack([image, _montage(4)])
    for lazy, whole in zip(recorded_part(da.from_array(stack, chunks=(1, 40, 50))), recorded_part(stack)):
        np.testing.assert_array_equal(np.asarray(lazy), np.asarray(whole))
    plain = _noise((100, 120))
    assert recorded_part(zarr.array(plain, chunks=(32, 32)))[1:] == (None, None)


def test_a_large_padded_image_streamed_through_zarr_is_segmented_as_in_memory(responsive_model, em_image, tmp_path,
                                                                               monkeypatch):
    """A montage too large to hold (streamed chunk by chunk to zarr) gets the padding treatment of
    an image in memory: the same labels, probabilities, mask and class table, its mask kept once."""
    import dask.array as da

    from napari_nanoclass.segmentation import predict as segmentation

    padded = _padded(em_image, 24, 8, 40, 16)
    padded[100:140, 150:190] = 0
    whole = segment(padded, responsive_model, probabilities=True)
    monkeypatch.setattr(segmentation, "IN_MEMORY_LIMIT", 1000)
    streamed = segment(zarr.array(padded, chunks=(64, 64)), responsive_model, probabilities=True, workdir=tmp_path)
    assert isinstance(streamed.labels, da.Array) and (tmp_path / "fill.zarr").is_dir()
    np.testing.assert_array_equal(np.asarray(streamed.labels), whole.labels)
    np.testing.assert_array_equal(np.asarray(streamed.fill), whole.fill)
    np.testing.assert_allclose(np.asarray(streamed.probabilities), whole.probabilities, atol=1e-6)
    assert streamed.class_table() == whole.class_table()


def test_segmenting_a_padded_image_equals_segmenting_its_recorded_part(responsive_model, em_image, caplog):
    padded = _padded(em_image, 24, 8, 40, 16)
    whole = segment(em_image, responsive_model, probabilities=True)
    with caplog.at_level("INFO", logger="napari_nanoclass"):
        result = segment(padded, responsive_model, probabilities=True, name="section_07")
    assert "section_07: 30.6 % of the image is padding" in caplog.text
    inside = (slice(24, 224), slice(40, 272))
    np.testing.assert_array_equal(result.labels[inside], whole.labels)
    np.testing.assert_array_equal(result.probabilities[(slice(None), *inside)], whole.probabilities)
    outside = np.ones(padded.shape, bool)
    outside[inside] = False
    assert not result.labels[outside].any() and not result.probabilities[:, outside].any()
    np.testing.assert_array_equal(result.fill, outside)
    assert [r["area_px"] for r in result.class_table()] == [r["area_px"] for r in whole.class_table()]
    stored = zarr.array(padded, chunks=(64, 64))  # read lazily from a zarr store: the same
    np.testing.assert_array_equal(segment(stored, responsive_model).labels, result.labels)


def test_the_shipped_segmentation_model_is_not_thrown_by_a_rotated_section_s_padding():
    """A registered section rotated by a few degrees, its corners padded with 0: where the section
    is, the labels stay those of the section with harmless surroundings. Before padding was found,
    the zeros took contrast out of the normalisation and changed more of them."""
    from skimage.transform import rotate

    from napari_nanoclass._napari.samples import drosophila_section

    section = drosophila_section()[0][0][:384, :384].astype(np.float32)
    rotated = rotate(section, 10, resize=True, order=1, preserve_range=True, cval=0).astype(np.float32)
    recorded = rotate(np.ones_like(section), 10, resize=True, order=0, cval=0) > 0.5
    reference = np.where(recorded, rotated, rotated[recorded].mean())  # the same section with harmless surroundings
    labels = np.asarray(segment(rotated, "drosophila-seunet").labels)
    expected = np.asarray(segment(reference, "drosophila-seunet").labels)
    inner = recorded & ~np.isclose(rotated, 0)
    assert np.mean(labels[inner] == expected[inner]) >= 0.97
    # the tips of the corners, narrower than FILL_SIDE, stay in: a few labelled pixels there
    assert np.count_nonzero(labels[~recorded]) < 0.03 * np.count_nonzero(~recorded)


def test_liposomes_on_a_padded_micrograph_are_those_of_its_recorded_part():
    """The bundled real micrograph with a border of zeros, as an aligned micrograph has: the
    same objects as on the micrograph itself, at their own place. Before padding was found, the
    zeros took the contrast out of the working image and most vesicles were missed."""
    from napari_nanoclass._napari.samples import VESICLES_PIXEL_NM, cryoem_vesicles

    (image, _, _), = cryoem_vesicles()
    image = np.asarray(image, np.float32)
    padded = _padded(image, 100, 60, 0, 140)
    whole, result = analyse(image, VESICLES_PIXEL_NM), analyse(padded, VESICLES_PIXEL_NM)
    assert len(whole.objects) >= 5
    np.testing.assert_array_equal(result.labels[100:1124, :1024], whole.labels)
    assert not result.labels[:100].any() and not result.labels[:, 1024:].any()
    shifted = [{**o, "centroid_y_px": round(o["centroid_y_px"] + 100, 2),
                "centroid_y_nm": round((o["centroid_y_px"] + 100) * VESICLES_PIXEL_NM, 2)} for o in whole.objects]
    for got, want in zip(result.objects, shifted, strict=True):
        assert got == pytest.approx(want, abs=0.02)


def test_classifying_given_labels_on_a_padded_image_cuts_the_labels_too(tiny_liposome_models):
    from napari_nanoclass.liposomes.simulator import SimulationConfig, simulate_field

    detector, classifiers = tiny_liposome_models
    field = simulate_field(SimulationConfig(shape=(160, 160), objects=(4, 6), diameter_nm=(40, 120)), seed=11)
    image = field.image.astype(np.float32)
    padded = _padded(image, 0, 0, 50, 0, value=float(image.max()) + 1)  # white padding this time
    labels = np.pad(field.labels, ((0, 0), (50, 0)))
    kwargs = {"detector": detector, "classifiers": classifiers}
    whole = analyse(image, 2.5, labels=field.labels, **kwargs)
    result = analyse(padded, 2.5, labels=labels, **kwargs)
    assert [o["lamellarity"] for o in result.objects] == [o["lamellarity"] for o in whole.objects]
    assert [o["centroid_x_px"] for o in result.objects] == pytest.approx(
        [o["centroid_x_px"] + 50 for o in whole.objects], abs=0.01)
    np.testing.assert_array_equal(result.labels[:, 50:], whole.labels)


@pytest.mark.timeout(300)
def test_a_large_padded_micrograph_analysed_block_by_block_finds_what_its_recorded_part_holds(monkeypatch):
    """Block by block (images above ``STREAM_ABOVE``), each block's padding reads as the recorded
    mean and holds no object, and the statistics leave it out: the objects are those the recorded
    part gives in memory."""
    from napari_nanoclass.core.metrics import match_instances
    from napari_nanoclass.liposomes import predict
    from napari_nanoclass.liposomes.simulator import SimulationConfig, simulate_field

    field = simulate_field(SimulationConfig(shape=(512, 512), objects=(12, 16), diameter_nm=(40.0, 150.0)), seed=5)
    image = np.clip(120 + 25 * field.image, 1, None).astype(np.float32)  # as a camera records it: 0 is below it
    padded = _padded(image, 160, 0, 200, 40)  # wider than a block's core on the left
    whole = analyse(image, 2.5)
    monkeypatch.setattr(predict, "STREAM_ABOVE", 0)
    monkeypatch.setattr(predict, "BLOCK_PX", 256)
    monkeypatch.setattr(predict, "MAX_DIAMETER_NM", 200.0)
    stats = predict.working_stats(padded, 2.5, [2.5], tile=256)[2.5]
    assert stats == pytest.approx(predict.working_stats(image, 2.5, [2.5], tile=256)[2.5], rel=1e-3)
    blocks = analyse(padded, 2.5)
    labels = np.asarray(blocks.labels)
    assert not labels[:160].any() and not labels[:, :200].any() and not labels[:, -40:].any()
    assert len(whole.objects) >= 8
    agreement = match_instances(labels[160:, 200:-40], whole.labels, iou=0.8)
    assert agreement["f1"] >= 0.9, agreement


def _with_data_bar(image: np.ndarray) -> np.ndarray:
    """``image`` above a data bar as SEMs write one (benchmarks/padding.py makes it)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from padding import with_data_bar

    return with_data_bar(image)


def test_a_data_bar_is_a_band_and_a_rotated_section_s_corners_are_not():
    from skimage.transform import rotate

    image = np.clip(_noise((200, 300)), 1, 254).astype(np.uint8)
    assert edge_bands(image) == (slice(0, 200), slice(0, 300))
    assert edge_bands(_with_data_bar(image)) == (slice(0, 200), slice(0, 300))
    flipped = _with_data_bar(image)[::-1]  # the bar on top: cut unless only far edges are asked for
    assert edge_bands(flipped) == (slice(70, 270), slice(0, 300))
    assert edge_bands(flipped, near=False) == (slice(0, 270), slice(0, 300))
    turned = rotate(image.astype(np.float32), 10, resize=True, order=1, preserve_range=True, cval=0)
    assert edge_bands(turned) == (slice(0, turned.shape[0]), slice(0, turned.shape[1]))
    gaps = image.copy()
    gaps[:, ::4] = 0  # saturated dark gaps in every row: a quarter of them, not a band
    assert edge_bands(gaps) == (slice(0, 200), slice(0, 300))


def test_a_data_bar_changes_no_verdict_of_fibre_homogeneity():
    """An SEM micrograph as the microscope saves it, with its data bar: the same patches, verdicts
    and views as the micrograph alone, and the defect map 0 on the bar. Before, the bar's writing
    was classified too and turned homogeneous micrographs non-homogeneous (benchmarks/padding.py)."""
    from napari_nanoclass import analyse_homogeneity
    from napari_nanoclass._napari.samples import sem_fibres

    (image, _, _), = sem_fibres()
    image = np.asarray(image)
    alone, barred = analyse_homogeneity(image, cam=True), analyse_homogeneity(_with_data_bar(image), cam=True)
    assert barred.summary == alone.summary and barred.views == alone.views
    np.testing.assert_array_equal(barred.logits, alone.logits)
    assert barred.cam.shape == (image.shape[0] + 70, image.shape[1]) and not barred.cam[image.shape[0]:].any()
    np.testing.assert_array_equal(barred.cam[:image.shape[0]], alone.cam)


def test_segmenting_an_image_with_a_data_bar_leaves_the_bar_out(responsive_model, em_image):
    whole = segment(em_image, responsive_model)
    result = segment(_with_data_bar(em_image), responsive_model)
    np.testing.assert_array_equal(result.labels[:200], whole.labels)
    assert not result.labels[200:].any() and result.fill[200:].all() and not result.fill[:200].any()


def test_a_padded_training_image_is_taken_as_the_analyses_take_it():
    """Fine-tuning on a padded image: the padding is set to the recorded mean, left out of the
    normalisation, and its labels are ignored, so training sees what segmentation will."""
    from napari_nanoclass.segmentation.data import IGNORE_INDEX, pair_from_arrays

    image = np.clip(_noise((100, 120)), 1, 254).astype(np.uint8)
    labels = np.random.default_rng(3).integers(0, 3, image.shape)
    pair = pair_from_arrays(_padded(image, 0, 30, 20, 0), np.pad(labels, ((0, 30), (20, 0))), "section")
    assert pair.stats == pytest.approx((image.mean(), image.std()))
    assert (pair.labels[100:] == IGNORE_INDEX).all() and (pair.labels[:, :20] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(pair.labels[:100, 20:], labels)
    assert (pair.image[100:] == np.uint8(image.mean())).all() and pair.image.dtype == np.uint8
    plain = pair_from_arrays(image, labels, "plain")
    assert plain.stats is None and plain.image is image


def test_an_exclusion_mask_leaves_regions_out_as_padding_and_thin_strokes_in():
    import dask.array as da

    image = _noise((80, 90))
    mask = np.zeros(image.shape, bool)
    mask[10:40, :30] = True  # a region
    mask[60:70, 50:90] = True  # a stroke thinner than FILL_SIDE: kept, not blackened
    out = excluded(image, mask, "grid_3")
    assert (out[10:40, :30] == image.min()).all() and (out[~mask] == image[~mask]).all()
    np.testing.assert_array_equal(out[60:70], image[60:70])
    np.testing.assert_array_equal(np.asarray(excluded(da.from_array(image, chunks=32), mask)), out)
    assert excluded(image, None) is image
    with pytest.raises(ImageError, match=r"grid_3: the exclusion mask is 20 × 90 px, the image 80 × 90"):
        excluded(image, mask[60:], "grid_3")


def test_what_is_excluded_has_no_say_in_the_liposomes_found():
    """A dark carbon film over the left of the bundled micrograph, marked by the user: nothing is
    found on it, and the film's content changes nothing (the same objects as with the ice there)."""
    from napari_nanoclass._napari.samples import VESICLES_PIXEL_NM, cryoem_vesicles

    (image, _, _), = cryoem_vesicles()
    image = np.asarray(image, np.float32)
    filmed = image.copy()
    filmed[:, :250] *= 0.4
    mask = np.zeros(image.shape, np.uint8)
    mask[:, :260] = 1
    result = analyse(filmed, VESICLES_PIXEL_NM, exclude=mask)
    assert len(result.objects) >= 5 and not result.labels[:, :260].any()
    same = analyse(image, VESICLES_PIXEL_NM, exclude=mask)
    np.testing.assert_array_equal(result.labels, same.labels)
    assert [o["diameter_nm"] for o in result.objects] == [o["diameter_nm"] for o in same.objects]


def test_what_is_excluded_has_no_say_in_the_segmentation(responsive_model, em_image):
    mask = np.zeros(em_image.shape, bool)
    mask[120:, 150:] = True
    other = em_image.copy()
    other[120:, 150:] = 255 - other[120:, 150:]
    result = segment(em_image, responsive_model, exclude=mask)
    assert not result.labels[mask].any() and result.fill[mask].all() and not result.fill[~mask].any()
    np.testing.assert_array_equal(segment(other, responsive_model, exclude=mask).labels, result.labels)
    assert result.labels[~mask].any()


def test_batch_jobs_take_exclusion_masks_from_a_folder_by_image_name(responsive_model, em_image, tmp_path, capsys):
    """``--exclude DIR``: each image's mask is the file of its name there; an image without one is
    analysed whole, and a folder that does not exist is refused before any work."""
    import tifffile

    from napari_nanoclass.cli import main

    for folder in ("in", "masks"):
        (tmp_path / folder).mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", em_image)
    tifffile.imwrite(tmp_path / "in" / "b.tif", em_image)
    mask = np.zeros(em_image.shape, np.uint8)
    mask[:80, :100] = 255
    tifffile.imwrite(tmp_path / "masks" / "a.tif", mask)
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "in"), "--out", str(out), "--model", responsive_model, "--quiet"]
    assert main([*args, "--exclude", str(tmp_path / "masks")]) == 0
    a, b = (tifffile.imread(out / f"{stem}_labels.tif") for stem in "ab")
    np.testing.assert_array_equal(a, segment(em_image, responsive_model, exclude=mask).labels)
    assert not a[:80, :100].any() and a[:80, :100].size
    np.testing.assert_array_equal(b, segment(em_image, responsive_model).labels)
    assert main([*args, "--exclude", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: the folder of exclusion masks does not exist" in capsys.readouterr().err
