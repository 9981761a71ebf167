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
BILAYER_GAP_NM = 4.0  # between the two leaflets' head-group lines


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


# image formation like a microscope's: astigmatism, detector MTF, contamination (SimulationConfig(**MICROSCOPE))
MICROSCOPE = {"defocus_nm": (500.0, 5000.0), "astigmatism_nm": (0.0, 1000.0), "mtf_nyquist": (0.1, 0.8),
              "contamination": (0, 3)}


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
    if config.pixel_size_range_nm is not None:
        low, high = np.log(config.pixel_size_range_nm)
        config = replace(config, pixel_size_nm=float(np.exp(optional.uniform(low, high))))
    shape = tuple(config.shape)
    density = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    carbon = _carbon_mask(shape, rng) if rng.random() < config.carbon_probability else np.zeros(shape, bool)
    leaflets = 2 if rng.random() < 0.6 else 1
    objects: list[dict[str, Any]] = []
    for _ in range(rng.integers(config.objects[0], config.objects[1] + 1)):
        obj = _draw_object(config, rng, labels, carbon, objects)
        if obj is None:
            continue
        obj["label"] = len(objects) + 1
        _render(obj, density, labels, config.pixel_size_nm, leaflets, rng)
        objects.append(obj)
    crystals, blobs = _contamination(labels, carbon, config, optional)
    image, imaging = _image(density, carbon, crystals, config, rng, optional)
    for obj in objects:
        obj.pop("geometry")
    return Field(image, labels, objects, config.pixel_size_nm, {**imaging, "contamination": blobs})


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
                 placed: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Classes, size and a free place in the ice (or touching a placed object); None if no room."""
    lamellarity = _choice(rng, LAMELLARITY, config.mix.lamellarity)
    encapsulation = _choice(rng, ENCAPSULATION, config.mix.encapsulation)
    lo, hi = np.log(config.diameter_nm)
    hi = max(lo, min(hi, np.log(0.9 * min(labels.shape) * config.pixel_size_nm)))  # it must fit in the field
    diameter_nm = float(np.exp(rng.uniform(lo, hi)))
    radius = diameter_nm / 2 / config.pixel_size_nm
    a, b = radius, radius / (1 + rng.uniform(0, config.ellipticity))
    theta = rng.uniform(0, np.pi)
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
        box = _box(labels.shape, cy, cx, a + 3)
        mask = _radius((box[0].stop - box[0].start, box[1].stop - box[1].start), cy - box[0].start,
                       cx - box[1].start, a + 2, b + 2, theta) <= 1.0
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
                    "geometry": {"a": a, "b": b, "theta": theta, "touch": bool(touch), "overlap": bool(overlap)}}
    return None


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
            rng: np.random.Generator) -> None:
    """Add one object's density and write its instance label (newer objects on top)."""
    g = obj["geometry"]
    a, b, theta, cy, cx = g["a"], g["b"], g["theta"], obj["centre_y"], obj["centre_x"]
    pad = int(1.7 * a + 12)  # room for fringes and an ice blob reaching past the object
    y0, y1 = max(0, int(cy) - pad), min(labels.shape[0], int(cy) + pad + 1)
    x0, x1 = max(0, int(cx) - pad), min(labels.shape[1], int(cx) + pad + 1)
    shape = (y1 - y0, x1 - x0)
    r = _radius(shape, cy - y0, cx - x0, a, b, theta)
    scale = (a + b) / 2
    local = _ring(r, scale, scale, leaflets, pixel_size_nm)
    inner = scale
    if obj["lamellarity"] == "multilamellar":
        if rng.random() < 0.7:  # concentric lamellae, 5–12 nm apart
            for _ in range(rng.integers(1, 4)):
                inner -= rng.uniform(5, 12) / pixel_size_nm
                if inner < 3:
                    break
                local += _ring(r, scale, inner, leaflets, pixel_size_nm)
        else:  # a nested vesicle touching the inside of the outer one
            small = scale * rng.uniform(0.35, 0.65)
            angle = rng.uniform(0, 2 * np.pi)
            oy, ox = (scale - small - 2) * np.sin(angle), (scale - small - 2) * np.cos(angle)
            rn = _radius(shape, cy - y0 + oy, cx - x0 + ox, small, small, 0.0)
            local += _ring(rn, small, small, leaflets, pixel_size_nm)
            inner = min(inner, scale - 2 * small)
    local += _cargo(obj["encapsulation"], r, scale, max(inner, 2.0), theta, shape, (cy - y0, cx - x0), rng)
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
                rng: np.random.Generator) -> np.ndarray:
    """Ice thickness (gradient + undulation), carbon film and texture, as projected density."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32) / max(shape)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(0.2, 1.0)
    coarse = rng.standard_normal((6, 6))  # smooth undulation: coarse noise interpolated up
    undulation = ndi.zoom(coarse, (shape[0] / 6, shape[1] / 6), order=3)[: shape[0], : shape[1]].astype(np.float32)
    undulation /= undulation.std() + 1e-6
    background = gradient + 0.15 * undulation + 0.08 * _texture(shape, rng, config.texture)
    film = ndi.gaussian_filter(carbon.astype(np.float32), 1.5)
    return background + film * (rng.uniform(1.0, 1.8) + 0.25 * _texture(shape, rng, None))


def _ctf(shape: tuple[int, ...], pixel_size_nm: float, defocus_nm: float, amplitude: float = 0.1,
         astigmatism_nm: float = 0.0, astigmatism_angle: float = 0.0) -> np.ndarray:
    """Phase-contrast transfer (with amplitude contrast and a B-factor envelope) on the FFT grid.

    With astigmatism the defocus is ``defocus_nm ± astigmatism_nm / 2`` along two perpendicular
    axes (the first at ``astigmatism_angle`` from x), so the rings of zero contrast are ellipses."""
    ky = np.fft.fftfreq(shape[0], d=pixel_size_nm)
    kx = np.fft.rfftfreq(shape[1], d=pixel_size_nm)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    if astigmatism_nm:
        azimuth = np.arctan2(ky[:, None], kx[None, :])
        defocus_nm = defocus_nm + astigmatism_nm / 2 * np.cos(2 * (azimuth - astigmatism_angle))
    chi = np.pi * WAVELENGTH_NM * defocus_nm * k2
    envelope = np.exp(-25.0 * k2)  # B ≈ 100 Å²: damps the finest fringes
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
           rng: np.random.Generator, optional: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Image the projected density: CTF phase contrast, absorption, shot noise, detector MTF;
    normalised counts and the settings drawn. Contamination is dense: it shifts the phase (fringes
    at its edges) and absorbs strongly (dark)."""
    shape = density.shape
    potential = density + _background(shape, carbon, config, rng)
    defocus = rng.uniform(*config.defocus_nm)
    astigmatism = optional.uniform(*config.astigmatism_nm)
    angle = optional.uniform(0, np.pi)
    mtf = optional.uniform(*config.mtf_nyquist)
    opacity = optional.uniform(1.0, 2.5)  # contamination's absorption, in e-folds of intensity
    if crystals.any():
        potential = potential + 2.0 * crystals
    ctf = _ctf(shape, config.pixel_size_nm, defocus, astigmatism_nm=astigmatism, astigmatism_angle=angle)
    contrast = np.fft.irfft2(np.fft.rfft2(potential) * ctf, s=shape)
    # low frequencies (ice thickness, carbon) pass as amplitude contrast: absorption darkens them
    intensity = np.exp(-0.35 * ndi.gaussian_filter(potential, 6.0)) * (1 - 0.9 * contrast)
    if crystals.any():
        intensity = intensity * np.exp(-opacity * crystals)
    dose = rng.uniform(*config.dose)
    counts = rng.poisson(np.clip(intensity, 0.05, None) * dose).astype(np.float32)
    if mtf < 1.0:
        counts = np.fft.irfft2(np.fft.rfft2(counts) * _mtf(shape, mtf), s=shape).astype(np.float32)
    imaging = {"defocus_nm": round(float(defocus), 1), "astigmatism_nm": round(float(astigmatism), 1),
               "astigmatism_angle_deg": round(float(np.degrees(angle)), 1), "dose_per_px": round(float(dose), 1),
               "mtf_nyquist": round(float(mtf), 3)}
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
