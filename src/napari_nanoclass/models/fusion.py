"""Inference copies of networks with each batch norm folded into the convolution before it, and
each ReLU after a 2-D convolution applied by the convolution itself.

In ``eval()`` a batch norm is a fixed per-channel scale and shift, so it can be folded into the
weights and bias of the convolution that feeds it: the same function up to float rounding, with
one pass over the activations fewer per block. At the wide images the engine runs, such
element-wise passes over few channels cost as much as a large share of the convolutions
(docs/engine-benchmark.md). For the same reason the ReLU that follows a convolution is applied by
oneDNN as it writes the convolution's output (:class:`ConvReLU`), where oneDNN runs it: the
same values, one pass fewer. Training keeps the unfolded network, whose batch norms learn from the
batches; only inference runs the copy.
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn
from torch.nn import functional as F
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


class ConvReLU(nn.Module):
    """``relu(conv(x))`` for inference. Without autograd, where torch would run the convolution
    with oneDNN (a CPU, float32, an input large enough), oneDNN applies the ReLU as it writes the
    output: the same values as the two steps (the ReLU acts on the same finished sums), with one
    pass over a full-size activation fewer. Otherwise, and where this torch lacks the operator or
    the way to ask which kernel it would run, the two steps."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        # under torch.compile the two steps: the compiler fuses them itself, and asking which kernel
        # torch would run would split its graph
        if not compiling() and not torch.is_grad_enabled() and _onednn_runs(x, conv):
            return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, conv.padding, conv.stride,
                                                           conv.dilation, conv.groups, "relu", [], "")
        return F.relu(conv(x), inplace=True)


def compiling() -> bool:
    """Whether torch.compile is tracing this call (False where this torch cannot say)."""
    check = getattr(torch.compiler, "is_compiling", None)
    return bool(check is not None and check())


def _onednn_runs(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Whether torch would run ``conv(x)`` with oneDNN (private API, asked, not assumed)."""
    select = getattr(torch._C, "_select_conv_backend", None)
    backends = getattr(torch._C, "_ConvBackend", None)
    if select is None or backends is None or not hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
        return False
    return select(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, False, [0, 0],
                  conv.groups, None) == backends.Mkldnn


def _conv_relu_pairs(module: nn.Module) -> list[tuple[nn.Sequential, int, int]]:
    """(sequential, index of a 2-D convolution, index of the ReLU that follows it with only identities
    between) for every convolution whose output only that ReLU reads."""
    found = []
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i, first in enumerate(seq):
            if type(first) is not nn.Conv2d or first.padding_mode != "zeros" or isinstance(first.padding, str):
                continue
            j = i + 1
            while j < len(seq) and type(seq[j]) is nn.Identity:
                j += 1
            if j < len(seq) and type(seq[j]) is nn.ReLU:
                found.append((seq, i, j))
    return found


def fused(module: nn.Module) -> nn.Module:
    """``module`` for inference with its batch norms folded and its ReLUs applied by the
    convolutions before them (a copy, in ``eval()`` mode), or ``module`` itself, as it is, when it
    has no batch norm to fold.

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
        for seq, i, j in _conv_relu_pairs(copied):
            seq[i], seq[j] = ConvReLU(seq[i]), nn.Identity()
        kept = _FUSED[module] = (key, copied)
    return kept[1]


_FUSED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()  # see fused
