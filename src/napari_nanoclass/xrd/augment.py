"""Physics-informed augmentation of *measured* patterns, for training that also uses them.

A handful of measured films cannot teach a network what another film of the same space group
looks like; a measured pattern redrawn as a film that differs in the ways real films differ can
(autoXRD, Oviedo et al. 2019, trains so). :func:`augment_measured` works on a pattern already
prepared (:func:`.patterns.prepare`: on the model's grid, background removed, maximum 1):

- **lattice strain** — every peak moves as Bragg's law says a lattice ``1 + strain`` times larger
  moves it (more at high angle), and a **zero shift** moves them all alike;
- **texture and intensity scatter** — the intensity is multiplied by a smooth random factor that
  changes over a few tenths of a degree, so neighbouring peaks change together and distant ones
  independently. The peaks' Miller indices are unknown for a measured pattern, so texture cannot
  scale whole families as :mod:`.simulate` does; independent stretches are the stand-in;
- **vanishing peaks** — whole stretches set to zero;
- **counting noise** (even over the pattern after the square root of the preparation) and a
  **shorter scan range** sometimes.

The result is scaled to a maximum of 1 again, as any prepared pattern is. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeasuredAugmentation:
    """Ranges of the random changes (see the module docstring); the defaults follow the lattice
    strain and zero shift of :class:`.simulate.Augmentation`, so both kinds of training pattern
    vary alike."""

    strain: float = 0.02  # ± relative change of the lattice
    zero_shift: float = 0.12  # ± degrees
    scatter: float = 0.5  # log-normal σ of the intensity factor of each stretch
    stretch: float = 0.6  # degrees between independent intensity factors
    drop: float = 0.2  # at most this fraction of stretches vanishes
    noise: float = 0.02  # at most this Gaussian σ (maximum of the pattern: 1)
    crop: float = 0.3  # probability of a shorter scan
    crop_deg: tuple[float, float] = (10.0, 15.0)  # at most this much shorter at the start, at the end


def strained(x: np.ndarray, grid: np.ndarray, strain: float, shift: float) -> np.ndarray:
    """``x`` as measured on a lattice ``1 + strain`` times larger with the zero ``shift`` degrees
    off: a peak at θ moves to θ' with sin θ' = sin θ / (1 + strain), then by ``shift``."""
    sine = np.sin(np.radians(grid - shift) / 2) * (1 + strain)
    source = 2 * np.degrees(np.arcsin(np.clip(sine, 0.0, 1.0)))
    return np.interp(source, grid, x, left=0.0, right=0.0)


def intensity_factors(grid: np.ndarray, rng: np.random.Generator, aug: MeasuredAugmentation) -> np.ndarray:
    """A random factor per grid point: log-normal values every ``aug.stretch`` degrees,
    interpolated in log between them (smooth within a peak), some stretches zero (vanished)."""
    knots = np.arange(grid[0] - aug.stretch, grid[-1] + 2 * aug.stretch, aug.stretch) + rng.uniform(0, aug.stretch)
    factors = np.exp(np.interp(grid, knots, rng.normal(0.0, aug.scatter, knots.size)))
    vanish = rng.random(knots.size) < rng.uniform(0, aug.drop)
    return factors * (np.interp(grid, knots, vanish.astype(np.float64)) < 0.5)


def augment_measured(x: np.ndarray, grid: np.ndarray, rng: np.random.Generator,
                     aug: MeasuredAugmentation | None = None) -> np.ndarray:
    """One new film like the prepared pattern ``x`` (on ``grid``): float32, 0–1."""
    aug = aug or MeasuredAugmentation()
    measured = np.flatnonzero(x > 0)
    out = strained(x, grid, rng.uniform(-aug.strain, aug.strain), rng.uniform(-aug.zero_shift, aug.zero_shift))
    out = out * intensity_factors(grid, rng, aug)
    inside = np.zeros(grid.size, bool)
    if measured.size:
        inside[measured[0]: measured[-1] + 1] = True
    out = out + inside * rng.normal(0.0, rng.uniform(0, aug.noise), grid.size)
    if aug.crop and rng.random() < aug.crop:
        start, stop = grid[0] + rng.uniform(0, aug.crop_deg[0]), grid[-1] - rng.uniform(0, aug.crop_deg[1])
        inside &= (grid >= start) & (grid <= stop)
    out = np.maximum(out, 0.0) * inside
    top = float(out.max())
    return (out / top if top > 0 else out).astype(np.float32)
