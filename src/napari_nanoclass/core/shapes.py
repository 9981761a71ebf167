"""Convex-hull measures of 2-D objects: scikit-image's values, computed without its hull raster.

``regionprops``' ``image_convex`` tests every pixel of the object's box against the hull polygon,
and ``feret_diameter_max`` then traces that raster's outline and compares every pair of its
points: together the costliest steps of measuring a large vesicle. Here the same raster comes row
by row from the polygon's edges, in exact integer arithmetic, and the maximum Feret diameter from
the outline's extreme points only. :func:`solid_enough` tells, for every object of a label image
at once, whether its solidity reaches a threshold, mostly from bounds that need no hull: a noisy
image has thousands of ragged blobs. The same numbers and decisions as scikit-image, bit for bit
(tests/test_shapes.py and tests/test_liposomes.py check them with hypothesis).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist
from skimage.morphology.convex_hull import possible_hull

from napari_nanoclass.core.memory import runs_within

HULL_BATCH = 1 << 18  # row × corner pairs of hull polygons crossed in one array operation (_hull_pixels)


def hull_image(mask: np.ndarray) -> np.ndarray:
    """``skimage.morphology.convex_hull_image(mask)``: the pixels whose centres lie in the convex
    hull (borders included) of the midpoints of every object pixel's four edges."""
    mask = np.asarray(mask, bool)
    vertices = _hull_vertices(mask)
    if vertices is None:
        return np.zeros(mask.shape, bool)
    first, last = _row_spans(vertices, mask.shape[0])
    columns = np.arange(mask.shape[1])
    return (columns >= first[:, None]) & (columns <= last[:, None])


def area_convex(mask: np.ndarray) -> int:
    """``regionprops(mask)[0].area_convex``: the pixel count of :func:`hull_image`."""
    vertices = _hull_vertices(np.asarray(mask, bool))
    if vertices is None:
        return 0
    first, last = _row_spans(vertices, mask.shape[0])
    return int(np.clip(last - first + 1, 0, None).sum())


def solidity(mask: np.ndarray) -> float:
    """``regionprops(mask)[0].solidity``: the object's share of its convex hull's pixels."""
    return float(np.count_nonzero(mask) / area_convex(mask))


def feret_diameter_max(mask: np.ndarray) -> float:
    """``regionprops(mask)[0].feret_diameter_max``: the largest distance between two points of the
    0.5-level outline of :func:`hull_image`. On a binary raster that outline runs through the
    midpoints of the edges between hull and non-hull pixels, and as the hull's rows and columns
    are unbroken those are the ends of each row and of each column (both read off the polygon, as
    the raster is); the farthest pair lies among the corners of their own convex hull."""
    mask = np.asarray(mask, bool)
    vertices = _hull_vertices(mask)
    left, right = _row_spans(vertices, mask.shape[0])
    top, bottom = _row_spans(vertices[:, ::-1], mask.shape[1])  # the columns: the polygon transposed
    rows, cols = np.flatnonzero(left <= right), np.flatnonzero(top <= bottom)
    points = np.concatenate([
        np.column_stack([rows, left[rows] - 0.5]), np.column_stack([rows, right[rows] + 0.5]),
        np.column_stack([top[cols] - 0.5, cols]), np.column_stack([bottom[cols] + 0.5, cols]),
    ])
    try:
        points = points[ConvexHull(points).vertices]
    except QhullError:  # all on one line: compare them all
        pass
    return math.sqrt(float(np.max(pdist(points, "sqeuclidean"))))


def _hull_vertices(mask: np.ndarray) -> np.ndarray | None:
    """(V, 2) doubled (row, col) corners of the hull polygon ``convex_hull_image`` builds: the hull
    of the edge midpoints of the pixels that start or end a row or a column (the others lie inside
    it). Doubled, so that they are whole numbers; None for an empty mask. One qhull call on those
    midpoints: they span an area even where the pixels lie on one line."""
    if not mask.any():
        return None
    coords = possible_hull(np.ascontiguousarray(mask, np.uint8)).astype(np.int64)
    midpoints = (2 * coords[:, None, :] + [[-1, 0], [1, 0], [0, -1], [0, 1]]).reshape(-1, 2)
    return midpoints[ConvexHull(midpoints).vertices]


def _row_spans(vertices: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) column of the pixels of each row 0 … height − 1 whose centre lies in the closed
    polygon of doubled ``vertices`` (first > last where none does)."""
    return _polygon_rows(vertices, 2 * np.arange(height)[:, None])


def _polygon_rows(vertices: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) pixel column whose centre lies in a closed convex polygon (doubled whole-number
    ``vertices`` (…, V, 2) in order) on each doubled row ``line`` (…, 1) broadcast against them:
    the least and greatest crossing of the line with any edge, rounded inwards, as exact
    fractions; first > last where the line misses the polygon."""
    y1, x1 = vertices[..., 0], vertices[..., 1]
    y2, x2 = np.roll(y1, -1, axis=-1), np.roll(x1, -1, axis=-1)
    crossed = (np.minimum(y1, y2) <= line) & (line <= np.maximum(y1, y2))
    # x on an edge at the line is x1 + (line − y1)(x2 − x1)/(y2 − y1); a horizontal edge on the line
    # is crossed at both ends. Pixel column c sits at doubled 2c, so the bounds are x / 2.
    flat = y1 == y2
    dy = np.where(flat, 1, y2 - y1)
    sign = np.sign(dy)
    crossing = (x1 * dy + (line - y1) * (x2 - x1)) * sign  # over 2|dy|: the column bound x / 2
    low = np.where(flat, np.minimum(x1, x2), crossing)
    high = np.where(flat, np.maximum(x1, x2), crossing)
    denominator = 2 * dy * sign
    never = np.iinfo(np.int64).max
    first = np.where(crossed, -(-low // denominator), never).min(axis=-1)
    last = np.where(crossed, high // denominator, -never).max(axis=-1)
    return first, last


def solid_enough(labels: np.ndarray, min_solidity: float) -> np.ndarray:
    """Per label 0 … ``labels.max()``: whether its object's solidity (skimage's) is at least
    ``min_solidity``; False for 0 and for labels not present. All objects at once, and most without
    a convex hull. skimage's hull is that of every pixel's edge midpoints, so it lies in the octagon
    bounded by the pixels' extremes along rows, columns and both diagonals, half a pixel out: its
    pixel count is at most the octagon's, so area / (the octagon's count) is a lower bound of the
    solidity, and round objects pass on it alone. The hull also holds every pixel between the
    first and last of a row (or a column) strictly inside, so area / (those pixels' count) is an
    upper bound, and ragged objects (the noise blobs of a coarse, noisy image) fail on it alone;
    so do most of the rest on the pixels of the polygon through their extreme pixels, which the
    hull holds too. The others get their hulls, counted all at once (:func:`_hull_pixels`)."""
    labels = np.asarray(labels)
    out = np.zeros(int(labels.max(initial=0)) + 1, bool)
    # every bound depends on extreme pixels only (of rows, columns, directions), which lie on the
    # objects' outlines: a large vesicle's interior need not be sorted
    rows, cols = np.nonzero(_outline(labels))
    if rows.size == 0:
        return out
    own = labels[rows, cols]
    order = np.argsort(own, kind="stable")  # by label, then in raster order
    own, rows, cols = own[order], rows[order], cols[order]
    present, starts = np.unique(own, return_index=True)
    area = np.bincount(labels.ravel(), minlength=out.size)[present]
    octagon = _octagon_pixels(rows, cols, starts)
    spans = np.maximum(_line_spans(own, rows, cols), _line_spans(own, cols, rows))
    passes = area >= min_solidity * octagon
    undecided = ~passes & (area >= min_solidity * spans)
    if undecided.any():
        undecided &= area >= min_solidity * _inner_pixels(rows, cols, starts)
    if undecided.any():
        chosen = np.flatnonzero(undecided)
        boxes = ndi.find_objects(labels)
        hulls = _hull_pixels([labels[boxes[present[i] - 1]] == present[i] for i in chosen])
        passes[chosen] = area[chosen] / hulls >= min_solidity  # solidity() for each, as skimage divides
    out[present] = passes
    return out


def _hull_pixels(masks: list[np.ndarray]) -> np.ndarray:
    """``[area_convex(mask) for mask in masks]`` (non-empty masks), with the rows of many hull
    polygons crossed in one array operation: a noisy image leaves hundreds of objects undecided,
    and one operation per object cost more in calls than in arithmetic. Batches hold at most
    ``HULL_BATCH`` row × corner pairs, so that large objects do not make large temporaries."""
    hulls = [(mask.shape[0], _hull_vertices(mask)) for mask in masks]  # (rows, polygon) of each
    batches = runs_within(hulls, lambda hull: hull[0] * len(hull[1]), HULL_BATCH)
    return np.concatenate([_polygon_pixels(*zip(*batch)) for batch in batches])


def _polygon_pixels(heights: tuple[int, ...], polygons: tuple[np.ndarray, ...]) -> np.ndarray:
    """Per polygon (doubled corners in order, :func:`_hull_vertices`), the pixels of rows
    0 … height − 1 whose centres it holds, all rows of all polygons crossed at once."""
    corners = max(len(polygon) for polygon in polygons)
    # shorter polygons end in copies of their last corner: edges of no length, which every line
    # through that corner already crosses there, so no row span changes
    vertices = np.stack([np.concatenate([polygon, np.repeat(polygon[-1:], corners - len(polygon), axis=0)])
                         for polygon in polygons])
    heights = np.array(heights)
    of_row, row = _object_rows(np.zeros_like(heights), heights - 1)
    first, last = _polygon_rows(vertices[of_row], 2 * row[:, None])
    return np.bincount(of_row, np.clip(last - first + 1, 0, None), minlength=len(polygons)).astype(np.int64)


def inner_rim(labels: np.ndarray) -> np.ndarray:
    """``find_boundaries(labels, mode="inner")``: the labelled pixels with a 4-neighbour of another
    label (or background), from four array comparisons instead of two grey-level filters."""
    rim = np.zeros(labels.shape, bool)
    rows, cols = labels[1:] != labels[:-1], labels[:, 1:] != labels[:, :-1]
    rim[1:] |= rows
    rim[:-1] |= rows
    rim[:, 1:] |= cols
    rim[:, :-1] |= cols
    return rim & (labels > 0)


def _outline(labels: np.ndarray) -> np.ndarray:
    """The labelled pixels with a 4-neighbour of another label, or on the image's edge."""
    outline = inner_rim(labels)
    outline[[0, -1]] |= labels[[0, -1]] > 0
    outline[:, [0, -1]] |= labels[:, [0, -1]] > 0
    return outline


def _octagon_pixels(rows: np.ndarray, cols: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per object (its pixels from ``starts``): the pixels of the octagon bounded by its pixels'
    extremes along rows, columns and both diagonals."""
    def extremes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)

    (r0, r1), (c0, c1), (s0, s1), (d0, d1) = (extremes(v) for v in (rows, cols, rows + cols, rows - cols))
    obj, r = _object_rows(r0, r1)
    first = np.maximum.reduce([c0[obj], s0[obj] - r, r - d1[obj]])
    last = np.minimum.reduce([c1[obj], s1[obj] - r, r - d0[obj]])
    return np.bincount(obj, np.clip(last - first + 1, 0, None), minlength=starts.size)


def _line_spans(own: np.ndarray, lines: np.ndarray, along: np.ndarray) -> np.ndarray:
    """Per object (in the order of ``np.unique(own)``): how many pixels lie between the first and
    last of its pixels on each line (``lines`` the pixels' row or column, ``along`` their place in
    it), ends included, summed over its lines."""
    order = np.lexsort((along, lines, own))
    own, lines, along = own[order], lines[order], along[order]
    new = np.ones(own.size, bool)
    new[1:] = (own[1:] != own[:-1]) | (lines[1:] != lines[:-1])
    first = np.flatnonzero(new)
    last = np.append(first[1:], own.size) - 1
    objects, index = np.unique(own[first], return_inverse=True)
    return np.bincount(index, along[last] - along[first] + 1, minlength=objects.size)


# the eight directions (row, column weights) of the extreme pixels, in clockwise order from the top
_DIRECTIONS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _inner_pixels(rows: np.ndarray, cols: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per object (its pixels from ``starts``): the pixels whose centre lies in the polygon through
    the object's extreme pixel centres in eight directions (both ends of each extreme edge, in
    clockwise order). Every pixel centre lies in skimage's hull (it is the mean of its four edge
    midpoints), so this polygon does too, and its pixel count is at most the hull's."""
    obj = np.repeat(np.arange(starts.size), np.diff(np.append(starts, rows.size)))
    corners = []
    never = np.iinfo(np.int64).max
    for a, b in _DIRECTIONS:
        extent = a * rows + b * cols
        far = np.maximum.reduceat(extent, starts)
        on_edge = extent == far[obj]
        along = b * rows - a * cols  # increases clockwise along the edge
        ends = (np.minimum.reduceat(np.where(on_edge, along, never), starts),
                np.maximum.reduceat(np.where(on_edge, along, -never), starts))
        for end in ends:  # the pixel where extent and along take these values
            norm = a * a + b * b
            corners.append(np.stack([(a * far + b * end) // norm, (b * far - a * end) // norm], axis=-1))
    vertices = 2 * np.stack(corners, axis=1)  # (objects, 16, 2), doubled
    of_row, row = _object_rows(np.minimum.reduceat(rows, starts), np.maximum.reduceat(rows, starts))
    first, last = _polygon_rows(vertices[of_row], 2 * row[:, None])
    return np.bincount(of_row, np.clip(last - first + 1, 0, None), minlength=starts.size)


def _object_rows(top: np.ndarray, bottom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(object, row) of every row from each object's ``top`` to its ``bottom``, object after object."""
    heights = bottom - top + 1
    obj = np.repeat(np.arange(top.size), heights)
    return obj, top[obj] + np.arange(heights.sum()) - np.repeat(np.cumsum(heights) - heights, heights)

