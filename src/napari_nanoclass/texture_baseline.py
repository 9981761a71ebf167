"""The handcrafted baseline the fibre CNN must beat: texture statistics per patch + logistic regression.

Per 128×128 patch, the features of :mod:`models.texture_classifier` (grey-level co-occurrence and
LBP statistics from scikit-image) on the image z-scored by its whole-image statistics and
quantised to 32 levels. Patches take their micrograph's label for training (as the CNN's
``instance`` strategy); a micrograph's prediction is the mean of its patch probabilities, so CNN
and baseline are compared on equal terms. :func:`fit_texture_model` turns the fitted regression
into a registry model (``TextureClassifier``) that the homogeneity analysis runs like the CNN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .homogeneity import CLASS_COLOURS
from .images import image_stats
from .models.registry import LoadedModel, ModelInfo, save_model, sha256_of
from .models.texture_classifier import N_FEATURES, TextureClassifier, patch_features, quantise_z

if TYPE_CHECKING:
    from .homogeneity_training import Micrograph


def quantise(image: np.ndarray) -> np.ndarray:
    """z-score by whole-image statistics, clip at ±3σ, map to 0..LEVELS-1."""
    mean, std = image_stats(image)
    return quantise_z((np.asarray(image, dtype=np.float32) - mean) / std)


def patch_origins(shape: tuple[int, ...], patch: int = 128) -> list[tuple[int, int]]:
    """Top-left corners of the whole patches of the grid, row by row."""
    return [(y, x) for y in range(0, shape[0] - patch + 1, patch) for x in range(0, shape[1] - patch + 1, patch)]


def image_patch_features(image: np.ndarray, patch: int = 128) -> np.ndarray:
    """(patches, features) for every whole patch of the grid (at least one, reflect-padded)."""
    q = quantise(image)
    if min(q.shape) < patch:
        q = np.pad(q, [(0, max(0, patch - s)) for s in q.shape], mode="reflect")
    return np.stack([patch_features(q[y:y + patch, x:x + patch]) for y, x in patch_origins(q.shape, patch)])


def patch_regression(c: float = 1.0, max_iter: int = 2000) -> Pipeline:
    """The baseline's (unfitted) patch classifier: standardised features, class-balanced logistic regression."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter))


def fit_patch_regression(micrographs: Sequence[Micrograph], patch: int = 128, c: float = 1.0) -> Pipeline:
    """:func:`patch_regression` fitted on the grid patches of labelled micrographs, each patch
    labelled with its micrograph's class."""
    feats = [image_patch_features(m.image, patch) for m in micrographs]
    x = np.concatenate(feats)
    y = np.concatenate([np.full(len(f), m.label) for f, m in zip(feats, micrographs)])
    return patch_regression(c).fit(x, y)


def texture_classifier(patch: int = 128, c: float = 1.0) -> Callable[[Sequence[Micrograph], int], Callable[[np.ndarray], int]]:
    """Fit function for :func:`homogeneity_training.cross_validate`."""

    def fit(train_set: Sequence[Micrograph], fold: int) -> Callable[[np.ndarray], int]:
        model = fit_patch_regression(train_set, patch, c)

        def predict(image: np.ndarray) -> int:
            return int(model.classes_[np.argmax(model.predict_proba(image_patch_features(image, patch)).mean(axis=0))])

        return predict

    return fit


def fit_texture_model(micrographs: Sequence[Micrograph], class_names: Sequence[str], name: str, *,
                      patch: int = 128, c: float = 1.0, save: bool = False, directory: Path | None = None
                      ) -> LoadedModel:
    """The baseline fitted on labelled micrographs as a registry model (mean pooling, verdict at
    p ≥ 0.5), ready for :func:`homogeneity.analyse`; with ``save`` also registered (``directory``
    or the user's model folder)."""
    if any(m.label is None for m in micrographs):
        raise ValueError(f"texture model {name!r}: learns from whole-micrograph labels; "
                         "train a FibreCNN on regions marked by hand")
    labels = sorted({m.label for m in micrographs})
    if labels != list(range(len(class_names))):
        raise ValueError(f"texture model {name!r}: needs micrographs of every class {list(class_names)}, "
                         f"got class indices {labels}")
    regression = fit_patch_regression(micrographs, patch, c)
    scaler, logistic = regression.named_steps["standardscaler"], regression.named_steps["logisticregression"]
    module = TextureClassifier(N_FEATURES, len(class_names))
    module.set_regression(scaler.mean_, scaler.scale_, logistic.coef_, logistic.intercept_)
    module.eval()
    info = ModelInfo(
        name=name, task="patch-classification", architecture="texture-lr",
        arch_params={"n_features": N_FEATURES, "n_classes": len(class_names)}, class_names=list(class_names),
        class_colours=CLASS_COLOURS[: len(class_names)], tile=patch, patch=patch,
        description=f"nanofibre homogeneity, {len(class_names)}-class texture statistics + logistic regression",
        training={"method": "texture + logistic regression", "C": c, "micrographs": len(micrographs),
                  "patches": "every whole patch of each micrograph's grid",
                  "aggregation": {"method": "mean", "threshold": 0.5}},
    )
    path = save_model(module, info, directory) if save else Path(f"<memory:{name}>")
    return LoadedModel(info, module, sha256_of(path) if save else "", path, torch.device("cpu"))
