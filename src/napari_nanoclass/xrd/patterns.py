"""Reading measured X-ray diffraction patterns and preparing them for a model.

A pattern is two columns, 2θ in degrees and intensity (counts): ``.xy`` / ``.xye`` (whitespace,
a third column of errors is ignored), ``.csv`` / ``.txt`` (comma, semicolon or whitespace).
Header or comment lines before the numbers are skipped. Every problem becomes one
:class:`PatternError` line naming the file and what is wrong (empty, one column, non-numeric,
2θ not increasing), because a batch of hundreds of files must say which one to fix.

Some diffractometer exports write fixed-width columns that run together when the intensity has
as many digits as its field (``14.168110228`` for ``14.1681  10228``); such lines are split at the
column boundary the well-formed lines of the same file show, and refused if there is none.

:func:`prepare` turns a pattern into the model's input, the same way for measured and simulated
patterns: area-preserving resampling to the model's 2θ grid, square-root intensity (thin films
put most of the counts in one or two textured peaks; the root keeps the weaker ones visible),
background removal (a rolling minimum under the peaks, smoothed), scaling to a maximum of 1 and
an optional FFT low-pass. The grid and these settings are stored with each model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PATTERN_SUFFIXES = (".xy", ".xye", ".csv", ".txt", ".dat")
_SEPARATORS = re.compile(r"[,;\s]+")


class PatternError(ValueError):
    """A pattern file cannot be used; the message names the file and the reason."""


@dataclass
class Pattern:
    """A measured pattern: strictly increasing ``two_theta`` (degrees) and its ``intensity``."""

    two_theta: np.ndarray
    intensity: np.ndarray
    name: str
    path: Path | None = None


def _numbers(line: str) -> list[float] | None:
    """The numbers of a line, or None when any field is not a number."""
    fields = [f for f in _SEPARATORS.split(line.strip()) if f]
    try:
        return [float(f) for f in fields]
    except ValueError:
        return None


def _split_fixed_width(lines: Sequence[str], rows: list[list[float] | None]) -> list[list[float] | None]:
    """Split run-together fixed-width lines (one number where two were meant) at the end column of
    the first field that nearly all well-formed lines share; leave them alone if there is none."""
    from collections import Counter

    ends = Counter(len(line) - len(line.lstrip()) + len(line.split()[0]) for line, row in zip(lines, rows)
                   if row is not None and len(row) >= 2)
    if not ends:
        return rows
    end, count = ends.most_common(1)[0]
    if count < 0.9 * sum(ends.values()):
        return rows
    fixed = []
    for line, row in zip(lines, rows):
        if row is not None and len(row) == 1 and len(line.rstrip()) > end:
            row = _numbers(f"{line[:end]} {line[end:]}")
        fixed.append(row)
    return fixed


def parse_pattern(text: str, source: str = "pattern") -> tuple[np.ndarray, np.ndarray]:
    """2θ and intensity from the text of a pattern file (see the module docstring); PatternError
    naming ``source`` otherwise."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", "!", "'"))]
    if not lines:
        raise PatternError(f"{source}: file is empty (no data lines)")
    rows = [_numbers(line) for line in lines]
    first = next((i for i, row in enumerate(rows) if row is not None), None)
    if first is None:
        raise PatternError(f"{source}: no numeric data (first line: {lines[0][:60]!r})")
    lines, rows = lines[first:], rows[first:]  # a header before the numbers is allowed
    bad = next((i for i, row in enumerate(rows) if row is None), None)
    if bad is not None:
        raise PatternError(f"{source}: non-numeric value on data line {first + bad + 1}: {lines[bad][:60]!r}")
    if any(len(row) == 1 for row in rows):
        rows = _split_fixed_width(lines, rows)
    if all(len(row) == 1 for row in rows):
        raise PatternError(f"{source}: only one column; expected two columns, 2θ (degrees) and intensity")
    short = next((i for i, row in enumerate(rows) if len(row) < 2), None)
    if short is not None:
        raise PatternError(f"{source}: data line {first + short + 1} has one column, expected 2θ and intensity: "
                           f"{lines[short][:60]!r}")
    data = np.array([row[:2] for row in rows], dtype=np.float64)
    return check_pattern(data[:, 0], data[:, 1], source)


def check_pattern(two_theta: Any, intensity: Any, source: str = "pattern") -> tuple[np.ndarray, np.ndarray]:
    """Refuse what no model can use: too few points, non-finite values, 2θ not strictly increasing
    or outside (0°, 180°) — a model's grid means nothing for such data."""
    two_theta, intensity = np.asarray(two_theta, np.float64).ravel(), np.asarray(intensity, np.float64).ravel()
    if two_theta.shape != intensity.shape:
        raise PatternError(f"{source}: {two_theta.size} 2θ values but {intensity.size} intensities")
    if two_theta.size < 10:
        raise PatternError(f"{source}: only {two_theta.size} data points; a diffraction pattern needs at least 10")
    if not (np.isfinite(two_theta).all() and np.isfinite(intensity).all()):
        raise PatternError(f"{source}: contains NaN or infinite values")
    step = np.diff(two_theta)
    if (step <= 0).any():
        i = int(np.argmax(step <= 0))
        raise PatternError(f"{source}: 2θ is not strictly increasing ({two_theta[i]:g} then {two_theta[i + 1]:g} "
                           f"at data point {i + 2}); sort the file by 2θ")
    if two_theta[0] <= 0 or two_theta[-1] >= 180:
        raise PatternError(f"{source}: 2θ runs from {two_theta[0]:g} to {two_theta[-1]:g}; expected degrees "
                           "between 0 and 180")
    return two_theta, intensity


def read_pattern(path: str | Path) -> Pattern:
    """Read a ``.xy`` / ``.xye`` / ``.csv`` pattern file as a checked :class:`Pattern`."""
    from napari_nanoclass.io.images import file_stem

    path = Path(path)
    if not path.is_file():
        raise PatternError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise PatternError(f"{path}: file is empty (0 bytes)")
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    if "\x00" in text:
        raise PatternError(f"{path}: binary file, not a two-column text pattern (.xy, .xye, .csv)")
    two_theta, intensity = parse_pattern(text, str(path))
    return Pattern(two_theta, intensity, file_stem(path), path)


# -- preparation ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preparation:
    """How a pattern becomes a model input; stored in a model's ``normalisation`` metadata."""

    start: float = 10.0  # first grid point, degrees 2θ
    stop: float = 60.0  # last grid point
    points: int = 1251
    background_deg: float = 3.0  # width of the rolling minimum: wider than any peak, narrower than humps
    scale: str = "sqrt"  # "sqrt" or "linear" intensity
    lowpass: float | None = None  # keep this fraction of the FFT frequencies (None: no filter)

    @property
    def grid(self) -> np.ndarray:
        return np.linspace(self.start, self.stop, self.points)

    @property
    def step(self) -> float:
        return (self.stop - self.start) / (self.points - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "xrd", "start": self.start, "stop": self.stop, "points": self.points,
                "background_deg": self.background_deg, "scale": self.scale, "lowpass": self.lowpass}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preparation:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def resample(two_theta: np.ndarray, intensity: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean intensity over each grid bin (area-preserving, so a finely stepped scan keeps its peak
    areas on a coarser grid) and a mask of the bins inside the measured range."""
    step = grid[1] - grid[0]
    area = np.concatenate([[0.0], np.cumsum(0.5 * (intensity[1:] + intensity[:-1]) * np.diff(two_theta))])
    lo, hi = grid - step / 2, grid + step / 2
    inside = (lo >= two_theta[0]) & (hi <= two_theta[-1])
    values = (np.interp(hi, two_theta, area) - np.interp(lo, two_theta, area)) / step
    return np.where(inside, values, 0.0), inside


def remove_background(values: np.ndarray, inside: np.ndarray, width: int) -> np.ndarray:
    """Values less a smooth lower envelope (grey opening over ``width`` points, then a moving
    mean), over the measured bins only: amorphous substrate humps and air scatter go, peaks
    narrower than ``width`` stay. The ends are extended by straight lines fitted to their last
    ``width`` points first, since an opening cannot follow a steep slope into an edge."""
    from scipy.ndimage import grey_opening, uniform_filter1d

    out = np.zeros_like(values)
    if not inside.any():
        return out
    idx = np.flatnonzero(inside)
    part = values[idx[0]: idx[-1] + 1]
    width = max(3, min(int(width), part.size))
    padded = np.concatenate([_extend(part[:width], width, before=True), part, _extend(part[-width:], width)])
    envelope = uniform_filter1d(grey_opening(padded, size=width), width)[width:-width]
    out[idx[0]: idx[-1] + 1] = np.maximum(part - np.minimum(envelope, part), 0.0)
    return out


def _extend(end: np.ndarray, n: int, before: bool = False) -> np.ndarray:
    """``n`` points continuing the straight line fitted to ``end`` beyond it (before or after)."""
    slope, offset = np.polyfit(np.arange(end.size), end, 1)
    at = np.arange(-n, 0) if before else np.arange(end.size, end.size + n)
    return slope * at + offset


def lowpass(values: np.ndarray, keep: float) -> np.ndarray:
    """FFT low-pass: frequencies above ``keep`` × Nyquist removed with a cosine taper (a hard cut
    rings around sharp peaks); the denoising of the seed paper."""
    spectrum = np.fft.rfft(values)
    f = np.linspace(0.0, 1.0, spectrum.size)
    taper = np.clip((1.2 * keep - f) / (0.2 * keep), 0.0, 1.0)
    taper = 0.5 - 0.5 * np.cos(np.pi * taper)
    return np.fft.irfft(spectrum * taper, n=values.size)


def prepare_values(values: np.ndarray, inside: np.ndarray, prep: Preparation) -> np.ndarray:
    """Intensity scale, background removal, maximum 1, optional low-pass of values already on the
    grid (simulated patterns enter here; measured ones through :func:`prepare`). The square root
    comes first: it makes counting noise even over the pattern (Anscombe) and flattens the
    background, so the envelope leaves less behind."""
    if prep.scale == "sqrt":
        values = np.sqrt(np.maximum(values, 0.0))
    elif prep.scale != "linear":
        raise ValueError(f"unknown intensity scale {prep.scale!r} (sqrt or linear)")
    signal = remove_background(values, inside, int(round(prep.background_deg / prep.step)))
    if prep.lowpass:
        signal = np.maximum(lowpass(signal, prep.lowpass), 0.0) * inside
    top = float(signal.max())
    return (signal / top if top > 0 else signal).astype(np.float32)


def prepare(pattern: Pattern, prep: Preparation) -> np.ndarray:
    """The model input of a measured pattern: (points,) float32 in 0–1 on ``prep.grid``.
    Bins outside the measured range are 0; a pattern with no bin on the grid is refused."""
    values, inside = resample(pattern.two_theta, pattern.intensity, prep.grid)
    if inside.sum() < 10:
        where = pattern.path or pattern.name
        raise PatternError(f"{where}: measured from {pattern.two_theta[0]:g}° to {pattern.two_theta[-1]:g}° 2θ, "
                           f"outside the model's range {prep.start:g}–{prep.stop:g}°")
    return prepare_values(values, inside, prep)
