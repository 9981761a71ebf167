"""SEM homogeneity: patch grid, aggregation, verdicts, Grad-CAM, training from image labels and marks, CV."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from napari_nanoclass.cli import main
from napari_nanoclass.homogeneity import DEFAULT_MODEL, texture
from napari_nanoclass.homogeneity import predict as homogeneity
from napari_nanoclass.homogeneity.predict import Aggregation, analyse, region_summary
from napari_nanoclass.homogeneity.texture import (
    CANDIDATE_C,
    DEFAULT_RECIPE,
    FeatureCache,
    choose_recipe,
    fit_texture_model,
    image_patch_features,
    patch_feature_grid,
    patch_regression,
    region_examples,
    texture_classifier,
)
from napari_nanoclass.homogeneity.train import (
    HomogeneityConfig,
    Micrograph,
    PatchSampler,
    _sites,
    cross_validate,
    lse_pool,
    sample_groups,
    train,
)
from napari_nanoclass.models.fibre_cnn import FibreCNN
from napari_nanoclass.models.fusion import fused
from napari_nanoclass.models.registry import LoadedModel, ModelInfo, load_model
from napari_nanoclass.models.texture_classifier import (
    N_FEATURES,
    N_REGION_STATISTICS,
    TextureClassifier,
    patch_features,
    region_statistics,
)

from .synthetic_fibres import fibres, random_beads

TINY = dict(widths=[8, 16, 16], hidden=16, patch=32, batch_size=16)


class Brightness(nn.Module):
    """A stand-in classifier: logit of "defective" = 4 × the patch's mean (z-scored) brightness."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(m), 4 * m], dim=1)


def loaded(module: nn.Module, patch: int = 64, method: str = "mean") -> LoadedModel:
    info = ModelInfo(name="bright", task="patch-classification", architecture="none", arch_params={},
                     class_names=["HNF", "NHNF"], patch=patch, training={"aggregation": {"method": method}})
    return LoadedModel(info, module, "0" * 64, None, torch.device("cpu"))


def test_patch_grid_is_aligned_on_sizes_not_multiple_of_the_patch():
    image = np.zeros((300, 200), np.float32)
    image[130:250, 70:120] = 10  # inside patches (2, 1) and (3, 1) of a 64-px grid
    result = analyse(image, loaded(Brightness()), view=128)
    assert result.p_nhnf.shape == result.coverage.shape == (5, 4)  # ⌈300/64⌉ × ⌈200/64⌉
    hot = np.argwhere(result.p_nhnf > 0.5)
    assert hot.tolist() == [[2, 1], [3, 1]]
    np.testing.assert_allclose(result.coverage[-1], [44 / 64] * 3 + [44 * 8 / 64**2])
    assert result.summary["nonhomogeneous_fraction"] == pytest.approx(2 / result.coverage.sum(), abs=1e-6)
    assert result.summary["verdict"] == "HNF"  # 2 of ~18 patches: the image as a whole is homogeneous
    # views of 128 px = 2×2 patches: 3 rows × 2 cols; only the view holding the hot patches is NHNF
    assert [(v["view_row"], v["view_col"]) for v in result.views] == [(r, c) for r in range(3) for c in range(2)]
    assert [v["verdict"] for v in result.views] == ["HNF"] * 2 + ["NHNF"] + ["HNF"] * 3
    assert result.views[2]["y0_px"] == 128 and result.views[2]["x0_px"] == 0


def test_stack_gives_a_map_per_plane_and_views_per_plane():
    first, second = np.zeros((128, 192), np.float32), np.zeros((128, 192), np.float32)
    first[70:120, 140:180] = 10  # patch (1, 2)
    second[:64, :64] = 10  # patch (0, 0)
    result = analyse(np.stack([first, second]), loaded(Brightness()), view=128)
    assert result.p_nhnf.shape == (2, 2, 3)
    assert np.argwhere(result.p_nhnf > 0.5).tolist() == [[0, 1, 2], [1, 0, 0]]
    assert {v["plane"] for v in result.views} == {0, 1} and len(result.views) == 4


def test_aggregation_mean_lse_and_coverage_weights():
    logits = np.array([[0.0, 0.0, 0.0], [-5.0, -5.0, 5.0]])  # (C, N): third patch defective
    mean = Aggregation("mean").pool(logits, np.ones(3))
    assert mean[1] == pytest.approx((2 / (1 + np.exp(5)) + 1 / (1 + np.exp(-5))) / 3)
    lse = Aggregation("lse", r=20).pool(logits, np.ones(3))
    assert lse[1] > 0.99  # a smooth max: one defective patch makes the bag defective
    assert Aggregation("mean").pool(logits, np.array([1.0, 1.0, 0.0]))[1] < 0.01  # zero coverage: ignored
    with pytest.raises(ValueError, match="unknown aggregation"):
        Aggregation("median").pool(logits, np.ones(3))
    with pytest.raises(ValueError, match="region head"):
        Aggregation("region").pool(logits, np.ones(3), np.ones((4, 3)))
    with pytest.raises(ValueError, match="no region head"):
        Aggregation.of(loaded(Brightness(), method="region"))


def test_region_statistics_weigh_patches_by_coverage():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(9, 3))
    stats = region_statistics(features)
    np.testing.assert_allclose(stats[:3], features.mean(0))
    np.testing.assert_allclose(stats[3:6], features.std(0))
    np.testing.assert_allclose(stats[6:], np.sort(features, axis=0)[[2, 6]].ravel())  # quartiles of 9: 3rd, 7th
    outlier = np.vstack([features, np.full((1, 3), 1e3)])
    np.testing.assert_allclose(region_statistics(outlier, np.r_[np.ones(9), 0.0]), stats)  # weight 0: ignored
    assert region_statistics(outlier, np.r_[np.ones(9), 0.5])[0] > stats[0] + 40  # half a patch: half its pull


def test_region_head_pools_whole_patches_and_partial_ones_only_without_them():
    model = TextureClassifier(2, "morphology", region_head=True)
    n = N_FEATURES["morphology"]
    coef = np.zeros((1, N_REGION_STATISTICS * n))
    coef[0, 0] = 1.0  # the class-1 logit is the region's weighted mean of feature 0
    model.region_head.set(np.zeros(len(coef[0])), np.ones(len(coef[0])), coef, np.zeros(1))
    features = np.zeros((5, n))
    features[4, 0] = 100.0  # a reflect-padded edge patch whose mirror seam looks like a bead
    whole = np.r_[np.ones(4), 0.5]
    assert model.region_logits(features, whole)[1] == pytest.approx(0.0)  # the edge patch is left out
    assert model.region_logits(features)[1] == pytest.approx(20.0)  # no weights: every patch counts
    # a region narrower than a patch has only partial patches: they are pooled, weighted
    assert model.region_logits(features, np.r_[np.full(4, 0.5), 0.25])[1] == pytest.approx(100 * 0.25 / 2.25)


def test_region_summary_verdict_threshold_and_confidence():
    logits = np.stack([np.zeros((2, 2)), np.full((2, 2), 1.0)])  # every patch p_nhnf = 0.73
    s = region_summary(logits, np.ones((2, 2)), ["HNF", "NHNF"], Aggregation())
    assert s["verdict"] == "NHNF" and s["confidence"] == pytest.approx(0.7311, abs=1e-3)
    assert s["nonhomogeneous_fraction"] == 1.0
    strict = region_summary(logits, np.ones((2, 2)), ["HNF", "NHNF"], Aggregation(threshold=0.8))
    assert strict["verdict"] == "HNF" and strict["confidence"] == pytest.approx(1 - 0.7311, abs=1e-3)


def test_lse_pool_lies_between_mean_and_max():
    logits = torch.tensor([[[0.0, 1.0], [0.0, 3.0], [0.0, -2.0]]])
    pooled = lse_pool(logits, r=2.0)[0, 1]
    assert logits[0, :, 1].mean() < pooled < logits[0, :, 1].max()


def _bead_micrographs(rng: np.random.Generator, n: int) -> list[Micrograph]:
    """48² images; defective ones carry a bead near the centre, so most 32² crops hold it."""
    out = []
    for i in range(n):
        beads = [(int(rng.integers(18, 30)), int(rng.integers(18, 30)), int(rng.integers(5, 8)))] if i % 2 else []
        out.append(Micrograph(fibres((48, 48), rng, n_fibres=3, beads=beads), f"m{i}", label=i % 2))
    return out


@pytest.fixture(scope="module")
def bead_model() -> LoadedModel:
    """A tiny FibreCNN that learned beads = defective (trained once for this module's tests)."""
    torch.manual_seed(0)
    return train(_bead_micrographs(np.random.default_rng(0), 60), HomogeneityConfig(name="beads", steps=120, **TINY))


def test_training_from_image_labels_learns_beads(bead_model):
    assert bead_model.info.training["final_loss"] < 0.45
    rng = np.random.default_rng(5)
    clean = analyse(fibres((96, 128), rng, n_fibres=6), bead_model)
    beaded = analyse(fibres((96, 128), rng, n_fibres=6, beads=[(48, 48, 7), (80, 112, 6)]), bead_model)
    assert beaded.summary["p_nhnf"] > clean.summary["p_nhnf"] + 0.1
    assert clean.summary["verdict"] == "HNF" and clean.summary["nonhomogeneous_fraction"] < 0.1
    # the patches holding the beads (32-px grid: (1, 1) and (2, 3)) are the defective ones
    assert beaded.p_nhnf[1, 1] > 0.5 and beaded.p_nhnf[2, 3] > 0.5
    assert np.delete(beaded.p_nhnf.ravel(), [5, 11]).max() < beaded.p_nhnf[[1, 2], [1, 3]].min()


def test_cam_has_the_image_shape_and_peaks_on_a_planted_defect(bead_model):
    rng = np.random.default_rng(11)
    y, x, r = 50, 75, 7
    image = fibres((96, 128), rng, n_fibres=6, beads=[(y, x, r)])
    result = analyse(image, bead_model, cam=True)
    assert result.cam.shape == image.shape and result.cam.dtype == np.float32
    assert result.cam.max() == pytest.approx(1.0)
    yy, xx = np.mgrid[:96, :128]
    near = np.hypot(yy - y, xx - x) <= 2 * r
    assert result.cam[near].mean() > 3 * result.cam[~near].mean()
    peak = np.unravel_index(np.argmax(result.cam), image.shape)
    assert np.hypot(peak[0] - y, peak[1] - x) <= 2 * r


def test_grad_cam_differentiates_the_head_only_and_equals_textbook_grad_cam():
    """Grad-CAM's weights are the score's gradient at the last block, which only the pool and head
    shape: the convolutions may run without autograd (inside inference mode, as the engine does)."""
    from torch.nn import functional as F

    from napari_nanoclass.models.fibre_cnn import defect_score, grad_cam

    torch.manual_seed(0)
    model = FibreCNN(widths=[4, 8], hidden=8, patch=32, init_std=0.2).eval()
    x = torch.randn(3, 1, 32, 32)
    last = model.features(x.requires_grad_(True))  # textbook: one graph through the whole network
    (grads,) = torch.autograd.grad(defect_score(model.head(F.max_pool2d(last, 2))).sum(), last)
    reference = F.interpolate(F.relu((grads.mean((2, 3), keepdim=True) * last).sum(1, keepdim=True)),
                              size=(32, 32), mode="bilinear", align_corners=False)
    with torch.inference_mode():
        cam = grad_cam(model, x.detach())
    assert cam.shape == (3, 1, 32, 32) and cam.max() > 0
    torch.testing.assert_close(cam, reference.detach(), rtol=1e-5, atol=1e-6)


def test_cnn_with_its_defect_map_runs_one_forward_with_the_verdicts_of_none(bead_model, monkeypatch):
    """A CNN that maps its own defects takes its verdicts from the map's pass: one forward per
    patch, the logits those of the analysis without a map (bit for bit), the map that of the former
    two passes (verdicts, then Grad-CAM of the unfused network) within 1e-5 on the 0–1 scale."""
    from napari_nanoclass import engine
    from napari_nanoclass.core.progress import run_sync
    from napari_nanoclass.io.images import image_stats

    image = fibres((96, 128), np.random.default_rng(11), n_fibres=6, beads=[(50, 75, 7)])
    forwards = []
    features = FibreCNN.features
    monkeypatch.setattr(FibreCNN, "features", lambda self, x: forwards.append(len(x)) or features(self, x))
    plain = analyse(image, bead_model)
    n_plain, forwards[:] = sum(forwards), []
    mapped = analyse(image, bead_model, cam=True)
    assert sum(forwards) == n_plain == 12  # 3 × 4 patches, each through the network once
    np.testing.assert_array_equal(mapped.logits, plain.logits)
    assert mapped.summary == plain.summary and mapped.views == plain.views

    def patches(module: nn.Module, per_pixel: bool = False) -> np.ndarray:
        return np.asarray(run_sync(engine.predict_patches(module, image, patch=32, stats=[image_stats(image)],
                                                          postprocess=None, per_pixel=per_pixel)))

    unfused = bead_model.module
    np.testing.assert_allclose(mapped.logits, patches(unfused), atol=1e-5)
    p_nhnf = 1 - homogeneity._softmax(patches(unfused), axis=0)[0]
    two_passes = homogeneity._scale_cam(patches(homogeneity._GradCam(unfused), per_pixel=True)[0], p_nhnf, 32)
    assert mapped.cam.max() == pytest.approx(1.0) and np.abs(mapped.cam - two_passes).max() <= 1e-5
    stack = analyse(np.stack([image, image[::-1]]), bead_model, cam=True)
    np.testing.assert_array_equal(stack.logits[:, 0], plain.logits)
    assert stack.cam.shape == (2, 96, 128)


def test_fused_fibre_cnn_is_the_same_function_without_batch_norm():
    torch.manual_seed(0)
    model = FibreCNN(widths=[4, 8], hidden=8, patch=32, init_std=0.2)
    for module in model.modules():  # batch norms that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1), module.running_var.uniform_(0.5, 2), module.weight.data.uniform_(0.5, 2)
    model.eval()
    folded = fused(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the model itself is unchanged
    x = torch.randn(5, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(folded.features(x), model.features(x), rtol=1e-5, atol=1e-5)
    assert fused(model) is folded  # kept while the weights stay
    with torch.no_grad():
        model.blocks[0][1].running_mean.add_(0.5)
    refolded = fused(model)
    assert refolded is not folded
    with torch.inference_mode():
        torch.testing.assert_close(refolded(x), model(x), rtol=1e-5, atol=1e-5)


def test_cam_streamed_to_zarr_for_big_images_equals_in_memory(bead_model, tmp_path, monkeypatch):
    image = fibres((96, 128), np.random.default_rng(3), n_fibres=6, beads=[(40, 40, 7)])
    small = analyse(image, bead_model, cam=True)
    monkeypatch.setattr(homogeneity, "IN_MEMORY_LIMIT", 1000)
    with pytest.raises(ValueError, match="workdir"):
        analyse(image, bead_model, cam=True)
    big = analyse(image, bead_model, cam=True, workdir=tmp_path / "work")
    assert (tmp_path / "work" / "cam.zarr").exists()
    np.testing.assert_allclose(np.asarray(big.cam), small.cam, atol=1e-6)
    # the CNN's own map comes with its logits, 1 + C values a pixel: that is what must fit in memory
    monkeypatch.setattr(homogeneity, "IN_MEMORY_LIMIT", 2 * image.size)
    with pytest.raises(ValueError, match="workdir"):
        analyse(image, bead_model, cam=True)
    np.testing.assert_array_equal(analyse(image, bead_model).p_nhnf, small.p_nhnf)  # no map: it still fits


def test_marked_regions_become_patch_labels():
    image = np.zeros((64, 96), np.uint8)
    marks = np.zeros((64, 96), np.uint8)
    marks[:, :40] = 1  # homogeneous on the left
    marks[:, 60:] = 2  # defective on the right; the middle is unmarked
    sites = _sites(Micrograph(image, "m", marks=marks), patch=32, stride=16)
    labels = {(int(y), int(x)): int(c) for y, x, c in sites}
    assert labels[(0, 0)] == 0 and labels[(32, 64)] == 1
    assert (0, 32) not in labels  # columns 32–63: 8 px homogeneous, 4 defective — not mostly one class
    with pytest.raises(ValueError, match="either an image label or region marks"):
        Micrograph(image, "m")


def test_training_from_marked_regions_learns_and_fine_tunes(bead_model, user_registry):
    rng = np.random.default_rng(2)
    left = fibres((64, 64), rng, n_fibres=4)
    right = fibres((64, 64), rng, n_fibres=4, beads=[(16, 16, 6), (48, 16, 6), (16, 48, 6), (48, 48, 6)])
    image = np.concatenate([left, right], axis=1)
    marks = np.concatenate([np.ones((64, 64), np.uint8), np.full((64, 64), 2, np.uint8)], axis=1)
    sampler = PatchSampler([Micrograph(image, "m", marks=marks)], 32, np.random.default_rng(0))
    assert set(sampler.classes) == {0, 1}
    config = HomogeneityConfig(name="tuned", steps=30, init_from=None, **TINY)
    model = train([Micrograph(image, "m", marks=marks)], config, save=True)
    assert model.path.parent == user_registry and len(model.sha256) == 64
    reloaded = load_model("tuned")
    assert reloaded.info.task == "patch-classification" and reloaded.info.patch == 32
    result = analyse(image, reloaded)
    assert result.p_nhnf[:, 2:].mean() > result.p_nhnf[:, :2].mean()
    with pytest.raises(ValueError, match="label per image"):
        train([Micrograph(image, "m", marks=marks)], HomogeneityConfig(strategy="mil", steps=1, **TINY))


def test_mil_training_learns_from_image_labels():
    torch.manual_seed(0)
    micrographs = _bead_micrographs(np.random.default_rng(1), 40)
    model = train(micrographs, HomogeneityConfig(name="mil", strategy="mil", bag_size=4, steps=80, **TINY))
    assert model.info.training["aggregation"]["method"] == "lse"
    rng = np.random.default_rng(9)
    clean = analyse(fibres((96, 96), rng, n_fibres=5), model)
    beaded = analyse(fibres((96, 96), rng, n_fibres=5, beads=[(48, 48, 7)]), model)
    assert beaded.summary["p_nhnf"] > clean.summary["p_nhnf"]


def test_cross_validation_never_puts_one_micrograph_on_both_sides():
    rng = np.random.default_rng(0)
    micrographs = [Micrograph(np.zeros((8, 8)), f"s{i // 2}_{i % 2}", label=i % 2) for i in range(20)]
    seen: list[tuple[set[str], list[str]]] = []

    def fit(train_set, fold):
        names = {m.name for m in train_set}
        seen.append((names, []))
        return lambda image: int(rng.integers(2))

    scores = cross_validate(micrographs, fit, ["a", "b"], folds=5, groups=sample_groups(micrographs))
    assert len(scores.y_true) == 20  # every micrograph held out exactly once
    train_sets = [names for names, _ in seen]
    for names in train_sets:
        held_out = {m.name for m in micrographs} - names
        # grouped by sample: both micrographs of a sample are on the same side
        assert all((f"s{k}_0" in held_out) == (f"s{k}_1" in held_out) for k in range(10))
    d = scores.as_dict()
    assert sum(map(sum, d["confusion"])) == 20 and set(d["per_class"]) == {"a", "b"}
    labels = {m.name: m.label for m in micrographs}
    assert sorted(scores.names) == sorted(labels) and scores.y_true == [labels[n] for n in scores.names]


def test_cross_validation_can_hold_out_one_group_at_a_time():
    micrographs = [Micrograph(np.zeros((8, 8)), f"s{i // 3}_{i % 3}", label=(i // 3) % 2) for i in range(12)]
    held_out: list[set[str]] = []

    def fit(train_set, fold):
        held_out.append({m.name for m in micrographs} - {m.name for m in train_set})
        return lambda image: 0

    scores = cross_validate(micrographs, fit, ["a", "b"], folds=None, groups=sample_groups(micrographs))
    assert sorted(held_out, key=sorted) == [{f"s{k}_{j}" for j in range(3)} for k in range(4)]
    assert sorted(scores.names) == sorted(m.name for m in micrographs)


@pytest.mark.parametrize("kind", [{"feature_set": "basic", "pooling": "mean"}, {}, {"feature_set": "morphology"}],
                         ids=["baseline", "shipped", "morphology"])
def test_texture_models_learn_beads_by_micrograph(kind):
    rng = np.random.default_rng(4)
    micrographs = []
    for i in range(16):
        beads = [(int(rng.integers(10, 54)), int(rng.integers(10, 118)), 6) for _ in range(6)] if i % 2 else []
        micrographs.append(Micrograph(fibres((64, 128), rng, n_fibres=8, beads=beads), f"t{i}", label=i % 2))
    scores = cross_validate(micrographs, texture_classifier(patch=64, **kind), ["HNF", "NHNF"], folds=4)
    assert scores.as_dict()["accuracy"] >= 0.8


def _beaded_set(n: int, seed: int, shape: tuple[int, int] = (128, 256)) -> list[Micrograph]:
    """Every second micrograph (label 1) with 8 beads among its fibres, patch-sized or larger."""
    rng = np.random.default_rng(seed)
    return [Micrograph(fibres(shape, rng, n_fibres=8, beads=random_beads(shape, rng, 8) if i % 2 else []),
                       f"m{seed}_{i}", label=i % 2) for i in range(n)]


def _counting_cache(folder=None) -> tuple[FeatureCache, list[tuple[bytes, int, str]]]:
    """A feature cache that records each grid it measures: (image bytes, patch, feature set)."""
    measured: list[tuple[bytes, int, str]] = []

    def measure(image, patch, feature_set):
        measured.append((image.tobytes(), patch, feature_set))
        return patch_feature_grid(image, patch, feature_set)

    return FeatureCache(folder, measure), measured


def test_feature_cache_measures_each_micrograph_once_across_folds_seeds_and_recipes(tmp_path, monkeypatch):
    micrographs = _beaded_set(8, seed=5)
    cache, measured = _counting_cache(tmp_path / "features")
    for c, seed in ((0.1, 0), (1.0, 0), (1.0, 1)):  # two recipes with the same features, two split seeds
        cross_validate(micrographs, texture_classifier(patch=64, feature_set="morphology", c=c, features=cache),
                       ["HNF", "NHNF"], folds=4, seed=seed)
    # every micrograph is in three training folds and one held-out set per run: measured once all the same
    assert sorted(measured) == sorted((m.image.tobytes(), 64, "morphology") for m in micrographs)
    # a recipe with other features, or another patch size, measures those
    cross_validate(micrographs, texture_classifier(patch=64, feature_set="basic", c=1.0, features=cache),
                   ["HNF", "NHNF"], folds=4)
    assert len(measured) == 16 and {k[2] for k in measured[8:]} == {"basic"}
    cache.grid(micrographs[0].image, 32, "basic")
    assert measured[-1] == (micrographs[0].image.tobytes(), 32, "basic")
    # keyed by content, not name or identity: an equal copy is found, a changed pixel is not
    cache.grid(micrographs[0].image.copy(), 64, "basic")
    assert len(measured) == 17
    changed = micrographs[0].image.copy()
    changed[0, 0] ^= 1
    cache.grid(changed, 64, "basic")
    assert len(measured) == 18
    # a new cache on the same folder reads the grids the first one measured
    again, measured_again = _counting_cache(tmp_path / "features")
    np.testing.assert_array_equal(again.grid(micrographs[3].image, 64, "morphology"),
                                  patch_feature_grid(micrographs[3].image, 64, "morphology"))
    assert measured_again == []
    # grids measured by other feature code are not read
    monkeypatch.setattr(texture, "FEATURES_VERSION", texture.FEATURES_VERSION + 1)
    newer, measured_newer = _counting_cache(tmp_path / "features")
    newer.grid(micrographs[3].image, 64, "morphology")
    assert len(measured_newer) == 1


def _cross_validated(micrographs: list[Micrograph], features: FeatureCache | None, **kind) -> tuple[object, list]:
    """Texture cross-validation (3 folds, by micrograph) and the recipe each fold chose."""
    recipes: list[dict] = []
    fit = texture_classifier(patch=64, features=features, **kind,
                             on_fit=lambda fold, model: recipes.append(model.info.training["recipe"]))
    return cross_validate(micrographs, fit, ["HNF", "NHNF"], folds=3), recipes


@pytest.mark.parametrize("kind", [{}, {"feature_set": "basic", "pooling": "mean", "c": 1.0}],
                         ids=["shipped", "patch-mean"])
def test_cross_validation_with_cached_features_gives_the_verdicts_of_the_engine(kind):
    micrographs = _beaded_set(12, seed=5, shape=(160, 300))  # edge patches too: the engine drops them for the head
    uncached, uncached_recipes = _cross_validated(micrographs, None, **kind)
    cached, cached_recipes = _cross_validated(micrographs, FeatureCache(), **kind)
    assert cached.names == uncached.names and sorted(cached.names) == sorted(m.name for m in micrographs)
    assert cached.y_true == uncached.y_true and cached.y_pred == uncached.y_pred
    assert cached_recipes == uncached_recipes and len(cached_recipes) == 3  # the same choice in each fold
    assert uncached.as_dict()["accuracy"] >= 0.75 and len(set(uncached.y_pred)) == 2  # real verdicts, not constant


def test_texture_model_runs_through_the_engine_as_its_regressions(user_registry):
    train_set, test_set = _beaded_set(12, seed=5), _beaded_set(6, seed=6)
    model = fit_texture_model(train_set, ["HNF", "NHNF"], "texture-test", patch=64, save=True)
    assert model.info.architecture == "texture-lr" and model.info.patch == 64 and len(model.sha256) == 64
    assert model.info.training["aggregation"]["method"] == "region"
    # the default recipe chose its feature set and C on the training set (one sample: by micrograph)
    recipe = model.info.training["recipe"]
    assert recipe["chosen_by"] == "leave one micrograph out" and len(recipe["candidates"]) == 6
    assert recipe["candidates"][f"{recipe['feature_set']} C={recipe['C']:g}"] == max(recipe["candidates"].values())
    feature_set, c = model.info.arch_params["feature_set"], model.info.training["C"]
    grids = [patch_feature_grid(m.image, 64, feature_set) for m in train_set]
    patches = patch_regression(c).fit(np.concatenate([g.reshape(-1, g.shape[-1]) for g in grids]),
                                      np.concatenate([np.full(g.shape[0] * g.shape[1], m.label)
                                                      for g, m in zip(grids, train_set)]))
    regions = patch_regression(c).fit(*region_examples(grids, [m.label for m in train_set]))
    reloaded = load_model("texture-test")  # through safetensors and the registry
    for m in test_set:
        result = analyse(m.image, reloaded)
        # every whole patch of the engine's map is the patch regression's probability for that patch,
        features = image_patch_features(m.image, 64, feature_set)
        np.testing.assert_allclose(result.p_nhnf.ravel(), patches.predict_proba(features)[:, 1], atol=1e-4)
        # and the verdict the region regression's on the statistics of all of them
        p_region = regions.predict_proba(region_statistics(features)[None])[0, 1]
        assert result.summary["p_nhnf"] == pytest.approx(p_region, abs=1e-3)
        assert result.summary["verdict"] == ("NHNF" if m.label else "HNF")  # it learnt the beads
    with pytest.raises(ValueError, match="no class-activation map"):
        analyse(test_set[0].image, reloaded, cam=True, cam_model=reloaded)
    with pytest.raises(ValueError, match="cannot be fine-tuned as a FibreCNN"):
        train(train_set, HomogeneityConfig(init_from="texture-test", steps=1, **TINY))
    with pytest.raises(ValueError, match="every class"):
        fit_texture_model([m for m in train_set if m.label == 0], ["HNF", "NHNF"], "one-class")
    marks = np.ones(train_set[0].image.shape, np.uint8)
    with pytest.raises(ValueError, match="whole-micrograph labels"):
        fit_texture_model([Micrograph(train_set[0].image, "marked", marks=marks)], ["HNF", "NHNF"], "marked")


def test_a_micrograph_with_edge_patches_is_judged_on_the_whole_patch_statistics_the_head_was_fitted_on():
    # the region head is fitted on whole grid patches (region_examples); judged through the engine,
    # whose grid also holds reflect-padded edge patches, the verdict must come from the same
    # statistics (benchmarks/homogeneity_recipe_cv.py relies on it)
    train_set = _beaded_set(12, seed=5)
    model = fit_texture_model(train_set, ["HNF", "NHNF"], "texture-edges", patch=64, feature_set="morphology", c=1.0)
    grids = [patch_feature_grid(m.image, 64, "morphology") for m in train_set]
    regions = patch_regression(1.0).fit(*region_examples(grids, [m.label for m in train_set]))
    for m in _beaded_set(4, seed=6, shape=(160, 300)):  # 2 × 4 whole patches, a half row and a 69 % column
        result = analyse(m.image, model)
        assert result.coverage.shape == (3, 5) and (result.coverage < 1).sum() == 7
        whole = image_patch_features(m.image, 64, "morphology")
        p_region = regions.predict_proba(region_statistics(whole)[None])[0, 1]
        assert result.summary["p_nhnf"] == pytest.approx(p_region, abs=1e-3)


def test_region_head_judges_each_view_and_each_plane(user_registry):
    model = fit_texture_model(_beaded_set(12, seed=5), ["HNF", "NHNF"], "texture-views", patch=64)
    clean, beaded = _beaded_set(2, seed=7)
    mosaic = np.concatenate([clean.image, beaded.image], axis=1)  # 128 × 512: two 256-px views
    result = analyse(mosaic, model, view=256)
    assert [(v["view_col"], v["verdict"]) for v in result.views] == [(0, "HNF"), (1, "NHNF")]
    assert result.features.shape == (N_FEATURES[model.info.arch_params["feature_set"]], 2, 8)
    stack = analyse(np.stack([mosaic, mosaic[:, ::-1]]), model, view=256)
    assert [(v["plane"], v["verdict"]) for v in stack.views] == [(0, "HNF"), (0, "NHNF"), (1, "NHNF"), (1, "HNF")]


def test_defect_map_of_a_texture_model_is_a_cnn_cam_weighted_by_the_texture_verdicts(bead_model):
    texture = fit_texture_model(_beaded_set(12, seed=5), ["HNF", "NHNF"], "texture-32", patch=32)
    y, x, r = 50, 75, 7
    image = fibres((96, 128), np.random.default_rng(11), n_fibres=6, beads=[(y, x, r)])
    result = analyse(image, texture, cam=True, cam_model=bead_model)
    assert result.model_name == "texture-32" and result.cam_model_name == "beads"
    np.testing.assert_allclose(result.p_nhnf, analyse(image, texture).p_nhnf)  # verdicts: the texture model's
    cnn = analyse(image, bead_model, cam=True)
    # the CNN's own map is its Grad-CAM weighted by its p_nhnf; this one, the same Grad-CAM weighted by
    # the texture model's: so the two differ by p_texture / p_cnn per patch, up to one scale factor
    per_pixel = np.repeat(np.repeat(result.p_nhnf / cnn.p_nhnf, 32, 0), 32, 1)[:96, :128]
    lit = cnn.cam > 1e-3
    ratio = result.cam[lit] / (cnn.cam[lit] * per_pixel[lit])
    assert lit.sum() > 100 and np.ptp(ratio) < 1e-3 * ratio.mean()
    peak = np.unravel_index(np.argmax(result.cam), image.shape)
    assert np.hypot(peak[0] - y, peak[1] - x) <= 2 * r
    with pytest.raises(ValueError, match="patch size"):
        analyse(image, fit_texture_model(_beaded_set(8, seed=6), ["HNF", "NHNF"], "texture-64", patch=64),
                cam=True, cam_model=bead_model)


def test_fibre_cnn_paper_shape_and_heads():
    paper = FibreCNN()
    assert paper(torch.zeros(2, 1, 128, 128)).shape == (2, 2)
    assert paper.head[2].in_features == 128 * 4 * 4 and paper.head[2].out_features == 40
    gap = FibreCNN(n_classes=3, head="gap")
    assert gap(torch.zeros(1, 1, 128, 128)).shape == (1, 3)
    with pytest.raises(ValueError, match="divisible"):
        FibreCNN(patch=100)


def test_cli_writes_the_output_contract_and_reports_bad_files(bead_model, tmp_path, user_registry):
    from PIL import Image

    from napari_nanoclass.models.registry import save_model

    save_model(bead_model.module, bead_model.info)
    rng = np.random.default_rng(7)
    beads = [(16 + 32 * i, 16 + 32 * j, 7) for i in range(3) for j in range(4)]  # one in each whole patch
    Image.fromarray(fibres((100, 140), rng, beads=beads)).save(tmp_path / "beaded.png")
    Image.fromarray(fibres((100, 140), rng)).save(tmp_path / "clean.png")
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    code = main(["homogeneity", str(tmp_path / "beaded.png"), str(tmp_path / "clean.png"), str(tmp_path / "broken.tif"),
                 "--out", str(out), "--model", "beads", "--cam", "--view", "64", "--quiet"])
    assert code == 1  # one input failed
    rows = {r["image"]: r for r in csv.DictReader(open(out / "homogeneity.csv"))}
    assert {"image", "verdict", "nonhomogeneous_fraction", "p_nhnf"} <= set(rows["beaded"])
    assert rows["beaded"]["verdict"] == "NHNF" and rows["clean"]["verdict"] == "HNF"
    assert rows["broken"]["status"] == "failed" and "broken.tif" in rows["broken"]["error"]
    assert rows["beaded"]["cam_model"] == "beads"  # a CNN makes its own defect map
    import tifffile

    assert tifffile.imread(out / "beaded_pnhnf.tif").shape == (4, 5)  # ⌈100/32⌉ × ⌈140/32⌉
    assert tifffile.imread(out / "beaded_cam.tif").shape == (100, 140)
    views = list(csv.DictReader(open(out / "homogeneity_views.csv")))
    assert len([v for v in views if v["image"] == "beaded"]) == 2 * 3  # 64-px views over 100×140


def test_cli_fits_a_texture_model_from_class_folders_and_analyses_with_it(tmp_path, user_registry):
    from PIL import Image

    for m in _beaded_set(10, seed=8, shape=(256, 256)):
        folder = tmp_path / "data" / ("defective" if m.label else "non_defective")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(m.image).save(folder / f"{m.name}.png")
    assert main(["train-homogeneity", "--data", str(tmp_path / "data"), "--name", "cli-texture", "--quiet"]) == 0
    fitted, shipped = load_model("cli-texture").info, load_model(DEFAULT_MODEL).info
    # no options: the recipe of the shipped default model, its choice made on these micrographs
    assert fitted.architecture == shipped.architecture == "texture-lr" and fitted.patch == shipped.patch
    assert fitted.arch_params["region_head"] and fitted.arch_params["feature_set"] in ("morphology", "extended")
    assert set(fitted.training["recipe"]["candidates"]) == set(shipped.training["recipe"]["candidates"])
    assert fitted.training["aggregation"]["method"] == shipped.training["aggregation"]["method"] == "region"
    for m in _beaded_set(2, seed=9, shape=(256, 256)):
        Image.fromarray(m.image).save(tmp_path / f"{m.name}.png")
    out = tmp_path / "out"
    assert main(["homogeneity", str(tmp_path / "m9_0.png"), str(tmp_path / "m9_1.png"), "--out", str(out),
                 "--model", "cli-texture", "--quiet"]) == 0
    rows = {r["image"]: r for r in csv.DictReader(open(out / "homogeneity.csv"))}
    assert rows["m9_0"]["verdict"] == "HNF" and rows["m9_1"]["verdict"] == "NHNF"


def test_a_zarr_mosaic_gives_the_same_maps_as_in_memory(tmp_path):
    import zarr

    mosaic = np.zeros((192, 320), np.float32)
    mosaic[70:120, 140:180] = 10
    store = zarr.open_array(str(tmp_path / "mosaic.zarr"), mode="w", shape=mosaic.shape, chunks=(64, 64),
                            dtype="float32")
    store[:] = mosaic
    lazy = analyse(zarr.open_array(str(tmp_path / "mosaic.zarr"), mode="r"), loaded(Brightness()), view=128)
    eager = analyse(mosaic, loaded(Brightness()), view=128)
    np.testing.assert_allclose(lazy.logits, eager.logits, atol=1e-5)
    assert lazy.summary == eager.summary and len(lazy.views) == 2 * 3


def test_sem_sample_is_a_greyscale_micrograph():
    from napari_nanoclass._napari.samples import sem_fibres

    [(data, meta, kind)] = sem_fibres()
    assert kind == "image" and data.shape == (699, 1024) and data.dtype == np.uint8
    assert "figshare" in meta["metadata"]["source"]


def test_training_that_does_not_learn_says_so():
    micrographs = [Micrograph(np.zeros((48, 48), np.uint8), f"z{i}", label=i % 2) for i in range(4)]
    with pytest.warns(UserWarning, match="chance level"):
        train(micrographs, HomogeneityConfig(steps=3, lr=0.0, **TINY))  # identical inputs, no updates


def test_a_sample_is_the_stem_up_to_the_first_separator_in_any_case():
    names = ["PPC9_05", "ppc9_011_6", "PPC9-", "pp26-01_002", "pp26-01_003", "PP28_01"]
    micrographs = [Micrograph(np.zeros((4, 4)), n, label=0) for n in names]
    assert sample_groups(micrographs) == ["ppc9", "ppc9", "ppc9", "pp26", "pp26", "pp28"]


def test_morphology_features_measure_beads_relative_to_the_fibre_width():
    clean = fibres((128, 128), np.random.default_rng(3), n_fibres=10)
    beads = [(32, 32, 7), (96, 40, 7), (64, 100, 7)]  # on the same fibres (same seed): only the widths change
    beaded = fibres((128, 128), np.random.default_rng(3), n_fibres=10, beads=beads)
    zscored = [(im - im.mean()) / im.std() for im in (clean, beaded)]
    f_clean, f_beaded = (patch_features(z.astype(np.float32), "morphology") for z in zscored)
    assert f_clean.shape == (N_FEATURES["morphology"],)
    wide = [6, 7, 8]  # share of the skeleton wider than 2× and 3× the median; mask deeper than 2× (Otsu mask)
    assert all(f_beaded[i] > f_clean[i] for i in wide)
    magnified = fibres((256, 256), np.random.default_rng(3), n_fibres=10, width=4.0)
    ratios = patch_features(((magnified - magnified.mean()) / magnified.std()).astype(np.float32), "morphology")
    assert ratios[2] > f_clean[2]  # the median radius follows the magnification
    assert abs(ratios[4] - f_clean[4]) < 0.5  # its 90th percentile relative to it does not


def test_recipe_is_chosen_with_whole_samples_held_out():
    rng = np.random.default_rng(0)
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    samples = ["a", "a", "b", "b", "c", "c", "d", "d"]
    # "useful" separates the classes; "noise" does not, so every C of it scores lower
    grids = {"useful": [rng.normal(2.0 * y, 0.3, (2, 2, 3)) for y in labels],
             "noise": [rng.normal(0.0, 1.0, (2, 2, 3)) for _ in labels]}
    recipe = choose_recipe(grids, labels, samples, [f"m{i}" for i in range(8)])
    assert recipe.feature_set == "useful" and recipe.chosen_by == "leave one sample out"
    assert set(recipe.scores) == {f"{s} C={c:g}" for s in grids for c in CANDIDATE_C}
    assert recipe.c == CANDIDATE_C[0]  # equals prefer the strongest regularisation
    one_each = choose_recipe(grids, labels, ["a"] * 4 + ["c"] * 4, [f"m{i}" for i in range(8)])
    assert one_each.chosen_by == "leave one micrograph out"  # one sample per class: nothing to hold out
    too_few = choose_recipe(grids, [0, 1], ["a", "c"], ["m0", "m1"])
    assert (too_few.feature_set, too_few.c) == DEFAULT_RECIPE and too_few.scores == {}
    assert choose_recipe(grids, labels, samples, samples, c=0.5).c == 0.5
