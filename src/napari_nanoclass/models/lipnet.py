"""The LipNet family: small CNNs that classify one liposome crop (lamellarity or encapsulation).

Variants follow the study this project follows (3×3 convolutions with 32 filters, ReLU; dropout,
a dense layer and a softmax over the classes; 32×32 inputs):

* ``"1"``  one conv layer + 2×2 max-pool;
* ``"2"``  two blocks of conv + max-pool;
* ``"4"``  two blocks of two conv layers + max-pool (the study's best);
* ``"4c"`` as ``"4"`` with stride-2 convolutions instead of pooling;
* ``"6"``  three blocks of two conv layers + max-pool.

Crops are resized to a fixed side, so the network cannot see how big an object was; with
``size_input`` the object's log diameter (an extra scalar per object, the study's stated next
step) joins the features before the dense layer. With ``descriptors`` > 0 the object's handcrafted
features (the SVM baseline's: radial and edge profiles, membrane SNR, size, shape, measured on the
full-resolution image) join there too, standardised by statistics stored in the model, because
the 32×32 resized crop blurs the lamellae that those profiles resolve.

:func:`explain_crops` says where in each crop the evidence for a class lay (Grad-CAM, :mod:`.cam`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_nanoclass.models.cam import grad_cam, log_odds

VARIANTS: dict[str, list[int]] = {"1": [1], "2": [1, 1], "4": [2, 2], "4c": [2, 2], "6": [2, 2, 2]}


LIPNET_ARCHITECTURE, ENSEMBLE_ARCHITECTURE = "lipnet", "lipnet-ensemble"  # their names in the model registry


class LipNet(nn.Module):
    """Crop (B, 1, S, S) [+ log size (B,)] [+ handcrafted features (B, D)] → ``n_classes`` logits."""

    def __init__(self, variant: str = "4", n_classes: int = 3, input_size: int = 32, channels: int = 32,
                 dense: int = 128, dropout: float = 0.3, size_input: bool = True, descriptors: int = 0) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown LipNet variant {variant!r}; known: {sorted(VARIANTS)}")
        layers: list[nn.Module] = []
        cin, side = 1, input_size
        for convs in VARIANTS[variant]:
            for i in range(convs):
                strided = variant == "4c" and i == convs - 1
                layers += [nn.Conv2d(cin, channels, 3, stride=2 if strided else 1, padding=1), nn.ReLU(inplace=True)]
                cin = channels
            if variant != "4c":
                layers.append(nn.MaxPool2d(2))
            side //= 2
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Dropout(dropout))
        self.size_input = size_input
        self.descriptors = descriptors
        if descriptors:  # their standardisation, saved with the weights (set before training)
            self.register_buffer("descriptor_mean", torch.zeros(descriptors))
            self.register_buffer("descriptor_scale", torch.ones(descriptors))
        self.head = nn.Sequential(
            nn.Linear(channels * side * side + int(size_input) + descriptors, dense), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(dense, n_classes))

    def set_descriptor_scaling(self, features: np.ndarray) -> None:
        """Standardise the handcrafted features by the mean and spread of these (training) rows."""
        features = np.asarray(features, np.float64).reshape(-1, self.descriptors)
        self.descriptor_mean.copy_(torch.from_numpy(features.mean(axis=0)))
        self.descriptor_scale.copy_(torch.from_numpy(np.maximum(features.std(axis=0), 1e-6)))

    def forward(self, x: torch.Tensor, log_size: torch.Tensor | None = None,
                descriptors: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.features(x), log_size, descriptors)

    def feature_maps(self) -> tuple[nn.Sequential, nn.Sequential]:
        """``self.features`` cut after its last activation: (crop → last convolutional feature maps,
        those maps → the flat vector :meth:`classify` takes). Grad-CAM weights the former; the
        parts share the network's modules, so the weights are the trained ones."""
        last = max(i for i, m in enumerate(self.features) if isinstance(m, nn.ReLU))
        return self.features[: last + 1], self.features[last + 1 :]

    def classify(self, flat: torch.Tensor, log_size: torch.Tensor | None = None,
                 descriptors: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from the crop's flattened features plus the object's size and descriptors."""
        features = [flat]
        if self.size_input:
            if log_size is None:
                raise ValueError("this LipNet was trained with object sizes: pass log_size")
            features.append(log_size.reshape(-1, 1).to(features[0].dtype))
        if self.descriptors:
            if descriptors is None:
                raise ValueError("this LipNet was trained with handcrafted object features: pass descriptors")
            # clipped: one odd measurement (a truncated object at the edge) must not dominate the layer
            z = (descriptors.to(features[0].dtype) - self.descriptor_mean) / self.descriptor_scale
            features.append(z.clamp(-6.0, 6.0))
        return self.head(torch.cat(features, dim=1))


class LipNetEnsemble(nn.Module):
    """Several LipNets of one recipe trained from different seeds, as one classifier: the mean of
    their class probabilities. On objects unlike their training fields (real vesicle walls) seeds
    of one recipe disagree far more than on their own kind of data, and the mean is steadier than
    any one of them (docs/liposomes.md, "Wall crops")."""

    def __init__(self, members: int = 3, **member: Any) -> None:
        super().__init__()
        if members < 2:
            raise ValueError(f"an ensemble needs at least two members, got {members}")
        self.members = nn.ModuleList(LipNet(**member) for _ in range(members))
        self.descriptors = self.members[0].descriptors

    def forward(self, x: torch.Tensor, log_size: torch.Tensor | None = None,
                descriptors: torch.Tensor | None = None) -> torch.Tensor:
        """Logits whose softmax is the members' mean probability (their log, floored above 0)."""
        mean = torch.stack([torch.softmax(m(x, log_size, descriptors), dim=1) for m in self.members]).mean(0)
        return mean.clamp_min(torch.finfo(mean.dtype).tiny).log()


def n_classes(module: LipNet | LipNetEnsemble) -> int:
    """How many classes a LipNet or an ensemble of them tells apart."""
    member = module.members[0] if isinstance(module, LipNetEnsemble) else module
    return member.head[-1].out_features


def predict_crops(module: LipNet | LipNetEnsemble, crops: np.ndarray, log_size: np.ndarray,
                  features: np.ndarray | None = None, device: torch.device | str = "cpu",
                  batch_size: int = 512) -> np.ndarray:
    """(N, C) class probabilities of (N, S, S) crops (with their log sizes and, for a network
    trained on them, handcrafted features), batched, in eval and inference mode."""
    module.eval()
    out = [np.zeros((0, n_classes(module)), np.float32)]
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            part = slice(start, start + batch_size)
            x = torch.from_numpy(crops[part, None]).to(device)
            s = torch.from_numpy(log_size[part]).to(device)
            d = torch.from_numpy(np.asarray(features[part], np.float32)).to(device) if module.descriptors else None
            out.append(torch.softmax(module(x, s, d), dim=1).cpu().numpy())
    return np.concatenate(out)


def explain_crops(module: LipNet | LipNetEnsemble, crops: np.ndarray, log_size: np.ndarray, classes: np.ndarray,
                  features: np.ndarray | None = None, device: torch.device | str = "cpu",
                  batch_size: int = 512) -> np.ndarray:
    """(N, S, S) Grad-CAM of each crop for its class in ``classes``: where in the crop the evidence
    for that class against the others lies (≥ 0, not normalised), with the object's size and
    handcrafted features held as they are. Batched like :func:`predict_crops`, in eval mode. For
    an ensemble, the mean of its members' maps."""
    if isinstance(module, LipNetEnsemble):
        return np.mean([explain_crops(m, crops, log_size, classes, features, device, batch_size)
                        for m in module.members], axis=0)
    module.eval()
    maps, rest = module.feature_maps()
    classes_total = n_classes(module)
    out = [np.zeros((0, *crops.shape[1:]), np.float32)]
    for start in range(0, len(crops), batch_size):
        part = slice(start, start + batch_size)
        x = torch.from_numpy(crops[part, None]).to(device)
        s = torch.from_numpy(log_size[part]).to(device)
        d = torch.from_numpy(np.asarray(features[part], np.float32)).to(device) if module.descriptors else None
        chosen = torch.from_numpy(np.asarray(classes[part], np.int64)).to(device)
        positive = torch.nn.functional.one_hot(chosen, classes_total).bool()
        cam = grad_cam(maps, lambda m: log_odds(module.classify(rest(m), s, d), positive), x)
        out.append(cam[:, 0].cpu().numpy())
    return np.concatenate(out)


def shift_prior(probabilities: np.ndarray, ratio: Sequence[float], strength: float) -> np.ndarray:
    """Posteriors moved from the class mix a network was trained on towards the mix it will meet:
    ``p(c|x) · ratio_c ** strength``, renormalised, with ``ratio`` = expected mix / trained mix.

    Why: an oversampled network decides as if every class were equally common, which finds rare
    objects but calls many majority objects rare, so population counts come out far too high for
    the rare classes. ``strength`` 1 is the Bayes correction for the expected mix (fewest errors,
    but rare classes are then seldom called); 0 leaves the balanced decisions.
    """
    weights = np.asarray(ratio, np.float64) ** strength
    shifted = np.asarray(probabilities, np.float64) * weights
    return (shifted / np.maximum(shifted.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)


def decide(probabilities: np.ndarray, training: Mapping[str, Any], balanced: bool = False) -> np.ndarray:
    """Probabilities at a classifier's stored operating point (``training["decision"]``: the prior
    ratio and the strength chosen on held-out images), or unchanged with ``balanced``."""
    decision = training.get("decision")
    if balanced or not decision:
        return probabilities
    return shift_prior(probabilities, decision["prior_ratio"], decision["prior_strength"])
