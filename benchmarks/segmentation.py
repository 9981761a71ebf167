"""Segmentation recipes on the Drosophila VNC stack under the three-way protocol, over seeds.

    python benchmarks/segmentation.py [--seeds 0 1 2] [--rows baseline frem stack stack-frem self-train ...]
        [--epochs 45] [--iters 100] [--batch 16] [--lr 2e-3] [--width 12] [--device cuda]
        [--jobs 12] [--workers 1] [--threads 1] [--out benchmarks/out/segmentation] [--save-models DIR]

Protocol (``segmentation.data.DROSOPHILA_SPLIT``): train on sections 00-09; the epoch is chosen
on 10-12 (the best validation mIoU) and the decision offsets are fitted on the training sections;
then sections 13-15, which chose nothing, are segmented once through the tiling engine. The table
gives the test mIoU and per-class IoU as mean ± standard deviation over training seeds, beside the
validation mIoU (which made the choice, so it is optimistic).

Rows (same budget): U-Net + SE (baseline); without the deepest level (shallower); deep supervision
(λ = 0.4); channel dropout at rate B / channels; FREM (B, X scaled from the paper's B = 8 of 512
channels, X = 250); ``stack``: the baseline with the cross-stack augmentation (scale ±20 %, gamma,
blur, uneven illumination: ``--augmentation stack`` of ``nanoclass train-seg``); ``stack-frem``:
both; ``self-train``, ``self-train-stack``, ``self-train-frem`` and ``self-train-stack-frem``: the
``baseline``, ``stack``, ``frem`` and ``stack-frem`` rows with self-training on the 20 unlabelled sections of stack 2 (``unlabeled/``: a teacher
trained on 00-09 labels them where it is at least 90 % sure, and the reported student is trained
afresh on both; ``--unlabelled`` of ``nanoclass train-seg``). The table gives each self-training
row's teachers beside it: the same seeds, the same recipe without the unlabelled sections. A teacher
is the teacher row's run: trained first unless that row's record is cached (its network is then
read from ``--save-models``), and its pseudo-labels are cached beside its record, so students can
be trained on a machine that holds only the records and pseudo-labels. ``self-train-frem-ft``'s
student is not trained afresh: it is its ``frem`` teacher trained on for 3 epochs at a tenth of the
learning rate on the labelled and pseudo-labelled sections (the teacher's network must be in
``--save-models``). Each (row, seed) result is cached as JSON in
benchmarks/out/segmentation/ (delete to redo), so runs resume. ``--jobs`` trains that many
(row, seed) runs at once in separate processes (on a GPU, a small network leaves the card mostly
idle; the crops are made on the CPU), each with ``--workers`` crop-loading processes and
``--threads`` torch threads. ``--save-models`` keeps each run's network (safetensors, decision
offsets included) to compare or ship.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from napari_nanoclass.core.atomic import atomic_path
from napari_nanoclass.core.progress import Progress, run_sync
from napari_nanoclass.io.images import as_greyscale
from napari_nanoclass.models.registry import load_model, save_model
from napari_nanoclass.segmentation.data import (
    DROSOPHILA_CLASSES,
    DROSOPHILA_COLOURS,
    DROSOPHILA_SPLIT,
    Pair,
    drosophila_pairs,
    images_from_folder,
)
from napari_nanoclass.segmentation.train import (
    TrainConfig,
    TrainResult,
    evaluate,
    pseudo_label_steps,
    student_steps,
    train,
)

ROOT = Path(__file__).resolve().parent.parent


def rows(base: TrainConfig, frem_b: int, frem_x: float) -> dict[str, TrainConfig]:
    bottleneck = base.width * 2**base.depth
    frem = replace(base, frem_b=frem_b, frem_x=frem_x)
    return {
        "baseline": base,
        "shallower": replace(base, depth=base.depth - 1),
        "deep-supervision": replace(base, deep_supervision=True, aux_weight=0.4),
        "dropout": replace(base, dropout=frem_b / bottleneck),
        "frem": frem,
        "stack": replace(base, augmentation="stack"),
        "stack-frem": replace(frem, augmentation="stack"),
        "self-train": base,
        "self-train-stack": replace(base, augmentation="stack"),
        "self-train-frem": frem,
        "self-train-stack-frem": replace(frem, augmentation="stack"),
        "self-train-frem-ft": frem,
    }


TEACHERS = {"self-train": "baseline", "self-train-stack": "stack", "self-train-frem": "frem",
            "self-train-stack-frem": "stack-frem", "self-train-frem-ft": "frem"}  # a student shares its teacher's recipe
FROM_TEACHER = {"self-train-frem-ft"}  # rows whose student is its teacher fine-tuned, not a network trained afresh
FINE_TUNE_EPOCHS, FINE_TUNE_LR_FACTOR = 3, 0.1  # set before any figure, not chosen on one


def run_one(name: str, config: TrainConfig, seed: int, data: str, device: str | None, out: Path,
            workers: int = 0, models: Path | None = None) -> dict:
    """Train one row with one seed, choose on validation, score the test sections once; cached."""
    config = replace(config, seed=seed)
    run = f"{name}-seed{seed}-e{config.epochs}x{config.iters_per_epoch}-w{config.width}"
    cache = out / f"{run}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    pairs = {part: drosophila_pairs(data, stems) for part, stems in DROSOPHILA_SPLIT.items()}
    start = time.time()
    if name in TEACHERS:
        teacher_run = run.replace(name, TEACHERS[name], 1)
        teacher_record, teacher = _teacher(TEACHERS[name], teacher_run, config, pairs, device, out, workers, models)
        pseudo = _pseudo_labelled(teacher_run, teacher, Path(data) / "unlabeled", out, config.tile, device)
        if name in FROM_TEACHER:
            config = _from_teacher(config, models / f"{teacher_run}.safetensors" if models else None)
        steps = student_steps(pairs["train"], pairs["validation"], pseudo, config, device=device, workers=workers,
                              teacher_val_miou=max(teacher_record["val_miou_per_epoch"]))
        result = run_sync(steps, progress=lambda step: _log_epoch(run, start, step))
    else:
        result = train(pairs["train"], pairs["validation"], config, device=device, workers=workers,
                       progress=lambda step: _log_epoch(run, start, step))
    record = _scored(name, config, result, time.time() - start, pairs, device)
    if name in TEACHERS:
        record["teacher"] = teacher_record
    _keep(run, record, result, out, models)
    return record


def _from_teacher(config: TrainConfig, teacher: Path | None) -> TrainConfig:
    """The student of a :data:`FROM_TEACHER` row: the teacher's network (its file) trained on for
    ``FINE_TUNE_EPOCHS`` epochs at ``FINE_TUNE_LR_FACTOR`` times the rate, on the same images."""
    if teacher is None or not teacher.exists():
        raise SystemExit(f"{teacher}: a student fine-tuned from its teacher needs the teacher's network in "
                         "--save-models")
    return replace(config, epochs=FINE_TUNE_EPOCHS, patience=FINE_TUNE_EPOCHS, lr=config.lr * FINE_TUNE_LR_FACTOR,
                   init_from=str(teacher))


def _teacher(name: str, run: str, config: TrainConfig, pairs: dict[str, list], device: str | None, out: Path,
             workers: int, models: Path | None) -> tuple[dict, Callable[[], Any]]:
    """A self-training row's teacher: the run of the same recipe and seed, trained here and cached
    under its own row unless that row's record is cached already. Returns its record and a way to
    its network (loaded from ``models`` only if its pseudo-labels are not cached)."""
    cache = out / f"{run}.json"
    if cache.exists():
        def network() -> Any:
            path = models / f"{run}.safetensors" if models else None
            if path is None or not path.exists():
                raise SystemExit(f"{cache}: the teacher's record is cached but its network is not in --save-models "
                                 "and its pseudo-labels are not cached; delete the record to train it again")
            return load_model(path, device=device or "cpu")
        return json.loads(cache.read_text()), network
    start = time.time()
    teacher = train(pairs["train"], pairs["validation"], config, device=device, workers=workers,
                    progress=lambda step: _log_epoch(run, start, step))
    record = _scored(name, config, teacher, time.time() - start, pairs, device)
    _keep(run, record, teacher, out, models)
    return record, lambda: teacher


def _pseudo_labelled(teacher_run: str, teacher: Callable[[], Any], folder: Path, out: Path, tile: int,
                     device: str | None) -> list[Pair]:
    """The unlabelled sections with the teacher's pseudo-labels, cached beside its record (so the
    students of saved teachers can be trained where the teachers' networks are not)."""
    images = images_from_folder(folder)
    cache = out / f"{teacher_run}-pseudo-labels.npz"
    if cache.exists():
        with np.load(cache) as saved:
            return [Pair(as_greyscale(image, name), saved[name].astype(np.int64), name) for name, image in images]
    network = teacher()
    pseudo = run_sync(pseudo_label_steps(network.module, images, logit_bias=network.info.logit_bias, tile=tile,
                                         device=device))
    with atomic_path(cache) as partial:
        np.savez_compressed(partial, **{pair.name: pair.labels.astype(np.uint8) for pair in pseudo})
    return pseudo


def _scored(name: str, config: TrainConfig, result: TrainResult, seconds: float, pairs: dict[str, list],
            device: str | None) -> dict:
    """The run's record: its choice on validation and its one score on the test sections."""
    bias = result.info.logit_bias  # decision offsets fitted on the training sections
    calibrated = result.info.training.get("logit_adjustment", {}).get("val_miou", result.best_miou)
    test = evaluate(result.module, pairs["test"], DROSOPHILA_CLASSES, tile=config.tile, device=device, logit_bias=bias)
    return {"row": name, "seed": config.seed, "config": asdict(config), "seconds": round(seconds, 1),
            "best_epoch": max(result.history, key=lambda h: h["val_miou"])["epoch"],
            "val_miou": calibrated, "val_miou_per_epoch": [h["val_miou"] for h in result.history],
            "test_miou": test.miou, "test_iou": dict(zip(DROSOPHILA_CLASSES, map(float, test.iou))),
            "self_training": result.info.training.get("self_training")}


def _keep(run: str, record: dict, result: TrainResult, out: Path, models: Path | None) -> None:
    """Cache the record as JSON and, with ``models``, keep the network."""
    if models is not None:
        save_model(result.module, result.info, models, filename=f"{run}.safetensors", register=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{run}.json").write_text(json.dumps(record, indent=1))


def _log_epoch(run: str, start: float, step: Progress) -> None:
    if step.metrics and "val_miou" in step.metrics:
        print(f"[{time.time() - start:6.0f} s] {run}: {step.message}", flush=True)


def _process_setup(threads: int | None) -> None:
    """Each run's process: its torch threads, and cuDNN's kernels chosen by timing (every training
    batch and validation tile has the same shape, so each choice is timed once and reused)."""
    if threads:
        torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True


def _spread(values: list[float]) -> str:
    return f"{np.mean(values):.1%} ± {np.std(values):.1%}"


def table(records: list[dict]) -> str:
    """Markdown: one line per row, mean ± standard deviation over its seeds."""
    by_row: dict[str, list[dict]] = {}
    for r in records:
        by_row.setdefault(r["row"], []).append(r)
    lines = ["| row | seeds | test mIoU | " + " | ".join(f"test {c}" for c in DROSOPHILA_CLASSES)
             + " | validation mIoU (chose the epoch) | best epochs |", "|" + "---|" * (len(DROSOPHILA_CLASSES) + 5)]
    for name, runs in [*by_row.items(), *((f"{row}: their teachers", [r["teacher"] for r in runs])
                                          for row, runs in by_row.items() if row in TEACHERS)]:
        lines.append(f"| {name} | {len(runs)} | **{_spread([r['test_miou'] for r in runs])}** | "
                     + " | ".join(_spread([r["test_iou"][c] for r in runs]) for c in DROSOPHILA_CLASSES)
                     + f" | {_spread([r['val_miou'] for r in runs])} | {', '.join(str(r['best_epoch']) for r in runs)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/drosophila-vnc"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=45)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=12)
    ap.add_argument("--frem-b", type=int, default=None, help="default: 8/512 of the bottleneck channels")
    ap.add_argument("--frem-x", type=float, default=250.0)
    ap.add_argument("--rows", nargs="*", default=["baseline", "frem", "stack", "stack-frem"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--jobs", type=int, default=1, help="(row, seed) runs trained at once, one process each")
    ap.add_argument("--workers", type=int, default=0, help="crop-loading processes per run")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "segmentation"), help="result cache")
    ap.add_argument("--save-models", default=None, help="folder for each run's model")
    args = ap.parse_args()
    base = TrainConfig(name="drosophila-seunet", class_names=DROSOPHILA_CLASSES, class_colours=DROSOPHILA_COLOURS,
                       pixel_size_nm=4.6, width=args.width, depth=4, epochs=args.epochs,
                       iters_per_epoch=args.iters, batch_size=args.batch, lr=args.lr, patience=args.epochs,
                       tile=1024)
    frem_b = args.frem_b or max(1, round(8 / 512 * base.width * 2**base.depth))
    configs = rows(base, frem_b, args.frem_x)
    unknown = set(args.rows) - set(configs)
    if unknown:
        ap.error(f"unknown rows {sorted(unknown)}; choose from {', '.join(configs)}")
    runs = [(name, configs[name], seed, args.data, args.device, Path(args.out), args.workers,
             Path(args.save_models) if args.save_models else None) for name in args.rows for seed in args.seeds]
    pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_process_setup,
                               initargs=(args.threads,))
    records = []
    for record in pool.map(run_one, *zip(*runs)):
        records.append(record)
        print(f"{record['row']} seed {record['seed']}: test mIoU {record['test_miou']:.3f} (validation "
              f"{record['val_miou']:.3f}, epoch {record['best_epoch']}, {record['seconds']:.0f} s)", flush=True)
    print(f"\nbudget: {args.epochs} epochs × {args.iters} iterations, batch {args.batch}, lr {args.lr:g}, crop 256, "
          f"width {args.width}, FREM B={frem_b} X={args.frem_x:g}\n")
    print(table(records))


if __name__ == "__main__":
    main()
