"""Training patterns simulated from crystal structures, with the physics of real thin films.

:func:`peak_table` asks pymatgen's ``XRDCalculator`` (Cu Kα) once per compound for its reflections
(Miller indices, integrated intensities). :func:`simulate` then draws any number of patterns from
those tables, each a different film of that material measured on a different day:

- **lattice strain** (solid solutions, thermal and epitaxial strain): every lattice parameter
  scaled, mostly together, a little independently; peak positions recomputed from the strained
  metric — peaks shift by different amounts at different 2θ, as real strain does;
- **texture** (preferred orientation, the rule in films): a March–Dollase factor for a random
  low-index growth direction, averaged over each reflection's symmetry-equivalent planes, scales
  whole peak families up or down;
- **vanishing peaks** and per-peak intensity scatter (extinct or buried reflections);
- **peak broadening** (crystallite size, microstrain: pseudo-Voigt, FWHM growing with tan θ),
  a sample-height **zero shift**, a few **impurity/substrate peaks**, a **background** (air
  scatter at low angle, an amorphous substrate hump, an offset), Poisson **counting noise**, and
  sometimes a **shorter scan range**.

The counts then go through :func:`.patterns.prepare_values`, exactly as a measured pattern does.
Only :func:`peak_table` needs pymatgen; drawing patterns is numpy alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from napari_nanoclass.xrd.patterns import Preparation, prepare_values

WAVELENGTH = 1.54184  # Å, Cu Kα (weighted Kα1/Kα2), pymatgen's "CuKa"
# growth directions (plane normals) a film's texture may favour
DIRECTIONS = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1))
TABLE_RANGE = (3.0, 75.0)  # degrees 2θ computed, wider than any grid so strain can move peaks in


@dataclass
class PeakTable:
    """The reflections of one compound: one row per family of symmetry-equivalent planes."""

    name: str
    label: str  # the class (space group)
    hkl: np.ndarray  # (P, 3) Miller indices of each family's representative
    intensity: np.ndarray  # (P,) integrated intensity, maximum 100
    cell: np.ndarray  # (6,) a, b, c (Å), α, β, γ (degrees)
    cos2: np.ndarray  # (P, len(DIRECTIONS), E) cos² of each equivalent plane to each direction; NaN = none


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random film and measurement properties (see the module docstring)."""

    strain: float = 0.02  # ± relative change of all lattice parameters together
    strain_axis: float = 0.004  # ± further change of each parameter alone
    texture: float = 0.7  # probability that a pattern is textured
    texture_r: tuple[float, float] = (0.25, 1.0)  # March–Dollase r (1 = random powder)
    drop: float = 0.3  # at most this fraction of reflections vanishes
    scatter: float = 0.3  # log-normal σ of per-reflection intensity
    fwhm: tuple[float, float] = (0.07, 0.35)  # degrees at low angle
    fwhm_tan: float = 0.15  # up to this much FWHM growth × tan θ
    zero_shift: float = 0.12  # ± degrees
    impurities: int = 3  # up to this many extra peaks (substrate, secondary phase)
    impurity_height: tuple[float, float] = (0.02, 0.3)
    counts: tuple[float, float] = (2.3, 5.5)  # log10 of the strongest peak's counts
    background: float = 0.15  # up to this fraction of the strongest peak, each term
    crop: float = 0.3  # probability of a shorter scan
    crop_deg: tuple[float, float] = (10.0, 15.0)  # at most this much shorter at the start, at the end

    def clean(self) -> Augmentation:
        """No augmentation: the ideal powder pattern (reference patterns of the baseline)."""
        return replace(self, strain=0, strain_axis=0, texture=0, drop=0, scatter=0, fwhm=(0.15, 0.15), fwhm_tan=0,
                       zero_shift=0, impurities=0, background=0, crop=0)


def peak_table(compound: object) -> PeakTable:
    """The reflections of a :class:`.structures.Compound` (or a pymatgen Structure with
    ``name``/``label`` given by the compound), computed with pymatgen."""
    from pymatgen.analysis.diffraction.xrd import XRDCalculator
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from napari_nanoclass.xrd.structures import build

    structure = build(compound)
    pattern = XRDCalculator(wavelength=WAVELENGTH).get_pattern(structure, two_theta_range=TABLE_RANGE)
    try:
        ops = [op.rotation_matrix for op in SpacegroupAnalyzer(structure, symprec=0.05)
               .get_point_group_operations(cartesian=True)]
    except Exception:  # symmetry search can fail on a distorted cell: then each plane is its own family
        ops = [np.eye(3)]
    recip = structure.lattice.reciprocal_lattice_crystallographic
    normals = np.array([_unit(recip.get_cartesian_coords(d)) for d in DIRECTIONS])
    rows, intensities, cos2 = [], [], []
    for height, families in zip(pattern.y, pattern.hkls):
        total = sum(f["multiplicity"] for f in families)
        for family in families:
            hkl = family["hkl"]
            hkl = (hkl[0], hkl[1], hkl[-1]) if len(hkl) == 4 else tuple(hkl)  # Miller–Bravais → Miller
            planes = np.unique(np.round([_unit(r @ recip.get_cartesian_coords(hkl)) for r in ops], 6), axis=0)
            rows.append(hkl)
            intensities.append(height * family["multiplicity"] / total)
            cos2.append((planes @ normals.T).T ** 2)  # (D, E)
    width = max(c.shape[1] for c in cos2)
    padded = np.full((len(cos2), len(DIRECTIONS), width), np.nan, np.float32)
    for i, c in enumerate(cos2):
        padded[i, :, : c.shape[1]] = c
    intensity = np.asarray(intensities, np.float64)
    return PeakTable(compound.name, compound.space_group, np.asarray(rows, np.float64),
                     100 * intensity / intensity.max(), np.array([*structure.lattice.abc, *structure.lattice.angles]),
                     padded)


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, np.float64) / np.linalg.norm(v)


def reciprocal(cell: np.ndarray) -> np.ndarray:
    """Reciprocal basis (rows, 1/Å, no 2π) of a cell given as a, b, c, α, β, γ."""
    a, b, c = cell[:3]
    alpha, beta, gamma = np.radians(cell[3:])
    cx = np.cos(beta)
    cy = (np.cos(alpha) - np.cos(beta) * np.cos(gamma)) / np.sin(gamma)
    direct = np.array([[a, 0, 0], [b * np.cos(gamma), b * np.sin(gamma), 0],
                       [c * cx, c * cy, c * np.sqrt(max(1 - cx**2 - cy**2, 1e-12))]])
    return np.linalg.inv(direct).T


def two_theta(hkl: np.ndarray, cell: np.ndarray, wavelength: float = WAVELENGTH) -> np.ndarray:
    """Bragg angles (degrees) of reflections ``hkl`` in ``cell``; NaN where none exists."""
    inv_d = np.linalg.norm(hkl @ reciprocal(cell), axis=1)
    sine = wavelength * inv_d / 2
    with np.errstate(invalid="ignore"):
        return np.degrees(2 * np.arcsin(np.where(sine < 1, sine, np.nan)))


def march_dollase(cos2: np.ndarray, r: float) -> np.ndarray:
    """Texture factor of each reflection for one direction: (P, E) cos² of its planes (NaN padded)
    → (P,) mean March–Dollase weight, (r² cos² + sin²/r)^(-3/2); r < 1 favours planes normal to it."""
    weight = (r**2 * cos2 + (1 - cos2) / r) ** -1.5
    return np.nanmean(weight, axis=1)


def pseudo_voigt(grid: np.ndarray, centres: np.ndarray, areas: np.ndarray, fwhm: np.ndarray,
                 eta: float) -> np.ndarray:
    """Sum of area-normalised pseudo-Voigt peaks on ``grid`` (degrees)."""
    x = (grid[None, :] - centres[:, None]) / fwhm[:, None]
    gauss = np.exp(-4 * np.log(2) * x**2) * (2 * np.sqrt(np.log(2) / np.pi))
    lorentz = 2 / np.pi / (1 + 4 * x**2)
    return ((eta * lorentz + (1 - eta) * gauss) * (areas / fwhm)[:, None]).sum(axis=0)


def counts(table: PeakTable, grid: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> tuple[
        np.ndarray, np.ndarray]:
    """One simulated measurement of ``table``'s compound on ``grid``: counts and the mask of the
    scanned range (see the module docstring for what varies)."""
    cell = table.cell.copy()
    cell[:3] *= (1 + rng.uniform(-aug.strain, aug.strain)) * (1 + rng.uniform(-aug.strain_axis, aug.strain_axis, 3))
    centres = two_theta(table.hkl, cell) + rng.uniform(-aug.zero_shift, aug.zero_shift)
    areas = table.intensity.copy()
    if aug.texture and rng.random() < aug.texture:
        areas *= march_dollase(table.cos2[:, rng.integers(len(DIRECTIONS))], rng.uniform(*aug.texture_r))
    if aug.scatter:
        areas *= rng.lognormal(0.0, aug.scatter, areas.size)
    if aug.drop:
        areas *= rng.random(areas.size) >= rng.uniform(0, aug.drop)
    keep = np.isfinite(centres) & (centres > grid[0] - 3) & (centres < grid[-1] + 3) & (areas > 1e-3 * areas.max())
    centres, areas = centres[keep], areas[keep]
    if aug.impurities:
        extra = rng.integers(0, aug.impurities + 1)
        top = areas.max() if areas.size else 1.0
        centres = np.concatenate([centres, rng.uniform(grid[0], grid[-1], extra)])
        areas = np.concatenate([areas, top * rng.uniform(*aug.impurity_height, extra)])
    fwhm = rng.uniform(*aug.fwhm) + rng.uniform(0, aug.fwhm_tan) * np.tan(np.radians(centres / 2))
    signal = pseudo_voigt(grid, centres, areas, fwhm, rng.uniform(0, 1)) if centres.size else np.zeros_like(grid)
    signal *= 10 ** rng.uniform(*aug.counts) / max(float(signal.max()), 1e-12)
    top = float(signal.max())
    if aug.background:
        b = aug.background * top
        background = (rng.uniform(0, b) + rng.uniform(0, b) * np.exp(-(grid - grid[0]) / rng.uniform(2, 10))
                      + rng.uniform(0, b) * np.exp(-0.5 * ((grid - rng.uniform(18, 30)) / rng.uniform(3, 8)) ** 2))
        signal = rng.poisson(signal + background).astype(np.float64)
    inside = np.ones(grid.size, bool)
    if aug.crop and rng.random() < aug.crop:
        inside &= (grid >= grid[0] + rng.uniform(0, aug.crop_deg[0])) & (grid <= grid[-1] - rng.uniform(0, aug.crop_deg[1]))
    return np.where(inside, signal, 0.0), inside


@dataclass
class SimulatedSet:
    """Prepared patterns (N, points) with their class indices and the compound each came from."""

    x: np.ndarray
    y: np.ndarray
    compounds: list[str] = field(default_factory=list)


def simulate(tables: Sequence[PeakTable], classes: Sequence[str], n: int, prep: Preparation, seed: int,
             aug: Augmentation | None = None) -> SimulatedSet:
    """``n`` prepared patterns, classes balanced (then compounds of a class uniformly)."""
    aug = aug or Augmentation()
    rng = np.random.default_rng(seed)
    by_class = {c: [t for t in tables if t.label == c] for c in classes}
    missing = [c for c, ts in by_class.items() if not ts]
    if missing:
        raise ValueError(f"no structure for class(es) {', '.join(missing)}")
    grid = prep.grid
    x = np.empty((n, grid.size), np.float32)
    y = rng.integers(len(classes), size=n)
    names = []
    for i in range(n):
        options = by_class[classes[y[i]]]
        table = options[rng.integers(len(options))]
        values, inside = counts(table, grid, rng, aug)
        x[i] = prepare_values(values, inside, prep)
        names.append(table.name)
    return SimulatedSet(x, y, names)


def references(tables: Sequence[PeakTable], classes: Sequence[str], prep: Preparation) -> SimulatedSet:
    """One ideal powder pattern per compound (no strain, texture or noise): the nearest-neighbour
    baseline's library."""
    clean = Augmentation().clean()
    rng = np.random.default_rng(0)
    x = np.stack([prepare_values(*counts(t, prep.grid, rng, clean), prep) for t in tables])
    return SimulatedSet(x, np.array([list(classes).index(t.label) for t in tables]), [t.name for t in tables])
