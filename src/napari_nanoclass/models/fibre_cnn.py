"""The patch classifier for SEM nanofibre homogeneity, and Grad-CAM on it.

:class:`FibreCNN` is the network of Yardimci & Ersoy (The Visual Computer, 2025): five blocks of
3×3 convolution (16, 32, 64, 96, 128 filters, stride 1, padding 1) + batch norm + ReLU + 2×2
max-pool, a fully connected layer of 40 ReLU units and a softmax over the classes, Gaussian
initialisation with σ = 0.01. It sees one 128×128 patch at full resolution (downsampling would
distort the fibre diameter, which is what it must judge). Widths, depth and patch side are
parameters so tests can train a tiny one in seconds.

:func:`grad_cam` explains a batch of patches: which pixels pushed a patch towards "defective".
The network ends in a fully connected layer, not global pooling, so plain CAM does not apply;
Grad-CAM (:mod:`.cam`, shared with the liposome classifiers) weights the last block's feature
maps by the gradient of the defect score.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from napari_nanoclass.models import cam
from napari_nanoclass.models.cam import log_odds


class FibreCNN(nn.Module):
    """Conv blocks → head → ``n_classes`` logits, for ``patch``² inputs.

    ``head="fc"`` is the paper's: flatten, FC(``hidden``) + ReLU, FC to the classes. ``head="gap"``
    averages each feature map over the patch first (position-free, ~80 k fewer weights), which
    generalises better from few micrographs (docs/homogeneity.md). ``dropout`` acts before the head.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, widths: Sequence[int] = (16, 32, 64, 96, 128),
                 hidden: int = 40, patch: int = 128, head: str = "fc", dropout: float = 0.0,
                 init_std: float = 0.01) -> None:
        super().__init__()
        if patch % 2 ** len(widths):
            raise ValueError(f"patch {patch} must be divisible by 2**{len(widths)} (one 2×2 pool per block)")
        self.blocks = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.blocks.append(nn.Sequential(
                nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)))
            channels = width
        side = patch // 2 ** len(widths)
        if head == "fc":
            pool: nn.Module = nn.Flatten()
            features = channels * side * side
        elif head == "gap":
            pool, features = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), channels
        else:
            raise ValueError(f"unknown head {head!r} (fc or gap)")
        self.head = nn.Sequential(pool, nn.Dropout(dropout), nn.Linear(features, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, n_classes))
        self.patch = patch
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.weight, std=init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's activations before its pool: the feature maps Grad-CAM weighs."""
        for block in self.blocks[:-1]:
            x = F.max_pool2d(block(x), 2)
        return self.blocks[-1](x)

    def classify(self, last: torch.Tensor) -> torch.Tensor:
        """Logits from :meth:`features`: the last pool and the head."""
        return self.head(F.max_pool2d(last, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def defect_score(logits: torch.Tensor) -> torch.Tensor:
    """Log-odds of "not homogeneous" per sample; class 0 is the homogeneous class by convention."""
    return log_odds(logits, torch.arange(logits.shape[1], device=logits.device) > 0)


def grad_cam(model: FibreCNN, x: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of the defect score on the last block's activations (before its pool), (N, 1, H, W)
    at input resolution, ≥ 0, not normalised.

    Not normalised per patch on purpose: a homogeneous patch keeps its small values instead of
    being stretched to look as hot as a real defect.
    """
    return logits_and_grad_cam(model, x)[1]


def logits_and_grad_cam(model: FibreCNN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) logits and (N, 1, H, W) :func:`grad_cam` from one forward pass: a CNN that makes
    its own defect map gives its verdicts from the same pass. The logits are computed by the same
    operations as ``model(x)``, so they are its logits."""
    return cam.outputs_and_grad_cam(model.features, model.classify, defect_score, x)
