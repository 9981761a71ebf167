"""Cross-validated comparison for SEM homogeneity: fibre CNN (patch labels vs multiple-instance) vs
the texture models, two- and three-class, by micrograph (grouped stratified 5-fold).

    python benchmarks/homogeneity_cv.py [--data ../shared/data/nanofiber-sem] [--steps 150]
        [--methods baseline texture instance mil] [--modes two three] [--group micrograph|sample]

``baseline`` is the simple texture baseline (basic features, patch regression, mean of patch
probabilities); ``texture`` the shipped texture model (extended features, region regression).
Texture models are judged through ``homogeneity.analyse``, as a user's images are.

Each (method, mode) result is cached as JSON in ``benchmarks/out/homogeneity/`` (delete to redo),
so an interrupted run resumes; the Markdown table of all cached results goes to stdout and
``--table FILE``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

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
TEXTURE = {"baseline": {"feature_set": "basic", "pooling": "mean"}, "texture": {}}  # {} = the shipped recipe
NAMES = {"baseline": "texture + logistic regression (baseline)",
         "texture": "texture (extended) + region regression (shipped)"}


def run_one(method: str, mode: str, args: argparse.Namespace) -> dict:
    settings = "" if method in TEXTURE else f"-{args.steps}-{args.head}-d{args.dropout}"
    cache = OUT / f"{method}-{mode}-{args.group}{settings}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    micrographs = micrographs_from_folders(args.data, mode)
    groups = sample_groups(micrographs) if args.group == "sample" else None
    if method in TEXTURE:
        fit = texture_classifier(**TEXTURE[method])
    else:
        fit = cnn_classifier(HomogeneityConfig(mode=mode, strategy=method, steps=args.steps, head=args.head,
                                               dropout=args.dropout))
    start = time.perf_counter()
    scores = cross_validate(micrographs, fit, MODE_CLASSES[mode], folds=5, groups=groups,
                            on_fold=lambda f, s: print(f"  {method}/{mode} fold {f}: {s.as_dict()['accuracy']:.3f}",
                                                       flush=True))
    result = {"method": method, "mode": mode, "group": args.group, "steps": args.steps, "head": args.head,
              "seconds": round(time.perf_counter() - start, 1), **scores.as_dict()}
    OUT.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=1))
    return result


def table(results: list[dict]) -> str:
    lines = ["| method | classes | training steps | accuracy | macro F1 | per class: precision / recall / F1 "
             "| confusion (rows true) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        per = "; ".join(f"{c} {v['precision']:.2f}/{v['recall']:.2f}/{v['f1']:.2f}" for c, v in r["per_class"].items())
        name = NAMES.get(r["method"], f"FibreCNN ({r['head']}), {r['method']}")
        steps = "–" if r["method"] in TEXTURE else r["steps"]
        lines.append(f"| {name} | {r['mode']} | {steps} | {r['accuracy']:.1%} | {r['macro_f1']:.3f} | {per} | {r['confusion']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nanofiber-sem"))
    ap.add_argument("--methods", nargs="+", default=["baseline", "texture", "instance", "mil"])
    ap.add_argument("--modes", nargs="+", default=["two", "three"])
    ap.add_argument("--steps", type=int, default=200, help="training steps of 32 patches per fold")
    ap.add_argument("--head", default="fc", choices=["fc", "gap"])
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--group", default="micrograph", choices=["micrograph", "sample"])
    ap.add_argument("--table", help="also write the Markdown table to this file")
    args = ap.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    for mode in args.modes:
        for method in args.methods:
            run_one(method, mode, args)
    # the table holds every cached result, so runs with other settings (e.g. --head gap) add rows
    cached = [json.loads(p.read_text()) for p in OUT.glob("*.json")]
    order = {"two": 0, "three": 1, "baseline": 0, "texture": 1, "instance": 2, "mil": 3}
    text = table(sorted(cached, key=lambda r: (r["group"], order[r["mode"]], order[r["method"]], r.get("head", ""))))
    print(text)
    if args.table:
        Path(args.table).write_text(text + "\n")


if __name__ == "__main__":
    main()
