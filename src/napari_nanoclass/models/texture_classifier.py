"""The SEM texture classifier as a registry model: texture statistics per patch + a linear layer.

The handcrafted baseline of the homogeneity analysis (:mod:`napari_nanoclass.texture_baseline`)
cross-validates better by micrograph than the FibreCNN on the nanofibre data set, so it is also
available as a model: the engine hands it 128×128 patches z-scored by whole-image statistics, as
it does the CNN; it quantises them, measures grey-level co-occurrence and LBP statistics with
scikit-image on the CPU and applies the fitted logistic regression (standardisation + linear
layer, stored in safetensors like any model's weights). Nothing differentiable runs before the
linear layer, so this model has no Grad-CAM.

Per patch: GLCM contrast, dissimilarity, homogeneity, energy and correlation at distances 1, 2, 4,
8 px averaged over four directions, uniform LBP histograms (8 neighbours at radius 1 and 3), and
the patch's mean and spread, on 32 grey levels spanning ±3 standard deviations of the image.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from torch import nn

LEVELS = 32
DISTANCES = (1, 2, 4, 8)
ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
LBP = ((8, 1.0), (8, 3.0))
N_FEATURES = len(GLCM_PROPS) * len(DISTANCES) + sum(points + 2 for points, _ in LBP) + 2


def quantise_z(z: np.ndarray) -> np.ndarray:
    """z-scored grey values → 0..LEVELS-1, clipped at ±3σ (the GLCM needs few, fixed levels)."""
    return ((np.clip(z, -3, 3) + 3) / 6 * (LEVELS - 1)).round().astype(np.uint8)


def patch_features(patch: np.ndarray) -> np.ndarray:
    """Texture feature vector (``N_FEATURES``) of one quantised patch."""
    glcm = graycomatrix(patch, DISTANCES, ANGLES, levels=LEVELS, symmetric=True, normed=True)
    features = [graycoprops(glcm, prop).mean(axis=1) for prop in GLCM_PROPS]
    for points, radius in LBP:
        codes = local_binary_pattern(patch, points, radius, method="uniform")
        features.append(np.bincount(codes.astype(np.int64).ravel(), minlength=points + 2) / codes.size)
    features.append(np.array([patch.mean() / LEVELS, patch.std() / LEVELS]))
    return np.concatenate(features)


class TextureClassifier(nn.Module):
    """(B, 1, P, P) z-scored patches → (B, ``n_classes``) logits of a logistic regression on
    their texture features."""

    def __init__(self, n_features: int = N_FEATURES, n_classes: int = 2) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("feature_scale", torch.ones(n_features, dtype=torch.float64))
        self.linear = nn.Linear(n_features, n_classes, dtype=torch.float64)

    def features(self, x: torch.Tensor) -> np.ndarray:
        """(B, N_FEATURES) texture features of a batch of z-scored patches."""
        quantised = quantise_z(x[:, 0].detach().cpu().numpy())
        return np.stack([patch_features(p) for p in quantised])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (torch.from_numpy(self.features(x)).to(self.feature_mean) - self.feature_mean) / self.feature_scale
        return self.linear(z).to(x.dtype)

    @torch.no_grad()
    def set_regression(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> None:
        """Take a fitted standardisation and logistic regression (scikit-learn's ``mean_``,
        ``scale_``, ``coef_``, ``intercept_``). A two-class regression has one weight row for
        class 1; class 0 gets logit 0, which gives the same softmax."""
        coef, intercept = np.atleast_2d(coef), np.atleast_1d(intercept)
        if coef.shape[0] == 1 and self.linear.out_features == 2:
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, intercept]
        self.feature_mean.copy_(torch.from_numpy(np.asarray(mean, np.float64)))
        self.feature_scale.copy_(torch.from_numpy(np.asarray(scale, np.float64)))
        self.linear.weight.copy_(torch.from_numpy(np.asarray(coef, np.float64)))
        self.linear.bias.copy_(torch.from_numpy(np.asarray(intercept, np.float64)))
