"""Many-split check of the default texture recipe with whole samples held out, from patch features
measured once per micrograph.

    python benchmarks/homogeneity_recipe_cv.py [--modes two three] [--seeds 3 4 ... 12] [--loso]

``benchmarks/homogeneity_cv.py --methods shipped`` refits the recipe per fold through
``fit_texture_model`` and judges each held-out micrograph through ``homogeneity.analyse``, which
measures the same patch features again for every fold: about 15 minutes per split seed on 2 CPU
cores. The recipe's verdicts depend only on the features of the whole grid patches (the region
head pools a micrograph's whole patches; every micrograph here has some), so this script measures
them once (cached in ``benchmarks/out/homogeneity/features-<set>.npz``) and then runs the same
steps per fold: :func:`choose_recipe` by leave-one-sample-out on the training fold, the region
regression fitted on :func:`region_examples` of the training micrographs at the chosen C, the
held-out micrographs judged on :func:`region_statistics` of their whole patches. That makes many
split seeds and leave-one-sample-out affordable. Where both were run it gives the same per-seed
accuracies and confusion matrices as ``homogeneity_cv.py`` (docs/homogeneity.md).

Splits: stratified 5-fold by sample (:func:`homogeneity.sample_name`, as ``homogeneity_cv.py
--group sample``) per seed, and with ``--loso`` one sample held out at a time.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold

from napari_nanoclass.homogeneity.texture import (
    CANDIDATE_FEATURE_SETS,
    choose_recipe,
    patch_feature_grid,
    patch_regression,
    region_examples,
)
from napari_nanoclass.homogeneity.train import MODE_CLASSES, Micrograph, Scores, micrographs_from_folders, sample_groups
from napari_nanoclass.models.texture_classifier import region_statistics

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "homogeneity"


def feature_grids(micrographs: Sequence[Micrograph], feature_set: str) -> list[np.ndarray]:
    """(rows, cols, F) whole-patch feature grid of each micrograph, cached by name: measuring them
    is the slow part and they do not depend on the split."""
    cache = OUT / f"features-{feature_set}.npz"
    stored = dict(np.load(cache)) if cache.exists() else {}
    missing = [m for m in micrographs if m.name not in stored]
    for m in missing:
        stored[m.name] = patch_feature_grid(m.image, 128, feature_set)
    if missing:
        OUT.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **stored)
    return [stored[m.name] for m in micrographs]


def splits(labels: np.ndarray, samples: np.ndarray, seed: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stratified 5-fold by sample with split seed ``seed`` (as ``homogeneity.train.cross_validate``),
    or one sample held out at a time when ``seed`` is None."""
    if seed is None:
        yield from LeaveOneGroupOut().split(labels, labels, samples)
    else:
        yield from StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed).split(
            np.zeros(len(labels)), labels, samples)


def nested_verdicts(grids: dict[str, list[np.ndarray]], labels: np.ndarray, samples: np.ndarray,
                    names: np.ndarray, seed: int | None) -> tuple[np.ndarray, list[str]]:
    """Held-out class of every micrograph, the recipe chosen on each training fold only, and the
    recipes chosen (``set C=c`` per fold)."""
    predicted, chosen = np.zeros(len(labels), int), []
    for train, test in splits(labels, samples, seed):
        recipe = choose_recipe({s: [g[i] for i in train] for s, g in grids.items()}, labels[train],
                               list(samples[train]), list(names[train]))
        fitted = [grids[recipe.feature_set][i] for i in train]
        head = patch_regression(recipe.c).fit(*region_examples(fitted, labels[train]))
        held_out = [grids[recipe.feature_set][i] for i in test]
        predicted[test] = head.predict(np.stack([region_statistics(g.reshape(-1, g.shape[-1])) for g in held_out]))
        chosen.append(f"{recipe.feature_set} C={recipe.c:g}")
    return predicted, chosen


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
    for mode in args.modes:
        micrographs = micrographs_from_folders(args.data, mode)
        grids = {s: feature_grids(micrographs, s) for s in CANDIDATE_FEATURE_SETS}
        labels = np.array([m.label for m in micrographs])
        names = np.array([m.name for m in micrographs])
        samples = np.array(sample_groups(micrographs))
        runs, chosen = [], []
        for seed in args.seeds:
            predicted, recipes = nested_verdicts(grids, labels, samples, names, seed)
            runs.append(Scores(MODE_CLASSES[mode], labels.tolist(), predicted.tolist()))
            chosen += recipes
        print(report(mode, f"5-fold by sample, seeds {args.seeds}", runs, chosen), flush=True)
        if args.loso:
            predicted, recipes = nested_verdicts(grids, labels, samples, names, None)
            loso = Scores(MODE_CLASSES[mode], labels.tolist(), predicted.tolist())
            print(report(mode, f"leave one sample out ({len(set(samples))} folds)", [loso], recipes), flush=True)
            wrong = [f"{n} ({sample})" for n, sample, t, p in zip(names, samples, labels, predicted) if t != p]
            print(f"  wrong: {', '.join(wrong)}", flush=True)


if __name__ == "__main__":
    main()
