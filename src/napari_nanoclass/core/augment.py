"""Training-time augmentation shared by the analyses that train on image crops (segmentation,
fibre homogeneity): one definition, so both see the same kinds of variation."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

AUGMENTATIONS = ("basic", "stack")  # "stack" adds what changes between microscopes, stacks and sessions
SCALE_RANGE = (0.8, 1.25)  # ±20 % in magnification, symmetric in log scale


def augment(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """Random rot90 and flip (applied to ``labels`` too), contrast/brightness jitter, Gaussian noise.

    Geometric changes are lossless on purpose: no scaling, so object sizes (membrane thickness,
    fibre diameter) stay what the model must judge. ``image`` is already z-score normalised.
    """
    k = rng.integers(4)
    flip = rng.random() < 0.5
    image = np.rot90(image, k)
    image = image[:, ::-1] if flip else image
    if labels is not None:
        labels = np.rot90(labels, k)
        labels = np.ascontiguousarray(labels[:, ::-1] if flip else labels)
    image = image * rng.uniform(0.8, 1.25) + rng.uniform(-0.2, 0.2)
    image = image + rng.normal(0, rng.uniform(0, 0.1), image.shape)
    return np.ascontiguousarray(image, dtype=np.float32), labels


def appearance_shift(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """What differs between two stacks of the same tissue beyond orientation: gamma (staining,
    detector response), blur (focus, section thickness), uneven illumination or section thickness
    (a smooth ramp in brightness and contrast) and stronger noise. ``image`` is z-scored; the
    result is z-scored again, as the engine normalises every image it sees."""
    low, high = np.percentile(image, [0.5, 99.5])
    unit = np.clip((image - low) / max(high - low, 1e-6), 0, 1)
    unit = unit ** np.exp(rng.uniform(np.log(0.67), np.log(1.5)))
    if rng.random() < 0.5:
        unit = ndi.gaussian_filter(unit, rng.uniform(0.3, 1.5))
    ramp = _ramp(rng, unit.shape)
    unit = unit * (1 + 0.3 * ramp * rng.uniform(-1, 1)) + 0.15 * ramp * rng.uniform(-1, 1)
    unit = unit + rng.normal(0, rng.uniform(0, 0.08), unit.shape)
    return ((unit - unit.mean()) / max(float(unit.std()), 1e-6)).astype(np.float32)


def _ramp(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A linear ramp from -1 to 1 across the image in a random direction."""
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    ramp = np.cos(theta) * yy / max(shape[0] - 1, 1) + np.sin(theta) * xx / max(shape[1] - 1, 1)
    return 2 * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6) - 1


def scale_factor(rng: np.random.Generator) -> float:
    """A random magnification change in ``SCALE_RANGE``, uniform in log scale."""
    return float(np.exp(rng.uniform(*np.log(SCALE_RANGE))))
