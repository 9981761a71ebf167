"""Training: a tiny model learns, FREM is resampled, resume, fine-tuning, TPE search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_nanoclass.core.augment import appearance_shift
from napari_nanoclass.core.metrics import SegmentationScores, confusion_matrix
from napari_nanoclass.core.progress import Cancelled, CancelToken, run_sync
from napari_nanoclass.models.registry import load_model
from napari_nanoclass.models.unet import SEUNet
from napari_nanoclass.segmentation.data import DROSOPHILA_LABEL_MAP, Pair, map_labels
from napari_nanoclass.segmentation.train import (
    TAUS,
    CropSampler,
    TrainConfig,
    class_weights,
    evaluate,
    fit_logit_adjustment,
    recalibrate_batch_norm,
    search_frem,
    train,
    train_steps,
)


def synthetic_pair(seed: int, size: int = 96) -> Pair:
    """Bright discs (class 1) with dark rims (class 2) on noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = rng.normal(0, 0.3, (size, size))
    labels = np.zeros((size, size), np.int64)
    for _ in range(4):
        cy, cx, r = rng.integers(15, size - 15, 2).tolist() + [int(rng.integers(6, 12))]
        d = np.hypot(yy - cy, xx - cx)
        image[d < r] += 1.5
        labels[d < r] = 1
        rim = (d >= r) & (d < r + 2)
        image[rim] -= 1.5
        labels[rim] = 2
    return Pair(image.astype(np.float32), labels, f"synthetic{seed}")


CONFIG = dict(class_names=["bg", "disc", "rim"], width=4, depth=2, se_window=3, crop=64, batch_size=4,
              iters_per_epoch=6, tile=128, lr=1e-2)


def cfg(**overrides) -> TrainConfig:
    return TrainConfig(**{**CONFIG, **overrides})


def test_tiny_model_learns(tmp_path):
    train_pairs, val = [synthetic_pair(i) for i in range(3)], [synthetic_pair(10)]
    untrained = train(train_pairs, val, cfg(epochs=1, iters_per_epoch=1, lr=1e-9)).best_miou
    result = train(train_pairs, val, cfg(epochs=6, frem_b=2, frem_x=5.0))
    assert result.best_miou > untrained + 0.2
    assert result.best_miou == max(h["val_miou"] for h in result.history)
    again = evaluate(result.module, val, CONFIG["class_names"], tile=128).miou
    assert again == pytest.approx(result.best_miou, abs=1e-9)  # returned weights are the best epoch's
    adjustment = result.info.training["logit_adjustment"]  # decision offsets fitted on the training images
    by_tau = adjustment["train_miou_by_tau"]
    assert adjustment["tau"] in TAUS and by_tau[f"{adjustment['tau']:.2f}"] == max(by_tau.values())
    assert result.info.logit_bias == adjustment["logit_bias"] and len(result.info.logit_bias) == 3
    calibrated = evaluate(result.module, val, CONFIG["class_names"], tile=128, logit_bias=result.info.logit_bias)
    assert adjustment["val_miou"] == pytest.approx(calibrated.miou, abs=1e-9)


def test_loader_workers_train_reproducibly_and_learn():
    train_pairs, val = [synthetic_pair(i) for i in range(3)], [synthetic_pair(10)]
    untrained = train(train_pairs, val, cfg(epochs=1, iters_per_epoch=1, lr=1e-9)).best_miou
    runs = [train(train_pairs, val, cfg(epochs=4, calibrate=False), workers=2) for _ in range(2)]
    assert runs[0].best_miou > untrained + 0.2  # crops made in the loader processes teach the network
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]  # same seed, same batches
    in_process = train(train_pairs, val, cfg(epochs=4, calibrate=False))
    assert [h["loss"] for h in in_process.history] != [h["loss"] for h in runs[0].history]  # the workers' own draws


def test_epoch_end_work_reports_progress_and_can_be_cancelled():
    train_pairs, val = [synthetic_pair(i) for i in range(2)], [synthetic_pair(10, size=256)]
    steps = []
    train(train_pairs, val, cfg(epochs=2, iters_per_epoch=2, frem_b=2, frem_x=5.0, tile=64), progress=steps.append)
    messages = [s.message for s in steps]
    assert sum("validating" in m for m in messages) >= 2 * 16  # every tile of the 256² validation image, per epoch
    assert any("re-estimating batch-norm statistics" in m for m in messages)  # FREM's recalibration
    assert all(0 <= s.done <= s.total for s in steps)
    token = CancelToken()

    def cancel_while_validating(step):
        if "validating" in step.message:
            token.cancel()

    net_steps = train_steps(train_pairs, val, cfg(epochs=2, iters_per_epoch=2, tile=64))
    with pytest.raises(Cancelled):
        run_sync(net_steps, progress=cancel_while_validating, cancel=token)


class PlantedLogits(torch.nn.Module):
    """Log-posterior of a known two-class problem plus log w: the logits class-weighted
    cross-entropy pulls a network towards. Class 0 pixels are N(0, 1), class 1 pixels N(2, 1)."""

    def __init__(self, log_prior: np.ndarray, log_w: np.ndarray, stats: tuple[float, float]) -> None:
        super().__init__()
        self.register_buffer("offset", torch.tensor(log_prior + log_w, dtype=torch.float32).view(1, -1, 1, 1))
        self.mean, self.std = stats  # the engine feeds z-scored images; undo that

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.std + self.mean
        return torch.cat([-0.5 * x**2, -0.5 * (x - 2.0) ** 2], dim=1) + self.offset


def test_logit_adjustment_undoes_the_pull_of_class_weights():
    rng = np.random.default_rng(0)
    labels = (rng.random((128, 128)) < 0.1).astype(np.int64)  # a rare foreground
    image = (2.0 * labels + rng.standard_normal(labels.shape)).astype(np.float32)
    pairs = [Pair(image, labels, "planted")]
    weights = class_weights(pairs, 2).numpy()
    module = PlantedLogits(np.log([0.9, 0.1]), np.log(weights), (float(image.mean()), float(image.std())))
    fit = run_sync(fit_logit_adjustment(module, pairs, ["bg", "fg"], weights.tolist(), tile=128))
    by_tau = fit["train_miou_by_tau"]
    assert fit["tau"] > 0.2 and by_tau[f"{fit['tau']:.2f}"] > by_tau["0.00"]  # a part of the pull is taken back
    np.testing.assert_allclose(fit["logit_bias"], -fit["tau"] * np.log(weights), atol=1e-5)
    applied = evaluate(module, pairs, ["bg", "fg"], tile=128, logit_bias=fit["logit_bias"]).miou
    assert applied == pytest.approx(by_tau[f"{fit['tau']:.2f}"], abs=1e-5)  # the offsets act as fitted


def test_batch_norm_statistics_are_recalibrated_on_features_without_frem():
    torch.manual_seed(0)
    net = SEUNet(width=4, depth=2, n_classes=3, se_window=3, frem_b=16, frem_x=500.0)  # all 16 bottleneck channels
    x = torch.randn(4, 1, 64, 64)
    net.train()
    for _ in range(20):  # training passes fold FREM's ×500 into the decoder's running statistics
        net(x)
    norm = net.decoders[0][1]  # the first batch norm after FREM
    polluted = norm.running_var.clone()
    recalibrate_batch_norm(net, [x, x])
    inputs = []
    hook = net.decoders[0][0].register_forward_hook(lambda module, args, out: inputs.append(out))
    net(x)  # at inference, what that batch norm normalises
    hook.remove()
    expected = inputs[0].var(dim=(0, 2, 3), unbiased=True)
    assert torch.allclose(norm.running_var, expected, rtol=0.05)
    assert polluted.mean() > 100 * expected.mean()
    assert norm.momentum == 0.1 and not net.training


def test_resume_continues_from_the_checkpoint(tmp_path):
    train_pairs, val = [synthetic_pair(1)], [synthetic_pair(2)]
    first = train(train_pairs, val, cfg(epochs=2), run_dir=tmp_path)
    resumed = train(train_pairs, val, cfg(epochs=4), run_dir=tmp_path, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:2] == first.history
    assert (tmp_path / "best.safetensors").exists() and not list(tmp_path.glob("*partial*"))


def test_early_stopping_and_registration(user_registry):
    train_pairs, val = [synthetic_pair(1)], [synthetic_pair(2)]
    result = train(train_pairs, val, cfg(name="stops", epochs=30, patience=1, lr=1e-9),
                   register=True)
    assert len(result.history) < 30
    loaded = load_model("stops")
    assert loaded.info.class_names == CONFIG["class_names"]
    assert loaded.info.arch_params["frem_b"] == 0  # training-only parts are not part of the shipped net


def test_fine_tune_starts_from_registered_weights(user_registry):
    train_pairs, val = [synthetic_pair(1), synthetic_pair(3)], [synthetic_pair(2)]
    train(train_pairs, val, cfg(name="base", epochs=4), register=True)
    frozen = dict(epochs=1, iters_per_epoch=1, lr=1e-9)  # (almost) no learning: shows the starting point
    tuned = train([synthetic_pair(4)], val, cfg(name="tuned", init_from="base", class_names=["ignored"], **frozen))
    scratch = train([synthetic_pair(4)], val, cfg(name="scratch", **frozen))
    assert tuned.info.class_names == CONFIG["class_names"]
    assert tuned.best_miou > scratch.best_miou + 0.2


def test_progress_reports_loss_and_validation_miou():
    steps = train_steps([synthetic_pair(1)], [synthetic_pair(2)], cfg(epochs=2))
    progress = list(steps)
    training = [s.metrics for s in progress if not s.message.startswith("calibrating")]
    assert sum("val_miou" in m for m in training) == 2
    assert all("loss" in m for m in training)
    assert progress[-1].message.startswith("calibrating decisions") and progress[-1].fraction == 1.0


def test_tpe_search_runs_trials():
    study = search_frem([synthetic_pair(1)], [synthetic_pair(2)], cfg(epochs=1), n_trials=2,
                        deep_supervision=True)
    assert len(study.trials) == 2 and {"B", "X", "lambda"} <= set(study.best_params)
    assert 1 <= study.best_params["B"] <= 4 * 2**2


def test_class_weights_favour_rare_classes():
    labels = np.zeros((10, 10), np.int64)
    labels[0, :2] = 1
    w = class_weights([Pair(np.zeros((10, 10), np.float32), labels, "x")], 2)
    assert w[1] > 5 * w[0]


def test_metrics_and_label_mapping():
    cm = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    scores = SegmentationScores(["a", "b", "c"], cm)
    np.testing.assert_allclose(scores.iou, [1.0, 0.5, 0.5])
    assert scores.miou == pytest.approx(2 / 3)
    assert "mIoU" in scores.table()
    raw = np.array([[0, 128, 159], [191, 223, 255]], np.uint8)
    np.testing.assert_array_equal(map_labels(raw, DROSOPHILA_LABEL_MAP), [[1, 1, 0], [2, 3, 0]])


def test_stack_augmentation_changes_scale_and_appearance_but_keeps_labels_whole():
    pair = synthetic_pair(3, size=160)
    basic = CropSampler([pair], 64, np.random.default_rng(0), "basic")
    stack = CropSampler([pair], 64, np.random.default_rng(0), "stack")
    sizes = {"basic": [], "stack": []}
    for name, sampler in (("basic", basic), ("stack", stack)):
        for _ in range(40):
            image, labels = sampler._one()
            assert image.shape == labels.shape == (64, 64) and image.dtype == np.float32
            assert set(np.unique(labels)) <= {0, 1, 2}  # nearest-neighbour: no blended class indices
            sizes[name].append((labels == 1).mean() / max((labels > 0).mean(), 1e-6))
    # a rim is 2 px wide at every scale in the basic crops; rescaled crops change its share of a disc
    assert np.std(sizes["stack"]) > np.std(sizes["basic"])
    with pytest.raises(ValueError, match="unknown augmentation"):
        CropSampler([pair], 64, np.random.default_rng(0), "heavy")


def test_appearance_shift_keeps_the_image_z_scored_and_the_structure():
    rng = np.random.default_rng(1)
    image = synthetic_pair(4, size=96).image
    image = (image - image.mean()) / image.std()
    shifted = [appearance_shift(rng, image) for _ in range(10)]
    for out in shifted:
        assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-3
        assert np.corrcoef(out.ravel(), image.ravel())[0, 1] > 0.5  # same discs, other look
    assert max(np.abs(a - b).mean() for a, b in zip(shifted, shifted[1:])) > 0.05  # and each draw differs


def test_tiny_model_learns_with_stack_augmentation():
    train_pairs, val = [synthetic_pair(i) for i in range(3)], [synthetic_pair(10)]
    untrained = train(train_pairs, val, cfg(epochs=1, iters_per_epoch=1, lr=1e-9)).best_miou
    result = train(train_pairs, val, cfg(epochs=6, augmentation="stack"))
    assert result.best_miou > untrained + 0.2
    assert result.info.training["config"]["augmentation"] == "stack"


def test_pseudo_labels_are_the_confident_predictions_and_ignore_the_rest():
    """Unlabelled pixels become targets where the model is at least ``threshold`` sure (its most
    probable class, decision offsets applied), and are ignored elsewhere; those targets are mostly
    right for a model that has learnt, and a stricter threshold keeps fewer."""
    from napari_nanoclass import engine
    from napari_nanoclass.segmentation.data import IGNORE_INDEX
    from napari_nanoclass.segmentation.train import pseudo_label_steps

    result = train([synthetic_pair(i) for i in range(3)], [synthetic_pair(10)], cfg(epochs=12, lr=3e-2))
    unlabelled = synthetic_pair(20)
    bias = result.info.logit_bias
    (loose,), (strict,) = (run_sync(pseudo_label_steps(result.module, [("u", unlabelled.image)], threshold=t,
                                                       logit_bias=bias, tile=128)) for t in (0.6, 0.95))
    probabilities = run_sync(engine.predict_dense(result.module, unlabelled.image, tile=128,
                                                  postprocess=engine.with_logit_bias(engine.softmax, bias)))
    sure = probabilities.max(axis=0) >= 0.6
    np.testing.assert_array_equal(loose.labels[sure], probabilities.argmax(axis=0)[sure])
    assert (loose.labels[~sure] == IGNORE_INDEX).all() and loose.name == "u"
    targeted = loose.labels != IGNORE_INDEX
    assert targeted.mean() > 0.5 and (loose.labels[targeted] == unlabelled.labels[targeted]).mean() > 0.95
    assert (strict.labels != IGNORE_INDEX).sum() < targeted.sum()


def test_self_training_trains_a_student_on_labelled_and_pseudo_labelled_images(monkeypatch):
    """The teacher learns from the labelled images, labels the unlabelled ones, and the student is
    trained afresh on both: it learns, its crops come from every image, its metadata records the
    self-training, and progress goes through the three phases in order."""
    from napari_nanoclass.segmentation import train as training
    from napari_nanoclass.segmentation.train import self_train_steps

    seen = []

    class Counting(training.CropSampler):  # records how many pairs each training run draws crops from
        def __init__(self, pairs, *args, **kwargs) -> None:
            seen.append(len(pairs))
            super().__init__(pairs, *args, **kwargs)

    monkeypatch.setattr(training, "CropSampler", Counting)
    labelled, val = [synthetic_pair(i) for i in range(2)], [synthetic_pair(10)]
    unlabelled = [(f"u{i}", synthetic_pair(20 + i).image) for i in range(3)]
    steps, run = [], self_train_steps(labelled, val, unlabelled, cfg(epochs=12, lr=3e-2))
    try:
        while True:
            steps.append(next(run))
    except StopIteration as stop:
        student = stop.value
    assert seen == [2, 5]  # the teacher's crops from the labelled pairs, the student's from all five
    untrained = train(labelled, val, cfg(epochs=1, iters_per_epoch=1, lr=1e-9)).best_miou
    assert student.best_miou > untrained + 0.2
    record = student.info.training["self_training"]
    assert record["unlabelled_images"] == ["u0", "u1", "u2"] and 0.5 < record["pseudo_labelled_fraction"] <= 1
    assert record["threshold"] == 0.9 and record["teacher_val_miou"] > untrained
    names = ["teacher", "pseudo-labels", "student"]
    phases = [names.index(s.message.split(":")[0]) for s in steps]
    assert phases == sorted(phases) and set(phases) == {0, 1, 2}  # in order, each reported
    assert all(p / 3 <= s.fraction <= (p + 1) / 3 for p, s in zip(phases, steps)) and steps[-1].fraction == 1.0
    with pytest.raises(ValueError, match="unlabelled"):
        list(self_train_steps(labelled, val, [], cfg()))


def test_train_seg_self_trains_with_unlabelled_images(user_registry, tmp_path, capsys):
    """``nanoclass train-seg --unlabelled DIR`` registers the student, with its self-training record."""
    import json

    import tifffile

    from napari_nanoclass.cli import main

    for folder in ("images", "labels", "unlabelled"):
        (tmp_path / folder).mkdir()
    for i in range(3):
        pair = synthetic_pair(i)
        tifffile.imwrite(tmp_path / "images" / f"s{i}.tif", pair.image)
        tifffile.imwrite(tmp_path / "labels" / f"s{i}.tif", pair.labels.astype(np.uint8))
        tifffile.imwrite(tmp_path / "unlabelled" / f"u{i}.tif", synthetic_pair(20 + i).image)
    args = ["train-seg", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
            "--train-stems", "s0", "s1", "--val-stems", "s2", "--classes", "bg,disc,rim", "--name", "student",
            "--width", "4", "--depth", "2", "--epochs", "2", "--iters", "3", "--crop", "64", "--quiet"]
    assert main([*args, "--unlabelled", str(tmp_path / "unlabelled"), "--pseudo-threshold", "0.5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["self_training"]["unlabelled_images"] == ["u0", "u1", "u2"]
    assert load_model("student").info.training["self_training"]["threshold"] == 0.5
    assert main([*args, "--unlabelled", str(tmp_path / "unlabelled"), "--run-dir", str(tmp_path / "run")]) == 2
