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
Also timed: one pattern (read, prepare, classify) on one CPU thread.

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


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def confusion_figure(results: dict, names: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.4), layout="constrained")
    for ax, (title, matrix) in zip(fig.subplots(1, 2), results.items()):
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
    names, prep = classes(), Preparation()
    tables = [peak_table(c) for c in COMPOUNDS]
    data = load_labelled(args.data, names, prep)
    baseline = evaluate(nearest_reference(data.x, references(tables, names, prep), len(names)), data, names)
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
                                "confidence": round(float(q.max()), 4)}
                               for p, t, q in zip(data.paths, data.y, probabilities)]}
        cached.write_text(json.dumps(run, indent=1))
        runs.append(run)
    summary = {"classes": names, "patterns": len(data.y), "materials": len(set(data.materials)),
               "baseline": baseline, "runs": runs}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = ["| method | level | top-1 | top-5 | balanced |", "|---|---|---|---|---|"]
    for level in ("pattern", "material"):
        b = baseline[level]
        lines.append(f"| nearest reference (baseline) | {level} (n={b['n']}) | {b['top1']:.3f} | {b['top5']:.3f} | "
                     f"{b['balanced']:.3f} |")
        lines.append(f"| XrdCNN, {len(runs)} seeds | {level} (n={b['n']}) | "
                     + " | ".join(mean_std([r[level][k] for r in runs]) for k in ("top1", "top5", "balanced")) + " |")
    print("\n".join(lines))
    print(f"ms per pattern (read + prepare + classify, 1 thread): {mean_std([r['ms_per_pattern'] for r in runs])}")
    print("simulated validation accuracy, last epoch:", [r["history"][-1]["sim_val_accuracy"] for r in runs])
    confusion = np.sum([np.asarray(r["pattern"]["confusion"]) for r in runs], axis=0)
    confusion_figure({f"XrdCNN, {len(runs)} seeds pooled ({len(runs)}×{len(data.y)} patterns)": confusion,
                      "nearest reference baseline (88 patterns)": baseline["pattern"]["confusion"]},
                     names, args.figures / "xrd_confusion.png")


if __name__ == "__main__":
    main()
