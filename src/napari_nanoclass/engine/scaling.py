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

import functools
import logging
from collections.abc import Sequence
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
    planes = np.asarray(data, np.float32).reshape(-1, *data.shape[-2:])
    out = np.stack([rescaled(p, factor) for p in planes])
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


def rescaled(image: np.ndarray, factor: float) -> np.ndarray:
    """``skimage.transform.rescale(image, factor, anti_aliasing=factor < 1, preserve_range=True)``
    of a 2-D image. Doubling a float32 image, which is how a coarse image is shown to a detector
    trained at half its pixel size, gives the same values computed in torch (:func:`_doubled`) at
    a fraction of the time of scipy's single-threaded zoom."""
    if factor == 2 and _doubles_exactly() and _doubling_applies(image):
        return _doubled(image)
    from skimage.transform import rescale

    return rescale(image, factor, anti_aliasing=factor < 1, preserve_range=True)


def _doubling_applies(image: np.ndarray) -> bool:
    """Whether :func:`_doubled` gives ``rescale``'s values for ``image``: a finite float32 plane of at
    least two pixels each way (skimage clips to the input's range, which NaN or inf would change)."""
    return (image.ndim == 2 and image.dtype == np.float32 and min(image.shape) >= 2
            and bool(np.isfinite(image).all()))


# Each output pixel of a 2× bilinear zoom (scipy's ``zoom(order=1, grid_mode=True, mode="mirror")``,
# which ``rescale`` calls) lies a quarter pixel from its nearest input pixel: along each axis, output
# pixel 2k takes input k - 1 with weight 1/4 and k with 3/4, output 2k + 1 takes k with 3/4 and k + 1
# with 1/4, as (offset into the input padded by one mirrored pixel, weight), in scipy's order
_PHASES = (((0, 0.25), (1, 0.75)), ((1, 0.75), (2, 0.25)))


def _doubled(image: np.ndarray) -> np.ndarray:
    """``image`` (finite float32, each side ≥ 2) zoomed 2× as :func:`rescaled` would, bit for bit.

    scipy sums, in double precision, each of the four neighbours times its row weight times its
    column weight, rows outer and columns inner, and rounds the sum to float32. Every such product
    of a float32 value and a weight of 1/16, 3/16 or 9/16 is exact in double precision, so the
    same four products summed in the same order give the same result (:func:`_doubled_band`), in
    bands of about ``DOUBLING_PIXELS`` input pixels: the double-precision sums of a whole large
    image would take several times its memory. Before the first row or column scipy mirrors the
    coordinate, which sums the two neighbours the other way round; the border rows and columns are
    summed as scipy sums them (:func:`_doubled_lines`)."""
    import torch
    from torch.nn import functional as F

    height, width = image.shape
    source = torch.from_numpy(image)
    padded = F.pad(source[None, None], (1, 1, 1, 1), mode="reflect")[0, 0]
    out = np.empty((2 * height, 2 * width), np.float32)
    band_rows = max(1, DOUBLING_PIXELS // width)
    for top in range(0, height, band_rows):
        rows = min(band_rows, height - top)
        out[2 * top:2 * (top + rows)] = _doubled_band(padded[top:top + rows + 2].double())
    edge_rows, edge_cols = [0, 2 * height - 1], [0, 2 * width - 1]
    out[edge_rows] = _doubled_lines(source, edge_rows, range(2 * width))
    out[:, edge_cols] = _doubled_lines(source, range(2 * height), edge_cols)
    return out


def _doubled_band(band: Any) -> np.ndarray:
    """The 2× zoom, as float32, of the rows of an image padded by one mirrored pixel that ``band``
    (float64, with one padded row above and below) holds, each output phase over shifted views."""
    import torch

    rows, width = band.shape[0] - 2, band.shape[1] - 2
    zoomed = torch.empty(2 * rows, 2 * width, dtype=torch.float64)
    for row_phase, row_taps in enumerate(_PHASES):
        for col_phase, col_taps in enumerate(_PHASES):
            total = None
            for row, row_weight in row_taps:
                for col, col_weight in col_taps:
                    term = band[row:row + rows, col:col + width] * (row_weight * col_weight)
                    total = term if total is None else total.add_(term)
            zoomed[row_phase::2, col_phase::2] = total
    return zoomed.to(torch.float32).numpy()


DOUBLING_PIXELS = 2**19  # input pixels :func:`_doubled` sums at once: a 512² field in one band


def _doubled_lines(source: Any, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
    """The 2× zoom of ``source`` (a float32 tensor) at output ``rows`` × ``cols``, each pixel's four
    products summed in double precision in scipy's order (:func:`_neighbours`), as float32."""
    (r0, r1, wr0, wr1), (c0, c1, wc0, wc1) = _neighbours(rows, source.shape[0]), _neighbours(cols, source.shape[1])
    total = None
    for r, wr in ((r0, wr0), (r1, wr1)):
        for c, wc in ((c0, wc0), (c1, wc1)):
            term = source[r[:, None], c[None, :]].double() * (wr[:, None] * wc[None, :])
            total = term if total is None else total.add_(term)
    return total.to(source.dtype).numpy()


def _neighbours(outputs: Sequence[int], n: int) -> tuple[Any, Any, Any, Any]:
    """For output positions ``outputs`` of a 2× zoom of an axis of ``n`` pixels: their two input
    neighbours and weights in the order scipy's ``mirror`` mode sums them. Before the first pixel
    it mirrors the coordinate (neighbours 0 then 1); past the last it mirrors the index of the
    neighbour that falls outside (n - 1, then n - 2)."""
    import torch

    x = (torch.as_tensor(list(outputs), dtype=torch.float64) + 0.5) / 2 - 0.5
    x = torch.where(x < 0, -x, x)
    first = torch.floor(x).long()
    second = torch.where(first + 1 > n - 1, 2 * (n - 1) - (first + 1), first + 1)
    second_weight = x - first
    return first, second, 1 - second_weight, second_weight


@functools.lru_cache(maxsize=1)
def _doubles_exactly() -> bool:
    """Whether :func:`_doubled` matches this scikit-image's ``rescale`` on :func:`_order_probe` and
    on widely spread random values (another version may zoom otherwise); if not, :func:`rescaled`
    calls ``rescale``."""
    from skimage.transform import rescale

    rng = np.random.default_rng(0)
    spread = (rng.normal(size=(7, 6)) * 10.0 ** rng.uniform(-20, 20, (7, 6))).astype(np.float32)
    for probe in (_order_probe(), spread):
        expected = rescale(probe, 2, anti_aliasing=False, preserve_range=True)
        if expected.dtype != np.float32 or not np.array_equal(expected, _doubled(probe)):
            return False
    return True


def _order_probe() -> np.ndarray:
    """An image whose 2× zoom tells the order of the four sums at each of its edges: near each, a
    huge value B and -3B, whose products with the weights cancel, and 16, whose product (1 or 3) is
    lost beside B's if added before the two cancel and kept if added after."""
    big = np.float32(2.0**70)
    probe = np.zeros((8, 8), np.float32)
    # (where B, -3B and 16 go) for the top, bottom, left and right edges
    for b, minus_3b, sixteen in (((0, 2), (0, 3), (1, 2)), ((7, 4), (7, 5), (6, 4)),
                                 ((2, 0), (3, 0), (3, 1)), ((4, 7), (5, 7), (5, 6))):
        probe[b], probe[minus_3b], probe[sixteen] = big, -3 * big, 16
    return probe
