"""Images brought to a model's scale: the exact 2× zoom against scikit-image's rescale."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.transform import rescale

from napari_nanoclass.engine import scaling
from napari_nanoclass.engine.scaling import rescaled, rescaled_planes


def skimage_rescaled(image: np.ndarray, factor: float) -> np.ndarray:
    return rescale(image, factor, anti_aliasing=factor < 1, preserve_range=True)


@settings(max_examples=150, deadline=None)
@given(height=st.integers(2, 40), width=st.integers(2, 40), seed=st.integers(0, 2**32 - 1),
       spread=st.sampled_from([0.0, 5.0, 30.0]))
def test_doubling_gives_rescales_values_bit_for_bit(height, width, seed, spread):
    """Values spread over many orders of magnitude make the order of the four sums matter (it once
    found a bottom row summed in the wrong order)."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-spread, spread, (height, width))
    image = (rng.normal(size=(height, width)) * scale).astype(np.float32)
    doubled = scaling._doubled(image)
    expected = skimage_rescaled(image, 2)
    assert doubled.dtype == expected.dtype == np.float32
    assert np.array_equal(doubled, expected)


@pytest.mark.parametrize("pixels_at_once", [1, 30, 50, 10**6])
def test_doubling_band_by_band_gives_the_same_values(monkeypatch, pixels_at_once):
    """A large image is zoomed a band of rows at a time; the bands' seams must not show."""
    monkeypatch.setattr(scaling, "DOUBLING_PIXELS", pixels_at_once)
    rng = np.random.default_rng(pixels_at_once)
    for height, width in ((17, 11), (4, 9), (64, 5)):
        image = (rng.normal(size=(height, width)) * 10.0 ** rng.uniform(-30, 30, (height, width))).astype(np.float32)
        assert np.array_equal(scaling._doubled(image), skimage_rescaled(image, 2))


def test_doubling_is_taken_where_it_applies(monkeypatch):
    """The check behind it failed when the border sums were left in the interior's order, and when
    the coordinate was mirrored at the bottom edge as at the top."""
    assert scaling._doubles_exactly()
    image = np.random.default_rng(1).normal(size=(64, 48)).astype(np.float32)
    expected = skimage_rescaled(image, 2)

    def refused(*args, **kwargs):
        raise AssertionError("rescale called")

    monkeypatch.setattr("skimage.transform.rescale", refused)
    assert np.array_equal(rescaled(image, 2), expected)


@pytest.mark.parametrize("image, factor", [
    (np.full((6, 5), np.nan, np.float32), 2),  # skimage clips to a NaN range: left to it
    (np.arange(30, dtype=np.float64).reshape(6, 5), 2),  # float64: the products would round
    (np.arange(5, dtype=np.float32).reshape(1, 5), 2),  # one row: no neighbour to mirror
    (np.arange(30, dtype=np.float32).reshape(6, 5), 1.5),
    (np.arange(64, dtype=np.float32).reshape(8, 8), 0.5),
])
def test_other_images_and_factors_go_to_rescale(image, factor):
    np.testing.assert_array_equal(rescaled(image, factor), skimage_rescaled(image, factor))


def test_when_this_scikit_image_zooms_otherwise_rescale_is_called(monkeypatch):
    scaling._doubles_exactly.cache_clear()
    try:
        monkeypatch.setattr(scaling, "_doubled", lambda image: np.zeros((2 * image.shape[0], 2 * image.shape[1]),
                                                                         np.float32))
        assert not scaling._doubles_exactly()
        image = np.random.default_rng(2).normal(size=(9, 7)).astype(np.float32)
        np.testing.assert_array_equal(rescaled(image, 2), skimage_rescaled(image, 2))
    finally:
        scaling._doubles_exactly.cache_clear()


def test_planes_of_a_stack_are_each_doubled():
    stack = np.random.default_rng(3).normal(size=(3, 10, 12)).astype(np.float32)
    out = rescaled_planes(stack, 2)
    assert out.shape == (3, 20, 24) and out.dtype == np.float32
    for plane, doubled in zip(stack, out):
        assert np.array_equal(doubled, skimage_rescaled(plane, 2))
