"""Microscope formats and physical units end to end: files written by the libraries themselves
(mrcfile, tifffile, RosettaSciIO, ome-zarr-py) read with their pixel size, results written with
it, the analyses using it, and the reader opening every output at nm scale."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
import torch

from napari_nanoclass.cli import main
from napari_nanoclass.io.images import (
    ImageError,
    read_image,
    read_label_image,
    read_output_calibrated,
    write_image,
    write_label_image,
)
from tests.conftest import reader_layers

IMG = (np.arange(64 * 80) % 251).astype(np.float32).reshape(64, 80)


def _mrc(path, data, voxel_angstrom):
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, np.float32))
        mrc.voxel_size = voxel_angstrom
    return path


def _rsciio_signal(data, scale, units):
    axes = [{"size": n, "scale": scale, "units": units, "name": a, "navigate": False, "offset": 0.0}
            for a, n in zip("yx", data.shape[-2:])]
    if data.ndim == 3:  # a series of images: the first axis navigates
        axes.insert(0, {"size": data.shape[0], "scale": 1.0, "units": "s", "name": "time", "navigate": True,
                        "offset": 0.0})
    return {"data": data, "axes": axes, "metadata": {"General": {"title": "HAADF"}, "Signal": {"signal_type": ""}},
            "original_metadata": {}}


def _ome_zarr_micrometres(path, data, size_um):
    import zarr
    from ome_zarr.writer import write_image as ngff_write

    ngff_write(data, zarr.open_group(str(path), mode="w"), scale_factors=[], axes="yx",
               scale={"y": size_um, "x": size_um}, axes_units={"y": "micrometer", "x": "micrometer"})
    return path


WRITERS = {
    "mrc": (lambda p: _mrc(p / "a.mrc", IMG, 2.5), 0.25, "mrc header"),
    "mrcs stack": (lambda p: _mrc(p / "s.mrcs", np.stack([IMG] * 3), (3.0, 3.0, 1.0)), 0.3, "mrc header"),
    "imagej nm": (lambda p: tifffile.imwrite(p / "ij.tif", IMG, imagej=True, resolution=(1 / 0.7, 1 / 0.7),
                                             metadata={"unit": "nm"}) or p / "ij.tif", 0.7, "tiff ImageJ tag"),
    "imagej micron": (lambda p: tifffile.imwrite(p / "um.tif", IMG, imagej=True, resolution=(1 / 0.0012,) * 2,
                                                 metadata={"unit": "micron"}) or p / "um.tif", 1.2, "tiff ImageJ tag"),
    "ome-tiff": (lambda p: tifffile.imwrite(p / "o.ome.tif", IMG, ome=True, metadata={
        "PhysicalSizeX": 0.9, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 0.9, "PhysicalSizeYUnit": "nm"})
        or p / "o.ome.tif", 0.9, "OME-TIFF metadata"),
    "resolution cm": (lambda p: tifffile.imwrite(p / "cm.tif", IMG, resolution=(1e7 / 1.5,) * 2,
                                                 resolutionunit="CENTIMETER") or p / "cm.tif", 1.5,
                      "tiff resolution tag"),
    "emd (rsciio)": (lambda p: __import__("rsciio.emd", fromlist=["x"]).file_writer(
        str(p / "b.emd"), _rsciio_signal(IMG, 1.2, "nm")) or p / "b.emd", 1.2, "EMD calibration (HAADF)"),
    "emd µm series (rsciio)": (lambda p: __import__("rsciio.emd", fromlist=["x"]).file_writer(
        str(p / "series.emd"), _rsciio_signal(np.stack([IMG] * 3), 0.0006, "µm")) or p / "series.emd", 0.6,
        "EMD calibration (HAADF)"),
    "tiff (rsciio)": (lambda p: __import__("rsciio.tiff", fromlist=["x"]).file_writer(
        str(p / "r.tif"), _rsciio_signal(IMG, 0.0042, "µm")) or p / "r.tif", 4.2, "tiff ImageJ tag"),
    "ome-zarr (ome-zarr-py)": (lambda p: _ome_zarr_micrometres(p / "z.ome.zarr", IMG, 0.0031), 3.1,
                               "OME-Zarr scale"),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_files_written_by_their_libraries_are_read_with_their_pixel_size(tmp_path, kind):
    write, size_nm, source = WRITERS[kind]
    image = read_image(write(tmp_path))
    expected = np.stack([IMG] * 3) if "stack" in kind or "series" in kind else IMG
    np.testing.assert_array_equal(np.asarray(image.data), expected)
    assert image.pixel_size_nm == pytest.approx(size_nm, rel=1e-6) and image.pixel_size_source == source


def test_files_without_a_calibration_have_no_pixel_size(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", IMG)
    tifffile.imwrite(tmp_path / "dpi.tif", IMG, resolution=(72, 72), resolutionunit="INCH")  # a print setting
    _mrc(tmp_path / "unset.mrc", IMG, 0.0)
    for name in ("plain.tif", "dpi.tif", "unset.mrc"):
        image = read_image(tmp_path / name)
        assert image.pixel_size_nm is None and image.pixel_size_source == "", name


def test_fei_and_zeiss_sem_tags_as_tifffile_parses_them():
    # no library writes these vendor tags, so their parsed form (tifffile's) is checked here
    from napari_nanoclass.io.formats import _fei, _zeiss

    assert _fei({"Scan": {"PixelWidth": 1.25e-9, "PixelHeight": 1.25e-9}}).pixel_size_nm == 1.25
    assert _fei({"EScan": {"PixelWidth": 3e-9}}).source == "FEI/Thermo tiff tag"
    assert _zeiss({"ap_image_pixel_size": ("Image Pixel Size", 4.2, "nm")}).pixel_size_nm == 4.2
    assert _zeiss({"ap_image_pixel_size": ("Image Pixel Size", 1.5, "µm")}).pixel_size_nm == 1500
    assert _fei({}).pixel_size_nm is None and _zeiss(None).pixel_size_nm is None


def test_large_mrc_is_memory_mapped_not_read_whole(tmp_path, monkeypatch):
    stack = np.random.default_rng(0).normal(size=(3, 64, 80)).astype(np.float32)
    _mrc(tmp_path / "big.mrcs", stack, 10.0)
    monkeypatch.setattr("napari_nanoclass.io.formats.IN_MEMORY_BYTES", 0)
    image = read_image(tmp_path / "big.mrcs")
    assert isinstance(image.data, np.memmap) and image.pixel_size_nm == 1.0
    np.testing.assert_array_equal(np.asarray(image.data[1]), stack[1])


@pytest.mark.parametrize("name,fmt", [("bad.mrc", "an MRC file"), ("bad.dm4", "a DM4 file"), ("bad.emd", "an EMD file"),
                                      ("bad.ser", "a TIA SER file")])
def test_unreadable_microscope_files_get_one_line_naming_the_file(tmp_path, name, fmt):
    path = tmp_path / name
    path.write_bytes(b"this is not a micrograph\n" * 40)
    with pytest.raises(ImageError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot be read as {fmt}") and "\n" not in message


@pytest.mark.parametrize("suffix", [".tif", ".ome.zarr"])
def test_results_round_trip_with_their_pixel_size(tmp_path, suffix):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (2, 40, 56)).astype(np.uint8)
    image = rng.random((2, 40, 56)).astype(np.float32)
    path = write_label_image(tmp_path / f"x_labels{suffix}", labels, image, name="classes", pixel_size_nm=0.85)
    data, _ = read_label_image(path)
    np.testing.assert_array_equal(np.asarray(data), labels)
    assert read_output_calibrated(path)[1].pixel_size_nm == pytest.approx(0.85)
    again = read_image(path)  # a result can be an input again: the labels (TIFF), the image they label (OME-Zarr)
    assert again.pixel_size_nm == pytest.approx(0.85)
    np.testing.assert_array_equal(np.asarray(again.data), labels if suffix == ".tif" else image)


def test_ome_zarr_labels_lie_under_their_image_in_nm_with_a_pyramid_when_large(tmp_path, monkeypatch):
    monkeypatch.setattr("napari_nanoclass.io.images.PYRAMID_ABOVE", 64)
    monkeypatch.setattr("napari_nanoclass.io.images.PYRAMID_SMALLEST", 32)
    image = np.random.default_rng(0).random((150, 130)).astype(np.float32)
    labels = np.zeros((150, 130), np.int32)
    labels[20:90, 30:100] = 2
    metadata = {"colors": [{"label-value": 2, "rgba": [255, 0, 0, 255]}],
                "properties": [{"label-value": 2, "class": "membrane"}]}
    write_label_image(tmp_path / "l.ome.zarr", labels, image, name="classes", pixel_size_nm=2.5,
                      label_metadata=metadata)
    found, labelled = _ngff_nodes(tmp_path / "l.ome.zarr")  # as ome-zarr-py (napari-ome-zarr) finds them
    assert list(labelled) == ["classes"]
    node = labelled["classes"]
    np.testing.assert_array_equal(np.asarray(found.data[0]), image)
    np.testing.assert_array_equal(np.asarray(node.data[0]), labels)
    for each in (found, node):
        assert [a["unit"] for a in each.metadata["axes"]] == ["nanometer", "nanometer"]
        assert [tuple(d.shape) for d in each.data] == [(150, 130), (75, 65), (37, 32), (18, 16)]  # halved to ≤ 32
        for scale, level in zip(_scales(each), each.data):  # each level's pixels in nm: the same 375 × 325 nm field
            assert scale == pytest.approx([2.5 * 150 / level.shape[0], 2.5 * 130 / level.shape[1]])
    assert set(np.unique(np.asarray(node.data[1]))) == {0, 2}  # nearest neighbour: still labels
    assert node.metadata["color"] == {2: [1.0, 0.0, 0.0, 1.0]}
    assert node.metadata["properties"] == {2: {"class": "membrane"}}
    assert read_label_image(tmp_path / "l.ome.zarr")[1]["properties"] == [{"label-value": 2, "class": "membrane"}]
    alone, _ = _ngff_nodes(tmp_path / "l.ome.zarr" / "labels" / "classes")  # the labels opened alone find their image
    np.testing.assert_array_equal(np.asarray(alone.data[0]), image)
    assert not [p.name for p in tmp_path.iterdir() if p.name != "l.ome.zarr"]  # written atomically: no partial left


def test_ome_zarr_labels_of_another_shape_than_their_image_are_refused_with_one_line(tmp_path):
    path = tmp_path / "l.ome.zarr"
    with pytest.raises(ImageError) as info:
        write_label_image(path, np.zeros((20, 30), np.uint8), IMG, name="classes")
    assert str(info.value) == f"{path}: labels 'classes' of shape (20, 30) do not match the image (64, 80)"
    assert not list(tmp_path.iterdir())  # nothing half-written


# -- real files written by the microscope software (tests/data/README.md) ------------------------------------

DATA = Path(__file__).parent / "data" / "hyperspy"
REAL_FILES = {  # file: (shape, dtype, pixel size in nm, where it was found)
    "test_STEM_image.dm3": ((68, 68), np.uint32, 0.248538, "DM3 calibration (test_STEM_image)"),
    "64x64_TEM_images_acquire_1.ser": ((64, 64), np.float32, 6.28183, "TIA SER calibration"),
    "16x16x5_STEM_BF_DF_preview_1.ser": ((5, 16, 16), np.uint16, 21.51, "TIA SER calibration"),
    "Si100_2x1x1_3D.emd": ((22, 44), np.float32, 0.25, "EMD calibration (annular_detector)"),
    "velox_1532_camera_ceta.emd": ((64, 64), np.int16, 0.215573, "EMD calibration (Ceta)"),
}


@pytest.mark.parametrize("name", list(REAL_FILES))
def test_real_dm3_ser_and_emd_files_open_with_their_shape_and_pixel_size(name):
    shape, dtype, pixel_size, source = REAL_FILES[name]
    image = read_image(DATA / name)
    assert (image.data.shape, image.data.dtype) == (shape, dtype)
    assert image.pixel_size_nm == pytest.approx(pixel_size) and image.pixel_size_source == source
    assert image.name == name.split(".")[0] and np.isfinite(np.asarray(image.data, np.float64)).all()


def test_a_real_ser_reads_the_pixels_tia_wrote():
    # the values of hyperspy's reference array for this file (its 64x64_TEM_images_acquire.npy)
    data = np.asarray(read_image(DATA / "64x64_TEM_images_acquire_1.ser").data)
    assert data.ravel()[:3] == pytest.approx([49154.605, 47970.406, 48244.652])
    assert data.sum(dtype=np.float64) == pytest.approx(165050960.89, rel=1e-9)


def test_a_real_dm4_is_parsed_and_refused_as_too_small_in_one_line():
    # DigitalMicrograph wrote this 2 × 2 test image (values 1–4, uncalibrated): too small to analyse
    from napari_nanoclass.io.formats import UNCALIBRATED, open_rsciio

    data, found = open_rsciio(DATA / "test-1.dm4")
    np.testing.assert_array_equal(np.asarray(data), [[1, 2], [3, 4]])
    assert found == UNCALIBRATED
    with pytest.raises(ImageError) as info:
        read_image(DATA / "test-1.dm4")
    assert str(info.value) == f"{DATA / 'test-1.dm4'}: image is too small ((2, 2)); at least 8×8 pixels needed"


def test_a_diffraction_pattern_s_reciprocal_calibration_is_not_taken_as_a_pixel_size(caplog):
    # read without its .emi, a TIA diffraction pattern's calibration (1/m) comes back as metres
    path = DATA / "64x64_diffraction_acquire_1.ser"
    with caplog.at_level(logging.WARNING, logger="napari_nanoclass"):
        image = read_image(path)
    assert image.data.shape == (64, 64) and image.pixel_size_nm is None and image.pixel_size_source == ""
    expected = f"{path}: the file's pixel size 1.01572e+17 nm (TIA SER calibration) is outside 0.01–1000 nm/px"
    assert expected in caplog.text


@pytest.mark.parametrize("name,fmt", [("test_STEM_image.dm3", "a DM3 file"), ("test-1.dm4", "a DM4 file"),
                                      ("64x64_TEM_images_acquire_1.ser", "a TIA SER file"),
                                      ("Si100_2x1x1_3D.emd", "an EMD file")])
def test_a_truncated_real_file_gets_one_line_naming_it(tmp_path, name, fmt):
    path = tmp_path / name
    whole = (DATA / name).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a copy cut off half way
    with pytest.raises(ImageError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot be read as {fmt} (") and "\n" not in message, message


# -- the analyses use the pixel size ---------------------------------------------------------------------


def _cryo_mrc(path, voxel_angstrom=25.0):
    from napari_nanoclass.liposomes.simulator import SimulationConfig, simulate_field

    field = simulate_field(SimulationConfig(shape=(256, 256), objects=(4, 5)), seed=2)  # 2.5 nm/px
    return _mrc(path, field.image, voxel_angstrom)


def test_liposomes_take_the_mrc_header_pixel_size_and_an_option_wins_with_a_warning(tmp_path, capsys):
    torch.set_num_threads(1)
    cryo = _cryo_mrc(tmp_path / "cryo.mrc")
    tifffile.imwrite(tmp_path / "plain.tif", np.asarray(read_image(cryo).data))
    assert main(["liposomes", str(cryo), str(tmp_path / "plain.tif"), "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "nanoclass liposomes: cryo: pixel size 2.5 nm/px (mrc header)" in err
    assert "plain.tif: no pixel size in the file" in err and "--pixel-size NM" in err  # how to give it
    import csv

    rows = {r["image"]: r for r in csv.DictReader(open(tmp_path / "a" / "summary.csv"))}
    assert (rows["cryo"]["pixel_size_nm"], rows["cryo"]["pixel_size_source"]) == ("2.5", "mrc header")
    assert int(rows["cryo"]["n_objects"]) > 0 and rows["plain"]["status"] == "failed"
    assert read_output_calibrated(tmp_path / "a" / "cryo_labels.tif")[1].pixel_size_nm == pytest.approx(2.5)

    assert main(["liposomes", str(cryo), "--out", str(tmp_path / "b"), "--pixel-size", "2.0"]) == 0
    err = capsys.readouterr().err
    assert "warning: cryo: --pixel-size 2 nm/px overrides the file's 2.5 nm/px (mrc header)" in err
    row = next(csv.DictReader(open(tmp_path / "b" / "summary.csv")))
    assert (row["pixel_size_nm"], row["pixel_size_source"]) == ("2.0", "option --pixel-size")


def _liposome_run(image, out, *options: str) -> tuple[list[float], dict]:
    """``nanoclass liposomes IMAGE --out OUT OPTIONS``: the sorted object diameters and the summary row."""
    import csv

    assert main(["liposomes", str(image), "--out", str(out), "--quiet", *options]) == 0
    with open(out / "objects.csv") as objects, open(out / "summary.csv") as summary:
        return sorted(float(r["diameter_nm"]) for r in csv.DictReader(objects)), next(csv.DictReader(summary))


def test_liposomes_min_diameter_drops_narrower_detections_and_is_recorded(tmp_path):
    """--min-diameter removes the detections narrower than it and leaves the others as they were;
    summary.csv says which minimum each run used."""
    torch.set_num_threads(1)
    cryo = _cryo_mrc(tmp_path / "cryo.mrc")  # 2.5 nm/px, vesicles 30-300 nm
    every, plain = _liposome_run(cryo, tmp_path / "plain")
    kept, raised = _liposome_run(cryo, tmp_path / "raised", "--min-diameter", "60")
    assert (plain["min_diameter_nm"], raised["min_diameter_nm"]) == ("20.0", "60.0")
    assert any(d < 60 for d in every) and kept == [d for d in every if d >= 60] and kept
    with pytest.raises(SystemExit) as refused:  # argparse: one line naming the option and the range
        main(["liposomes", str(cryo), "--out", str(tmp_path / "bad"), "--min-diameter", "0"])
    assert refused.value.code == 2


def test_liposomes_min_ring_snr_keeps_or_drops_faint_small_detections_and_is_recorded(tmp_path):
    """--min-ring-snr 0 keeps the narrow detections the default drops as noise, and leaves every
    other one as it was; summary.csv says which threshold each run used."""
    from napari_nanoclass.liposomes.simulator import SimulationConfig, simulate_field

    torch.set_num_threads(1)
    field = simulate_field(SimulationConfig(shape=(512, 512), pixel_size_nm=5.0), seed=424_401)  # noisy at 5 nm/px
    noisy = _mrc(tmp_path / "noisy.mrc", field.image, 50.0)
    judged, default = _liposome_run(noisy, tmp_path / "default")
    every, kept_all = _liposome_run(noisy, tmp_path / "all", "--min-ring-snr", "0")
    assert (default["min_ring_snr"], kept_all["min_ring_snr"]) == ("4.0", "0.0")
    assert len(every) > len(judged) and all(d in every for d in judged)
    assert min(d for d in every if d not in judged) < 10 * 5.0  # what the test dropped: under 10 pixels
    with pytest.raises(SystemExit) as refused:
        main(["liposomes", str(noisy), "--out", str(tmp_path / "bad"), "--min-ring-snr", "-1"])
    assert refused.value.code == 2


def test_liposomes_tta_is_recorded_and_changes_only_how_the_detectors_see_the_image(tmp_path, monkeypatch):
    """--tta runs every detector with the engine's test-time augmentation (and nothing else with it:
    the same detectors, the same objects' columns), and summary.csv says which runs used it."""
    from napari_nanoclass import engine

    torch.set_num_threads(1)
    cryo = _cryo_mrc(tmp_path / "cryo.mrc")
    asked = []
    predict_dense = engine.predict_dense
    monkeypatch.setattr(engine, "predict_dense", lambda *a, **k: asked.append(k.get("tta")) or predict_dense(*a, **k))
    _, plain = _liposome_run(cryo, tmp_path / "plain")
    runs = len(asked)
    _, augmented = _liposome_run(cryo, tmp_path / "tta", "--tta")
    assert (plain["tta"], augmented["tta"]) == ("False", "True")
    assert asked[:runs] == [False] * runs and asked[runs:] == [True] * runs and runs >= 2  # the detector beside too
    assert (plain["detector"], plain["small_detector"]) == (augmented["detector"], augmented["small_detector"])


def _unitless(columns, lengths=("centroid", "centre", "diameter", "width", "height", "area", "y0", "x0")):
    """Columns that hold a length or an area but do not say in what."""
    return [c for c in columns if any(c.startswith(k) for k in lengths) and not c.endswith(("_px", "_nm", "_nm2"))]


def test_liposome_objects_name_their_units_and_centroids_are_where_the_labels_are(tmp_path):
    import csv

    from skimage.measure import regionprops

    torch.set_num_threads(1)
    cryo = _cryo_mrc(tmp_path / "cryo.mrc", voxel_angstrom=20.0)  # the file says 2 nm/px
    assert main(["liposomes", str(cryo), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    reader = csv.DictReader(open(tmp_path / "a" / "objects.csv"))
    rows = {int(r["label"]): r for r in reader}
    assert rows and not _unitless(reader.fieldnames), reader.fieldnames
    labels, _ = read_output_calibrated(tmp_path / "a" / "cryo_labels.tif")
    for region in regionprops(np.asarray(labels)):
        row = rows[region.label]
        y_px, x_px = float(row["centroid_y_px"]), float(row["centroid_x_px"])
        assert (y_px, x_px) == pytest.approx(region.centroid, abs=2.0)  # input pixels, not working ones
        assert (float(row["centroid_y_nm"]), float(row["centroid_x_nm"])) == pytest.approx((2 * y_px, 2 * x_px),
                                                                                           abs=0.02)


def test_simulated_fields_carry_their_pixel_size_and_name_their_units(tmp_path):
    import csv

    assert main(["simulate-liposomes", "--out", str(tmp_path), "--n", "1", "--size", "128"]) == 0
    assert read_image(tmp_path / "field_0000.tif").pixel_size_nm == pytest.approx(2.5)
    reader = csv.DictReader(open(tmp_path / "objects.csv"))
    row = next(reader)
    assert not _unitless(reader.fieldnames), reader.fieldnames
    assert float(row["centre_y_nm"]) == pytest.approx(2.5 * float(row["centre_y_px"]), abs=0.02)


@pytest.fixture
def model_at_4nm(user_registry) -> str:
    """A tiny segmentation model that says it was trained at 4 nm/px."""
    from napari_nanoclass.models.registry import save_model
    from napari_nanoclass.models.unet import SEUNet
    from tests.conftest import tiny_info

    torch.manual_seed(0)
    info = replace(tiny_info("tiny-4nm"), pixel_size_nm=4.0)
    save_model(SEUNet(**info.arch_params).eval(), info)
    return info.name


def test_an_mrc_is_segmented_at_the_models_scale_into_ome_zarr_in_nm(tmp_path, model_at_4nm, caplog):
    from napari_nanoclass.segmentation.predict import segment

    torch.set_num_threads(1)
    section = _mrc(tmp_path / "section.mrc", np.random.default_rng(0).normal(size=(96, 120)), 20.0)  # 2 nm/px
    with caplog.at_level(logging.INFO, logger="napari_nanoclass"):
        result = segment(read_image(section), model_at_4nm)
    assert "section: rescaled from 2 to 4 nm/px, the pixel size of model tiny-4nm" in caplog.text
    assert result.labels.shape == (96, 120) and result.pixel_size_nm == 2.0  # at the input's size

    assert main(["segment", str(section), "--out", str(tmp_path / "out"), "--model", model_at_4nm,
                 "--format", "ome-zarr", "--quiet"]) == 0
    image, labels = _ngff_nodes(tmp_path / "out" / "section_labels.ome.zarr")  # ome-zarr-py's own Reader
    assert list(labels) == ["classes"]  # under the image, where NGFF viewers look for its labels
    assert image.metadata["name"] == "section"  # the input's name, the layer name napari-ome-zarr gives it
    np.testing.assert_array_equal(np.asarray(image.data[0]), mrcfile.read(section))
    for node in (image, labels["classes"]):
        assert _scales(node) == [[2.0, 2.0]]
        assert [a["unit"] for a in node.metadata["axes"]] == ["nanometer", "nanometer"]
    np.testing.assert_array_equal(np.asarray(labels["classes"].data[0]), result.labels)
    assert [p["class"] for p in labels["classes"].metadata["properties"].values()] == ["c0", "c1", "c2"]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="napari_nanoclass"):
        plain = segment(np.asarray(read_image(section).data), model_at_4nm)
    assert "no pixel size in the file, so it cannot be brought to the 4 nm/px" in caplog.text
    assert plain.labels.shape == (96, 120)


def test_homogeneity_works_at_the_models_scale_and_maps_back_onto_the_input(tmp_path, user_registry, capsys):
    import csv

    from napari_nanoclass.homogeneity.train import HomogeneityConfig, model_info
    from napari_nanoclass.models.fibre_cnn import FibreCNN
    from napari_nanoclass.models.registry import save_model

    torch.manual_seed(0)
    info = replace(model_info(HomogeneityConfig(name="fibre-10nm", widths=[4, 8], hidden=8, patch=32)),
                   pixel_size_nm=10.0)
    save_model(FibreCNN(**info.arch_params).eval(), info)
    sem = tmp_path / "sem.tif"  # 5 nm/px: half the model's pixel size
    tifffile.imwrite(sem, np.random.default_rng(4).integers(0, 255, (128, 192), dtype=np.uint8), imagej=True,
                     resolution=(1 / 5.0, 1 / 5.0), metadata={"unit": "nm"})
    assert main(["homogeneity", str(sem), "--out", str(tmp_path / "h"), "--model", "fibre-10nm"]) == 0
    assert "sem: rescaled from 5 to 10 nm/px, the pixel size of model fibre-10nm" in capsys.readouterr().err
    row = next(csv.DictReader(open(tmp_path / "h" / "homogeneity.csv")))
    assert (row["patch_px"], row["pixel_size_nm"], row["pixel_size_source"]) == ("64.0", "5.0", "tiff ImageJ tag")
    grid, found = read_output_calibrated(tmp_path / "h" / "sem_pnhnf.tif")
    assert grid.shape == (2, 3) and found.pixel_size_nm == pytest.approx(320.0)  # a 32 px patch of 10 nm pixels
    heat = reader_layers(tmp_path / "h")["sem p(NHNF)"]
    assert heat.data.shape == (128, 192) and tuple(heat.scale) == pytest.approx((5.0, 5.0))


# -- the reader opens every output ----------------------------------------------------------------------


def test_reader_opens_segment_and_liposome_output_folders_and_result_files_in_nm(tmp_path, responsive_model):
    torch.set_num_threads(1)
    section = _mrc(tmp_path / "in" / "section.mrc", np.random.default_rng(0).normal(size=(64, 72)), 46.0)
    assert main(["segment", str(section), "--out", str(tmp_path / "seg"), "--model", responsive_model,
                 "--quiet"]) == 0
    layers = reader_layers(tmp_path / "seg")
    assert [layer.name for layer in layers] == ["section", "section labels"]  # source image first
    for layer in layers:
        assert tuple(layer.scale) == pytest.approx((4.6, 4.6)) and layer.metadata["pixel_size_nm"] == 4.6
    assert list(layers["section labels"].features["class"]) == ["c0", "c1", "c2"]
    features = layers["section labels"].features
    assert features["area_nm2"].tolist() == pytest.approx((features["area_px"] * 4.6**2).tolist(), abs=0.001)
    assert not _unitless(features.columns)
    same = reader_layers(tmp_path / "seg" / "section_labels.tif")  # one result file: that input's layers
    assert [layer.name for layer in same] == ["section", "section labels"]

    cryo = _cryo_mrc(tmp_path / "in" / "cryo.mrc")
    assert main(["liposomes", str(cryo), "--out", str(tmp_path / "lip"), "--format", "ome-zarr", "--quiet"]) == 0
    layers = reader_layers(tmp_path / "lip")
    assert [layer.name for layer in layers] == ["cryo", "cryo liposomes"]
    liposomes = layers["cryo liposomes"]
    assert tuple(liposomes.scale) == pytest.approx((2.5, 2.5)) and len(liposomes.features) > 0
    assert {"diameter_nm", "lamellarity"} <= set(liposomes.features.columns)


def _old_layout_labels(path, labels, pixel_size_nm, metadata):
    """A label image as results were saved before they went under their image: ome-zarr-py's
    write_image of the labels with ``image-label`` at the root."""
    import shutil

    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image as ngff_write

    shutil.rmtree(path)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    ngff_write(labels, group, scale_factors=[], fmt=FormatV04(), axes="yx",
               scale={"y": pixel_size_nm, "x": pixel_size_nm}, axes_units={"y": "nanometer", "x": "nanometer"})
    group.attrs["image-label"] = {"version": "0.4", **metadata}


def test_reader_opens_ome_zarr_outputs_over_their_own_image_and_older_ones_too(tmp_path, responsive_model):
    import csv

    from napari_nanoclass.models.registry import registered_info

    torch.set_num_threads(1)
    section = _mrc(tmp_path / "in" / "section.mrc", np.random.default_rng(0).normal(size=(64, 72)), 46.0)
    out = tmp_path / "seg"
    assert main(["segment", str(section), "--out", str(out), "--model", responsive_model, "--format", "ome-zarr",
                 "--quiet"]) == 0
    written = out / "section_labels.ome.zarr"
    labels, metadata = (np.asarray(a) if i == 0 else a for i, a in enumerate(read_label_image(written)))
    section.rename(tmp_path / "elsewhere.mrc")  # the input moved: the output still holds the image
    table = list(csv.DictReader(open(out / "segmentation.csv")))
    for row in table:
        row["model"] = "no-longer-registered"  # colours then come from the OME-Zarr's image-label
    with open(out / "segmentation.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    for opened in (out, written):  # the folder, and the one result file
        layers = reader_layers(opened)
        assert [layer.name for layer in layers] == ["section", "section labels"]
        image, classes = layers["section"], layers["section labels"]
        np.testing.assert_allclose(np.asarray(image.data), mrcfile.read(tmp_path / "elsewhere.mrc"))
        np.testing.assert_array_equal(np.asarray(classes.data), labels)
        assert tuple(image.scale) == pytest.approx((4.6, 4.6)) == tuple(classes.scale)
        assert list(classes.features["class"]) == ["c0", "c1", "c2"]
        colours = registered_info(responsive_model).class_colours
        assert np.allclose(classes.colormap.map(np.array([1, 2]))[:, :3],
                           [[int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)] for c in colours[1:3]])

    _old_layout_labels(written, labels, 4.6, metadata)  # a folder written before: labels at the root
    layers = reader_layers(out)
    assert [layer.name for layer in layers] == ["section labels"]  # no image in it, and the input has moved
    np.testing.assert_array_equal(np.asarray(layers["section labels"].data), labels)
    assert tuple(layers["section labels"].scale) == pytest.approx((4.6, 4.6))


def test_segmenting_an_ome_zarr_into_its_own_folder_leaves_it_untouched(tmp_path, responsive_model):
    import hashlib

    torch.set_num_threads(1)
    source = write_image(tmp_path / "cells.ome.zarr", np.random.default_rng(2).random((64, 72)), pixel_size_nm=3.0)

    def digest():
        return {p.relative_to(source): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(source.rglob("*")) if p.is_file()}

    before = digest()
    assert main(["segment", str(source), "--out", str(tmp_path), "--model", responsive_model, "--format", "ome-zarr",
                 "--quiet"]) == 0
    assert digest() == before and not (source / "labels").exists()  # the labels went into a copy of it
    image, labels = _ngff_nodes(tmp_path / "cells_labels.ome.zarr")
    np.testing.assert_array_equal(np.asarray(image.data[0]), np.asarray(read_image(source).data))
    assert _scales(labels["classes"]) == [[3.0, 3.0]]


def test_reader_opens_a_homogeneity_folder_with_the_map_over_the_image_in_nm(tmp_path):
    from napari_nanoclass.homogeneity.train import HomogeneityConfig, model_info
    from napari_nanoclass.models.fibre_cnn import FibreCNN
    from napari_nanoclass.models.registry import save_model

    torch.manual_seed(0)
    info = model_info(HomogeneityConfig(name="tiny-fibre", widths=[4, 8], hidden=8, patch=32))
    save_model(FibreCNN(**info.arch_params).eval(), info)
    sem = tmp_path / "sem.tif"
    tifffile.imwrite(sem, np.random.default_rng(4).integers(0, 255, (96, 128), dtype=np.uint8), imagej=True,
                     resolution=(1 / 5.0, 1 / 5.0), metadata={"unit": "nm"})
    assert main(["homogeneity", str(sem), "--out", str(tmp_path / "h"), "--model", "tiny-fibre", "--quiet"]) == 0
    layers = reader_layers(tmp_path / "h")
    assert [layer.name for layer in layers] == ["sem", "sem NHNF patches", "sem p(NHNF)"]
    heat, image = layers["sem p(NHNF)"], layers["sem"]
    # over the image pixel for pixel (not past its edge), in nm like the image
    assert heat.data.shape == (96, 128) and tuple(heat.scale) == pytest.approx((5.0, 5.0)) == tuple(image.scale)
    grid = tifffile.imread(tmp_path / "h" / "sem_pnhnf.tif")
    assert np.allclose(np.asarray(heat.data)[::32, ::32], grid)  # one value per 32 px patch
    assert layers["sem NHNF patches"].data.shape == (96, 128)
    assert read_output_calibrated(tmp_path / "h" / "sem_pnhnf.tif")[1].pixel_size_nm == pytest.approx(160.0)
    import csv

    summary = csv.DictReader(open(tmp_path / "h" / "homogeneity.csv"))
    row = next(summary)
    assert (row["height_px"], row["width_px"], row["pixel_size_nm"]) == ("96", "128", "5.0")
    views = csv.DictReader(open(tmp_path / "h" / "homogeneity_views.csv"))
    assert not _unitless(summary.fieldnames) and not _unitless(views.fieldnames) and next(views)["x0_px"] == "0"


def test_reader_opens_a_micrograph_in_nm_and_leaves_plain_images_to_napari(tmp_path):
    from napari_nanoclass.io.reader import get_reader

    layers = reader_layers(_mrc(tmp_path / "a.mrc", IMG, 12.0))
    assert tuple(layers["a"].scale) == pytest.approx((1.2, 1.2))
    assert layers["a"].metadata["pixel_size_source"] == "mrc header"
    tifffile.imwrite(tmp_path / "plain.tif", IMG)
    assert get_reader(str(tmp_path / "plain.tif")) is None and get_reader(str(tmp_path)) is None


# -- label images where NGFF viewers look for them ---------------------------------------------------------


def _ngff_nodes(path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(path)))())
    images = [n for n in nodes if n.data and not n.load(Label)]
    labels = {n.metadata["name"]: n for n in nodes if n.data and n.load(Label)}
    return images[0], labels


def _scales(node):
    return [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]


def test_simulated_fields_as_ome_zarr_hold_their_instances_under_labels(tmp_path):
    assert main(["simulate-liposomes", "--out", str(tmp_path / "z"), "--n", "1", "--size", "128",
                 "--pixel-size", "2", "--format", "ome-zarr"]) == 0
    assert main(["simulate-liposomes", "--out", str(tmp_path / "t"), "--n", "1", "--size", "128",
                 "--pixel-size", "2"]) == 0  # same seed: the same field as TIFFs
    image, labels = _ngff_nodes(tmp_path / "z" / "field_0000.ome.zarr")
    assert list(labels) == ["instances"]
    instances = labels["instances"]
    assert _scales(instances) == _scales(image) == [[2.0, 2.0]]
    assert [a.get("unit") for a in instances.metadata["axes"]] == ["nanometer", "nanometer"]
    expected = read_output_calibrated(tmp_path / "t" / "field_0000_labels.tif")[0]
    np.testing.assert_array_equal(np.asarray(instances.data[0]), expected)
    assert np.asarray(instances.data[0]).max() > 0
    field = read_image(tmp_path / "z" / "field_0000.ome.zarr")  # the image itself, as an input again
    assert field.pixel_size_nm == 2.0
    np.testing.assert_array_equal(np.asarray(field.data), read_image(tmp_path / "t" / "field_0000.tif").data)


def test_labels_added_to_an_ome_zarr_image_take_its_scale_and_pyramid_and_never_overwrite(tmp_path, monkeypatch):
    from napari_nanoclass.io.images import add_ome_zarr_labels

    monkeypatch.setattr("napari_nanoclass.io.images.PYRAMID_ABOVE", 64)
    monkeypatch.setattr("napari_nanoclass.io.images.PYRAMID_SMALLEST", 32)
    cells = np.zeros((150, 130), np.uint16)
    cells[20:90, 30:100] = 7
    written = write_image(tmp_path / "ours.ome.zarr", np.random.default_rng(0).random((150, 130)), pixel_size_nm=0.8)
    theirs = _ome_zarr_micrometres(tmp_path / "theirs.ome.zarr", IMG, 0.0031)  # written by ome-zarr-py itself
    for path in (written, theirs):
        add_ome_zarr_labels(path, "cells", cells if path == written else cells[:64, :80],
                            {"colors": [{"label-value": 7, "rgba": [255, 0, 0, 255]}]})
        image, labels = _ngff_nodes(path)
        node = labels["cells"]
        assert np.allclose(_scales(node), _scales(image)) and node.metadata["axes"] == image.metadata["axes"]
        assert [tuple(d.shape) for d in node.data] == [tuple(d.shape) for d in image.data]
        assert node.metadata["color"] == {7: [1.0, 0.0, 0.0, 1.0]}
        np.testing.assert_array_equal(np.asarray(node.data[0]), cells[: image.data[0].shape[0], : image.data[0].shape[1]])
    assert len(_scales(_ngff_nodes(written)[1]["cells"])) == 4  # the image's pyramid, level for level
    assert _ngff_nodes(theirs)[1]["cells"].metadata["axes"][-1]["unit"] == "micrometer"

    for args, problem in (((written, "cells", cells), "already has labels/cells; remove it or choose another name"),
                          ((written, "small", cells[:10]), "labels 'small' of shape (10, 130) do not match the image"),
                          ((tmp_path / "none.ome.zarr", "x", cells), "not an OME-Zarr image")):
        with pytest.raises(ImageError) as info:
            add_ome_zarr_labels(*args)
        assert str(info.value).startswith(f"{args[0]}: ") and problem in str(info.value), info.value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.ome.zarr", "theirs.ome.zarr"]  # no scratch left
    assert _ngff_nodes(written)[1].keys() == {"cells"}


def test_an_ome_zarr_image_without_labels_is_refused_as_labels_in_one_line(tmp_path):
    path = tmp_path / "section.ome.zarr"
    write_image(path, IMG, pixel_size_nm=2.0)  # an image: its intensities are no labels
    with pytest.raises(ImageError) as info:
        read_label_image(path)
    assert str(info.value) == f"{path}: an OME-Zarr image without a labels/ group; give a label image"
