"""Per-liposome inputs: measurements, crops for the CNNs and handcrafted features for the SVM.

Everything here takes a z-scored image and an instance Labels array at the same pixel size and
returns one row per label, in increasing label order; :func:`paste_maps` goes the other way, one
map per object's crop back into image coordinates.

Crop modes (the study compared them; cropped and masked inputs won):

* ``"surroundings"`` — the object's bounding square plus ``margin`` pixels all round;
* ``"cropped"`` — the bounding square only;
* ``"masked"`` — the bounding square with everything outside the object set to the mean (0);
* ``"masked-local"`` — as ``"masked"``, less the mean of the free ice in a ring just outside the
  object. Ice thickness varies across a field, so the object's absolute grey level says little;
  relative to its own surroundings, a faint interior density (uncertain encapsulation) is no
  longer lost in the gradient. Masked crops alone cannot see those surroundings.
* ``"wall"`` — the object unrolled around its outline (:func:`wall_crops`): rows are distances
  from the outline in nm (:data:`WALL_STEP_NM` apart, from :data:`WALL_OUTSIDE_NM` outside
  inwards), columns are angles around the centre, each value the mean of the pixels there, less
  the local ice level, the crop scaled to unit RMS. The other modes resize each object's square
  to a fixed side, so a 300 nm vesicle is seen at about 10 nm per crop pixel and lamellae 5–12 nm
  apart merge; here the wall keeps its own resolution at every size, and each value averages
  its column's arc (1/32 of the circumference), which collects a faint wall's signal. The
  scaling keeps the wall's shape and drops its contrast, which changes with dose, defocus and ice
  thickness from image to image.

Square crops are resized to a fixed side and wall crops hold the wall only, so :func:`measure`
also gives each object's diameter, which the classifiers get as an extra input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from functools import lru_cache
from typing import Any, TypeVar

import edt
import numpy as np
from scipy import ndimage as ndi
from skimage.measure import regionprops
from skimage.transform import resize

from napari_nanoclass.core import shapes

CROP_MODES = ("surroundings", "cropped", "masked", "masked-local", "wall")
DEFAULT_CROP_MODE = "masked-local"  # what new classifiers train on (the shipped encapsulation one; lamellarity: wall)
# "masked-local": free ice between these distances from the object. In pixels, although the
# shipped classifiers work at 2.5 nm/px beside the standard detector and at 1 nm/px beside the fine
# one: the same ring in nm traded lamellarity for encapsulation there (docs/liposomes.md, "The ice
# ring in nm: tried, not kept")
BACKGROUND_RING_PX = (2, 8)
WALL_STEP_NM = 1.0  # "wall": distance between rows, fine enough for a bilayer's two leaflets 4 nm apart
WALL_OUTSIDE_NM = 6.0  # "wall": the first row lies this far outside the object's outline
WALL_MIN_RMS = 0.05  # "wall": crops are scaled to unit RMS, but a blank one is not amplified past 1/this
PROFILE_RINGS = 12  # radial intensity / edge density bins from the centre to 1.3 radii
HISTOGRAM_BINS = 32


def measure(labels: np.ndarray, pixel_size_nm: float) -> list[dict[str, Any]]:
    """Label, centroid, area, equivalent diameter and maximum width (Feret) of each object."""
    rows = []
    for region in regionprops(labels):
        rows.append({
            "label": int(region.label),
            "centroid_y": float(region.centroid[0]), "centroid_x": float(region.centroid[1]),
            "area_nm2": float(region.area * pixel_size_nm**2),
            "diameter_nm": float(region.equivalent_diameter_area * pixel_size_nm),
            "max_width_nm": float(shapes.feret_diameter_max(region.image) * pixel_size_nm),
        })
    return rows


def _square(region: Any, margin: int) -> tuple[int, int, int]:
    """Top, left and side of the square around an object's bounding box, plus ``margin``."""
    y0, x0, y1, x1 = region.bbox
    side = max(y1 - y0, x1 - x0) + 2 * margin
    return (y0 + y1 - side) // 2, (x0 + x1 - side) // 2, side


def _cut(image: np.ndarray, top: int, left: int, side: int, fill: float = 0.0,
         dtype: Any = np.float32) -> np.ndarray:
    """``image[top:top+side, left:left+side]`` with ``fill`` (default 0, the mean) outside the image."""
    out = np.full((side, side), fill, dtype)
    ys, xs = max(top, 0), max(left, 0)
    ye, xe = min(top + side, image.shape[0]), min(left + side, image.shape[1])
    if ye > ys and xe > xs:
        out[ys - top : ye - top, xs - left : xe - left] = image[ys:ye, xs:xe]
    return out


T = TypeVar("T")


def per_object(function: Callable[[Any], T], regions: Sequence[Any], threads: int = 1) -> list[T]:
    """``function(region)`` of every region, in order, in up to ``threads`` threads: each object's
    crop or features is independent of the others', and scipy's and scikit-image's filters, which
    most of the time goes to, release the GIL."""
    if threads <= 1 or len(regions) < 2:
        return [function(region) for region in regions]
    with ThreadPoolExecutor(min(threads, len(regions))) as pool:
        return list(pool.map(function, regions))


def crops(image: np.ndarray, labels: np.ndarray, mode: str = DEFAULT_CROP_MODE, size: int = 32,
          margin: int = 50, pixel_size_nm: float | None = None, threads: int = 1) -> np.ndarray:
    """(N, size, size) float32 crops of every object, in label order (``"wall"`` needs the
    image's ``pixel_size_nm``: its rows are in nm), cut in up to ``threads`` threads."""
    if mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}; choose one of {CROP_MODES}")
    if mode == "wall":
        if pixel_size_nm is None:
            raise ValueError("wall crops are sampled in nm: give the image's pixel_size_nm")
        return wall_crops(image, labels, pixel_size_nm, size, threads)

    def crop(region: Any) -> np.ndarray:
        top, left, side = _crop_square(region, mode, margin)
        cut = _cut(image, top, left, side)
        if mode == "masked-local":
            cut -= _local_background(image, labels, region)
        if mode.startswith("masked"):
            cut *= ndi.binary_dilation(_label_window(labels, top, left, side) == region.label, iterations=1)
        return resize(cut, (size, size), order=1, anti_aliasing=side > size, preserve_range=True)

    return np.asarray(per_object(crop, regionprops(labels), threads), np.float32).reshape(-1, size, size)


def wall_crops(image: np.ndarray, labels: np.ndarray, pixel_size_nm: float, size: int = 32,
               threads: int = 1) -> np.ndarray:
    """(N, size, size) float32: every object unrolled around its outline, in label order.

    Row i holds the pixels :data:`WALL_OUTSIDE_NM` − i·:data:`WALL_STEP_NM` nm from the outline
    (positive outside; the distance to the nearest outline point, so a wall parallel to an
    elliptical or irregular outline stays on one row), column j those at angles around 2πj/size
    from the centroid; each value is their mean, less the object's local ice level (0, the ice
    level, where there are none: past the centre of a small vesicle, or outside where only other
    objects or the image's edge lie, neither of them this object's surroundings). Each crop is
    then scaled to unit RMS (by at most 1/:data:`WALL_MIN_RMS`, so a blank one stays blank). Cut in
    up to ``threads`` threads.
    """
    out = per_object(lambda region: _unrolled(image, labels, region, pixel_size_nm, size), regionprops(labels),
                     threads)
    return np.asarray(out, np.float32).reshape(-1, size, size)


def _unrolled(image: np.ndarray, labels: np.ndarray, region: Any, pixel_size_nm: float, size: int) -> np.ndarray:
    """One object's wall crop (:func:`wall_crops`), computed in a window around it. Pixels coarser
    than half a row are first interpolated finer, so that every row is filled at every angle."""
    top, left, side = _wall_square(region, pixel_size_nm)
    window = _cut(image, top, left, side)
    around = _label_window(labels, top, left, side)
    own = around == region.label
    ice = (around == 0) | own  # not beyond the image, not a neighbour
    level = _local_background(image, labels, region)
    window = np.where(ice, window, level)  # so that interpolating finer smears no neighbour into the ice
    finer = max(1, int(np.ceil(2 * pixel_size_nm / WALL_STEP_NM)))
    if finer > 1:
        window = ndi.zoom(window, finer, order=1, grid_mode=True, mode="nearest")
    own, ice, beyond = (_finer_mask(mask, finer) for mask in (own, ice, around < 0))
    centre = (np.array(region.centroid) - (top, left) + 0.5) * finer - 0.5
    pixels, bins = _wall_bins(own, beyond, centre, pixel_size_nm / finer, size)
    free = ice.ravel()[pixels]
    index, values = bins[free], window.ravel()[pixels[free]]
    counts = np.bincount(index, minlength=size * size)
    sums = np.bincount(index, values, minlength=size * size)
    crop = np.where(counts > 0, sums / np.maximum(counts, 1) - level, 0.0)
    crop = crop.reshape(size, size)
    return crop / max(float(np.sqrt(np.mean(crop**2))), WALL_MIN_RMS)


def _finer_mask(mask: np.ndarray, finer: int) -> np.ndarray:
    """A boolean mask interpolated ``finer``× finer as its window is (linearly), where at least half
    set. A uniform one (no neighbour or image edge near most objects) stays uniform: the same
    result without the interpolation, which is a good part of a wall crop's cost."""
    if finer == 1:
        return mask
    if mask.all() or not mask.any():
        return np.full((mask.shape[0] * finer, mask.shape[1] * finer), bool(mask.flat[0]))
    # each finer pixel interpolates the 2 × 2 coarse pixels around its centre, with weights fixed by
    # its place (ky, kx) in its coarse pixel: which of the 16 patterns of those four is set decides
    # it, read from a table instead of interpolated pixel by pixel
    height, width = mask.shape
    padded = np.pad(mask, 1, mode="edge").astype(np.uint8)  # beyond the edge: the nearest pixel

    def shifted(dy: int, dx: int) -> np.ndarray:  # each coarse pixel's neighbour dy − 1, dx − 1 away
        return padded[dy : dy + height, dx : dx + width]

    patterns = {(dy, dx): shifted(dy, dx) + 2 * shifted(dy, dx + 1) + 4 * shifted(dy + 1, dx)
                + 8 * shifted(dy + 1, dx + 1) for dy in (0, 1) for dx in (0, 1)}
    table, above = _finer_table(finer)
    out = np.empty((height * finer, width * finer), bool)
    for ky in range(finer):
        for kx in range(finer):
            out[ky::finer, kx::finer] = table[ky, kx][patterns[above[ky], above[kx]]]
    return out


@lru_cache(maxsize=None)
def _finer_table(finer: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """(table, above) for :func:`_finer_mask`: ``table[ky, kx, pattern]`` says whether the linear
    interpolation of a 2 × 2 pattern (bits: top left, top right, bottom left, bottom right) at place
    (ky, kx) of a coarse pixel reaches ½, and ``above[k]`` whether place k lies at or past the
    coarse pixel's centre (1: its 2 × 2 starts at that pixel; 0: at the one before).

    As ``ndi.zoom(…, grid_mode=True)``: place k's centre lies (k + ½) / finer − ½ from the coarse
    pixel's. The sums are exact fractions, multiples of 1 / (2 · finer)², and none is ½ itself
    (checked in the tests), so scipy's float rounding cannot decide one differently."""
    offsets = [Fraction(2 * k + 1, 2 * finer) - Fraction(1, 2) for k in range(finer)]
    above = tuple(int(offset >= 0) for offset in offsets)
    weights = [(-offset, 1 + offset) if offset < 0 else (1 - offset, offset) for offset in offsets]
    table = np.zeros((finer, finer, 16), bool)
    for ky, (top, bottom) in enumerate(weights):
        for kx, (left, right) in enumerate(weights):
            corners = (top * left, top * right, bottom * left, bottom * right)
            for pattern in range(16):
                table[ky, kx, pattern] = sum(w for bit, w in enumerate(corners) if pattern >> bit & 1) >= Fraction(1, 2)
    return table, above


def _wall_bins(own: np.ndarray, beyond: np.ndarray, centre: np.ndarray, pixel_size_nm: float,
               size: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, bins): the flat indices of a window's pixels that fall in an object's wall crop, and
    the crop bin (row · size + column) of each. Rows go by the signed distance to the object's
    outline (Euclidean, in nm), columns by the angle around ``centre``; angles are computed for
    those pixels only, as most of a large vesicle's window lies deeper than the crop reaches. The
    image's edge (``beyond``: the window's pixels outside the image) is not an outline: depths
    inside run to the outline the image shows."""
    inside = distance_to_background(own | beyond) - 0.5
    depth = np.where(own, inside, 0.5 - distance_to_background(~own))
    row = np.rint((WALL_OUTSIDE_NM + depth * pixel_size_nm) / WALL_STEP_NM).astype(np.int64).ravel()
    pixels = np.flatnonzero((row >= 0) & (row < size))
    yy, xx = np.divmod(pixels, own.shape[1])
    angle = np.arctan2(yy - centre[0], xx - centre[1])
    column = np.rint(angle * size / (2 * np.pi)).astype(np.int64) % size
    return pixels, row[pixels] * size + column


def distance_to_background(mask: np.ndarray) -> np.ndarray:
    """``ndi.distance_transform_edt(mask)``, the same values bit for bit (the square root, in
    float64, of the same integer squared distances, which float32 holds exactly up to 4096 px),
    from the ``edt`` package's exact transform: faster than scipy's, and the wall crops' costliest
    step. scipy where nothing is background, a case ``edt`` treats differently."""
    if np.all(mask):
        return ndi.distance_transform_edt(mask)
    return np.sqrt(squared_distance_to_background(mask).astype(np.float64))


def squared_distance_to_background(mask: np.ndarray, edge_is_background: bool = False) -> np.ndarray:
    """Squared Euclidean distance (whole numbers of pixels², as float32) from every pixel of
    ``mask`` to the nearest pixel outside it (``edt``'s exact transform); 0 outside ``mask``, inf
    where nothing is background. Beyond the array's edge counts as background only with
    ``edge_is_background``."""
    return edt.edtsq(np.ascontiguousarray(mask, bool), black_border=edge_is_background, parallel=1)


def _wall_square(region: Any, pixel_size_nm: float) -> tuple[int, int, int]:
    """Top, left and side of the window a wall crop is sampled in: the object and its outside rows."""
    return _square(region, int(np.ceil(WALL_OUTSIDE_NM / pixel_size_nm)) + 2)


def _crop_square(region: Any, mode: str, margin: int) -> tuple[int, int, int]:
    """Top, left and side of the square :func:`crops` cuts around an object in ``mode``."""
    return _square(region, margin if mode == "surroundings" else 2)


def paste_maps(maps: np.ndarray, labels: np.ndarray, mode: str = DEFAULT_CROP_MODE, margin: int = 50,
               pixel_size_nm: float | None = None) -> np.ndarray:
    """Per-object (N, s, s) maps over the crops :func:`crops` cut (same ``mode``, ``margin`` and
    ``pixel_size_nm``), in label order, put back where each crop came from: a (Y, X) float32 image map.

    Each map is resized to its crop's square (or, for ``"wall"`` crops, each pixel takes the value
    at its own distance from the outline and angle) and kept on its own object's pixels only,
    scaled to 0–1 there, and is 0 elsewhere. Own pixels only, because crop squares of neighbours
    overlap and a pixel should speak for the object it belongs to; scaled per object, because the
    question is where in each object the evidence lies, and one scale for all would leave small
    objects dark.
    """
    if mode == "wall" and pixel_size_nm is None:
        raise ValueError("wall maps are placed in nm: give the image's pixel_size_nm")
    out = np.zeros(labels.shape, np.float32)
    for values, region in zip(maps, regionprops(labels)):
        values = np.asarray(values, np.float32)
        if mode == "wall":
            top, left, side = _wall_square(region, pixel_size_nm)
            window = _label_window(labels, top, left, side)
            own = window == region.label
            placed = _rolled_back(values, own, window < 0, np.array(region.centroid) - (top, left), pixel_size_nm) * own
        else:
            top, left, side = _crop_square(region, mode, margin)
            own = _label_window(labels, top, left, side) == region.label
            placed = resize(values, (side, side), order=1, preserve_range=True) * own
        top_value = float(placed.max())
        if top_value > 0:
            placed /= top_value
        ys, xs = max(top, 0), max(left, 0)
        ye, xe = min(top + side, out.shape[0]), min(left + side, out.shape[1])
        out[ys:ye, xs:xe] = np.maximum(out[ys:ye, xs:xe], placed[ys - top : ye - top, xs - left : xe - left])
    return out


def _rolled_back(values: np.ndarray, own: np.ndarray, beyond: np.ndarray, centre: np.ndarray,
                 pixel_size_nm: float) -> np.ndarray:
    """A (size, size) map over a wall crop (:func:`wall_crops`) as a window: each pixel gets the
    map's value at its own row and column (its distance from the outline and its angle)."""
    pixels, bins = _wall_bins(own, beyond, centre, pixel_size_nm, values.shape[1])
    out = np.zeros(own.size, np.float32)
    out[pixels] = values.ravel()[bins]
    return out.reshape(own.shape)


def _local_background(image: np.ndarray, labels: np.ndarray, region: Any) -> float:
    """Mean grey level of the pixels :data:`BACKGROUND_RING_PX` from an object that belong to no
    object (0, the image mean, if there are none: an object buried among its neighbours)."""
    near, far = BACKGROUND_RING_PX
    top, left, side = _square(region, far + 1)
    window = _label_window(labels, top, left, side)
    own = window == region.label
    # the pixels ``near`` < d ≤ ``far`` 4-neighbour steps from the object (what ``far`` and ``near``
    # iterated dilations leave between them), from one city-block distance transform
    steps = ndi.distance_transform_cdt(~own, metric="taxicab")
    ring = (steps > near) & (steps <= far)
    ring &= window == 0  # outside the image (−1) is not ice
    return float(_cut(image, top, left, side)[ring].mean()) if ring.any() else 0.0


def _label_window(labels: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """The labels of one square, −1 outside the image: cutting first keeps each object's mask
    tests to its own window instead of the whole image (which made crops O(objects × pixels))."""
    return _cut(labels, top, left, side, fill=-1, dtype=np.int64)


def log_size(diameter_nm: np.ndarray) -> np.ndarray:
    """The size input of the CNNs: log(diameter / 100 nm), about −1.2 … 1.1 for 30–300 nm."""
    return np.log(np.maximum(np.asarray(diameter_nm, np.float32), 1.0) / 100.0).astype(np.float32)


# -- handcrafted features (the SVM baseline) ---------------------------------------------------------


FEATURE_NAMES = (
    ["area_nm2", "circularity", "nu20", "nu02", "nu30", "nu03", "diameter_nm", "max_width_nm", "membrane_snr"]
    + [f"radial_{i}" for i in range(PROFILE_RINGS)]
    + [f"edges_{i}" for i in range(PROFILE_RINGS)]
    + [f"hist_{i}" for i in range(HISTOGRAM_BINS)]
)


def features(image: np.ndarray, labels: np.ndarray, pixel_size_nm: float, threads: int = 1) -> np.ndarray:
    """(N, len(FEATURE_NAMES)) features per object: the study's (area, circularity, central image
    moments μ20 μ02 μ30 μ03, edge density profile, 32-bin histogram) plus a radial intensity
    profile, membrane signal-to-noise, diameter and maximum width in nm; measured in up to
    ``threads`` threads."""
    edges = np.hypot(ndi.sobel(image, 0), ndi.sobel(image, 1))
    edge_threshold = np.percentile(edges, 90)

    def measured(region: Any) -> list[float]:
        top, left, side = _square(region, margin=int(0.3 * max(region.bbox[2] - region.bbox[0], 4)) + 2)
        crop = _cut(image, top, left, side)
        crop_edges = _cut(edges, top, left, side) > edge_threshold
        cy, cx = region.centroid[0] - top, region.centroid[1] - left
        radius = max(region.equivalent_diameter_area / 2, 1.0)
        yy, xx = np.mgrid[:side, :side]
        ring = np.minimum((np.hypot(yy - cy, xx - cx) / radius / 1.3 * PROFILE_RINGS).astype(int), PROFILE_RINGS)
        radial = _ring_means(crop, ring)
        edge_density = _ring_means(crop_edges.astype(np.float32), ring)
        inside = region.image_intensity[region.image]  # its own pixels, in the image's raster order
        histogram = np.histogram(np.clip(inside, -4, 4), bins=HISTOGRAM_BINS, range=(-4, 4))[0] / max(inside.size, 1)
        # the membrane is the darkest ring near radius 1; noise from the ring just outside
        rim = radial[int(0.75 * PROFILE_RINGS / 1.3) : int(1.05 * PROFILE_RINGS / 1.3) + 1].min()
        outside = crop[ring == PROFILE_RINGS - 1]
        snr = (outside.mean() - rim) / (outside.std() + 1e-6) if outside.size else 0.0
        circularity = 4 * np.pi * region.area / max(region.perimeter, 1.0) ** 2
        mu = region.moments_normalized
        return [region.area * pixel_size_nm**2, circularity, mu[2, 0], mu[0, 2], mu[3, 0], mu[0, 3],
                region.equivalent_diameter_area * pixel_size_nm,
                shapes.feret_diameter_max(region.image) * pixel_size_nm,
                snr, *radial, *edge_density, *histogram]

    rows = per_object(measured, regionprops(labels, intensity_image=image), threads)
    return np.asarray(rows, np.float64).reshape(-1, len(FEATURE_NAMES))


def _ring_means(values: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Mean of ``values`` in each radial ring index 0 … PROFILE_RINGS − 1 (0 where empty)."""
    sums = np.bincount(ring.ravel(), values.ravel(), minlength=PROFILE_RINGS + 1)[:PROFILE_RINGS]
    counts = np.bincount(ring.ravel(), minlength=PROFILE_RINGS + 1)[:PROFILE_RINGS]
    return sums / np.maximum(counts, 1)
