"""The handcrafted baseline the fibre CNN must beat: texture statistics per patch + logistic regression.

Per 128×128 patch: grey-level co-occurrence statistics (contrast, dissimilarity, homogeneity,
energy, correlation; distances 1, 2, 4, 8 px, averaged over four directions) and a uniform LBP
histogram (8 neighbours, radius 1 and 3), all from scikit-image, on the image z-scored by its
whole-image statistics and quantised to 32 levels. Patches take their micrograph's label for
training (as the CNN's ``instance`` strategy); a micrograph's prediction is the mean of its patch
probabilities, so CNN and baseline are compared on equal terms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .homogeneity_training import Micrograph
from .images import image_stats

LEVELS = 32
DISTANCES = (1, 2, 4, 8)
ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
LBP = ((8, 1.0), (8, 3.0))


def quantise(image: np.ndarray) -> np.ndarray:
    """z-score by whole-image statistics, clip at ±3σ, map to 0..LEVELS-1."""
    mean, std = image_stats(image)
    z = np.clip((np.asarray(image, dtype=np.float32) - mean) / std, -3, 3)
    return ((z + 3) / 6 * (LEVELS - 1)).round().astype(np.uint8)


def patch_features(patch: np.ndarray) -> np.ndarray:
    """Texture feature vector of one quantised patch."""
    glcm = graycomatrix(patch, DISTANCES, ANGLES, levels=LEVELS, symmetric=True, normed=True)
    features = [graycoprops(glcm, prop).mean(axis=1) for prop in GLCM_PROPS]
    for points, radius in LBP:
        codes = local_binary_pattern(patch, points, radius, method="uniform")
        features.append(np.bincount(codes.astype(np.int64).ravel(), minlength=points + 2) / codes.size)
    features.append(np.array([patch.mean() / LEVELS, patch.std() / LEVELS]))
    return np.concatenate(features)


def patch_origins(shape: tuple[int, ...], patch: int = 128) -> list[tuple[int, int]]:
    """Top-left corners of the whole patches of the grid, row by row."""
    return [(y, x) for y in range(0, shape[0] - patch + 1, patch) for x in range(0, shape[1] - patch + 1, patch)]


def image_patch_features(image: np.ndarray, patch: int = 128) -> np.ndarray:
    """(patches, features) for every whole patch of the grid (at least one, reflect-padded)."""
    q = quantise(image)
    if min(q.shape) < patch:
        q = np.pad(q, [(0, max(0, patch - s)) for s in q.shape], mode="reflect")
    return np.stack([patch_features(q[y:y + patch, x:x + patch]) for y, x in patch_origins(q.shape, patch)])


def texture_classifier(patch: int = 128, c: float = 1.0) -> Callable[[Sequence[Micrograph], int], Callable[[np.ndarray], int]]:
    """Fit function for :func:`homogeneity_training.cross_validate` (class-balanced logistic regression)."""

    def fit(train_set: Sequence[Micrograph], fold: int) -> Callable[[np.ndarray], int]:
        feats = [image_patch_features(m.image, patch) for m in train_set]
        x = np.concatenate(feats)
        y = np.concatenate([np.full(len(f), m.label) for f, m in zip(feats, train_set)])
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000))
        model.fit(x, y)

        def predict(image: np.ndarray) -> int:
            return int(model.classes_[np.argmax(model.predict_proba(image_patch_features(image, patch)).mean(axis=0))])

        return predict

    return fit
