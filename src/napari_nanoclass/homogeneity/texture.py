"""The handcrafted homogeneity models: features per patch + logistic regression.

Per 128×128 patch, one feature set of :mod:`models.texture_classifier` — texture (grey-level
co-occurrence and LBP statistics from scikit-image, on 32 grey levels) or fibre morphology (fibre
mask, skeleton, width along it) — on the image z-scored by its whole-image statistics. Patches
take their micrograph's label for the patch regression (as the CNN's ``instance`` strategy),
which gives the patch map.

A region's verdict comes one of two ways (``pooling``):

* ``mean`` — the mean of its patch probabilities, as the CNN's; with ``basic`` features this is
  the simple baseline the issue asks the CNN to beat;
* ``region`` — a second logistic regression on statistics of its patches' features (mean,
  spread, quartiles), fitted on whole micrographs and, so that views smaller than a micrograph
  are judged as well, on random windows of at least 3 × 3 patches of them. It cross-validates
  better (docs/homogeneity.md), so the shipped model and :func:`fit_texture_model` use it.

The default recipe does not fix the feature set and regularisation: :func:`choose_recipe` picks
them on the training micrographs with whole samples held out, so a cross-validation of the recipe
is nested, and a user's retraining adapts to their samples.

:func:`fit_texture_model` fits a registry model (``TextureClassifier``) that the homogeneity
analysis runs like the CNN; :func:`texture_classifier` wraps it for cross-validation, where a
:class:`FeatureCache` lets every fold and recipe share each micrograph's measured features.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from napari_nanoclass.core.atomic import atomic_path
from napari_nanoclass.homogeneity import CLASS_COLOURS, sample_name
from napari_nanoclass.homogeneity.predict import analyse
from napari_nanoclass.io.images import image_stats
from napari_nanoclass.models.registry import LoadedModel, ModelInfo, check_name, save_model, sha256_of
from napari_nanoclass.models.texture_classifier import (
    FEATURE_SETS,
    TextureClassifier,
    patch_features,
    quantise_z,
    region_statistics,
)

if TYPE_CHECKING:
    from napari_nanoclass.homogeneity.train import Micrograph

WINDOWS = 8  # random windows per micrograph for the region regression
MIN_WINDOW = 3  # patches per side of the smallest window (or the whole grid side if smaller)


def zscore(image: np.ndarray) -> np.ndarray:
    """The image z-scored by its whole-image statistics, as the engine hands patches to the model."""
    mean, std = image_stats(image)
    return (np.asarray(image, dtype=np.float32) - mean) / std


def quantise(image: np.ndarray) -> np.ndarray:
    """z-score by whole-image statistics, clip at ±3σ, map to 0..LEVELS-1."""
    return quantise_z(zscore(image))


def patch_origins(shape: tuple[int, ...], patch: int = 128) -> list[tuple[int, int]]:
    """Top-left corners of the whole patches of the grid, row by row."""
    return [(y, x) for y in range(0, shape[0] - patch + 1, patch) for x in range(0, shape[1] - patch + 1, patch)]


def patch_feature_grid(image: np.ndarray, patch: int = 128, feature_set: str = "basic") -> np.ndarray:
    """(rows, cols, features) for the whole patches of the grid (at least one, reflect-padded)."""
    z = zscore(image)
    if min(z.shape) < patch:
        z = np.pad(z, [(0, max(0, patch - s)) for s in z.shape], mode="reflect")
    rows, cols = z.shape[0] // patch, z.shape[1] // patch
    features = [patch_features(z[y:y + patch, x:x + patch], feature_set) for y, x in patch_origins(z.shape, patch)]
    return np.stack(features).reshape(rows, cols, -1)


FeatureMeasure = Callable[[np.ndarray, int, str], np.ndarray]  # (image, patch, feature set) → (rows, cols, F)


FEATURES_VERSION = 1  # part of every cached grid's name: raise it when the feature code changes


def _content_key(image: np.ndarray) -> str:
    """A name for an image's pixels (dtype, shape and bytes): two micrographs are the same input
    only if these are, whatever they are called."""
    data = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{data.dtype.str}{data.shape}".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()[:32]


class FeatureCache:
    """Whole-patch feature grids (:func:`patch_feature_grid`) kept by micrograph content, patch size
    and feature set, in memory and, with ``folder``, on disk between runs.

    Measuring the features is the slow part of fitting and judging a texture model, and a
    cross-validation would measure every micrograph again in every fold, split seed and recipe,
    although its grid depends only on those three keys: a recipe with another feature set or
    patch size measures its own. Grids on disk are named with ``FEATURES_VERSION``, so raising it
    after a change to the feature code leaves the old ones unused. ``measure`` is what fills a
    missing grid."""

    def __init__(self, folder: str | Path | None = None, measure: FeatureMeasure = patch_feature_grid) -> None:
        self.folder = None if folder is None else Path(folder)
        self.measure = measure
        self._grids: dict[str, np.ndarray] = {}

    def grid(self, image: np.ndarray, patch: int = 128, feature_set: str = "basic") -> np.ndarray:
        """(rows, cols, F) features of the whole patches of ``image``, measured once."""
        key = f"{feature_set}-v{FEATURES_VERSION}-p{patch}-{_content_key(image)}"
        if key not in self._grids:
            grid = self._stored(key) if self._on_disk(key) else self._measured(key, image, patch, feature_set)
            grid.setflags(write=False)  # one array serves every fit: none may change it for the others
            self._grids[key] = grid
        return self._grids[key]

    def _on_disk(self, key: str) -> bool:
        return self.folder is not None and (self.folder / f"{key}.npy").is_file()

    def _stored(self, key: str) -> np.ndarray:
        return np.load(self.folder / f"{key}.npy")

    def _measured(self, key: str, image: np.ndarray, patch: int, feature_set: str) -> np.ndarray:
        grid = self.measure(image, patch, feature_set)
        if self.folder is not None:  # written whole or not at all: a killed run leaves no torn grid
            with atomic_path(self.folder / f"{key}.npy") as tmp, open(tmp, "wb") as file:
                np.save(file, grid)
        return grid


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


CANDIDATE_FEATURE_SETS = ("morphology", "extended")  # in order of preference on ties
CANDIDATE_C = (0.01, 0.1, 1.0)  # regularisation, strongest first (preferred on ties)
DEFAULT_RECIPE = ("morphology", 0.1)  # when there are too few micrographs to compare candidates


@dataclass(frozen=True)
class Recipe:
    """The feature set and regularisation a texture model is fitted with, and how they were chosen."""

    feature_set: str
    c: float
    chosen_by: str
    scores: dict[str, float] = field(default_factory=dict)  # held-out accuracy of each candidate

    def as_dict(self) -> dict[str, Any]:
        return {"feature_set": self.feature_set, "C": self.c, "chosen_by": self.chosen_by,
                "candidates": {k: round(v, 4) for k, v in self.scores.items()}}


def _recipe_split(labels: np.ndarray, groups: Sequence[str], names: Sequence[str]) -> tuple[str, list[str]] | None:
    """Groups to compare recipes on: whole samples when every class has two or more, else single
    micrographs when every class has two or more, else none (nothing to compare on)."""
    for how, keys in (("leave one sample out", list(groups)), ("leave one micrograph out", list(names))):
        if all(len({k for k, y in zip(keys, labels) if y == label}) >= 2 for label in set(labels)):
            return how, keys
    return None


def choose_recipe(grids: Mapping[str, Sequence[np.ndarray]], labels: Sequence[int], groups: Sequence[str],
                  names: Sequence[str], c: float | None = None) -> Recipe:
    """The candidate feature set (keys of ``grids``: per micrograph its (rows, cols, F) patch grid)
    and regularisation (``c`` if given, else each of ``CANDIDATE_C``) whose region regression
    classifies held-out micrographs best, holding out whole samples. Choosing on the training data
    only keeps cross-validation of the whole recipe honest (nested), and fits the recipe to the
    user's own samples when they retrain."""
    labels = np.asarray(labels)
    sets, cs = list(grids), [c] if c is not None else list(CANDIDATE_C)
    if len(sets) == 1 and len(cs) == 1:
        return Recipe(sets[0], cs[0], "given")
    split = _recipe_split(labels, groups, names)
    if split is None:
        return Recipe(sets[0] if len(sets) == 1 else DEFAULT_RECIPE[0], cs[0] if len(cs) == 1 else DEFAULT_RECIPE[1],
                      "default (too few micrographs per class to compare)")
    how, keys = split
    scores = {}
    for feature_set in sets:
        x = np.stack([region_statistics(g.reshape(-1, g.shape[-1])) for g in grids[feature_set]])
        for value in cs:
            predicted = cross_val_predict(patch_regression(value), x, labels, groups=keys, cv=LeaveOneGroupOut())
            scores[f"{feature_set} C={value:g}"] = float(np.mean(predicted == labels))
    best = max(scores, key=scores.get)  # the first of equals: candidates are in order of preference
    feature_set, value = best.split(" C=")
    return Recipe(feature_set, float(value), how, scores)


def fit_texture_model(micrographs: Sequence[Micrograph], class_names: Sequence[str], name: str, *,
                      patch: int = 128, c: float | None = None, feature_set: str = "auto", pooling: str = "region",
                      save: bool = False, directory: Path | None = None,
                      features: FeatureCache | None = None) -> LoadedModel:
    """A texture model fitted on labelled micrographs (patch regression, and with ``pooling=
    "region"`` the region regression; verdict at p ≥ 0.5), ready for :func:`homogeneity.analyse`;
    with ``save`` also registered (``directory`` or the user's model folder).

    ``feature_set="auto"`` and ``c=None`` (the default recipe) choose them among the candidates by
    :func:`choose_recipe` on these micrographs, their samples named by :func:`sample_name`.
    ``features`` takes the patch features from a cache shared by fits on overlapping micrographs
    (cross-validation folds) instead of measuring them here."""
    if save:
        check_name(name)  # before the compute, not when saving after it
    if pooling not in ("mean", "region"):
        raise ValueError(f"texture model {name!r}: pooling is 'mean' or 'region', not {pooling!r}")
    if feature_set != "auto" and feature_set not in FEATURE_SETS:
        raise ValueError(f"texture model {name!r}: feature set is auto or one of {', '.join(FEATURE_SETS)}, "
                         f"not {feature_set!r}")
    if any(m.label is None for m in micrographs):
        raise ValueError(f"texture model {name!r}: learns from whole-micrograph labels; "
                         "train a FibreCNN on regions marked by hand")
    labels = [m.label for m in micrographs]
    if sorted(set(labels)) != list(range(len(class_names))):
        raise ValueError(f"texture model {name!r}: needs micrographs of every class {list(class_names)}, "
                         f"got class indices {sorted(set(labels))}")
    sets = CANDIDATE_FEATURE_SETS if feature_set == "auto" else (feature_set,)
    measure = patch_feature_grid if features is None else features.grid
    grids = {s: [measure(m.image, patch, s) for m in micrographs] for s in sets}
    samples = [sample_name(m.name) for m in micrographs]
    recipe = choose_recipe(grids, labels, samples, [m.name for m in micrographs], c)
    chosen = grids[recipe.feature_set]
    module = TextureClassifier(n_classes=len(class_names), feature_set=recipe.feature_set,
                               region_head=pooling == "region")
    _set_head(module.patch_head, _fit_patches([g.reshape(-1, g.shape[-1]) for g in chosen], labels, recipe.c))
    if module.region_head is not None:
        _set_head(module.region_head, patch_regression(recipe.c).fit(*region_examples(chosen, labels)))
    module.eval()
    info = ModelInfo(
        name=name, task="patch-classification", architecture="texture-lr",
        arch_params={"n_classes": len(class_names), "feature_set": recipe.feature_set,
                     "region_head": pooling == "region"},
        class_names=list(class_names), class_colours=CLASS_COLOURS[: len(class_names)], tile=patch, patch=patch,
        description=f"nanofibre homogeneity, {len(class_names)}-class {recipe.feature_set} features + "
                    "logistic regression",
        training={"method": f"{recipe.feature_set} features + logistic regression", "C": recipe.c,
                  "recipe": recipe.as_dict(), "micrographs": len(micrographs),
                  "samples": len(set(samples)),
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


def texture_classifier(patch: int = 128, c: float | None = None, feature_set: str = "auto", pooling: str = "region",
                       features: FeatureCache | None = None,
                       on_fit: Callable[[int, LoadedModel], None] | None = None
                       ) -> Callable[[Sequence[Micrograph], int], Callable[[np.ndarray], int]]:
    """Fit function for :func:`homogeneity.train.cross_validate`: :func:`fit_texture_model` on the
    training fold, each held-out image judged as :func:`homogeneity.analyse` judges a user's
    (:func:`judge`). With ``features`` the folds, split seeds and recipes share each micrograph's
    measured features. ``on_fit(fold, model)`` sees each fold's model (which recipe it chose)."""

    def fit(train_set: Sequence[Micrograph], fold: int) -> Callable[[np.ndarray], int]:
        n_classes = max(m.label for m in train_set) + 1
        model = fit_texture_model(train_set, [str(k) for k in range(n_classes)], f"texture-fold{fold}",
                                  patch=patch, c=c, feature_set=feature_set, pooling=pooling, features=features)
        if on_fit is not None:
            on_fit(fold, model)
        return lambda image: judge(model, image, features)

    return fit


def judge(model: LoadedModel, image: np.ndarray, features: FeatureCache | None = None) -> int:
    """Class index of a whole micrograph by a texture model whose classes are named by index, as
    :func:`homogeneity.analyse` gives it. A model with a region head pools exactly the whole grid
    patches (:func:`pooled_patches`), so with ``features`` its verdict comes from their cached grid
    rather than from measuring them again; they go to the head as float32, as the engine hands
    them over. A model that pools patch probabilities also weighs in the edge patches, which the
    grid lacks: it is judged through the engine."""
    module = model.module
    if features is None or module.region_head is None:
        return int(analyse(image, model).summary["predicted_class"])
    grid = features.grid(image, int(model.info.patch), module.feature_set)
    return int(np.argmax(module.region_logits(grid.reshape(-1, grid.shape[-1]).astype(np.float32))))
