"""Liposomes: simulator, object inputs, metrics, classifier training with imbalance strategies,
the SVM baseline, cross-validation grouping, and the pipeline's report and file contract."""

from __future__ import annotations

import csv
from dataclasses import replace
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from napari_nanoclass.core.analysis import files_steps
from napari_nanoclass.core.metrics import class_metrics, match_instances, tpr_at_tnr
from napari_nanoclass.core.progress import run_sync
from napari_nanoclass.core.shapes import inner_rim
from napari_nanoclass.liposomes import ENCAPSULATION, LAMELLARITY
from napari_nanoclass.liposomes import objects as liposome_objects
from napari_nanoclass.liposomes import predict as liposome_predict
from napari_nanoclass.liposomes import train as liposome_training
from napari_nanoclass.liposomes.predict import (
    _classes,
    analyse,
    drop_faint,
    fill_holes,
    instances_from_probabilities,
    noise_sigma,
    summarise,
    working_image,
)
from napari_nanoclass.liposomes.simulator import (
    BALANCED_MIX,
    STUDY_MIX,
    ClassMix,
    SimulationConfig,
    simulate_field,
)
from napari_nanoclass.liposomes.train import (
    PRIOR_STRENGTHS,
    ClassifierConfig,
    Objects,
    _epoch_indices,
    _smote,
    balanced_accuracy,
    choose_decision,
    corrected_objects,
    cross_validate,
    detection_target,
    detector_pairs,
    mask_signatures,
    object_probabilities,
    objects_from_fields,
    predict_objects,
    train_classifier,
    trained_mix,
)
from napari_nanoclass.models.lipnet import decide, shift_prior
from napari_nanoclass.models.registry import load_model, save_model

SMALL = SimulationConfig(shape=(192, 192), objects=(4, 7), diameter_nm=(40.0, 160.0), mix=BALANCED_MIX)


@pytest.fixture(scope="module")
def balanced_objects():
    return objects_from_fields([simulate_field(SMALL, seed) for seed in range(40)])


def test_simulated_field_matches_its_ground_truth():
    field = simulate_field(SimulationConfig(shape=(256, 320)), seed=3)
    assert field.image.shape == field.labels.shape == (256, 320) and field.image.dtype == np.float32
    assert abs(field.image.mean()) < 1e-3 and abs(field.image.std() - 1) < 1e-3
    assert {o["label"] for o in field.objects} == set(np.unique(field.labels)) - {0}
    for obj in field.objects:
        assert obj["lamellarity"] in LAMELLARITY and obj["encapsulation"] in ENCAPSULATION
        assert 30 <= obj["diameter_nm"] <= 300
        mask = field.labels == obj["label"]
        assert mask[int(obj["centre_y"]), int(obj["centre_x"])] or obj["lamellarity"] == "uncertain"
    # the membrane is dark: object rims are darker than the background on average
    rim = detection_target(field.labels) == 2
    assert field.image[rim].mean() < field.image[field.labels == 0].mean() - 0.2
    # a seed reproduces a field exactly, another seed gives another
    assert np.array_equal(simulate_field(SimulationConfig(shape=(256, 320)), seed=3).image, field.image)
    assert not np.array_equal(simulate_field(SimulationConfig(shape=(256, 320)), seed=4).image, field.image)


def test_class_mix_is_followed():
    config = SimulationConfig(shape=(256, 256), objects=(8, 8), mix=ClassMix((1, 0, 0), (0, 1, 0)))
    objects = [o for s in range(5) for o in simulate_field(config, s).objects]
    assert {o["lamellarity"] for o in objects} == {"unilamellar"} and {o["encapsulation"] for o in objects} == {"empty"}
    study = [o for s in range(30) for o in simulate_field(replace(config, mix=STUDY_MIX), s).objects]
    assert np.mean([o["lamellarity"] == "unilamellar" for o in study]) > 0.75
    assert np.mean([o["encapsulation"] == "full" for o in study]) > 0.9


def test_real_texture_is_borrowed_when_given():
    texture = np.tile(np.array([[0, 10], [10, 0]], np.float32), (200, 200))  # a checkerboard "micrograph"
    config = SimulationConfig(shape=(128, 128), objects=(0, 0), carbon_probability=0, texture=texture, dose=(1e5, 1e5))
    checker = np.indices((128, 128)).sum(0) % 2 * 2 - 1.0
    with_texture = abs(np.corrcoef(simulate_field(config, 0).image.ravel(), checker.ravel())[0, 1])
    without = abs(np.corrcoef(simulate_field(replace(config, texture=None), 0).image.ravel(), checker.ravel())[0, 1])
    assert with_texture > 0.1 > without


def test_detection_target_separates_touching_objects():
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 5:30], labels[10:30, 30:55] = 1, 2  # touching along x = 29 | 30
    target = detection_target(labels, boundary_px=2)
    assert set(np.unique(target)) == {0, 1, 2}
    assert (target[:, 28:32][10:30] == 2).all()  # the shared edge is boundary on both sides
    probabilities = np.stack([target == k for k in range(3)]).astype(np.float32)
    instances = instances_from_probabilities(probabilities, min_area_px=20)
    assert instances.max() == 2 and match_instances(instances, labels)["f1"] == 1.0


def test_detections_without_a_membrane_around_them_are_dropped():
    labels = np.zeros((60, 100), np.int32)
    labels[10:40, 5:35], labels[10:40, 55:85] = 1, 2
    target = detection_target(labels, boundary_px=2)
    target[target == 2] = np.where(labels[target == 2] == 2, 1, 2)  # object 2: an interior with no rim (ice)
    probabilities = np.stack([target == k for k in range(3)]).astype(np.float32)
    kept = instances_from_probabilities(probabilities, min_area_px=20)
    assert kept.max() == 1 and match_instances(kept, np.where(labels == 1, 1, 0))["f1"] == 1.0
    assert instances_from_probabilities(probabilities, min_area_px=20, min_rim_boundary=0).max() == 2


def test_noise_sigma_is_the_pixel_noise_whatever_the_objects_and_the_background():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:256, :256]
    scene = 0.02 * xx + 5 * ((yy - 128) ** 2 + (xx - 90) ** 2 < 40**2) - 3 * ((yy - 60) ** 2 + (xx - 200) ** 2 < 20**2)
    for sigma in (0.2, 1.0, 3.0):
        assert abs(noise_sigma(scene + rng.normal(0, sigma, scene.shape)) / sigma - 1) < 0.1


def _ring_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit noise with a small dark ring, a small bright ring (an inverted image's membrane) and nothing
    elsewhere; labels: 1 and 2 on the rings, 3 a speck of noise as small, 4 a wide object on noise."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 1, (120, 160))
    yy, xx = np.mgrid[:120, :160]
    labels = np.zeros(image.shape, np.int32)
    for label, (cy, cx), contrast in ((1, (30, 30), -3.0), (2, (30, 90), 3.0), (3, (90, 30), 0.0)):
        r = np.hypot(yy - cy, xx - cx)
        image[(r >= 2.5) & (r < 3.5)] += contrast
        labels[r < 3.5] = label
    labels[np.hypot(yy - 80, xx - 110) < 12] = 4
    return image, labels


def test_small_detections_that_do_not_stand_out_of_the_noise_are_dropped():
    """A detection a few pixels across is kept only if its rim differs from its surroundings by more
    than noise could make it (either sign); wider ones are kept whatever their contrast."""
    image, labels = _ring_scene()
    kept = drop_faint(labels, image)
    assert np.array_equal(kept, np.where(labels == 3, 0, np.where(labels == 4, 3, labels)))  # renumbered 1..3
    assert np.array_equal(drop_faint(labels, image, min_snr=0), labels)
    # with every object judged (narrower than 30 px), the wide one on plain noise goes too
    assert np.array_equal(drop_faint(labels, image, below_px=30), np.where(labels >= 3, 0, labels))
    # labels at a detector's enlarged scale are judged on the input's pixels and come back at their own scale
    enlarged = np.kron(labels, np.ones((2, 2), np.int32))
    assert np.array_equal(drop_faint(enlarged, image), np.kron(kept, np.ones((2, 2), np.int32)))


def test_over_many_noise_fields_small_specks_are_rarely_kept_and_rings_always():
    specks = rings = 0
    for seed in range(30):
        image, labels = _ring_scene(seed)
        kept = drop_faint(labels, image)
        rings += kept.max() >= 2 and np.array_equal(kept[labels <= 2], labels[labels <= 2])
        specks += bool(((kept > 0) & (labels == 3)).any())
    assert rings == 30 and specks <= 1


def test_two_liposomes_seen_as_one_are_cut_at_the_neck():
    yy, xx = np.mgrid[:50, :80]
    discs = [(yy - 25) ** 2 + (xx - x) ** 2 <= 15 ** 2 for x in (24, 52)]  # centres 28 px apart: a peanut
    union = discs[0] | discs[1]
    ring = union & ~ndi.binary_erosion(union, iterations=2)
    probabilities = np.stack([~union, union & ~ring, ring]).astype(np.float32)  # one interior, one outer rim
    truth = np.where(discs[0], 1, 0) + np.where(discs[1] & ~discs[0], 2, 0)
    assert instances_from_probabilities(probabilities, min_area_px=50, min_solidity=0.0).max() == 1
    split = instances_from_probabilities(probabilities, min_area_px=50)
    assert split.max() == 2 and match_instances(split, truth)["tp"] == 2


def test_smoothing_cuts_thin_attachments_and_keeps_the_largest_piece():
    """Specks of "liposome" joined to a vesicle by the watershed are cut off by the opening; what
    is left too small goes; no radius leaves the objects as they are."""
    from napari_nanoclass.liposomes.predict import _smoothed

    yy, xx = np.mgrid[:60, :120]
    disc = (yy - 30) ** 2 + (xx - 30) ** 2 <= 20 ** 2
    streak = (np.abs(yy - 30) <= 1) & (xx > 48) & (xx < 75)
    blob = (yy - 30) ** 2 + (xx - 80) ** 2 <= 6 ** 2  # joined to the disc by the streak
    small = (yy - 10) ** 2 + (xx - 110) ** 2 <= 4 ** 2
    instances = np.where(disc | streak | blob, 1, 0) + np.where(small, 2, 0)
    smoothed = _smoothed(instances.astype(np.int32), radius=3, min_area_px=80)
    assert set(np.unique(smoothed)) == {0, 1}  # the small object is gone
    assert match_instances(smoothed, disc.astype(np.int32), iou=0.95)["tp"] == 1  # streak and blob cut off
    assert np.array_equal(_smoothed(instances, radius=0, min_area_px=80), instances)


def test_instance_matching_counts_hits_misses_and_false_alarms():
    truth = np.zeros((50, 50), np.int32)
    truth[5:15, 5:15], truth[30:40, 30:40], truth[5:10, 40:45] = 1, 2, 3
    pred = np.zeros_like(truth)
    pred[5:15, 6:15] = 7  # IoU 0.9 with object 1
    pred[30:35, 30:40] = 4  # IoU 0.5 with object 2: counts
    pred[20:25, 20:25] = 9  # nothing there
    scores = match_instances(pred, truth)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 1, 1)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["f1"] == pytest.approx(2 / 3)


def test_class_metrics_one_vs_rest():
    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    metrics = class_metrics(confusion, ["a", "b", "c"])
    assert metrics["a"]["TPR"] == pytest.approx(0.8) and metrics["a"]["PPV"] == pytest.approx(8 / 9)
    assert metrics["b"]["TNR"] == pytest.approx(8 / 10) and metrics["b"]["NPV"] == pytest.approx(8 / 9)
    assert metrics["b"]["F1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert np.isnan(metrics["c"]["TPR"]) and metrics["c"]["support"] == 0


def test_tpr_at_matched_specificity():
    rng = np.random.default_rng(0)
    negatives, positives = rng.uniform(0, 1, 400), rng.uniform(0.5, 1.5, 100)
    scores = np.concatenate([negatives, positives])
    positive = np.r_[np.zeros(400, bool), np.ones(100, bool)]
    for tnr in (0.5, 0.9, 0.975, 1.0):
        tpr, reached = tpr_at_tnr(scores, positive, tnr)
        # brute force: the lowest threshold t ("score >= t") that keeps the TNR
        ok = [t for t in np.unique(scores) if np.mean(negatives < t) >= tnr]
        threshold = min(ok)
        assert reached >= tnr and reached == pytest.approx(np.mean(negatives < threshold))
        assert tpr == pytest.approx(np.mean(positives >= threshold))
    assert tpr_at_tnr(scores, positive, 1.0)[0] == pytest.approx(np.mean(positives > negatives.max()))
    assert tpr_at_tnr(-scores, positive, 0.9)[0] < 0.05  # a reversed score finds almost nothing


def test_crop_modes_and_measurements():
    image = np.random.default_rng(0).standard_normal((100, 120)).astype(np.float32)
    labels = np.zeros((100, 120), np.int32)
    yy, xx = np.mgrid[:100, :120]
    labels[np.hypot(yy - 50, xx - 40) < 15] = 1
    labels[np.hypot(yy - 20, xx - 100) < 8] = 2
    rows = liposome_objects.measure(labels, pixel_size_nm=2.0)
    assert [r["label"] for r in rows] == [1, 2]
    assert rows[0]["diameter_nm"] == pytest.approx(60, rel=0.05) and rows[0]["max_width_nm"] >= rows[0]["diameter_nm"] - 4
    masked = liposome_objects.crops(image, labels, "masked", size=32)
    cropped = liposome_objects.crops(image, labels, "cropped", size=32)
    wide = liposome_objects.crops(image, labels, "surroundings", size=32, margin=20)
    assert masked.shape == cropped.shape == wide.shape == (2, 32, 32)
    assert (masked[0, 0, 0] == 0) and cropped[0, 0, 0] != 0  # outside the object: zeroed only when masked
    with pytest.raises(ValueError, match="crop mode"):
        liposome_objects.crops(image, labels, "whole")
    features = liposome_objects.features(image, labels, 2.0)
    assert features.shape == (2, len(liposome_objects.FEATURE_NAMES)) and np.isfinite(features).all()


def test_objects_measured_in_threads_give_the_serial_crops_and_features_in_label_order():
    field = simulate_field(SimulationConfig(shape=(256, 256), objects=(6, 8)), 3)
    image = ((field.image - field.image.mean()) / field.image.std()).astype(np.float32)
    assert field.labels.max() >= 6
    for mode in liposome_objects.CROP_MODES:
        serial = liposome_objects.crops(image, field.labels, mode, pixel_size_nm=2.5)
        threaded = liposome_objects.crops(image, field.labels, mode, pixel_size_nm=2.5, threads=3)
        assert np.array_equal(serial, threaded), mode
    assert np.array_equal(liposome_objects.features(image, field.labels, 2.5),
                          liposome_objects.features(image, field.labels, 2.5, threads=3))


def test_masked_local_crops_are_relative_to_the_ice_around_each_object():
    """The same object on thin and on thick ice gives the same masked-local crop, where the plain
    masked crops differ by the background step; neighbours do not count as ice."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:80, :200]
    labels = np.zeros((80, 200), np.int32)
    for label, cx in ((1, 50), (2, 150)):
        labels[np.hypot(yy - 40, xx - cx) < 14] = label
    pattern = 0.1 * rng.standard_normal((80, 100)).astype(np.float32)
    image = np.concatenate([pattern, pattern + 2.0], axis=1) - 0.5 * (labels > 0)  # a thicker right half
    masked = liposome_objects.crops(image, labels, "masked", size=32)
    local = liposome_objects.crops(image, labels, "masked-local", size=32)
    inside = masked[0] != 0
    assert np.abs(masked[1] - masked[0])[inside].mean() > 1.5
    np.testing.assert_allclose(local[1][inside], local[0][inside], atol=1e-4)
    assert local[0][10:22, 10:22].mean() == pytest.approx(-0.5, abs=0.05)  # darker than its ice by 0.5
    # a dark neighbour in the ring is not ice: the reference stays the free ice level
    crowded = image.copy()
    labels[40:48, 64:80] = 3
    crowded[labels == 3] = -5.0
    again = liposome_objects.crops(crowded, labels, "masked-local", size=32)[0]
    np.testing.assert_allclose(again[10:22, 10:22], local[0][10:22, 10:22], atol=0.02)


def test_objects_from_fields_carry_classes_and_groups(balanced_objects):
    objects = balanced_objects
    assert objects.crops.shape[1:] == (32, 32) and len(objects) > 150
    assert objects.crop_mode == ClassifierConfig().input_mode == liposome_objects.DEFAULT_CROP_MODE
    assert objects.subset(np.arange(5)).crop_mode == objects.crop_mode
    with pytest.raises(ValueError, match="different modes"):
        Objects.concatenate([objects, replace(objects, crop_mode="cropped")])
    assert set(np.unique(objects.groups)) <= set(range(40))
    for targets in objects.targets.values():
        assert set(np.unique(targets)) == {0, 1, 2}


def test_resampling_strategies_balance_an_epoch():
    y = np.array([0] * 90 + [1] * 8 + [2] * 2)
    rng = np.random.default_rng(0)
    assert np.bincount(y[_epoch_indices(y, "oversample", rng)]).tolist() == [90, 90, 90]
    under = y[_epoch_indices(y, "undersample", rng)]
    assert np.bincount(under).tolist() == [72, 8, 2]
    assert sorted(_epoch_indices(y, "none", rng)) == list(range(100))


def test_smote_makes_new_minority_samples_between_neighbours(balanced_objects):
    keep = np.flatnonzero(balanced_objects.targets["lamellarity"] != 2)[:60]
    objects = balanced_objects.subset(keep)
    y = objects.targets["lamellarity"]
    grown, y_grown = _smote(objects, y, seed=0)
    counts = np.bincount(y_grown)
    assert counts[0] == counts[1] == np.bincount(y).max()
    new = grown.crops[len(y):]
    assert len(new) > 0 and not any(np.array_equal(n, c) for n in new[:5] for c in objects.crops)


def test_lipnet_learns_unilamellar_from_multilamellar_on_held_out_fields(balanced_objects):
    objects = balanced_objects.subset(np.flatnonzero(balanced_objects.targets["lamellarity"] < 2))
    held_out = np.isin(objects.groups, range(30, 40))
    train, test = objects.subset(~held_out), objects.subset(held_out)
    config = ClassifierConfig(problem="lamellarity", epochs=12, patience=12, batch_size=32)
    result = train_classifier(train, config)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    pred = predict_objects(result, test).argmax(1)
    assert balanced_accuracy(test.targets["lamellarity"], pred, 3) > 0.65  # chance: 0.5
    assert result.info.training["problem"] == "lamellarity" and result.info.arch_params["size_input"]


def test_lipnet_learns_from_handcrafted_features_when_its_crops_are_blank(balanced_objects, tiny_liposome_models):
    """With ``feature_input`` the SVM's features reach the decision: on blank crops the network
    still tells uni- from multilamellar on held-out fields. Their standardisation travels with the
    saved weights, and the analysis measures the features for such a classifier itself."""
    objects = balanced_objects.subset(np.flatnonzero(balanced_objects.targets["lamellarity"] < 2))
    blank = replace(objects, crops=np.zeros_like(objects.crops))
    held_out = np.isin(blank.groups, range(30, 40))
    train, test = blank.subset(~held_out), blank.subset(held_out)
    config = ClassifierConfig(name="tiny-features", problem="lamellarity", epochs=12, patience=12, batch_size=32,
                              feature_input=True)
    result = train_classifier(train, config, register=True)
    assert balanced_accuracy(test.targets["lamellarity"], predict_objects(result, test, balanced=True).argmax(1),
                             3) > 0.75  # chance 0.5; crops and sizes alone cannot do this
    scaling = result.module.descriptor_scale
    assert scaling.shape == (len(liposome_objects.FEATURE_NAMES),) and not torch.allclose(scaling, torch.ones_like(scaling))
    loaded = load_model("tiny-features")
    np.testing.assert_allclose(object_probabilities(loaded.module, test), object_probabilities(result.module, test),
                               atol=1e-6)
    with pytest.raises(ValueError, match="handcrafted"):
        result.module(torch.zeros(1, 1, 32, 32), torch.zeros(1))
    field = simulate_field(SMALL, seed=98)
    report = analyse(field.image, 2.5, labels=field.labels, detector=tiny_liposome_models[0],
                     classifiers={"lamellarity": "tiny-features"})
    expected = predict_objects(result, objects_from_fields([field]))
    # the analysis re-normalises the image: float rounding moves the edge-density threshold a little
    np.testing.assert_allclose([row["lamellarity_confidence"] for row in report.objects], expected.max(1), atol=0.02)


def _overcalling_posteriors(n_major: int, n_minor: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-class posteriors of a network trained balanced: right on average, but the majority's
    tail is called minority far more often than there are minority objects."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_major, int), np.ones(n_minor, int)]
    logit = np.where(y == 1, 1.5, -1.5) + rng.normal(0, 1.2, len(y))
    p1 = 1 / (1 + np.exp(-logit))
    return np.stack([1 - p1, p1, np.zeros_like(p1)], 1), y


def test_prior_shift_moves_decisions_towards_the_expected_mix():
    probabilities, _ = _overcalling_posteriors(200, 20)
    ratio = [1.8, 0.2, 1.0]
    assert np.array_equal(shift_prior(probabilities, ratio, 0.0), probabilities.astype(np.float32))
    shifted = shift_prior(probabilities, ratio, 1.0)
    np.testing.assert_allclose(shifted.sum(1), 1, atol=1e-6)
    expected = probabilities[:, 1] * 0.2 / (probabilities[:, 0] * 1.8 + probabilities[:, 1] * 0.2)
    np.testing.assert_allclose(shifted[:, 1], expected, rtol=1e-5)
    called = [np.sum(shift_prior(probabilities, ratio, t).argmax(1) == 1) for t in PRIOR_STRENGTHS]
    assert called == sorted(called, reverse=True) and called[-1] < called[0]


def test_operating_point_is_chosen_by_held_out_f1():
    from sklearn.metrics import f1_score

    probabilities, y = _overcalling_posteriors(900, 60)
    data_mix = np.array([900, 60, 0]) / 960
    decision = choose_decision(probabilities, y, data_mix, trained=np.array([0.5, 0.5, 0.0]))
    assert decision["prior_ratio"] == pytest.approx([1.875, 0.125, 1.0])
    assert decision["prior_strength"] > 0  # balanced decisions call ~60 majority objects minority here

    def macro_f1(t: float) -> float:
        return f1_score(y, shift_prior(probabilities, decision["prior_ratio"], t).argmax(1), labels=[0, 1],
                        average="macro")

    assert decision["validation_macro_f1"] == pytest.approx(macro_f1(decision["prior_strength"]))
    assert decision["validation_macro_f1"] > macro_f1(0.0) + 0.02
    # trained on the data's own mix (no resampling): nothing to correct, balanced stays
    same = choose_decision(probabilities, y, data_mix, trained=data_mix)
    assert same["prior_ratio"] == pytest.approx([1, 1, 1]) and same["prior_strength"] == 0.0
    # nothing held out: the decisions stay balanced
    assert choose_decision(probabilities[:0], y[:0], data_mix, np.array([0.5, 0.5, 0]))["prior_strength"] == 0.0


def test_trained_mix_follows_the_strategy():
    y = np.r_[np.zeros(80, int), np.ones(20, int)]
    assert trained_mix(y, 3, ClassifierConfig(strategy="oversample")) == pytest.approx([0.5, 0.5, 0])
    assert trained_mix(y, 3, ClassifierConfig(strategy="none")) == pytest.approx([0.8, 0.2, 0])
    assert trained_mix(y, 3, ClassifierConfig(strategy="none", class_weights=True)) == pytest.approx([0.5, 0.5, 0])
    assert trained_mix(y, 3, ClassifierConfig(strategy="undersample")) == pytest.approx([64 / 84, 20 / 84, 0])


def test_imbalanced_training_stores_its_operating_point(balanced_objects, monkeypatch, tiny_liposome_models):
    """A classifier trained on a 9:1 mix keeps its operating point through save and load, applying
    it never calls the minority class more often than balanced decisions do, and the analysis
    uses it unless asked for balanced decisions."""
    y = balanced_objects.targets["lamellarity"]
    keep = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)[: max(2, np.sum(y == 0) // 9)]]
    objects = balanced_objects.subset(np.sort(keep))
    monkeypatch.setattr(liposome_training, "MIN_VALIDATION", 1)  # a tiny set still holds images out
    config = ClassifierConfig(name="tiny-imbalanced", problem="lamellarity", epochs=3, batch_size=32)
    result = train_classifier(objects, config, register=True)
    decision = result.info.training["decision"]
    assert decision["validation_macro_f1"] is not None
    counts = np.bincount(objects.targets["lamellarity"], minlength=3)
    assert decision["data_mix"] == pytest.approx(counts / counts.sum(), abs=1e-5)
    assert decision["prior_ratio"][1] < 1 < decision["prior_ratio"][0] and decision["prior_strength"] in PRIOR_STRENGTHS
    loaded = load_model("tiny-imbalanced")
    assert loaded.info.training["decision"] == decision
    balanced = predict_objects(result, objects, balanced=True)
    decided = predict_objects(result, objects)
    np.testing.assert_allclose(decided, decide(balanced, loaded.info.training), rtol=1e-5)
    assert np.sum(decided.argmax(1) == 1) <= np.sum(balanced.argmax(1) == 1)
    field = simulate_field(SMALL, seed=99)
    own = objects_from_fields([field])
    for flag in (False, True):
        report = analyse(field.image, 2.5, labels=field.labels, detector=tiny_liposome_models[0],
                         classifiers={"lamellarity": "tiny-imbalanced"}, balanced_decisions=flag)
        expected = predict_objects(result, own, balanced=flag)
        confidences = [row["lamellarity_confidence"] for row in report.objects]
        np.testing.assert_allclose(confidences, expected.max(1), atol=1e-3)
        assert [row["lamellarity"] for row in report.objects] == [LAMELLARITY[i] for i in expected.argmax(1)]


def test_svm_baseline_cross_validates_by_field(balanced_objects):
    result = cross_validate(balanced_objects, "lamellarity", "svm", folds=4)
    assert np.array(result["confusion"]).sum() == len(balanced_objects)
    assert result["balanced_accuracy"] > 0.45
    assert set(result["per_class"]) == set(LAMELLARITY)
    # held-out probabilities for matched-specificity comparisons: one row per object, rows sum to
    # one, and they rank the true class well above chance
    y, probabilities = np.array(result["targets"]), np.array(result["probabilities"])
    assert probabilities.shape == (len(balanced_objects), 3) and y.tolist() == balanced_objects.targets["lamellarity"].tolist()
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-4)
    assert balanced_accuracy(y, probabilities.argmax(1), 3) > 0.45


def test_cross_validation_probabilities_cover_a_class_missing_from_a_training_fold(balanced_objects):
    """A class with a single object is absent from the training part of one fold: its column
    must still line up (zero there), not shift the other classes' columns."""
    y = balanced_objects.targets["lamellarity"]
    rare = np.flatnonzero(y == 2)
    keep = np.concatenate([np.flatnonzero(y != 2), rare[:1]])
    result = cross_validate(balanced_objects.subset(keep), "lamellarity", "svm", folds=3)
    probabilities, targets = np.array(result["probabilities"]), np.array(result["targets"])
    assert probabilities.shape == (len(keep), 3)
    assert probabilities[targets == 2, 2].item() == 0.0  # never seen in training when it was tested
    common = targets < 2
    assert np.mean(probabilities[common].argmax(1) == targets[common]) > 0.6


def test_calibrated_svm_baseline_gives_probabilities_that_rank_the_true_class(balanced_objects):
    """The calibrated baseline (for choosing an operating point) is the same SVM with probabilities:
    on held-out fields its most probable class beats chance, like the plain one's prediction."""
    from napari_nanoclass.liposomes.train import balanced_accuracy, svm_baseline

    objects, y = balanced_objects, balanced_objects.targets["lamellarity"]
    train, test = objects.groups < 30, objects.groups >= 30
    probabilities = svm_baseline(objects.features[train], y[train], probabilities=True).predict_proba(
        objects.features[test])
    assert probabilities.shape == (test.sum(), 3)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-6)
    assert balanced_accuracy(y[test], probabilities.argmax(1), 3) > 0.45


def test_summary_percentages():
    objects = ([{"lamellarity": "unilamellar", "encapsulation": "full", "diameter_nm": 100}] * 6
               + [{"lamellarity": "multilamellar", "encapsulation": "empty", "diameter_nm": 200}] * 2
               + [{"lamellarity": "uncertain", "encapsulation": "uncertain", "diameter_nm": 50}] * 2)
    summary = summarise("x", objects, 2.5, {})
    assert summary["n_objects"] == 10 and summary["n_multilamellar"] == 2
    assert summary["pct_multilamellar"] == 25.0 and summary["pct_loaded"] == 75.0
    assert summary["median_diameter_nm"] == 100


def test_analyse_user_labels_at_another_pixel_size(tiny_liposome_models):
    detector, classifiers = tiny_liposome_models
    field = simulate_field(SMALL, seed=99)
    # the same field "recorded" at 1.25 nm/px: twice the pixels; the pipeline works at 2.5 nm/px
    image = np.kron(field.image, np.ones((2, 2), np.float32))
    labels = np.kron(field.labels, np.ones((2, 2), np.int32))
    result = analyse(image, 1.25, labels=labels, detector=detector, classifiers=classifiers, name="f")
    assert result.labels.shape == image.shape and set(np.unique(result.labels)) == set(np.unique(labels))
    truth = {o["label"]: o["diameter_nm"] for o in field.objects}
    for row in result.objects:
        assert row["diameter_nm"] == pytest.approx(truth[row["label"]], rel=0.15)
        assert row["lamellarity"] in LAMELLARITY and 0 < row["lamellarity_confidence"] <= 1
    assert result.summary["n_objects"] == len(field.objects) and result.summary["detector"] == "user labels"
    features = result.features()
    assert features["index"] == [o["label"] for o in result.objects]
    assert set(result.colours("encapsulation")) == {*features["index"], None}


def test_analyse_files_contract_and_bad_files(tiny_liposome_models, tmp_path):
    from skimage.io import imsave

    detector, classifiers = tiny_liposome_models
    good = tmp_path / "good.tif"
    imsave(good, (simulate_field(SMALL, seed=5).image * 30 + 120).clip(0, 255).astype(np.uint8))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    out = tmp_path / "out"
    summaries = run_sync(files_steps("liposomes", [good, bad], out, pixel_size_nm=2.5, detector=detector,
                                     classifiers=classifiers))
    assert [s["status"] for s in summaries] == ["ok", "failed"] and "bad.tif" in summaries[1]["error"]
    assert (out / "good_labels.tif").exists() and not (out / "bad_labels.tif").exists()
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == ["good", "bad"]
    with open(out / "objects.csv") as fh:
        header = next(csv.reader(fh))
    for column in ("image", "label", "diameter_nm", "lamellarity", "encapsulation", "lamellarity_confidence",
                   "encapsulation_confidence"):
        assert column in header
    assert rows[0]["detector"] == detector and rows[0]["small_detector"] == ""  # a chosen detector runs alone
    beside = run_sync(files_steps("liposomes", [good], tmp_path / "beside", pixel_size_nm=2.5, detector=detector,
                                  small_detector=detector, classifiers=classifiers))
    assert beside[0]["small_detector"] == detector  # unless a small-vesicle detector is named too


def test_retraining_objects_are_built_at_the_analysis_scale(tiny_liposome_models):
    from napari_nanoclass.liposomes.train import objects_from_image, training_objects

    detector, _ = tiny_liposome_models
    field = simulate_field(SMALL, seed=98)
    classes = {o["label"]: {"lamellarity": o["lamellarity"], "encapsulation": o["encapsulation"]}
               for o in field.objects}
    native = training_objects(field.image, field.labels, classes, field.pixel_size_nm, detector)
    # the same field at 1.25 nm/px: retraining must see what the 2.5 nm/px analysis sees
    image, labels = (np.kron(a, np.ones((2, 2), a.dtype)) for a in (field.image, field.labels))
    finer = training_objects(image, labels, classes, 1.25, detector)
    assert len(finer.crops) == len(native.crops) == len(field.objects)
    assert np.allclose(finer.log_size, native.log_size, atol=0.05)
    assert np.abs(finer.crops - native.crops).mean() < 0.1
    for problem in ("lamellarity", "encapsulation"):
        assert np.array_equal(finer.targets[problem], native.targets[problem])
    # a classifier that takes other crops is fine-tuned on its own kind of crop
    config = ClassifierConfig(name="tiny-cropped-24", problem="lamellarity", input_mode="cropped", input_size=24,
                              epochs=1)
    train_classifier(objects_from_fields([field], mode="cropped", size=24), config, register=True)
    own = training_objects(field.image, field.labels, classes, field.pixel_size_nm, detector,
                           classifier="tiny-cropped-24")
    assert own.crops.shape == (len(field.objects), 24, 24) and own.crop_mode == "cropped"
    assert np.allclose(own.crops, liposome_objects.crops(field.image, field.labels, "cropped", 24), atol=1e-5)
    # fine-tuning it on crops of another kind is refused, not silently learnt
    with pytest.raises(ValueError, match="cropped in mode 'masked-local'.*takes 'cropped'"):
        train_classifier(native, replace(config, init_from="tiny-cropped-24", input_mode="masked-local"))
    # crops taken at the user's own pixel size (what retraining did before) differ more
    z = (image - image.mean()) / image.std()
    unscaled = objects_from_image(z.astype(np.float32), labels, classes, 1.25)
    assert np.abs(unscaled.crops - native.crops).mean() > 2 * np.abs(finer.crops - native.crops).mean()


def test_blocks_of_a_large_image_are_normalised_as_the_whole_image_is_seen_at_the_working_scale():
    """A large micrograph analysed block by block is z-scored with its statistics at each detector's
    pixel size, gathered tile by tile, so a block's working image has the contrast the whole working
    image has. The input's own statistics would not do: at 0.2 nm/px the detectors see the image
    averaged over 5 × 5 pixels, whose spread is smaller (blocks were normalised with them before)."""
    from napari_nanoclass._napari.samples import VESICLES_PIXEL_NM, cryoem_vesicles
    from napari_nanoclass.io.images import image_stats

    (image, _, _), = cryoem_vesicles()
    image = np.asarray(image)
    stats = liposome_predict.working_stats(image, VESICLES_PIXEL_NM, [1.0, 1.0], tile=256)
    assert list(stats) == [1.0]
    seen = liposome_predict._at_scale(image, VESICLES_PIXEL_NM)
    assert stats[1.0] == pytest.approx((seen.mean(dtype=np.float64), seen.std(dtype=np.float64)), rel=1e-6)
    assert image_stats(image)[1] > 1.1 * stats[1.0][1]
    work, working_px = liposome_predict._working(image, VESICLES_PIXEL_NM, 1.0, stats)
    assert working_px == 1.0 and abs(work.mean()) < 1e-4 and work.std() == pytest.approx(1.0, rel=1e-4)
    coarse = liposome_predict.working_stats(image, 2.0, [2.5, 1.0])  # enlarged 2× for the detector beside
    assert set(coarse) == {2.5, 1.0} and coarse[1.0][1] < coarse[2.5][1] < image_stats(image)[1]


@pytest.mark.timeout(300)
def test_large_images_are_analysed_block_by_block_like_in_memory(tmp_path, monkeypatch):
    """Above STREAM_ABOVE pixels the pipeline runs block by block (bounded memory, labels in zarr):
    with the shipped models it finds the same liposomes, measured and classified alike."""
    from napari_nanoclass.liposomes import predict

    config = SimulationConfig(shape=(768, 768), objects=(20, 24), diameter_nm=(40.0, 150.0))
    field = simulate_field(config, seed=11)
    whole = analyse(field.image, 2.5)
    monkeypatch.setattr(predict, "STREAM_ABOVE", 0)
    monkeypatch.setattr(predict, "BLOCK_PX", 256)  # at the small-vesicle detector's scale: 6 × 6 blocks
    monkeypatch.setattr(predict, "MAX_DIAMETER_NM", 200.0)
    released, detected = [], []
    monkeypatch.setattr(predict, "release_memory", lambda: released.append(True))
    detect_all_steps = predict.detect_all_steps

    def counted(*args, **kwargs):
        detected.append(True)
        return (yield from detect_all_steps(*args, **kwargs))

    monkeypatch.setattr(predict, "detect_all_steps", counted)
    bounded = []
    predict_dense = predict.engine.predict_dense

    def spied(*args, **kwargs):
        bounded.append(kwargs.get("bounded"))
        return (yield from predict_dense(*args, **kwargs))

    monkeypatch.setattr(predict.engine, "predict_dense", spied)
    blocks = analyse(field.image, 2.5, workdir=tmp_path)
    assert len(released) == len(detected) > 1  # the heap kept for reuse is handed back after each block
    assert bounded and all(bounded)  # and after each window of a block's forwards
    labels = np.asarray(blocks.labels)
    assert blocks.labels.__class__.__module__.startswith("zarr") and labels.shape == field.image.shape
    assert len(whole.objects) >= 15
    agreement = match_instances(labels, whole.labels, iou=0.8)
    assert agreement["f1"] >= 0.95, agreement
    assert sorted(np.unique(labels)[1:]) == [o["label"] for o in blocks.objects]  # labels and rows agree
    by_centre = {(round(o["centroid_y_px"] / 8), round(o["centroid_x_px"] / 8)): o for o in whole.objects}
    same = [o for o in blocks.objects if (round(o["centroid_y_px"] / 8), round(o["centroid_x_px"] / 8)) in by_centre]
    assert len(same) >= 0.8 * len(whole.objects)
    for o in same:
        ref = by_centre[(round(o["centroid_y_px"] / 8), round(o["centroid_x_px"] / 8))]
        assert abs(o["diameter_nm"] - ref["diameter_nm"]) < 0.05 * ref["diameter_nm"]
    agree = np.mean([o["lamellarity"] == by_centre[(round(o["centroid_y_px"] / 8), round(o["centroid_x_px"] / 8))][
        "lamellarity"] for o in same])
    assert agree >= 0.9


def test_correction_pairs_teach_only_what_the_user_checked(tiny_liposome_models):
    from napari_nanoclass.liposomes.train import correction_pairs
    from napari_nanoclass.segmentation.data import IGNORE_INDEX

    detector, _ = tiny_liposome_models
    field = simulate_field(SimulationConfig(shape=(192, 192), objects=(4, 6), diameter_nm=(40.0, 100.0)), seed=21)
    chosen = [1, 2]
    pairs = correction_pairs(field.image, field.labels, 2.5, detector, chosen)
    assert [p.name for p in pairs] == ["object 1", "object 2"]
    for pair in pairs:
        assert pair.image.shape == pair.labels.shape and min(pair.image.shape) >= 48
        values = set(np.unique(pair.labels))
        assert {0, 1, 2, IGNORE_INDEX} <= values  # background ring, interior, rim, and the unchecked rest
    with pytest.raises(ValueError, match="none of the objects"):
        correction_pairs(field.image, field.labels, 2.5, detector, [99])


def test_squares_cut_around_corrections_keep_the_whole_images_normalisation(tiny_liposome_models):
    """The analysis z-scores the whole image; a square normalised over itself (mostly one dark
    vesicle) would show the network other contrasts than the analysis does. The squares carry the
    whole image's statistics, and training and its validation use them."""
    from napari_nanoclass.liposomes.predict import working_image
    from napari_nanoclass.liposomes.train import correction_pairs
    from napari_nanoclass.segmentation.data import Pair
    from napari_nanoclass.segmentation.train import CropSampler

    detector, _ = tiny_liposome_models
    field = simulate_field(SimulationConfig(shape=(192, 192), objects=(4, 6), diameter_nm=(40.0, 100.0)), seed=21)
    work, _ = working_image(field.image, 2.5, 2.5)
    pair = correction_pairs(field.image, field.labels, 2.5, detector, [1])[0]
    assert pair.stats == (0.0, 1.0)
    assert np.isin(pair.image, work).all()  # the whole image's values, not the square's own z-score
    rng = np.random.default_rng(0)
    assert np.allclose(CropSampler([pair], 32, rng).images[0], pair.image)
    own = CropSampler([Pair(pair.image, pair.labels, "own")], 32, rng).images[0]
    assert abs(float(own.mean())) < 1e-4 and abs(float(pair.image.mean())) > 0.05


def test_a_complete_correction_teaches_every_pixel_of_the_image(tiny_liposome_models):
    """Labels that mark every liposome make every other pixel known background: the whole image is
    one pair with no ignored pixel, trained in crops as large as the image allows (up to
    WHOLE_CROP), with squares of other corrections padded to that size."""
    from napari_nanoclass.liposomes.train import WHOLE, WHOLE_CROP, correction_pairs, training_crop
    from napari_nanoclass.segmentation.data import IGNORE_INDEX, Pair

    detector, _ = tiny_liposome_models
    field = simulate_field(SimulationConfig(shape=(192, 192), objects=(4, 6), diameter_nm=(40.0, 100.0)), seed=21)
    whole = correction_pairs(field.image, field.labels, 2.5, detector, complete=True)
    assert [p.name for p in whole] == [WHOLE] and whole[0].image.shape == (192, 192)
    assert set(np.unique(whole[0].labels)) == {0, 1, 2} and IGNORE_INDEX not in whole[0].labels
    squares = correction_pairs(field.image, field.labels, 2.5, detector, [1, 2])
    assert training_crop(squares) == min(min(p.image.shape) for p in squares) // 8 * 8
    assert training_crop(squares + whole) == 192
    large = Pair(np.zeros((900, 700), np.float32), np.zeros((900, 700), np.int64), WHOLE)
    assert training_crop([large]) == WHOLE_CROP
    with pytest.raises(ValueError, match="complete correction"):
        correction_pairs(field.image, field.labels, 2.5, detector, [1], complete=True)


def test_retraining_on_completely_corrected_images_learns_their_background(tiny_liposome_models, tmp_path):
    """A detector fine-tuned on whole images with every liposome marked learns their background
    everywhere, where corrected objects alone leave it unknown: on a third image of the same kind
    it calls less of the ice "liposome" than the same detector fine-tuned on the same objects. From
    Python (several images) and from the command line (--complete)."""
    import tifffile

    from napari_nanoclass.cli import main
    from napari_nanoclass.liposomes.train import WHOLE_EPOCHS, Correction, recipe, retrain_steps

    detector, _ = tiny_liposome_models
    config = SimulationConfig(shape=(128, 128), objects=(3, 4), diameter_nm=(40.0, 80.0))
    first, second, third = (simulate_field(config, seed) for seed in (31, 32, 33))

    def ice_called_liposome(model) -> float:
        with torch.no_grad():
            p = torch.softmax(model.module.eval()(torch.from_numpy(third.image[None, None])), 1)[0].numpy()
        return float((1 - p[0])[third.labels == 0].mean())

    assert recipe([Correction(first.image, first.labels, 2.5, complete=True)])[0] == WHOLE_EPOCHS
    complete, partial = [], []
    for seed in range(2):  # a tiny network's few steps: the mean over seeds, not one seed's outcome
        options = dict(epochs=4, lr=3e-3, seed=seed)
        tuned = run_sync(retrain_steps([Correction(f.image, f.labels, 2.5, complete=True) for f in (first, second)],
                                       f"whole{seed}", detector, **options))
        assert tuned.detector.info.training["whole_images"] == 2 and tuned.detector.info.training["objects"] == 0
        complete.append(ice_called_liposome(tuned.detector))
        tuned = run_sync(retrain_steps([Correction(f.image, f.labels, 2.5) for f in (first, second)],
                                       f"objects{seed}", detector, **options))
        partial.append(ice_called_liposome(tuned.detector))
    assert np.mean(complete) < np.mean(partial) - 0.05, (complete, partial)

    paths = []
    for f in (first, second):
        paths += [tmp_path / f"img{len(paths)}.tif", tmp_path / f"labels{len(paths)}.tif"]
        tifffile.imwrite(paths[-2], f.image)
        tifffile.imwrite(paths[-1], f.labels)
    command = ["train-liposome-detector", "--image", str(paths[0]), str(paths[2]), "--labels", str(paths[1]),
               str(paths[3]), "--pixel-size", "2.5", "--name", "whole-cli", "--detector", detector, "--complete",
               "--epochs", "1", "--quiet"]
    assert main(command) == 0
    assert load_model("whole-cli").info.training["whole_images"] == 2
    assert main(command[:6] + command[7:]) == 2  # one --labels for two images
    assert main(command[:-3] + ["--objects", "1", "--quiet"]) == 2  # --complete takes every object


def test_corrections_at_several_pixel_sizes_train_the_one_detector_they_retrain(monkeypatch):
    """The detector picked by the first image's pixel size is the one fine-tuned, so every image's
    squares are cut for it, not for the default detector of its own pixel size."""
    from napari_nanoclass.liposomes import default_detector
    from napari_nanoclass.liposomes.train import Correction, retrain_steps

    fine, coarse = 0.5, 2.5
    assert default_detector(fine) != default_detector(coarse)
    cut_for = []

    def untrained(pairs, name, detector, **options):  # the detector it would fine-tune, untrained
        yield from ()
        return detector

    monkeypatch.setattr(liposome_training, "correction_pairs", lambda *a, **k: cut_for.append(a[3]) or [])
    monkeypatch.setattr(liposome_training, "finetune_detector_steps", untrained)
    field = simulate_field(SimulationConfig(shape=(64, 64), objects=(1, 1)), seed=3)
    run_sync(retrain_steps([Correction(field.image, field.labels, px) for px in (fine, coarse)], "mixed"))
    assert cut_for[:2] == [default_detector(fine)] * 2  # then the detector beside it, for the same images


def test_detector_fine_tuned_on_corrections_learns_them(tiny_liposome_models, tmp_path):
    """A (random) detector fine-tuned on hand-checked objects predicts them better than before, keeps
    its base's post-processing and is registered from the command line."""
    import tifffile

    from napari_nanoclass.cli import main
    from napari_nanoclass.liposomes.train import correction_pairs, finetune_detector_steps
    from napari_nanoclass.models.registry import load_model
    from napari_nanoclass.segmentation.train import evaluate

    detector, _ = tiny_liposome_models
    field = simulate_field(SimulationConfig(shape=(192, 192), objects=(5, 7), diameter_nm=(40.0, 100.0)), seed=22)
    pairs = correction_pairs(field.image, field.labels, 2.5, detector)
    names = ["background", "liposome", "boundary"]
    before = evaluate(load_model(detector).module, pairs, names, tile=512)
    tuned = run_sync(finetune_detector_steps(pairs, "tuned", detector, epochs=6, lr=3e-3))
    after = evaluate(tuned.module, pairs, names, tile=512)
    assert after.miou > before.miou + 0.1, (before.miou, after.miou)
    assert tuned.info.training["base"] == detector and tuned.info.pixel_size_nm == 2.5

    tifffile.imwrite(tmp_path / "img.tif", field.image)
    tifffile.imwrite(tmp_path / "labels.tif", field.labels)
    assert main(["train-liposome-detector", "--image", str(tmp_path / "img.tif"), "--labels",
                 str(tmp_path / "labels.tif"), "--pixel-size", "2.5", "--name", "my-detector", "--objects", "1", "2",
                 "--detector", detector, "--epochs", "1", "--quiet"]) == 0
    registered = load_model("my-detector").info
    assert registered.training["objects"] == 2 and registered.training["postprocess"] == {}


def test_a_run_names_the_detectors_it_may_use():
    from napari_nanoclass.liposomes import DEFAULT_DETECTOR, FINE_DETECTOR, SMALL_DETECTOR, VARIED_DETECTOR
    from napari_nanoclass.liposomes.predict import LiposomeFiles

    every = LiposomeFiles.model_names({})  # each input's header picks its detectors
    assert (every["detector"], every["fine_detector"], every["varied_detector"], every["small_detector"]) == (
        DEFAULT_DETECTOR, FINE_DETECTOR, VARIED_DETECTOR, SMALL_DETECTOR)
    assert "varied_detector" not in LiposomeFiles.model_names({"small_detector": "tiny"})  # one named runs instead
    fine = LiposomeFiles.model_names({"pixel_size_nm": 0.2})
    assert (fine["detector"], fine["small_detector"]) == (FINE_DETECTOR, VARIED_DETECTOR)
    coarse = LiposomeFiles.model_names({"pixel_size_nm": 2.5})
    assert "fine_detector" not in coarse and coarse["small_detector"] == SMALL_DETECTOR
    assert "small_detector" not in LiposomeFiles.model_names({"pixel_size_nm": 6.0})
    assert LiposomeFiles.model_names({"detector": "mine", "pixel_size_nm": 2.5}) == {
        "detector": "mine", **LiposomeFiles.model_names({"detector": "mine"})}
    assert "small_detector" not in LiposomeFiles.model_names({"detector": "mine"})
    assert LiposomeFiles.model_names({"detector": "mine", "small_detector": "tiny"})["small_detector"] == "tiny"


def test_the_detector_beside_the_default_one_depends_on_the_scale():
    """The varied-imaging detector beside the fine one up to its scale, the small-vesicle one beside
    the standard detector up to 5 nm/px, none beyond (or without a pixel size)."""
    from napari_nanoclass.liposomes import (
        FINE_BELOW_NM,
        SMALL_DETECTOR,
        SMALL_UP_TO_NM,
        VARIED_DETECTOR,
        default_small_detector,
    )

    assert [default_small_detector(p) for p in (None, 0.2, FINE_BELOW_NM, 2.0, 3.0, SMALL_UP_TO_NM, 6.0, 10.0)] == [
        None, VARIED_DETECTOR, VARIED_DETECTOR, SMALL_DETECTOR, SMALL_DETECTOR, SMALL_DETECTOR, None, None]


def _recorded_views(monkeypatch) -> tuple[list, dict]:
    """(views, sizes) the analysis' detectors see, filled as it runs: (detector name, image) of every
    forward in order, and per detector the pixel sizes its outputs were post-processed at (the
    two of a pair are post-processed at once, so their order between detectors is not fixed)."""
    from napari_nanoclass.liposomes import predict

    views, sizes = [], {}
    probabilities_steps, instances = predict.probabilities_steps, predict.instances

    def forward(image, detector, *args, **kwargs):
        views.append((detector.info.name, image))
        return (yield from probabilities_steps(image, detector, *args, **kwargs))

    def post_processed(probabilities, detector, pixel_size_nm, *args, **kwargs):
        sizes.setdefault(detector.info.name, []).append(pixel_size_nm)
        return instances(probabilities, detector, pixel_size_nm, *args, **kwargs)

    monkeypatch.setattr(predict, "probabilities_steps", forward)
    monkeypatch.setattr(predict, "instances", post_processed)
    return views, sizes


def test_the_small_vesicle_detector_sees_a_coarse_image_enlarged_at_most_twice(monkeypatch):
    """At 2 nm/px it sees the image at its own 1 nm/px; at 2.5 nm/px at 1.25 nm/px (enlarged 2×),
    not at 1 nm/px (2.5×: 1.56× the pixels, and no finer detail than the image holds)."""
    views, sizes = _recorded_views(monkeypatch)
    config = SimulationConfig(shape=(160, 160), pixel_size_nm=2.5, diameter_nm=(20.0, 60.0))
    image = simulate_field(config, seed=3).image
    for pixel_size, small_px in ((2.0, 1.0), (2.5, 1.25)):
        views.clear()
        sizes.clear()
        analyse(image, pixel_size)
        assert [work.shape for name, work in views if name == "liposome-detector-small"] == [(320, 320)]
        assert sizes["liposome-detector-small"] == [small_px]


def test_the_varied_detector_sees_the_fine_detector_s_view_without_a_second_rescale(monkeypatch):
    """At 0.5 nm/px both detectors of the fine pair see the image at 1 nm/px: the one view is made
    once and given to both (the same array), not resampled again for the second; so is their view
    at half the scale (``with_large``)."""
    from napari_nanoclass.liposomes import FINE_DETECTOR, VARIED_DETECTOR

    views, sizes = _recorded_views(monkeypatch)
    config = SimulationConfig(shape=(320, 320), pixel_size_nm=0.5, diameter_nm=(20.0, 60.0))
    analyse(simulate_field(config, seed=3).image, 0.5)
    assert [(name, work.shape) for name, work in views] == [(FINE_DETECTOR, (160, 160)), (VARIED_DETECTOR, (160, 160)),
                                                            (FINE_DETECTOR, (80, 80)), (VARIED_DETECTOR, (80, 80))]
    assert sizes == {FINE_DETECTOR: [1.0, 2.0], VARIED_DETECTOR: [1.0, 2.0]}
    assert views[0][1] is views[1][1] and views[2][1] is views[3][1]


def test_a_pair_s_two_outputs_are_post_processed_at_once_with_the_same_labels(monkeypatch):
    """Where torch may use two threads, the detector beside's output is post-processed in a second
    thread while the first detector's is in this one; the analysis gives the same labels as with
    one thread, one after the other."""
    import threading

    from napari_nanoclass.liposomes import predict

    threads, instances = {}, predict.instances

    def post_processed(probabilities, detector, *args, **kwargs):
        threads[detector.info.name] = threading.get_ident()
        return instances(probabilities, detector, *args, **kwargs)

    monkeypatch.setattr(predict, "instances", post_processed)
    config = SimulationConfig(shape=(192, 192), pixel_size_nm=2.5, diameter_nm=(20.0, 80.0))
    image = simulate_field(config, seed=5).image
    results = {}
    for count in (1, 2):
        monkeypatch.setattr(torch, "get_num_threads", lambda count=count: count)
        results[count] = analyse(image, 2.5)
        assert (threads["liposome-detector"] == threading.get_ident()) and \
            (threads["liposome-detector-small"] != threading.get_ident()) == (count == 2)
    assert results[1].labels.max() > 0 and np.array_equal(results[1].labels, results[2].labels)
    assert results[1].objects == results[2].objects


def test_small_vesicle_detections_are_added_only_where_the_standard_detector_found_nothing():
    from napari_nanoclass.liposomes.predict import with_small

    standard = np.zeros((40, 40), np.int32)
    standard[5:15, 5:15] = 7  # one object, its own label
    small = np.zeros_like(standard)
    small[8:18, 8:18] = 1  # half of it on the standard object: the standard one's
    small[12:22, 14:24] = 2  # a tenth on it: a vesicle the standard detector missed
    small[30:35, 30:35] = 3  # on free ice
    merged = with_small(standard, small)
    assert (merged[standard > 0] == merged[6, 6]).all()  # the standard object is kept whole, unchanged
    assert len(np.unique(merged)) == 4 and merged.max() == 3  # it and two added objects, numbered 1…3
    assert (merged[(small == 2) & (standard == 0)] > 0).all() and (merged[30:35, 30:35] > 0).all()
    assert not ((small == 1) & (standard == 0) & (merged > 0)).any()  # the half-covered one is not added
    assert len(np.unique(merged[small == 2])) == 2  # the added object took only the free pixels


def test_detector_pairs_bring_coarse_fields_to_the_working_scale_as_the_analysis_does():
    field = simulate_field(SimulationConfig(shape=(96, 96), pixel_size_nm=2.0, diameter_nm=(30, 60), objects=(2, 3)),
                           seed=3)
    (native,) = detector_pairs([field])
    (working,) = detector_pairs([field], working_px=1.0)
    assert native.image.shape == (96, 96) and working.image.shape == (192, 192)  # 2 nm/px seen at 1 nm/px
    expected, _ = working_image(field.image, 2.0, 1.0)
    np.testing.assert_allclose(working.image, expected)  # the analysis' own resampling and normalisation
    assert working.labels.shape == working.image.shape and set(np.unique(working.labels)) == {0, 1, 2}
    # objects cover the same share of the field at either scale (their boundary band is thinner at 1 nm/px)
    assert (working.labels > 0).mean() == pytest.approx((native.labels > 0).mean(), rel=0.1)


def test_corrected_objects_are_those_drawn_redrawn_or_confirmed():
    labels = np.zeros((40, 40), np.int32)
    labels[2:8, 2:8], labels[12:20, 12:20], labels[25:30, 25:30], labels[2:6, 30:36] = 1, 2, 3, 4
    detected = mask_signatures(labels)
    assert sorted(detected) == [1, 2, 3, 4] and len(set(detected.values())) == 4
    assert corrected_objects(labels, detected) == []  # the detection as it was: nothing to learn from
    edited = labels.copy()
    edited[20, 12:20] = 2  # object 2 redrawn one row taller
    edited[edited == 4] = 0  # object 4 erased: nothing to learn from it as an object
    edited[33:38, 2:7] = 7  # a missed object drawn
    assert corrected_objects(edited, detected, confirmed=[3]) == [2, 3, 7]
    moved = labels.copy()
    moved[moved == 1] = 0
    moved[3:9, 2:8] = 1  # same shape, one pixel lower: redrawn too
    assert corrected_objects(moved, detected) == [1]


def test_correction_target_learns_erased_detections_as_background_and_ignores_untouched_ones():
    from napari_nanoclass.liposomes.train import correction_target, erased_area
    from napari_nanoclass.segmentation.data import IGNORE_INDEX

    detection = np.zeros((80, 80), np.int32)
    detection[5:17, 5:17], detection[40:52, 40:52], detection[60:72, 8:20] = 1, 2, 3
    corrected = np.where(detection == 2, 0, detection)  # 2 erased (a false detection), 3 left as it was
    erased = erased_area(corrected, detection)
    assert erased.sum() == 144 and erased[40:52, 40:52].all()
    target = correction_target(corrected, corrected_objects(corrected, mask_signatures(detection), [1]), erased)
    assert (target[40:52, 40:52] == 0).all()  # "no liposome here": counted by the loss
    assert (target[60:72, 8:20] == IGNORE_INDEX).all()  # untouched detection: neither confirmed nor denied
    assert target[11, 11] == 1 and target[5, 11] == 2 and target[20, 11] == 0  # confirmed: interior, rim, ring
    assert target[30, 70] == IGNORE_INDEX and target[54, 46] == IGNORE_INDEX  # ice nobody looked at


def test_fine_tuning_lowers_the_detector_on_an_erased_false_detection(tiny_liposome_models):
    """Erased objects are negatives: after fine-tuning with them their area is less "liposome" than
    after fine-tuning on the same confirmed objects without them, and than before."""
    from napari_nanoclass.liposomes.train import correction_pairs, erased_area, finetune_detector_steps
    from napari_nanoclass.segmentation.data import IGNORE_INDEX

    detector, _ = tiny_liposome_models
    field = simulate_field(SimulationConfig(shape=(192, 192), objects=(5, 7), diameter_nm=(60.0, 120.0)), seed=22)
    false = int(field.labels.max())  # a (real-looking) detection the user erased as false
    corrected = np.where(field.labels == false, 0, field.labels)
    confirmed = [1, 2]
    erased = erased_area(corrected, field.labels)
    with_erased = correction_pairs(field.image, corrected, 2.5, detector, confirmed, erased=erased)
    without = correction_pairs(field.image, corrected, 2.5, detector, confirmed)
    assert [p.name for p in with_erased] == ["object 1", "object 2", "erased 1"]
    assert (with_erased[-1].labels == 0).sum() > (with_erased[-1].labels != IGNORE_INDEX).sum() / 2

    def liposome_probability(model) -> float:
        with torch.no_grad():
            p = torch.softmax(model(torch.from_numpy(field.image[None, None])), 1)[0].numpy()
        return float((1 - p[0])[erased].mean())

    def tuned(pairs, name: str, seed: int) -> float:
        steps = finetune_detector_steps(pairs, f"{name}-{seed}", detector, epochs=10, lr=3e-3, seed=seed)
        return liposome_probability(run_sync(steps).module.eval())

    before = liposome_probability(load_model(detector).module.eval())
    # a few steps of a tiny network on one image: one seed's outcome swings with float rounding,
    # the mean over three does not
    after = {name: np.mean([tuned(pairs, name, seed) for seed in range(3)])
             for name, pairs in (("with", with_erased), ("without", without))}
    assert after["with"] < before - 0.05 and after["with"] < after["without"] - 0.05, (before, after)


def test_a_coarser_look_replaces_the_pieces_of_a_large_vesicle_but_not_whole_vesicles_inside():
    """A fine detector cuts a vesicle larger than it was trained on into arcs; the coarser look's
    object replaces them. Objects outside it keep their pixels; a round, whole vesicle inside it
    means the coarser look merged vesicles, so it is not used; nor is an object under 100 nm."""
    from napari_nanoclass.liposomes.predict import with_large

    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(yy - 100, xx - 100)
    large = (r < 80).astype(np.int32)  # 160 px across
    ring = (r > 70) & (r < 80)
    arcs = np.zeros((200, 200), np.int32)
    arcs[ring & (xx < 100)], arcs[ring & (xx >= 100)] = 1, 2  # its membrane in two pieces
    outside = np.hypot(yy - 12, xx - 12) < 8
    arcs[outside] = 3
    out = with_large(arcs, large, 1.0)
    assert len(np.unique(out)) == 3 and (out[r < 80] == out[100, 100]).all() and out[100, 100] > 0
    assert (out[outside] == out[12, 12]).all() and out[12, 12] not in (0, out[100, 100])
    whole = arcs.copy()
    whole[r < 20] = 4  # a whole vesicle inside
    assert with_large(whole, large, 1.0) is whole
    assert with_large(arcs, large, 0.5) is arcs  # 80 nm across: not a large vesicle


def _paired(detector: str) -> str:
    """Register ``tiny-pair``: ``detector`` as if it had been retrained from the automatic pair at
    2.5 nm/px, with a second random tiny detector (``tiny-beside``) as the companion it records."""
    from napari_nanoclass.liposomes import SMALL_DETECTOR
    from napari_nanoclass.models.unet import SEUNet

    base = load_model(detector)
    torch.manual_seed(1)
    save_model(SEUNet(**base.info.arch_params).eval(), replace(base.info, name="tiny-beside"))
    save_model(base.module, replace(base.info, name="tiny-pair", training={
        **base.info.training, "small_detector": "tiny-beside", "small_detector_default": SMALL_DETECTOR}))
    return "tiny-pair"


def test_retraining_a_pair_retrains_the_detector_beside_it_on_the_same_corrections(tiny_liposome_models):
    """What the detector beside a retrained one found stays found, so an object of its own that the
    user erased would come back unless it learns from the corrections too: it is fine-tuned on the
    same ones (less "liposome" on the erased area than before), saved as <name>-beside and run
    beside the new detector where the pair runs."""
    from napari_nanoclass.liposomes import small_detector_for
    from napari_nanoclass.liposomes.train import erased_area, finetune_on_corrections_steps

    paired = _paired(tiny_liposome_models[0])
    assert small_detector_for(2.5, paired) == "tiny-beside"
    field = simulate_field(SimulationConfig(shape=(192, 192), objects=(5, 7), diameter_nm=(60.0, 120.0)), seed=22)
    false = int(field.labels.max())  # a detection the user erased as false
    corrected = np.where(field.labels == false, 0, field.labels)
    erased = erased_area(corrected, field.labels)

    def liposome_probability(module) -> float:
        with torch.no_grad():
            p = torch.softmax(module.eval()(torch.from_numpy(field.image[None, None])), 1)[0].numpy()
        return float((1 - p[0])[erased].mean())

    before, after = liposome_probability(load_model("tiny-beside").module), []
    for seed in range(3):  # a few steps of a tiny network: the mean over seeds, not one seed's outcome
        retrained = run_sync(finetune_on_corrections_steps(field.image, corrected, 2.5, f"tuned{seed}", paired,
                                                           objects=[1, 2], erased=erased, epochs=10, lr=3e-3,
                                                           seed=seed, register=True))
        beside = retrained.beside
        assert beside.info.name == f"tuned{seed}-beside" and beside.info.training["base"] == "tiny-beside"
        assert beside.info.training["erased"] == 1 and beside.path is not None
        assert retrained.detector.info.training["base"] == paired
        assert small_detector_for(2.5, f"tuned{seed}") == f"tuned{seed}-beside"
        assert small_detector_for(6.0, f"tuned{seed}") is None  # only where the pair runs one beside
        after.append(liposome_probability(beside.module))
    assert np.mean(after) < before - 0.05, (before, after)
    assert analyse(field.image, 2.5, detector="tuned0").summary["small_detector"] == "tuned0-beside"


def test_retraining_a_pair_saves_both_detectors_or_neither(tiny_liposome_models):
    """The new detector names its companion, so both are saved once both are trained: a job
    cancelled while the one beside trains leaves no detector naming a companion that is not there.
    Retrained again, the new companion is trained from the first one's."""
    from napari_nanoclass.liposomes import small_detector_for
    from napari_nanoclass.liposomes.train import finetune_on_corrections_steps
    from napari_nanoclass.models.registry import list_models

    paired = _paired(tiny_liposome_models[0])
    field = simulate_field(SimulationConfig(shape=(128, 128), objects=(2, 3)), seed=5)

    def retrain(name: str, base: str):
        return finetune_on_corrections_steps(field.image, field.labels, 2.5, name, base, objects=[1], epochs=2,
                                             iters_per_epoch=2, register=True)

    steps = retrain("cut", paired)
    messages = []
    for step in steps:
        messages.append(step.message)
        if "tiny-beside" in step.message:  # the detector is trained, the one beside it is training
            steps.close()
            break
    assert any("tiny-beside" in m for m in messages)
    assert not {"cut", "cut-beside"} & {m.name for m in list_models()}
    run_sync(retrain("first", paired))
    second = run_sync(retrain("second", "first"))
    assert second.beside.info.training["base"] == "first-beside"
    assert small_detector_for(2.5, "second") == "second-beside"
    # unregistered, the record cannot name the retrained companion: it is handed back in instead
    third = run_sync(finetune_on_corrections_steps(field.image, field.labels, 2.5, "third", second.detector,
                                                   objects=[1], beside=second.beside, epochs=1, iters_per_epoch=1))
    assert third.beside.info.training["base"] == "second-beside" and third.beside.path is None


def test_a_retrained_pair_copied_elsewhere_runs_together_or_falls_back_to_the_default(tiny_liposome_models, tmp_path,
                                                                                       monkeypatch, caplog):
    """A retrained detector names its companion; on another machine (no such model registered) the
    companion is found as a file beside the detector's, and without it the shipped default it stands
    for runs beside it, with a warning, instead of the analysis failing."""
    import logging
    import shutil

    from napari_nanoclass.liposomes import SMALL_DETECTOR, small_detector_for
    from napari_nanoclass.liposomes.train import finetune_on_corrections_steps

    field = simulate_field(SimulationConfig(shape=(128, 128), objects=(2, 3)), seed=5)
    pair = run_sync(finetune_on_corrections_steps(field.image, field.labels, 2.5, "mine",
                                                  _paired(tiny_liposome_models[0]), objects=[1], epochs=1,
                                                  iters_per_epoch=1, register=True))
    copied = tmp_path / "shared"
    copied.mkdir()
    for model in (pair.detector, pair.beside):
        shutil.copy(model.path, copied / model.path.name)
    monkeypatch.setenv("NANOCLASS_HOME", str(tmp_path / "elsewhere"))  # nothing of ours registered
    detector = str(copied / "mine.safetensors")
    assert small_detector_for(2.5, detector) == str(copied / "mine-beside.safetensors")
    (copied / "mine-beside.safetensors").unlink()
    with caplog.at_level(logging.WARNING, logger="napari_nanoclass"):
        assert small_detector_for(2.5, detector) == SMALL_DETECTOR
    assert "mine-beside" in caplog.text and SMALL_DETECTOR in caplog.text


def test_retraining_a_pair_refuses_names_it_cannot_save_before_training(tiny_liposome_models):
    """Both names are checked first: a name another model folder holds, or one too long to take the
    '-beside' suffix, is refused before any training step, and nothing is saved."""
    from napari_nanoclass.liposomes import DEFAULT_DETECTOR
    from napari_nanoclass.liposomes.train import finetune_on_corrections_steps
    from napari_nanoclass.models.registry import ModelError, list_models

    paired = _paired(tiny_liposome_models[0])
    field = simulate_field(SimulationConfig(shape=(128, 128), objects=(2, 3)), seed=5)
    before = {m.name for m in list_models()}
    for name, error, words in ((DEFAULT_DETECTOR, ModelError, "already exists"), ("a" * 95, ValueError, "beside")):
        steps = finetune_on_corrections_steps(field.image, field.labels, 2.5, name, paired, objects=[1],
                                              register=True)
        with pytest.raises(error, match=words):
            next(steps)  # the first step: no training has run
    assert {m.name for m in list_models()} == before


def test_the_small_vesicle_detectors_corrections_are_cut_at_the_view_the_analysis_gives_it(monkeypatch):
    """At 2.5 nm/px the small-vesicle detector sees the image enlarged 2× (1.25 nm/px, not its own
    1 nm/px): its training squares must come from that view, or it would learn another scale."""
    from napari_nanoclass.liposomes import SMALL_DETECTOR
    from napari_nanoclass.liposomes.predict import small_working_px

    seen = []
    real = liposome_training.working_image

    def spy(image, pixel_size_nm, working_px):
        seen.append(working_px)
        return real(image, pixel_size_nm, working_px)

    monkeypatch.setattr(liposome_training, "working_image", spy)
    field = simulate_field(SimulationConfig(shape=(128, 128), objects=(2, 3)), seed=5)
    liposome_training.correction_pairs(field.image, field.labels, 2.5, SMALL_DETECTOR, beside=True)
    liposome_training.correction_pairs(field.image, field.labels, 2.5, SMALL_DETECTOR)
    assert seen == [small_working_px(2.5, load_model(SMALL_DETECTOR)), 1.0] and seen[0] == 1.25


@pytest.mark.parametrize("detection_format", ["tif", "ome-zarr"])
def test_command_line_fine_tuning_learns_only_what_changed_against_the_detection(tiny_liposome_models, tmp_path,
                                                                                capsys, detection_format):
    import json

    import tifffile

    from napari_nanoclass.cli import main
    from napari_nanoclass.io.images import output_path, write_label_image

    detector, _ = tiny_liposome_models
    field = simulate_field(SimulationConfig(shape=(160, 160), objects=(4, 6), diameter_nm=(40.0, 100.0)), seed=23)
    corrected = np.where(field.labels == 3, 0, field.labels)  # a false detection erased
    corrected[corrected == 2] = 0
    corrected[ndi.binary_dilation(field.labels == 2)] = 2  # an outline redrawn
    for name, array in (("img", field.image), ("corrected", corrected)):
        tifffile.imwrite(tmp_path / f"{name}.tif", array)
    # the detection as `nanoclass liposomes` saves it: in OME-Zarr, under labels/ of the image
    detection = write_label_image(output_path(tmp_path, "detection", detection_format), field.labels, field.image,
                                  name="liposomes", pixel_size_nm=2.5)
    command = ["train-liposome-detector", "--image", str(tmp_path / "img.tif"), "--labels",
               str(tmp_path / "corrected.tif"), "--detection", str(detection), "--pixel-size", "2.5",
               "--name", "my-detector", "--detector", detector, "--epochs", "1", "--quiet"]
    assert main([*command, "--objects", "1"]) == 0  # object 1 confirmed; the others untouched: not learnt
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (printed["objects"], printed["erased"]) == (2, 1)  # objects 1 and 2; object 3's area as background
    unchanged = [*command[:4], str(detection), *command[5:]]
    assert main(unchanged) == 2
    assert "unchanged" in capsys.readouterr().err


def _first_thon_ring(image: np.ndarray, pixel_size_nm: float, angle: float) -> float:
    """Spatial frequency (1/nm) of the deepest power minimum between 0.22 and 0.38 /nm in a ±20° wedge
    around ``angle``, against the spectrum's log-linear trend."""
    power = np.abs(np.fft.fft2(image)) ** 2
    ky, kx = np.fft.fftfreq(image.shape[0], pixel_size_nm)[:, None], np.fft.fftfreq(image.shape[1], pixel_size_nm)
    k = np.hypot(ky, kx)
    wedge = np.abs(np.angle(np.exp(2j * (np.arctan2(ky, kx) - angle)))) < np.radians(40)
    edges = np.arange(0.22, 0.38, 0.005)
    log_power = np.log([power[wedge & (k >= e) & (k < e + 0.005)].mean() for e in edges])
    log_power -= np.polyval(np.polyfit(edges, log_power, 1), edges)
    return float(edges[np.argmin(log_power)] + 0.0025)


def test_astigmatism_makes_the_thon_rings_elliptical():
    from napari_nanoclass.liposomes.simulator import WAVELENGTH_NM

    def ring(defocus_nm: float) -> float:  # first zero of the CTF at 10 % amplitude contrast
        return np.sqrt((np.pi - np.arctan(0.1 / np.sqrt(0.99))) / (np.pi * WAVELENGTH_NM * defocus_nm))

    for astigmatism in (0.0, 2000.0):  # ice texture only, almost no shot noise: the rings show clearly
        config = SimulationConfig(pixel_size_nm=0.5, objects=(0, 0), carbon_probability=0.0, dose=(1e8, 1e8),
                                  defocus_nm=(5000.0, 5000.0), astigmatism_nm=(astigmatism, astigmatism))
        field = simulate_field(config, seed=1)
        axis = np.radians(field.imaging["astigmatism_angle_deg"])
        assert field.imaging["astigmatism_nm"] == astigmatism
        # more defocus along the astigmatic axis, less across it: the first ring is nearer / further
        along, across = (_first_thon_ring(field.image, 0.5, a) for a in (axis, axis + np.pi / 2))
        assert along == pytest.approx(ring(5000 + astigmatism / 2), abs=0.008)
        assert across == pytest.approx(ring(5000 - astigmatism / 2), abs=0.008)


def test_detector_mtf_lowers_high_frequency_power():
    def band_power(image: np.ndarray, low: float, high: float) -> float:  # frequencies as fractions of Nyquist
        k = np.hypot(*np.meshgrid(np.fft.fftfreq(image.shape[0]), np.fft.fftfreq(image.shape[1]),
                                  indexing="ij")) / 0.5
        return float((np.abs(np.fft.fft2(image)) ** 2)[(k >= low) & (k < high)].mean())

    ideal = simulate_field(SMALL, seed=4)
    blurred = simulate_field(replace(SMALL, mtf_nyquist=(0.2, 0.2)), seed=4)
    assert np.array_equal(ideal.labels, blurred.labels) and blurred.imaging["mtf_nyquist"] == 0.2
    ratio = [band_power(blurred.image, *band) / band_power(ideal.image, *band) for band in ((0.05, 0.15), (0.9, 1.0))]
    # relative to the low frequencies, power near Nyquist falls by the MTF squared (0.2² at Nyquist)
    assert ratio[1] / ratio[0] == pytest.approx(0.2 ** (2 * 0.95**2), rel=0.3)


def test_contamination_adds_dark_blobs_in_the_free_ice():
    clean = simulate_field(replace(SMALL, carbon_probability=0.0), seed=6)
    dirty = simulate_field(replace(SMALL, carbon_probability=0.0, contamination=(3, 3), contamination_nm=(40, 80)),
                           seed=6)
    assert np.array_equal(clean.labels, dirty.labels)  # the same liposomes: only the ice is dirtier
    blobs = dirty.imaging["contamination"]
    assert len(blobs) == 3 and {b["kind"] for b in blobs} <= {"crystal", "blob"}
    yy, xx = np.mgrid[:192, :192]
    for blob in blobs:
        core = np.hypot(yy - blob["centre_y"], xx - blob["centre_x"]) < 0.25 * blob["diameter_nm"] / 2.5
        assert not (dirty.labels[core] > 0).any()  # never over a liposome
        assert dirty.image[core].mean() < clean.image[core].mean() - 1.0  # dark: dense and absorbing


def test_pixel_sizes_are_drawn_across_a_range_and_liposomes_fit_their_field():
    config = SimulationConfig(shape=(256, 256), pixel_size_range_nm=(0.1, 5.0), diameter_nm=(20.0, 300.0))
    fields = [simulate_field(config, seed) for seed in range(8)]
    sizes = [f.pixel_size_nm for f in fields]
    assert all(0.1 <= s <= 5.0 for s in sizes) and min(sizes) < 0.5 and max(sizes) > 1.0
    for f in fields:  # at 0.1 nm/px a field is 25.6 nm across: what is drawn is capped to fit
        assert f.objects and max(o["diameter_nm"] for o in f.objects) <= 0.9 * 256 * f.pixel_size_nm


def test_simulate_command_draws_pixel_sizes_and_microscope_settings(tmp_path):
    from napari_nanoclass import read_image
    from napari_nanoclass.cli import main

    assert main(["simulate-liposomes", "--out", str(tmp_path), "--n", "3", "--size", "96", "--pixel-size", "0.5", "2",
                 "--diameter", "20", "60", "--microscope"]) == 0
    with open(tmp_path / "fields.csv", newline="") as fh:
        fields = list(csv.DictReader(fh))
    assert [f["field"] for f in fields] == ["field_0000", "field_0001", "field_0002"]
    for f in fields:
        assert 0.5 <= float(f["pixel_size_nm"]) <= 2.0 and 500 <= float(f["defocus_nm"]) <= 5000
        assert 0.1 <= float(f["mtf_nyquist"]) <= 0.8 and float(f["astigmatism_nm"]) <= 1000
        image = read_image(tmp_path / f"{f['field']}.tif")
        assert image.pixel_size_nm == pytest.approx(float(f["pixel_size_nm"]), rel=1e-3)
    assert main(["simulate-liposomes", "--out", str(tmp_path), "--pixel-size", "1", "2", "3"]) == 2
    # a rerun into the same folder would mix its fields with these: refused, nothing touched
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert main(["simulate-liposomes", "--out", str(tmp_path), "--n", "1", "--size", "96"]) == 3
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_choosing_one_problem_s_classifier_keeps_the_other_s_default(tiny_liposome_models, tmp_path):
    from napari_nanoclass.liposomes import DEFAULT_CLASSIFIERS
    from napari_nanoclass.liposomes.predict import LiposomeFiles, chosen_classifiers

    detector, classifiers = tiny_liposome_models
    mine = {"lamellarity": classifiers["lamellarity"]}  # what the Batch dock passes when only one is changed
    assert chosen_classifiers(mine) == {**DEFAULT_CLASSIFIERS, **mine}
    assert LiposomeFiles.model_names({"classifiers": mine})["encapsulation"] == DEFAULT_CLASSIFIERS["encapsulation"]
    job = LiposomeFiles(2.5, detector=detector, classifiers=mine)
    assert {p: m.info.name for p, m in job.classifiers.items()} == {**DEFAULT_CLASSIFIERS, **mine}
    result = analyse(simulate_field(SMALL, seed=5).image, 2.5, detector=detector, classifiers=mine)
    assert result.summary["encapsulation_model"] == DEFAULT_CLASSIFIERS["encapsulation"]
    assert all(o["encapsulation"] in ENCAPSULATION for o in result.objects)


def test_an_image_the_small_vesicle_detector_enlarges_past_the_memory_limit_is_streamed(monkeypatch, tmp_path):
    """The decision to go block by block counts the pixels of the largest working image: at 2 nm/px
    the small-vesicle detector sees the image at 1 nm/px, four times the pixels."""
    from napari_nanoclass.liposomes import predict

    field = simulate_field(SimulationConfig(shape=(160, 160), pixel_size_nm=2.0, diameter_nm=(20.0, 60.0)), seed=3)
    monkeypatch.setattr(predict, "STREAM_ABOVE", 2 * 160 * 160)  # above the input's pixels, below the small view's
    streamed = analyse(field.image, 2.0, workdir=tmp_path)
    assert streamed.labels.__class__.__module__.startswith("zarr") and streamed.models["small_detector"]
    alone = analyse(field.image, 2.0, detector="liposome-detector", workdir=tmp_path / "alone")
    assert isinstance(alone.labels, np.ndarray)  # the standard detector alone stays in memory
    # an image the detector shrinks is counted at its own size: 0.5 nm/px goes to 1 nm/px
    fine = simulate_field(SimulationConfig(shape=(320, 320), pixel_size_nm=0.5, diameter_nm=(20.0, 60.0)), seed=3)
    monkeypatch.setattr(predict, "STREAM_ABOVE", 320 * 320 - 1)
    assert analyse(fine.image, 0.5, workdir=tmp_path / "fine").labels.__class__.__module__.startswith("zarr")


def test_default_and_microscope_fields_are_unchanged_bit_for_bit():
    # the shipped models' training and measurement fields: the realistic effects must not move them
    import hashlib

    from napari_nanoclass.liposomes.simulator import MICROSCOPE

    pinned = {"default": "31f04bc41d86de1831630ace356d9f19ab66e0da1276b0ebd4e2a58dd94d881a",
              "microscope": "aa8fafb2c6c816bdb07bd8a11ea235ddb447b2a4606d1ef20c8708f73412fae4"}
    for name, config in (("default", SimulationConfig()), ("microscope", SimulationConfig(**MICROSCOPE))):
        field = simulate_field(config, 0)
        assert hashlib.sha256(field.image.tobytes() + field.labels.tobytes()).hexdigest() == pinned[name], name


def test_bilayer_shell_projects_to_a_dark_limb_over_a_positive_plateau():
    from napari_nanoclass.liposomes.simulator import bilayer_profile, sphere_projection

    rho = np.arange(0, 40, 0.1, dtype=np.float32)
    assert sphere_projection(np.float32([0.0, 30.0]), 10.0, 0.1) == pytest.approx([20.0, 0.0], abs=0.01)
    profile = bilayer_profile(rho, 20.0, 0.1)  # a bilayer whose middle is 20 nm from the centre
    peak = rho[np.argmax(profile)]
    assert 20.0 < peak < 22.5  # the outer head groups' limb: the electrons cross the wall tangentially
    assert (profile[rho > 22.6] == 0).all()  # nothing beyond the outer surface
    # over the interior: twice the wall, heads denser than ice, the core a little less: positive, faint
    assert profile[0] == pytest.approx(2 * (1.0 + 1.0 - 0.25 * 3.0), rel=0.01)
    assert profile.max() > 4 * profile[0]
    trough = profile[(rho > 19.0) & (rho < peak)].min()  # the hydrocarbon core between the head-group peaks
    assert trough < profile[(rho > 17.0) & (rho < 18.6)].max()


def test_shells_run_parallel_to_an_elongated_outline():
    """parallel_radius is r·scale for a circle (within a pixel deep inside), and for an ellipse
    with axes 2 : 1 its depth below the outline is the exact distance to the outline within a
    pixel up to 25 px inside: lamellae drawn at fixed radii
    in it keep their spacing all round, where scaled copies of the ellipse would be twice as far
    apart along the long axis."""
    from napari_nanoclass.liposomes.simulator import _radius, parallel_radius

    circle = _radius((101, 101), 50.0, 50.0, 30.0, 30.0, 0.0)
    rho = parallel_radius(circle, 30.0)
    near = (circle > 1 - 4 / 30) & (circle < 1.5)  # the Newton step: exact for a circle
    np.testing.assert_allclose(rho[near], (circle * 30.0)[near], atol=0.1)
    deep = (circle > 0.1) & (circle < 1)  # the distance transform, blended in deeper inside
    np.testing.assert_allclose(rho[deep], (circle * 30.0)[deep], atol=0.8)
    a, b = 80.0, 40.0
    r = _radius((121, 201), 60.0, 100.0, a, b, 0.0)
    depth = (a + b) / 2 - parallel_radius(r, (a + b) / 2)
    inside = r < 1
    t = np.linspace(0, 2 * np.pi, 4000, endpoint=False)  # the outline, densely sampled: exact distances
    outline = np.stack([60.0 + b * np.sin(t), 100.0 + a * np.cos(t)], axis=1)
    points = np.argwhere(inside)
    distance = np.zeros(r.shape)
    distance[inside] = np.min(np.hypot(points[:, None, 0] - outline[None, :, 0],
                                       points[:, None, 1] - outline[None, :, 1]), axis=1)
    near = inside & (distance > 1) & (distance < 25)
    assert np.abs(depth[near] - distance[near]).max() < 1.0, "not parallel"
    similar = (1 - r) * (a + b) / 2  # a scaled copy's depth: too deep along the long axis, too shallow across
    assert np.abs(similar[near] - distance[near]).max() > 5.0


def test_a_dose_per_square_angstrom_sets_the_counts_per_pixel_from_the_pixel_s_area():
    def shot_noise_share(field) -> float:  # variance left after removing all but the finest detail
        return float(np.var(field.image - ndi.gaussian_filter(field.image, 2.0)))

    empty = SimulationConfig(shape=(256, 256), objects=(0, 0), carbon_probability=0.0)
    fields = {(px, dose): simulate_field(replace(empty, pixel_size_nm=px, dose_per_a2=(dose, dose)), seed=2)
              for px, dose in ((5.0, 1.0), (10.0, 1.0), (10.0, 0.25))}
    for (px, dose), field in fields.items():
        assert field.imaging["dose_per_a2"] == dose
        assert field.imaging["dose_per_px"] == pytest.approx(dose * (10 * px) ** 2, rel=1e-3)
    # the same dose per Å² over a pixel 4× the area: 4× the counts, a quarter of the shot noise's share
    assert shot_noise_share(fields[10.0, 1.0]) / shot_noise_share(fields[5.0, 1.0]) == pytest.approx(0.25, rel=0.3)
    assert shot_noise_share(fields[10.0, 0.25]) == pytest.approx(shot_noise_share(fields[5.0, 1.0]), rel=0.3)


def test_on_the_physical_scale_an_empty_vesicle_is_a_dark_wall_around_an_interior_like_the_ice():
    """Real empty vesicles show their wall, not a dark body: on the physical scale a bilayer's
    amplitude contrast is the CTF's alone, not the background's absorption as well (which darkened
    the whole interior along with the wall). The vesicle's own contribution is the field
    minus the same field with a vanishing wall potential (same draws, no shot noise to speak of)."""
    config = SimulationConfig(shape=(256, 256), pixel_size_nm=1.0, objects=(1, 1), diameter_nm=(120.0, 120.0),
                              mix=ClassMix((1, 0, 0), (0, 1, 0)), carbon_probability=0.0, ellipticity=0.0,
                              defocus_nm=(2000.0, 2000.0), bilayer_volts=(1.2, 1.2), dose_per_a2=(1e5, 1e5))
    for seed in (3, 4):
        field = simulate_field(config, seed=seed)
        vesicle = field.image - simulate_field(replace(config, bilayer_volts=(1e-6, 1e-6)), seed=seed).image
        (obj,) = field.objects
        assert (obj["lamellarity"], obj["encapsulation"]) == ("unilamellar", "empty")
        rho = np.hypot(*(np.indices(vesicle.shape) - np.array([obj["centre_y"], obj["centre_x"]])[:, None, None]))
        radius = obj["diameter_nm"] / 2
        ice = np.median(vesicle[(rho > radius + 10) & (rho < radius + 25)])
        wall = min(vesicle[np.abs(rho - r) < 0.5].mean() for r in np.arange(radius - 6, radius + 1, 0.5)) - ice
        interior = vesicle[rho < 0.6 * radius].mean() - ice
        assert wall < -0.5 and abs(interior) < 0.25 * abs(wall), (seed, wall, interior)


def test_flattening_removes_the_large_scale_contrast_and_keeps_the_fine_one():
    def scales(field) -> tuple[float, float]:  # (std of the 8 px blur, std of the detail under 2 px)
        image = field.image.astype(np.float64)
        return float(np.std(ndi.gaussian_filter(image, 8.0))), float(np.std(image - ndi.gaussian_filter(image, 2.0)))

    config = SimulationConfig(shape=(256, 256), pixel_size_nm=1.0, dose_per_a2=(20.0, 20.0), bilayer_volts=(1.0, 1.0))
    plain = simulate_field(config, seed=5)
    flat = simulate_field(replace(config, flatten_nm=(5.0, 5.0), flatten_share=1.0), seed=5)
    assert plain.imaging["flatten_nm"] == 0 and flat.imaging["flatten_nm"] == 5.0
    assert np.array_equal(plain.labels, flat.labels)  # the same field, only processed
    (smooth_plain, fine_plain), (smooth_flat, fine_flat) = scales(plain), scales(flat)
    assert smooth_flat < 0.3 * smooth_plain and fine_flat > fine_plain  # z-scored: the grain now dominates
    shares = [simulate_field(replace(config, flatten_nm=(5.0, 30.0)), seed=s).imaging["flatten_nm"] > 0
              for s in range(12)]
    assert 0 < sum(shares) < 12  # flatten_share 0.5 by default: some fields are flattened, some not


def test_ice_as_a_phase_object_shows_thon_rings_where_shot_noise_alone_does_not():
    from napari_nanoclass.liposomes.simulator import WAVELENGTH_NM

    ring = np.sqrt((np.pi - np.arctan(0.1 / np.sqrt(0.99))) / (np.pi * WAVELENGTH_NM * 5000))
    empty = SimulationConfig(pixel_size_nm=0.5, objects=(0, 0), carbon_probability=0.0, defocus_nm=(5000.0, 5000.0),
                             dose_per_a2=(40.0, 40.0), bfactor_a2=(100.0, 100.0))
    depth = {}
    for noise in (None, (0.03, 0.03)):
        field = simulate_field(replace(empty, ice_noise=noise), seed=1)
        power = np.abs(np.fft.fft2(field.image)) ** 2
        k = np.hypot(np.fft.fftfreq(512, 0.5)[:, None], np.fft.fftfreq(512, 0.5)[None, :])
        edges = np.arange(0.22, 0.38, 0.005)
        log_power = np.log([power[(k >= e) & (k < e + 0.005)].mean() for e in edges])
        log_power -= np.polyval(np.polyfit(edges, log_power, 1), edges)
        depth[noise is not None] = log_power.min()
        if noise is not None:
            assert field.imaging["ice_noise"] == 0.03
            assert edges[np.argmin(log_power)] + 0.0025 == pytest.approx(ring, abs=0.008)
    # a deep minimum at the CTF's zero with ice noise; without it the spectrum is white shot noise within
    # its scatter (a few tenths of a log unit)
    assert depth[True] < -1.0 < -0.4 < depth[False]


def test_particulate_cargo_fills_full_interiors_with_many_particles_and_uncertain_with_a_few_faint_ones():
    from napari_nanoclass.liposomes.simulator import PHYSICAL_RAD_PER_UNIT, _particles, _radius

    r = _radius((240, 240), 120, 120, 100, 100, 0.0)
    physics = {"bilayer_volts": 3.0, "rad_per_unit": PHYSICAL_RAD_PER_UNIT}
    counts, peaks = {}, {}
    for kind in ("full", "uncertain"):
        cargo = _particles(kind, r, 100.0, 90.0, 0.5, physics, np.random.default_rng(4))
        assert (cargo[r * 100 > 90 + 10] < 1e-6 * cargo.max()).all()  # inside (up to a particle's radius)
        maxima = (cargo == ndi.maximum_filter(cargo, size=5)) & (cargo > 0.2 * cargo.max())
        counts[kind], peaks[kind] = int(maxima.sum()), float(cargo.max())
    assert counts["full"] >= 20 and 1 <= counts["uncertain"] <= 12
    assert peaks["uncertain"] < peaks["full"]


def test_irregular_and_faceted_outlines_are_labelled_as_drawn():
    from napari_nanoclass.liposomes.simulator import _draw_object, _physics, _radius, _render

    for faceted, irregularity in ((1.0, 0.0), (0.0, 0.4)):
        config = SimulationConfig(shape=(200, 200), pixel_size_nm=1.0, diameter_nm=(120.0, 150.0), bilayer_volts=(4, 4),
                                  faceted=faceted, irregularity=irregularity, mix=ClassMix((1, 0, 0), (0, 1, 0)))
        for seed in range(3):
            rng, realistic = np.random.default_rng(seed), np.random.default_rng(seed + 10)
            labels, density = np.zeros(config.shape, np.int32), np.zeros(config.shape, np.float32)
            obj = _draw_object(config, rng, labels, np.zeros(config.shape, bool), [], realistic)
            obj["label"] = 1
            _render(obj, density, labels, 1.0, 2, rng, _physics(config, realistic), realistic)
            drawn = ndi.binary_fill_holes(density > 0.05 * density.max())
            iou = (drawn & (labels > 0)).sum() / (drawn | (labels > 0)).sum()
            assert iou > 0.95, (faceted, seed, iou)
            g = obj["geometry"]
            ellipse = _radius(config.shape, obj["centre_y"], obj["centre_x"], g["a"], g["b"], g["theta"]) <= 1.0
            assert (ellipse ^ (labels > 0)).sum() > 0.03 * ellipse.sum()  # not the plain ellipse


def test_simulate_command_draws_realistic_settings(tmp_path):
    from napari_nanoclass.cli import main

    assert main(["simulate-liposomes", "--out", str(tmp_path), "--n", "2", "--size", "128", "--pixel-size", "0.5",
                 "--diameter", "20", "50", "--realistic"]) == 0
    with open(tmp_path / "fields.csv", newline="") as fh:
        fields = list(csv.DictReader(fh))
    for f in fields:
        assert 2 <= float(f["dose_per_a2"]) <= 50
        assert float(f["dose_per_px"]) == pytest.approx(float(f["dose_per_a2"]) * 25, rel=1e-2)
        assert 0.4 <= float(f["bilayer_volts"]) <= 1.2 and 0.003 <= float(f["ice_noise"]) <= 0.015
        assert 100 <= float(f["bfactor_a2"]) <= 800 and 0.1 <= float(f["mtf_nyquist"]) <= 0.8


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1), st.floats(0.2, 0.8))
def test_fill_holes_is_scipy_s_binary_fill_holes(rows, cols, seed, density):
    """fill_holes replaced ndi.binary_fill_holes for speed: any mask, holes touching the edge or not,
    must come out the same."""
    rng = np.random.default_rng(seed)
    mask = ndi.binary_opening(rng.random((rows, cols)) < density) | (rng.random((rows, cols)) < 0.1)
    np.testing.assert_array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1), st.floats(0.2, 0.95))
def test_cross_opening_is_scipy_s_binary_opening_with_a_disk_of_one(rows, cols, seed, density):
    """cross_opening replaced ndi.binary_opening(structure=disk(1)) for speed: objects touching the
    edge, one-pixel lines and single rows must come out the same."""
    from skimage.morphology import disk

    from napari_nanoclass.liposomes.predict import cross_opening

    mask = np.random.default_rng(seed).random((rows, cols)) < density
    np.testing.assert_array_equal(cross_opening(mask), ndi.binary_opening(mask, structure=disk(1)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.floats(0.01, 0.3),
       st.integers(0, 5), st.integers(1, 7))
def test_disk_opening_is_scipy_s_binary_opening_with_a_disk(rows, cols, seed, density, grow, radius):
    """disk_opening replaced ndi.binary_opening(structure=disk(r)) in the smoothing of detections:
    blobs touching the edge, thin necks, masks the disk erodes away entirely must come out the same."""
    from skimage.morphology import disk

    from napari_nanoclass.liposomes.predict import disk_opening

    mask = np.random.default_rng(seed).random((rows, cols)) < density
    mask = ndi.binary_dilation(mask, iterations=grow) if grow else mask
    np.testing.assert_array_equal(disk_opening(mask, radius), ndi.binary_opening(mask, structure=disk(radius)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.floats(0.0, 1.0))
def test_distance_to_background_is_scipy_s_exact_transform(rows, cols, seed, density):
    """The wall crops' distance transform (the edt package's) must give scipy's values bit for bit,
    also for a mask that is all foreground or all background."""
    mask = np.random.default_rng(seed).random((rows, cols)) < density
    for m in (mask, ~mask, np.ones_like(mask)):
        np.testing.assert_array_equal(liposome_objects.distance_to_background(m), ndi.distance_transform_edt(m))


@settings(max_examples=40, deadline=None)
@given(st.integers(8, 60), st.integers(8, 60), st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_local_background_is_the_ring_between_two_iterated_dilations(rows, cols, seed, n_blobs):
    """The ice ring of each object is now one city-block distance transform instead of two iterated
    dilations: the same pixels, so the same level, with neighbours and the image's edge nearby."""
    from skimage.measure import label, regionprops

    rng = np.random.default_rng(seed)
    image = rng.normal(size=(rows, cols)).astype(np.float32)
    seeds = np.zeros((rows, cols), bool)
    seeds[rng.integers(0, rows, n_blobs), rng.integers(0, cols, n_blobs)] = True
    labels = label(ndi.binary_dilation(seeds, iterations=int(rng.integers(1, 5))))
    near, far = liposome_objects.BACKGROUND_RING_PX
    for region in regionprops(labels):
        own = labels == region.label
        ring = ndi.binary_dilation(own, iterations=far) & ~ndi.binary_dilation(own, iterations=near) & (labels == 0)
        expected = image[ring].mean() if ring.any() else 0.0
        assert liposome_objects._local_background(image, labels, region) == expected


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1), st.integers(0, 500))
def test_sequential_is_skimage_s_relabel_sequential(rows, cols, seed, top):
    """sequential replaced relabel_sequential for speed: gaps, a lone label, no label at all."""
    from skimage.segmentation import relabel_sequential

    from napari_nanoclass.liposomes.predict import sequential

    labels = np.random.default_rng(seed).integers(0, top + 1, (rows, cols)).astype(np.int32)
    out = sequential(labels)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, relabel_sequential(labels)[0])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1), st.floats(0.2, 0.95),
       st.sampled_from([0.5, 0.8, 0.9]), st.booleans(), st.sampled_from([1, 40, 1 << 18]))
def test_solid_enough_is_skimage_s_solidity_test(rows, cols, seed, density, min_solidity, touching, batch):
    """solid_enough decides most objects by a bound instead of a convex hull, all at once: for
    ragged, thin, one-pixel and touching objects alike it must answer as ``region.solidity >=
    min_solidity`` does, and False for the background and labels not present, whether the hulls
    are counted one by one, a few or all at once."""
    from skimage.measure import label, regionprops

    from napari_nanoclass.core import shapes
    from napari_nanoclass.core.shapes import solid_enough

    rng = np.random.default_rng(seed)
    mask = rng.random((rows, cols)) < density
    labels = np.where(mask, rng.integers(1, 6, (rows, cols)), 0) if touching else label(mask)
    with mock.patch.object(shapes, "HULL_BATCH", batch):
        solid = solid_enough(labels, min_solidity)
    assert solid.shape == (labels.max() + 1,) and not solid[0]
    present = {region.label for region in regionprops(labels)}
    for region in regionprops(labels):
        assert solid[region.label] == (region.solidity >= min_solidity)
    assert not any(solid[i] for i in range(1, labels.max() + 1) if i not in present)


def test_solid_enough_skips_the_convex_hull_of_round_and_of_ragged_objects(monkeypatch):
    from skimage.measure import regionprops
    from skimage.morphology import disk

    from napari_nanoclass.core import shapes

    hulls = []
    monkeypatch.setattr(shapes, "_hull_pixels", lambda masks: hulls.extend(masks) or np.ones(len(masks)))
    labels = np.zeros((60, 30), np.int32)
    labels[3:28, 3:28] = disk(12) * 1  # round: passes on the octagon bound alone
    ragged = np.eye(12, dtype=bool) | np.eye(12, dtype=bool)[::-1]
    labels[40:52, 5:17][ragged] = 2  # an X: fails on the row and column spans alone
    assert list(shapes.solid_enough(labels, 0.8)) == [False, True, False]
    assert not hulls
    assert regionprops((labels == 2).astype(np.uint8))[0].solidity < 0.8
    bent = np.zeros((9, 9), np.int32)
    bent[1:8, 1] = bent[7, 1:8] = 1  # an L: the row and column spans do not decide, the triangle does
    assert not shapes.solid_enough(bent, 0.5)[1]
    assert not hulls
    plus = np.zeros((9, 9), np.int32)
    plus[1:8, 3:5] = plus[3:5, 1:8] = 1  # solidity 0.75: no bound decides at 0.8
    shapes.solid_enough(plus, 0.8)
    assert len(hulls) == 1


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.floats(0.2, 0.95),
       st.integers(2, 6), st.booleans())
def test_maxima_are_skimage_s_peak_local_max(rows, cols, seed, density, min_distance, tied):
    """The ragged objects' maxima, found with a plain greedy spacing instead of skimage's k-d tree
    (point by point, or from a table of close pairs): the same points in the same order, for
    distance transforms and for values full of ties."""
    from skimage.feature import peak_local_max
    from skimage.measure import label, regionprops

    from napari_nanoclass.liposomes.predict import _maxima

    rng = np.random.default_rng(seed)
    for region in regionprops(label(rng.random((rows, cols)) < density, connectivity=1)):
        mask = region.image
        distance = liposome_objects.distance_to_background(np.pad(mask, 1))[1:-1, 1:-1]
        if tied:
            distance = np.where(mask, rng.integers(0, 3, mask.shape), 0).astype(np.float64)
        expected = peak_local_max(distance, min_distance=min_distance, labels=mask.astype(np.int32),
                                  exclude_border=False)
        for at_once in (0, 10**6):  # spaced one point at a time, and from the table of close pairs
            with mock.patch.object(liposome_predict, "SPACED_AT_ONCE", at_once):
                np.testing.assert_array_equal(_maxima(distance, mask, min_distance), expected)


def test_maxima_of_a_plateau_are_skimage_s_isolated_pixels():
    """Where every pixel of the object is a maximum (one flat value), skimage keeps only the pixels a
    cross opening removes: here the corners and the tail of a square."""
    from skimage.feature import peak_local_max

    from napari_nanoclass.liposomes.predict import _maxima

    mask = np.zeros((6, 9), bool)
    mask[1:5, 1:5] = True
    mask[2, 5:8] = True
    flat = mask.astype(np.float64)
    expected = peak_local_max(flat, min_distance=2, labels=mask.astype(np.int32), exclude_border=False)
    assert len(expected) and not ndi.binary_opening(mask)[tuple(expected.T)].any()
    np.testing.assert_array_equal(_maxima(flat, mask, 2), expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1), st.floats(0.3, 1.0), st.booleans())
def test_flood_is_skimage_s_watershed(rows, cols, seed, density, kernel):
    """Markers on plateaus of tied values, masks with holes and markers outside them: the same
    basins as scikit-image's watershed, with its kernel called directly and without it."""
    from skimage.segmentation import watershed

    from napari_nanoclass.liposomes.predict import flood

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 3, (rows, cols)).astype(np.float64)
    mask = rng.random((rows, cols)) < density
    markers = np.where(rng.random((rows, cols)) < 0.1, rng.integers(1, 5, (rows, cols)), 0).astype(np.int32)
    with mock.patch.object(liposome_predict, "_flooding_kernel",
                           liposome_predict._flooding_kernel if kernel else (lambda: None)):
        found = flood(image, markers, mask)
    assert found.dtype == np.int32
    np.testing.assert_array_equal(found, watershed(image, markers, mask=mask))


def test_flood_falls_back_to_watershed_when_the_kernel_floods_otherwise(monkeypatch):
    """scikit-image's flooding kernel is private: if a version changes what it does or how it is
    called, the check on a small image rejects it, and flood calls watershed."""
    from skimage.segmentation import _watershed_cy

    def checked_kernel():
        liposome_predict._flooding_kernel.cache_clear()
        try:
            return liposome_predict._flooding_kernel()
        finally:
            liposome_predict._flooding_kernel.cache_clear()

    def changed(*args):
        raise TypeError("another signature")

    with monkeypatch.context() as patch:  # the kernel floods otherwise than watershed
        patch.setattr(liposome_predict, "watershed", lambda image, markers, mask: np.zeros(image.shape, np.int32))
        assert checked_kernel() is None
    with monkeypatch.context() as patch:
        patch.setattr(_watershed_cy, "watershed_raveled", changed)
        assert checked_kernel() is None
    assert checked_kernel() is _watershed_cy.watershed_raveled, (
        "this scikit-image's flooding kernel is refused: flood is right but slow; update _flooded_by")


@settings(max_examples=40, deadline=None)
@given(st.integers(5, 50), st.integers(5, 50), st.integers(0, 2**32 - 1), st.floats(0.2, 0.95),
       st.integers(2, 6), st.booleans())
def test_maxima_of_many_objects_at_once_are_each_object_s_own(rows, cols, seed, density, min_distance, tied):
    """One maximum filter over all objects side by side must find each object's maxima as its own
    filter does: objects filling their window, single pixels, plateaus, ties and windows wider than
    the canvas' rows."""
    from skimage.measure import label, regionprops

    from napari_nanoclass.liposomes.predict import _maxima, _maxima_of_each

    rng = np.random.default_rng(seed)
    masks = [region.image for region in regionprops(label(rng.random((rows, cols)) < density, connectivity=1))]
    masks += [np.ones((1, 1), bool), np.ones((3, 1100), bool)]
    distances = [liposome_objects.distance_to_background(np.pad(mask, 1))[1:-1, 1:-1] for mask in masks]
    if tied:
        distances = [np.where(mask, rng.integers(0, 3, mask.shape), 0).astype(np.float64) for mask in masks]
    found = _maxima_of_each(distances, masks, min_distance)
    assert len(found) == len(masks)
    for points, distance, mask in zip(found, distances, masks):
        np.testing.assert_array_equal(points, _maxima(distance, mask, min_distance))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1), st.integers(0, 12),
       st.sampled_from([np.int32, np.int64]))
def test_drop_small_clears_exactly_the_objects_below_the_area(rows, cols, seed, min_area_px, dtype):
    """Objects (labels possibly absent, in several parts) below ``min_area_px`` pixels become
    background, the others keep their label values and the image its dtype."""
    from napari_nanoclass.liposomes.predict import _drop_small

    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((rows, cols)) < 0.5, rng.integers(1, 8, (rows, cols)), 0).astype(dtype)
    sizes = np.bincount(labels.ravel())
    found = _drop_small(labels, min_area_px)
    assert found.dtype == labels.dtype
    np.testing.assert_array_equal(found, np.where(sizes[labels] >= min_area_px, labels, 0))


def _split_ragged_one_by_one(instances: np.ndarray, min_solidity: float, min_area_px: int) -> np.ndarray:
    """The definition _split_ragged computes, object by object with scikit-image and scipy: cut each
    object less solid than ``min_solidity`` by a watershed of its own distance transform from its
    maxima, keep the solid pieces of at least ``min_area_px``, numbered on after the last label."""
    from skimage.feature import peak_local_max
    from skimage.measure import regionprops
    from skimage.segmentation import watershed

    out = instances.copy()
    next_label = int(instances.max()) + 1
    min_distance = max(2, round(np.sqrt(min_area_px / np.pi)))
    for region in regionprops(instances):
        if region.solidity >= min_solidity:
            continue
        mask = region.image
        out[region.slice][mask] = 0
        distance = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        peaks = peak_local_max(distance, min_distance=min_distance, labels=mask.astype(np.int32),
                               exclude_border=False)
        if len(peaks) < 2:
            continue
        markers = np.zeros(mask.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        pieces = watershed(-distance, markers, mask=mask)
        for piece in regionprops(pieces):
            if piece.area >= min_area_px and piece.solidity >= min_solidity:
                out[region.slice][pieces == piece.label] = next_label
                next_label += 1
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(10, 60), st.integers(10, 60), st.integers(0, 2**32 - 1), st.integers(2, 30),
       st.sampled_from([0.8, 0.9]))
def test_split_ragged_cuts_every_object_as_one_by_one(rows, cols, seed, min_area_px, min_solidity):
    """The ragged objects are tested, transformed and their pieces judged all at once; touching
    objects, objects at the image's edge, dumbbells and noise blobs must come out as the
    object-by-object definition cuts them, numbered alike."""
    from skimage.measure import label

    from napari_nanoclass.liposomes.predict import _split_ragged

    rng = np.random.default_rng(seed)
    blobs = ndi.binary_dilation(rng.random((rows, cols)) < 0.04, iterations=int(rng.integers(1, 4)))
    blobs |= rng.random((rows, cols)) < 0.15  # ragged specks and bridges between blobs
    labels = label(blobs, connectivity=1).astype(np.int32)
    labels[labels % 4 == 3] += 1  # some labels absent, some objects touching under one label
    expected = _split_ragged_one_by_one(labels, min_solidity, min_area_px)
    for at_once in (0, 10**6):  # distance transforms of the whole image, and of each object alone
        for chunk in (1, 60, 1 << 21):  # objects cut one at a time, a few, or all together
            with (mock.patch.object(liposome_predict, "RAGGED_AT_ONCE", at_once),
                  mock.patch.object(liposome_predict, "RAGGED_CHUNK_PX", chunk)):
                np.testing.assert_array_equal(_split_ragged(labels, min_solidity, min_area_px), expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_inner_rim_and_classes_are_skimage_s_boundaries_and_numpy_s_argmax(rows, cols, seed):
    """Both replaced library calls for speed; labels touching each other, the image's edge and
    tied probabilities must come out the same."""
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(seed)
    labels, _ = ndi.label(rng.random((rows, cols)) > 0.4)
    labels = np.where(rng.random(labels.shape) > 0.9, rng.integers(0, 4, labels.shape), labels)
    np.testing.assert_array_equal(inner_rim(labels), find_boundaries(labels, mode="inner"))
    probabilities = rng.integers(0, 3, (3, rows, cols)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(_classes(probabilities), probabilities.argmax(axis=0))


def test_a_b_factor_of_zero_means_no_damping_and_none_the_default_fields_damping():
    from napari_nanoclass.liposomes.simulator import _ctf

    undamped, default = (np.abs(_ctf((64, 64), 0.2, 2000.0, bfactor_a2=b)) for b in (0.0, None))
    damped = np.abs(_ctf((64, 64), 0.2, 2000.0, bfactor_a2=400.0))
    corner = np.s_[28:36, 28:33]  # the highest frequencies of the rFFT grid
    assert undamped[corner].max() > damped[corner].max() > default[corner].max()


def test_block_wise_classification_sees_the_neighbours_that_other_blocks_own(tmp_path, monkeypatch):
    """masked-local crops take the ice around an object to be the pixels of no object: in a block,
    a neighbour that another block owns must still be an object there, not ice. Every object of a
    block is classified (its own kept), so the blocks together classify more than they report."""
    from napari_nanoclass.liposomes import predict

    classified = []
    original = predict.classify

    def recording(image, labels, *args, **kwargs):
        classified.append(int(labels.max()))
        return original(image, labels, *args, **kwargs)

    monkeypatch.setattr(predict, "classify", recording)
    monkeypatch.setattr(predict, "STREAM_ABOVE", 0)
    monkeypatch.setattr(predict, "BLOCK_PX", 192)
    monkeypatch.setattr(predict, "MAX_DIAMETER_NM", 150.0)
    field = simulate_field(SimulationConfig(shape=(384, 384), objects=(8, 10), diameter_nm=(40.0, 120.0)), seed=11)
    blocks = analyse(field.image, 2.5, workdir=tmp_path)
    assert len(blocks.objects) >= 5 and len(classified) > 1
    assert sum(classified) > len(blocks.objects)  # objects in a block's margin were context there


def _ringed_vesicle(shape: tuple[int, int], centre: tuple[float, float], radius_nm: float, pixel_size_nm: float,
                    rings_nm: tuple[tuple[float, float], ...], noise: float = 0.05, seed: int = 0):
    """(image, labels): a disk of ``radius_nm`` on ice with dark rings between the given depths
    (nm inside its edge), drawn at ``pixel_size_nm``."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    depth = radius_nm - np.hypot(yy - centre[0], xx - centre[1]) * pixel_size_nm  # nm inside the edge
    image = noise * np.random.default_rng(seed).standard_normal(shape)
    for start, stop in rings_nm:
        image -= (depth >= start) & (depth < stop)
    return image.astype(np.float32), (depth >= 0).astype(np.int32)


def _row_minima(crop: np.ndarray) -> list[int]:
    profile = crop.mean(axis=1)
    return [i for i in range(1, len(profile) - 1)
            if profile[i] < -0.3 and profile[i] <= profile[i - 1] and profile[i] <= profile[i + 1]]


@pytest.mark.parametrize("pixel_size_nm", [0.5, 1.0, 2.0])
def test_wall_crops_keep_lamellae_in_nm_whatever_the_vesicle_s_size(pixel_size_nm):
    """Two lamellae 10 nm apart sit on the same rows of the wall crop for a 40 nm and a 150 nm
    vesicle, at every pixel size that resolves them, where the resized masked crop of the large
    one (about 10 nm per crop pixel) merges them into one dark band."""
    rings = ((2.0, 4.0), (12.0, 14.0))
    expected = [round((liposome_objects.WALL_OUTSIDE_NM + depth) / liposome_objects.WALL_STEP_NM)
                for depth in (3.0, 13.0)]
    for radius_nm in (40.0, 150.0):
        side = int(2 * radius_nm / pixel_size_nm) + 40
        image, labels = _ringed_vesicle((side, side), (side / 2, side / 2), radius_nm, pixel_size_nm, rings)
        wall = liposome_objects.crops(image, labels, "wall", size=32, pixel_size_nm=pixel_size_nm)
        assert wall.shape == (1, 32, 32)
        minima = _row_minima(wall[0])
        assert len(minima) == 2 and all(abs(m - e) <= 1 for m, e in zip(minima, expected)), (radius_nm, minima)
    masked = liposome_objects.crops(image, labels, "masked", size=32)[0]
    assert len(_row_minima(masked[16:, 13:19])) < 2  # the large vesicle's resized crop: lamellae merged
    with pytest.raises(ValueError, match="pixel_size_nm"):
        liposome_objects.crops(image, labels, "wall")


def test_a_wall_parallel_to_an_elongated_outline_stays_on_one_row():
    """Rows are distances to the nearest outline point, not along the rays from the centre (which
    cross an elongated outline's wall obliquely, up to a quarter farther here): a dark band 8–10 nm
    inside an ellipse with axes 2 : 1 (cut by eroding the ellipse with disks) lies on the same rows
    at every angle."""
    yy, xx = np.mgrid[:200, :200]
    ellipse = ((yy - 100) / 40.0) ** 2 + ((xx - 100) / 80.0) ** 2 < 1
    eight, ten = (np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r for r in (8, 10))
    band = ndi.binary_erosion(ellipse, eight) & ~ndi.binary_erosion(ellipse, ten)
    image = (0.05 * np.random.default_rng(2).standard_normal((200, 200)) - band).astype(np.float32)
    crop = liposome_objects.crops(image, ellipse.astype(np.int32), "wall", size=32, pixel_size_nm=1.0)[0]
    darkest = crop.argmin(axis=0)
    rows = [round(liposome_objects.WALL_OUTSIDE_NM + d) for d in (8, 9, 10)]
    assert np.isin(darkest, rows).all(), darkest


def test_wall_crop_columns_are_angles_around_the_centre():
    """A dark patch on the vesicle's right-hand wall lies in column 0; turned a quarter (up, at
    −90°) it lies a quarter of the columns back, and every other column is the same wall."""
    image, labels = _ringed_vesicle((140, 140), (70, 70), 50.0, 1.0, ((2.0, 4.0),))
    yy, xx = np.mgrid[:140, :140]
    image[(np.abs(yy - 70) < 8) & (xx > 112) & (labels > 0)] -= 2.0
    crop = liposome_objects.crops(image, labels, "wall", size=32, pixel_size_nm=1.0)[0]
    assert crop[6:12].mean(axis=0).argmin() in (0, 1, 31)
    turned = liposome_objects.crops(np.rot90(image).copy(), np.rot90(labels).copy(), "wall", size=32,
                                    pixel_size_nm=1.0)[0]
    assert turned[6:12].mean(axis=0).argmin() in (23, 24, 25)
    np.testing.assert_allclose(np.roll(turned, 8, axis=1)[:, 4:28], crop[:, 4:28], atol=0.15)


def test_wall_crops_leave_out_the_image_s_edge_and_the_neighbours():
    """A vesicle cut by the image's top edge keeps its wall on the same rows in every column that
    looks into the image (the edge is not taken for its outline, nor the fill beyond it for ice);
    a dark neighbour touching it adds nothing to its outside rows."""
    yy, xx = np.mgrid[:120, :160]
    distance = np.hypot(yy - 12, xx - 80)
    labels = (distance < 40).astype(np.int32)
    image = (0.05 * np.random.default_rng(3).standard_normal(labels.shape)
             - ((40 - distance >= 2) & (40 - distance < 4))).astype(np.float32)
    crop = liposome_objects.crops(image, labels, "wall", size=32, pixel_size_nm=1.0)[0]
    into_image = [j for j in range(32) if 0.2 < np.sin(2 * np.pi * j / 32)]  # columns pointing down
    assert set(crop[:, into_image].argmin(axis=0)) <= {8, 9, 10}
    assert not crop[:6, 24].any()  # straight up: outside rows lie beyond the image
    neighbour = np.hypot(yy - 12, xx - 132) < 12  # touching on the right, darker than any wall
    crowded = np.where(neighbour, -5.0, image).astype(np.float32)
    both = np.where(neighbour, 2, labels).astype(np.int32)
    again = liposome_objects.crops(crowded, both, "wall", size=32, pixel_size_nm=1.0)[0]
    assert again[:6].min() > -1.5  # no trace of the neighbour's −5 outside
    assert set(again[:, into_image].argmin(axis=0)) <= {8, 9, 10}


def test_wall_augmentations_turn_flip_and_shift_the_unrolled_wall():
    """A rotation of a wall crop is a circular shift of its columns and a flip reverses them: the
    wall's profile over rows is untouched. A shift moves the rows by at most two, the edge row
    repeated; shear and zoom are not applied."""
    crops = torch.randn(16, 1, 32, 32)
    generator = torch.Generator().manual_seed(0)
    turned = liposome_training._augment(crops, ["rotate", "flip", "shear", "zoom"], generator, "wall")
    seen = set()
    for before, after in zip(crops[:, 0], turned[:, 0]):
        found = [(flipped, k) for flipped, candidate in ((False, before), (True, torch.flip(before, dims=(1,))))
                 for k in range(32) if torch.equal(torch.roll(candidate, k, dims=1), after)]
        assert found, "not a circular shift of the columns, flipped or not"
        seen.update(found)
    assert {flipped for flipped, _ in seen} == {False, True} and len({k for _, k in seen}) > 4
    shifted = liposome_training._augment(crops, ["shift"], generator, "wall")
    moves = set()
    for before, after in zip(crops[:, 0], shifted[:, 0]):
        move = [k for k in range(-2, 3)
                if torch.equal(after, before[torch.clamp(torch.arange(32) - k, 0, 31)])]
        assert move, "a shift moved the rows by more than two"
        moves.add(move[0])
    assert len(moves) > 1


@pytest.fixture(scope="module")
def wall_objects():
    return objects_from_fields([simulate_field(SMALL, seed) for seed in range(40)], mode="wall")


def test_lipnet_learns_lamellarity_from_wall_crops_on_held_out_fields(wall_objects):
    objects = wall_objects.subset(np.flatnonzero(wall_objects.targets["lamellarity"] < 2))
    assert objects.crop_mode == "wall" and objects.crops.shape[1:] == (32, 32)
    held_out = np.isin(objects.groups, range(30, 40))
    train, test = objects.subset(~held_out), objects.subset(held_out)
    config = ClassifierConfig(problem="lamellarity", epochs=12, patience=12, batch_size=32, input_mode="wall")
    result = train_classifier(train, config)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    pred = predict_objects(result, test).argmax(1)
    assert balanced_accuracy(test.targets["lamellarity"], pred, 3) > 0.65  # chance: 0.5
    assert result.info.training["input_mode"] == "wall"
    with pytest.raises(ValueError, match="input mode"):
        ClassifierConfig(input_mode="polar")


def test_an_ensemble_classifier_averages_its_members_and_runs_like_one(balanced_objects, monkeypatch,
                                                                       tiny_liposome_models):
    """An ensemble of three classifiers of one recipe: its probabilities are the mean of theirs
    through save and load, it picks its own operating point on calibration objects, its
    explanation maps are the mean of theirs, the analysis runs it like any classifier, and
    mixing recipes is refused with a clear message."""
    from napari_nanoclass.liposomes.train import ensemble_classifier
    from napari_nanoclass.models.lipnet import explain_crops, predict_crops
    from napari_nanoclass.models.registry import save_model

    monkeypatch.setattr(liposome_training, "MIN_VALIDATION", 1)
    y = balanced_objects.targets["lamellarity"]
    keep = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)[: max(2, np.sum(y == 0) // 4)]]
    objects = balanced_objects.subset(np.sort(keep))
    train, calibration = objects.subset(objects.groups < 30), objects.subset(objects.groups >= 30)
    members = []
    for seed in range(3):
        config = ClassifierConfig(name=f"tiny-member-{seed}", problem="lamellarity", epochs=2, batch_size=32, seed=seed)
        train_classifier(train, config, register=True)
        members.append(load_model(f"tiny-member-{seed}"))
    result = ensemble_classifier(members, "tiny-ensemble", calibration)
    mean = np.mean([object_probabilities(m.module, calibration) for m in members], axis=0)
    np.testing.assert_allclose(object_probabilities(result.module, calibration), mean, atol=1e-6)
    decision, own = result.info.training["decision"], members[0].info.training["decision"]
    assert decision["prior_strength"] in PRIOR_STRENGTHS and decision["validation_macro_f1"] is not None
    # the members' data and trained mixes carry over: the prior ratio is theirs (up to a factor shift_prior cancels)
    ratio = np.asarray(decision["prior_ratio"]) / np.asarray(own["prior_ratio"])
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)
    assert ensemble_classifier(members, "balanced-ensemble").info.training["decision"] is None  # no calibration
    assert [m["name"] for m in result.info.training["members"]] == [m.info.name for m in members]
    assert result.info.training["config"]["name"] == "tiny-ensemble" and "history" not in result.info.training
    save_model(result.module, result.info)
    loaded = load_model("tiny-ensemble")
    assert loaded.info.architecture == "lipnet-ensemble" and loaded.info.arch_params["members"] == 3
    np.testing.assert_allclose(object_probabilities(loaded.module, calibration), mean, atol=1e-6)
    crops, sizes = calibration.crops[:5], calibration.log_size[:5]
    chosen = predict_crops(loaded.module, crops, sizes).argmax(1)
    np.testing.assert_allclose(explain_crops(loaded.module, crops, sizes, chosen),
                               np.mean([explain_crops(m.module, crops, sizes, chosen) for m in members], axis=0),
                               atol=1e-6)
    field = simulate_field(SMALL, 99)
    found = analyse(field.image, 2.5, labels=field.labels, detector=tiny_liposome_models[0],
                    classifiers={"lamellarity": "tiny-ensemble"}, explain=True)
    assert found.summary["lamellarity_model"] == "tiny-ensemble"
    assert len(found.objects) == len(np.unique(field.labels)) - 1
    assert {o["lamellarity"] for o in found.objects} <= set(LAMELLARITY) and "lamellarity" in found.explanations
    with pytest.raises(ValueError, match="not of tiny-member-0's recipe"):
        ensemble_classifier([members[0], load_model(tiny_liposome_models[1]["encapsulation"])], "mixed-up")
    with pytest.raises(ValueError, match="given twice"):
        ensemble_classifier([members[0], members[1], members[0]], "twice")


def test_fine_tuning_an_ensemble_fine_tunes_each_member_on_the_same_objects(balanced_objects, monkeypatch):
    """Fine-tuning an ensemble trains every member from its own weights and seed on the same
    objects (one progress bar over all of them), packs them again with an operating point for
    their mean, and each member learns: its score on these objects rises from where it started."""
    from napari_nanoclass.core.progress import Progress
    from napari_nanoclass.liposomes.train import ensemble_classifier, train_classifier_steps
    from napari_nanoclass.models.registry import save_model

    monkeypatch.setattr(liposome_training, "MIN_VALIDATION", 1)
    first = balanced_objects.subset(np.flatnonzero(balanced_objects.groups < 20))
    rest = balanced_objects.subset(np.flatnonzero(balanced_objects.groups >= 20))
    members = []
    for seed in range(2):  # barely trained: fine-tuning has something left to learn
        config = ClassifierConfig(name=f"tiny-start-{seed}", problem="lamellarity", epochs=1, batch_size=32,
                                  seed=seed, min_steps_per_epoch=2)
        train_classifier(first, config, register=True)
        members.append(load_model(f"tiny-start-{seed}"))
    packed = ensemble_classifier(members, "tiny-start-ensemble")
    save_model(packed.module, packed.info)
    config = ClassifierConfig(name="tiny-tuned-ensemble", problem="lamellarity", epochs=3, batch_size=32, seed=7,
                              init_from="tiny-start-ensemble")
    seen: list[Progress] = []
    result = run_sync(train_classifier_steps(rest, config, register=True), seen.append)
    assert all(isinstance(p, Progress) and p.total == 6 for p in seen) and seen[-1].done == 6
    assert "member 2 of 2" in seen[-1].message
    tuned = load_model("tiny-tuned-ensemble")
    assert tuned.info.architecture == "lipnet-ensemble" and tuned.info.arch_params["members"] == 2
    assert [m["seed"] for m in tuned.info.training["members"]] == [7, 8]
    assert tuned.info.training["decision"]["prior_strength"] in PRIOR_STRENGTHS
    y = rest.targets["lamellarity"]
    for before, after in zip(members, tuned.module.members):
        start = balanced_accuracy(y, object_probabilities(before.module, rest).argmax(1), 3)
        assert balanced_accuracy(y, object_probabilities(after, rest).argmax(1), 3) > start
    mean = np.mean([object_probabilities(m, rest) for m in tuned.module.members], axis=0)
    np.testing.assert_allclose(object_probabilities(result.module, rest), mean, atol=1e-6)


def test_a_classifier_trained_twice_from_one_seed_is_the_same(balanced_objects):
    """The seed fixes the initial weights as well as the batches: two runs of one config give the
    same classifier whatever drew from torch's random numbers before (each process starts torch
    from a different seed of its own)."""
    objects = balanced_objects.subset(np.flatnonzero(balanced_objects.groups < 10))
    config = ClassifierConfig(name="tiny-seeded", problem="lamellarity", epochs=1, batch_size=32, min_steps_per_epoch=2,
                              seed=3)
    first = train_classifier(objects, config, device="cpu").module.state_dict()
    torch.rand(5)  # another draw from the global generator in between
    second = train_classifier(objects, config, device="cpu").module.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = train_classifier(objects, replace(config, seed=4), device="cpu").module.state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("finer", [1, 2, 5])
def test_a_finer_mask_is_the_interpolated_mask_thresholded_at_a_half(finer):
    """Wall crops interpolate their masks finer; a uniform mask skips the interpolation and must
    come out as it would have (shape and values), a mixed one as interpolated."""
    from napari_nanoclass.liposomes.objects import _finer_mask

    rng = np.random.default_rng(finer)
    for mask in (np.ones((7, 9), bool), np.zeros((7, 9), bool), rng.random((7, 9)) < 0.4):
        expected = (ndi.zoom(mask.astype(np.float32), finer, order=1, grid_mode=True, mode="nearest") >= 0.5
                    if finer > 1 else mask)
        got = _finer_mask(mask, finer)
        assert got.dtype == bool and got.shape == expected.shape and np.array_equal(got, expected)


@settings(max_examples=150, deadline=None)
@given(finer=st.integers(2, 10), height=st.integers(1, 24), width=st.integers(1, 24), seed=st.integers(0, 2**32 - 1),
       blobs=st.booleans())
def test_a_finer_mask_from_its_table_is_scipy_s_interpolation_thresholded(finer, height, width, seed, blobs):
    """The table of 2 × 2 patterns gives, pixel for pixel, what interpolating the mask with scipy
    and thresholding at ½ gives: on noise and on blobs, edges included, at any factor."""
    from napari_nanoclass.liposomes.objects import _finer_mask

    rng = np.random.default_rng(seed)
    mask = rng.random((height, width)) < rng.random()
    if blobs:
        mask = ndi.binary_dilation(rng.random((height, width)) < 0.05, iterations=int(rng.integers(1, 4)))
    expected = ndi.zoom(mask.astype(np.float32), finer, order=1, grid_mode=True, mode="nearest") >= 0.5
    assert np.array_equal(_finer_mask(mask, finer), expected)


@pytest.mark.parametrize("finer", range(2, 13))
def test_no_pattern_of_a_finer_mask_sits_exactly_on_the_threshold(finer):
    """The table's sums are exact; one of exactly ½ would leave the decision to scipy's float
    rounding, which the table cannot know. None is ½, so the table and scipy always agree."""
    from fractions import Fraction

    from napari_nanoclass.liposomes.objects import _finer_table

    table, _ = _finer_table(finer)
    offsets = [Fraction(2 * k + 1, 2 * finer) - Fraction(1, 2) for k in range(finer)]
    weights = [(-o, 1 + o) if o < 0 else (1 - o, o) for o in offsets]
    for ky, (top, bottom) in enumerate(weights):
        for kx, (left, right) in enumerate(weights):
            corners = (top * left, top * right, bottom * left, bottom * right)
            sums = [sum(w for bit, w in enumerate(corners) if pattern >> bit & 1) for pattern in range(16)]
            assert Fraction(1, 2) not in sums
            assert list(table[ky, kx]) == [total > Fraction(1, 2) for total in sums]
