"""Grad-CAM, the one implementation every CNN here explains itself with.

Grad-CAM (Selvaraju et al., ICCV 2017) weights a convolutional layer's feature maps by the mean
gradient of a score with respect to them and keeps the positive part: where in the input the
evidence for that score lies, at the layer's resolution, brought to the input's. It needs only
the feature maps and a way to finish the forward pass from them, so the fibre patch classifier
(:mod:`.fibre_cnn`), the liposome crop classifiers (:mod:`.lipnet`) and, over 2θ, the XRD
network (:mod:`.xrd_cnn`) share it.

The score explained is a log-odds (:func:`log_odds`), not a raw logit: the gradient of one logit
also rewards features that raise every class alike, which argue for none of them; and unlike the
log-probability it does not vanish when the network is already sure.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F


def log_odds(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """log P(the ``positive`` classes) − log P(the others), per sample, from (N, C) logits and a
    (C,) or (N, C) boolean mask with at least one class on each side."""
    positive = positive.to(logits.device).expand_as(logits)
    floor = torch.finfo(logits.dtype).min
    return (torch.logsumexp(logits.masked_fill(~positive, floor), dim=1)
            - torch.logsumexp(logits.masked_fill(positive, floor), dim=1))


def grad_cam(maps: Callable[[torch.Tensor], torch.Tensor], score: Callable[[torch.Tensor], torch.Tensor],
             x: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of ``score(maps(x))`` — ``maps`` gives the (N, K, h, w) (or, for 1-D signals,
    (N, K, l)) feature maps to weight, ``score`` finishes the forward pass from them to one value
    per sample — as (N, 1, H, W) (or (N, 1, L)) at ``x``'s resolution, ≥ 0 and not normalised
    (the caller knows what to compare a map with).

    The gradient is the score's with respect to the feature maps, which flows through ``score``
    only: ``maps`` runs without autograd (as fast as a plain forward, in the engine's
    ``torch.inference_mode``), and only the rest of the network is differentiated.
    """
    return outputs_and_grad_cam(maps, lambda features: features, score, x)[1]


def outputs_and_grad_cam(maps: Callable[[torch.Tensor], torch.Tensor], head: Callable[[torch.Tensor], torch.Tensor],
                         score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(``head(maps(x))``, Grad-CAM of ``score`` of it), from one forward: a network explained
    after its prediction costs its forward pass twice, which this saves. ``head`` finishes the
    forward pass from the feature maps to the network's outputs (logits); the rest is
    :func:`grad_cam`'s."""
    with torch.no_grad():
        features = maps(x)
    with torch.inference_mode(False), torch.enable_grad():
        # a normal tensor (inference tensors take no grad), in the plain layout: the few small
        # operations after the feature maps then need no layout conversions
        features = features.clone(memory_format=torch.contiguous_format).requires_grad_(True)
        outputs = head(features)
        (grads,) = torch.autograd.grad(score(outputs).sum(), features)
    maps_flat = features.detach().flatten(2)  # (N, K, h·w)
    weights = grads.flatten(2).mean(dim=2, keepdim=True)  # (N, K, 1): mean gradient per feature map
    cam = torch.bmm(weights.transpose(1, 2), maps_flat).view(len(x), 1, *features.shape[2:]).relu_()
    mode = "linear" if cam.ndim == 3 else "bilinear"
    return outputs.detach(), F.interpolate(cam, size=tuple(x.shape[2:]), mode=mode, align_corners=False)
