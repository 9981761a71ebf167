"""Training the nanofibre patch classifier from labelled micrographs, and evaluating it by micrograph.

Labels come per micrograph (an expert says "homogeneous" or "beads"), not per patch. Two ways to
let patches learn from them, both here, compared in docs/homogeneity.md:

* ``instance`` (the paper): every patch takes its micrograph's label. Simple, but a homogeneous
  patch of a beaded micrograph is taught "defective".
* ``mil`` (multiple-instance learning): a micrograph is a bag of patches; the bag's logits are the
  log-sum-exp pooling of its patches' logits (a smooth maximum), and only the bag is supervised,
  so one beaded patch is enough to explain a "defective" label. Inference pools the same way.

A user can also mark regions on a napari Labels layer (value k + 1 = class k); patches that are
mostly one marked class are then supervised directly (``instance``).

Patches are 128² crops at random positions (not only the grid: the shift is augmentation) with
rot90/flip/intensity augmentation, never rescaled. Images are normalised by their whole-image
statistics, as the engine does at inference.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold
from torch.nn import functional as F

from napari_nanoclass.core.augment import augment
from napari_nanoclass.core.progress import Progress, Steps, run_sync
from napari_nanoclass.homogeneity import CLASS_COLOURS, CNN_ARCHITECTURE, THREE_CLASS, TWO_CLASS, sample_name
from napari_nanoclass.homogeneity.predict import Aggregation, analyse_steps
from napari_nanoclass.io.images import as_greyscale, image_stats, read_image
from napari_nanoclass.models.fibre_cnn import FibreCNN
from napari_nanoclass.models.registry import (
    LoadedModel,
    ModelInfo,
    build,
    check_name,
    load_model,
    save_model,
    sha256_of,
)

# folder name in ../shared/data/nanofiber-sem → class index, per mode
FOLDER_CLASSES = {
    "two": {"non_defective": 0, "slightly_defective": 1, "defective": 1},
    "three": {"non_defective": 0, "slightly_defective": 1, "defective": 2},
}
MODE_CLASSES = {"two": TWO_CLASS, "three": THREE_CLASS}


@dataclass
class Micrograph:
    """One labelled image: a class for the whole image, or region marks (0 = unmarked, k + 1 = class k)."""

    image: np.ndarray  # (Y, X) greyscale
    name: str
    label: int | None = None
    marks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.label is None) == (self.marks is None):
            raise ValueError(f"{self.name}: give either an image label or region marks")
        if self.marks is not None and self.marks.shape != self.image.shape:
            raise ValueError(f"{self.name}: marks {self.marks.shape} do not match the image {self.image.shape}")


def micrographs_from_arrays(image: np.ndarray, name: str, *, marks: np.ndarray | None = None,
                            label: int | None = None) -> list[Micrograph]:
    """One micrograph per plane of an in-memory image or (Z, Y, X) stack (e.g. napari layers), with
    its marks' plane or the whole-image label. The image is checked as greyscale first: an RGB
    (Y, X, 3) array would otherwise be split into rows and fail later on mismatched shapes."""
    data = np.asarray(as_greyscale(image, name))
    planes = [data] if data.ndim == 2 else list(data)
    if marks is None:
        return [Micrograph(p, f"{name}[{z}]", label=label) for z, p in enumerate(planes)]
    marks = np.asarray(marks)
    while marks.ndim > data.ndim and marks.shape[0] == 1:  # as_greyscale dropped the image's singleton axes
        marks = marks[0]
    if marks.shape != data.shape:
        raise ValueError(f"{name}: marks {marks.shape} do not match the image {data.shape}")
    mark_planes = [marks] if marks.ndim == 2 else list(marks)
    return [Micrograph(p, f"{name}[{z}]", marks=m) for z, (p, m) in enumerate(zip(planes, mark_planes))]


def check_marks(micrographs: Sequence[Micrograph], class_names: Sequence[str]) -> None:
    """Refuse marks or labels past the mode's classes (mark k + 1 = class k) before training,
    naming the values and the classes, instead of an index error inside the loss."""
    classes = ", ".join(f"{i + 1} {n}" for i, n in enumerate(class_names))
    for m in micrographs:
        values = np.unique(m.marks) if m.marks is not None else np.array([m.label + 1])
        bad = [int(v) for v in values if v > len(class_names) or v < 0]
        if bad:
            what = "marks" if m.marks is not None else "image label (as mark)"
            raise ValueError(f"{m.name}: {what} {', '.join(map(str, bad))} exceed the {len(class_names)} classes "
                             f"(0 unmarked, {classes}); choose three classes or repaint those regions")


def micrographs_from_folders(root: str | Path, mode: str = "two") -> list[Micrograph]:
    """Micrographs from ``root/<class folder>/*``, labelled by folder (see ``FOLDER_CLASSES``)."""
    root, classes = Path(root), FOLDER_CLASSES[mode]
    found = []
    for folder, label in classes.items():
        for path in sorted((root / folder).glob("*")):
            if path.is_file():
                found.append(Micrograph(np.asarray(as_greyscale(read_image(path).data, str(path))), path.stem, label))
    if not found:
        raise FileNotFoundError(f"{root}: no micrographs in the folders {sorted(classes)}")
    return found


@dataclass
class HomogeneityConfig:
    """A training run (stored with the model)."""

    name: str = "my-fibre-cnn"
    mode: str = "two"  # "two" (HNF/NHNF) or "three" (non / slightly / defective)
    strategy: str = "instance"  # "instance" or "mil"
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 96, 128])
    hidden: int = 40
    head: str = "fc"  # "fc" as in the paper, or "gap" (global average pooling)
    dropout: float = 0.0
    patch: int = 128
    steps: int = 200
    batch_size: int = 32
    bag_size: int = 8  # patches per micrograph in a MIL bag
    lse_r: float = 4.0
    optimizer: str = "adam"  # "adam", or "sgd" as in the paper (momentum 0.9)
    lr: float = 3e-3  # 1e-3 (the paper's) learnt far too slowly for a CPU budget of a few hundred steps
    weight_decay: float = 1e-4
    seed: int = 0
    init_from: str | None = None  # registered model or file to fine-tune

    @property
    def class_names(self) -> list[str]:
        return list(MODE_CLASSES[self.mode])

    def arch_params(self) -> dict[str, Any]:
        return dict(in_channels=1, n_classes=len(self.class_names), widths=list(self.widths),
                    hidden=self.hidden, patch=self.patch, head=self.head, dropout=self.dropout)

    def aggregation(self) -> Aggregation:
        return Aggregation("lse", r=self.lse_r) if self.strategy == "mil" else Aggregation("mean")


class PatchSampler:
    """Random augmented patches with their labels, drawn so every class is seen equally often."""

    def __init__(self, micrographs: Sequence[Micrograph], patch: int, rng: np.random.Generator) -> None:
        self.images = [((m.image - mean) / std).astype(np.float32)
                       for m in micrographs for mean, std in [image_stats(m.image)]]
        self.patch, self.rng = patch, rng
        self.sites = [_sites(m, patch) for m in micrographs]  # per image: (y, x, label) candidates
        labels = np.concatenate([s[:, 2] for s in self.sites if len(s)]) if any(len(s) for s in self.sites) else []
        if len(labels) == 0:
            raise ValueError("no training patches: images smaller than a patch, or no region marked")
        self.classes = np.unique(labels)

    def patches(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` patches from any images, classes drawn uniformly (the imbalance is in the data)."""
        xs, ys = [], []
        for target in self.rng.choice(self.classes, size=n):
            i, site = self._site_of_class(int(target))
            xs.append(self._crop(i, site))
            ys.append(target)
        return torch.from_numpy(np.stack(xs)[:, None]), torch.as_tensor(np.array(ys), dtype=torch.long)

    def bags(self, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` bags of ``size`` patches, each bag from one image, with the image's label."""
        xs, ys = [], []
        for target in self.rng.choice(self.classes, size=n):
            i, _ = self._site_of_class(int(target))
            xs += [self._crop(i, self.sites[i][self.rng.integers(len(self.sites[i]))]) for _ in range(size)]
            ys.append(target)
        return torch.from_numpy(np.stack(xs)[:, None]), torch.as_tensor(np.array(ys), dtype=torch.long)

    def _site_of_class(self, target: int) -> tuple[int, np.ndarray]:
        images = [i for i, s in enumerate(self.sites) if len(s) and (s[:, 2] == target).any()]
        i = images[self.rng.integers(len(images))]
        sites = self.sites[i][self.sites[i][:, 2] == target]
        return i, sites[self.rng.integers(len(sites))]

    def _crop(self, i: int, site: np.ndarray) -> np.ndarray:
        image, p = self.images[i], self.patch
        y, x = int(site[0]), int(site[1])
        return augment(self.rng, image[y:y + p, x:x + p])[0]


def _sites(m: Micrograph, patch: int, stride: int = 16) -> np.ndarray:
    """Top-left corners (every ``stride`` px) of patches inside the image, with their label.

    With region marks a patch is kept when more than half of it is one marked class.
    """
    height, width = m.image.shape
    ys, xs = np.arange(0, height - patch + 1, stride), np.arange(0, width - patch + 1, stride)
    grid = np.array([(y, x) for y in ys for x in xs], dtype=np.int64).reshape(-1, 2)
    if m.marks is None:
        return np.column_stack([grid, np.full(len(grid), m.label, dtype=np.int64)])
    rows = []
    for y, x in grid:
        counts = np.bincount(m.marks[y:y + patch, x:x + patch].ravel().astype(np.int64))
        if len(counts) > 1 and counts[1:].max() * 2 > patch * patch:
            rows.append((y, x, int(np.argmax(counts[1:]))))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def lse_pool(logits: torch.Tensor, r: float) -> torch.Tensor:
    """(bags, patches, C) → (bags, C): smooth maximum over patches (mean pooling as r → 0)."""
    return (torch.logsumexp(r * logits, dim=1) - np.log(logits.shape[1])) / r


def _initial_module(config: HomogeneityConfig) -> FibreCNN:
    torch.manual_seed(config.seed)
    module = build(model_info(config))
    if config.init_from:
        base = load_model(config.init_from)
        if base.info.architecture != CNN_ARCHITECTURE:
            raise ValueError(f"{config.init_from}: a {base.info.architecture} model cannot be fine-tuned as a FibreCNN")
        if base.info.class_names != config.class_names:
            raise ValueError(f"{config.init_from}: classes {base.info.class_names} differ from {config.class_names}")
        module.load_state_dict(base.module.state_dict())
    return module


def model_info(config: HomogeneityConfig, history: Sequence[dict[str, float]] = ()) -> ModelInfo:
    training = {k: v for k, v in asdict(config).items() if k != "name"}
    training["aggregation"] = asdict(config.aggregation())
    if history:
        training["final_loss"] = history[-1]["loss"]
    return ModelInfo(
        name=config.name, task="patch-classification", architecture=CNN_ARCHITECTURE, arch_params=config.arch_params(),
        class_names=config.class_names, class_colours=CLASS_COLOURS[: len(config.class_names)],
        tile=config.patch, patch=config.patch, description=f"nanofibre homogeneity, {config.mode}-class, "
        f"{config.strategy} training", training=training,
    )


def _optimizer(config: HomogeneityConfig, module: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def train_steps(micrographs: Sequence[Micrograph], config: HomogeneityConfig, *, save: bool = False,
                directory: Path | None = None) -> Steps[LoadedModel]:
    """Train (or fine-tune) a patch classifier; yields progress with the running loss.

    Returns the trained model, ready for :func:`homogeneity.analyse`; with ``save`` it is also
    written into the registry (``directory`` or the user's model folder).
    """
    if save:
        check_name(config.name)  # before the compute, not when saving after it
    if config.strategy == "mil" and any(m.label is None for m in micrographs):
        raise ValueError("multiple-instance training needs a label per image; region marks train with 'instance'")
    check_marks(micrographs, config.class_names)
    rng = np.random.default_rng(config.seed)
    sampler = PatchSampler(micrographs, config.patch, rng)
    module = _initial_module(config).train()
    optimizer = _optimizer(config, module)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    history: list[dict[str, float]] = []
    running = None
    yield Progress(0, config.steps, "training")
    for step in range(config.steps):
        loss = _loss(module, sampler, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        history.append({"step": step + 1, "loss": running})
        yield Progress(step + 1, config.steps, f"step {step + 1}/{config.steps}", {"loss": running})
    module.eval()
    _warn_if_not_learning(running, len(config.class_names))
    info = model_info(config, history)
    path = save_model(module, info, directory) if save else Path(f"<memory:{config.name}>")
    return LoadedModel(info, module, sha256_of(path) if save else "", path, torch.device("cpu"))


def _warn_if_not_learning(loss: float | None, n_classes: int) -> None:
    """A loss still at chance level means the network collapsed to one constant answer (seen once
    with multiple-instance training at lr 3e-3); say so rather than hand back a useless model."""
    if loss is not None and loss > 0.97 * np.log(n_classes):
        warnings.warn(f"training loss {loss:.3f} is still at chance level ({np.log(n_classes):.3f}): the model "
                      "did not learn; try more steps, a lower learning rate or another seed", stacklevel=3)


def _loss(module: FibreCNN, sampler: PatchSampler, config: HomogeneityConfig) -> torch.Tensor:
    if config.strategy == "instance":
        x, y = sampler.patches(config.batch_size)
        return F.cross_entropy(module(x), y, label_smoothing=0.05)
    bags = max(config.batch_size // config.bag_size, 1)
    x, y = sampler.bags(bags, config.bag_size)
    logits = module(x).reshape(bags, config.bag_size, -1)
    return F.cross_entropy(lse_pool(logits, config.lse_r), y, label_smoothing=0.05)


def train(micrographs: Sequence[Micrograph], config: HomogeneityConfig, *, progress: Any = None,
          save: bool = False, directory: Path | None = None) -> LoadedModel:
    """Synchronous :func:`train_steps`."""
    return run_sync(train_steps(micrographs, config, save=save, directory=directory), progress=progress)


# -- evaluation by micrograph ----------------------------------------------------------------------


@dataclass
class Scores:
    """Image-level classification scores with the confusion matrix (rows true, columns predicted)."""

    class_names: list[str]
    y_true: list[int]
    y_pred: list[int]
    names: list[str] = field(default_factory=list)  # the micrograph of each verdict, to name the wrong ones

    def as_dict(self) -> dict[str, Any]:
        labels = list(range(len(self.class_names)))
        precision, recall, f1, support = precision_recall_fscore_support(
            self.y_true, self.y_pred, labels=labels, zero_division=0)
        return {
            "accuracy": float(accuracy_score(self.y_true, self.y_pred)),
            "per_class": {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                          for name, p, r, f, s in zip(self.class_names, precision, recall, f1, support)},
            "macro_f1": float(np.mean(f1)),
            "confusion": confusion_matrix(self.y_true, self.y_pred, labels=labels).tolist(),
        }


def predict_micrograph(model: LoadedModel, image: np.ndarray) -> int:
    """Class index of a whole micrograph: pooled patch probabilities through the engine."""
    result = run_sync(analyse_steps(image, model))
    if len(model.info.class_names) == 2:
        return int(result.summary["verdict"] == "NHNF")
    return model.info.class_names.index(result.summary["predicted_class"])


Classifier = Callable[[Sequence[Micrograph], int], Callable[[np.ndarray], int]]


def cnn_classifier(config: HomogeneityConfig) -> Classifier:
    """Fit function for :func:`cross_validate`: trains ``config`` on the fold, predicts micrographs."""

    def fit(train_set: Sequence[Micrograph], fold: int) -> Callable[[np.ndarray], int]:
        model = train(train_set, HomogeneityConfig(**{**asdict(config), "seed": config.seed + fold}))
        return lambda image: predict_micrograph(model, image)

    return fit


def cross_validate(micrographs: Sequence[Micrograph], fit: Classifier, class_names: Sequence[str], *,
                   folds: int | None = 5, seed: int = 0, groups: Sequence[str] | None = None,
                   on_fold: Callable[[int, Scores], None] | None = None) -> Scores:
    """Stratified grouped k-fold by micrograph: each image (its every patch) is on one side only.

    ``groups`` (default: each micrograph its own group) can tie images together, e.g. by sample,
    for a stricter split; ``folds=None`` holds out one group at a time. Returns the scores pooled
    over all held-out images, in the order they were held out.
    """
    labels = np.array([m.label for m in micrographs])
    groups = list(groups) if groups is not None else [m.name for m in micrographs]
    splitter = LeaveOneGroupOut() if folds is None else StratifiedGroupKFold(n_splits=folds, shuffle=True,
                                                                             random_state=seed)
    pooled = Scores(list(class_names), [], [])
    for fold, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        predict = fit([micrographs[i] for i in train_idx], fold)
        held_out = Scores(list(class_names), [int(labels[i]) for i in test_idx],
                          [predict(micrographs[i].image) for i in test_idx], [micrographs[i].name for i in test_idx])
        pooled.y_true += held_out.y_true
        pooled.y_pred += held_out.y_pred
        pooled.names += held_out.names
        if on_fold is not None:
            on_fold(fold, held_out)
    return pooled


def sample_groups(micrographs: Sequence[Micrograph]) -> list[str]:
    """Sample name of each micrograph (:func:`homogeneity.sample_name`)."""
    return [sample_name(m.name) for m in micrographs]


def summary_row(name: str, scores: Scores, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One flat row for tables: accuracy, macro F1 and per-class P/R/F1."""
    d = scores.as_dict()
    row: dict[str, Any] = {"method": name, "accuracy": d["accuracy"], "macro_f1": d["macro_f1"]}
    for cls, v in d["per_class"].items():
        row.update({f"{cls}_precision": v["precision"], f"{cls}_recall": v["recall"], f"{cls}_f1": v["f1"]})
    row.update(extra or {})
    return row
