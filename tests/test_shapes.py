"""core.shapes: scikit-image's convex-hull measures, the same numbers without its hull raster."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage.measure import label, regionprops

from napari_nanoclass.core import shapes


def _assert_skimage_s(mask: np.ndarray) -> None:
    """Each object of ``mask`` has skimage's hull raster, convex area, solidity and maximum Feret
    diameter, exactly."""
    for region in regionprops(label(mask)):
        np.testing.assert_array_equal(shapes.hull_image(region.image), region.image_convex)
        assert shapes.area_convex(region.image) == region.area_convex
        assert shapes.solidity(region.image) == region.solidity
        assert shapes.feret_diameter_max(region.image) == region.feret_diameter_max


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.floats(0.05, 0.95),
       st.integers(0, 3))
def test_random_objects_have_skimage_s_hull_measures(rows, cols, seed, density, grow):
    """Ragged blobs, one-pixel objects, single rows and columns, diagonal lines: every one."""
    mask = np.random.default_rng(seed).random((rows, cols)) < density
    _assert_skimage_s(ndi.binary_dilation(mask, iterations=grow) if grow else mask)


@settings(max_examples=60, deadline=None)
@given(st.floats(1.0, 60.0), st.floats(1.0, 60.0), st.floats(0.0, np.pi), st.floats(0.0, 1.0),
       st.floats(0.0, 1.0))
def test_ellipses_have_skimage_s_hull_measures(a, b, angle, dy, dx):
    """Vesicle-like outlines at any size and orientation, off the pixel grid: their hull's edges
    pass through pixel centres at all sorts of slopes."""
    size = int(2 * max(a, b)) + 5
    yy, xx = np.mgrid[:size, :size] - np.array([size / 2 + dy, size / 2 + dx])[:, None, None]
    u = yy * np.cos(angle) + xx * np.sin(angle)
    v = -yy * np.sin(angle) + xx * np.cos(angle)
    _assert_skimage_s((u / a) ** 2 + (v / b) ** 2 <= 1)


def test_an_empty_mask_has_an_empty_hull():
    assert not shapes.hull_image(np.zeros((3, 4), bool)).any()
    assert shapes.area_convex(np.zeros((3, 4), bool)) == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1), st.floats(0.05, 0.95))
def test_the_polygon_through_the_extreme_pixels_lies_in_the_hull(rows, cols, seed, density):
    """solid_enough rejects objects on the pixel count of the polygon through their extreme
    pixels: a count above the hull's would reject a solid object."""
    labels = label(np.random.default_rng(seed).random((rows, cols)) < density)
    pixels, columns = np.nonzero(labels)
    own = labels[pixels, columns]
    order = np.argsort(own, kind="stable")
    _, starts = np.unique(own[order], return_index=True)
    inner = shapes._inner_pixels(pixels[order], columns[order], starts)
    for count, region in zip(inner, regionprops(labels)):
        assert count <= region.area_convex
