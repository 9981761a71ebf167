"""Tests of the independent liposome field simulator in benchmarks/othersim.py (test data only)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "othersim.py"


def _load():
    spec = importlib.util.spec_from_file_location("othersim", _PATH)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up while the class is built
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


othersim = _load()


@pytest.fixture(scope="module")
def balanced_fields():
    return [
        othersim.simulate(seed, 1.0, (256, 256), (20.0, 150.0), True)
        for seed in range(20)
    ]


def test_deterministic_in_seed():
    a = othersim.simulate(7, 1.0, (192, 192))
    b = othersim.simulate(7, 1.0, (192, 192))
    c = othersim.simulate(8, 1.0, (192, 192))
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, b.labels)
    assert a.lamellarity == b.lamellarity and a.encapsulation == b.encapsulation
    assert json.dumps(a.params, sort_keys=True) == json.dumps(b.params, sort_keys=True)
    assert not np.array_equal(a.image, c.image)


def test_field_contract(balanced_fields):
    for f in balanced_fields:
        assert f.image.dtype == np.float32 and f.labels.dtype == np.int32
        assert f.image.shape == f.labels.shape == (256, 256)
        assert np.isfinite(f.image).all() and f.image.min() >= 0
        n = int(f.labels.max())
        assert n >= 1
        assert (
            n == len(f.lamellarity) == len(f.encapsulation) == len(f.params["vesicles"])
        )
        assert set(np.unique(f.labels).tolist()) == set(range(n + 1)), (
            "every label non-empty"
        )
        assert set(f.lamellarity) <= set(othersim.LAMELLARITY_CLASSES)
        assert set(f.encapsulation) <= set(othersim.ENCAPSULATION_CLASSES)
        json.dumps(f.params)


def test_balanced_covers_all_classes(balanced_fields):
    lam = Counter(c for f in balanced_fields for c in f.lamellarity)
    enc = Counter(c for f in balanced_fields for c in f.encapsulation)
    total = sum(lam.values())
    for name in othersim.LAMELLARITY_CLASSES:
        assert lam[name] >= 0.15 * total, lam
    for name in othersim.ENCAPSULATION_CLASSES:
        assert enc[name] >= 0.15 * total, enc


def test_realistic_mix_is_mostly_unilamellar_and_full():
    fields = [
        othersim.simulate(seed, 2.0, (192, 192), (20.0, 150.0), False)
        for seed in range(8)
    ]
    lam = Counter(c for f in fields for c in f.lamellarity)
    enc = Counter(c for f in fields for c in f.encapsulation)
    total = sum(lam.values())
    assert lam["unilamellar"] > 0.5 * total and enc["full"] > 0.45 * total
    assert lam["uncertain"] < 0.25 * total and enc["uncertain"] < 0.25 * total


def _wall_profiles(f):
    """Per vesicle: mean intensity (relative to the ice 8–15 px outside) in 1-px shells of signed
    distance from the label edge, sd = -12 .. 11 px (negative inside)."""
    out = []
    for lab in range(1, int(f.labels.max()) + 1):
        m = f.labels == lab
        sd = np.where(
            m,
            0.5 - ndimage.distance_transform_edt(m),
            ndimage.distance_transform_edt(~m) - 0.5,
        )
        usable = (f.labels == lab) | (f.labels == 0)
        ice = (sd > 8) & (sd < 15) & (f.labels == 0)
        if ice.sum() < 50:
            continue
        level = f.image[ice].mean()
        prof = []
        for k in range(-12, 12):
            shell = (sd >= k) & (sd < k + 1) & usable
            prof.append(
                f.image[shell].mean() / level - 1.0 if shell.sum() >= 5 else np.nan
            )
        out.append(prof)
    return np.array(out)


def test_walls_darker_than_ice_in_underfocus():
    """Physics sign check: with no shot noise, contamination or carbon, a lipid wall (positive
    projected potential, two head-group layers ~4 nm apart) must come out as dark line(s) at the
    outline, darker than the ice around it, at 1–3 µm underfocus."""
    mins, where = [], []
    for seed, df in ((1, 1.0), (2, 2.0), (3, 3.0)):
        f = othersim._simulate(
            seed,
            1.0,
            (256, 256),
            (40.0, 120.0),
            True,
            {
                "noise": False,
                "contamination": False,
                "carbon_edge": False,
                "defocus_um": df,
                "protein_per_um2": 0.0,
                "solvent_noise_rad2_nm2": 1e-9,
                "force_classes": ("unilamellar", "empty"),
            },
        )
        for prof in _wall_profiles(f):
            if np.isnan(prof).any():
                continue
            mins.append(np.min(prof[12 - 6 : 12]))  # sd in [-6, 0): the bilayer
            where.append(int(np.argmin(prof)) - 12)
    mins = np.array(mins)
    assert len(mins) >= 5
    assert (mins < -0.02).mean() >= 0.9, mins
    assert mins.mean() < -0.04, mins
    assert np.mean([-6 <= w < 0 for w in where]) >= 0.9, where


def test_pixel_size_is_honoured():
    """A vesicle of diameter D covers about pi (D/2 + wall)^2 / pix^2 pixels: 4x fewer at 2 nm/px."""
    medians = {}
    for pix in (1.0, 2.0):
        ratios, areas = [], []
        for seed in range(4):
            f = othersim.simulate(seed, pix, (256, 256), (80.0, 80.0), True)
            for rec in f.params["vesicles"]:
                m = f.labels == rec["label"]
                ys, xs = np.nonzero(m)
                if (
                    rec["wall_mode"] != "normal"
                    or ys.min() == 0
                    or xs.min() == 0
                    or ys.max() == 255
                    or xs.max() == 255
                ):
                    continue
                expected = math.pi * ((rec["diameter_nm"] / 2 + 2.5) / pix) ** 2
                ratios.append(m.sum() / expected)
                areas.append(m.sum())
        assert len(areas) >= 3
        assert 0.85 < np.median(ratios) < 1.15, ratios
        medians[pix] = np.median(areas)
    assert 3.4 < medians[1.0] / medians[2.0] < 4.6, medians
