"""The handcrafted homogeneity models: texture statistics per patch + logistic regression.

Per 128×128 patch, the features of :mod:`models.texture_classifier` (grey-level co-occurrence and
LBP statistics from scikit-image) on the image z-scored by its whole-image statistics and
quantised to 32 levels. Patches take their micrograph's label for the patch regression (as the
CNN's ``instance`` strategy), which gives the patch map.

A region's verdict comes one of two ways (``pooling``):

* ``mean`` — the mean of its patch probabilities, as the CNN's; with ``basic`` features this is
  the simple baseline the issue asks the CNN to beat;
* ``region`` — a second logistic regression on statistics of its patches' features (mean,
  spread, quartiles), fitted on whole micrographs and, so that views smaller than a micrograph
  are judged as well, on random windows of at least 3 × 3 patches of them. It cross-validates
  better by micrograph (docs/homogeneity.md), so the shipped model and :func:`fit_texture_model`
  use it, with ``extended`` features.

:func:`fit_texture_model` fits a registry model (``TextureClassifier``) that the homogeneity
analysis runs like the CNN; :func:`texture_classifier` wraps it for cross-validation.
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

from napari_nanoclass.homogeneity import CLASS_COLOURS
from napari_nanoclass.homogeneity.predict import analyse
from napari_nanoclass.io.images import image_stats
from napari_nanoclass.models.registry import LoadedModel, ModelInfo, check_name, save_model, sha256_of
from napari_nanoclass.models.texture_classifier import TextureClassifier, patch_features, quantise_z, region_statistics

if TYPE_CHECKING:
    from napari_nanoclass.homogeneity.train import Micrograph

WINDOWS = 8  # random windows per micrograph for the region regression
MIN_WINDOW = 3  # patches per side of the smallest window (or the whole grid side if smaller)


def quantise(image: np.ndarray) -> np.ndarray:
    """z-score by whole-image statistics, clip at ±3σ, map to 0..LEVELS-1."""
    mean, std = image_stats(image)
    return quantise_z((np.asarray(image, dtype=np.float32) - mean) / std)


def patch_origins(shape: tuple[int, ...], patch: int = 128) -> list[tuple[int, int]]:
    """Top-left corners of the whole patches of the grid, row by row."""
    return [(y, x) for y in range(0, shape[0] - patch + 1, patch) for x in range(0, shape[1] - patch + 1, patch)]


def patch_feature_grid(image: np.ndarray, patch: int = 128, feature_set: str = "basic") -> np.ndarray:
    """(rows, cols, features) for the whole patches of the grid (at least one, reflect-padded)."""
    q = quantise(image)
    if min(q.shape) < patch:
        q = np.pad(q, [(0, max(0, patch - s)) for s in q.shape], mode="reflect")
    rows, cols = q.shape[0] // patch, q.shape[1] // patch
    features = [patch_features(q[y:y + patch, x:x + patch], feature_set) for y, x in patch_origins(q.shape, patch)]
    return np.stack(features).reshape(rows, cols, -1)


def image_patch_features(image: np.ndarray, patch: int = 128, feature_set: str = "basic") -> np.ndarray:
    """(patches, features) for every whole patch of the grid, row by row."""
    grid = patch_feature_grid(image, patch, feature_set)
    return grid.reshape(-1, grid.shape[-1])


def patch_regression(c: float = 1.0, max_iter: int = 2000) -> Pipeline:
    """The (unfitted) patch or region classifier: standardised features, class-balanced logistic regression."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter))


def _fit_patches(features: Sequence[np.ndarray], labels: Sequence[int], c: float) -> Pipeline:
    """:func:`patch_regression` on (patches, F) features of micrographs, each patch labelled with
    its micrograph's class."""
    x = np.concatenate(features)
    y = np.concatenate([np.full(len(f), label) for f, label in zip(features, labels)])
    return patch_regression(c).fit(x, y)


def region_examples(grids: Sequence[np.ndarray], labels: Sequence[int], windows: int = WINDOWS,
                    min_side: int = MIN_WINDOW, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training set of the region regression: the feature statistics of each whole micrograph and
    of ``windows`` random windows of its (rows, cols, F) patch grid, at least ``min_side`` patches
    a side, all labelled with the micrograph's class. The windows teach it views smaller than a
    micrograph (mosaic edges, small images): without them it judged 3 × 3-patch windows of held-out
    micrographs about 7 points worse, 85.0 % against 91.7 % (benchmarks/homogeneity_texture_variants.py
    --region)."""
    rng = np.random.default_rng(seed)
    x, y = [], []
    for grid, label in zip(grids, labels):
        rows, cols = grid.shape[:2]
        x.append(region_statistics(grid.reshape(-1, grid.shape[-1])))
        for _ in range(windows):
            h = rng.integers(min(min_side, rows), rows + 1)
            w = rng.integers(min(min_side, cols), cols + 1)
            y0, x0 = rng.integers(0, rows - h + 1), rng.integers(0, cols - w + 1)
            x.append(region_statistics(grid[y0:y0 + h, x0:x0 + w].reshape(-1, grid.shape[-1])))
        y += [label] * (windows + 1)
    return np.stack(x), np.array(y)


def fit_texture_model(micrographs: Sequence[Micrograph], class_names: Sequence[str], name: str, *,
                      patch: int = 128, c: float = 1.0, feature_set: str = "extended", pooling: str = "region",
                      save: bool = False, directory: Path | None = None) -> LoadedModel:
    """A texture model fitted on labelled micrographs (patch regression, and with ``pooling=
    "region"`` the region regression; verdict at p ≥ 0.5), ready for :func:`homogeneity.analyse`;
    with ``save`` also registered (``directory`` or the user's model folder)."""
    if save:
        check_name(name)  # before the compute, not when saving after it
    if pooling not in ("mean", "region"):
        raise ValueError(f"texture model {name!r}: pooling is 'mean' or 'region', not {pooling!r}")
    if any(m.label is None for m in micrographs):
        raise ValueError(f"texture model {name!r}: learns from whole-micrograph labels; "
                         "train a FibreCNN on regions marked by hand")
    labels = [m.label for m in micrographs]
    if sorted(set(labels)) != list(range(len(class_names))):
        raise ValueError(f"texture model {name!r}: needs micrographs of every class {list(class_names)}, "
                         f"got class indices {sorted(set(labels))}")
    grids = [patch_feature_grid(m.image, patch, feature_set) for m in micrographs]
    module = TextureClassifier(n_classes=len(class_names), feature_set=feature_set, region_head=pooling == "region")
    _set_head(module.patch_head, _fit_patches([g.reshape(-1, g.shape[-1]) for g in grids], labels, c))
    if module.region_head is not None:
        _set_head(module.region_head, patch_regression(c).fit(*region_examples(grids, labels)))
    module.eval()
    info = ModelInfo(
        name=name, task="patch-classification", architecture="texture-lr",
        arch_params={"n_classes": len(class_names), "feature_set": feature_set, "region_head": pooling == "region"},
        class_names=list(class_names), class_colours=CLASS_COLOURS[: len(class_names)], tile=patch, patch=patch,
        description=f"nanofibre homogeneity, {len(class_names)}-class texture statistics + logistic regression",
        training={"method": "texture + logistic regression", "C": c, "micrographs": len(micrographs),
                  "patches": "every whole patch of each micrograph's grid",
                  "aggregation": {"method": pooling, "threshold": 0.5},
                  **({"region_windows": f"each micrograph and {WINDOWS} random windows of ≥ {MIN_WINDOW}×{MIN_WINDOW} "
                                        "patches"} if pooling == "region" else {})},
    )
    path = save_model(module, info, directory) if save else Path(f"<memory:{name}>")
    return LoadedModel(info, module, sha256_of(path) if save else "", path, torch.device("cpu"))


def _set_head(head: torch.nn.Module, regression: Pipeline) -> None:
    scaler, logistic = regression.named_steps["standardscaler"], regression.named_steps["logisticregression"]
    head.set(scaler.mean_, scaler.scale_, logistic.coef_, logistic.intercept_)


def texture_classifier(patch: int = 128, c: float = 1.0, feature_set: str = "extended", pooling: str = "region"
                       ) -> Callable[[Sequence[Micrograph], int], Callable[[np.ndarray], int]]:
    """Fit function for :func:`homogeneity_training.cross_validate`: :func:`fit_texture_model`,
    each held-out image judged by :func:`homogeneity.analyse` as a user's would be."""

    def fit(train_set: Sequence[Micrograph], fold: int) -> Callable[[np.ndarray], int]:
        n_classes = max(m.label for m in train_set) + 1
        model = fit_texture_model(train_set, [str(k) for k in range(n_classes)], f"texture-fold{fold}",
                                  patch=patch, c=c, feature_set=feature_set, pooling=pooling)

        def predict(image: np.ndarray) -> int:
            return int(analyse(image, model).summary["predicted_class"])

        return predict

    return fit
