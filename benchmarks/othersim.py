"""An independent simulator of cryo-TEM micrographs of liposomes (test data only).

Written from first principles of cryo-EM image formation, without reference to any other liposome
simulator in this project, so that models trained on that other simulator can be tested on
fields whose rendering choices they have never seen.

The pipeline of one field (``simulate``):

1. Draw the microscope and specimen state of the field (defocus, astigmatism, dose, ice, ...).
2. Place vesicles (log-uniform diameters) with their two classes (lamellarity, encapsulation),
   mostly not overlapping, some touching, a few cut by the field edge.
3. Build the projected Coulomb potential ``V(x, y)`` in volt·nm: lipid bilayers as projected
   spherical shells (two head-group layers, a lighter hydrocarbon core), cargo inside the vesicles,
   buffer proteins and density fluctuations of the ice, optional carbon film and ice contamination.
4. Weak-phase image formation: phase ``phi = sigma * V``; the image contrast is
   ``-2 [sqrt(1-A^2) sin(chi) + A cos(chi)] E(k) phi(k)`` with the defocus/astigmatism/Cs wave
   aberration ``chi``, amplitude contrast ``A`` and the B-factor and spatial-coherence envelopes.
5. Intensity: the dose attenuated by inelastic scattering in the ice (energy filter or objective
   aperture), carbon and contamination; detector MTF; Poisson shot noise at a DQE < 1.

Everything is rendered on a canvas padded by a margin (so vesicles cut by the field edge continue
outside it and the periodic FFT wrap stays outside the field), then cropped.

Only numpy and scipy are used. ``simulate`` is deterministic in ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage, signal

LAMELLARITY_CLASSES = ("unilamellar", "multilamellar", "uncertain")
ENCAPSULATION_CLASSES = ("full", "empty", "uncertain")

# Realistic preparation mix (balanced=False): mostly unilamellar, mostly full, few uncertain.
_REALISTIC_LAMELLARITY_P = (0.78, 0.14, 0.08)
_REALISTIC_ENCAPSULATION_P = (0.68, 0.24, 0.08)

_ICE_MIP_V = 4.5  # mean inner potential of vitreous ice, volt
_ANGLES = 512  # samples of a vesicle outline r(theta)
_MAX_VESICLES = 25


@dataclass
class OtherField:
    """One simulated field.

    image: float32 (Y, X) recorded intensity in electrons per pixel (membranes dark: underfocus).
    labels: int32 (Y, X) instance labels, 0 background, 1..n vesicles (whole projected disk,
        outer membrane and interior included; inner vesicles belong to their parent).
    lamellarity / encapsulation: class names for labels 1..n.
    params: JSON-serialisable record of everything drawn for the field.
    """

    image: np.ndarray
    labels: np.ndarray
    lamellarity: list[str]
    encapsulation: list[str]
    params: dict


# --------------------------------------------------------------------------------------------
# Physical constants of the beam
# --------------------------------------------------------------------------------------------


def electron_wavelength_nm(voltage_v: float) -> float:
    """Relativistic electron wavelength (nm) at accelerating voltage ``voltage_v``."""
    return 1.226426 / math.sqrt(voltage_v * (1.0 + 0.978476e-6 * voltage_v))


def interaction_constant(voltage_v: float) -> float:
    """Phase shift per projected potential, sigma in rad / (V·nm) (0.0065 at 300 kV)."""
    lam = electron_wavelength_nm(voltage_v)
    mc2 = 510998.95  # electron rest energy, eV
    return (
        2.0 * math.pi / (lam * voltage_v) * (mc2 + voltage_v) / (2.0 * mc2 + voltage_v)
    )


# --------------------------------------------------------------------------------------------
# Field-level draws
# --------------------------------------------------------------------------------------------


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Uniform draw as a plain float (JSON-friendly)."""
    return float(rng.uniform(lo, hi))


def _draw_optics(rng: np.random.Generator) -> dict[str, Any]:
    """Microscope and detector state of one field (300 kV, Cs 2.7 mm, typical single-particle
    settings: 0.5–4 µm underfocus, < 250 nm astigmatism, 10–60 e/Å²)."""
    return {
        "voltage_kv": 300.0,
        "cs_mm": 2.7,
        "defocus_um": _u(rng, 0.5, 4.0),
        "astigmatism_um": _u(rng, 0.0, 0.25),
        "astigmatism_angle_deg": _u(rng, 0.0, 180.0),
        "amplitude_contrast": _u(rng, 0.07, 0.10),
        "bfactor_A2": _u(rng, 30.0, 250.0),
        "illumination_aperture_mrad": _u(rng, 0.005, 0.03),
        "dose_e_per_A2": _u(rng, 10.0, 60.0),
        "dqe": _u(rng, 0.45, 0.85),
        "mtf_corner_cycles_per_px": _u(rng, 0.2, 1.0),
        "mtf_on_noise": bool(rng.random() < 0.5),
        "energy_filter": bool(rng.random() < 0.6),
        "inelastic_mfp_nm": _u(rng, 300.0, 400.0),
        "aperture_mfp_nm": _u(rng, 1500.0, 3000.0),
        "illumination_tilt": _u(rng, 0.0, 0.05),
    }


def _draw_membrane(rng: np.random.Generator) -> dict[str, float]:
    """Bilayer profile of the field's lipid: head-group layers denser than water (phosphate,
    choline), a slightly lighter acyl-chain core with a trough at the terminal methyls.
    Potentials are excess over vitreous ice (volt)."""
    return {
        "head_separation_nm": _u(rng, 3.6, 4.4),
        "head_sigma_nm": _u(rng, 0.35, 0.55),
        "head_excess_V": _u(rng, 1.0, 2.2),
        "tail_deficit_V": _u(rng, 0.15, 0.6),
        "methyl_deficit_V": _u(rng, 0.4, 1.4),
    }


def _draw_specimen(rng: np.random.Generator) -> dict[str, Any]:
    """Ice, buffer and contamination of one field."""
    return {
        "ice_thickness_nm": _u(rng, 30.0, 110.0),
        "ice_gradient_nm_per_um": _u(rng, 0.0, 60.0),
        "ice_gradient_angle_deg": _u(rng, 0.0, 360.0),
        "ice_roughness_nm": _u(rng, 0.0, 3.0),
        "solvent_noise_rad2_nm2": float(
            np.exp(rng.uniform(np.log(3e-4), np.log(3e-3)))
        ),
        "protein_per_um2": float(
            rng.choice([0.0, _log_uniform(rng, 200.0, 15000.0)], p=[0.2, 0.8])
        ),
        "protein_radius_nm": _u(rng, 2.0, 5.0),
        "carbon_edge": bool(rng.random() < 0.2),
        "contamination": bool(rng.random() < 0.15),
        "coverage": _u(rng, 0.12, 0.45),
        "touch_prob": _u(rng, 0.1, 0.4),
    }


def _draw_classes(rng: np.random.Generator, balanced: bool) -> tuple[str, str]:
    """Lamellarity and encapsulation of one vesicle (uniform if balanced, else realistic)."""
    if balanced:
        lam = LAMELLARITY_CLASSES[int(rng.integers(3))]
        enc = ENCAPSULATION_CLASSES[int(rng.integers(3))]
    else:
        lam = LAMELLARITY_CLASSES[int(rng.choice(3, p=_REALISTIC_LAMELLARITY_P))]
        enc = ENCAPSULATION_CLASSES[int(rng.choice(3, p=_REALISTIC_ENCAPSULATION_P))]
    return lam, enc


# --------------------------------------------------------------------------------------------
# Vesicle outlines
# --------------------------------------------------------------------------------------------


class _Shape:
    """A star-shaped outline r(theta) about a centre, with an approximate signed distance.

    Real liposomes are round to slightly elongated (osmotic deflation), sometimes irregular, and
    faceted when the lipid is in the gel phase. Membranes and lamellae are drawn as parallel
    curves of the outline at the signed distance d, so a bilayer keeps its thickness everywhere.
    """

    def __init__(self, radius: np.ndarray) -> None:
        self.r = radius
        step = 2.0 * math.pi / radius.size
        self.dr = (np.roll(radius, -1) - np.roll(radius, 1)) / (2.0 * step)

    @property
    def r_max(self) -> float:
        """Largest radius of the outline (nm), for bounding boxes and collision tests."""
        return float(self.r.max())

    def signed_distance(self, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        """Distance (nm) from the outline, negative inside: (rho - r) / sqrt(1 + (r'/r)^2)."""
        rho = np.hypot(dy, dx)
        t = (np.arctan2(dy, dx) % (2.0 * math.pi)) * (self.r.size / (2.0 * math.pi))
        i0 = np.floor(t).astype(np.int64)
        f = t - i0
        i0 %= self.r.size
        i1 = (i0 + 1) % self.r.size
        r = self.r[i0] * (1.0 - f) + self.r[i1] * f
        dr = self.dr[i0] * (1.0 - f) + self.dr[i1] * f
        return (rho - r) / np.sqrt(1.0 + (dr / r) ** 2)


def _draw_shape(rng: np.random.Generator, r0: float, kind: str) -> _Shape:
    """Outline of mean-area radius ``r0`` nm: round, elongated, deformed or faceted."""
    th = np.arange(_ANGLES) * (2.0 * math.pi / _ANGLES)
    amps = {m: rng.uniform(0.0, 0.012) for m in range(2, 5)}
    if kind == "elongated":
        amps[2] = rng.uniform(0.05, 0.14)
    elif kind == "deformed":
        amps[2] = rng.uniform(0.0, 0.06)
        amps[3] = rng.uniform(0.015, 0.045)
        amps[4] = rng.uniform(0.0, 0.025)
    r = np.ones_like(th)
    for m, a in amps.items():
        r += a * np.cos(m * (th - rng.uniform(0, 2 * math.pi)))
    if kind == "faceted":
        n = int(rng.integers(5, 10))
        sector = 2.0 * math.pi / n
        rel = (th - rng.uniform(0, sector)) % sector - sector / 2.0
        poly = math.cos(sector / 2.0) / np.cos(rel)
        k = ndimage.gaussian_filter1d(
            poly, sigma=rng.uniform(0.12, 0.3) * _ANGLES / n, mode="wrap"
        )
        r = r * k
    area = 0.5 * np.sum(r**2) * (2.0 * math.pi / _ANGLES)
    return _Shape(r * r0 * math.sqrt(math.pi / area))


# --------------------------------------------------------------------------------------------
# Projected potential of membranes and cargo
# --------------------------------------------------------------------------------------------


def _bilayer_density(u: np.ndarray, mem: dict[str, float]) -> np.ndarray:
    """3D excess potential (V) across one bilayer, u = distance from its mid-plane (nm)."""
    a = mem["head_separation_nm"] / 2.0
    s = mem["head_sigma_nm"]
    heads = mem["head_excess_V"] * (
        np.exp(-((u - a) ** 2) / (2 * s * s)) + np.exp(-((u + a) ** 2) / (2 * s * s))
    )
    core = -mem["tail_deficit_V"] / (1.0 + np.exp((np.abs(u) - (a - 0.6)) / 0.25))
    methyl = -mem["methyl_deficit_V"] * np.exp(-(u**2) / (2 * 0.3**2))
    return heads + core + methyl


def _shell_projection(s: np.ndarray, edges: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Exact projection along the beam of concentric uniform shells.

    A shell of density rho_j between radii r_j < r_{j+1} contributes
    2 rho_j (sqrt(r_{j+1}^2 - s^2) - sqrt(r_j^2 - s^2)) at in-plane radius s (both roots clipped
    at 0). Summing thin shells is a discrete Abel transform without the 1/sqrt singularity.
    """
    a = np.sqrt(np.maximum(edges[None, :] ** 2 - s[:, None] ** 2, 0.0))
    return 2.0 * (a[:, 1:] - a[:, :-1]) @ rho


def _radial_tables(
    r0: float,
    lamellae: list[float],
    mem: dict[str, float],
    pix: float,
    cargo_v: float,
    cargo_r: float,
    blur_nm: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projected potential (V·nm) of a spherical vesicle versus in-plane radius s.

    Returns (s, membranes, uniform cargo): bilayers centred at radii ``lamellae`` (nm) and a
    uniform cargo of excess ``cargo_v`` filling radius ``cargo_r``. Both are averaged over a
    pixel width (the detector integrates over the pixel, so thin walls do not alias at coarse
    pixel sizes) and optionally blurred (a faint, out-of-plane or drifting vesicle).
    """
    half = mem["head_separation_nm"] / 2.0 + 4.0 * mem["head_sigma_nm"] + 0.5
    ds = 0.1 if pix >= 0.8 else pix / 8.0
    s = np.arange(0.0, r0 + half + 2.0 * pix + 3.0 * blur_nm + 1.0, ds)
    walls = np.zeros_like(s)
    for rk in lamellae:
        edges = np.arange(max(rk - half, 0.0), rk + half + ds, ds)
        mid = 0.5 * (edges[1:] + edges[:-1])
        walls += _shell_projection(s, edges, _bilayer_density(mid - rk, mem))
    cargo = cargo_v * 2.0 * np.sqrt(np.maximum(cargo_r**2 - s**2, 0.0))
    box = max(1, round(pix / ds))
    walls = ndimage.uniform_filter1d(walls, box, mode="mirror")
    cargo = ndimage.uniform_filter1d(cargo, box, mode="mirror")
    if blur_nm > 0:
        walls = ndimage.gaussian_filter1d(walls, blur_nm / ds, mode="mirror")
    return s, walls, cargo


def _sphere_kernel(radius_nm: float, pix: float) -> np.ndarray:
    """Pixel-integrated projection of a unit-mass sphere (sums to 1), 5x supersampled."""
    half = math.ceil(radius_nm / pix) + 1
    sub = 5
    g = (np.arange((2 * half + 1) * sub) - ((2 * half + 1) * sub - 1) / 2.0) * (
        pix / sub
    )
    yy, xx = np.meshgrid(g, g, indexing="ij")
    k = np.sqrt(np.maximum(radius_nm**2 - yy**2 - xx**2, 0.0))
    k = k.reshape(2 * half + 1, sub, 2 * half + 1, sub).sum(axis=(1, 3))
    total = k.sum()
    if total <= 0:
        k = np.zeros_like(k)
        k[half, half] = 1.0
        return k
    return k / total


def _splat(
    window: np.ndarray, py: np.ndarray, px: np.ndarray, mass: np.ndarray
) -> None:
    """Bilinear deposit of point masses at fractional pixel positions into ``window``."""
    y0 = np.floor(py).astype(np.int64)
    x0 = np.floor(px).astype(np.int64)
    fy = py - y0
    fx = px - x0
    h, w = window.shape
    for oy, ox, wt in (
        (0, 0, (1 - fy) * (1 - fx)),
        (1, 0, fy * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 1, fy * fx),
    ):
        yi = y0 + oy
        xi = x0 + ox
        ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        np.add.at(window, (yi[ok], xi[ok]), (mass * wt)[ok])


def _gaussian_field(
    rng: np.random.Generator, shape: tuple[int, int], corr_px: float
) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ``corr_px``."""
    g = rng.standard_normal(shape)
    if corr_px > 0.3:
        g = ndimage.gaussian_filter(g, corr_px, mode="wrap")
    return (g - g.mean()) / (g.std() + 1e-12)


# --------------------------------------------------------------------------------------------
# Vesicles: plan (what to draw) and rendering (how it projects)
# --------------------------------------------------------------------------------------------


@dataclass
class _Vesicle:
    """Plan of one vesicle in canvas nanometre coordinates."""

    label: int
    cy: float
    cx: float
    r0: float
    shape: _Shape
    shape_kind: str
    lamellarity: str
    encapsulation: str
    lamella_offsets: list[
        float
    ]  # 0 for the outer wall, negative for inner lamellae (nm)
    inner: list[
        tuple[float, float, float, _Shape]
    ]  # off-centre inner vesicles (dy, dx, r0, shape)
    wall_mode: str  # "normal" | "faint" | "hidden" | "edge" | "overlap"
    wall_scale: float
    blur_nm: float
    cargo: dict[str, Any]


def _draw_lamellae(rng: np.random.Generator, r0: float) -> tuple[list[float], int]:
    """Inner lamellae of a concentric (onion) multilamellar vesicle: 6–10 nm repeat each."""
    offsets = [0.0]
    n_max = int(rng.integers(2, 6))
    while len(offsets) < n_max:
        nxt = offsets[-1] - rng.uniform(6.0, 10.0)
        if r0 + nxt < 7.0:
            break
        offsets.append(nxt)
    if len(offsets) == 1:
        offsets.append(-6.0)
    return offsets, len(offsets)


def _draw_inner_vesicles(
    rng: np.random.Generator, r0: float
) -> list[tuple[float, float, float, _Shape]]:
    """One to three smaller vesicles inside the lumen, possibly off-centre (multivesicular)."""
    room = r0 - 2.6 - 2.0  # inner radius of the outer wall minus a water gap
    out: list[tuple[float, float, float, _Shape]] = []
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(20):
            ri = rng.uniform(0.25, 0.75) * room
            ri = max(ri, 7.0)
            if ri + 2.6 > room:
                continue
            rr = rng.uniform(0.0, room - ri - 2.6)
            ang = rng.uniform(0, 2 * math.pi)
            dy, dx = rr * math.sin(ang), rr * math.cos(ang)
            if all(math.hypot(dy - a, dx - b) > ri + c + 6.0 for a, b, c, _ in out):
                out.append((dy, dx, ri, _draw_shape(rng, ri, "round")))
                break
    return out


def _draw_cargo(rng: np.random.Generator, enc: str, r_lumen: float) -> dict[str, Any]:
    """What fills the lumen. full: dense uniform content, many dense particles, or a drug
    precipitate (fibre bundle, as doxorubicin sulfate in Doxil); uncertain: faint uniform content,
    a few particles, or a small partial precipitate; empty: nothing (lumen = buffer = outside)."""
    if enc == "empty":
        return {"kind": "none"}
    ang = _u(rng, 0, 180)
    if enc == "full":
        kind = str(rng.choice(["uniform", "particles", "bundle"], p=[0.35, 0.35, 0.3]))
        if kind == "uniform":
            return {
                "kind": kind,
                "excess_V": _u(rng, 0.25, 0.7),
                "texture": _u(rng, 0.3, 0.8),
            }
        if kind == "particles":
            return {
                "kind": kind,
                "radius_nm": _u(rng, 2.0, 5.0),
                "excess_V": _u(rng, 4.0, 20.0),
                "fill": _u(rng, 0.12, 0.45),
                "count": -1,
            }
        return {
            "kind": kind,
            "excess_V": _u(rng, 0.8, 2.0),
            "length_frac": _u(rng, 0.7, 1.0),
            "width_frac": _u(rng, 0.3, 0.6),
            "period_nm": _u(rng, 2.5, 3.6),
            "modulation": _u(rng, 0.1, 0.5),
            "angle_deg": ang,
            "offset_frac": 0.0,
            "bend": _u(rng, -0.004, 0.004),
            "n": int(rng.choice([1, 1, 1, 2])),
        }
    kind = str(rng.choice(["faint_uniform", "few_particles", "partial_bundle"]))
    if kind == "faint_uniform":
        return {
            "kind": kind,
            "excess_V": _u(rng, 0.06, 0.14),
            "texture": _u(rng, 0.15, 0.4),
        }
    if kind == "few_particles":
        return {
            "kind": kind,
            "radius_nm": _u(rng, 2.0, 4.0),
            "excess_V": _u(rng, 2.0, 6.0),
            "fill": 0.0,
            "count": int(rng.integers(1, 4)),
        }
    return {
        "kind": kind,
        "excess_V": _u(rng, 0.4, 1.0),
        "length_frac": _u(rng, 0.25, 0.45),
        "width_frac": _u(rng, 0.15, 0.3),
        "period_nm": _u(rng, 2.5, 3.6),
        "modulation": _u(rng, 0.1, 0.3),
        "angle_deg": ang,
        "offset_frac": _u(rng, 0.3, 0.5),
        "bend": 0.0,
        "n": 1,
    }


def _plan_vesicle(
    rng: np.random.Generator,
    label: int,
    cy: float,
    cx: float,
    r0: float,
    lam: str,
    enc: str,
    wall_mode: str,
) -> _Vesicle:
    """Decide outline, lamellae and cargo of a vesicle whose classes are (lam, enc).

    Uncertain lamellarity is *rendered* as a unilamellar or multilamellar wall that is then
    made unjudgeable (faint, hidden by contamination, crossed by another vesicle, or mostly out of
    the field), as on real data, where the truth exists but cannot be seen.
    """
    kind = str(
        rng.choice(
            ["round", "elongated", "deformed", "faceted"], p=[0.47, 0.3, 0.15, 0.08]
        )
    )
    structure = lam
    if lam == "uncertain":
        structure = "multilamellar" if rng.random() < 0.4 else "unilamellar"
    offsets = [0.0]
    inner: list[tuple[float, float, float, _Shape]] = []
    if structure == "multilamellar":
        if r0 >= 24.0 and rng.random() < 0.4:
            inner = _draw_inner_vesicles(rng, r0)
        if not inner:
            offsets, _ = _draw_lamellae(rng, r0)
    shape = _draw_shape(rng, r0, kind)
    r_lumen = r0 + min(offsets) - 2.6
    cargo = _draw_cargo(rng, enc, r_lumen)
    wall_scale, blur = 1.0, 0.0
    if wall_mode == "faint":
        wall_scale, blur = _u(rng, 0.15, 0.35), _u(rng, 2.5, 5.0)
    return _Vesicle(
        label,
        cy,
        cx,
        r0,
        shape,
        kind,
        lam,
        enc,
        offsets,
        inner,
        wall_mode,
        wall_scale,
        blur,
        cargo,
    )


class _Canvas:
    """Padded rendering canvas: projected potential (V·nm), labels, contamination thickness."""

    def __init__(self, shape: tuple[int, int], pad: int, pix: float) -> None:
        self.pad = pad
        self.pix = pix
        self.shape = (shape[0] + 2 * pad, shape[1] + 2 * pad)
        self.potential = np.zeros(self.shape)
        self.labels = np.zeros(self.shape, np.int32)
        self.contamination_nm = np.zeros(self.shape)

    def window(
        self, cy: float, cx: float, radius_nm: float
    ) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
        """Bounding box of a disk (nm coords) and the pixel-centre offsets from its centre (nm)."""
        p = self.pix
        y0 = max(math.floor((cy - radius_nm) / p), 0)
        y1 = min(math.ceil((cy + radius_nm) / p) + 1, self.shape[0])
        x0 = max(math.floor((cx - radius_nm) / p), 0)
        x1 = min(math.ceil((cx + radius_nm) / p) + 1, self.shape[1])
        if y1 <= y0 or x1 <= x0:
            return None
        dy = (np.arange(y0, y1) + 0.5) * p - cy
        dx = (np.arange(x0, x1) + 0.5) * p - cx
        return slice(y0, y1), slice(x0, x1), dy[:, None], dx[None, :]


def _render_shell(
    canvas: _Canvas,
    cy: float,
    cx: float,
    r0: float,
    shape: _Shape,
    offsets: list[float],
    mem: dict[str, float],
    wall_scale: float,
    blur_nm: float,
    cargo_v: float,
    cargo_r: float,
    label: int,
    texture: np.ndarray | None,
    texture_amp: float,
) -> np.ndarray | None:
    """Add one (possibly multilamellar) vesicle's walls and uniform cargo; paint its label.

    Pixels are mapped to s = r0 + d (d: signed distance to the outline), then the spherical
    projection tables are read at s. Returns the signed-distance window for later cargo use.
    """
    w = canvas.window(cy, cx, shape.r_max + 8.0 + 2 * canvas.pix + 3 * blur_nm)
    if w is None:
        return None
    sy, sx, dy, dx = w
    d = shape.signed_distance(dy, dx)
    s_tab, walls, cargo = _radial_tables(
        r0, [r0 + o for o in offsets], mem, canvas.pix, cargo_v, cargo_r, blur_nm
    )
    s = np.clip(r0 + d, 0.0, None)
    v = wall_scale * np.interp(s, s_tab, walls, right=0.0)
    if cargo_v != 0.0:
        v += np.interp(s, s_tab, cargo, right=0.0)
        if texture is not None and texture_amp > 0:
            chord = 2.0 * np.sqrt(np.maximum(cargo_r**2 - s**2, 0.0))
            # Molecular-scale (~5 nm) clumps projected over the chord L: std ~ sqrt(5 L).
            v += cargo_v * texture_amp * np.sqrt(5.0 * chord) * texture[sy, sx]
    canvas.potential[sy, sx] += v
    if label > 0:
        mask = d <= mem["head_separation_nm"] / 2.0 + 0.6
        canvas.labels[sy, sx][mask] = label
    return d


def _render_particles(
    rng: np.random.Generator, canvas: _Canvas, ves: _Vesicle, r_lumen: float
) -> None:
    """Dense particles (ferritin/iron-oxide/gold-like, or protein aggregates) in the lumen,
    uniform in the 3D lumen volume, each projected as a sphere."""
    c = ves.cargo
    a = c["radius_nm"]
    rr = r_lumen - a - 0.5
    if rr <= 0.5:
        return
    if c["count"] >= 0:
        n = c["count"]
    else:
        n = int(min(c["fill"] * rr**2 / a**2, 1500))
    pts: list[np.ndarray] = []
    got = 0
    for _ in range(10):
        if got >= n:
            break
        cand = rng.uniform(-1.0, 1.0, size=(max(4 * n, 16), 3)) * np.array(
            [ves.shape.r_max, ves.shape.r_max, rr]
        )
        d = ves.shape.signed_distance(cand[:, 0], cand[:, 1])
        s = ves.r0 + d
        ok = (s < rr) & (s**2 + cand[:, 2] ** 2 < rr**2)
        cand = cand[ok][: n - got]
        pts.append(cand)
        got += len(cand)
    if got == 0:
        return
    p = np.concatenate(pts)
    w = canvas.window(ves.cy, ves.cx, ves.shape.r_max + a + 2 * canvas.pix)
    if w is None:
        return
    sy, sx, _, _ = w
    win = np.zeros((sy.stop - sy.start, sx.stop - sx.start))
    pix = canvas.pix
    py = (ves.cy + p[:, 0]) / pix - 0.5 - sy.start
    px = (ves.cx + p[:, 1]) / pix - 0.5 - sx.start
    radii = a * rng.uniform(0.85, 1.15, size=len(p))
    mass = c["excess_V"] * (4.0 / 3.0) * math.pi * radii**3 / pix**2
    _splat(win, py, px, mass)
    canvas.potential[sy, sx] += signal.fftconvolve(
        win, _sphere_kernel(a, pix), mode="same"
    )


def _render_bundle(
    rng: np.random.Generator, canvas: _Canvas, ves: _Vesicle, r_lumen: float
) -> None:
    """A drug precipitate: a bundle of parallel fibres (~3 nm repeat) lying in the lumen,
    cylindrical cross-section, soft ends, striations only where the pixel can resolve them."""
    c = ves.cargo
    w = canvas.window(ves.cy, ves.cx, ves.shape.r_max + 2 * canvas.pix)
    if w is None:
        return
    sy, sx, dy, dx = w
    d = ves.shape.signed_distance(dy, dx)
    inside = np.clip((-d - (ves.r0 - r_lumen) - 0.5) / 1.5, 0.0, 1.0)
    pix = canvas.pix
    p = c["period_nm"]
    aa = float(np.sinc(pix / p)) if p > 2.2 * pix else 0.0
    total = np.zeros_like(d)
    for k in range(c["n"]):
        ang = math.radians(c["angle_deg"] + k * rng.uniform(-20, 20))
        length = 2.0 * r_lumen * c["length_frac"]
        width = max(2.0 * r_lumen * c["width_frac"] / (1 + 0.4 * k), 3.0)
        off = (c["offset_frac"] * r_lumen) + (k * rng.uniform(-0.3, 0.3) * r_lumen)
        u = math.cos(ang) * dx + math.sin(ang) * dy
        v = -math.sin(ang) * dx + math.cos(ang) * dy - off - c["bend"] * u**2
        # rounded-rectangle outline: the half-width falls off near the ends
        half = (width / 2.0) * np.clip(
            1.0 - (np.abs(u) / (length / 2.0)) ** 4, 0.0, 1.0
        ) ** 0.25
        thick = 2.0 * np.sqrt(np.maximum(half**2 - v**2, 0.0))
        ends = 1.0
        stripes = 1.0 + c["modulation"] * aa * np.cos(
            2 * math.pi * v / p + rng.uniform(0, 2 * math.pi)
        )
        total += c["excess_V"] * thick * ends * stripes
    total = ndimage.gaussian_filter(total * inside, 0.4)
    canvas.potential[sy, sx] += total


def _render_vesicle(
    rng: np.random.Generator,
    canvas: _Canvas,
    ves: _Vesicle,
    mem: dict[str, float],
    texture: np.ndarray,
) -> None:
    """Walls, inner vesicles and cargo of one vesicle."""
    r_lumen = ves.r0 + min(ves.lamella_offsets) - mem["head_separation_nm"] / 2.0 - 0.6
    kind = ves.cargo["kind"]
    cargo_v = ves.cargo["excess_V"] if kind in ("uniform", "faint_uniform") else 0.0
    tex = ves.cargo.get("texture", 0.0)
    _render_shell(
        canvas,
        ves.cy,
        ves.cx,
        ves.r0,
        ves.shape,
        ves.lamella_offsets,
        mem,
        ves.wall_scale,
        ves.blur_nm,
        cargo_v,
        max(r_lumen, 0.0),
        ves.label,
        texture,
        tex,
    )
    for dy, dx, ri, shp in ves.inner:
        _render_shell(
            canvas,
            ves.cy + dy,
            ves.cx + dx,
            ri,
            shp,
            [0.0],
            mem,
            ves.wall_scale,
            ves.blur_nm,
            0.0,
            0.0,
            0,
            None,
            0.0,
        )
    if kind in ("particles", "few_particles"):
        _render_particles(rng, canvas, ves, r_lumen)
    elif kind in ("bundle", "partial_bundle"):
        _render_bundle(rng, canvas, ves, r_lumen)


# --------------------------------------------------------------------------------------------
# Contamination, carbon, ice and buffer
# --------------------------------------------------------------------------------------------


def _add_contamination(
    rng: np.random.Generator,
    canvas: _Canvas,
    cy: float,
    cx: float,
    radius: float,
    kind: str,
) -> dict[str, Any]:
    """A thick ice particle on the film: a hexagonal crystal or a rounded frost/ethane blob.
    It is recorded as a thickness (nm) that attenuates the beam (dark) and adds a capped phase."""
    shape = _draw_shape(rng, radius, "faceted" if kind == "crystal" else "deformed")
    w = canvas.window(cy, cx, shape.r_max + 3.0)
    if w is None:
        return {}
    sy, sx, dy, dx = w
    d = shape.signed_distance(dy, dx)
    peak = _log_uniform(rng, 20.0, 250.0)
    dome = np.sqrt(np.clip(-d / max(radius, 1.0), 0.0, 1.0))
    soft = np.clip(0.5 - d / max(canvas.pix, 0.5), 0.0, 1.0)
    t = peak * np.maximum(dome, 0.15) * soft
    if kind == "crystal":
        t *= (
            1.0
            + 0.25
            * ndimage.gaussian_filter(
                rng.standard_normal(t.shape), 3.0 / canvas.pix + 0.5
            )
            * 3.0
        )
    canvas.contamination_nm[sy, sx] += np.maximum(t, 0.0)
    return {
        "kind": kind,
        "centre_nm": [float(cy), float(cx)],
        "radius_nm": float(radius),
        "peak_nm": float(peak),
    }


def _carbon_map(
    rng: np.random.Generator, shape: tuple[int, int], pix: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """Thickness (nm) of a holey-carbon film whose curved hole edge crosses the field."""
    h, w = shape
    ang = rng.uniform(0, 2 * math.pi)
    ny, nx = math.sin(ang), math.cos(ang)
    yy = (np.arange(h)[:, None] + 0.5 - h / 2.0) * pix
    xx = (np.arange(w)[None, :] + 0.5 - w / 2.0) * pix
    along = -nx * yy + ny * xx
    hole_r = _u(rng, 500.0, 2000.0)  # radius of the hole, i.e. edge curvature
    offset = _u(rng, 0.15, 0.42) * min(h, w) * pix
    sd = ny * yy + nx * xx - offset + along**2 / (2.0 * hole_r)
    thick = _u(rng, 10.0, 30.0)
    t = thick * np.clip(0.5 + sd / 1.5, 0.0, 1.0)
    return t, {
        "thickness_nm": thick,
        "normal_angle_deg": math.degrees(ang),
        "offset_nm": offset,
        "hole_radius_nm": hole_r,
        "signed_distance": sd,
    }


def _ice_thickness(
    rng: np.random.Generator, shape: tuple[int, int], pix: float, spec: dict[str, Any]
) -> np.ndarray:
    """Vitreous ice thickness (nm): base + linear gradient across the hole + smooth roughness."""
    h, w = shape
    g = spec["ice_gradient_nm_per_um"] / 1000.0
    a = math.radians(spec["ice_gradient_angle_deg"])
    yy = (np.arange(h)[:, None] - h / 2.0) * pix
    xx = (np.arange(w)[None, :] - w / 2.0) * pix
    t = spec["ice_thickness_nm"] + g * (math.cos(a) * xx + math.sin(a) * yy)
    small = (max(h // 16, 4), max(w // 16, 4))
    rough = ndimage.zoom(
        _gaussian_field(rng, small, 2.0), (h / small[0], w / small[1]), order=1
    )[:h, :w]
    return np.maximum(t + spec["ice_roughness_nm"] * rough, 10.0)


def _buffer_proteins(
    rng: np.random.Generator,
    shape: tuple[int, int],
    pix: float,
    per_um2: float,
    radius_nm: float,
) -> np.ndarray:
    """Point masses (V·nm per pixel) of soluble proteins in the buffer, uniform over the field
    (inside and outside vesicles: an empty lumen looks like the outside). Blurred to protein size
    in Fourier space together with the CTF."""
    area_um2 = shape[0] * shape[1] * (pix / 1000.0) ** 2
    n = int(rng.poisson(per_um2 * area_um2))
    out = np.zeros(shape)
    if n == 0:
        return out
    py = rng.uniform(0, shape[0] - 1, n)
    px = rng.uniform(0, shape[1] - 1, n)
    radius = np.exp(rng.normal(np.log(radius_nm), 0.25, n))
    mass = 1.6 * (4.0 / 3.0) * math.pi * radius**3 / pix**2
    _splat(out, py, px, mass)
    return out


# --------------------------------------------------------------------------------------------
# Image formation
# --------------------------------------------------------------------------------------------


def _frequencies(shape: tuple[int, int], pix: float) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequency grids (1/nm) for an rfft2 of ``shape``."""
    ky = sfft.fftfreq(shape[0], d=pix)[:, None]
    kx = sfft.rfftfreq(shape[1], d=pix)[None, :]
    return ky, kx


def contrast_transfer(
    shape: tuple[int, int], pix: float, optics: dict[str, Any]
) -> np.ndarray:
    """Phase-contrast transfer (for rfft2) including envelopes, as applied to the phase phi.

    chi(k) = pi lambda df(theta) k^2 - pi/2 Cs lambda^3 k^4 (df > 0 underfocus);
    CTF = -2 [sqrt(1-A^2) sin chi + A cos chi] * exp(-B k^2 / 4) * E_spatial(k),
    so positive projected potential is dark at low frequency in underfocus.
    """
    lam = electron_wavelength_nm(optics["voltage_kv"] * 1e3)
    cs = optics["cs_mm"] * 1e6
    ky, kx = _frequencies(shape, pix)
    k2 = ky**2 + kx**2
    theta = np.arctan2(ky, kx)
    df = optics["defocus_um"] * 1e3 + 0.5 * optics["astigmatism_um"] * 1e3 * np.cos(
        2.0 * (theta - math.radians(optics["astigmatism_angle_deg"]))
    )
    chi = math.pi * lam * df * k2 - 0.5 * math.pi * cs * lam**3 * k2**2
    a = optics["amplitude_contrast"]
    ctf = -2.0 * (math.sqrt(1.0 - a * a) * np.sin(chi) + a * np.cos(chi))
    b_nm2 = optics["bfactor_A2"] / 100.0
    env = np.exp(-b_nm2 * k2 / 4.0)
    alpha = optics["illumination_aperture_mrad"] * 1e-3
    k = np.sqrt(k2)
    grad = cs * lam**3 * k**3 + optics["defocus_um"] * 1e3 * lam * k
    env *= np.exp(-((math.pi * alpha / lam) ** 2) * grad**2)
    return ctf * env


def detector_mtf(shape: tuple[int, int], corner: float) -> np.ndarray:
    """Detector MTF at the output sampling (rfft2 grid): 1 / (1 + (f / f_c)^2), f in cycles/px.
    The pixel-aperture sinc is already in the pixel-integrated rendering."""
    fy = sfft.fftfreq(shape[0])[:, None]
    fx = sfft.rfftfreq(shape[1])[None, :]
    return 1.0 / (1.0 + (fy**2 + fx**2) / corner**2)


def _form_image(
    rng: np.random.Generator,
    potential: np.ndarray,
    proteins: np.ndarray,
    ice_nm: np.ndarray,
    absorber_nm: np.ndarray,
    pix: float,
    optics: dict[str, Any],
    spec: dict[str, Any],
    noise: bool,
) -> np.ndarray:
    """Projected potential -> recorded counts.

    phase = sigma V (+ white solvent phase noise whose variance grows with ice thickness and
    shrinks as 1/pixel area); contrast = CTF * phase; zero-loss intensity = dose exp(-t/mfp);
    total = zero-loss (filtered) or dose exp(-t/aperture mfp) (unfiltered, the inelastic
    electrons add a featureless background); MTF; Poisson counts at the DQE.
    """
    sigma = interaction_constant(optics["voltage_kv"] * 1e3)
    shape = potential.shape
    phase = sigma * potential
    phase += (
        rng.standard_normal(shape)
        * np.sqrt(spec["solvent_noise_rad2_nm2"] * ice_nm / 100.0)
        / pix
    )
    ky, kx = _frequencies(shape, pix)
    blur_nm = 0.6 * spec["protein_radius_nm"]
    protein_blur = np.exp(-2.0 * (math.pi * blur_nm) ** 2 * (ky**2 + kx**2))
    spec_phase = sfft.rfft2(phase) + sfft.rfft2(sigma * proteins) * protein_blur
    contrast = sfft.irfft2(spec_phase * contrast_transfer(shape, pix, optics), s=shape)
    contrast = np.clip(contrast, -0.9, 3.0)

    dose_px = optics["dose_e_per_A2"] * 100.0 * pix * pix
    h, w = shape
    yy = np.arange(h)[:, None] / h - 0.5
    xx = np.arange(w)[None, :] / w - 0.5
    illum = 1.0 + optics["illumination_tilt"] * (yy + xx)
    zero_loss = (
        dose_px
        * illum
        * np.exp(-ice_nm / optics["inelastic_mfp_nm"] - absorber_nm / 180.0)
    )
    if optics["energy_filter"]:
        total = zero_loss
    else:
        total = (
            dose_px
            * illum
            * np.exp(-ice_nm / optics["aperture_mfp_nm"] - absorber_nm / 400.0)
        )
    expected = np.maximum(total + zero_loss * contrast, 0.0)
    mtf = detector_mtf(shape, optics["mtf_corner_cycles_per_px"])
    if noise and optics["mtf_on_noise"]:
        # integrating detector / real-space binning: each electron is spread by the PSF,
        # so signal and shot noise are blurred alike (softer, correlated grain)
        dqe = optics["dqe"]
        counts = rng.poisson(expected * dqe) / dqe
        return np.maximum(sfft.irfft2(sfft.rfft2(counts) * mtf, s=shape), 0.0)
    # counting detector: the signal is blurred, the shot noise of counted events stays white
    expected = np.maximum(sfft.irfft2(sfft.rfft2(expected) * mtf, s=shape), 0.0)
    if not noise:
        return expected
    dqe = optics["dqe"]
    return rng.poisson(expected * dqe) / dqe


# --------------------------------------------------------------------------------------------
# Placement and the public entry point
# --------------------------------------------------------------------------------------------


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Log-uniform draw in [lo, hi] (scale-free: sizes, concentrations)."""
    return (
        float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if hi > lo
        else float(lo)
    )


def _free(
    cy: float,
    cx: float,
    rmax: float,
    placed: list[tuple[float, float, float]],
    gap: float,
) -> bool:
    """True if a disk of radius rmax at (cy, cx) keeps ``gap`` nm from every placed disk."""
    return all(math.hypot(cy - y, cx - x) >= rmax + r + gap for y, x, r in placed)


def simulate(
    seed: int,
    pixel_size_nm: float = 1.0,
    shape: tuple[int, int] = (512, 512),
    diameter_nm: tuple[float, float] = (20.0, 300.0),
    balanced: bool = True,
) -> OtherField:
    """Simulate one cryo-TEM field of liposomes with instance labels and two class labels each.

    seed: the only source of randomness (``np.random.default_rng(seed)``).
    pixel_size_nm: true sampling of the output image (0.5–3 nm/px sensible).
    shape: output (Y, X) in pixels.
    diameter_nm: log-uniform range of vesicle diameters, capped to 80 % of the field.
    balanced: classes uniform over the three values each (else a realistic preparation mix).
    """
    return _simulate(seed, pixel_size_nm, shape, diameter_nm, balanced, None)


def _simulate(
    seed: int,
    pixel_size_nm: float,
    shape: tuple[int, int],
    diameter_nm: tuple[float, float],
    balanced: bool,
    overrides: dict[str, Any] | None,
) -> OtherField:
    """``simulate`` with optional overrides of drawn parameters (for tests), e.g.
    ``{"dose_e_per_A2": 1e6, "noise": False, "contamination": False, "carbon_edge": False}``."""
    rng = np.random.default_rng(seed)
    pix = float(pixel_size_nm)
    ov = dict(overrides or {})
    optics = _draw_optics(rng)
    mem = _draw_membrane(rng)
    spec = _draw_specimen(rng)
    for table in (optics, mem, spec):
        for key in table:
            if key in ov:
                table[key] = ov[key]
    noise = bool(ov.get("noise", True))
    forced = ov.get("force_classes")  # optional (lam, enc) for every vesicle

    h, w = int(shape[0]), int(shape[1])
    pad = 40
    canvas = _Canvas((h, w), pad, pix)
    field_lo = pad * pix
    fh, fw = h * pix, w * pix

    d_hi = min(float(diameter_nm[1]), 0.8 * min(h, w) * pix)
    d_lo = min(float(diameter_nm[0]), d_hi)

    carbon_t = np.zeros(canvas.shape)
    carbon_info: dict[str, Any] = {}
    if spec["carbon_edge"]:
        carbon_t, carbon_info = _carbon_map(rng, canvas.shape, pix)
    carbon_sd = carbon_info.pop("signed_distance", None)

    def on_carbon(cy: float, cx: float, r: float) -> bool:
        if carbon_sd is None:
            return False
        iy = min(max(int(cy / pix), 0), canvas.shape[0] - 1)
        ix = min(max(int(cx / pix), 0), canvas.shape[1] - 1)
        return bool(carbon_sd[iy, ix] > -0.4 * r)

    field_area = fh * fw
    placed: list[tuple[float, float, float]] = []
    vesicles: list[_Vesicle] = []
    covered = 0.0
    label = 0
    attempts = 0
    n_max = int(ov.get("n_vesicles", _MAX_VESICLES))
    n_min = min(3, n_max)
    while (
        len(vesicles) < n_max
        and attempts < 80
        and (covered < spec["coverage"] * field_area or len(vesicles) < n_min)
    ):
        attempts += 1
        lam, enc = forced if forced else _draw_classes(rng, balanced)
        mode = "normal"
        if lam == "uncertain":
            mode = str(
                rng.choice(
                    ["faint", "hidden", "edge", "overlap"], p=[0.35, 0.25, 0.2, 0.2]
                )
            )
        diam = _log_uniform(rng, d_lo, d_hi)
        r0 = diam / 2.0
        if lam == "multilamellar" or (lam == "uncertain" and mode != "faint"):
            r0 = max(r0, min(14.0, d_hi / 2.0))
        rmax_est = r0 * 1.2 + 3.0
        ok = False
        for _ in range(25):
            if mode == "edge":
                side = int(rng.integers(4))
                out = rng.uniform(0.1, 0.45) * r0
                along = rng.uniform(0.1, 0.9)
                cy, cx = [
                    (field_lo - out, field_lo + along * fw),
                    (field_lo + fh + out, field_lo + along * fw),
                    (field_lo + along * fh, field_lo - out),
                    (field_lo + along * fh, field_lo + fw + out),
                ][side]
            elif placed and rng.random() < spec["touch_prob"]:
                y, x, r = placed[int(rng.integers(len(placed)))]
                ang = rng.uniform(0, 2 * math.pi)
                dist = r + rmax_est + rng.uniform(0.0, 2.0)
                cy, cx = y + dist * math.sin(ang), x + dist * math.cos(ang)
                if not (
                    field_lo <= cy <= field_lo + fh and field_lo <= cx <= field_lo + fw
                ):
                    continue
            else:
                cy = field_lo + rng.uniform(0, fh)
                cx = field_lo + rng.uniform(0, fw)
            if _free(cy, cx, rmax_est, placed, -0.5) and not on_carbon(cy, cx, r0):
                ok = True
                break
        if not ok:
            continue
        label += 1
        ves = _plan_vesicle(rng, label, cy, cx, r0, lam, enc, mode)
        vesicles.append(ves)
        placed.append((cy, cx, ves.shape.r_max + 3.0))
        covered += math.pi * r0 * r0
        if mode == "overlap" and len(vesicles) < n_max:
            rp = max(r0 * rng.uniform(0.45, 1.0), min(12.0, r0))
            ang = rng.uniform(0, 2 * math.pi)
            dist = (r0 + rp) * rng.uniform(0.6, 0.85)
            py, px = cy + dist * math.sin(ang), cx + dist * math.cos(ang)
            _, enc2 = forced if forced else _draw_classes(rng, balanced)
            label += 1
            partner = _plan_vesicle(
                rng, label, py, px, rp, "uncertain", enc2, "overlap"
            )
            vesicles.append(partner)
            placed.append((py, px, partner.shape.r_max + 3.0))
            covered += math.pi * rp * rp

    # Projected potential: vesicles (labels painted in order; an overlapping partner wins).
    texture = _gaussian_field(rng, canvas.shape, 2.5 / pix)
    for ves in vesicles:
        _render_vesicle(rng, canvas, ves, mem, texture)

    # Contamination: attached to walls of "hidden" vesicles, elsewhere free of vesicles.
    contamination: list[dict[str, Any]] = []
    for ves in vesicles:
        if ves.wall_mode == "hidden":
            for _ in range(int(rng.integers(1, 3))):
                ang = rng.uniform(0, 2 * math.pi)
                rb = max(ves.r0 * rng.uniform(0.3, 0.6), 6.0)
                dist = ves.r0 + rb * rng.uniform(0.0, 0.4)
                contamination.append(
                    _add_contamination(
                        rng,
                        canvas,
                        ves.cy + dist * math.sin(ang),
                        ves.cx + dist * math.cos(ang),
                        rb,
                        str(rng.choice(["crystal", "blob"])),
                    )
                )
    if spec["contamination"]:
        for _ in range(int(rng.integers(1, 3))):
            rb = _log_uniform(rng, 10.0, min(120.0, 0.25 * min(fh, fw)))
            for _try in range(20):
                cy = field_lo + rng.uniform(0, fh)
                cx = field_lo + rng.uniform(0, fw)
                if _free(cy, cx, rb * 1.3 + 4.0, placed, 0.0):
                    contamination.append(
                        _add_contamination(
                            rng,
                            canvas,
                            cy,
                            cx,
                            rb,
                            str(rng.choice(["crystal", "blob"])),
                        )
                    )
                    placed.append((cy, cx, rb * 1.3))
                    break

    # Carbon film: extra potential with an amorphous texture, stronger absorption.
    if spec["carbon_edge"]:
        grain = _gaussian_field(rng, canvas.shape, 0.6 / pix)
        # carbon (MIP ~9 V) replaces part of the ice (4.5 V): ~2–4 V excess over the hole
        canvas.potential += (_u(rng, 2.0, 4.0) * carbon_t) * (1.0 + 0.1 * grain)
    canvas.potential += _ICE_MIP_V * np.minimum(canvas.contamination_nm, 15.0)

    ice = _ice_thickness(rng, canvas.shape, pix, spec)
    if vesicles:  # the film must be thick enough to hold the largest vesicle
        ice = ice + max(
            0.0, 1.6 * max(v.r0 for v in vesicles) + 10.0 - spec["ice_thickness_nm"]
        )
    proteins = _buffer_proteins(
        rng, canvas.shape, pix, spec["protein_per_um2"], spec["protein_radius_nm"]
    )
    absorber = canvas.contamination_nm + carbon_t
    image = _form_image(
        rng, canvas.potential, proteins, ice, absorber, pix, optics, spec, noise
    )

    crop = (slice(pad, pad + h), slice(pad, pad + w))
    image = image[crop].astype(np.float32)
    labels_c = canvas.labels[crop]

    # Renumber visible labels 1..n in placement order.
    present = set(np.unique(labels_c).tolist()) - {0}
    remap = np.zeros(label + 1, np.int32)
    lam_out: list[str] = []
    enc_out: list[str] = []
    records: list[dict[str, Any]] = []
    for ves in vesicles:
        if ves.label not in present:
            continue
        new = len(lam_out) + 1
        remap[ves.label] = new
        lam_out.append(ves.lamellarity)
        enc_out.append(ves.encapsulation)
        records.append(
            {
                "label": new,
                "centre_px": [
                    float(ves.cy / pix - pad - 0.5),
                    float(ves.cx / pix - pad - 0.5),
                ],
                "diameter_nm": float(2 * ves.r0),
                "shape": ves.shape_kind,
                "lamellarity": ves.lamellarity,
                "encapsulation": ves.encapsulation,
                "n_lamellae": len(ves.lamella_offsets),
                "lamella_offsets_nm": [float(o) for o in ves.lamella_offsets],
                "n_inner_vesicles": len(ves.inner),
                "wall_mode": ves.wall_mode,
                "wall_scale": float(ves.wall_scale),
                "cargo": {
                    k: (float(v) if isinstance(v, (float, np.floating)) else v)
                    for k, v in ves.cargo.items()
                },
            }
        )
    labels_out = remap[labels_c].astype(np.int32)

    params: dict[str, Any] = {
        "seed": int(seed),
        "pixel_size_nm": pix,
        "shape": [h, w],
        "diameter_range_nm": [d_lo, d_hi],
        "balanced": bool(balanced),
        "noise": noise,
        "optics": {
            k: (bool(v) if isinstance(v, (bool, np.bool_)) else float(v))
            for k, v in optics.items()
        },
        "membrane": {k: float(v) for k, v in mem.items()},
        "specimen": {
            k: (bool(v) if isinstance(v, (bool, np.bool_)) else float(v))
            for k, v in spec.items()
        },
        "carbon": {k: float(v) for k, v in carbon_info.items()},
        "contamination": [c for c in contamination if c],
        "mean_ice_thickness_nm": float(ice.mean()),
        "vesicles": records,
    }
    return OtherField(image, labels_out, lam_out, enc_out, params)
