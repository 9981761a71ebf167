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

Crops are resized to a fixed side, so :func:`measure` also gives each object's diameter, which
the classifiers get as an extra input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import regionprops
from skimage.transform import resize

CROP_MODES = ("surroundings", "cropped", "masked", "masked-local")
DEFAULT_CROP_MODE = "masked-local"  # what new classifiers train on (the shipped ones included)
BACKGROUND_RING_PX = (2, 8)  # "masked-local": free ice between these distances from the object
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
            "max_width_nm": float(region.feret_diameter_max * pixel_size_nm),
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


def crops(image: np.ndarray, labels: np.ndarray, mode: str = DEFAULT_CROP_MODE, size: int = 32,
          margin: int = 50) -> np.ndarray:
    """(N, size, size) float32 crops of every object, in label order."""
    if mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}; choose one of {CROP_MODES}")
    out = []
    for region in regionprops(labels):
        top, left, side = _crop_square(region, mode, margin)
        crop = _cut(image, top, left, side)
        if mode == "masked-local":
            crop -= _local_background(image, labels, region)
        if mode.startswith("masked"):
            crop *= ndi.binary_dilation(_label_window(labels, top, left, side) == region.label, iterations=1)
        out.append(resize(crop, (size, size), order=1, anti_aliasing=side > size, preserve_range=True))
    return np.asarray(out, np.float32).reshape(-1, size, size)


def _crop_square(region: Any, mode: str, margin: int) -> tuple[int, int, int]:
    """Top, left and side of the square :func:`crops` cuts around an object in ``mode``."""
    return _square(region, margin if mode == "surroundings" else 2)


def paste_maps(maps: np.ndarray, labels: np.ndarray, mode: str = DEFAULT_CROP_MODE, margin: int = 50) -> np.ndarray:
    """Per-object (N, s, s) maps over the crops :func:`crops` cut (same ``mode`` and ``margin``), in
    label order, put back where each crop came from: a (Y, X) float32 image map.

    Each map is resized to its crop's square and kept on its own object's pixels only, scaled to
    0–1 there, and is 0 elsewhere. Own pixels only, because crop squares of neighbours overlap and
    a pixel should speak for the object it belongs to; scaled per object, because the question is
    where in each object the evidence lies, and one scale for all would leave small objects dark.
    """
    out = np.zeros(labels.shape, np.float32)
    for values, region in zip(maps, regionprops(labels)):
        top, left, side = _crop_square(region, mode, margin)
        own = _label_window(labels, top, left, side) == region.label
        placed = resize(np.asarray(values, np.float32), (side, side), order=1, preserve_range=True) * own
        top_value = float(placed.max())
        if top_value > 0:
            placed /= top_value
        ys, xs = max(top, 0), max(left, 0)
        ye, xe = min(top + side, out.shape[0]), min(left + side, out.shape[1])
        out[ys:ye, xs:xe] = np.maximum(out[ys:ye, xs:xe], placed[ys - top : ye - top, xs - left : xe - left])
    return out


def _local_background(image: np.ndarray, labels: np.ndarray, region: Any) -> float:
    """Mean grey level of the pixels :data:`BACKGROUND_RING_PX` from an object that belong to no
    object (0, the image mean, if there are none: an object buried among its neighbours)."""
    near, far = BACKGROUND_RING_PX
    top, left, side = _square(region, far + 1)
    window = _label_window(labels, top, left, side)
    own = window == region.label
    ring = ndi.binary_dilation(own, iterations=far) & ~ndi.binary_dilation(own, iterations=near)
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


def features(image: np.ndarray, labels: np.ndarray, pixel_size_nm: float) -> np.ndarray:
    """(N, len(FEATURE_NAMES)) features per object: the study's (area, circularity, central image
    moments μ20 μ02 μ30 μ03, edge density profile, 32-bin histogram) plus a radial intensity
    profile, membrane signal-to-noise, diameter and maximum width in nm."""
    edges = np.hypot(ndi.sobel(image, 0), ndi.sobel(image, 1))
    edge_threshold = np.percentile(edges, 90)
    rows = []
    for region in regionprops(labels, intensity_image=image):
        top, left, side = _square(region, margin=int(0.3 * max(region.bbox[2] - region.bbox[0], 4)) + 2)
        crop = _cut(image, top, left, side)
        crop_edges = _cut(edges, top, left, side) > edge_threshold
        cy, cx = region.centroid[0] - top, region.centroid[1] - left
        radius = max(region.equivalent_diameter_area / 2, 1.0)
        yy, xx = np.mgrid[:side, :side]
        ring = np.minimum((np.hypot(yy - cy, xx - cx) / radius / 1.3 * PROFILE_RINGS).astype(int), PROFILE_RINGS)
        radial = _ring_means(crop, ring)
        edge_density = _ring_means(crop_edges.astype(np.float32), ring)
        inside = image[labels == region.label]
        histogram = np.histogram(np.clip(inside, -4, 4), bins=HISTOGRAM_BINS, range=(-4, 4))[0] / max(inside.size, 1)
        # the membrane is the darkest ring near radius 1; noise from the ring just outside
        rim = radial[int(0.75 * PROFILE_RINGS / 1.3) : int(1.05 * PROFILE_RINGS / 1.3) + 1].min()
        outside = crop[ring == PROFILE_RINGS - 1]
        snr = (outside.mean() - rim) / (outside.std() + 1e-6) if outside.size else 0.0
        circularity = 4 * np.pi * region.area / max(region.perimeter, 1.0) ** 2
        mu = region.moments_normalized
        rows.append([region.area * pixel_size_nm**2, circularity, mu[2, 0], mu[0, 2], mu[3, 0], mu[0, 3],
                     region.equivalent_diameter_area * pixel_size_nm, region.feret_diameter_max * pixel_size_nm,
                     snr, *radial, *edge_density, *histogram])
    return np.asarray(rows, np.float64).reshape(-1, len(FEATURE_NAMES))


def _ring_means(values: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Mean of ``values`` in each radial ring index 0 … PROFILE_RINGS − 1 (0 where empty)."""
    sums = np.bincount(ring.ravel(), values.ravel(), minlength=PROFILE_RINGS + 1)[:PROFILE_RINGS]
    counts = np.bincount(ring.ravel(), minlength=PROFILE_RINGS + 1)[:PROFILE_RINGS]
    return sums / np.maximum(counts, 1)
