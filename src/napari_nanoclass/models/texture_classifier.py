"""The SEM texture classifier as a registry model: texture statistics per patch + linear layers.

The handcrafted models of the homogeneity analysis (:mod:`napari_nanoclass.texture_baseline`)
cross-validate better by micrograph than the FibreCNN on the nanofibre data set, so they are
registry models too: the engine hands them 128×128 patches z-scored by whole-image statistics, as
it does the CNN; they quantise them, measure grey-level co-occurrence and LBP statistics with
scikit-image on the CPU and apply fitted logistic regressions (standardisation + linear layer,
stored in safetensors like any model's weights). Nothing differentiable runs before the linear
layers, so these models have no Grad-CAM.

Per patch (``basic`` features): GLCM contrast, dissimilarity, homogeneity, energy and correlation
at distances 1, 2, 4, 8 px averaged over four directions, uniform LBP histograms (8 neighbours at
radius 1 and 3), and the patch's mean and spread, on 32 grey levels spanning ±3 standard deviations
of the image. ``extended`` adds structure at fibre-spacing scale: GLCM at an eighth and a quarter
of the patch (16 and 32 px at 128), an LBP histogram with 16 neighbours at radius 6 and grey-level
quantiles.

``morphology`` measures the fibres themselves rather than their texture: the fibre mask (the
patch minus its smooth background, above Otsu's threshold, and above a fixed quarter of the image's
standard deviation), its skeleton, and from the distance transform the fibre radius along the
skeleton. Per mask: the covered fraction, the skeleton length times the median radius (how much of
the patch the fibre network would cover at uniform width), the median radius, and, relative to the
median radius so that magnification cancels, the radius spread, its 90th and 99th percentiles, the
share of the skeleton more than two and three times as wide as the median and the share of the mask
deeper than twice the median radius. Beads and spindles are exactly where the fibre is much wider
than its median; sparse, broken mats cover less. These cross-validate better with whole *samples*
held out than the texture sets (docs/homogeneity.md).

Two heads: the *patch* regression gives every patch its class probabilities (the map); the
optional *region* regression gives a region (a view, an image) its class from statistics of its
patches' features (:func:`region_statistics`) — the distribution of textures across a micrograph
says more about its homogeneity than the mean of independent patch verdicts. It pools the patches
wholly inside the image (:func:`pooled_patches`), as it was fitted.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from skimage.filters import threshold_otsu
from skimage.morphology import skeletonize
from torch import nn

LEVELS = 32
DISTANCES = (1, 2, 4, 8)
ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
LBP = ((8, 1.0), (8, 3.0))
FAR_PROPS = ("contrast", "homogeneity", "energy", "correlation")
FAR_LBP = (16, 6.0)
QUANTILES = (5, 25, 50, 75, 95)
MASK_THRESHOLDS = ("otsu", 0.25)  # fibre masks: Otsu's threshold, and a fixed 0.25 σ above the background
BACKGROUND_SIGMA = 16  # px, smooth background subtracted before thresholding (an eighth of the 128 px patch)
N_MORPHOLOGY = 9  # per mask
N_FEATURES = {
    "basic": len(GLCM_PROPS) * len(DISTANCES) + sum(points + 2 for points, _ in LBP) + 2,
    "extended": len(GLCM_PROPS) * len(DISTANCES) + sum(points + 2 for points, _ in LBP) + 2
    + 2 * len(FAR_PROPS) + FAR_LBP[0] + 2 + len(QUANTILES),
    "morphology": N_MORPHOLOGY * len(MASK_THRESHOLDS),
}
FEATURE_SETS = tuple(N_FEATURES)
REGION_QUANTILES = (0.25, 0.75)
N_REGION_STATISTICS = 2 + len(REGION_QUANTILES)  # mean, standard deviation, quantiles


def quantise_z(z: np.ndarray) -> np.ndarray:
    """z-scored grey values → 0..LEVELS-1, clipped at ±3σ (the GLCM needs few, fixed levels)."""
    return ((np.clip(z, -3, 3) + 3) / 6 * (LEVELS - 1)).round().astype(np.uint8)


def _glcm(patch: np.ndarray, distances: tuple[int, ...], props: tuple[str, ...]) -> list[np.ndarray]:
    glcm = graycomatrix(patch, distances, ANGLES, levels=LEVELS, symmetric=True, normed=True)
    return [graycoprops(glcm, prop).mean(axis=1) for prop in props]


def _lbp(patch: np.ndarray, points: int, radius: float) -> np.ndarray:
    codes = local_binary_pattern(patch, points, radius, method="uniform")
    return np.bincount(codes.astype(np.int64).ravel(), minlength=points + 2) / codes.size


def fibre_morphology(z: np.ndarray) -> np.ndarray:
    """The ``morphology`` features (module docstring) of one z-scored patch."""
    smooth = ndi.gaussian_filter(z.astype(np.float32), 1.0)
    detail = smooth - ndi.gaussian_filter(smooth, BACKGROUND_SIGMA, mode="reflect")
    features = []
    for threshold in MASK_THRESHOLDS:
        if threshold != "otsu":
            level = float(threshold)
        else:  # a flat patch has no threshold, and no fibres
            level = threshold_otsu(detail) if np.ptp(detail) > 0 else np.inf
        features.append(_mask_morphology(detail > level))
    return np.concatenate(features)


def _mask_morphology(mask: np.ndarray) -> np.ndarray:
    """Coverage, network length and width statistics of one fibre mask (see the module docstring)."""
    depth = ndi.distance_transform_edt(np.pad(mask, 1, mode="edge"))[1:-1, 1:-1]  # fibres run on past the edge
    skeleton = skeletonize(mask)
    radii = depth[skeleton]
    if radii.size < 5:  # no fibre network to speak of: a flat patch, or a bead filling it
        radii = np.ones(5)
    median = float(np.median(radii))
    return np.array([
        mask.mean(), skeleton.mean() * median, median, radii.std() / radii.mean(),
        np.percentile(radii, 90) / median, np.percentile(radii, 99) / median,
        (radii > 2 * median).mean(), (radii > 3 * median).mean(), (depth > 2 * median).sum() / max(mask.sum(), 1),
    ])


def patch_features(z: np.ndarray, feature_set: str = "basic") -> np.ndarray:
    """Feature vector (``N_FEATURES[feature_set]``) of one square patch, z-scored by its image's
    statistics (the texture sets quantise it first: the GLCM needs few, fixed levels)."""
    if feature_set == "morphology":
        return fibre_morphology(z)
    if feature_set not in N_FEATURES:
        raise ValueError(f"unknown texture feature set {feature_set!r} ({', '.join(FEATURE_SETS)})")
    patch = quantise_z(z)
    features = _glcm(patch, DISTANCES, GLCM_PROPS) + [_lbp(patch, points, radius) for points, radius in LBP]
    features.append(np.array([patch.mean() / LEVELS, patch.std() / LEVELS]))
    if feature_set == "extended":  # distances relative to the patch, so small test patches still have pairs
        features += _glcm(patch, (patch.shape[0] // 8, patch.shape[0] // 4), FAR_PROPS)
        features += [_lbp(patch, *FAR_LBP), np.percentile(patch, QUANTILES) / LEVELS]
    return np.concatenate(features)


def region_statistics(features: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(N, F) patch features → (``N_REGION_STATISTICS`` × F): their weighted mean, standard
    deviation and quartiles. ``weights`` (the part of each patch inside the image) let half-empty
    edge patches count less where a region has only those (:func:`pooled_patches`)."""
    features = np.asarray(features, np.float64)
    w = np.ones(len(features)) if weights is None else np.asarray(weights, np.float64)
    mean = w @ features / w.sum()
    sd = np.sqrt(w @ (features - mean) ** 2 / w.sum())
    quartiles = np.quantile(features, REGION_QUANTILES, axis=0, weights=w, method="inverted_cdf")
    return np.concatenate([mean, sd, *quartiles])


def pooled_patches(features: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The (N, F) patch features and (N,) coverage weights a region head pools: the patches wholly
    inside the image when the region has any, else all of them, weighted. The region head is
    fitted on the statistics of whole patches only; an edge patch is partly a mirror image
    (reflect padding), so pooling it gives the head statistics of a kind it never saw. A region
    narrower than one patch has no whole patch and keeps its partial ones."""
    if weights is None:
        return features, None
    whole = np.asarray(weights) >= 1.0
    return (features[whole], np.asarray(weights)[whole]) if whole.any() else (features, weights)


class _Regression(nn.Module):
    """Standardisation + linear layer: a fitted scikit-learn logistic regression in safetensors."""

    def __init__(self, n_in: int, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(n_in, dtype=torch.float64))
        self.linear = nn.Linear(n_in, n_classes, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x.to(self.mean) - self.mean) / self.scale)

    @torch.no_grad()
    def set(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> None:
        """Take scikit-learn's ``mean_``, ``scale_``, ``coef_``, ``intercept_``. A two-class
        regression has one weight row for class 1; class 0 gets logit 0, which gives the same softmax."""
        coef, intercept = np.atleast_2d(coef), np.atleast_1d(intercept)
        if coef.shape[0] == 1 and self.linear.out_features == 2:
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, intercept]
        for tensor, value in ((self.mean, mean), (self.scale, scale), (self.linear.weight, coef),
                              (self.linear.bias, intercept)):
            tensor.copy_(torch.from_numpy(np.asarray(value, np.float64)))


class TextureClassifier(nn.Module):
    """(B, 1, P, P) z-scored patches → (B, ``n_classes``) logits of a logistic regression on
    their texture features; with ``region_head``, also a region's logits from its patches'
    feature statistics (:meth:`region_logits`)."""

    def __init__(self, n_classes: int = 2, feature_set: str = "basic", region_head: bool = False) -> None:
        super().__init__()
        if feature_set not in N_FEATURES:
            raise ValueError(f"unknown texture feature set {feature_set!r} ({', '.join(FEATURE_SETS)})")
        self.feature_set = feature_set
        n = N_FEATURES[feature_set]
        self.patch_head = _Regression(n, n_classes)
        self.region_head = _Regression(N_REGION_STATISTICS * n, n_classes) if region_head else None

    def features(self, x: torch.Tensor) -> np.ndarray:
        """(B, F) texture features of a batch of z-scored patches."""
        return np.stack([patch_features(p, self.feature_set) for p in x[:, 0].detach().cpu().numpy()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_head(torch.from_numpy(self.features(x))).to(x.dtype)

    def with_features(self) -> nn.Module:
        """A module giving (B, C + F): the patch logits, then the features the region head pools
        (measured once: they are the costly part)."""
        return _LogitsAndFeatures(self)

    @torch.no_grad()
    def region_logits(self, features: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """(C,) logits of a region from its (N, F) patch features and (N,) weights."""
        if self.region_head is None:
            raise ValueError("this texture model has no region head; it pools patch probabilities")
        features, weights = pooled_patches(features, weights)
        return self.region_head(torch.from_numpy(region_statistics(features, weights))).numpy()


class _LogitsAndFeatures(nn.Module):
    def __init__(self, model: TextureClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.from_numpy(self.model.features(x))
        return torch.cat([self.model.patch_head(features), features], dim=1).to(x.dtype)
