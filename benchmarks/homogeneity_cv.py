"""Cross-validated comparison for SEM homogeneity, two- and three-class: the shipped recipe (the
feature set and regularisation chosen inside each training fold, so the figure is nested) against
fixed texture and morphology recipes and the fibre CNN (patch labels vs multiple-instance).

    python benchmarks/homogeneity_cv.py [--data ../shared/data/nanofiber-sem] [--group sample|micrograph]
        [--methods shipped texture morphology baseline instance mil] [--modes two three] [--seeds 0 1 2]

The headline protocol is ``--group sample``: stratified 5-fold cross-validation with every
micrograph of a sample (:func:`homogeneity.sample_name`) on one side, repeated over split seeds;
the table gives the mean and spread over seeds. ``--group micrograph`` puts micrographs of one
sample on both sides (optimistic: the class almost follows the sample). Only ``shipped`` chooses
anything, and it chooses on its training folds; the fixed recipes are settings of earlier
versions, shown for comparison.

Models are judged through ``homogeneity.analyse``, as a user's images are. Each (method, mode,
group, seed) result is cached as JSON in ``benchmarks/out/homogeneity/`` (delete to redo), so an
interrupted run resumes; the Markdown table of all cached results goes to stdout and ``--table FILE``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from napari_nanoclass.homogeneity.texture import texture_classifier
from napari_nanoclass.homogeneity.train import (
    MODE_CLASSES,
    HomogeneityConfig,
    cnn_classifier,
    cross_validate,
    micrographs_from_folders,
    sample_groups,
)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "homogeneity"
TEXTURE = {
    "shipped": {},  # the default recipe: feature set and C chosen on the training fold
    "texture": {"feature_set": "extended", "c": 1.0},  # the recipe shipped before fibre morphology
    "morphology": {"feature_set": "morphology", "c": 0.1},
    "baseline": {"feature_set": "basic", "pooling": "mean", "c": 1.0},
}
NAMES = {"shipped": "shipped recipe: morphology or texture, C chosen inside the fold (nested)",
         "texture": "texture (extended) + region regression, C = 1",
         "morphology": "fibre morphology + region regression, C = 0.1",
         "baseline": "texture + logistic regression, patch mean (baseline)"}


def run_one(method: str, mode: str, seed: int, args: argparse.Namespace) -> dict:
    settings = "" if method in TEXTURE else f"-{args.steps}-{args.head}-d{args.dropout}"
    cache = OUT / f"{method}-{mode}-{args.group}-seed{seed}{settings}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    micrographs = micrographs_from_folders(args.data, mode)
    groups = sample_groups(micrographs) if args.group == "sample" else None
    if method in TEXTURE:
        fit = texture_classifier(**TEXTURE[method])
    else:
        fit = cnn_classifier(HomogeneityConfig(mode=mode, strategy=method, steps=args.steps, head=args.head,
                                               dropout=args.dropout, seed=seed))
    start = time.perf_counter()
    scores = cross_validate(micrographs, fit, MODE_CLASSES[mode], folds=5, seed=seed, groups=groups,
                            on_fold=lambda f, s: print(f"  {method}/{mode} seed {seed} fold {f}: "
                                                       f"{s.as_dict()['accuracy']:.3f}", flush=True))
    result = {"method": method, "mode": mode, "group": args.group, "seed": seed, "steps": args.steps,
              "head": args.head, "seconds": round(time.perf_counter() - start, 1), **scores.as_dict()}
    OUT.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=1))
    return result


def _spread(values: list[float], percent: bool = True) -> str:
    mean, sd = float(np.mean(values)), float(np.std(values))
    return f"{mean:.1%} ± {sd:.1%}" if percent else f"{mean:.3f} ± {sd:.3f}"


def table(results: list[dict]) -> str:
    """One row per (group, mode, method, CNN settings): mean ± standard deviation over split seeds,
    per-class recall and the confusion summed over seeds."""
    rows: dict[tuple, list[dict]] = {}
    for r in results:
        rows.setdefault((r["group"], r["mode"], r["method"], r.get("head", "")), []).append(r)
    lines = ["| split | method | classes | seeds | accuracy | balanced accuracy | macro F1 | recall per class "
             "| confusion, summed over seeds (rows true) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (group, mode, method, head), runs in rows.items():
        recalls = {c: [r["per_class"][c]["recall"] for r in runs] for c in runs[0]["per_class"]}
        balanced = [float(np.mean([r["per_class"][c]["recall"] for c in r["per_class"]])) for r in runs]
        confusion = np.sum([r["confusion"] for r in runs], axis=0).tolist()
        name = NAMES.get(method, f"FibreCNN ({head}), {method}, {runs[0]['steps']} steps")
        per = "; ".join(f"{c} {np.mean(v):.2f}" for c, v in recalls.items())
        lines.append(f"| by {group} | {name} | {mode} | {len(runs)} | {_spread([r['accuracy'] for r in runs])} "
                     f"| {_spread(balanced)} | {_spread([r['macro_f1'] for r in runs], False)} | {per} | {confusion} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nanofiber-sem"))
    ap.add_argument("--methods", nargs="+", default=["shipped", "texture", "morphology", "baseline"],
                    choices=[*TEXTURE, "instance", "mil"])
    ap.add_argument("--modes", nargs="+", default=["two", "three"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="split seeds (and CNN training seeds)")
    ap.add_argument("--steps", type=int, default=200, help="CNN training steps of 32 patches per fold")
    ap.add_argument("--head", default="fc", choices=["fc", "gap"])
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--group", default="sample", choices=["sample", "micrograph"])
    ap.add_argument("--table", help="also write the Markdown table to this file")
    args = ap.parse_args()
    for mode in args.modes:
        for method in args.methods:
            for seed in args.seeds:
                run_one(method, mode, seed, args)
    # the table holds every cached result, so runs with other settings add rows
    cached = [json.loads(p.read_text()) for p in OUT.glob("*-seed*.json")]
    order = {"sample": 0, "micrograph": 1, "two": 0, "three": 1, **{m: i for i, m in enumerate([*TEXTURE, "instance", "mil"])}}
    text = table(sorted(cached, key=lambda r: (order[r["group"]], order[r["mode"]], order[r["method"]],
                                               r.get("head", ""), r["seed"])))
    print(text)
    if args.table:
        Path(args.table).write_text(text + "\n")


if __name__ == "__main__":
    main()
