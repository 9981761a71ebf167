"""The 1-D CNN that identifies a diffraction pattern's class, and its class activation over 2θ.

:class:`XrdCNN` follows the seed paper's and autoXRD's networks: a few blocks of 1-D convolution
+ batch norm + ReLU + max-pool over the pattern, then fully connected layers. The head is fully
connected on purpose: a space group is told by *where* the peaks are relative to each other over
tens of degrees, and global pooling would make the network blind to absolute 2θ. Widths, kernels
and the input length are parameters so tests can train a tiny one in seconds.

:func:`class_activation` explains a prediction as the seed paper does: a class activation map,
here Grad-CAM over the last block (the gradient of the class score weights each feature
channel), upsampled to the input grid — which stretches of 2θ decided. :func:`peak_evidence`
(gradient × input) narrows that to the peaks themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from napari_nanoclass.models.cam import grad_cam


class XrdCNN(nn.Module):
    """Conv blocks → flatten → FC(``hidden``) → ``n_classes`` logits, for (N, 1, ``length``) inputs."""

    def __init__(self, n_classes: int = 7, length: int = 1251, widths: Sequence[int] = (16, 32, 64, 64),
                 kernels: Sequence[int] = (9, 7, 5, 3), hidden: int = 128, dropout: float = 0.3,
                 n_references: int = 0) -> None:
        super().__init__()
        if len(widths) != len(kernels):
            raise ValueError(f"{len(widths)} widths but {len(kernels)} kernel sizes")
        blocks, channels, size = [], 1, length
        for width, kernel in zip(widths, kernels):
            blocks.append(nn.Sequential(nn.Conv1d(channels, width, kernel, padding=kernel // 2, bias=False),
                                        nn.BatchNorm1d(width), nn.ReLU(inplace=True)))
            channels, size = width, size // 2
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels * size, hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, n_classes))
        self.length, self.n_classes = length, n_classes
        # reference patterns (the training compounds' ideal ones, and measured ones a model was
        # trained with) and their classes, saved with the weights, for
        # :meth:`reference_probabilities`; none when n_references is 0
        self.register_buffer("references", torch.zeros(n_references, length))
        self.register_buffer("reference_classes", torch.zeros(n_references, dtype=torch.long))

    def set_references(self, patterns: torch.Tensor, classes: torch.Tensor) -> None:
        """Store the reference library: (R, length) prepared patterns and their (R,) classes."""
        self.references = torch.as_tensor(patterns, dtype=torch.float32).reshape(-1, self.length).clone()
        self.reference_classes = torch.as_tensor(classes, dtype=torch.long).clone()

    def reference_probabilities(self, x: torch.Tensor, sharpness: float = 10.0) -> torch.Tensor:
        """(N, classes) from the nearest reference: each class scores the Pearson correlation of
        the pattern with its best-matching reference, softmax(sharpness × score). A different view
        of the training data than the network's (the compounds' ideal patterns, and the measured
        films a model was trained with): whole-pattern similarity, which a textured or strained
        film can keep where the network's learned peak features fail."""
        def standard(a: torch.Tensor) -> torch.Tensor:
            a = a - a.mean(dim=-1, keepdim=True)
            return a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)

        correlation = standard(x.reshape(-1, self.length)) @ standard(self.references).T
        best = torch.full((correlation.shape[0], self.n_classes), -1.0, device=x.device)
        best = best.scatter_reduce(1, self.reference_classes.expand_as(correlation), correlation, "amax")
        return torch.softmax(sharpness * best, dim=1)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities: the network's softmax, averaged with :meth:`reference_probabilities`
        when the model carries references."""
        p = torch.softmax(self(x), dim=1)
        return (p + self.reference_probabilities(x)) / 2 if len(self.references) else p

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(last block's activations before pooling, after pooling): Grad-CAM needs the former."""
        if x.shape[-1] != self.length:
            raise ValueError(f"pattern of {x.shape[-1]} points, the model expects {self.length}")
        last = x
        for block in self.blocks:
            last = block(x)
            x = F.max_pool1d(last, 2)
        return last, x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[1])


def class_activation(model: XrdCNN, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Grad-CAM of class ``target`` (default: each pattern's predicted class), (N, length), each
    row scaled to a maximum of 1 (a pattern's own strongest evidence is the reference: the plot
    shades where the decision came from, not how sure it was — the probability says that)."""
    def score(last: torch.Tensor) -> torch.Tensor:
        logits = model.head(F.max_pool1d(last, 2))
        chosen = logits.argmax(dim=1) if target is None else target
        return logits.gather(1, chosen.view(-1, 1))[:, 0]

    cam = grad_cam(lambda signal: model.features(signal)[0], score, x)[:, 0]
    top = cam.amax(dim=1, keepdim=True)
    return (cam / torch.where(top > 0, top, torch.ones_like(top))).detach()


def peak_evidence(model: XrdCNN, x: torch.Tensor, target: torch.Tensor | None = None, smooth: int = 5) -> torch.Tensor:
    """Gradient × input of class ``target`` (default: the predicted class), positive part,
    smoothed over ``smooth`` points, each row scaled to a maximum of 1: (N, length).

    Grad-CAM's last block is eight times coarser than the pattern and also credits the *absence*
    of peaks (a cubic pattern is cubic partly because nothing lies between its peaks); this is zero
    wherever the pattern is, so it names the peaks that pushed the decision."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x.clone().requires_grad_(True)
        logits = model(x)
        if target is None:
            target = logits.argmax(dim=1)
        (grads,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), x)
    evidence = F.relu(grads * x).detach()[:, 0]
    if smooth > 1:
        evidence = F.avg_pool1d(evidence[:, None], smooth, stride=1, padding=smooth // 2, count_include_pad=False)[:, 0]
    top = evidence.amax(dim=1, keepdim=True)
    return evidence / torch.where(top > 0, top, torch.ones_like(top))
