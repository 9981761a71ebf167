"""Simulated cryo-TEM fields of liposomes with instance masks and per-object classes.

There is no public labelled liposome data, so detector and classifiers are pre-trained on
fields drawn here and then fine-tuned on a user's own labelled objects. A field is built as a
projected density (what the electrons see), imaged through a defocused microscope and recorded at
low dose:

1. **Density** — each liposome is an ellipse (diameter log-uniform in ``diameter_nm``, axis ratio
   up to ``1 + ellipticity``) whose bilayer is one dark line, or two lines 4 nm apart (``bilayer``).
   *Multilamellar* objects get 2–4 concentric rings or an off-centre nested vesicle; *full* ones a
   dark elongated doxorubicin "coffee-bean" bundle (several parallel fibres) or a denser interior;
   *uncertain* lamellarity means a large dark ice blob over part of the object or an overlapping
   neighbour (both of an overlapping pair are uncertain, so the uncertain share comes out a
   little above the mix's); *uncertain* encapsulation a faint density over part of the interior.
2. **Background** — vitreous ice thickness as a linear gradient plus smooth undulation, a carbon
   film beyond a curved edge in some fields, and fine texture: random 1/f noise, or a real
   micrograph's texture passed as ``texture`` (its high-pass residual, cropped at random).
   Optionally (``contamination``) ice crystals and contamination on the ice: dark, strongly
   absorbing hexagonal crystals or rounded blobs in the free ice, never over a liposome.
3. **Imaging** — phase contrast through a contrast transfer function at the field's defocus (dark
   membranes with bright Fresnel fringes), optionally astigmatic (``astigmatism_nm``: the defocus
   differs between two perpendicular axes, so the Thon rings are ellipses), then Poisson shot noise
   at ``dose`` electrons per pixel, then optionally the detector's modulation transfer function
   (``mtf_nyquist``), which blurs each recorded electron over neighbouring pixels.

The optional effects are off in :class:`SimulationConfig`'s defaults, which reproduce the fields
the shipped models were trained and measured on; :data:`MICROSCOPE` turns them on with wide ranges,
and ``pixel_size_range_nm`` draws each field's pixel size. Their random draws come from a generator
spawned from the field's seed, so fields without them are exactly as before.

:data:`REALISTIC` adds, as further opt-in fields drawn from a generator spawned from that one (so
``MICROSCOPE`` fields too stay as they were): bilayers as projected spherical shells with a
head-group / hydrocarbon-core density profile (``bilayer_volts``), a dose per Å² with a physical
contrast scale (``dose_per_a2``), vitreous ice as a random phase object imaged through the CTF
(``ice_noise``), a CTF envelope B-factor (``bfactor_a2``), cargo as small dense particles
(``cargo_particles``, ``cargo_density``), deformed or faceted outlines (``irregularity``,
``faceted``) and, on part of the fields, background flattening as image processing applies it
(``flatten_nm``). On that physical scale only the thick background absorbs; the ranges were set
against a real micrograph's statistics (docs/liposomes.md, "Calibrating `REALISTIC`").

Class frequencies follow a :class:`ClassMix`; :data:`STUDY_MIX` is the imbalance of the real data
sets of the study this project follows, :data:`BALANCED_MIX` equal thirds. Everything is drawn
from one ``numpy`` generator, so a seed reproduces a field exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_nanoclass.liposomes import ENCAPSULATION, LAMELLARITY

WAVELENGTH_NM = 1.97e-3  # electrons at 300 kV
INTERACTION_RAD_PER_V_NM = 6.53e-3  # phase shift per volt of potential per nm of path, electrons at 300 kV
BILAYER_GAP_NM = 4.0  # between the two leaflets' head-group lines
# a bilayer's density relative to ice, as (distance of the layer's middle from the membrane's middle in nm,
# its thickness in nm, its potential relative to the head groups'): the phosphate head groups are denser
# than ice, the hydrocarbon core a little less dense (a trough between two peaks, as X-ray profiles show)
BILAYER_LAYERS = ((BILAYER_GAP_NM / 2, 1.0, 1.0), (0.0, BILAYER_GAP_NM - 1.0, -0.25),
                  (-BILAYER_GAP_NM / 2, 1.0, 1.0))
# phase shift (rad) of one unit of projected density; the image is 1 - 2·phase·CTF (weak phase). The
# default fields exaggerate contrast (0.45 rad per unit) at a low dose per pixel; with a dose per Å²
# the old components (ice, carbon, cargo bodies, contamination) get a physical 0.1 rad per unit
RAD_PER_UNIT = 0.45
PHYSICAL_RAD_PER_UNIT = 0.1


@dataclass(frozen=True)
class ClassMix:
    """Probability of each class, in the order of :data:`LAMELLARITY` and :data:`ENCAPSULATION`."""

    lamellarity: tuple[float, float, float]
    encapsulation: tuple[float, float, float]


STUDY_MIX = ClassMix(lamellarity=(0.873, 0.121, 0.006), encapsulation=(0.973, 0.0065, 0.0205))
BALANCED_MIX = ClassMix(lamellarity=(1 / 3, 1 / 3, 1 / 3), encapsulation=(1 / 3, 1 / 3, 1 / 3))
MIXES = {"study": STUDY_MIX, "balanced": BALANCED_MIX}


@dataclass
class SimulationConfig:
    """What a simulated field looks like; defaults resemble a 2.5 nm/px binned cryo-TEM image."""

    shape: tuple[int, int] = (512, 512)
    pixel_size_nm: float = 2.5
    objects: tuple[int, int] = (6, 14)  # liposomes per field, drawn uniformly in this range
    diameter_nm: tuple[float, float] = (30.0, 300.0)
    ellipticity: float = 0.15  # largest axis ratio minus one
    mix: ClassMix = STUDY_MIX
    dose: tuple[float, float] = (40.0, 150.0)  # electrons per (binned) pixel
    defocus_nm: tuple[float, float] = (1500.0, 4000.0)
    carbon_probability: float = 0.4
    touching_probability: float = 0.2  # chance that an object is placed touching another
    texture: np.ndarray | None = field(default=None, repr=False)  # a real micrograph to borrow texture from
    pixel_size_range_nm: tuple[float, float] | None = None  # draw the pixel size log-uniformly (overrides the above)
    astigmatism_nm: tuple[float, float] = (0.0, 0.0)  # defocus difference between the astigmatic axes
    mtf_nyquist: tuple[float, float] = (1.0, 1.0)  # detector MTF at Nyquist: 1 = ideal, lower = blurrier
    contamination: tuple[int, int] = (0, 0)  # ice crystals / contamination blobs per field
    contamination_nm: tuple[float, float] = (20.0, 300.0)  # their size, log-uniform
    # realistic image formation (docs/liposomes.md; all off by default, drawn per field):
    bilayer_volts: tuple[float, float] | None = None  # head groups' potential above ice: bilayers as projected shells
    dose_per_a2: tuple[float, float] | None = None  # electrons per Å² (replaces dose; physical contrast scale)
    ice_noise: tuple[float, float] | None = None  # ice as random phase object: phase std (rad) of 1 nm² of mean ice
    bfactor_a2: tuple[float, float] | None = None  # CTF envelope B-factor in Å² (None: the default's damping)
    cargo_particles: float = 0.0  # chance that cargo is small dense particles (full: many, uncertain: a few faint)
    cargo_density: tuple[float, float] | None = None  # cargo contrast factor, faint (<1) to dense (>1)
    irregularity: float = 0.0  # largest relative amplitude of an outline's low angular harmonics (deformed)
    faceted: float = 0.0  # chance that an object is a polygon with rounded corners
    # background flattening as processing applies it (the image minus its Gaussian blur of σ drawn
    # log-uniformly in this range, nm) on ``flatten_share`` of the fields
    flatten_nm: tuple[float, float] | None = None
    flatten_share: float = 0.5


# image formation like a microscope's: astigmatism, detector MTF, contamination (SimulationConfig(**MICROSCOPE))
MICROSCOPE = {"defocus_nm": (500.0, 5000.0), "astigmatism_nm": (0.0, 1000.0), "mtf_nyquist": (0.1, 0.8),
              "contamination": (0, 3)}
# MICROSCOPE plus bilayers as projected shells, dose per Å², ice as a phase object, particulate cargo,
# irregular shapes and background flattening on half the fields, all at wide ranges set against a real
# micrograph's statistics (SimulationConfig(**REALISTIC), or --realistic)
REALISTIC = {**MICROSCOPE, "bilayer_volts": (0.4, 1.2), "dose_per_a2": (2.0, 50.0), "ice_noise": (0.003, 0.015),
             "bfactor_a2": (100.0, 800.0), "cargo_particles": 0.6, "cargo_density": (0.2, 1.5), "irregularity": 0.12,
             "faceted": 0.15, "ellipticity": 0.6, "flatten_nm": (5.0, 30.0)}


@dataclass
class Field:
    """One simulated image with its ground truth."""

    image: np.ndarray  # (Y, X) float32, counts normalised to mean 0, std 1
    labels: np.ndarray  # (Y, X) int32 instance labels, 0 = background
    objects: list[dict[str, Any]]  # per label: classes, diameter, centre
    pixel_size_nm: float
    imaging: dict[str, Any] = field(default_factory=dict)  # the drawn microscope settings (defocus, ...)


def simulate_field(config: SimulationConfig | None = None, seed: int | np.random.Generator = 0) -> Field:
    """Draw one field of view (see the module docstring for what goes into it)."""
    config = config or SimulationConfig()
    rng = np.random.default_rng(seed)
    optional = rng.spawn(1)[0]  # draws of the optional effects: the main stream stays as without them
    realistic = optional.spawn(1)[0]  # those of the realistic effects: MICROSCOPE's draws stay as without them
    if config.pixel_size_range_nm is not None:
        low, high = np.log(config.pixel_size_range_nm)
        config = replace(config, pixel_size_nm=float(np.exp(optional.uniform(low, high))))
    physics = _physics(config, realistic)
    shape = tuple(config.shape)
    density = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    carbon = _carbon_mask(shape, rng) if rng.random() < config.carbon_probability else np.zeros(shape, bool)
    leaflets = 2 if rng.random() < 0.6 else 1
    objects: list[dict[str, Any]] = []
    for _ in range(rng.integers(config.objects[0], config.objects[1] + 1)):
        obj = _draw_object(config, rng, labels, carbon, objects, realistic)
        if obj is None:
            continue
        obj["label"] = len(objects) + 1
        _render(obj, density, labels, config.pixel_size_nm, leaflets, rng, physics, realistic)
        objects.append(obj)
    crystals, blobs = _contamination(labels, carbon, config, optional)
    image, imaging = _image(density, carbon, crystals, config, rng, optional, physics, realistic)
    for obj in objects:
        obj.pop("geometry")
    drawn = {k: round(float(physics[k] or 0), 5) for k in ("bilayer_volts", "ice_noise", "bfactor_a2")}  # 0: off
    return Field(image, labels, objects, config.pixel_size_nm, {**imaging, **drawn, "contamination": blobs})


def _physics(config: SimulationConfig, rng: np.random.Generator) -> dict[str, Any]:
    """The field's draws of the realistic effects (0 where off), and the contrast scale they imply."""
    def draw(bounds: tuple[float, float] | None) -> float:
        return float(rng.uniform(*bounds)) if bounds is not None else 0.0

    return {"rad_per_unit": PHYSICAL_RAD_PER_UNIT if config.dose_per_a2 is not None else RAD_PER_UNIT,
            "bilayer_volts": draw(config.bilayer_volts), "ice_noise": draw(config.ice_noise),
            "bfactor_a2": draw(config.bfactor_a2) if config.bfactor_a2 is not None else None,
            "cargo_particles": config.cargo_particles,
            "cargo_density": config.cargo_density}


def _carbon_mask(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A hole edge: the carbon film covers the outside of a large circle off the field's corner."""
    radius = rng.uniform(1.0, 2.5) * max(shape)
    angle = rng.uniform(0, 2 * np.pi)
    inside = rng.uniform(0.55, 0.9) * max(shape)
    cy, cx = np.array(shape) / 2 + (radius - inside + max(shape) / 2) * np.array([np.sin(angle), np.cos(angle)])
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(yy - cy, xx - cx) > radius


def _choice(rng: np.random.Generator, names: list[str], probabilities: tuple[float, ...]) -> str:
    p = np.asarray(probabilities, float)
    return names[rng.choice(len(names), p=p / p.sum())]


def _draw_object(config: SimulationConfig, rng: np.random.Generator, labels: np.ndarray, carbon: np.ndarray,
                 placed: list[dict[str, Any]], realistic: np.random.Generator | None = None) -> dict[str, Any] | None:
    """Classes, size and a free place in the ice (or touching a placed object); None if no room.
    Irregular outlines (``irregularity``, ``faceted``) are drawn from ``realistic``."""
    lamellarity = _choice(rng, LAMELLARITY, config.mix.lamellarity)
    encapsulation = _choice(rng, ENCAPSULATION, config.mix.encapsulation)
    lo, hi = np.log(config.diameter_nm)
    hi = max(lo, min(hi, np.log(0.9 * min(labels.shape) * config.pixel_size_nm)))  # it must fit in the field
    diameter_nm = float(np.exp(rng.uniform(lo, hi)))
    radius = diameter_nm / 2 / config.pixel_size_nm
    a, b = radius, radius / (1 + rng.uniform(0, config.ellipticity))
    theta = rng.uniform(0, np.pi)
    outline = _draw_outline(config, realistic) if realistic is not None else {}
    reach = _modulation(np.linspace(0, 2 * np.pi, 720), outline).max() if outline else 1.0  # outline's farthest
    overlap = lamellarity == "uncertain" and placed and rng.random() < 0.5
    touch = placed and (overlap or rng.random() < config.touching_probability)
    for _ in range(60):
        if touch:
            other = placed[rng.integers(len(placed))]
            angle = rng.uniform(0, 2 * np.pi)
            gap = 0.6 * (a + other["geometry"]["a"]) if overlap else a + other["geometry"]["a"] + 2
            cy, cx = other["centre_y"] + gap * np.sin(angle), other["centre_x"] + gap * np.cos(angle)
        else:
            cy, cx = rng.uniform(a, labels.shape[0] - a), rng.uniform(a, labels.shape[1] - a)
        if not (0 <= cy < labels.shape[0] and 0 <= cx < labels.shape[1]):
            continue
        box = _box(labels.shape, cy, cx, a * reach + 3)
        mask = _radius((box[0].stop - box[0].start, box[1].stop - box[1].start), cy - box[0].start,
                       cx - box[1].start, a * reach + 2, b * reach + 2, theta) <= 1.0
        if carbon[box][mask].mean() > 0.2:
            continue
        clash = (labels[box][mask] > 0).mean()
        if overlap or clash <= (0.03 if touch else 0):
            if overlap:  # both objects of an overlapping pair are uncertain
                for partner in np.unique(labels[box][mask]):
                    if partner:
                        placed[partner - 1]["lamellarity"] = "uncertain"
            return {"lamellarity": lamellarity, "encapsulation": encapsulation, "diameter_nm": diameter_nm,
                    "centre_y": float(cy), "centre_x": float(cx),
                    "geometry": {"a": a, "b": b, "theta": theta, "touch": bool(touch), "overlap": bool(overlap),
                                 "outline": outline, "reach": reach}}
    return None


def _draw_outline(config: SimulationConfig, rng: np.random.Generator) -> dict[str, Any]:
    """An irregular outline: a rounded polygon (``faceted``: vesicles pressed flat in thin ice, or gel-phase
    lipids) or low angular harmonics (``irregularity``: deformed, dented vesicles); {} = the ellipse."""
    if config.faceted and rng.random() < config.faceted:
        sides = int(rng.integers(4, 9))
        return {"sides": sides, "phase": float(rng.uniform(0, 2 * np.pi)),
                "rounding": float(rng.uniform(0.0, 0.7))}  # share of the corner cut off by a circle
    if config.irregularity:
        orders = np.arange(2, 6)
        return {"harmonics": [(int(k), float(rng.uniform(0, config.irregularity) / (k - 1)),
                               float(rng.uniform(0, 2 * np.pi))) for k in orders]}
    return {}


def _modulation(angle: np.ndarray, outline: dict[str, Any]) -> np.ndarray:
    """The outline's radius at each angle, relative to the ellipse's (mean about 1)."""
    if "sides" in outline:
        n = outline["sides"]
        sector = np.mod(angle - outline["phase"], 2 * np.pi / n) - np.pi / n
        inscribed = np.cos(np.pi / n)
        polygon = inscribed / np.cos(sector)  # distance to the edge of a unit regular polygon
        corner = 1.0 - outline["rounding"] * (1.0 - inscribed)  # a circle of this radius cuts the corners
        shape = np.minimum(polygon, corner)
        return shape / (inscribed + corner) * 2  # about unit mean
    if "harmonics" in outline:
        return 1.0 + sum(amp * np.cos(k * angle + phase) for k, amp, phase in outline["harmonics"])
    return np.ones_like(angle)


def _box(shape: tuple[int, ...], cy: float, cx: float, half: float) -> tuple[slice, slice]:
    """The part of the field within ``half`` pixels of a centre."""
    return (slice(max(0, int(cy - half)), min(shape[0], int(cy + half) + 2)),
            slice(max(0, int(cx - half)), min(shape[1], int(cx + half) + 2)))


def _radius(shape: tuple[int, ...], cy: float, cx: float, a: float, b: float, theta: float) -> np.ndarray:
    """Normalised elliptic radius of every pixel (1 on the ellipse)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    return np.sqrt((u / a) ** 2 + (v / b) ** 2)


def _angle(shape: tuple[int, ...], cy: float, cx: float, a: float, b: float, theta: float) -> np.ndarray:
    """Each pixel's angle around the centre in the ellipse's own frame (0 along its long axis)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    return np.arctan2(v / b, u / a)


def sphere_projection(rho: np.ndarray, radius: float, pixel: float = 1.0) -> np.ndarray:
    """Projected thickness of a sphere, 2·sqrt(r² − ρ²), averaged over ``pixel`` along ρ: a thin shell's
    projection peaks steeply at its limb, and sampling it at pixel centres alone would miss the peak."""
    if radius <= 0:
        return np.zeros_like(rho)
    h = pixel / 2

    def integral(x: np.ndarray) -> np.ndarray:  # ∫ 2·sqrt(r² − x²) dx from 0, odd in x, flat beyond r
        x = np.clip(x, -radius, radius)
        return x * np.sqrt(np.maximum(radius**2 - x**2, 0)) + radius**2 * np.arcsin(x / radius)

    return (integral(rho + h) - integral(rho - h)) / pixel


def bilayer_profile(rho: np.ndarray, radius_nm: float, pixel_size_nm: float,
                    layers: tuple[tuple[float, float, float], ...] = BILAYER_LAYERS) -> np.ndarray:
    """Projected density of a spherical bilayer whose middle is at ``radius_nm``, at projected distances
    ``rho`` (nm): the sum of its layers (outer head groups, hydrocarbon core, inner head groups) as
    spherical shells, each the difference of two spheres' projections, weighted by the layer's density.
    In nm of head-group-equivalent path: a dark limb (the electrons cross the wall tangentially) with
    a faint plateau inside (twice the wall's thickness)."""
    out = np.zeros_like(rho, dtype=np.float32)
    for middle, thickness, weight in layers:
        inner, outer = radius_nm + middle - thickness / 2, radius_nm + middle + thickness / 2
        if outer <= 0:
            continue
        shell = sphere_projection(rho, outer, pixel_size_nm) - sphere_projection(rho, max(inner, 0.0), pixel_size_nm)
        out += (weight * shell).astype(np.float32)
    return out


PARALLEL_BLEND_PX = (4.0, 8.0)  # parallel_radius: Newton step to the outline above, distance transform below
EDT_BIAS_PX = 0.2  # the distance transform's mean excess over the true depth below a sampled outline


def parallel_radius(r: np.ndarray, scale: float) -> np.ndarray:
    """Each pixel's radius (px) in the sphere of radius ``scale`` that has the same distance to the
    outline r = 1: ``scale`` less the pixel's depth below it. Shells drawn at these radii run
    parallel to an elongated or irregular outline, as membranes stacked at a fixed spacing do,
    instead of being scaled copies of it (thinner along the short axis, thicker along the long one).

    The depth is a Newton step to the outline, (1 − r) / |∇r|, near it (smooth, and exact for a
    circle, where the radius is r·scale) and the Euclidean distance transform of the object's mask
    deeper inside, where the Newton step errs by several pixels at the tips of elongated outlines;
    the two are blended between :data:`PARALLEL_BLEND_PX`.
    """
    gradient = np.hypot(*np.gradient(r.astype(np.float64)))
    newton = (1.0 - r) / np.maximum(gradient, 1.0 / (4 * scale))
    inside = r < 1
    transform = np.where(inside, ndi.distance_transform_edt(inside) - EDT_BIAS_PX, newton)
    near, far = PARALLEL_BLEND_PX
    weight = np.clip((transform - near) / (far - near), 0.0, 1.0)
    return np.clip(scale - ((1 - weight) * newton + weight * transform), 0.0, None)


def _shell(rho: np.ndarray, radius_px: float, pixel_size_nm: float, physics: dict[str, Any]) -> np.ndarray:
    """A bilayer as a projected shell whose outer surface is at ``radius_px`` (``rho``: each pixel's
    :func:`parallel_radius`), in units of projected density: the head groups' potential (V) times
    path (nm) times the interaction constant is the phase."""
    middle_nm = radius_px * pixel_size_nm - BILAYER_GAP_NM / 2 - 0.5
    path = bilayer_profile(rho * pixel_size_nm, middle_nm, pixel_size_nm)
    return path * (physics["bilayer_volts"] * INTERACTION_RAD_PER_V_NM / physics["rad_per_unit"])


def _ring(r: np.ndarray, scale: float, radius_px: float, leaflets: int, pixel_size_nm: float) -> np.ndarray:
    """Density of a bilayer of mean radius ``radius_px``: one or two Gaussian lines."""
    distance = (r - 1.0) * scale  # pixels from the outermost ellipse, negative inside
    offset = radius_px - scale
    sigma = max(0.6, 1.2 / pixel_size_nm)
    if leaflets == 1:
        return 2.0 * np.exp(-0.5 * ((distance - offset) / (1.6 * sigma)) ** 2)
    half = BILAYER_GAP_NM / 2 / pixel_size_nm
    return sum(np.exp(-0.5 * ((distance - offset - s) / sigma) ** 2) for s in (-half, half)) * 1.6


def _render(obj: dict[str, Any], density: np.ndarray, labels: np.ndarray, pixel_size_nm: float, leaflets: int,
            rng: np.random.Generator, physics: dict[str, Any] | None = None,
            realistic: np.random.Generator | None = None) -> None:
    """Add one object's density and write its instance label (newer objects on top). With
    ``physics["bilayer_volts"]`` its membranes are projected shells; an irregular outline divides the
    normalised radius, so membranes, interior and label all follow it."""
    physics = physics or {"bilayer_volts": 0.0, "rad_per_unit": RAD_PER_UNIT, "cargo_particles": 0.0}
    g = obj["geometry"]
    a, b, theta, cy, cx = g["a"], g["b"], g["theta"], obj["centre_y"], obj["centre_x"]
    pad = int(1.7 * a * g.get("reach", 1.0) + 12)  # room for fringes and an ice blob reaching past the object
    y0, y1 = max(0, int(cy) - pad), min(labels.shape[0], int(cy) + pad + 1)
    x0, x1 = max(0, int(cx) - pad), min(labels.shape[1], int(cx) + pad + 1)
    shape = (y1 - y0, x1 - x0)
    r = _radius(shape, cy - y0, cx - x0, a, b, theta)
    if g.get("outline"):
        r = r / _modulation(_angle(shape, cy - y0, cx - x0, a, b, theta), g["outline"]).astype(np.float32)
    scale = (a + b) / 2
    shells = bool(physics["bilayer_volts"])

    def ring(r: np.ndarray, rho: np.ndarray | None, scale: float, radius_px: float) -> np.ndarray:
        """A bilayer at ``radius_px``: a projected shell at the radii ``rho`` (:func:`parallel_radius`
        of ``r``, computed once per outline), or the default fields' rings of ``r``."""
        if shells:
            return _shell(rho, radius_px, pixel_size_nm, physics)
        return _ring(r, scale, radius_px, leaflets, pixel_size_nm)

    rho = parallel_radius(r, scale) if shells else None
    local = ring(r, rho, scale, scale)
    inner = scale
    if obj["lamellarity"] == "multilamellar":
        if rng.random() < 0.7:  # concentric lamellae, 5–12 nm apart
            for _ in range(rng.integers(1, 4)):
                inner -= rng.uniform(5, 12) / pixel_size_nm
                if inner < 3:
                    break
                local += ring(r, rho, scale, inner)
        else:  # a nested vesicle touching the inside of the outer one
            small = scale * rng.uniform(0.35, 0.65)
            angle = rng.uniform(0, 2 * np.pi)
            oy, ox = (scale - small - 2) * np.sin(angle), (scale - small - 2) * np.cos(angle)
            rn = _radius(shape, cy - y0 + oy, cx - x0 + ox, small, small, 0.0)
            local += ring(rn, parallel_radius(rn, small) if shells else None, small, small)
            inner = min(inner, scale - 2 * small)
    within = r
    if shells:  # the interior starts inside the inner head groups, not at the outline, parallel to it as they are
        inner -= (BILAYER_GAP_NM + 1.0) / pixel_size_nm
        within = rho / scale
    kind = obj["encapsulation"]
    if kind != "empty" and physics["cargo_particles"] and realistic.random() < physics["cargo_particles"]:
        cargo = _particles(kind, within, scale, max(inner, 2.0), pixel_size_nm, physics, realistic)
    else:
        cargo = _cargo(kind, within, scale, max(inner, 2.0), theta, shape, (cy - y0, cx - x0), rng)
    if physics.get("cargo_density") is not None:
        cargo = cargo * realistic.uniform(*physics["cargo_density"])
    local += cargo
    if obj["lamellarity"] == "uncertain" and not g["overlap"]:
        local += _ice_blob(shape, (cy - y0, cx - x0), scale, rng)
    density[y0:y1, x0:x1] += local.astype(np.float32)
    inside = r <= 1.0 + 1.5 / scale
    region = labels[y0:y1, x0:x1]
    region[inside] = obj["label"]


def _cargo(kind: str, r: np.ndarray, scale: float, inner: float, theta: float, shape: tuple[int, int],
           centre: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Interior density: a doxorubicin bundle or denser interior (full), none (empty), faint (uncertain)."""
    interior = (r * scale < inner - 1).astype(np.float32)
    if kind == "empty":
        return np.zeros(shape, np.float32)
    if kind == "uncertain":
        # a faint, partial density: half the interior, weakly
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        angle = rng.uniform(0, 2 * np.pi)
        side = ((yy - centre[0]) * np.sin(angle) + (xx - centre[1]) * np.cos(angle)) > 0
        return ndi.gaussian_filter(interior * side, 2.0) * rng.uniform(0.25, 0.4)
    if rng.random() < 0.35 or inner < 6:  # dense interior
        return ndi.gaussian_filter(interior, 1.5) * rng.uniform(0.55, 0.85)
    # a bundle of parallel fibres: an elongated ellipse striped along its long axis
    length, width = inner * rng.uniform(0.6, 0.9), inner * rng.uniform(0.25, 0.45)
    phi = theta + rng.normal(0, 0.3)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    u = dx * np.cos(phi) + dy * np.sin(phi)
    v = -dx * np.sin(phi) + dy * np.cos(phi)
    bean = np.sqrt((u / length) ** 2 + (v / width) ** 2) <= 1.0
    stripes = 0.6 + 0.4 * np.cos(2 * np.pi * v / rng.uniform(2.5, 4.0)) ** 2
    return ndi.gaussian_filter(bean * stripes, 0.8) * rng.uniform(1.2, 1.8)


def _particles(kind: str, r: np.ndarray, scale: float, inner: float, pixel_size_nm: float,
               physics: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Cargo as small dense particles (proteins, drug precipitates, nucleic-acid complexes), each a
    projected sphere 2–8 nm across: full interiors hold many (sparse to crowded), uncertain ones a few
    faint ones. Centres are Poisson points in the interior, convolved with each size's projection."""
    from scipy.signal import fftconvolve

    interior = r * scale < inner
    area_nm2 = interior.sum() * pixel_size_nm**2
    volts = (physics["bilayer_volts"] or 1.0) * INTERACTION_RAD_PER_V_NM / physics["rad_per_unit"]
    count = 0  # uncertain: a few particles in all
    if kind == "full":
        fill, faint = rng.uniform(0.05, 0.6), 1.0  # share of the interior's area covered, sparse to crowded
    else:
        fill, faint = None, rng.uniform(0.2, 0.4)
        count = int(rng.integers(2, 9))
    out = np.zeros(r.shape, np.float32)
    for diameter in rng.uniform(2.0, 8.0, 3):  # three particle sizes per object
        radius_px = diameter / 2 / pixel_size_nm
        if fill is not None:
            mean_count = fill * area_nm2 / (np.pi * (diameter / 2) ** 2) / 3
        else:
            mean_count = count / 3
        if interior.sum() == 0 or mean_count <= 0:
            continue
        centres = rng.poisson(mean_count * interior / interior.sum()).astype(np.float32)
        half = int(np.ceil(radius_px)) + 1
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
        kernel = sphere_projection(np.hypot(yy, xx).astype(np.float32), radius_px) * pixel_size_nm  # nm of path
        out += fftconvolve(centres, kernel, mode="same").astype(np.float32)
    return np.clip(out, 0, None) * volts * faint


def _ice_blob(shape: tuple[int, int], centre: tuple[float, float], scale: float,
              rng: np.random.Generator) -> np.ndarray:
    """A large dark contamination blob covering part of an object."""
    angle = rng.uniform(0, 2 * np.pi)
    radius = scale * rng.uniform(0.5, 0.8)
    by = centre[0] + scale * 0.8 * np.sin(angle)
    bx = centre[1] + scale * 0.8 * np.cos(angle)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = (np.hypot(yy - by, xx - bx) < radius).astype(np.float32)
    return ndi.gaussian_filter(blob, 3.0) * rng.uniform(0.8, 1.5)


def _texture(shape: tuple[int, ...], rng: np.random.Generator, source: np.ndarray | None) -> np.ndarray:
    """Fine background texture, unit std: a random high-passed crop of ``source`` or 1/f noise."""
    if source is not None and all(s >= t for s, t in zip(source.shape, shape)):
        y = rng.integers(0, source.shape[0] - shape[0] + 1)
        x = rng.integers(0, source.shape[1] - shape[1] + 1)
        crop = np.asarray(source[y : y + shape[0], x : x + shape[1]], np.float32)
        crop = crop - ndi.gaussian_filter(crop, 8.0)
    else:
        white = rng.standard_normal(shape).astype(np.float32)
        crop = sum(ndi.gaussian_filter(white, s) * s for s in (1.0, 2.0, 4.0))
    return (crop - crop.mean()) / (crop.std() + 1e-6)


def _background(shape: tuple[int, ...], carbon: np.ndarray, config: SimulationConfig,
                rng: np.random.Generator, relief: float = 1.0, texture: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Ice thickness (gradient + undulation, times ``relief``), carbon film and ``texture`` (its
    weight), as projected density; and the ice thickness's variation alone (gradient + undulation)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32) / max(shape)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(0.2, 1.0)
    coarse = rng.standard_normal((6, 6))  # smooth undulation: coarse noise interpolated up
    undulation = ndi.zoom(coarse, (shape[0] / 6, shape[1] / 6), order=3)[: shape[0], : shape[1]].astype(np.float32)
    undulation /= undulation.std() + 1e-6
    thickness = (gradient + 0.15 * undulation) * relief
    background = thickness + texture * _texture(shape, rng, config.texture)
    film = ndi.gaussian_filter(carbon.astype(np.float32), 1.5)
    return background + film * (rng.uniform(1.0, 1.8) + 0.25 * _texture(shape, rng, None)), thickness


def ice_phase_noise(thickness: np.ndarray, std_rad: float, pixel_size_nm: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Vitreous ice as a random phase object: its molecules' projected potential fluctuates from pixel
    to pixel. Over a column of ice the fluctuations add up like independent molecules', so the
    variance grows with the local thickness (relative to the field's mean here) and falls with the
    pixel's area: std ``std_rad``·sqrt(thickness)/pixel (nm) for ``std_rad`` the std over 1 nm².
    White before the microscope, it is what the CTF turns into the granular texture and Thon rings
    of a real micrograph's ice, where shot noise alone is white."""
    relative = np.clip(1.0 + thickness - thickness.mean(), 0.1, None)
    return (rng.standard_normal(thickness.shape) * np.sqrt(relative) * (std_rad / pixel_size_nm)).astype(np.float32)


def _ctf(shape: tuple[int, ...], pixel_size_nm: float, defocus_nm: float, amplitude: float = 0.1,
         astigmatism_nm: float = 0.0, astigmatism_angle: float = 0.0, bfactor_a2: float | None = None) -> np.ndarray:
    """Phase-contrast transfer (with amplitude contrast and a B-factor envelope) on the FFT grid.

    With astigmatism the defocus is ``defocus_nm ± astigmatism_nm / 2`` along two perpendicular
    axes (the first at ``astigmatism_angle`` from x), so the rings of zero contrast are ellipses.
    The envelope is exp(−B·k²/4): ``bfactor_a2`` in Å², or (None) the default fields' strong damping,
    B = 100 nm², which keeps only the CTF's first lobes."""
    ky = np.fft.fftfreq(shape[0], d=pixel_size_nm)
    kx = np.fft.rfftfreq(shape[1], d=pixel_size_nm)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    if astigmatism_nm:
        azimuth = np.arctan2(ky[:, None], kx[None, :])
        defocus_nm = defocus_nm + astigmatism_nm / 2 * np.cos(2 * (azimuth - astigmatism_angle))
    chi = np.pi * WAVELENGTH_NM * defocus_nm * k2
    envelope = np.exp(-25.0 * k2) if bfactor_a2 is None else np.exp(-bfactor_a2 / 400.0 * k2)
    return (np.sqrt(1 - amplitude**2) * np.sin(chi) + amplitude * np.cos(chi)) * envelope


def _mtf(shape: tuple[int, ...], at_nyquist: float) -> np.ndarray:
    """A detector's modulation transfer on the rFFT grid: 1 at zero frequency falling as a Gaussian
    to ``at_nyquist`` at the Nyquist frequency (a scintillator camera ~0.1, a counting one ~0.6)."""
    ky = np.fft.fftfreq(shape[0])
    kx = np.fft.rfftfreq(shape[1])
    k2 = (ky[:, None] ** 2 + kx[None, :] ** 2) / 0.5**2  # (frequency / Nyquist)²
    return np.exp(np.log(at_nyquist) * k2)


def _contamination(labels: np.ndarray, carbon: np.ndarray, config: SimulationConfig,
                   rng: np.random.Generator) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Ice crystals and contamination on the ice, as projected thickness (0–1 per pixel) and a list of
    what was placed. Half are hexagonal crystals (faceted, sharp-edged), half rounded irregular
    blobs; each lies in free ice, clear of every liposome, so they are pure distractors: dark
    things the detector must not call liposomes."""
    shape = labels.shape
    thickness = np.zeros(shape, np.float32)
    placed: list[dict[str, Any]] = []
    count = int(rng.integers(config.contamination[0], config.contamination[1] + 1))
    if not count:
        return thickness, placed
    occupied = ndi.binary_dilation(labels > 0, iterations=3) | carbon
    lo, hi = np.log(config.contamination_nm)
    for _ in range(count):
        radius = np.exp(rng.uniform(lo, hi)) / 2 / config.pixel_size_nm
        radius = min(radius, 0.3 * min(shape))
        kind = "crystal" if rng.random() < 0.5 else "blob"
        for _ in range(30):
            cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
            box = _box(shape, cy, cx, 1.4 * radius + 4)  # room for the shape, its blur and its clearance
            yy, xx = np.mgrid[box].astype(np.float32)
            angle = np.arctan2(yy - cy, xx - cx)
            if kind == "crystal":  # a regular hexagon: distance to its edge at each angle
                sector = np.mod(angle - rng.uniform(0, np.pi / 3), np.pi / 3) - np.pi / 6
                edge = radius * np.cos(np.pi / 6) / np.cos(sector)
            else:  # a lumpy round blob
                phases = rng.uniform(0, 2 * np.pi, 3)
                edge = radius * (1 + sum(0.12 * np.cos(k * angle + p) for k, p in zip((2, 3, 5), phases)))
            mask = np.hypot(yy - cy, xx - cx) <= edge
            if mask.any() and not (mask & occupied[box]).any():
                break
        else:
            continue
        occupied[box] |= ndi.binary_dilation(mask, iterations=3)
        thickness[box] = np.maximum(thickness[box], ndi.gaussian_filter(mask.astype(np.float32), 0.7))
        placed.append({"kind": kind, "centre_y": round(float(cy), 2), "centre_x": round(float(cx), 2),
                       "diameter_nm": round(float(2 * radius * config.pixel_size_nm), 1)})
    return thickness, placed


def _image(density: np.ndarray, carbon: np.ndarray, crystals: np.ndarray, config: SimulationConfig,
           rng: np.random.Generator, optional: np.random.Generator, physics: dict[str, Any] | None = None,
           realistic: np.random.Generator | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Image the projected density: CTF phase contrast, absorption, shot noise, detector MTF;
    normalised counts and the settings drawn. Contamination is dense: it shifts the phase (fringes
    at its edges) and absorbs strongly (dark). Ice noise (``physics``) joins the potential before
    the CTF; a dose per Å² gives the counts per pixel from the pixel's area; ``flatten_nm``
    subtracts a Gaussian blur of the recorded counts from a share of the fields."""
    physics = physics or {"rad_per_unit": RAD_PER_UNIT, "ice_noise": 0.0, "bfactor_a2": None}
    physical = config.dose_per_a2 is not None  # the physical contrast scale (see PHYSICAL_RAD_PER_UNIT)
    shape = density.shape
    # with physical contrast the ice's relief scales with the field's extent: a field 200 nm across does
    # not span the thickness change of one 1.3 µm across (the default fields' 512 × 2.5 nm)
    relief = min(1.0, max(shape) * config.pixel_size_nm / 1280) if physical else 1.0
    # the ice's phase noise replaces the default fields' smooth 1/f texture (still drawn: same stream)
    texture = 0.0 if physics["ice_noise"] and config.texture is None else 0.08
    background, thickness = _background(shape, carbon, config, rng, relief, texture)
    potential = density + background
    if physics["ice_noise"]:
        potential = potential + ice_phase_noise(thickness, physics["ice_noise"], config.pixel_size_nm,
                                                realistic) / physics["rad_per_unit"]
    defocus = rng.uniform(*config.defocus_nm)
    astigmatism = optional.uniform(*config.astigmatism_nm)
    angle = optional.uniform(0, np.pi)
    mtf = optional.uniform(*config.mtf_nyquist)
    opacity = optional.uniform(1.0, 2.5)  # contamination's absorption, in e-folds of intensity
    if crystals.any():
        potential = potential + 2.0 * crystals
    ctf = _ctf(shape, config.pixel_size_nm, defocus, astigmatism_nm=astigmatism, astigmatism_angle=angle,
               bfactor_a2=physics["bfactor_a2"])
    contrast = np.fft.irfft2(np.fft.rfft2(potential) * ctf, s=shape)
    # low frequencies (ice thickness, carbon) pass as amplitude contrast: absorption darkens them. On
    # the physical scale only the thick background absorbs: a bilayer's or cargo's amplitude contrast
    # is the CTF's (a tenth of its phase contrast); absorbing it too would give them a dark, blurred
    # body that real vesicles do not have (docs/liposomes.md, "Calibrating `REALISTIC`")
    gain = 2 * physics["rad_per_unit"] if physical else 0.9  # 2·phase per unit
    absorbing = background if physical else potential
    intensity = np.exp(-0.35 * ndi.gaussian_filter(absorbing, 6.0)) * (1 - gain * contrast)
    if crystals.any():
        intensity = intensity * np.exp(-opacity * crystals)
    dose = rng.uniform(*config.dose)
    if config.dose_per_a2 is not None:  # electrons per Å² over the pixel's area, (10 Å per nm · pixel)²
        dose = realistic.uniform(*config.dose_per_a2) * (10 * config.pixel_size_nm) ** 2
    counts = rng.poisson(np.clip(intensity, 0.05, None) * dose).astype(np.float32)
    if mtf < 1.0:
        counts = np.fft.irfft2(np.fft.rfft2(counts) * _mtf(shape, mtf), s=shape).astype(np.float32)
    flatten = 0.0
    if config.flatten_nm is not None and realistic.random() < config.flatten_share:
        flatten = float(np.exp(realistic.uniform(*np.log(config.flatten_nm))))
        counts = counts - ndi.gaussian_filter(counts, flatten / config.pixel_size_nm, mode="reflect")
    imaging = {"defocus_nm": round(float(defocus), 1), "astigmatism_nm": round(float(astigmatism), 1),
               "astigmatism_angle_deg": round(float(np.degrees(angle)), 1), "dose_per_px": round(float(dose), 1),
               "dose_per_a2": round(float(dose / (10 * config.pixel_size_nm) ** 2), 3),
               "mtf_nyquist": round(float(mtf), 3), "flatten_nm": round(flatten, 1)}  # 0: not flattened
    return ((counts - counts.mean()) / (counts.std() + 1e-6)).astype(np.float32), imaging


def write_fields(fields: Iterable[Field], out_dir: str | Path, output_format: str = "tif") -> list[Path]:
    """Save fields as ``field_NNNN.tif`` (float32 image), ``field_NNNN_labels.tif`` (instances), both
    with their pixel size in the resolution tags, one ``objects.csv`` (field, label, classes,
    diameter in nm, centre in pixels and nm) and one ``fields.csv`` (each field's pixel size and
    drawn microscope settings, to score a model per setting): a labelled set to pre-train on, read
    as the analyses read real micrographs. ``output_format="ome-zarr"``: one ``field_NNNN.ome.zarr`` per
    field instead, the image in nm with its instances under ``labels/instances``, where NGFF
    viewers find an image's labels."""
    from napari_nanoclass.io.images import check_output_format, write_csv, write_ome_zarr, write_tiff

    check_output_format(output_format)

    out_dir = Path(out_dir)
    earlier = sorted(out_dir.glob("field_*")) + [p for p in (out_dir / "objects.csv", out_dir / "fields.csv") if p.exists()]
    if earlier:  # a smaller rerun would leave stale fields that neither table lists
        raise FileExistsError(f"{out_dir}: already holds simulated fields ({earlier[0].name}, …); choose an empty "
                              "folder or remove them first")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, settings, written = [], [], []
    for i, f in enumerate(fields):
        stem = f"field_{i:04d}"
        if output_format == "ome-zarr":
            written.append(write_ome_zarr(out_dir / f"{stem}.ome.zarr", f.image, pixel_size_nm=f.pixel_size_nm,
                                          label_images={"instances": (f.labels, None)}))
        else:
            written.append(write_tiff(out_dir / f"{stem}.tif", f.image, pixel_size_nm=f.pixel_size_nm))
            write_tiff(out_dir / f"{stem}_labels.tif", f.labels, pixel_size_nm=f.pixel_size_nm)
        rows += [{"field": stem, "pixel_size_nm": f.pixel_size_nm, **_object_columns(o, f.pixel_size_nm)}
                 for o in f.objects]
        settings.append({"field": stem, "pixel_size_nm": round(f.pixel_size_nm, 4),
                         **{k: v for k, v in f.imaging.items() if k != "contamination"},
                         "contamination": len(f.imaging.get("contamination", []))})
    write_csv(out_dir / "objects.csv", rows)
    write_csv(out_dir / "fields.csv", settings)
    return written


def _object_columns(obj: dict[str, Any], pixel_size_nm: float) -> dict[str, Any]:
    """A simulated object as ``objects.csv`` columns, each length named with its unit."""
    columns = {k: v for k, v in obj.items() if k not in ("centre_y", "centre_x")}
    for axis in "yx":
        columns[f"centre_{axis}_px"] = round(obj[f"centre_{axis}"], 2)
        columns[f"centre_{axis}_nm"] = round(obj[f"centre_{axis}"] * pixel_size_nm, 2)
    return columns
