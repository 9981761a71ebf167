"""Inference copies of networks with each batch norm folded into the convolution before it.

In ``eval()`` a batch norm is a fixed per-channel scale and shift, so it can be folded into the
weights and bias of the convolution that feeds it: the same function up to float rounding, with
one pass over the activations fewer per block. At the wide images the engine runs, such
element-wise passes over few channels cost as much as a large share of the convolutions
(docs/engine-benchmark.md). Training keeps the unfolded network, whose batch norms learn from the
batches; only inference runs the copy.
"""

from __future__ import annotations

import copy
import weakref

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONV_NORM = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))


def _foldable(first: nn.Module, second: nn.Module) -> bool:
    """A plain convolution followed by a batch norm over its outputs that uses running statistics."""
    return any(type(first) is conv and type(second) is norm for conv, norm in _CONV_NORM) \
        and second.track_running_stats and second.running_mean is not None


def _pairs(module: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """(sequential, index) of every convolution directly followed by a foldable batch norm."""
    return [(seq, i) for seq in module.modules() if isinstance(seq, nn.Sequential)
            for i in range(len(seq) - 1) if _foldable(seq[i], seq[i + 1])]


def fused(module: nn.Module) -> nn.Module:
    """``module`` for inference with its batch norms folded (a copy, in ``eval()`` mode), or
    ``module`` itself, as it is, when it has none to fold.

    Folding costs a copy of the network, which is not free next to a forward over a few patches,
    so the copy is kept and made again only when a weight or statistic has changed (any in-place
    update, as training and ``load_state_dict`` make, moves a tensor's version) or moved (another
    device or layout: new storage). A write through ``.data``, which bypasses the version, is not
    seen: nothing here writes weights that way."""
    if not _pairs(module):
        return module
    key = tuple((id(t), t._version, t.data_ptr()) for t in (*module.parameters(), *module.buffers()))
    kept = _FUSED.get(module)
    if kept is None or kept[0] != key:
        copied = copy.deepcopy(module).eval()
        for seq, i in _pairs(copied):
            seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), nn.Identity()
        kept = _FUSED[module] = (key, copied)
    return kept[1]


_FUSED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()  # see fused
