"""XRD space-group identification: trained only on simulated patterns, judged on the 88 measured
thin-film patterns, against the nearest-neighbour baseline.

    python benchmarks/xrd.py [--data ../shared/data/xrd-thinfilm] [--seeds 0 1 2] [--epochs 12]
        [--out benchmarks/out/xrd] [--figures docs/images]

Protocol: the network is trained on patterns simulated from the structures in
``napari_nanoclass.xrd.structures`` (nothing measured); its recipe and schedule are fixed in
``XrdConfig`` and were checked only on simulated validation patterns. Every real pattern is then
classified once per training seed. Figures are given per pattern (88) and per material (the
scans of one film averaged, :func:`material_of`); mean ± standard deviation over the seeds. The
baseline correlates each real pattern with the ideal simulated pattern of every compound.
Also timed, on one CPU thread: one pattern read, prepared and classified by each trained network,
and the whole analysis (with class activation and peak evidence) by the shipped model.

A second protocol, added after the first evaluation had been seen: for each of two folds of
materials (each class's films alternating between them), the network, the baseline or the mean of
their probabilities — whichever has the best balanced accuracy on the *other* fold — judges the
fold's patterns. The shipped model predicts with the mean, which this chose in every fold.

Results go to ``--out`` as JSON (one file per seed, resumable) and ``summary.json``; the Markdown
table to stdout; the confusion matrices as ``--figures``/xrd_confusion.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_nanoclass.xrd.patterns import Preparation, prepare, read_pattern
from napari_nanoclass.xrd.simulate import peak_table, references
from napari_nanoclass.xrd.structures import COMPOUNDS, classes
from napari_nanoclass.xrd.train import (
    Labelled,
    XrdConfig,
    by_material,
    load_labelled,
    nearest_reference,
    predict_logits,
    scores,
    train,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "xrd-thinfilm"


def measured_setup(path: Path) -> tuple[list[str], Preparation, list, Labelled, np.ndarray]:
    """What every XRD benchmark starts from: the class names, the preparation, the simulated peak
    tables, the measured patterns under ``path`` and, for each pattern, the nearest simulated
    reference's probabilities (the baseline)."""
    names, prep = classes(), Preparation()
    tables = [peak_table(c) for c in COMPOUNDS]
    data = load_labelled(path, names, prep)
    return names, prep, tables, data, nearest_reference(data.x, references(tables, names, prep), len(names))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def evaluate(probabilities: np.ndarray, data, names: list[str]) -> dict:
    material_probs, material_y = by_material(probabilities, data.y, data.materials)
    return {"pattern": scores(probabilities, data.y, names), "material": scores(material_probs, material_y, names)}


def time_one(model: torch.nn.Module, path: Path, prep: Preparation, repeats: int = 50) -> float:
    """Median milliseconds to read, prepare and classify one pattern."""
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            x = prepare(read_pattern(path), prep)
            model(torch.from_numpy(x)[None, None])
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def material_folds(data) -> np.ndarray:
    """Fold (0 or 1) of each pattern: each class's materials, sorted by name, alternate between
    the folds, so both hold every class with more than one material and a film is in one fold."""
    fold = {}
    for c in sorted(set(data.y.tolist())):
        for i, m in enumerate(sorted({m for m, y in zip(data.materials, data.y) if y == c})):
            fold.setdefault(m, i % 2)
    return np.array([fold[m] for m in data.materials])


def nested_choice(candidates: dict[str, np.ndarray], data, names: list[str]) -> tuple[dict, list[str]]:
    """Each fold's patterns judged by the candidate with the best balanced accuracy on the *other*
    fold (a choice made on held-out materials, never on the patterns it is judged on)."""
    folds = material_folds(data)
    combined = np.zeros_like(next(iter(candidates.values())))
    chosen = []
    for f in (0, 1):
        choose, judge = folds != f, folds == f
        best = max(candidates, key=lambda k: scores(candidates[k][choose], data.y[choose], names)["balanced"])
        combined[judge] = candidates[best][judge]
        chosen.append(best)
    return evaluate(combined, data, names), chosen


def time_analysis(path: Path, repeats: int = 50) -> float:
    """Median milliseconds of the whole analysis of one file with the shipped model (read,
    prepare, classify, class activation and peak evidence), as ``nanoclass xrd`` runs it."""
    from napari_nanoclass.models.registry import load_model
    from napari_nanoclass.xrd import DEFAULT_MODEL
    from napari_nanoclass.xrd.predict import analyse

    model = load_model(DEFAULT_MODEL)
    analyse(path, model)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        analyse(path, model)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def confusion_figure(results: dict, names: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(results), 4.4), layout="constrained")
    for ax, (title, matrix) in zip(fig.subplots(1, len(results), squeeze=False)[0], results.items()):
        matrix = np.asarray(matrix)
        ax.imshow(matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(matrix):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color="white" if v > matrix[i].sum() / 2 else "black")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=XrdConfig.epochs)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "xrd")
    ap.add_argument("--figures", type=Path, default=ROOT / "docs" / "images")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    names, prep, tables, data, nn = measured_setup(args.data)
    baseline = evaluate(nn, data, names)
    runs = []
    for seed in args.seeds:
        cached = args.out / f"seed{seed}_epochs{args.epochs}.json"
        if cached.exists():
            runs.append(json.loads(cached.read_text()))
            continue
        start = time.perf_counter()
        result = train(tables, names, XrdConfig(name=f"xrd-bench-{seed}", seed=seed, epochs=args.epochs),
                       log=lambda row, seed=seed: print(f"seed {seed}: {row}", flush=True))
        probabilities = softmax(predict_logits(result.model.module, data.x))
        run = {"seed": seed, "train_seconds": round(time.perf_counter() - start, 1), "history": result.history,
               **evaluate(probabilities, data, names),
               "ms_per_pattern": round(time_one(result.model.module, data.paths[0], prep), 2),
               "predictions": [{"file": p.name, "true": names[t], "predicted": names[int(q.argmax())],
                                "confidence": round(float(q.max()), 4), "probabilities": np.round(q, 5).tolist()}
                               for p, t, q in zip(data.paths, data.y, probabilities)]}
        cached.write_text(json.dumps(run, indent=1))
        runs.append(run)
    summary = {"classes": names, "patterns": len(data.y), "materials": len(set(data.materials)),
               "baseline": baseline, "runs": runs, "ms_full_analysis": round(time_analysis(data.paths[0]), 2)}
    # a second protocol, added after the first evaluation: the CNN, the baseline or their mean,
    # chosen per fold of materials on the other fold
    nested = []
    for run in runs:
        cnn = np.array([p["probabilities"] for p in run["predictions"]])
        result, chosen = nested_choice({"cnn": cnn, "baseline": nn, "mean": (cnn + nn) / 2}, data, names)
        nested.append({"seed": run["seed"], "chosen": chosen, **result})
    summary["nested"] = nested
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = ["| method | level | top-1 | top-5 | balanced |", "|---|---|---|---|---|"]
    for level in ("pattern", "material"):
        b = baseline[level]
        lines.append(f"| nearest reference (baseline) | {level} (n={b['n']}) | {b['top1']:.3f} | {b['top5']:.3f} | "
                     f"{b['balanced']:.3f} |")
        lines.append(f"| XrdCNN, {len(runs)} seeds | {level} (n={b['n']}) | "
                     + " | ".join(mean_std([r[level][k] for r in runs]) for k in ("top1", "top5", "balanced")) + " |")
    for level in ("pattern", "material"):
        lines.append(f"| CNN / baseline / mean chosen on the other fold of materials | {level} | "
                     + " | ".join(mean_std([r[level][k] for r in nested]) for k in ("top1", "top5", "balanced"))
                     + " |")
    print("\n".join(lines))
    print("chosen per fold (fold 0, fold 1), per seed:", [r["chosen"] for r in nested])
    print(f"ms per pattern (read + prepare + classify, 1 thread): {mean_std([r['ms_per_pattern'] for r in runs])}; "
          f"whole analysis with activation and evidence (shipped model): {summary['ms_full_analysis']:.1f}")
    print("simulated validation accuracy, last epoch:", [r["history"][-1]["sim_val_accuracy"] for r in runs])
    confusion = np.sum([np.asarray(r["pattern"]["confusion"]) for r in runs], axis=0)
    chosen = np.sum([np.asarray(r["pattern"]["confusion"]) for r in nested], axis=0)
    confusion_figure({f"XrdCNN, {len(runs)} seeds pooled": confusion,
                      f"nearest reference baseline ({len(data.y)} patterns)": baseline["pattern"]["confusion"],
                      f"chosen on the other fold, {len(runs)} seeds pooled": chosen},
                     names, args.figures / "xrd_confusion.png")


if __name__ == "__main__":
    main()
