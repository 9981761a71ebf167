"""Representative crystal structures of the thin-film data set's seven space groups.

No crystallographic database is reachable offline, so each compound is built with pymatgen from
its space group, lattice parameters and Wyckoff sites, taken from the structure types these
materials are known to adopt (cubic perovskite, tetragonal I4/mcm perovskite, rock-salt ordered
double perovskite, layered and dimer A3B2X9). Approximations, said plainly:

- organic A cations (methylammonium MA, formamidinium FA) are one pseudo-atom of about the same
  electron count at the cation's centre (MA → K, FA → Mn); X-rays see electrons, and these
  cations are orientationally disordered in the films anyway;
- lattice parameters and free coordinates are rounded literature values; solid solutions (Sn/Pb,
  I/Br, mixed cations) are covered by the lattice strain of the augmentation;
- Pc and P2₁/a, monoclinic A3B2X9 whose refined coordinates are not at hand, are built as the
  layered P-3m1 cell in its orthohexagonal setting with a monoclinic shear and fixed small atomic
  displacements (seeded): the peak splittings and superstructure peaks of the real distortion,
  not its exact intensities.

Only training needs this module and pymatgen (the ``xrd-train`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MA, FA = "K", "Mn"  # pseudo-atoms of the organic cations (see the module docstring)


@dataclass(frozen=True)
class Compound:
    """One representative structure: space group (the class), lattice and asymmetric unit."""

    name: str
    space_group: str  # the class label, as the data set's folders spell it
    symbol: str  # Hermann–Mauguin symbol pymatgen builds from
    lattice: tuple[float, ...]  # a (cubic), (a, c) (tetragonal, hexagonal)
    species: tuple[Any, ...]
    coords: tuple[tuple[float, float, float], ...]
    distort: dict[str, Any] = field(default_factory=dict)  # monoclinic derivative of a layered cell


def _perovskite(name: str, a: float, cation: Any, metal: Any, halide: str) -> Compound:
    return Compound(name, "Pm-3m", "Pm-3m", (a,), (metal, cation, halide),
                    ((0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0, 0)))


def _tetragonal(name: str, a: float, c: float, cation: Any, metal: Any, halide: str, x: float = 0.2141) -> Compound:
    # Pb 4c, apical X 4a, equatorial X 8h (x, x+1/2, 0): x sets the octahedral tilt; A 4b
    return Compound(name, "I4/mcm", "I4/mcm", (a, c), (metal, halide, halide, cation),
                    ((0, 0, 0), (0, 0, 0.25), (x, x + 0.5, 0), (0, 0.5, 0.25)))


def _double(name: str, a: float, metal1: str, metal2: str, halide: str, x: float = 0.249) -> Compound:
    return Compound(name, "Fm-3m", "Fm-3m", (a,), ("Cs", metal1, metal2, halide),
                    ((0.25, 0.25, 0.25), (0, 0, 0), (0.5, 0.5, 0.5), (x, 0, 0)))


LAYERED_SITES = ((0, 0, 0), (1 / 3, 2 / 3, 0.6657), (1 / 3, 2 / 3, 0.1822), (0.5, 0, 0), (0.1704, 0.8296, 0.3345))


def _layered(name: str, a: float, c: float, cation: str, metal: str, halide: str, group: str = "P-3m1",
             distort: dict[str, Any] | None = None) -> Compound:
    return Compound(name, group, "P-3m1", (a, c), (cation, cation, metal, halide, halide), LAYERED_SITES,
                    distort or {})


def _dimer(name: str, a: float, c: float, cation: str, metal: str, halide: str) -> Compound:
    return Compound(name, "P6_3/mmc", "P6_3/mmc", (a, c), (cation, cation, metal, halide, halide),
                    ((0, 0, 0.25), (1 / 3, 2 / 3, 0.0819), (1 / 3, 2 / 3, 0.8463), (0.4869, 0.9738, 0.25),
                     (0.8346, 0.6692, 0.0866)))


SNPB = {"Sn": 0.5, "Pb": 0.5}

COMPOUNDS: tuple[Compound, ...] = (
    _perovskite("MAPbI3-cubic", 6.33, MA, "Pb", "I"),
    _perovskite("FAPbI3", 6.36, FA, "Pb", "I"),
    _perovskite("MAPbBr3", 5.93, MA, "Pb", "Br"),
    _perovskite("FAPbBr3", 5.99, FA, "Pb", "Br"),
    _perovskite("CsPbBr3-cubic", 5.87, "Cs", "Pb", "Br"),
    _perovskite("CsPbI3-alpha", 6.29, "Cs", "Pb", "I"),
    _perovskite("MAPbCl3", 5.68, MA, "Pb", "Cl"),
    _tetragonal("MAPbI3", 8.874, 12.67, MA, "Pb", "I"),
    _tetragonal("MAPbI3-less-tilt", 8.874, 12.67, MA, "Pb", "I", x=0.225),
    _tetragonal("MASnI3", 8.76, 12.43, MA, "Sn", "I", x=0.22),
    _tetragonal("MASn0.5Pb0.5I3", 8.82, 12.55, MA, SNPB, "I"),
    _tetragonal("MAPbBr3-tetragonal", 8.32, 11.83, MA, "Pb", "Br"),
    _double("Cs2AgBiBr6", 11.27, "Ag", "Bi", "Br"),
    _double("Cs2AgBiCl6", 10.78, "Ag", "Bi", "Cl"),
    _double("Cs2AgSbBr6", 11.16, "Ag", "Sb", "Br"),
    _layered("Cs3Bi2Br9", 7.97, 9.87, "Cs", "Bi", "Br"),
    _layered("Cs3Sb2Br9", 7.93, 9.72, "Cs", "Sb", "Br"),
    _layered("Rb3Sb2Br9", 7.80, 9.60, "Rb", "Sb", "Br"),
    _layered("Cs3Sb2I9-layered", 8.42, 10.38, "Cs", "Sb", "I"),
    _layered("K3Sb2I9", 8.20, 10.30, "K", "Sb", "I"),
    _layered("Rb3Sb2I9", 8.30, 10.40, "Rb", "Sb", "I"),
    _dimer("Cs3Bi2I9", 8.41, 21.18, "Cs", "Bi", "I"),
    _dimer("Cs3Sb2I9-dimer", 8.63, 21.29, "Cs", "Sb", "I"),
    _dimer("MA3Sb2I9", 8.60, 21.88, MA, "Sb", "I"),
    _dimer("MA3Bi2I9", 8.51, 21.76, MA, "Bi", "I"),
    _layered("Rb3Bi2I9", 8.18, 10.46, "Rb", "Bi", "I", "Pc", {"double_c": True, "beta": 90.5, "seed": 7}),
    _layered("Rb3Bi2Br9", 7.85, 9.80, "Rb", "Bi", "Br", "Pc", {"double_c": True, "beta": 90.6, "seed": 8}),
    _layered("Rb3Bi2Br9-P21a", 7.90, 9.85, "Rb", "Bi", "Br", "P2_1/a", {"double_c": False, "beta": 92.0, "seed": 9}),
    _layered("Rb3Sb2Br9-P21a", 7.78, 9.62, "Rb", "Sb", "Br", "P2_1/a", {"double_c": False, "beta": 91.5, "seed": 10}),
)


def classes() -> list[str]:
    """The space groups the compounds cover, sorted (the class order of a trained model)."""
    return sorted({c.space_group for c in COMPOUNDS})


def build(compound: Compound) -> Any:
    """The pymatgen Structure of ``compound``."""
    from pymatgen.core import Lattice, Structure

    if compound.symbol == "Pm-3m" or compound.symbol == "Fm-3m":
        lattice = Lattice.cubic(compound.lattice[0])
    elif compound.symbol == "I4/mcm":
        lattice = Lattice.tetragonal(*compound.lattice)
    else:
        lattice = Lattice.hexagonal(*compound.lattice)
    structure = Structure.from_spacegroup(compound.symbol, lattice, list(compound.species),
                                          [list(c) for c in compound.coords])
    return _monoclinic(structure, **compound.distort) if compound.distort else structure


def _monoclinic(structure: Any, double_c: bool, beta: float, seed: int, shift: float = 0.015) -> Any:
    """A monoclinic derivative of a hexagonal cell: orthohexagonal setting (a√3, a, c or 2c),
    angle β, a slightly off √3·b, and every atom displaced by up to ``shift`` (fractional)."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    cell = structure.copy()
    cell.make_supercell([[1, 2, 0], [-1, 0, 0], [0, 0, 2 if double_c else 1]])
    a, b, c = cell.lattice.abc
    lattice = Lattice.monoclinic(a * 1.006, b, c, beta)
    rng = np.random.default_rng(seed)
    coords = cell.frac_coords + rng.uniform(-shift, shift, cell.frac_coords.shape)
    return Structure(lattice, cell.species_and_occu, coords)
