"""Training the XRD classifier on simulated patterns, and the protocol that judges it on real ones.

:func:`train` fits an :class:`~napari_nanoclass.models.xrd_cnn.XrdCNN` on patterns drawn by
:func:`.simulate.simulate` — fresh ones every epoch, so the network never sees the same film twice,
or drawn from a pool simulated once (``XrdConfig.pool``, cheaper when many models are trained on
the same structures) — stores the compounds' ideal patterns with it (the nearest-reference half of
its predictions), and returns a registry-ready :class:`~napari_nanoclass.models.registry.LoadedModel`.
Its schedule is fixed in :class:`XrdConfig`; the only held-out data it looks at is simulated.

Given ``measured`` patterns as well (autoXRD's protocol), a fixed share of every epoch is new films
drawn from them by :func:`.augment.augment_measured`, classes balanced, and the measured patterns
join the reference library: the model then knows the films it was shown, not only the structures.

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
from napari_nanoclass.xrd.augment import MeasuredAugmentation, augment_measured
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
    pool: int = 0  # simulate this many patterns once and draw each epoch's from them (0: fresh every epoch)
    measured_fraction: float = 0.5  # share of each epoch drawn from the measured patterns, when there are any
    prep: Preparation = field(default_factory=Preparation)
    augmentation: Augmentation = field(default_factory=Augmentation)
    measured_augmentation: MeasuredAugmentation = field(default_factory=MeasuredAugmentation)


@dataclass
class TrainResult:
    model: LoadedModel
    history: list[dict[str, float]]


def train(tables: Sequence[PeakTable], classes: Sequence[str], config: XrdConfig, *, measured: Labelled | None = None,
          pool: SimulatedSet | None = None, register: bool = False, directory: Path | None = None,
          log: Any = None) -> TrainResult:
    """Train on simulated patterns of ``tables`` (and augmented ``measured`` ones, if given);
    ``pool`` is the pool :func:`simulated_pool` would draw for ``config`` (pass it to share one
    between runs). ``register`` saves the model under ``config.name`` (in ``directory``, default
    the user's model folder)."""
    torch.manual_seed(config.seed)
    prep, classes = config.prep, list(classes)
    if pool is None and config.pool:
        pool = simulated_pool(tables, classes, config)
    model = XrdCNN(len(classes), prep.points, config.widths, config.kernels, config.hidden, config.dropout)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * -(-config.per_epoch // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=steps, pct_start=0.15)
    validation = simulate(tables, classes, config.validation, prep, 10_000 + config.seed, config.augmentation)
    history = []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        data = epoch_data(tables, classes, config, epoch, measured, pool)
        loss = _epoch(model, optimiser, schedule, data, config.batch_size)
        accuracy = float((predict_logits(model, validation.x).argmax(1) == validation.y).mean())
        history.append({"epoch": epoch + 1, "loss": round(loss, 4), "sim_val_accuracy": round(accuracy, 4),
                        "seconds": round(time.perf_counter() - start, 1)})
        if log is not None:
            log(history[-1])
    library = reference_library(tables, classes, prep, measured) if config.references else None
    if library is not None:
        model.set_references(torch.from_numpy(library.x), torch.from_numpy(library.y))
    data_kind = "simulated" if measured is None else "simulated + measured"
    info = ModelInfo(
        name=config.name, task="pattern-classification", architecture="xrd-cnn",
        arch_params={"n_classes": len(classes), "length": prep.points, "widths": list(config.widths),
                     "kernels": list(config.kernels), "hidden": config.hidden, "dropout": config.dropout,
                     "n_references": 0 if library is None else len(library.y)},
        class_names=classes, normalisation=prep.to_dict(),
        description=f"space group of a thin-film XRD pattern (Cu Kα), trained on {data_kind} patterns",
        training={"data": data_kind, "compounds": sorted({t.name for t in tables}),
                  "measured": [] if measured is None else [p.name for p in measured.paths],
                  "references": [] if library is None else library.compounds,
                  "config": {k: v for k, v in asdict(config).items() if k not in ("prep",)}, "history": history})
    model.eval()
    path = save_model(model, info, directory) if register else Path("")
    return TrainResult(LoadedModel(info, model, "", path, torch.device("cpu")), history)


def simulated_pool(tables: Sequence[PeakTable], classes: Sequence[str], config: XrdConfig) -> SimulatedSet:
    """The ``config.pool`` simulated patterns a run with ``config`` draws its epochs from (a seed
    of their own, so runs of one seed on different measured folds share them)."""
    return simulate(tables, classes, config.pool, config.prep, 20_000 + config.seed, config.augmentation)


def epoch_data(tables: Sequence[PeakTable], classes: Sequence[str], config: XrdConfig, epoch: int,
               measured: Labelled | None, pool: SimulatedSet | None) -> SimulatedSet:
    """One epoch's training patterns: simulated (fresh, or drawn from ``pool``) and, with
    ``measured``, ``config.measured_fraction`` of them new films augmented from the measured ones."""
    rng = np.random.default_rng(config.seed * 1000 + epoch)
    n_measured = 0 if measured is None else int(round(config.per_epoch * config.measured_fraction))
    n_simulated = config.per_epoch - n_measured
    if pool is None:
        simulated = simulate(tables, classes, n_simulated, config.prep, config.seed * 1000 + epoch, config.augmentation)
    else:
        pick = rng.choice(len(pool.y), n_simulated, replace=n_simulated > len(pool.y))
        simulated = SimulatedSet(pool.x[pick], pool.y[pick])
    if measured is None or not n_measured:
        return simulated
    drawn = draw_measured(measured, n_measured, config.prep.grid, rng, config.measured_augmentation)
    return SimulatedSet(np.concatenate([simulated.x, drawn.x]), np.concatenate([simulated.y, drawn.y]))


def draw_measured(measured: Labelled, n: int, grid: np.ndarray, rng: np.random.Generator,
                  aug: MeasuredAugmentation) -> SimulatedSet:
    """``n`` new films augmented from ``measured``: a class uniformly among those present, then one
    of its films (material) uniformly, then one of that film's scans — so a class of one film
    counts as much as one of forty, and a film scanned four times as much as one scanned once."""
    materials = np.asarray(measured.materials)
    by_class = {int(c): sorted(set(materials[measured.y == c])) for c in np.unique(measured.y)}
    labels = np.array(sorted(by_class))[rng.integers(len(by_class), size=n)]
    x = np.empty((n, grid.size), np.float32)
    for i, c in enumerate(labels):
        films = by_class[int(c)]
        scans = np.flatnonzero(materials == films[rng.integers(len(films))])
        x[i] = augment_measured(measured.x[scans[rng.integers(len(scans))]], grid, rng, aug)
    return SimulatedSet(x, labels.astype(np.int64))


def reference_library(tables: Sequence[PeakTable], classes: Sequence[str], prep: Preparation,
                      measured: Labelled | None = None) -> SimulatedSet:
    """The nearest-reference library: each compound's ideal pattern, and the measured patterns
    (as they are) when training had them."""
    library = references(tables, classes, prep)
    if measured is None:
        return library
    return SimulatedSet(np.concatenate([library.x, measured.x]), np.concatenate([library.y, measured.y]),
                        library.compounds + [p.stem for p in measured.paths])


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

    def subset(self, keep: np.ndarray) -> Labelled:
        """The patterns where the boolean ``keep`` is true."""
        index = np.flatnonzero(keep)
        return Labelled([self.paths[i] for i in index], self.x[index], self.y[index],
                        [self.materials[i] for i in index])


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


def grouped_folds(data: Labelled, k: int, seed: int) -> np.ndarray:
    """Fold (0 … k-1) of each pattern, grouped by material and stratified by class: each class's
    films, shuffled by ``seed``, are dealt round the folds in turn (continuing where the previous
    class stopped, so the folds hold the same number of films, give or take one), and all scans
    of a film share its fold."""
    rng = np.random.default_rng(seed)
    materials = np.asarray(data.materials)
    fold: dict[str, int] = {}
    dealt = 0
    for c in np.unique(data.y):
        films = sorted(set(materials[data.y == c]) - set(fold))
        for film in rng.permutation(films):
            fold[str(film)] = dealt % k
            dealt += 1
    return np.array([fold[m] for m in data.materials])


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


def measured_recipe(**overrides: Any) -> XrdConfig:
    """The recipe of training with measured patterns as well as simulated ones:
    benchmarks/xrd_measured_cv.py judges it by cross-validation over films,
    benchmarks/train_default_xrd.py ships it. Shorter than the simulation-only schedule and drawn
    from a simulated pool, so that one model per fold and seed fits a CPU."""
    return XrdConfig(**{"epochs": 8, "per_epoch": 4000, "pool": 8000, "measured_fraction": 0.5,
                        "validation": 500, **overrides})
