"""The one way napari-nanoclass reads, checks and writes images.

Reading is lazy for TIFF, MRC, the microscope formats and zarr / OME-Zarr, so images bigger than
memory are fine: the engine pulls tiles from them on demand. An image carries its pixel size in nm
when the file records one, and where it was found (:mod:`.formats`). Every problem with an input
becomes an :class:`ImageError` naming the file and what is wrong (empty, unreadable, wrong
dimensionality, colour, NaN). Writing always goes through :func:`napari_nanoclass.core.atomic.atomic_path`;
outputs carry the pixel size of their input (TIFF resolution tags, OME-Zarr scale in nm), and label
images in OME-Zarr lie under a copy of the image they label, as NGFF viewers expect
(:func:`write_label_image`).
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import zarr
from scipy import ndimage as ndi

from napari_nanoclass.core.analysis import FILL_SIDE, PIXEL_SIZES_NM
from napari_nanoclass.core.atomic import atomic_path
from napari_nanoclass.io.formats import (
    MRC_SUFFIXES,
    RSCIIO_SUFFIXES,
    UNCALIBRATED,
    Calibration,
    mrc_calibration,
    ngff_multiscales,
    open_mrc,
    open_rsciio,
    tiff_calibration,
    zarr_calibration,
)

TIFF_SUFFIXES = {".tif", ".tiff"}
PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
ZARR_SUFFIXES = {".zarr"}  # OME-Zarr folders end in .ome.zarr: suffix .zarr
IMAGE_SUFFIXES = TIFF_SUFFIXES | PLAIN_SUFFIXES | ZARR_SUFFIXES | MRC_SUFFIXES | set(RSCIIO_SUFFIXES)


log = logging.getLogger("napari_nanoclass")


class ImageError(ValueError):
    """An input image cannot be used; the message says which and why."""


@dataclass
class Image:
    """A validated greyscale image or stack: ``data`` is (Y, X) or (Z, Y, X), numpy or lazy.

    ``pixel_size_nm`` is the file's own pixel size (None if it records none) and
    ``pixel_size_source`` where it was found, so that results can say which they used.
    """

    data: Any
    name: str
    path: Path | None = None
    pixel_size_nm: float | None = None
    pixel_size_source: str = ""

    @property
    def is_stack(self) -> bool:
        return self.data.ndim == 3


def _is_zarr(path: Path) -> bool:
    return path.suffix in ZARR_SUFFIXES or (
        path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zarray", ".zgroup"))
    )


def _open_zarr(path: Path) -> Any:
    return _open_zarr_calibrated(path)[0]


def _open_zarr_calibrated(path: Path) -> tuple[Any, Calibration]:
    """A zarr array, or an OME-Zarr's full-resolution level with its scale in nm."""
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node, UNCALIBRATED
    multiscales = ngff_multiscales(node.attrs)
    if multiscales:
        return node[multiscales[0]["datasets"][0]["path"]], zarr_calibration(multiscales)
    arrays = list(node.array_keys())
    if len(arrays) == 1:
        return node[arrays[0]], UNCALIBRATED
    raise ImageError(f"{path}: zarr group holds {len(arrays)} arrays and no OME multiscales; open one array")


def _open_tiff(path: Path) -> tuple[Any, Calibration]:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        declared = math.prod(series.shape) * series.dtype.itemsize
        small = declared < 256 * 2**20
        if tif.pages[0].compression == 1 and declared > tif.filehandle.size:
            # an uncompressed TIFF cannot hold fewer bytes than its pixels: truncated or a corrupt header
            raise ImageError(f"{path}: declares {' × '.join(map(str, series.shape))} pixels ({declared / 2**30:.2f} GiB) "
                             f"but the file holds only {tif.filehandle.size} bytes; it is truncated or corrupt")
        found = tiff_calibration(tif)
    if small:
        return tifffile.imread(path, series=0), found
    node = zarr.open(tifffile.imread(path, aszarr=True, series=0), mode="r")
    return (node if isinstance(node, zarr.Array) else node["0"]), found  # pyramid: full resolution


def _open_plain(path: Path) -> np.ndarray:
    """A PNG / JPEG / BMP / GIF file; one whose contents are not an image of any kind is named
    as such (the image library's own message suggests installing plugins, which would not help)."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError
    from skimage.io import imread

    try:
        PILImage.open(path).close()
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a {path.suffix.lstrip('.').upper()} image (its contents are not an image "
                         "format this tool reads)") from None
    return imread(path)


def file_stem(path: str | Path) -> str:
    """The name an input's outputs are called after: the file name up to its first dot, so that
    ``a.ome.zarr`` and ``a.ome.tif`` are both ``a`` (every writer and the batch runner use this).

    Leading dots are skipped (``.hidden.tif`` → ``hidden``, a macOS ``._x.tif`` copy → ``_x``):
    an empty stem would name the output folder itself. The result is never empty, never contains
    a path separator or a dot, and non-printable characters become ``_``.
    """
    name = Path(path).name
    stem = name.lstrip(".").split(".")[0] or name.replace(".", "_") or "_"
    return "".join(c if c.isprintable() else "_" for c in stem)


def read_image(path: str | Path) -> Image:
    """Open an image file (TIFF, MRC, DM3/DM4, EMD, SER, PNG/JPEG, zarr, OME-Zarr) as a validated
    greyscale Image with the pixel size the file records (see docs/cli.md for what is read)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes)")
    suffix = path.suffix.lower()
    try:
        if _is_zarr(path):
            data, found = _open_zarr_calibrated(path)
        elif suffix in TIFF_SUFFIXES:
            data, found = _open_tiff(path)
        elif suffix in MRC_SUFFIXES:
            data, found = open_mrc(path)
        elif suffix in RSCIIO_SUFFIXES:
            data, found = open_rsciio(path)
        else:
            data, found = _open_plain(path), UNCALIBRATED
    except ImageError:
        raise
    except Exception as exc:  # every reader has its own exception types
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(f"{path}: cannot be read as {_format_name(path)} ({type(exc).__name__}: {reason})") from exc
    found = _plausible(found, path)
    return Image(as_greyscale(data, str(path)), name=file_stem(path), path=path,
                 pixel_size_nm=found.pixel_size_nm, pixel_size_source=found.source)


def _plausible(found: Calibration, path: Path) -> Calibration:
    """``found``, or none with a warning when it is no pixel size a micrograph can have (the range
    ``--pixel-size`` accepts): a TIA SER read without its ``.emi`` gives a diffraction pattern's
    reciprocal calibration as metres, and using it would rescale the image absurdly."""
    low, high = PIXEL_SIZES_NM
    if found.pixel_size_nm is None or low <= found.pixel_size_nm <= high:
        return found
    log.warning("%s: the file's pixel size %g nm (%s) is outside %g–%g nm/px, so it is not used; "
                "give --pixel-size NM if the image needs one", path, found.pixel_size_nm, found.source, low, high)
    return UNCALIBRATED


def _format_name(path: Path) -> str:
    """What ``path`` was read as, for error messages ("an MRC file", "an EMD file", "an image")."""
    suffix = path.suffix.lower()
    if suffix in MRC_SUFFIXES:
        return "an MRC file"
    if suffix in RSCIIO_SUFFIXES:
        from napari_nanoclass.io.formats import FORMAT_NAMES

        name = FORMAT_NAMES[suffix]
        return f"{'an' if name[0] in 'AEFHILMNORSX' else 'a'} {name} file"  # as spelled out: "an E-M-D"
    return "an image"


def as_greyscale(data: Any, source: str = "image") -> Any:
    """Check an array is a usable greyscale image or stack and return it as (Y, X) or (Z, Y, X).

    Singleton leading axes (OME-Zarr's t, c and a one-plane z) are dropped. Colour images are refused, except
    RGB files whose channels are identical (greyscale saved as RGB, common with SEM software).
    """
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    if data.dtype.kind not in "uif":
        raise ImageError(f"{source}: pixel type {data.dtype} is not a number type")
    if 0 in data.shape:
        raise ImageError(f"{source}: image is empty (shape {tuple(data.shape)})")
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    if data.ndim >= 3 and data.shape[-1] in (3, 4) and min(data.shape[-3:-1]) > 4:
        data = _grey_from_rgb(data, source)
    if data.ndim not in (2, 3):
        raise ImageError(
            f"{source}: expected a 2-D image or a (Z, Y, X) stack, got {data.ndim} dimensions "
            f"(shape {tuple(data.shape)})"
        )
    if min(data.shape[-2:]) < 8:
        raise ImageError(f"{source}: image is too small ({tuple(data.shape)}); at least 8×8 pixels needed")
    return data


def _grey_from_rgb(data: Any, source: str) -> Any:
    rgb = np.asarray(data[..., :3])
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise ImageError(
            f"{source}: colour (RGB) image, but electron micrographs are greyscale; "
            "convert it to greyscale or save the detector's single channel"
        )
    return rgb[..., 0]


def image_stats(data: Any, source: str = "") -> tuple[float, float]:
    """Mean and standard deviation over the *whole* image, streamed chunk by chunk if lazy.

    Normalising each tile by its own statistics would make tiles disagree at their seams, so the
    engine always normalises with these. Non-finite values are an error, not silently spread.
    """
    if isinstance(data, np.ndarray):
        mean, std = float(data.mean(dtype=np.float64)), float(data.std(dtype=np.float64))
    else:
        lazy = data if isinstance(data, da.Array) else da.from_array(data, chunks=_chunks(data))
        mean, std = (float(v) for v in da.compute(lazy.mean(dtype=np.float64), lazy.std(dtype=np.float64)))
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise ImageError(f"{source + ': ' if source else ''}image contains NaN or infinite values")
    return mean, std if std > 0 else 1.0


CORNERS = ((0, 0), (0, -1), (-1, 0), (-1, -1))  # where padding's value is read when it is neither extreme


def fill_mask(plane: np.ndarray, side: int = FILL_SIDE) -> np.ndarray | None:
    """Where a 2-D image holds no recorded data, or None if nowhere: its lowest or its highest value,
    or the value of one of its corners, wherever that value fills a ``side`` × ``side`` square (a
    square opening of the pixels at that value).

    Aligned, rotated and stitched micrographs and registered serial sections are padded with a
    constant: mostly 0, sometimes the image's mean (IMOD's default). Normalised with the padding
    counted as data, the recorded part loses or gains contrast, and the networks miss much of what
    it holds (docs/engine.md, "Padding"). No recorded image holds ``side``² equal values in a
    square, unless the detector saturated there, and a saturated square holds nothing to analyse
    either.
    """
    plane = np.asarray(plane)
    values = _fill_values(plane.min(), plane.max(), [plane[y, x] for y, x in CORNERS])
    if values is None:
        return None
    found = _filled(plane, values, side)
    return found if found.any() else None


def _fill_values(lowest: Any, highest: Any, corners: Sequence[Any]) -> set | None:
    """The values padding may hold (:func:`fill_mask`), or None for a plane with NaN or inf, which
    :func:`image_stats` reports as the problem it is (a corner's value could make it mostly padding)."""
    if not (np.isfinite(lowest) and np.isfinite(highest)):
        return None
    return {lowest, highest, *corners}


def _filled(plane: np.ndarray, values: Iterable[Any], side: int = FILL_SIDE) -> np.ndarray:
    """The pixels of ``plane`` at one of ``values`` that lie in a ``side`` × ``side`` square of it."""
    found = np.zeros(plane.shape, bool)
    for value in values:
        equal = plane == value
        if np.count_nonzero(equal) < side * side:  # no square can be in there
            continue
        core = ndi.minimum_filter(equal.view(np.uint8), side, mode="nearest")
        found |= ndi.maximum_filter(core, side, mode="constant").view(bool) & equal
    return found


def _lazy_filled(plane: da.Array, values: Iterable[Any], side: int = FILL_SIDE) -> da.Array:
    """:func:`_filled` of a lazy plane, block by block. Each block is seen with ``side - 1`` more
    pixels of its neighbours on each side, the reach of an erosion and a dilation together, and
    with none beyond the image's edges, where the filters handle edges as they do on a whole plane:
    so the mask is exactly the one of the plane held whole."""
    return plane.map_overlap(_filled, depth=side - 1, boundary="none", dtype=bool, values=values, side=side)


BAND_SHARE = 0.9  # a row (column) of a band along an edge is at least this share the image's extreme values


def edge_bands(plane: np.ndarray, side: int = FILL_SIDE, share: float = BAND_SHARE,
               near: bool = True) -> tuple[slice, slice]:
    """The box of a 2-D image left once the bands along its edges are cut that are at least ``side``
    rows (columns) deep, each row (column) at least ``share`` the image's lowest and highest values:
    a microscope's data bar (lines of text, white on black or black on white, under an SEM or TEM
    image) or padding written on. :func:`fill_mask` alone leaves such a band in, for its writing is
    not padding; a recorded row holds few pixels at the extremes, even beside a rotated section's
    padding. ``near``: bands along the top and left edges too (False: bottom and right only, so the
    box starts where the image does)."""
    plane = np.asarray(plane)
    extreme = (plane == plane.min()) | (plane == plane.max())
    return _unbanded(extreme.mean(axis=1), extreme.mean(axis=0), side, share, near)


def _unbanded(row_share: np.ndarray, column_share: np.ndarray, side: int = FILL_SIDE, share: float = BAND_SHARE,
              near: bool = True) -> tuple[slice, slice]:
    """:func:`edge_bands` from the share of extreme values in each row and each column."""
    start, stop = [0, 0], [len(row_share), len(column_share)]
    for axis, shares in enumerate((row_share, column_share)):
        banded = np.asarray(shares) >= share
        lead, trail = _run(banded), _run(banded[::-1])
        if near and lead >= side:
            start[axis] = lead
        if trail >= side:
            stop[axis] = len(banded) - trail
    if start[0] >= stop[0] or start[1] >= stop[1]:  # bands throughout: no image left to keep
        return slice(0, len(row_share)), slice(0, len(column_share))
    return slice(start[0], stop[0]), slice(start[1], stop[1])


def _run(flags: np.ndarray) -> int:
    """How many of ``flags`` are True before the first False."""
    return len(flags) if flags.all() else int(np.argmin(flags))


def recorded_box(fill: np.ndarray) -> tuple[slice, slice]:
    """The smallest box of a plane (rows, columns) that holds every recorded pixel (not ``fill``)."""
    return _box(~np.asarray(fill).all(axis=1), ~np.asarray(fill).all(axis=0))


def _box(recorded_rows: np.ndarray, recorded_columns: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(recorded_rows), np.flatnonzero(recorded_columns)
    if not len(rows):
        raise ImageError("the image holds no recorded pixels: it is one constant value")
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def recorded_stats(plane: Any, fill: Any | None, source: str = "") -> tuple[float, float]:
    """:func:`image_stats` of the recorded pixels of a plane (all of them without ``fill``, or where
    it covers the plane: a plane of one value in a stack); a lazy plane and mask are streamed."""
    if fill is None or bool(fill.all()):
        return image_stats(plane, source)
    return image_stats(_lazy(plane)[~fill] if isinstance(fill, da.Array) else np.asarray(plane)[~fill], source)


def recorded_part(data: Any, source: str = "", store: Path | None = None
                  ) -> tuple[Any, Any | None, tuple[slice, slice] | None]:
    """(``data``, a plane or a stack of planes, cut to the box of its recorded pixels, with each
    plane's padding there set to the mean of its recorded pixels; the padding's mask there; the box),
    or (``data``, None, None) where no plane is padded (:func:`fill_mask`) or carries a band along
    an edge (:func:`edge_bands`), where every pixel is padding (an image of one value), or where a
    plane holds NaN or inf (:func:`image_stats` names that problem).

    Cut out, a padded border or a data bar becomes an image border, which the engine handles as for
    any image; set to the mean, the padding that remains (the corners of a rotated section) reads as
    featureless to a network, not as a black object. Found padding is logged (``source``: the
    image's name).

    Data not in memory (a zarr or dask array) is searched block by block and stays lazy, as do the
    image and mask returned; ``store`` (a zarr path) keeps its mask, so later reads do not search
    the image again.
    """
    lazy = not isinstance(data, np.ndarray)
    planes = (_lazy(data) if lazy else data).reshape(-1, *data.shape[-2:])
    found = _compute(planes.min(axis=(1, 2)), planes.max(axis=(1, 2)), *(planes[:, y, x] for y, x in CORNERS))
    values = [_fill_values(low, high, corners) for low, high, *corners in zip(*found)]
    if any(v is None for v in values):
        return data, None, None
    fill = (da.stack([_lazy_filled(p, v) for p, v in zip(planes, values)]) if lazy
            else np.stack([_filled(p, v) for p, v in zip(planes, values)]))
    if lazy and store is not None:
        fill = _stored(fill, store)
    extreme = (planes == found[0][:, None, None]) | (planes == found[1][:, None, None])
    rows_filled, columns_filled, padded, row_share, column_share = _compute(
        fill.all(axis=2), fill.all(axis=1), fill.any(), extreme.mean(axis=2), extreme.mean(axis=1))
    bands = [_unbanded(r, c) for r, c in zip(row_share, column_share)]
    whole = (slice(0, planes.shape[1]), slice(0, planes.shape[2]))
    if rows_filled.all() or (not padded and all(b == whole for b in bands)):  # one value throughout, or no padding
        return data, None, None
    box = _kept_box(_box(~rows_filled.all(axis=0), ~columns_filled.all(axis=0)), bands)
    kept, cut = fill[(slice(None), *box)], planes[(slice(None), *box)]
    recorded, some, every = _compute((~kept).sum(), kept.any(axis=(1, 2)), kept.all(axis=(1, 2)))
    log.info("%s: %.1f %% of the image is padding or a data bar (its lowest or highest value in squares of %d px "
             "or in bands along its edges); analysed without it", source or "image",
             100 * (1 - recorded / fill.size), FILL_SIDE)
    xp = da if lazy else np
    cut = xp.stack([xp.where(k, np.asarray(recorded_stats(p, k, source)[0], p.dtype), p) if any_ and not all_ else p
                    for p, k, any_, all_ in zip(cut, kept, some, every)])
    return cut.reshape(*data.shape[:-2], *cut.shape[-2:]), kept.reshape(*data.shape[:-2], *kept.shape[-2:]), box


def excluded(data: Any, exclude: Any | None, source: str = "") -> Any:
    """``data`` (a plane or a stack) with the regions of ``exclude`` (a mask of a plane's shape,
    nonzero where the user leaves the image out: a carbon film, contamination, a grid bar) set to
    the image's lowest value, so the analyses take them as padding (:func:`recorded_part`): left out
    of the normalisation, read as the recorded mean, labelled 0 and holding no object. Only the
    parts at least ``FILL_SIDE`` px across are left out, as padding is found (the square opening of
    :func:`fill_mask`): a thinner stroke would otherwise stay in the image as a black line."""
    if exclude is None:
        return data
    exclude = np.asarray(exclude)
    if exclude.shape != tuple(data.shape[-2:]):
        raise ImageError(f"{source or 'image'}: the exclusion mask is {exclude.shape[0]} × {exclude.shape[1]} px, the "
                         f"image {data.shape[-2]} × {data.shape[-1]}; draw it on this image")
    region = _filled((exclude != 0).view(np.uint8), [1])
    if not region.any():
        log.warning("%s: the exclusion mask holds no region %d px across; nothing is left out", source or "image",
                    FILL_SIDE)
        return data
    log.info("%s: %.1f %% of the image left out as asked", source or "image", 100 * region.mean())
    if isinstance(data, np.ndarray):
        return np.where(region, data.min(), data).astype(data.dtype)
    lazy = _lazy(data)
    return da.where(region, lazy.min().compute(), lazy).astype(lazy.dtype)


def exclusion_mask(folder: str | Path | None, stem: str) -> np.ndarray | None:
    """The user's exclusion mask (:func:`excluded`) of the image ``stem``: the image file of that
    stem in ``folder``, or None where there is none (logged: the image is analysed whole)."""
    path = exclusion_path(folder, stem)
    if path is None:
        if folder is not None:
            log.info("%s: no exclusion mask in %s; the whole image is analysed", stem, folder)
        return None
    return np.asarray(read_image(path).data)


def exclusion_path(folder: str | Path | None, stem: str) -> Path | None:
    """The file of :func:`exclusion_mask` (the first image of that stem in ``folder``), or None."""
    if check_exclusion_folder(folder) is None:
        return None
    return next((p for p in find_images([folder]) if file_stem(p) == stem), None)


def check_exclusion_folder(folder: str | Path | None) -> str | Path | None:
    """``folder`` (a job's ``--exclude``), refused if it is not a folder: before any input, not at each."""
    if folder is not None and not Path(folder).is_dir():
        raise ImageError(f"{folder}: the folder of exclusion masks does not exist")
    return folder


def _lazy(data: Any) -> da.Array:
    return data if isinstance(data, da.Array) else da.from_array(data, chunks=_chunks(data))


def _compute(*arrays: Any) -> tuple[np.ndarray, ...]:
    """The arrays' values: dask's computed together (one read of the data they come from)."""
    return tuple(np.asarray(a) for a in (da.compute(*arrays) if any(isinstance(a, da.Array) for a in arrays)
                                         else arrays))


def _stored(mask: da.Array, store: Path) -> da.Array:
    """``mask`` computed once into the zarr ``store`` and read back from there."""
    mask.to_zarr(str(store), overwrite=True)
    return da.from_zarr(str(store))


def _kept_box(recorded: tuple[slice, slice], bands: Sequence[tuple[slice, slice]]) -> tuple[slice, slice]:
    """The box of what any plane of a stack recorded (``recorded``) and kept once its bands were
    cut (each plane's :func:`edge_bands`); ``recorded`` where the bands would leave nothing of it."""
    unbanded = [(min(b[i].start for b in bands), max(b[i].stop for b in bands)) for i in (0, 1)]
    box = tuple(slice(max(r.start, lo), min(r.stop, hi)) for r, (lo, hi) in zip(recorded, unbanded))
    return recorded if any(b.start >= b.stop for b in box) else box


def placed(values: Any, fill: Any, box: tuple[slice, slice], shape: tuple[int, ...],
           outside: Any = 0) -> Any:
    """A result made on :func:`recorded_part`'s box put back into the input's frame (``shape``): 0 on
    the box's ``fill``, ``outside`` beyond the box (``values``' planes are its last two axes; a
    leading axis of classes is allowed). Lazy values or mask give a lazy result."""
    if isinstance(values, da.Array) or isinstance(fill, da.Array):
        inside = da.where(fill, np.zeros((), values.dtype), values)
        around = [(0, 0)] * (inside.ndim - 2) + [(b.start, n - b.stop) for b, n in zip(box, shape[-2:])]
        return da.pad(inside, around, mode="constant", constant_values=outside).astype(values.dtype)
    values = np.asarray(values)
    out = np.full(shape, outside, values.dtype)
    out[(..., *box)] = np.where(fill, np.zeros((), values.dtype), values)
    return out


def _chunks(data: Any) -> Any:
    chunks = getattr(data, "chunks", None)
    if isinstance(chunks, tuple) and all(isinstance(c, int) for c in chunks):
        # group small storage chunks into blocks of ~4 M pixels: few enough tasks for a small graph,
        # small enough that the float64 temporaries of mean/std stay ~32 MB per worker thread
        grow = max(1, int((2**22 / math.prod(chunks)) ** 0.5))
        return tuple(min(s, c * (grow if i >= data.ndim - 2 else 1)) for i, (s, c) in enumerate(zip(data.shape, chunks)))
    return "auto"


# -- writing ------------------------------------------------------------------------------------


def write_tiff(path: str | Path, data: Any, tile: int = 512, pixel_size_nm: float | None = None,
               channel_names: Sequence[str] | None = None) -> Path:
    """Write an array as a zlib-compressed TIFF, atomically; lazy arrays are streamed by tiles.

    With ``pixel_size_nm`` the resolution tags say it (pixels per centimetre, the one metric unit
    every TIFF reader knows), so Fiji, RosettaSciIO and :func:`read_image` see the physical scale.
    ``channel_names`` (of the first axis) go into tifffile's JSON description
    (``TiffFile.shaped_metadata[0]["channel_names"]``).
    """
    path = Path(path)
    options: dict[str, Any] = {} if not pixel_size_nm else {"resolution": (1e7 / pixel_size_nm, 1e7 / pixel_size_nm),
                                                             "resolutionunit": "CENTIMETER"}
    if channel_names is not None:
        options["metadata"] = {"channel_names": list(channel_names)}
    with atomic_path(path) as tmp:
        if isinstance(data, np.ndarray):
            tifffile.imwrite(tmp, data, compression="zlib", **options)
        else:
            tifffile.imwrite(
                tmp, _tiles(data, tile), shape=data.shape, dtype=data.dtype, tile=(tile, tile),
                compression="zlib", bigtiff=True, **options,
            )
    return path


OUTPUT_FORMATS = {"tif": ".tif", "ome-zarr": ".ome.zarr"}  # how maps and labels can be saved


def check_output_format(output_format: str) -> None:
    """Refuse an unknown output format (jobs call this before any work, not at the first write)."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output format {output_format!r} is not one of {sorted(OUTPUT_FORMATS)}")


def output_path(folder: str | Path, name: str, output_format: str = "tif") -> Path:
    """Where an output called ``name`` (e.g. ``<stem>_labels``) goes in ``folder`` in ``output_format``."""
    check_output_format(output_format)
    return Path(folder) / f"{name}{OUTPUT_FORMATS[output_format]}"


def find_output(folder: str | Path, name: str) -> Path | None:
    """The output called ``name`` in ``folder``, whichever format it was saved in (None if absent)."""
    return next((p for p in (output_path(folder, name, f) for f in OUTPUT_FORMATS) if p.exists()), None)


def write_image(path: str | Path, data: Any, *, axes: str | None = None, pixel_size_nm: float | None = None,
                channel_names: Sequence[str] | None = None) -> Path:
    """Write a result image or map as TIFF or OME-Zarr, chosen by the suffix of ``path`` (see
    :func:`output_path`), with its physical pixel size when known and the names of its channels
    (axis ``c``, first) if given. Label images go through :func:`write_label_image`."""
    if Path(path).suffix == ".zarr":
        return write_ome_zarr(path, data, axes=axes, pixel_size_nm=pixel_size_nm, channel_names=channel_names)
    return write_tiff(path, data, pixel_size_nm=pixel_size_nm, channel_names=channel_names)


def write_label_image(path: str | Path, labels: Any, image: Any, *, name: str, pixel_size_nm: float | None = None,
                      label_metadata: dict[str, Any] | None = None, image_name: str | None = None) -> Path:
    """Write the labels of ``image`` as TIFF or OME-Zarr, chosen by the suffix of ``path``.

    A TIFF holds the labels alone (with the pixel size in its resolution tags). NGFF has no
    stand-alone label image: viewers (napari-ome-zarr, MoBIE, …) find labels under the
    ``labels/`` group of the image they label, so an OME-Zarr is a copy of ``image`` (never the
    user's file itself), a pyramid at its physical scale, with the labels as ``labels/<name>``
    and ``label_metadata`` (``image-label`` colours and properties); ``image_name`` names the
    image (the input's stem: the layer name viewers give it). :func:`read_label_image` reads
    either back.
    """
    if Path(path).suffix == ".zarr":
        return write_ome_zarr(path, image, pixel_size_nm=pixel_size_nm, label_images={name: (labels, label_metadata)},
                              name=image_name)
    return write_tiff(path, labels, pixel_size_nm=pixel_size_nm)


def ngff_label_metadata(colours: dict[int, str], properties: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """NGFF ``image-label`` ``colors`` (from ``#rrggbb[aa]``) and ``properties`` per label value."""
    def rgba(hex_colour: str) -> list[int]:
        digits = hex_colour.lstrip("#")
        values = [int(digits[i:i + 2], 16) for i in range(0, len(digits), 2)]
        return (values + [255])[:4]

    return {"colors": [{"label-value": int(v), "rgba": rgba(c)} for v, c in colours.items() if str(c).startswith("#")],
            "properties": [{"label-value": int(v), **p} for v, p in properties.items()]}


PYRAMID_ABOVE = 2048  # images wider or taller than this (pixels) get downsampled levels in OME-Zarr
PYRAMID_SMALLEST = 1024  # … until the smallest level fits in this


def pyramid_factors(shape: Sequence[int]) -> list[int]:
    """Downsampling factors (2, 4, …) of an OME-Zarr pyramid for an image of ``shape``: none for
    images a viewer can show whole, else halvings until the smallest level fits PYRAMID_SMALLEST."""
    side = max(shape[-2:])
    if side <= PYRAMID_ABOVE:
        return []
    return [2**i for i in range(1, math.ceil(math.log2(side / PYRAMID_SMALLEST)) + 1)]


def _ngff_layout(shape: Sequence[int], axes: str | None, pixel_size_nm: float | None,
                 chunk: int) -> tuple[str, dict[str, float] | None, dict[str, str] | None, tuple[int, ...]]:
    """(axes, scale, units, chunks) of an NGFF array of ``shape``: y and x in nm when the pixel size
    is known (stack planes and channels keep scale 1 without a unit: their spacing is not known),
    one plane per chunk."""
    axes = axes or "zyx"[-len(shape):]
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes!r} do not match an array of {len(shape)} dimensions")
    spatial = [a for a in axes if a in "yx"]
    scale = {**{a: 1.0 for a in axes if a in "cz"}, **{a: float(pixel_size_nm) for a in spatial}} if pixel_size_nm else None
    units = {a: "nanometer" for a in spatial} if pixel_size_nm else None
    chunks = tuple(s if a == "c" else 1 for a, s in zip(axes[:-2], shape[:-2]))
    return axes, scale, units, (*chunks, *(min(chunk, s) for s in shape[-2:]))


def _as_dask(data: Any, chunks: tuple[int, ...]) -> da.Array:
    return (data if isinstance(data, da.Array) else da.from_array(data, chunks=chunks)).rechunk(chunks)


def write_ome_zarr(path: str | Path, data: Any, *, axes: str | None = None, chunk: int = 512,
                   pixel_size_nm: float | None = None,
                   label_images: dict[str, tuple[Any, dict[str, Any] | None]] | None = None,
                   channel_names: Sequence[str] | None = None, name: str | None = None) -> Path:
    """Write an array as OME-Zarr (NGFF 0.4, zarr format 2) with ome-zarr-py, atomically.

    NGFF 0.4 is what napari-ome-zarr, Fiji/MoBIE and older ome-zarr-py read. ``axes`` names the
    axes (default ``yx`` or ``zyx``; ``c`` for channels). The spatial scale is ``pixel_size_nm`` in
    nanometres (1 and no unit when unknown). Large images get a multiscale pyramid
    (:func:`pyramid_factors`). ``label_images`` (name → (array, its ``image-label`` metadata such
    as ``colors`` and ``properties``)) are written under the image's ``labels/`` group, where NGFF
    viewers look for an image's labels (:func:`_write_labels`: same pyramid, downsampled by
    nearest neighbour so they stay labels), in the same atomic folder.
    ``channel_names`` label the ``c`` axis (NGFF ``omero`` channels, shown by napari-ome-zarr);
    ``name`` is the multiscale's name (default: the file's stem).
    Lazy inputs are written chunk by chunk.
    """
    from ome_zarr.format import FormatV04
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image as ngff_write_image

    path = Path(path)
    axes, scale, units, chunks = _ngff_layout(data.shape, axes, pixel_size_nm, chunk)
    with atomic_path(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        ngff_write_image(_as_dask(data, chunks), group, scale_factors=pyramid_factors(data.shape), fmt=FormatV04(),
                         method=Methods.RESIZE, axes=axes, scale=scale, axes_units=units,
                         storage_options={"chunks": chunks}, name=name or file_stem(path))
        if channel_names is not None:
            group.attrs["omero"] = {"channels": [{"label": str(n), "active": True, "color": "FFFFFF",
                                                  "window": {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0}}
                                                 for n in channel_names]}
        for name, (array, metadata) in (label_images or {}).items():
            _write_labels(group, name, array, metadata, str(path))
    return path


def add_ome_zarr_labels(path: str | Path, name: str, labels: Any,
                        label_metadata: dict[str, Any] | None = None) -> Path:
    """Add a label image ``name`` to the OME-Zarr image at ``path``, under its ``labels/`` group
    (``path/labels/name``, listed in ``labels/.zattrs``) where napari-ome-zarr and other NGFF
    viewers find an image's labels, at the image's own scale and pyramid levels.

    The labels are built in a scratch store beside the image and moved into place whole, then
    listed; an existing label image of that name is never overwritten (ImageError, one line).
    """
    import os
    import shutil

    path = Path(path)
    group = _ngff_image_group(path)
    if (path / "labels" / name).exists():
        raise ImageError(f"{path}: already has labels/{name}; remove it or choose another name")
    scratch = path.with_name(f".{path.name}.labels-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        _write_labels(zarr.open_group(str(scratch), mode="w", zarr_format=2), name, labels, label_metadata,
                      str(path), like=group)
        (path / "labels").mkdir(exist_ok=True)
        os.replace(scratch / "labels" / name, path / "labels" / name)
        listing = zarr.open_group(str(path / "labels"), mode="a", zarr_format=2)
        listing.attrs["labels"] = [*listing.attrs.get("labels", []), name]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def _ngff_image_group(path: Path) -> Any:
    """The root group of the OME-Zarr image at ``path``; ImageError when it is not one."""
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several kinds for a folder that is not a group
        raise ImageError(f"{path}: not an OME-Zarr image ({type(exc).__name__})") from None
    if not ngff_multiscales(group.attrs):
        raise ImageError(f"{path}: not an OME-Zarr image (no multiscales); labels need an image to belong to")
    return group


def _write_labels(group: Any, name: str, labels: Any, metadata: dict[str, Any] | None, source: str,
                  like: Any = None) -> None:
    """ome-zarr-py's ``write_labels`` into ``group/labels/name`` with the axes, full-resolution
    scale and pyramid of the image ``like`` (default: the image in ``group``), so the labels lie
    exactly on it in any NGFF viewer, and ``source`` naming that image (``../../``), so a viewer
    opening the labels alone finds it; labels of another shape than the image are refused."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_labels

    image = like if like is not None else group
    multiscale = ngff_multiscales(image.attrs)[0]
    levels = [d["path"] for d in multiscale["datasets"]]
    full = image[levels[0]]
    if tuple(labels.shape) != tuple(full.shape):
        raise ImageError(f"{source}: labels {name!r} of shape {tuple(labels.shape)} do not match the image "
                         f"{tuple(full.shape)}")
    names = [a["name"] for a in multiscale["axes"]]
    units = {a["name"]: a["unit"] for a in multiscale["axes"] if a.get("unit")} or None
    first = next((t["scale"] for t in multiscale["datasets"][0]["coordinateTransformations"]
                  if t.get("type") == "scale"), [1.0] * len(names))
    factors = [round(full.shape[-1] / image[level].shape[-1]) for level in levels[1:]]
    chunks = tuple(int(c) for c in full.chunks)
    write_labels(_as_dask(labels, chunks), group, name=name, scaler=None, scale_factors=factors, fmt=FormatV04(),
                 axes="".join(names), scale=dict(zip(names, map(float, first))), axes_units=units,
                 storage_options={"chunks": chunks},
                 label_metadata={"source": {"image": "../../"}, **(metadata or {})})


def read_output(path: str | Path) -> Any:
    """A saved result array (TIFF in memory; OME-Zarr / zarr lazily) — without the checks that
    :func:`read_image` applies to micrographs, since results may have a channel axis."""
    return read_output_calibrated(path)[0]


def read_output_calibrated(path: str | Path) -> tuple[Any, Calibration]:
    """:func:`read_output` and the pixel size the file records (resolution tags or OME-Zarr scale)."""
    path = Path(path)
    if _is_zarr(path):
        return _open_zarr_calibrated(path)
    with tifffile.TiffFile(path) as tif:
        return tif.asarray(), tiff_calibration(tif)


def read_label_image(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """A saved label image and its NGFF ``image-label`` metadata (``{}`` for a TIFF).

    In an OME-Zarr these are the first labels its ``labels/`` group lists (what
    :func:`write_label_image` writes, and any NGFF image's labels); a stand-alone label image
    (``image-label`` at the root, how results were saved before they went under their image) is
    its root. The array is lazy for OME-Zarr, so a whole-slide result is read only where used.
    """
    path = Path(path)
    if not _is_zarr(path):
        return read_output(path), {}
    group = zarr.open(str(path), mode="r")
    if isinstance(group, zarr.Array) or "image-label" in group.attrs:
        return _open_zarr_calibrated(path)[0], dict(group.attrs.get("image-label") or {})
    if "labels" not in group:  # an image, not labels: reading its intensities as labels would be nonsense
        raise ImageError(f"{path}: an OME-Zarr image without a labels/ group; give a label image")
    names = list(group["labels"].attrs.get("labels") or [])
    if not names:
        raise ImageError(f"{path}: its labels/ group lists no label image")
    labels = group["labels"][names[0]]
    multiscales = ngff_multiscales(labels.attrs)
    if not multiscales:
        raise ImageError(f"{path}: labels/{names[0]} is not an NGFF label image (no multiscales)")
    return labels[multiscales[0]["datasets"][0]["path"]], dict(labels.attrs.get("image-label") or {})


def labelled_image(path: str | Path) -> Image | None:
    """The image an OME-Zarr label output was written on (:func:`write_label_image` keeps a copy
    of the input there), so results open over their micrograph even when its file has moved;
    None for a TIFF or a stand-alone label image, which hold no image."""
    path = Path(path)
    if not _is_zarr(path):
        return None
    group = zarr.open(str(path), mode="r")
    if isinstance(group, zarr.Array) or "image-label" in group.attrs or not ngff_multiscales(group.attrs):
        return None
    return read_image(path)


def file_calibration(path: str | Path) -> Calibration:
    """The pixel size an image or result file records, from its header or tags only (its pixels
    are not read): for a saved result, and for a layer another reader opened (napari's own TIFF
    reader keeps no calibration). Implausible sizes are dropped as :func:`read_image` drops them."""
    path = Path(path)
    suffix = path.suffix.lower()
    if _is_zarr(path):
        found = _open_zarr_calibrated(path)[1]  # lazy: metadata only
    elif suffix in TIFF_SUFFIXES:
        with tifffile.TiffFile(path) as tif:
            found = tiff_calibration(tif)
    elif suffix in MRC_SUFFIXES:
        found = mrc_calibration(path)
    elif suffix in RSCIIO_SUFFIXES:
        found = open_rsciio(path)[1]  # lazy: metadata only
    else:
        found = UNCALIBRATED
    return _plausible(found, path)


def _tiles(data: Any, tile: int) -> Iterator[np.ndarray]:
    """Row-major (tile, tile) blocks of each plane (planes in C order over every leading axis, so
    (C, Z, Y, X) probabilities too), zero-padded at the edges, as TIFF wants."""
    height, width = data.shape[-2:]
    for plane in np.ndindex(*data.shape[:-2]):
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                block = np.asarray(data[(*plane, slice(y, y + tile), slice(x, x + tile))])
                out = np.zeros((tile, tile), dtype=block.dtype)
                out[: block.shape[0], : block.shape[1]] = block
                yield out


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV atomically; columns default to the keys in first-seen order."""
    path = Path(path)
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return path


def find_images(inputs: Iterable[str | Path], suffixes: Iterable[str] | None = None) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted list of image paths (or, with
    ``suffixes``, of the files in folders that end in one of them: an analysis of other inputs)."""
    wanted = None if suffixes is None else {s.lower() for s in suffixes}
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if any(ch in str(item) for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(str(item)))
        elif path.is_dir() and not _is_zarr(path):
            found += sorted(p for p in path.iterdir() if (p.suffix.lower() in wanted and p.is_file() if wanted else
                                                          p.suffix.lower() in IMAGE_SUFFIXES or _is_zarr(p)))
        else:
            found.append(path)
    return list(dict.fromkeys(found))
