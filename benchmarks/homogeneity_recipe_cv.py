"""Many-split check of the default texture recipe with whole samples held out, from patch features
measured once per micrograph.

    python benchmarks/homogeneity_recipe_cv.py [--modes two three] [--seeds 3 4 ... 12] [--loso]

``benchmarks/homogeneity_cv.py --methods shipped`` measures every micrograph's patch features again
in every fold. This script runs the same cross-validation (:func:`homogeneity.train.cross_validate`
with :func:`texture_classifier`: :func:`choose_recipe` by leave-one-sample-out on the training
fold, the model fitted at the chosen recipe, the held-out micrographs judged as ``analyse`` judges
them) with a :class:`FeatureCache` (``benchmarks/out/homogeneity/features/``), so each micrograph's
features are measured once for all folds, seeds and recipes. That makes many split seeds and
leave-one-sample-out affordable; the verdicts are those of ``homogeneity_cv.py`` (docs/homogeneity.md).

Splits: stratified 5-fold by sample (:func:`homogeneity.sample_name`, as ``homogeneity_cv.py
--group sample``) per seed, and with ``--loso`` one sample held out at a time.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_nanoclass.homogeneity.texture import FeatureCache, texture_classifier
from napari_nanoclass.homogeneity.train import (
    MODE_CLASSES,
    Micrograph,
    Scores,
    cross_validate,
    micrographs_from_folders,
    sample_groups,
)
from napari_nanoclass.models.registry import LoadedModel

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "homogeneity"


def nested_run(micrographs: Sequence[Micrograph], mode: str, features: FeatureCache, seed: int | None
               ) -> tuple[Scores, list[str]]:
    """Held-out verdicts of every micrograph (5-fold by sample with split seed ``seed``, or one
    sample held out at a time when None), the recipe chosen on each training fold only, and the
    recipes chosen (``set C=c`` per fold)."""
    chosen: list[str] = []

    def record(fold: int, model: LoadedModel) -> None:
        recipe = model.info.training["recipe"]
        chosen.append(f"{recipe['feature_set']} C={recipe['C']:g}")

    scores = cross_validate(micrographs, texture_classifier(features=features, on_fit=record), MODE_CLASSES[mode],
                            folds=None if seed is None else 5, seed=seed or 0, groups=sample_groups(micrographs))
    return scores, chosen


def report(mode: str, label: str, runs: list[Scores], chosen: list[str]) -> str:
    """One line: accuracy mean ± sd over the runs, each run's accuracy, balanced accuracy, the
    confusion summed over runs and how often each recipe was chosen."""
    scores = [r.as_dict() for r in runs]
    accuracy = [s["accuracy"] for s in scores]
    balanced = [np.mean([c["recall"] for c in s["per_class"].values()]) for s in scores]
    confusion = np.sum([s["confusion"] for s in scores], axis=0).tolist()
    return (f"{mode} | {label} | {np.mean(accuracy):.1%} ± {np.std(accuracy):.1%} | balanced "
            f"{np.mean(balanced):.1%} ± {np.std(balanced):.1%} | per run {[round(a, 3) for a in accuracy]} | "
            f"{confusion} | {dict(Counter(chosen).most_common())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nanofiber-sem"))
    ap.add_argument("--modes", nargs="+", default=["two", "three"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="split seeds of the 5-fold runs")
    ap.add_argument("--loso", action="store_true", help="also hold out one sample at a time")
    args = ap.parse_args()
    features = FeatureCache(OUT / "features")
    for mode in args.modes:
        micrographs = micrographs_from_folders(args.data, mode)
        samples = sample_groups(micrographs)
        runs, chosen = [], []
        for seed in args.seeds:
            scores, recipes = nested_run(micrographs, mode, features, seed)
            runs.append(scores)
            chosen += recipes
        print(report(mode, f"5-fold by sample, seeds {args.seeds}", runs, chosen), flush=True)
        if args.loso:
            loso, recipes = nested_run(micrographs, mode, features, None)
            print(report(mode, f"leave one sample out ({len(set(samples))} folds)", [loso], recipes), flush=True)
            wrong = {n for n, t, p in zip(loso.names, loso.y_true, loso.y_pred) if t != p}
            print(f"  wrong: {', '.join(f'{m.name} ({s})' for m, s in zip(micrographs, samples) if m.name in wrong)}",
                  flush=True)


if __name__ == "__main__":
    main()
