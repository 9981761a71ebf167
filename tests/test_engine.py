"""The tiling engine: exactness against whole-image inference, patch maps, streaming, cancel."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from torch import nn

from napari_nanoclass import engine
from napari_nanoclass.core.progress import Cancelled, CancelToken, run_sync
from napari_nanoclass.io.images import image_stats
from napari_nanoclass.models.unet import SEUNet


@pytest.fixture(scope="module")
def unet() -> SEUNet:
    torch.manual_seed(0)
    return SEUNet(width=4, depth=2, n_classes=3, se_window=5).eval()


def whole_image(model: nn.Module, image: np.ndarray) -> np.ndarray:
    x = (image - image.mean()) / image.std()
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(x.astype(np.float32))[None, None]), 1)[0].numpy()


@pytest.mark.parametrize("tile,batch", [(32, 1), (64, 3), (96, 2), (1024, 1), (None, 1)])
def test_tiled_equals_whole_image_everywhere(unet, tile, batch):
    """Windows slide inside the image at its edges, so the border too is the whole-image forward's."""
    image = np.random.default_rng(0).integers(0, 255, (208, 240)).astype(np.uint8)
    reference = whole_image(unet, image)
    tiled = run_sync(engine.predict_dense(unet, image, tile=tile, batch_size=batch))
    assert tiled.shape == reference.shape
    assert np.abs(tiled - reference).max() <= 1e-5
    assert np.allclose(tiled.sum(0), 1, atol=1e-5)


def test_windows_stay_inside_the_image_and_cover_it_once():
    for shape, tile in [((208, 240), 32), ((3000, 100), 1024), ((1024, 1000), 1024), ((97, 131), 48)]:
        covered = np.zeros(shape, int)
        windows = engine.dense_windows(shape, tile, 20, 8)
        sizes = {(w.y1 - w.y0, w.x1 - w.x0) for w in windows}
        assert len(sizes) == 1  # equal windows batch
        for w in windows:
            assert w.y0 >= 0 and w.x0 >= 0 and w.y0 % 8 == 0 and w.x0 % 8 == 0
            assert w.y1 <= engine.round_up(shape[0], 8) and w.x1 <= engine.round_up(shape[1], 8)
            covered[w.core] += 1
            assert (w.crop[0].stop - w.crop[0].start, w.crop[1].stop - w.crop[1].start) == covered[w.core].shape
        assert (covered == 1).all()
    assert len(engine.dense_windows((1024, 1024), 1024, 208, 16)) == 1  # fits: one forward, no halo


def test_tile_from_the_memory_budget():
    """Bigger budgets give fewer, larger windows; an image that fits is one window; longer axes
    are split into equal cores."""
    torch.manual_seed(0)
    model = SEUNet(width=4, depth=2, n_classes=3, se_window=5).eval()
    per_pixel = engine.activation_bytes_per_pixel(model)
    assert per_pixel > 4 * 3  # at least the output logits
    cpu = torch.device("cpu")
    assert engine.budget_tile(model, (512, 512), 16, cpu, int(per_pixel * 600**2)) == (512, 512)
    small = engine.budget_tile(model, (512, 512), 16, cpu, int(per_pixel * 200**2))
    assert small[0] < 512 and small[0] % 4 == 0
    windows = engine.dense_windows((512, 512), small, 16, 4)
    assert max(w.y1 - w.y0 for w in windows) <= 200 and len(windows) > 1
    assert engine.plan_tile((1000, 64), 16, 4, 300) == (252, 64)  # 4 equal cores, not 3 of 268 and a sliver


def test_cpu_windows_do_not_grow_with_the_image(monkeypatch):
    """Without a budget a CPU reads windows of at most CPU_WINDOW a side, however much memory the
    machine has, so a streamed image peaks no higher than a CPU_WINDOW² image read whole; an
    explicit budget still allows larger windows."""
    from napari_nanoclass.engine import predict

    torch.manual_seed(0)
    model = SEUNet(width=4, depth=2, n_classes=3, se_window=5).eval()
    monkeypatch.setattr(predict, "default_memory_budget", lambda device: 2**50)  # room for any window
    cpu, side = torch.device("cpu"), predict.CPU_WINDOW
    assert predict.max_window_side(model, cpu) == side
    assert len(engine.dense_windows((side, side), engine.budget_tile(model, (side, side), 16, cpu), 16, 4)) == 1
    for length in (side + 4, 4 * side, 8 * side):
        windows = engine.dense_windows((length, length), engine.budget_tile(model, (length, length), 16, cpu), 16, 4)
        assert len(windows) > 1 and max(max(w.y1 - w.y0, w.x1 - w.x0) for w in windows) <= side
    budget = int(engine.activation_bytes_per_pixel(model) * (2 * side + 8) ** 2)
    assert predict.max_window_side(model, cpu, budget) >= 2 * side
    assert engine.budget_tile(model, (2 * side, 2 * side), 16, cpu, budget) == (2 * side, 2 * side)
    assert engine.budget_tile(model, (2 * side, 2 * side), 16, cpu, budget, streamed=True) == (2 * side, 2 * side)


def test_streamed_images_are_read_in_smaller_windows_than_one_read_whole(monkeypatch):
    """An image streamed in several windows (read from chunks, or bounded) gets windows of at most
    CPU_STREAM_WINDOW, so that its peak memory stays below that of a CPU_WINDOW² image read in one
    forward; one that fits a CPU_WINDOW window is still read whole, and an array in memory keeps
    the larger windows. predict_dense chooses accordingly."""
    from napari_nanoclass.engine import predict

    assert predict.CPU_STREAM_WINDOW < predict.CPU_WINDOW
    torch.manual_seed(0)
    model = SEUNet(width=4, depth=2, n_classes=3, se_window=5).eval()
    monkeypatch.setattr(predict, "default_memory_budget", lambda device: 2**50)
    monkeypatch.setattr(predict, "CPU_WINDOW", 256)  # the same rule at a test's scale
    monkeypatch.setattr(predict, "CPU_STREAM_WINDOW", 192)
    cpu, side, stream = torch.device("cpu"), 256, 192
    assert engine.budget_tile(model, (side, side), 16, cpu, streamed=True) == (side, side)
    for length in (3 * side, 8 * side):
        in_memory = engine.dense_windows((length, length), engine.budget_tile(model, (length, length), 16, cpu), 16, 4)
        streamed = engine.dense_windows((length, length), engine.budget_tile(model, (length, length), 16, cpu,
                                                                              streamed=True), 16, 4)
        assert max(w.y1 - w.y0 for w in streamed) <= stream < max(w.y1 - w.y0 for w in in_memory)
    seen = []
    monkeypatch.setattr(predict, "dense_windows", lambda shape, tile, *a: seen.append(tile) or [])
    image = np.zeros((3 * side, 3 * side), np.float32)
    for source, bounded in ((image, False), (image, True), (zarr.array(image, chunks=(128, 128)), False)):
        run_sync(predict.predict_dense(model, source, halo=44, bounded=bounded))
    assert seen[0][0] > seen[1][0] and seen[2] == seen[1]  # cores: smaller where streamed


def test_cpu_runs_in_channels_last_layout_with_the_same_results():
    """On a CPU the engine converts the model's weights to channels-last (faster convolutions);
    the results stay those of the contiguous layout."""
    import copy

    torch.manual_seed(1)
    model = SEUNet(width=4, depth=2, n_classes=3, se_window=5).eval()
    contiguous = copy.deepcopy(model)
    image = np.random.default_rng(2).integers(0, 255, (96, 112)).astype(np.uint8)
    tiled = run_sync(engine.predict_dense(model, image, tile=64, device="cpu"))
    weights = next(p for p in model.parameters() if p.ndim == 4)
    assert weights.is_contiguous(memory_format=torch.channels_last)
    assert next(p for p in contiguous.parameters() if p.ndim == 4).is_contiguous()  # the reference kept its layout
    assert np.abs(tiled - whole_image(contiguous, image))[:, 16:-16, 16:-16].max() <= 1e-5


def test_compiled_network_gives_the_eager_results_and_is_compiled_once():
    """``compile=True`` runs the network through torch.compile (one graph: windows are one size),
    kept for the next image; results are the eager network's."""
    torch.manual_seed(3)
    model = SEUNet(width=4, depth=2, n_classes=3, se_window=5).eval()
    image = np.random.default_rng(5).integers(0, 255, (96, 112)).astype(np.uint8)
    eager = run_sync(engine.predict_dense(model, image, tile=64, device="cpu"))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    engine.compiled.cache_clear()
    fast = run_sync(engine.predict_dense(model, image, tile=64, device="cpu", compile=True))
    again = run_sync(engine.predict_dense(model, image[::-1].copy(), tile=64, device="cpu", compile=True))
    assert engine.compiled.cache_info().currsize == 1 and engine.compiled.cache_info().hits == 1
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # no recompile for the second image
    assert np.abs(fast - eager).max() <= 1e-4
    assert again.shape == eager.shape


def test_result_independent_of_tile_size_everywhere(unet):
    """Even at the border, reflect padding makes every tiling give the same answer."""
    image = np.random.default_rng(3).normal(size=(150, 170)).astype(np.float32)
    a = run_sync(engine.predict_dense(unet, image, tile=32))
    b = run_sync(engine.predict_dense(unet, image, tile=512))
    assert np.abs(a - b).max() <= 1e-5


def test_test_time_augmentation_averages_the_eight_views_and_is_rotation_equivariant(unet):
    image = np.random.default_rng(2).integers(0, 255, (128, 128)).astype(np.uint8)
    x = (image - image.mean()) / image.std()
    views = []
    with torch.inference_mode():
        for k in range(4):
            for flip in (False, True):
                view = np.rot90(x, k)[:, ::-1] if flip else np.rot90(x, k)
                y = unet(torch.from_numpy(np.ascontiguousarray(view, np.float32))[None, None])[0].numpy()
                views.append(np.rot90(y[:, :, ::-1] if flip else y, -k, axes=(1, 2)))
    expected = torch.softmax(torch.from_numpy(np.mean(views, 0)), 0).numpy()
    halo = engine.round_up(int(unet.receptive_radius), unet.size_divisor)
    inner = (slice(None), slice(halo, -halo), slice(halo, -halo))  # unaffected by the border padding
    whole = run_sync(engine.predict_dense(unet, image, tile=128, tta=True))
    assert np.abs(whole[inner] - expected[inner]).max() <= 1e-5
    assert np.abs(whole - whole_image(unet, image)).max() > 1e-3  # the views do differ
    tiled = run_sync(engine.predict_dense(unet, image, tile=32, tta=True))
    assert np.abs(tiled[inner] - whole[inner]).max() <= 1e-5
    turned = run_sync(engine.predict_dense(unet, np.rot90(image).copy(), tile=32, tta=True))
    assert np.abs(turned - np.rot90(tiled, axes=(1, 2))).max() <= 1e-5  # everywhere, borders included


def test_too_small_halo_warns(unet):
    with pytest.warns(UserWarning, match="receptive radius"):
        run_sync(engine.predict_dense(unet, np.zeros((64, 64), np.float32), tile=32, halo=8))


def test_global_se_model_warns_that_tiling_is_approximate():
    model = SEUNet(width=4, depth=2, n_classes=2, se_window=None).eval()
    with pytest.warns(UserWarning, match="global context"):
        run_sync(engine.predict_dense(model, np.zeros((64, 64), np.float32), tile=32))


def test_stack_is_processed_plane_by_plane_from_dask_and_zarr(unet, tmp_path):
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 255, (3, 96, 112)).astype(np.uint8)
    expected = np.stack([run_sync(engine.predict_dense(unet, p, tile=64)) for p in stack], axis=1)
    for source in (da.from_array(stack, chunks=(1, 32, 32)), zarr.array(stack, chunks=(1, 40, 40))):
        out = run_sync(engine.predict_dense(unet, source, tile=64))
        assert out.shape == (3, 3, 96, 112)
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_streams_into_zarr_with_tile_chunks(unet, tmp_path):
    image = np.random.default_rng(2).integers(0, 255, (200, 260)).astype(np.uint8)
    in_memory = run_sync(engine.predict_dense(unet, image, tile=64))
    target = tmp_path / "probs.zarr"
    out = run_sync(engine.predict_dense(unet, zarr.array(image, chunks=(50, 50)), tile=64, out=target))
    assert isinstance(out, zarr.Array) and out.chunks == (3, 64, 64)
    np.testing.assert_allclose(out[:], in_memory, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probs.zarr"]  # no temporary left


def test_argmax_postprocess_gives_labels(unet):
    image = np.random.default_rng(2).normal(size=(80, 80)).astype(np.float32)
    probs = run_sync(engine.predict_dense(unet, image, tile=32))
    labels = run_sync(engine.predict_dense(unet, image, tile=32, postprocess=engine.labels_from_logits))
    assert labels.dtype == np.uint8 and labels.shape == (1, 80, 80)
    np.testing.assert_array_equal(labels[0], probs.argmax(0))


class MeanPatch(nn.Module):
    """Classifier stub with known output: the patch mean (of the normalised input) as a logit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)


def test_patch_map_alignment_on_non_multiple_sizes():
    image = np.zeros((300, 270), np.float32)
    image[128:256, 0:128] = 10.0  # patch (1, 0) bright
    out = run_sync(engine.predict_patches(MeanPatch(), image, patch=128, postprocess=None, stats=[(0.0, 1.0)]))
    assert out.shape == (2, 3, 3)  # ceil(300/128), ceil(270/128)
    assert np.unravel_index(out[0].argmax(), out[0].shape) == (1, 0)
    coverage = engine.patch_coverage(image.shape, 128)
    np.testing.assert_allclose(coverage[:, 2], [14 / 128, 14 / 128, (44 * 14) / 128**2])
    np.testing.assert_allclose(coverage[2, 0], 44 / 128)


def test_a_patch_model_on_a_cpu_runs_cache_sized_batches_and_the_same_map():
    """On a CPU a forward takes CPU_PATCH_BATCH_PX input pixels of patches (16 of 128²), not 64:
    larger batches spill out of the cache; the map is the same whatever the batch."""
    sizes = []

    class Counting(MeanPatch):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sizes.append(x.shape[0])
            return super().forward(x)

    image = np.random.default_rng(0).random((1024, 1024)).astype(np.float32)
    default = run_sync(engine.predict_patches(Counting(), image, patch=128, postprocess=None, stats=[(0.0, 1.0)]))
    assert sizes == [16] * 4  # 64 patches
    sizes.clear()
    one_batch = run_sync(engine.predict_patches(Counting(), image, patch=128, batch_size=64, postprocess=None,
                                                stats=[(0.0, 1.0)]))
    assert sizes == [64]
    np.testing.assert_allclose(default, one_batch, rtol=1e-6)
    assert engine.predict.default_patch_batch(torch.device("cpu"), 32) == 256
    assert engine.predict.default_patch_batch(torch.device("cpu"), 1024) == 1  # never none
    assert engine.predict.default_patch_batch(torch.device("cuda"), 128) == 64


def test_edge_patches_are_reflect_padded_not_zero_padded():
    image = np.full((130, 128), 5.0, np.float32)
    out = run_sync(engine.predict_patches(MeanPatch(), image, patch=128, postprocess=None, stats=[(0.0, 1.0)]))
    np.testing.assert_allclose(out[0, :, 0], [5.0, 5.0], rtol=1e-6)


class CountingModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x)


def test_cancel_takes_effect_within_one_tile_and_leaves_no_output(tmp_path):
    model = CountingModel()
    token = CancelToken()
    seen = []

    def progress(step):
        seen.append(step)
        if step.done == 3:
            token.cancel()

    target = tmp_path / "out.zarr"
    with pytest.raises(Cancelled):
        run_sync(engine.predict_dense(model, np.zeros((256, 256), np.float32), tile=32, batch_size=1, out=target),
                 progress=progress, cancel=token)
    assert model.calls == 3
    assert seen[-1].total == 64
    assert not any(tmp_path.iterdir())  # the partial zarr was removed


def test_test_time_augmentation_reports_and_stops_between_its_eight_views():
    model = CountingModel()
    image = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    steps = []
    whole = run_sync(engine.predict_dense(model, image, tile=64, tta=True, postprocess=None), progress=steps.append)
    assert [s.done for s in steps] == list(range(9)) and steps[-1].total == 8  # one window, eight forwards
    mean, std = image_stats(image)
    expected = engine.dihedral_mean(model, torch.from_numpy((image - mean) / std)[None, None])
    np.testing.assert_allclose(whole, expected[0].detach().numpy(), atol=1e-5)  # still the mean of the views
    model.calls, token = 0, CancelToken()

    def cancel_after_two(step):
        if step.done == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        run_sync(engine.predict_dense(model, image, tile=64, tta=True), progress=cancel_after_two, cancel=token)
    assert model.calls == 2  # stopped two views into the only window, not after all eight


def test_progress_counts_every_tile_over_stack_planes(unet):
    steps = []
    run_sync(engine.predict_dense(unet, np.zeros((2, 256, 384), np.float32), tile=128), progress=steps.append)
    assert [s.done for s in steps] == list(range(13)) and steps[-1].total == 12  # 2 × 3 windows per plane


def test_device_selection_and_threads():
    assert engine.select_device("cpu") == torch.device("cpu")
    assert engine.select_device(None).type in {"cpu", "cuda", "mps"}
    assert engine.available_devices()[-1] == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="not available"):
            engine.select_device("cuda")
    before = torch.get_num_threads()
    try:
        assert engine.configure_threads(workers=engine.cpu_cores() * 4) == 1
        assert engine.configure_threads(workers=1) == engine.cpu_cores()
    finally:
        torch.set_num_threads(before)


def test_nan_image_is_refused(unet):
    image = np.zeros((64, 64), np.float32)
    image[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        run_sync(engine.predict_dense(unet, image))


def test_labels_from_logits_matches_argmax_including_ties():
    logits = torch.randn(2, 5, 33, 17)
    logits[0, 3, :4] = logits[0, 1, :4] = 99.0  # ties: the first maximum wins, as with argmax
    expected = logits.argmax(1, keepdim=True).to(torch.uint8)
    assert torch.equal(engine.labels_from_logits(logits), expected)


def test_reduced_precision_is_opt_in_close_and_refused_where_it_cannot_run(unet):
    image = np.random.default_rng(5).integers(0, 255, (96, 96)).astype(np.uint8)
    full = run_sync(engine.predict_dense(unet, image, device="cpu"))
    reduced = run_sync(engine.predict_dense(unet, image, device="cpu", precision="bfloat16"))
    assert 0 < np.abs(reduced - full).max() < 0.05  # computed in bfloat16: close, not identical
    with pytest.raises(ValueError, match="GPUs only"):
        run_sync(engine.predict_dense(unet, image, device="cpu", precision="float16"))
    with pytest.raises(ValueError, match="precision is one of"):
        run_sync(engine.predict_dense(unet, image, device="cpu", precision="int8"))
