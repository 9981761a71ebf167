"""Pixel sizes: which one an analysis uses, and images brought to the scale a model was trained at.

A network trained at 4.6 nm/px sees a membrane as a line a few pixels thick; the same section
scanned at 2 nm/px shows it twice as thick, and the network's idea of "membrane" no longer fits.
So when both the image's pixel size and the model's are known and differ by more than
:data:`RESCALE_TOLERANCE`, the image is resampled to the model's scale and the results are
brought back to the input's size; when one of them is unknown the image is analysed as it is,
with a warning saying why. Messages go to the ``napari_nanoclass`` logger, which the command
line prints (``nanoclass x: …``) and a Python user sees as ordinary log records.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger("napari_nanoclass")

RESCALE_TOLERANCE = 0.1  # relative difference of pixel sizes under which an image is left alone
AGREE = 0.01  # an option and a file's pixel size within this (relative) are the same value
OPTION_SOURCE = "option --pixel-size"


def chosen_pixel_size(name: str, option_nm: float | None, file_nm: float | None,
                      file_source: str = "") -> tuple[float | None, str]:
    """The pixel size to use for input ``name`` and where it came from: an explicit option wins
    (with a warning when the file says otherwise, since one of the two is wrong), else the file's;
    ``(None, "")`` when there is neither."""
    if option_nm is not None:
        if file_nm is not None and abs(file_nm - option_nm) > AGREE * option_nm:
            log.warning("%s: --pixel-size %g nm/px overrides the file's %g nm/px (%s)", name, option_nm, file_nm,
                        file_source or "file")
        return float(option_nm), OPTION_SOURCE
    if file_nm is not None:
        return float(file_nm), file_source
    return None, ""


def model_scale_factor(name: str, image_nm: float | None, model_nm: float | None, model: str) -> float:
    """By how much to rescale input ``name`` so that its pixels are the size ``model`` was trained
    at: 1.0 when they agree within RESCALE_TOLERANCE, or when either is unknown (then a warning
    or a note says the image is analysed at its own pixels)."""
    if model_nm is None:
        log.info("%s: model %s records no pixel size; the image is analysed at its own pixels", name, model)
        return 1.0
    if image_nm is None:
        log.warning("%s: no pixel size in the file, so it cannot be brought to the %g nm/px model %s was trained "
                    "at; analysed at its own pixels (give --pixel-size NM to rescale it)", name, model_nm, model)
        return 1.0
    factor = image_nm / model_nm
    if abs(factor - 1) <= RESCALE_TOLERANCE:
        return 1.0
    log.info("%s: rescaled from %g to %g nm/px, the pixel size of model %s", name, image_nm, model_nm, model)
    return factor


def scale_note(image_nm: float | None, model_nm: float | None, model: str) -> str:
    """One line saying, before a run, at which scale ``model`` will see an image of ``image_nm``
    (the decision :func:`model_scale_factor` takes), so a wrong or missing pixel size is seen
    before the results are misread."""
    if model_nm is None:
        size = f"{image_nm:g} nm/px" if image_nm else "unknown"
        return f"pixel size {size}; {model} records none, so the image is analysed at its own pixels"
    if image_nm is None:
        return (f"⚠ pixel size unknown: {model} was trained at {model_nm:g} nm/px and the image is analysed at "
                "its own pixels; give the pixel size to rescale it")
    factor = image_nm / model_nm
    if abs(factor - 1) <= RESCALE_TOLERANCE:
        return f"pixel size {image_nm:g} nm/px, as {model} was trained at ({model_nm:g} nm/px)"
    return (f"pixel size {image_nm:g} nm/px; {model} was trained at {model_nm:g} nm/px, so the image is resampled "
            f"×{factor:.2g} to the model's scale and the results brought back to its size")


def rescaled_planes(data: Any, factor: float) -> np.ndarray:
    """Every (Y, X) plane of ``data`` resampled by ``factor`` (anti-aliased when shrinking), float32."""
    from skimage.transform import rescale

    planes = np.asarray(data, np.float32).reshape(-1, *data.shape[-2:])
    out = np.stack([rescale(p, factor, anti_aliasing=factor < 1, preserve_range=True) for p in planes])
    return out.reshape(*data.shape[:-2], *out.shape[-2:]).astype(np.float32)


def resized_planes(data: Any, shape: tuple[int, int], order: int) -> np.ndarray:
    """Every (Y, X) plane of ``data`` resized to ``shape`` (``order`` 0 for labels, 1 for maps),
    keeping its type: results made at a model's scale brought back to the input's size."""
    from skimage.transform import resize

    data = np.asarray(data)
    if tuple(data.shape[-2:]) == tuple(shape):
        return data
    planes = data.reshape(-1, *data.shape[-2:])
    out = np.stack([resize(p, shape, order=order, preserve_range=True, anti_aliasing=False) for p in planes])
    return out.reshape(*data.shape[:-2], *shape).astype(data.dtype)
