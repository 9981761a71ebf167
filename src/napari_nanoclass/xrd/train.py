"""Training the XRD classifier on simulated patterns, and the protocol that judges it on real ones.

:func:`train` fits an :class:`~napari_nanoclass.models.xrd_cnn.XrdCNN` on patterns drawn by
:func:`.simulate.simulate` — fresh ones every epoch, so the network never sees the same film twice
— stores the compounds' ideal patterns with it (the nearest-reference half of its predictions),
and returns a registry-ready :class:`~napari_nanoclass.models.registry.LoadedModel`. Its
schedule is fixed in :class:`XrdConfig`; the only held-out data it looks at is simulated.

For evaluation: :func:`load_labelled` reads a folder of real patterns in one sub-folder per space
group, :func:`material_of` groups repeated scans of one film, :func:`scores` gives top-1, top-5,
balanced accuracy and the confusion matrix, and :func:`nearest_reference` is the baseline
(correlation with the ideal simulated pattern of each compound).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_nanoclass.core.metrics import confusion_matrix
from napari_nanoclass.models.registry import LoadedModel, ModelInfo, save_model
from napari_nanoclass.models.xrd_cnn import XrdCNN
from napari_nanoclass.xrd.patterns import Preparation, prepare, read_pattern
from napari_nanoclass.xrd.simulate import Augmentation, PeakTable, SimulatedSet, references, simulate


@dataclass
class XrdConfig:
    """One training run: network size, schedule and the simulated data it draws."""

    name: str = "xrd-model"
    epochs: int = 12
    per_epoch: int = 6000  # fresh simulated patterns each epoch
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    widths: tuple[int, ...] = (16, 32, 64, 64)
    kernels: tuple[int, ...] = (9, 7, 5, 3)
    hidden: int = 128
    dropout: float = 0.3
    seed: int = 0
    validation: int = 1000  # simulated validation patterns (a seed of their own)
    references: bool = True  # store the compounds' ideal patterns: predictions average network and nearest reference
    prep: Preparation = field(default_factory=Preparation)
    augmentation: Augmentation = field(default_factory=Augmentation)


@dataclass
class TrainResult:
    model: LoadedModel
    history: list[dict[str, float]]


def train(tables: Sequence[PeakTable], classes: Sequence[str], config: XrdConfig, *, register: bool = False,
          directory: Path | None = None, log: Any = None) -> TrainResult:
    """Train on simulated patterns of ``tables``; ``register`` saves it under ``config.name``
    (in ``directory``, default the user's model folder)."""
    torch.manual_seed(config.seed)
    prep, classes = config.prep, list(classes)
    model = XrdCNN(len(classes), prep.points, config.widths, config.kernels, config.hidden, config.dropout)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * -(-config.per_epoch // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=steps, pct_start=0.15)
    validation = simulate(tables, classes, config.validation, prep, 10_000 + config.seed, config.augmentation)
    history = []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        data = simulate(tables, classes, config.per_epoch, prep, config.seed * 1000 + epoch, config.augmentation)
        loss = _epoch(model, optimiser, schedule, data, config.batch_size)
        accuracy = float((predict_logits(model, validation.x).argmax(1) == validation.y).mean())
        history.append({"epoch": epoch + 1, "loss": round(loss, 4), "sim_val_accuracy": round(accuracy, 4),
                        "seconds": round(time.perf_counter() - start, 1)})
        if log is not None:
            log(history[-1])
    library = references(tables, classes, prep) if config.references else None
    if library is not None:
        model.set_references(torch.from_numpy(library.x), torch.from_numpy(library.y))
    info = ModelInfo(
        name=config.name, task="pattern-classification", architecture="xrd-cnn",
        arch_params={"n_classes": len(classes), "length": prep.points, "widths": list(config.widths),
                     "kernels": list(config.kernels), "hidden": config.hidden, "dropout": config.dropout,
                     "n_references": 0 if library is None else len(library.y)},
        class_names=classes, normalisation=prep.to_dict(),
        description="space group of a thin-film XRD pattern (Cu Kα), trained on simulated patterns only",
        training={"data": "simulated", "compounds": sorted({t.name for t in tables}),
                  "references": [] if library is None else library.compounds,
                  "config": {k: v for k, v in asdict(config).items() if k not in ("prep",)}, "history": history})
    model.eval()
    path = save_model(model, info, directory) if register else Path("")
    return TrainResult(LoadedModel(info, model, "", path, torch.device("cpu")), history)


def _epoch(model: nn.Module, optimiser: torch.optim.Optimizer, schedule: Any, data: SimulatedSet,
           batch_size: int) -> float:
    model.train()
    order = np.random.default_rng(len(data.y)).permutation(len(data.y))
    x, y = torch.from_numpy(data.x[:, None]), torch.from_numpy(data.y.astype(np.int64))
    total = 0.0
    for i in range(0, len(order), batch_size):
        idx = torch.from_numpy(order[i: i + batch_size])
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.05)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        total += loss.item() * len(idx)
    model.eval()
    return total / len(order)


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, points) prepared patterns → (N, classes) logits, in eval mode."""
    model.eval()
    out = [model(torch.from_numpy(np.ascontiguousarray(x[i: i + batch_size, None]))).numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# -- evaluation on real patterns -----------------------------------------------------------------------


SCAN_WORDS = re.compile(r"[ _-]*(2-?theta|omega|gixr?d|again|test|3min|14 deg peak)", re.IGNORECASE)


def material_of(stem: str) -> str:
    """The film a file is a scan of: its stem less the scan-type words (``_2-Theta_Omega``,
    ``_GIXD``, ``_again``, …), so repeated scans of one film count as one material."""
    return SCAN_WORDS.sub("", stem).strip(" _-").lower() or stem.lower()


@dataclass
class Labelled:
    """Real patterns with their class: files, prepared inputs, class indices, materials."""

    paths: list[Path]
    x: np.ndarray
    y: np.ndarray
    materials: list[str]


def load_labelled(folder: str | Path, classes: Sequence[str], prep: Preparation) -> Labelled:
    """Every pattern under ``folder/<space group>/`` (``/`` in a symbol spelled ``-``)."""
    folder, classes = Path(folder), list(classes)
    paths, xs, ys = [], [], []
    for index, name in enumerate(classes):
        for path in sorted((folder / name.replace("/", "-")).glob("*.xy")):
            paths.append(path)
            xs.append(prepare(read_pattern(path), prep))
            ys.append(index)
    if not paths:
        raise ValueError(f"{folder}: no .xy patterns in sub-folders named after {', '.join(classes)}")
    return Labelled(paths, np.stack(xs), np.array(ys), [material_of(p.stem) for p in paths])


def scores(probabilities: np.ndarray, y: np.ndarray, classes: Sequence[str], top: int = 5) -> dict[str, Any]:
    """Top-1, top-``top`` and balanced accuracy (mean recall over the classes present), and the
    confusion matrix (rows: true class)."""
    ranked = np.argsort(-probabilities, axis=1)
    confusion = confusion_matrix(ranked[:, 0], y, len(classes))
    present = confusion.sum(axis=1) > 0
    recall = np.diag(confusion)[present] / confusion.sum(axis=1)[present]
    return {"n": int(len(y)), "top1": float((ranked[:, 0] == y).mean()),
            f"top{top}": float((ranked[:, :top] == y[:, None]).any(axis=1).mean()),
            "balanced": float(recall.mean()), "confusion": confusion.tolist(),
            "recall": {classes[i]: round(float(r), 4) for i, r in zip(np.flatnonzero(present), recall)}}


def by_material(probabilities: np.ndarray, y: np.ndarray, materials: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean class probabilities of each material's scans, and its class: one vote per film."""
    names = sorted(set(materials))
    index = np.array([names.index(m) for m in materials])
    probs = np.stack([probabilities[index == i].mean(axis=0) for i in range(len(names))])
    labels = np.array([np.bincount(y[index == i]).argmax() for i in range(len(names))])
    return probs, labels


def nearest_reference(x: np.ndarray, references: SimulatedSet, n_classes: int) -> np.ndarray:
    """The baseline: Pearson correlation of each pattern with every ideal simulated pattern; a
    class scores its best-correlated compound (as pseudo-probabilities, for the same metrics)."""
    def standard(a: np.ndarray) -> np.ndarray:
        a = a - a.mean(axis=1, keepdims=True)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    correlation = standard(x) @ standard(references.x).T
    best = np.full((len(x), n_classes), -1.0)
    for c in range(n_classes):
        members = references.y == c
        if members.any():
            best[:, c] = correlation[:, members].max(axis=1)
    e = np.exp(10 * best)
    return e / e.sum(axis=1, keepdims=True)
