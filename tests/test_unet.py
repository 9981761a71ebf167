"""SE U-Net and FREM behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_nanoclass import engine
from napari_nanoclass.core.progress import run_sync
from napari_nanoclass.models import fusion
from napari_nanoclass.models.fusion import ConvReLU, fused
from napari_nanoclass.models.unet import FREM, SEUNet, SqueezeExcitation, box_mean, max_pool2


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


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 4, 3, 7), (1, 5, 17, 9), (1, 2, 5, 6), (2, 3, 30, 41)])
@pytest.mark.parametrize("window", [3, 5])
def test_local_squeeze_is_the_mean_over_the_window_of_pixels_inside_the_image(shape, window):
    """box_mean replaced avg_pool2d(count_include_pad=False) for speed; near the border, where the
    window sticks out, it must divide by the pixels inside only."""
    x = torch.randn(shape)
    expected = torch.nn.functional.avg_pool2d(x, window, stride=1, padding=window // 2, count_include_pad=False)
    torch.testing.assert_close(box_mean(x, window), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(box_mean(x.contiguous(memory_format=torch.channels_last), window), expected,
                               rtol=1e-6, atol=1e-6)
    assert box_mean(torch.ones(shape), window).eq(1).all()


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 4, 3, 7), (1, 5, 17, 9), (1, 4, 5, 6), (1, 4, 64, 48)])
@pytest.mark.parametrize("window", [1, 3, 5])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_box_mean_without_autograd_gives_the_same_values_in_place(shape, window, layout):
    """Inference divides the inside by window² and only the border by its counts (the test failed
    with the border strips one pixel too narrow)."""
    x = (torch.randn(shape) * 10).contiguous(memory_format=layout)
    expected = box_mean(x, window)
    with torch.no_grad():
        assert torch.equal(box_mean(x, window), expected)


@pytest.mark.parametrize("shape", [(1, 8, 64, 48), (2, 3, 6, 10), (1, 16, 2, 2), (1, 4, 7, 6)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_inference_max_pooling_gives_the_pooling_kernels_values(shape, layout):
    torch.manual_seed(1)
    x = torch.randn(shape).contiguous(memory_format=layout)
    x[torch.rand(shape) < 0.1] = float("nan")  # NaN spreads to its square alike
    x[:, 0, 0, 0] = float("nan")
    expected = torch.nn.functional.max_pool2d(x, 2)
    with torch.no_grad():
        pooled = max_pool2(x)
    assert pooled.shape == expected.shape
    assert torch.equal(pooled.isnan(), expected.isnan()) and expected.isnan().any()
    assert torch.equal(pooled.nan_to_num(), expected.nan_to_num())
    if layout == torch.channels_last and shape[-1] % 2 == 0 and shape[-2] % 2 == 0:
        assert pooled.is_contiguous(memory_format=torch.channels_last)  # the next convolution's layout
    y = torch.randn(shape, requires_grad=True)
    max_pool2(y).sum().backward()  # with autograd, the pooling kernel and its gradient
    assert y.grad.sum() == expected[0].numel() * shape[0] and y.grad.eq(1).sum() == y.grad.sum()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("cin,size,kernel,bias", [(1, 64, 3, True), (8, 64, 3, False), (16, 32, 1, True),
                                                  (4, 5, 3, True)])
def test_conv_relu_gives_the_convolution_and_relus_values(layout, cin, size, kernel, bias):
    """Where oneDNN runs the convolution it applies the ReLU itself (bit for bit the two steps on
    this machine's kernels); elsewhere, and with autograd, the two steps."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, 8, kernel, padding=kernel // 2, bias=bias).eval()
    conv.to(memory_format=layout)
    x = torch.randn(1, cin, size, size + 3).contiguous(memory_format=layout)
    with torch.no_grad():
        expected = torch.relu(conv(x))
        out = ConvReLU(conv)(x)
    assert torch.equal(out, expected) and out.stride() == expected.stride()
    x.requires_grad_(True)
    ConvReLU(conv)(x).sum().backward()  # the two steps, which autograd can differentiate
    assert x.grad is not None


def test_onednn_is_asked_not_assumed(monkeypatch):
    """The fused operator runs only where torch itself would run oneDNN, and not where this torch
    cannot say which kernel it would run."""
    conv = torch.nn.Conv2d(8, 8, 3, padding=1).to(memory_format=torch.channels_last)
    large = torch.randn(1, 8, 64, 64).contiguous(memory_format=torch.channels_last)
    small = torch.randn(1, 8, 4, 4)
    assert fusion._onednn_runs(large, conv) and not fusion._onednn_runs(small, conv)
    monkeypatch.delattr(torch._C, "_select_conv_backend")
    assert not fusion._onednn_runs(large, conv)


def test_the_inference_copy_applies_each_relu_with_its_convolution():
    model = SEUNet(width=4, depth=2, n_classes=3).eval()
    copy = fused(model)
    pairs = [m for m in copy.modules() if isinstance(m, ConvReLU)]
    assert len(pairs) == 2 * len(model.encoders) + 2 * len(model.decoders)  # two per conv block
    assert not any(isinstance(m, torch.nn.ReLU) for m in copy.modules())
    assert any(isinstance(m, torch.nn.ReLU) for m in model.modules())  # the model itself is unchanged


def test_se_gate_uses_the_local_mean_of_its_input():
    """The 1×1 reduction now comes before the local mean; the gate must still be
    sigmoid(fc2(relu(fc1(local mean of x))))."""
    torch.manual_seed(0)
    se = SqueezeExcitation(16, window=5).eval()
    x = torch.randn(2, 16, 11, 13)
    mean = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    expected = x * torch.sigmoid(se.fc2(torch.relu(se.fc1(mean))))
    original = x.clone()
    torch.testing.assert_close(se(x), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(x, original)  # with autograd the input is kept
    with torch.inference_mode():
        inference = x.clone()
        assert se(inference) is inference  # applied in place
        torch.testing.assert_close(inference, expected, rtol=1e-5, atol=1e-6)


def test_the_engine_runs_the_u_net_with_batch_norms_folded_and_the_same_output():
    torch.manual_seed(0)
    model = SEUNet(width=4, depth=2, n_classes=3)
    for module in model.modules():  # batch norms that are not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1), module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 2)
    model.eval()
    folded = fused(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the model itself is unchanged
    image = torch.randn(40, 48).numpy()
    with torch.inference_mode():
        direct = model(torch.from_numpy((image - image.mean()) / image.std())[None, None].float())
    through_engine = run_sync(engine.predict_dense(model, image, postprocess=None))
    np.testing.assert_allclose(np.asarray(through_engine), direct[0].numpy(), atol=1e-4)
    assert fused(model) is folded  # the engine's call kept the same copy
    with torch.no_grad():
        model.head.bias.add_(1.0)  # a weight changes in place (as training changes them): folded again
    assert fused(model) is not folded
    refolded = fused(model)
    model.to(torch.float64)  # moved to new storage (as to another device): folded again, where it now is
    assert fused(model) is not refolded and next(fused(model).parameters()).dtype == torch.float64
