"""The one way napari-nanoclass reads, checks and writes images.

Reading is lazy for TIFF and zarr / OME-Zarr, so images bigger than memory are fine: the engine
pulls tiles from them on demand. Every problem with an input becomes an :class:`ImageError`
naming the file and what is wrong (empty, unreadable, wrong dimensionality, colour, NaN).
Writing always goes through :func:`napari_nanoclass.atomic.atomic_path`.
"""

from __future__ import annotations

import csv
import glob
import itertools
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import zarr

from napari_nanoclass.core.atomic import atomic_path

TIFF_SUFFIXES = {".tif", ".tiff"}
PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
ZARR_SUFFIXES = {".zarr"}  # OME-Zarr folders end in .ome.zarr: suffix .zarr
IMAGE_SUFFIXES = TIFF_SUFFIXES | PLAIN_SUFFIXES | ZARR_SUFFIXES


class ImageError(ValueError):
    """An input image cannot be used; the message says which and why."""


@dataclass
class Image:
    """A validated greyscale image or stack: ``data`` is (Y, X) or (Z, Y, X), numpy or lazy."""

    data: Any
    name: str
    path: Path | None = None

    @property
    def is_stack(self) -> bool:
        return self.data.ndim == 3


def _is_zarr(path: Path) -> bool:
    return path.suffix in ZARR_SUFFIXES or (
        path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zarray", ".zgroup"))
    )


def _open_zarr(path: Path) -> Any:
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node
    multiscales = node.attrs.get("multiscales") or node.attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return node[multiscales[0]["datasets"][0]["path"]]
    arrays = list(node.array_keys())
    if len(arrays) == 1:
        return node[arrays[0]]
    raise ImageError(f"{path}: zarr group holds {len(arrays)} arrays and no OME multiscales; open one array")


def _open_tiff(path: Path) -> Any:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        declared = math.prod(series.shape) * series.dtype.itemsize
        small = declared < 256 * 2**20
        if tif.pages[0].compression == 1 and declared > tif.filehandle.size:
            # an uncompressed TIFF cannot hold fewer bytes than its pixels: truncated or a corrupt header
            raise ImageError(f"{path}: declares {' × '.join(map(str, series.shape))} pixels ({declared / 2**30:.2f} GiB) "
                             f"but the file holds only {tif.filehandle.size} bytes; it is truncated or corrupt")
    if small:
        return tifffile.imread(path, series=0)
    node = zarr.open(tifffile.imread(path, aszarr=True, series=0), mode="r")
    return node if isinstance(node, zarr.Array) else node["0"]  # pyramid: full resolution


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
    """Open an image file (TIFF, PNG/JPEG, zarr, OME-Zarr) as a validated greyscale Image."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes)")
    try:
        if _is_zarr(path):
            data = _open_zarr(path)
        elif path.suffix.lower() in TIFF_SUFFIXES:
            data = _open_tiff(path)
        else:
            data = _open_plain(path)
    except ImageError:
        raise
    except Exception as exc:  # every reader has its own exception types
        raise ImageError(f"{path}: cannot be read as an image ({type(exc).__name__}: {exc})") from exc
    return Image(as_greyscale(data, str(path)), name=file_stem(path), path=path)


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


def _chunks(data: Any) -> Any:
    chunks = getattr(data, "chunks", None)
    if isinstance(chunks, tuple) and all(isinstance(c, int) for c in chunks):
        # group small storage chunks into blocks of ~4 M pixels: few enough tasks for a small graph,
        # small enough that the float64 temporaries of mean/std stay ~32 MB per worker thread
        grow = max(1, int((2**22 / math.prod(chunks)) ** 0.5))
        return tuple(min(s, c * (grow if i >= data.ndim - 2 else 1)) for i, (s, c) in enumerate(zip(data.shape, chunks)))
    return "auto"


# -- writing ------------------------------------------------------------------------------------


def write_tiff(path: str | Path, data: Any, tile: int = 512) -> Path:
    """Write an array as a zlib-compressed TIFF, atomically; lazy arrays are streamed by tiles."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if isinstance(data, np.ndarray):
            tifffile.imwrite(tmp, data, compression="zlib")
        else:
            tifffile.imwrite(
                tmp, _tiles(data, tile), shape=data.shape, dtype=data.dtype, tile=(tile, tile),
                compression="zlib", bigtiff=True,
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


def write_image(path: str | Path, data: Any, *, axes: str | None = None, labels: bool = False) -> Path:
    """Write a result array as TIFF or OME-Zarr, chosen by the suffix of ``path`` (see :func:`output_path`)."""
    if Path(path).suffix == ".zarr":
        return write_ome_zarr(path, data, axes=axes, labels=labels)
    return write_tiff(path, data)


def write_ome_zarr(path: str | Path, data: Any, *, axes: str | None = None, labels: bool = False,
                   chunk: int = 512) -> Path:
    """Write an array as a single-scale OME-Zarr (NGFF 0.4, zarr format 2), atomically, block by block.

    NGFF 0.4 is what current viewers and ``ome-zarr-py`` read. ``axes`` names the axes (default
    ``yx`` or ``zyx``; ``c`` for channels); ``labels`` marks a label image (``image-label``) so
    viewers show it as labels. Lazy inputs are copied one chunk at a time, never whole.
    """
    path = Path(path)
    axes = axes or "zyx"[-data.ndim:]
    if len(axes) != data.ndim:
        raise ValueError(f"axes {axes!r} do not match an array of {data.ndim} dimensions")
    kinds = {"c": "channel", "t": "time"}
    with atomic_path(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        chunks = tuple(s if a == "c" else 1 for a, s in zip(axes[:-2], data.shape[:-2]))  # one plane per chunk
        array = group.create_array("0", shape=data.shape, dtype=data.dtype,
                                   chunks=(*chunks, *(min(chunk, s) for s in data.shape[-2:])))
        for block in _chunk_blocks(array.shape, array.chunks):  # each chunk written once, whole
            array[block] = np.asarray(data[block])
        group.attrs["multiscales"] = [{
            "version": "0.4", "name": file_stem(path),
            "axes": [{"name": a, "type": kinds.get(a, "space")} for a in axes],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * data.ndim}]}],
        }]
        if labels:
            group.attrs["image-label"] = {"version": "0.4"}
    return path


def _chunk_blocks(shape: Sequence[int], chunks: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """The index of every chunk of an array, as slices."""
    starts = itertools.product(*(range(0, s, c) for s, c in zip(shape, chunks)))
    return (tuple(slice(i, i + c) for i, c in zip(start, chunks)) for start in starts)


def read_output(path: str | Path) -> Any:
    """A saved result array (TIFF in memory; OME-Zarr / zarr lazily) — without the checks that
    :func:`read_image` applies to micrographs, since results may have a channel axis."""
    path = Path(path)
    return _open_zarr(path) if _is_zarr(path) else tifffile.imread(path)


def _tiles(data: Any, tile: int) -> Iterator[np.ndarray]:
    """Row-major (tile, tile) blocks of each plane, zero-padded at the edges, as TIFF wants."""
    height, width = data.shape[-2:]
    for z in range(data.shape[0] if data.ndim == 3 else 1):
        plane = (z,) if data.ndim == 3 else ()
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
