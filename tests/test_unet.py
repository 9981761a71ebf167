"""SE U-Net and FREM behaviour."""

from __future__ import annotations

import pytest
import torch

from napari_nanoclass.models.unet import FREM, SEUNet


def test_frem_scales_exactly_b_channels_in_training_only():
    frem = FREM(channels=32, b=5, x=250.0)
    x = torch.ones(2, 32, 4, 4)
    frem.train()
    y = frem(x)
    scaled = (y[0, :, 0, 0] == 250.0).sum().item()
    assert scaled == 5 and (y[0, :, 0, 0] == 1.0).sum().item() == 27
    frem.eval()
    assert torch.equal(frem(x), x)


def test_frem_resample_changes_the_chosen_channels():
    frem = FREM(channels=64, b=4, x=10.0)
    g = torch.Generator().manual_seed(0)
    picks = set()
    for _ in range(5):
        frem.resample(g)
        picks.add(tuple(torch.nonzero(frem.scale == 10.0).flatten().tolist()))
    assert len(picks) > 1


def test_frem_does_not_change_inference_and_is_not_saved():
    torch.manual_seed(0)
    plain = SEUNet(width=4, depth=2, n_classes=2).eval()
    torch.manual_seed(0)
    with_frem = SEUNet(width=4, depth=2, n_classes=2, frem_b=3, frem_x=500.0).eval()
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(plain(x), with_frem(x))
    assert plain.state_dict().keys() == with_frem.state_dict().keys()
    with_frem.train()
    plain.train()
    assert not torch.allclose(plain(x), with_frem(x))


def test_frem_rejects_b_outside_the_bottleneck():
    with pytest.raises(ValueError, match="B must be"):
        SEUNet(width=4, depth=2, frem_b=17)  # bottleneck has 16 channels


def test_deep_supervision_gives_full_size_aux_logits_in_training():
    model = SEUNet(width=4, depth=3, n_classes=3, deep_supervision=True).train()
    logits, aux = model.forward_with_aux(torch.randn(2, 1, 64, 64))
    assert logits.shape == aux.shape == (2, 3, 64, 64)
    assert model.eval().forward_with_aux(torch.randn(1, 1, 64, 64))[1] is None


@pytest.mark.parametrize("depth,window", [(2, 5), (3, 3), (3, None)])
def test_receptive_radius_bounds_the_real_one(depth, window):
    torch.manual_seed(0)
    model = SEUNet(width=4, depth=depth, n_classes=2, se=window is not None, se_window=window or 5).eval()
    n = 256
    x = torch.randn(1, 1, n, n, requires_grad=True)
    model(x)[0, :, n // 2, n // 2].sum().backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    reach = max((rows - n // 2).abs().max().item(), (cols - n // 2).abs().max().item())
    assert reach <= model.receptive_radius < reach + 2**depth * 4
