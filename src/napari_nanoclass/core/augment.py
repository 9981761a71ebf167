"""Training-time augmentation shared by the analyses that train on image crops (segmentation,
fibre homogeneity): one definition, so both see the same kinds of variation."""

from __future__ import annotations

import numpy as np


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
