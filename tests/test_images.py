"""Reading, validation with clear errors, and atomic writing of images."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from skimage.io import imsave

from napari_nanoclass.core.atomic import atomic_path
from napari_nanoclass.io.images import (
    ImageError,
    as_greyscale,
    find_images,
    read_image,
    write_tiff,
)


def test_reads_tiff_png_zarr_and_ome_zarr(tmp_path):
    img = (np.arange(64 * 80) % 251).astype(np.uint8).reshape(64, 80)
    tifffile.imwrite(tmp_path / "a.tif", img)
    imsave(tmp_path / "b.png", img, check_contrast=False)
    zarr.save_array(str(tmp_path / "c.zarr"), img)
    group = zarr.open_group(str(tmp_path / "d.ome.zarr"), mode="w")
    group.create_array("0", data=img[None, None])
    group.attrs["multiscales"] = [{"datasets": [{"path": "0"}]}]
    for name in ("a.tif", "b.png", "c.zarr", "d.ome.zarr"):
        image = read_image(tmp_path / name)
        assert image.name == name.split(".")[0]
        np.testing.assert_array_equal(np.asarray(image.data), img)


def test_large_tiff_is_opened_lazily(tmp_path, monkeypatch):
    stack = np.random.default_rng(0).integers(0, 255, (3, 64, 64)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", stack, tile=(32, 32), compression="zlib")  # size not checkable
    monkeypatch.setattr("napari_nanoclass.io.images.math.prod", lambda shape: 2**40)  # pretend it is huge
    image = read_image(tmp_path / "s.tif")
    assert not isinstance(image.data, np.ndarray) and image.is_stack
    np.testing.assert_array_equal(np.asarray(image.data[1, 10:20, 30:40]), stack[1, 10:20, 30:40])


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("not an image at all"), "cannot be read"),
        (lambda p: tifffile.imwrite(p, np.zeros((2, 2, 3, 40, 40), np.uint8)), "2-D image or a \\(Z, Y, X\\) stack"),
        (lambda p: tifffile.imwrite(p, np.random.default_rng(0).integers(0, 255, (40, 40, 3)).astype(np.uint8)),
         "colour"),
        (lambda p: tifffile.imwrite(p, np.zeros((4, 40), np.uint8)), "too small"),
    ],
    ids=["empty", "text", "5d", "rgb", "tiny"],
)
def test_bad_files_get_clear_errors_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad.tif"
    make(path)
    with pytest.raises(ImageError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_missing_file_is_named():
    with pytest.raises(ImageError, match="no such file"):
        read_image("/nonexistent/x.tif")


def test_greyscale_saved_as_rgb_is_accepted():
    grey = np.random.default_rng(0).integers(0, 255, (40, 50)).astype(np.uint8)
    np.testing.assert_array_equal(as_greyscale(np.stack([grey] * 3, -1)), grey)


def test_non_numeric_pixels_are_refused():
    with pytest.raises(ImageError, match="not a number type"):
        as_greyscale(np.zeros((20, 20), dtype=bool))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "labels.tif"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_lazy_arrays_are_written_as_tiled_tiff(tmp_path):
    data = np.random.default_rng(0).integers(0, 4, (300, 200)).astype(np.uint8)
    write_tiff(tmp_path / "x.tif", zarr.array(data), tile=128)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "x.tif"), data)


def test_find_images_expands_folders_and_globs(tmp_path):
    for name in ("b.tif", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_images([tmp_path])] == ["a.png", "b.tif"]
    assert [p.name for p in find_images([str(tmp_path / "*.tif")])] == ["b.tif"]
