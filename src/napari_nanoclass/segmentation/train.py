"""Training and fine-tuning of the SE U-Net (with FREM), and the TPE search for its B and X.

:func:`train_steps` is a step generator (progress per iteration, with loss and validation mIoU in
``Progress.metrics``), used alike by ``nanoclass train-seg``, the napari "Train / fine-tune"
widget and the benchmarks. With a ``run_dir`` it checkpoints every epoch (safetensors: model,
optimizer, random states) and can resume after an interruption; the best epoch by validation
mIoU is what it returns and registers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from skimage.transform import resize
from torch.nn import functional as F

from napari_nanoclass import engine
from napari_nanoclass.core.atomic import atomic_path
from napari_nanoclass.core.augment import AUGMENTATIONS, appearance_shift, augment, scale_factor
from napari_nanoclass.core.metrics import SegmentationScores, confusion_matrix
from napari_nanoclass.core.progress import Progress, Steps, held, run_sync, scaled
from napari_nanoclass.io.images import as_greyscale, image_stats
from napari_nanoclass.models.registry import ModelInfo, build, check_name, load_model, save_model
from napari_nanoclass.models.unet import SEUNet
from napari_nanoclass.segmentation.data import IGNORE_INDEX, Pair, pair_from_arrays


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored with the model for reproducibility)."""

    name: str = "my-seunet"
    class_names: list[str] = field(default_factory=lambda: ["background", "foreground"])
    class_colours: list[str] = field(default_factory=list)
    width: int = 12
    depth: int = 4
    se_window: int | None = 5
    frem_b: int = 0  # FREM off when 0
    frem_x: float = 250.0
    dropout: float = 0.0
    deep_supervision: bool = False
    aux_weight: float = 0.4  # λ of the deep-supervision loss
    crop: int = 256
    augmentation: str = "basic"  # or "stack": also scale ±20 %, gamma, blur, uneven illumination (core.augment)
    batch_size: int = 4
    epochs: int = 30
    iters_per_epoch: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8  # epochs without validation improvement before stopping
    seed: int = 0
    tile: int = 1024  # inference tile stored with the model and used for validation
    pixel_size_nm: float | None = None
    init_from: str | None = None  # registered model or file to fine-tune
    calibrate: bool = True  # fit the decision offsets (fit_logit_adjustment) after training

    def arch_params(self) -> dict[str, Any]:
        return dict(in_channels=1, n_classes=len(self.class_names), width=self.width, depth=self.depth,
                    se_window=self.se_window, frem_b=self.frem_b, frem_x=self.frem_x,
                    dropout=self.dropout, deep_supervision=self.deep_supervision)


@dataclass
class TrainResult:
    module: SEUNet
    info: ModelInfo
    history: list[dict[str, float]]
    best_miou: float


# -- data -----------------------------------------------------------------------------------


class CropSampler:
    """Random augmented crops: rot90, flips, contrast/brightness jitter and Gaussian noise; with
    ``augmentation="stack"`` also a magnification change of up to ±20 % and an appearance shift
    (:func:`core.augment.appearance_shift`), for models that must work on other stacks."""

    def __init__(self, pairs: Sequence[Pair], crop: int, rng: np.random.Generator, augmentation: str = "basic"
                 ) -> None:
        if augmentation not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augmentation!r}; choose from {', '.join(AUGMENTATIONS)}")
        self.images = [((p.image - m) / s).astype(np.float32) for p in pairs
                       for m, s in [p.stats or image_stats(p.image)]]
        self.labels = [p.labels for p in pairs]
        sizes = np.array([p.image.size for p in pairs], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.crop, self.rng, self.stack = crop, rng, augmentation == "stack"

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(self._one() for _ in range(n)))
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))

    def _one(self) -> tuple[np.ndarray, np.ndarray]:
        i = self.rng.choice(len(self.images), p=self.weights)
        image, labels = self.images[i], self.labels[i]
        side = int(round(self.crop * scale_factor(self.rng))) if self.stack else self.crop  # source window
        pad = [(0, max(0, side - s)) for s in image.shape]
        if any(p[1] for p in pad):
            image = np.pad(image, pad, mode="reflect")
            labels = np.pad(labels, pad, constant_values=IGNORE_INDEX)
        y = self.rng.integers(0, image.shape[0] - side + 1)
        x = self.rng.integers(0, image.shape[1] - side + 1)
        image = image[y : y + side, x : x + side]
        labels = labels[y : y + side, x : x + side]
        if side != self.crop:  # the window seen at another magnification: labels stay whole classes
            shape = (self.crop, self.crop)
            image = resize(image, shape, order=1, anti_aliasing=side > self.crop, preserve_range=True)
            labels = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)
        if self.stack:
            image = appearance_shift(self.rng, image)
        image, labels = augment(self.rng, image, labels)
        return image, np.ascontiguousarray(labels, dtype=np.int64)


class CropStream(torch.utils.data.IterableDataset):
    """Endless batches of :class:`CropSampler` crops, for loading in worker processes.

    Each worker draws from its own generator, seeded by (seed, start epoch, worker), so a run is
    reproducible for a given number of workers (not across different numbers of workers).
    """

    def __init__(self, pairs: Sequence[Pair], config: TrainConfig, start_epoch: int) -> None:
        self.pairs, self.config, self.start_epoch = list(pairs), config, start_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.config.seed, self.start_epoch, worker.id if worker else 0])
        sampler = CropSampler(self.pairs, self.config.crop, rng, self.config.augmentation)
        while True:
            yield sampler.batch(self.config.batch_size)


def _batches(sampler: CropSampler, train: Sequence[Pair], config: TrainConfig, start_epoch: int, workers: int
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches: from ``sampler`` in this process, or from ``workers`` loader processes,
    which prepare crops while the network trains (the stack augmentation costs more than a
    small network's step)."""
    if workers <= 0:
        while True:
            yield sampler.batch(config.batch_size)
    loader = torch.utils.data.DataLoader(CropStream(train, config, start_epoch), batch_size=None,
                                         num_workers=workers, prefetch_factor=4, persistent_workers=True)
    yield from loader


def holdout_pairs(image: np.ndarray, labels: np.ndarray, name: str) -> tuple[list[Pair], list[Pair]]:
    """Training and validation pairs from one image or stack and its labels: the bottom quarter
    of every plane is held out, a contiguous block rather than random pixels, so validation
    measures structures the model did not train on (planes of a stack are split separately)."""
    image = as_greyscale(image, name)  # an RGB layer is refused here, not split into rows as a "stack"
    labels = np.asarray(labels)
    while labels.ndim > image.ndim and labels.shape[0] == 1:  # as_greyscale dropped the image's singleton axes
        labels = labels[0]
    planes = [(image, labels)] if image.ndim == 2 else list(zip(image, labels))
    train, val = [], []
    for z, (img, lab) in enumerate(planes):
        cut = img.shape[0] * 3 // 4
        train.append(pair_from_arrays(img[:cut], lab[:cut], f"{name}[{z}] top"))
        val.append(pair_from_arrays(img[cut:], lab[cut:], f"{name}[{z}] bottom"))
    return train, val


def check_label_values(pairs: Sequence[Pair], class_names: Sequence[str]) -> None:
    """Refuse masks with values past the declared classes before training starts: the loss would
    stop with "Target 3 is out of bounds" deep inside torch, naming neither the values nor the classes."""
    allowed = len(class_names)
    for pair in pairs:
        values = np.unique(pair.labels)
        bad = [int(v) for v in values if v >= allowed and v != IGNORE_INDEX]
        if bad:
            classes = ", ".join(f"{i} {n}" for i, n in enumerate(class_names))
            raise ValueError(f"{pair.name}: label values {', '.join(map(str, bad))} exceed the {allowed} declared "
                             f"classes ({classes}); declare more classes or repaint those pixels")


def default_patience(epochs: int) -> int:
    """Epochs without validation improvement before stopping, for a run of ``epochs``: a third of
    them (at least 3), so a short fine-tune is not cut off by one noisy epoch."""
    return max(3, epochs // 3)


def class_weights(pairs: Sequence[Pair], n_classes: int) -> torch.Tensor:
    """Inverse square-root class frequencies, scaled so an average pixel has weight 1.

    Rare classes (synapses are ~0.3 % of the Drosophila pixels) get more weight without the
    instability of full inverse-frequency weights.
    """
    counts = sum(np.bincount(p.labels[p.labels != IGNORE_INDEX].ravel(), minlength=n_classes)[:n_classes]
                 for p in pairs).astype(np.float64)
    freq = np.maximum(counts / counts.sum(), 1e-4)
    w = freq**-0.5
    return torch.tensor(w / (freq * w).sum(), dtype=torch.float32)


# -- evaluation -------------------------------------------------------------------------------


def evaluate_steps(module: torch.nn.Module, pairs: Sequence[Pair], class_names: Sequence[str], *,
                   tile: int = 1024, device: str | torch.device | None = None,
                   logit_bias: Sequence[float] | None = None, tta: bool = False) -> Steps[SegmentationScores]:
    """Per-class IoU and mIoU over whole images, predicted through the tiling engine, with the
    decision offsets ``logit_bias`` if given (as :func:`segmentation.segment` applies a model's)
    and optionally test-time augmentation; progress per tile."""
    n = len(class_names)
    confusion = np.zeros((n, n), dtype=np.int64)
    post = engine.with_logit_bias(engine.labels_from_logits, logit_bias)
    for i, pair in enumerate(pairs):
        labels = yield from scaled(engine.predict_dense(module, pair.image, tile=tile, device=device, postprocess=post,
                                                        tta=tta, stats=[pair.stats] if pair.stats else None),
                                   i, len(pairs), f"evaluating {i + 1}/{len(pairs)}")
        confusion += confusion_matrix(labels[0], pair.labels, n, ignore=IGNORE_INDEX)
    return SegmentationScores(list(class_names), confusion)


def evaluate(module: torch.nn.Module, pairs: Sequence[Pair], class_names: Sequence[str], **kwargs: Any
             ) -> SegmentationScores:
    """Synchronous :func:`evaluate_steps`."""
    return run_sync(evaluate_steps(module, pairs, class_names, **kwargs))


TAUS = tuple(round(float(t), 2) for t in np.linspace(0.0, 1.0, 21))  # strengths tried by fit_logit_adjustment


def fit_logit_adjustment(module: torch.nn.Module, pairs: Sequence[Pair], class_names: Sequence[str],
                         weights: Sequence[float], *, tile: int = 1024,
                         device: str | torch.device | None = None) -> Steps[dict[str, Any]]:
    """Decision offsets that take back part of the class-weighted loss's pull towards rare classes.

    Cross-entropy with class weights w trains the softmax towards p(c | x)·w_c (renormalised), so
    its argmax claims too many pixels for the rare, heavily weighted classes (on the Drosophila
    data: membrane and synapse edges taken from background). Adding -τ·log w_c to the logits
    undoes that: τ = 1 is the full correction (logit adjustment, Menon et al., ICLR 2021), τ = 0
    none. mIoU is not accuracy and rewards keeping some of the pull, so τ is chosen from
    :data:`TAUS` for the best mIoU on the *training* images — the validation images play no part
    in the choice and stay an honest test of it. One inference pass over ``pairs``.

    Returns ``{"tau", "logit_bias", "train_miou_by_tau"}``; ``logit_bias`` is what
    :attr:`ModelInfo.logit_bias` stores.
    """
    n = len(class_names)
    log_w = np.log(np.asarray(weights, dtype=np.float64))
    confusions = {tau: np.zeros((n, n), dtype=np.int64) for tau in TAUS}
    for i, pair in enumerate(pairs):
        logits = yield from scaled(engine.predict_dense(module, pair.image, tile=tile, device=device, postprocess=None,
                                                        stats=[pair.stats] if pair.stats else None),
                                   i, len(pairs), f"calibrating decisions: image {i + 1}/{len(pairs)}")
        for tau, confusion in confusions.items():
            shifted = logits - (tau * log_w).astype(np.float32)[:, None, None]
            confusion += confusion_matrix(shifted.argmax(0), pair.labels, n, ignore=IGNORE_INDEX)
    by_tau = {tau: SegmentationScores(list(class_names), c).miou for tau, c in confusions.items()}
    tau = max(TAUS, key=lambda t: by_tau[t])
    return {"tau": tau, "logit_bias": [round(float(-tau * w), 6) for w in log_w],
            "train_miou_by_tau": {f"{t:.2f}": round(m, 6) for t, m in by_tau.items()}}


# -- checkpoints ----------------------------------------------------------------------------


def _save_checkpoint(path: Path, module: SEUNet, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, entries in opt["state"].items():
        for key, value in entries.items():
            tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value).cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"state": json.dumps(state), "param_groups": json.dumps(opt["param_groups"])}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_checkpoint(path: Path, module: SEUNet, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(path))
    module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": json.loads(meta["param_groups"])})
    torch.set_rng_state(tensors["rng.torch"])
    return json.loads(meta["state"])


# -- the training loop ----------------------------------------------------------------------


def _initial_module(config: TrainConfig) -> tuple[SEUNet, TrainConfig]:
    """A fresh network, or the weights of ``init_from`` (fine-tuning keeps its architecture)."""
    if config.init_from is None:
        return SEUNet(**config.arch_params()), config
    base = load_model(config.init_from)
    params = dict(base.info.arch_params, frem_b=config.frem_b, frem_x=config.frem_x, dropout=config.dropout,
                  deep_supervision=config.deep_supervision)
    config = replace(config, class_names=list(base.info.class_names),
                     class_colours=config.class_colours or list(base.info.class_colours),
                     width=params["width"], depth=params["depth"], se_window=params.get("se_window"))
    module = SEUNet(**params)
    missing, unexpected = module.load_state_dict(base.module.state_dict(), strict=False)
    if unexpected or any(not k.startswith("aux_head") for k in missing):
        raise ValueError(f"cannot fine-tune {config.init_from}: weights differ ({missing or unexpected})")
    return module, config


def model_info(config: TrainConfig, history: list[dict[str, float]],
               adjustment: dict[str, Any] | None = None) -> ModelInfo:
    """The model's metadata; ``adjustment`` (from :func:`fit_logit_adjustment`) sets its decision offsets."""
    params = dict(config.arch_params(), frem_b=0, deep_supervision=False, dropout=0.0)  # training-only parts
    best = max(history, key=lambda h: h.get("val_miou", -1)) if history else {}
    return ModelInfo(
        name=config.name, task="segmentation", architecture="seunet", arch_params=params,
        class_names=list(config.class_names), class_colours=list(config.class_colours),
        normalisation={"method": "zscore"}, tile=config.tile, pixel_size_nm=config.pixel_size_nm,
        description=f"SE U-Net trained by napari-nanoclass; best validation mIoU {best.get('val_miou', float('nan')):.4f}",
        logit_bias=adjustment["logit_bias"] if adjustment else None,
        training={"config": asdict(config), "best_epoch": best.get("epoch"), "validation": best,
                  **({"logit_adjustment": adjustment} if adjustment else {})},
    )


def train_steps(train: Sequence[Pair], val: Sequence[Pair], config: TrainConfig, *,
                run_dir: str | Path | None = None, resume: bool = False, register: bool = False,
                device: str | None = None, workers: int = 0) -> Steps[TrainResult]:
    """Train (or fine-tune) on ``train``, validating mIoU on ``val`` after every epoch.

    FREM's channels are redrawn at the start of each epoch. Training stops after ``patience``
    epochs without improvement. With ``config.calibrate`` the best model's decision offsets are
    then fitted on ``train`` (:func:`fit_logit_adjustment`) and its validation mIoU with them is
    recorded as ``adjustment["val_miou"]``. ``register`` saves the best model into the user registry.
    ``workers`` > 0 prepares the training crops in that many loader processes.
    """
    if register:
        check_name(config.name)  # before the compute, not when saving after it
    if not train or not val:
        raise ValueError("training needs at least one training and one validation image")
    dev = engine.select_device(device)
    torch.manual_seed(config.seed)
    module, config = _initial_module(config)
    check_label_values([*train, *val], config.class_names)
    module.to(dev)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    weights = class_weights(train, len(config.class_names)).to(dev)
    rng = np.random.default_rng(config.seed)
    state: dict[str, Any] = {"epoch": 0, "best_miou": -1.0, "bad_epochs": 0, "history": []}
    checkpoint = Path(run_dir) / "last.safetensors" if run_dir is not None else None
    best_path = Path(run_dir) / "best.safetensors" if run_dir is not None else None
    if resume and checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint, module, optimizer)
        rng = np.random.default_rng([config.seed, state["epoch"]])
    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    if best_path is not None and best_path.exists() and state["epoch"]:
        best_state = load_file(str(best_path))
    sampler = CropSampler(train, config.crop, rng, config.augmentation)
    stream = _batches(sampler, train, config, state["epoch"], workers)
    total = config.epochs * config.iters_per_epoch
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(state["epoch"], config.epochs):
        if state["bad_epochs"] >= config.patience:
            break
        generator.manual_seed(config.seed * 1000 + epoch)
        module.resample_frem(generator)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
        module.train()
        losses = []
        for it in range(config.iters_per_epoch):
            x, y = next(stream)
            x, y = x.to(dev), y.to(dev)
            logits, aux = module.forward_with_aux(x)
            loss = F.cross_entropy(logits, y, weight=weights, ignore_index=IGNORE_INDEX)
            if aux is not None:
                loss = loss + config.aux_weight * F.cross_entropy(aux, y, weight=weights, ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            done = epoch * config.iters_per_epoch + it + 1
            yield Progress(done, total, f"epoch {epoch + 1}/{config.epochs} loss {losses[-1]:.3f}",
                           {"epoch": epoch + 1, "loss": losses[-1]})
        so_far = {"epoch": epoch + 1, "loss": losses[-1]}  # the epoch's end still reports (and can stop)
        if module.frem is not None:
            batches = math.ceil(RECALIBRATION_CROPS / config.batch_size)
            yield from held(recalibration_steps(module, (sampler.batch(config.batch_size)[0].to(dev)
                                                         for _ in range(batches))),
                            Progress(done, total, f"epoch {epoch + 1}: re-estimating batch-norm statistics", so_far))
        scores = yield from held(evaluate_steps(module, val, config.class_names, tile=config.tile, device=dev),
                                 Progress(done, total, f"epoch {epoch + 1}: validating", so_far))
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_miou": scores.miou,
                  **{f"val_{k}": v for k, v in scores.as_dict().items() if k != "miou"}}
        state["history"].append(record)
        if scores.miou > state["best_miou"]:
            state.update(best_miou=scores.miou, bad_epochs=0)
            best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            if best_path is not None:
                save_model(_with_state(config, best_state), model_info(config, state["history"]), best_path.parent,
                           filename=best_path.name, register=False)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if checkpoint is not None:
            _save_checkpoint(checkpoint, module, optimizer, state)
        yield Progress(done, total, f"epoch {epoch + 1}: val mIoU {scores.miou:.3f}", dict(record))
    stream.close()  # ends the loader processes
    final = _with_state(config, best_state)
    adjustment = None
    if config.calibrate:
        adjustment = yield from fit_logit_adjustment(final, train, config.class_names, weights.cpu().tolist(),
                                                     tile=config.tile, device=dev)
        adjustment["val_miou"] = evaluate(final, val, config.class_names, tile=config.tile, device=dev,
                                          logit_bias=adjustment["logit_bias"]).miou
        final.cpu()  # the engine moved it to the training device; the result is returned on the CPU
    info = model_info(config, state["history"], adjustment)
    if best_path is not None and adjustment is not None:
        save_model(final, info, best_path.parent, filename=best_path.name, register=False)
    if register:
        save_model(final, info)
    return TrainResult(final, info, state["history"], state["best_miou"])


RECALIBRATION_CROPS = 128  # crops whose FREM-free features re-estimate the batch-norm statistics


def recalibrate_batch_norm(module: torch.nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Synchronous :func:`recalibration_steps`."""
    run_sync(recalibration_steps(module, batches))


def recalibration_steps(module: torch.nn.Module, batches: Iterable[torch.Tensor]) -> Steps[None]:
    """Re-estimate every batch norm's running statistics from ``batches`` with inference features.

    FREM multiplies bottleneck channels by X (hundreds) in training, and the decoder's batch norms
    fold those amplified features into their running statistics; at inference FREM is the
    identity, so the statistics no longer match the features (validation mIoU then jumps from
    epoch to epoch; docs/segmentation.md). Everything but the batch norms runs
    as at inference (FREM and dropout off); the norms average over all batches (momentum None).
    Yields after each batch; stopped early, the norms keep their momenta and the module is left
    in eval mode.
    """
    module.eval()
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for i, x in enumerate(batches):
            with torch.no_grad():
                module(x)
            yield Progress(i + 1, 0, "re-estimating batch-norm statistics")
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        module.eval()


def _with_state(config: TrainConfig, state: dict[str, torch.Tensor]) -> SEUNet:
    """An inference-ready network (no FREM/aux/dropout) holding the given weights."""
    info = model_info(config, [])
    module = build(info)
    module.load_state_dict({k: v for k, v in state.items() if not k.startswith("aux_head")})
    return module.eval()


def train(train_pairs: Sequence[Pair], val_pairs: Sequence[Pair], config: TrainConfig, *,
          progress: Any = None, **kwargs: Any) -> TrainResult:
    """Synchronous :func:`train_steps`."""
    return run_sync(train_steps(train_pairs, val_pairs, config, **kwargs), progress=progress)


# -- self-training on unlabelled images ------------------------------------------------------

PSEUDO_THRESHOLD = 0.9  # an unlabelled pixel becomes a training target where the teacher is at least this sure


def pseudo_label_steps(module: torch.nn.Module, images: Sequence[tuple[str, np.ndarray]], *,
                       threshold: float = PSEUDO_THRESHOLD,
                       logit_bias: Sequence[float] | None = None, tile: int = 1024,
                       device: str | torch.device | None = None) -> Steps[list[Pair]]:
    """Training pairs from unlabelled (name, image) pairs: each pixel takes the class ``module``
    finds most probable there (with its decision offsets ``logit_bias``, as ``segment`` decides)
    where that probability is at least ``threshold``, and is ignored elsewhere, so the uncertain
    pixels (mostly borders between classes) teach nothing. Whole images through the tiling engine."""
    post = engine.with_logit_bias(engine.softmax, logit_bias)
    pairs = []
    for i, (name, image) in enumerate(images):
        image = as_greyscale(image, name)
        predicted = engine.predict_dense(module, image, tile=tile, device=device, postprocess=post)
        probabilities = yield from scaled(predicted, i, len(images), f"pseudo-labelling {i + 1}/{len(images)}")
        labels = np.where(probabilities.max(axis=0) >= threshold, probabilities.argmax(axis=0), IGNORE_INDEX)
        pairs.append(Pair(image, labels.astype(np.int64), name))
    return pairs


def self_train_steps(train: Sequence[Pair], val: Sequence[Pair], unlabelled: Sequence[tuple[str, np.ndarray]],
                     config: TrainConfig, *, threshold: float = PSEUDO_THRESHOLD, register: bool = False,
                     device: str | None = None, workers: int = 0) -> Steps[TrainResult]:
    """Self-training: a teacher trained on ``train`` labels the ``unlabelled`` images where it is
    sure (:func:`pseudo_label_steps`), and a student with ``config`` is trained afresh on both,
    validated on ``val`` like any run. Images of another stack or microscope then teach the
    student what the labelled ones cannot: how that data looks. The student is returned (and
    registered with ``register``); its ``info.training["self_training"]`` records the teacher's
    validation mIoU, the threshold and the share of unlabelled pixels that became targets."""
    if not unlabelled:
        raise ValueError("self-training needs at least one unlabelled image")
    if register:
        check_name(config.name)  # before the compute, not when saving after it
    teacher_config = replace(config, name=f"{config.name}-teacher")
    # three phases, a third of the progress each
    teacher = yield from scaled(train_steps(train, val, teacher_config, device=device, workers=workers), 0, 3,
                                prefix="teacher: ")
    pseudo = yield from scaled(pseudo_label_steps(teacher.module, unlabelled, threshold=threshold,
                                                  logit_bias=teacher.info.logit_bias, tile=config.tile,
                                                  device=device), 1, 3, prefix="pseudo-labels: ")
    student = yield from scaled(student_steps(train, val, pseudo, config, teacher_val_miou=teacher.best_miou,
                                              threshold=threshold, device=device, workers=workers), 2, 3,
                                prefix="student: ")
    if register:
        save_model(student.module, student.info)
    return student


def student_steps(train: Sequence[Pair], val: Sequence[Pair], pseudo: Sequence[Pair], config: TrainConfig, *,
                  teacher_val_miou: float, threshold: float = PSEUDO_THRESHOLD, device: str | None = None,
                  workers: int = 0) -> Steps[TrainResult]:
    """Self-training's last phase on its own: a student trained with ``config`` (afresh, unless its
    ``init_from`` names a network to go on from) on the labelled ``train`` and the
    ``pseudo``-labelled pairs (:func:`pseudo_label_steps`), with the record :func:`self_train_steps`
    gives it. A benchmark that already holds a teacher's pseudo-labels trains students from them
    without training or running the teacher again."""
    student = yield from train_steps([*train, *pseudo], val, config, device=device, workers=workers)
    targeted = float(np.mean([np.mean(pair.labels != IGNORE_INDEX) for pair in pseudo]))
    student.info.training["self_training"] = {
        "teacher_val_miou": teacher_val_miou, "threshold": threshold, "pseudo_labelled_fraction": round(targeted, 4),
        "unlabelled_images": [pair.name for pair in pseudo]}
    return student


def self_train(train_pairs: Sequence[Pair], val_pairs: Sequence[Pair], unlabelled: Sequence[tuple[str, np.ndarray]],
               config: TrainConfig, *, progress: Any = None, **kwargs: Any) -> TrainResult:
    """Synchronous :func:`self_train_steps`."""
    return run_sync(self_train_steps(train_pairs, val_pairs, unlabelled, config, **kwargs), progress=progress)


# -- hyperparameter search -------------------------------------------------------------------


def search_frem(train_pairs: Sequence[Pair], val_pairs: Sequence[Pair], base: TrainConfig, *,
                n_trials: int = 20, deep_supervision: bool = False, seed: int = 0,
                timeout_s: float | None = None, progress: Any = None) -> Any:
    """TPE search (optuna) of FREM's B and X — and λ with deep supervision — for validation mIoU.

    Each trial is a (short) training run with ``base``'s budget; unpromising trials are pruned
    by the median rule on their per-epoch mIoU. Returns the optuna study.
    """
    import optuna

    bottleneck = base.width * 2**base.depth

    def objective(trial: optuna.Trial) -> float:
        config = replace(base, frem_b=trial.suggest_int("B", 1, bottleneck),
                         frem_x=trial.suggest_float("X", 1.0, 1000.0, log=True),
                         deep_supervision=deep_supervision, calibrate=False)
        if deep_supervision:
            config = replace(config, aux_weight=trial.suggest_float("lambda", 0.05, 1.0))
        steps = train_steps(train_pairs, val_pairs, config)
        try:
            while True:
                step = next(steps)
                if progress is not None:
                    progress(step)
                if step.metrics and "val_miou" in step.metrics:
                    trial.report(step.metrics["val_miou"], step.metrics["epoch"])
                    if trial.should_prune():
                        raise optuna.TrialPruned()
        except StopIteration as stop:
            return stop.value.best_miou

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    study.optimize(objective, n_trials=n_trials, timeout=timeout_s)
    return study
