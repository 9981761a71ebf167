"""Synthetic SEM-like nanofibre images for tests: bright straight fibres, optionally with beads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fibres(shape: tuple[int, int], rng: np.random.Generator, n_fibres: int = 12,
           beads: Sequence[tuple[int, int, int]] = (), width: float = 1.2) -> np.ndarray:
    """uint8 image: ``n_fibres`` random straight fibres (about ``2 * width`` px wide) and bright
    discs ``(y, x, r)``."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    img = 40 + 8 * rng.standard_normal(shape).astype(np.float32)
    for _ in range(n_fibres):
        theta = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        distance = np.abs((yy - cy) * np.cos(theta) - (xx - cx) * np.sin(theta))
        img += 110 * np.exp(-(distance / width) ** 2)
    for y, x, r in beads:
        img += 150 * np.clip(1.5 - np.hypot(yy - y, xx - x) / r, 0, 1)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_beads(shape: tuple[int, int], rng: np.random.Generator, n: int, r: tuple[int, int] = (5, 8)
                 ) -> list[tuple[int, int, int]]:
    return [(int(rng.integers(8, shape[0] - 8)), int(rng.integers(8, shape[1] - 8)), int(rng.integers(*r)))
            for _ in range(n)]
