"""Microscope file formats and their calibration: pixel sizes in nm, and where each came from.

Electron micrographs come as MRC (cryo-EM), Gatan DM3/DM4, Velox EMD, TIA SER and SEM TIFFs
whose pixel size sits in a vendor tag. Each reader here returns the image array (lazily where the
format allows) and a :class:`Calibration`: the pixel size in nm, or None when the file records
none, with a short phrase naming its origin ("mrc header", "tiff ImageJ tag", …) so that a user
can tell a header value from a typed option when a result looks wrong.

The heavy readers (``mrcfile``, RosettaSciIO) are imported when a file of theirs is opened, so
importing this module, or ``nanoclass --help``, costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MRC_SUFFIXES = {".mrc", ".mrcs"}
RSCIIO_SUFFIXES = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".emd": "emd", ".ser": "tia"}
FORMAT_NAMES = {".dm3": "DM3", ".dm4": "DM4", ".emd": "EMD", ".ser": "TIA SER"}
IN_MEMORY_BYTES = 256 * 2**20  # files up to this size are read whole; larger ones are memory-mapped

# length units as files spell them → nm
_NM_PER_UNIT = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "nanometers": 1.0, "nanometres": 1.0,
    "µm": 1e3, "μm": 1e3, "um": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3,
    "micrometers": 1e3, "micrometres": 1e3,
    "å": 0.1, "angstrom": 0.1, "ångström": 0.1, "angstroms": 0.1, "a": 0.1,
    "pm": 1e-3, "picometer": 1e-3, "picometre": 1e-3,
    "mm": 1e6, "millimeter": 1e6, "millimetre": 1e6,
    "cm": 1e7, "centimeter": 1e7, "centimetre": 1e7,
    "m": 1e9, "meter": 1e9, "metre": 1e9,
}


@dataclass(frozen=True)
class Calibration:
    """A pixel size in nm (None: the file records none) and where it was found."""

    pixel_size_nm: float | None = None
    source: str = ""


UNCALIBRATED = Calibration()


def to_nm(value: Any, unit: Any) -> float | None:
    """``value`` in ``unit`` as nm; None for an unknown unit or a value that is not a positive
    length (files write 0 or 1 with no unit when they were never calibrated)."""
    factor = _NM_PER_UNIT.get(str(unit).strip().lower()) if unit is not None else None
    try:
        size = float(value) * factor if factor is not None else None
    except (TypeError, ValueError):
        return None
    if size is None or not math.isfinite(size) or size <= 0:
        return None
    return float(f"{size:.6g}")  # a header's 2.5 Å is 0.25 nm, not 0.25000000000000006


def calibration(value: Any, unit: Any, source: str) -> Calibration:
    """A Calibration from a value and its unit, or UNCALIBRATED when they are not a length."""
    size = to_nm(value, unit)
    return Calibration(size, source) if size is not None else UNCALIBRATED


# -- MRC ------------------------------------------------------------------------------------------


def open_mrc(path: Path) -> tuple[Any, Calibration]:
    """An MRC / MRCS file (cryo-EM images and stacks) and its header's voxel size (Å → nm).

    Small files are read whole; large ones are memory-mapped, so a big stack is read plane by
    plane. A voxel size of 0 means the writer never set one.
    """
    import mrcfile
    import numpy as np
    from mrcfile.utils import data_dtype_from_header, data_shape_from_header

    with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
        header = mrc.header
        if header is None:
            raise ValueError("no MRC header")
        dtype, shape = data_dtype_from_header(header), data_shape_from_header(header)
        offset = 1024 + int(header.nsymbt)
    if math.prod(shape) * dtype.itemsize <= IN_MEMORY_BYTES:
        data = mrcfile.read(path)
    else:
        data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    return data, mrc_calibration(path)


def mrc_calibration(path: Path) -> Calibration:
    """The voxel size an MRC header records (Å → nm), without reading the data."""
    import mrcfile

    with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
        return calibration(float(mrc.voxel_size.x), "Å", "mrc header")


# -- RosettaSciIO: DM3/DM4, EMD, SER ----------------------------------------------------------------


def open_rsciio(path: Path) -> tuple[Any, Calibration]:
    """A Gatan DM3/DM4, Velox (or NCEM) EMD or TIA SER file through RosettaSciIO, lazily: its first
    image signal (a file may also hold spectra) and that signal's axis calibration."""
    import importlib

    plugin = importlib.import_module(f"rsciio.{RSCIIO_SUFFIXES[path.suffix.lower()]}")
    signals = plugin.file_reader(str(path), lazy=True)
    images = [s for s in signals if len(_signal_axes(s)) >= 2]
    if not images:
        raise ValueError(f"holds no image (only {', '.join(_kind(s) for s in signals) or 'no signals'})")
    signal = images[0]
    y_axis, x_axis = _signal_axes(signal)[-2:]
    title = (signal.get("metadata", {}).get("General", {}) or {}).get("title") or ""
    source = f"{FORMAT_NAMES[path.suffix.lower()]} calibration" + (f" ({title})" if title else "")
    return signal["data"], calibration(x_axis.get("scale"), x_axis.get("units"), source)


def _signal_axes(signal: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The signal (not navigation) axes of a RosettaSciIO signal dict, in array order."""
    axes = sorted(signal.get("axes", []), key=lambda a: a.get("index_in_array", 0))
    return [a for a in axes if not a.get("navigate", False)]


def _kind(signal: Mapping[str, Any]) -> str:
    return f"{len(_signal_axes(signal))}-D signal"


# -- TIFF -----------------------------------------------------------------------------------------

_CM_PER_RESOLUTION_UNIT = {3: 1.0, 4: 0.1, 5: 1e-4}  # CENTIMETER, MILLIMETER, MICROMETER (INCH is DPI)


def tiff_calibration(tif: Any) -> Calibration:
    """The pixel size a TIFF records, in order of trust: OME-XML ``PhysicalSizeX``, the ImageJ
    unit with the resolution tag, FEI/Thermo ``PixelWidth``, Zeiss SEM ``Image Pixel Size``, then a
    resolution tag in a metric unit. Resolution in inches is a print setting, not a pixel size."""
    page = tif.pages.first
    for found in (_ome(tif), _imagej(tif, page), _fei(tif.fei_metadata), _zeiss(tif.sem_metadata)):
        if found.pixel_size_nm is not None:
            return found
    unit = int(page.tags.valueof(296) or 0)  # ResolutionUnit
    pixels_per_unit = _x_resolution(page)
    if unit in _CM_PER_RESOLUTION_UNIT and pixels_per_unit:
        return calibration(_CM_PER_RESOLUTION_UNIT[unit] / pixels_per_unit, "cm", "tiff resolution tag")
    return UNCALIBRATED


def _x_resolution(page: Any) -> float | None:
    value = page.tags.valueof(282)  # XResolution, pixels per resolution unit
    try:
        pixels = value[0] / value[1] if isinstance(value, tuple) else float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return pixels if pixels > 0 else None


def _ome(tif: Any) -> Calibration:
    if not tif.is_ome or not tif.ome_metadata:
        return UNCALIBRATED
    import re

    pixels = re.search(r"<Pixels\b[^>]*>", tif.ome_metadata)
    if pixels is None:
        return UNCALIBRATED
    attributes = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(0)))
    # OME's default unit is the micrometre
    return calibration(attributes.get("PhysicalSizeX"), attributes.get("PhysicalSizeXUnit", "µm"), "OME-TIFF metadata")


def _imagej(tif: Any, page: Any) -> Calibration:
    unit = (tif.imagej_metadata or {}).get("unit") if tif.is_imagej else None
    pixels = _x_resolution(page)
    if not unit or not pixels:
        return UNCALIBRATED
    unit = {"micron": "µm", "\\u00B5m": "µm"}.get(unit, unit)
    return calibration(1 / pixels, unit, "tiff ImageJ tag")


def _fei(metadata: Mapping[str, Any] | None) -> Calibration:
    """FEI / Thermo Fisher SEM (``[Scan] PixelWidth`` in m)."""
    for section in ("Scan", "EScan"):
        width = (metadata or {}).get(section, {}).get("PixelWidth")
        if width:
            return calibration(width, "m", "FEI/Thermo tiff tag")
    return UNCALIBRATED


def _zeiss(metadata: Mapping[str, Any] | None) -> Calibration:
    """Zeiss SEM (``ap_image_pixel_size``: name, value, unit)."""
    entry = (metadata or {}).get("ap_image_pixel_size")
    if isinstance(entry, tuple) and len(entry) >= 3:
        return calibration(entry[1], entry[2], "Zeiss SEM tiff tag")
    return UNCALIBRATED


# -- OME-Zarr -------------------------------------------------------------------------------------


def ngff_multiscales(attrs: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The ``multiscales`` of an OME-Zarr group's attributes (NGFF 0.4 or 0.5), or None."""
    return attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")


def zarr_calibration(multiscales: list[dict[str, Any]]) -> Calibration:
    """The x pixel size of an OME-Zarr's full-resolution level: its scale transform (and the
    multiscale's own, if any) in the x axis' unit; none without a unit."""
    first = multiscales[0]
    axes = first.get("axes") or []
    names = [a.get("name") if isinstance(a, Mapping) else a for a in axes]
    if "x" not in names:
        return UNCALIBRATED
    x = names.index("x")
    unit = axes[x].get("unit") if isinstance(axes[x], Mapping) else None
    size = 1.0
    for transforms in (first["datasets"][0].get("coordinateTransformations", []),
                       first.get("coordinateTransformations", [])):
        for transform in transforms:
            if transform.get("type") == "scale":
                size *= float(transform["scale"][x])
    return calibration(size, unit, "OME-Zarr scale") if unit else UNCALIBRATED
