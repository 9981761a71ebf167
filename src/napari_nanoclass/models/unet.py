"""U-Net with squeeze-and-excitation (SE) blocks and the Feature Random Enhancement Module (FREM).

The segmentation network of napari-nanoclass, also reused by the liposome detector.

Two deliberate choices, both documented in docs/segmentation.md:

* **Local SE squeeze.** A textbook SE block averages each channel over the *whole* image, which
  gives the network an infinite receptive field: a tiled prediction can then never equal the
  whole-image one and results change with the tile size. Here the squeeze is by default a local
  ``se_window`` × ``se_window`` average at each level (on 256² training crops it sees a large
  share of the crop, like the global one). ``se_window=None`` restores the global squeeze; the
  engine then warns that tiling is approximate.
* **FREM** multiplies B randomly chosen bottleneck channels by X, in training only. The channel
  choice is redrawn by :meth:`SEUNet.resample_frem`, which the trainer calls at the start of each
  epoch; in ``eval()`` the module is the identity, so inference costs nothing extra.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from napari_nanoclass.models.fusion import compiling


class SqueezeExcitation(nn.Module):
    """Channel attention: gate each channel by a function of its (local or global) mean. Without
    autograd (inference) the gate is applied to the input in place."""

    def __init__(self, channels: int, reduction: int = 8, window: int | None = 5) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.window = window
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window is None:
            reduced = self.fc1(x.mean(dim=(2, 3), keepdim=True))
        else:
            # the local mean commutes with the 1×1 reduction (both linear, and the mean of its bias is
            # the bias), so it is taken after it, over channels / reduction maps instead of all of them
            reduced = box_mean(self.fc1(x), self.window)
        if torch.is_grad_enabled():
            return x * torch.sigmoid(self.fc2(F.relu(reduced)))
        # without autograd nothing needs these activations again (in the U-Net ``x`` is its block's
        # last ReLU output), so they are overwritten instead of copied: wide images spend much of
        # their time writing such full-size tensors
        return x.mul_(self.fc2(reduced.relu_()).sigmoid_())


def box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean of each channel over a ``window`` × ``window`` square around every pixel, of the pixels
    inside the image only (``avg_pool2d(..., stride=1, count_include_pad=False)``), as a depthwise
    convolution: on a CPU in channels-last layout oneDNN runs that several times faster than the
    pooling kernel, for the few channels it is used on."""
    radius = window // 2
    total = F.conv2d(x, x.new_ones(x.shape[1], 1, window, window), padding=radius, groups=x.shape[1])
    rows, cols = (_inside_counts(n, radius, x) for n in x.shape[-2:])
    counts = rows[:, None] * cols[None, :]
    if torch.is_grad_enabled() or radius == 0 or min(x.shape[-2:]) <= 2 * radius:
        return total / counts
    # without autograd, in place, and away from the border, where every window holds window² pixels,
    # by that number: the same division as by a map of it, without the map's broadcast over few channels
    inner = slice(radius, -radius)
    total[..., inner, inner].div_(window * window)
    for rows_at, cols_at in ((slice(None, radius), slice(None)), (slice(-radius, None), slice(None)),
                             (inner, slice(None, radius)), (inner, slice(-radius, None))):
        total[..., rows_at, cols_at].div_(counts[rows_at, cols_at])
    return total


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)``. Without autograd, for even sides, as the largest of the four
    pixels of each 2 × 2 square taken as strided views: the same values (NaN spreads alike), without
    the index of each maximum that the pooling kernel computes and writes beside it for a backward
    pass that inference never runs. Under torch.compile the pooling, which the compiler handles."""
    if compiling() or torch.is_grad_enabled() or x.shape[-1] % 2 or x.shape[-2] % 2:
        return F.max_pool2d(x, 2)
    out = torch.maximum(x[..., ::2, ::2], x[..., 1::2, ::2])
    torch.maximum(out, x[..., ::2, 1::2], out=out)
    return torch.maximum(out, x[..., 1::2, 1::2], out=out)


def _inside_counts(n: int, radius: int, like: torch.Tensor) -> torch.Tensor:
    """How many of the positions i - radius … i + radius lie in 0 … n - 1, for each i."""
    i = torch.arange(n, device=like.device)
    return (torch.clamp(i + radius, max=n - 1) - torch.clamp(i - radius, min=0) + 1).to(like.dtype)


class ConvBlock(nn.Sequential):
    """Two 3×3 conv + batch norm + ReLU, followed by SE channel attention."""

    def __init__(self, cin: int, cout: int, se_window: int | None, se: bool = True) -> None:
        layers: list[nn.Module] = []
        for c in (cin, cout):
            layers += [nn.Conv2d(c, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        if se:
            layers.append(SqueezeExcitation(cout, window=se_window))
        super().__init__(*layers)


class FREM(nn.Module):
    """Feature Random Enhancement Module: in training, multiply B random channels by X.

    The scale vector is a buffer (not a parameter) so it is never trained and never saved as
    weights; ``resample`` draws a new set of B channels.
    """

    def __init__(self, channels: int, b: int, x: float) -> None:
        super().__init__()
        if not 0 < b <= channels:
            raise ValueError(f"FREM: B must be in 1..{channels} (bottleneck channels), got {b}")
        self.channels, self.b, self.x = channels, b, float(x)
        self.register_buffer("scale", torch.ones(channels), persistent=False)
        # a private generator: building the module must not shift the global RNG (and with it the
        # initial weights of every later layer) compared with the same network without FREM
        self.resample(torch.Generator().manual_seed(0))

    def resample(self, generator: torch.Generator | None = None) -> None:
        chosen = torch.randperm(self.channels, generator=generator)[: self.b]
        self.scale.fill_(1.0)
        self.scale[chosen] = self.x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return x * self.scale.view(1, -1, 1, 1)


class SEUNet(nn.Module):
    """U-Net whose conv blocks carry SE attention, with optional FREM / deep supervision / dropout.

    ``depth`` is the number of 2× poolings (the paper's network has 4; "without the deepest
    layers" is depth 3). ``width`` is the channel count of the first level, doubled at each level.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 4,
        width: int = 16,
        depth: int = 4,
        se: bool = True,
        se_window: int | None = 5,
        frem_b: int = 0,
        frem_x: float = 1.0,
        dropout: float = 0.0,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if se_window is not None and se_window % 2 == 0:
            raise ValueError("se_window must be odd so the SE average is centred")
        widths = [width * 2**i for i in range(depth + 1)]
        self.depth, self.widths, self.se_window, self.se = depth, widths, se_window, se
        self.encoders = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoders.append(ConvBlock(cin, w, se_window, se))
            cin = w
        bottleneck = widths[-1]
        self.frem = FREM(bottleneck, frem_b, frem_x) if frem_b else None
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self.aux_head = nn.Conv2d(bottleneck, n_classes, 1) if deep_supervision else None
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for w_deep, w in zip(widths[:0:-1], widths[-2::-1]):
            self.ups.append(nn.ConvTranspose2d(w_deep, w, 2, stride=2))
            self.decoders.append(ConvBlock(2 * w, w, se_window, se))
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    # -- geometry the tiling engine needs -------------------------------------------------------
    @property
    def size_divisor(self) -> int:
        """Input sizes and tile offsets must be multiples of this for shift-equivariance."""
        return 2**self.depth

    @property
    def receptive_radius(self) -> float:
        """Pixels on each side that influence one output pixel (``inf`` with global SE).

        Per level of scale s = 2^l: two 3×3 convs add 2s, a local SE window adds (window//2)·s,
        a 2×2 pool adds s; transposed 2×2 convs add nothing.
        """
        if self.se and self.se_window is None:
            return math.inf
        se_r = self.se_window // 2 if self.se else 0
        per_block = 2 + se_r
        enc = sum(per_block * 2**level for level in range(self.depth + 1))
        pools = sum(2**level for level in range(self.depth))
        dec = sum(per_block * 2**level for level in range(self.depth))
        return float(enc + pools + dec)

    def resample_frem(self, generator: torch.Generator | None = None) -> None:
        if self.frem is not None:
            self.frem.resample(generator)

    # -- forward ------------------------------------------------------------------------------
    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits, and the deep-supervision logits at full size (``None`` if not configured)."""
        skips = []
        for i, enc in enumerate(self.encoders):
            if i:
                x = max_pool2(x)
            x = enc(x)
            skips.append(x)
        if self.frem is not None:
            x = self.frem(x)
        if self.dropout is not None:
            x = self.dropout(x)
        aux = None
        if self.aux_head is not None and self.training:
            aux = F.interpolate(self.aux_head(x), scale_factor=self.size_divisor, mode="bilinear")
        for up, dec, skip in zip(self.ups, self.decoders, skips[-2::-1]):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]
