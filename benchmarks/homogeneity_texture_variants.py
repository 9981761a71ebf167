"""Can richer texture features lift the SEM baseline past 90 % two-class accuracy by micrograph?

Per 128² patch, three feature families: ``base`` (the simple baseline's GLCM at 1–8 px + LBP,
``models.texture_classifier.patch_features``), ``far`` (GLCM at 16 and 32 px, LBP with 16 neighbours at
radius 6, grey-level quantiles: structure at fibre-spacing scale) and ``hessian`` (blob and ridge
strength from Hessian eigenvalues at σ = 1–16 px, scale-normalised: beads are blobs, fibres
ridges). Patch logistic regression, micrograph = mean of its patch probabilities, as the baseline.

Reports, for every (families, C): accuracy over ``--repeats`` grouped stratified 5-fold splits
with different shuffles (mean ± sd), then a nested CV that picks (families, C) inside each
training fold — the honest figure, since picking the best row of the first table on the same 66
micrographs flatters it — and the micrographs the baseline misses in every repeat.

With ``--pooling`` it asks instead whether the baseline's features do better when a micrograph's
patches are pooled differently: the mean (as the baseline), the 75th percentile, the mean of the top
quarter or the fraction of patches called NHNF, each with patch labels as the baseline's or refined the
multiple-instance way (mi-SVM style: after a first fit, only the half or quarter of each NHNF
training micrograph's patches that look most defective stay labelled NHNF, and the model is refitted).

With ``--fibre-width`` it asks whether measuring the fibres helps where texture fails: a fibre mask
(local threshold), its skeleton and distance transform give each patch's fibre widths relative to
the micrograph's median width (beads are places several times wider than the fibre they sit on);
and the baseline's features measured after rescaling each micrograph to a common median fibre
width (8 px), so that magnification no longer changes the texture.

With ``--region`` it asks how a micrograph's verdict does when a second regression judges the
statistics of its patch features (mean, spread, percentiles) instead of averaging patch verdicts
— the shipped texture model's region head: which features and statistics (with a nested CV that
chooses them and C inside each training fold), whether training windows help it judge views
smaller than a micrograph, and how it does when whole samples (file-name prefixes) are held out.

    python benchmarks/homogeneity_texture_variants.py [--data ../shared/data/nanofiber-sem] [--repeats 10]
        [--pooling | --fibre-width | --region]

Patch features are cached in benchmarks/out/homogeneity/texture-variants.npz (about 80 s to build)
and fibre-width.npz (about 30 s).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import graycomatrix, graycoprops, hessian_matrix, hessian_matrix_eigvals, local_binary_pattern
from skimage.filters import gaussian, threshold_local
from skimage.morphology import skeletonize
from skimage.transform import rescale
from sklearn.model_selection import StratifiedGroupKFold

from napari_nanoclass.homogeneity.texture import (
    image_patch_features,
    patch_origins,
    patch_regression,
    quantise,
    region_examples,
)
from napari_nanoclass.homogeneity.train import Micrograph, micrographs_from_folders, sample_groups
from napari_nanoclass.io.images import image_stats
from napari_nanoclass.models.texture_classifier import ANGLES, LEVELS, region_statistics

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "out" / "homogeneity" / "texture-variants.npz"
WIDTH_CACHE = CACHE.with_name("fibre-width.npz")
PATCH = 128
FAMILIES = (("base",), ("base", "far"), ("base", "hessian"), ("base", "far", "hessian"))
C_VALUES = (1.0, 10.0, 100.0)


def far_features(image: np.ndarray) -> np.ndarray:
    """(patches, 31): long-range GLCM, wide LBP and grey-level quantiles per grid patch."""
    q = quantise(image)
    rows = []
    for y, x in patch_origins(q.shape, PATCH):
        p = q[y:y + PATCH, x:x + PATCH]
        glcm = graycomatrix(p, (16, 32), ANGLES, levels=LEVELS, symmetric=True, normed=True)
        parts = [graycoprops(glcm, prop).mean(axis=1) for prop in ("contrast", "homogeneity", "energy", "correlation")]
        codes = local_binary_pattern(p, 16, 6.0, method="uniform")
        parts.append(np.bincount(codes.astype(np.int64).ravel(), minlength=18) / codes.size)
        parts.append(np.percentile(p, [5, 25, 50, 75, 95]) / LEVELS)
        rows.append(np.concatenate(parts))
    return np.stack(rows)


def hessian_features(image: np.ndarray) -> np.ndarray:
    """(patches, 25): per σ, mean and upper percentiles of bright-blob and bright-ridge strength."""
    mean, std = image_stats(image)
    z = (np.asarray(image, np.float32) - mean) / std
    maps = []
    for sigma in (1, 2, 4, 8, 16):
        high, low = hessian_matrix_eigvals(hessian_matrix(z, sigma=sigma, order="rc", use_gaussian_derivatives=False))
        # bright blob: both eigenvalues negative, the weaker one measures it; bright ridge: the stronger one
        maps.append((np.clip(-high, 0, None) * sigma**2, np.clip(-low, 0, None) * sigma**2))
    rows = []
    for y, x in patch_origins(z.shape, PATCH):
        row = []
        for blob, ridge in maps:
            b, r = blob[y:y + PATCH, x:x + PATCH], ridge[y:y + PATCH, x:x + PATCH]
            row += [b.mean(), np.percentile(b, 99), np.percentile(b, 90), r.mean(), np.percentile(r, 90)]
        rows.append(row)
    return np.asarray(rows)


class FibreWidths(NamedTuple):
    """A micrograph's fibres: mask, local width (2 × distance to the background, px), skeletons,
    and the median width along them (at least 1 px)."""

    mask: np.ndarray
    width: np.ndarray
    skeleton: np.ndarray
    median: float


def fibre_widths(image: np.ndarray) -> FibreWidths:
    """Measure the fibres. A local threshold, because fibres deeper in the mat are darker than the
    background next to the top ones."""
    smooth = gaussian(np.asarray(image, np.float32), 1.5)
    mask = ndi.binary_opening(smooth > threshold_local(smooth, 61), iterations=1)
    width = 2 * ndi.distance_transform_edt(mask)
    skeleton = skeletonize(mask)
    return FibreWidths(mask, width, skeleton, max(float(np.median(width[skeleton])), 1.0) if skeleton.any() else 1.0)


def fibre_width_features(fibres: FibreWidths) -> np.ndarray:
    """(patches, 10): per grid patch, skeleton widths relative to the micrograph's median (median,
    90th, 99th percentile, max, share wider than 1.5× and 2×), regions more than twice as wide,
    fibre area share, mean relative width over the fibres, and log median width (magnification)."""
    relative = fibres.width / fibres.median
    rows = []
    for y, x in patch_origins(fibres.mask.shape, PATCH):
        cut = np.s_[y:y + PATCH, x:x + PATCH]
        r, m, s = relative[cut], fibres.mask[cut], fibres.skeleton[cut]
        w = r[s] if s.any() else np.ones(1)
        rows.append([*np.percentile(w, [50, 90, 99]), w.max(), np.mean(w > 1.5), np.mean(w > 2.0),
                     ndi.label(r > 2.0)[1], m.mean(), r[m].mean() if m.any() else 0.0, np.log(fibres.median)])
    return np.asarray(rows)


def scale_normalised_features(image: np.ndarray, median_width: float, target: float = 8.0) -> np.ndarray:
    """The baseline's patch features after rescaling the micrograph to a median fibre width of ``target`` px."""
    scaled = rescale(np.asarray(image, np.float32), target / median_width, anti_aliasing=True, preserve_range=True)
    return image_patch_features(scaled, PATCH)


def _micrographs_of(data: str, names: list[str]) -> list[Micrograph]:
    """The two-class micrographs, checked to be those the feature cache was built from."""
    micrographs = micrographs_from_folders(data, "two")
    if [m.name for m in micrographs] != names:
        raise RuntimeError(f"{CACHE} was built from other micrographs; delete it")
    return micrographs


def load_width_features(data: str, names: list[str]) -> dict[str, list[np.ndarray]]:
    """Per micrograph: fibre-width patch features and scale-normalised baseline features (cached)."""
    if not WIDTH_CACHE.exists():
        micrographs = _micrographs_of(data, names)
        arrays = {}
        for i, m in enumerate(micrographs):
            fibres = fibre_widths(m.image)  # measured once, used by both feature sets
            arrays[f"width_{i}"] = fibre_width_features(fibres)
            arrays[f"normalised_{i}"] = scale_normalised_features(m.image, fibres.median)
        np.savez(WIDTH_CACHE, **arrays)
    z = np.load(WIDTH_CACHE, allow_pickle=False)
    return {f: [z[f"{f}_{i}"] for i in range(len(names))] for f in ("width", "normalised")}


def load_features(data: str) -> tuple[list[str], np.ndarray, dict[str, list[np.ndarray]]]:
    """Micrograph names, two-class labels and per-family patch features (cached)."""
    if CACHE.exists():
        z = np.load(CACHE, allow_pickle=False)
        names = list(z["names"])
        return names, z["labels"], {f: [z[f"{f}_{i}"] for i in range(len(names))] for f in ("base", "far", "hessian")}
    micrographs = micrographs_from_folders(data, "two")
    feats = {"base": [image_patch_features(m.image) for m in micrographs],
             "far": [far_features(m.image) for m in micrographs],
             "hessian": [hessian_features(m.image) for m in micrographs]}
    names, labels = [m.name for m in micrographs], np.array([m.label for m in micrographs])
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE, names=np.array(names), labels=labels,
             **{f"{f}_{i}": a for f, arrays in feats.items() for i, a in enumerate(arrays)})
    return names, labels, feats


def micrograph_probabilities(x: list[np.ndarray], y: np.ndarray, train: np.ndarray, test: np.ndarray,
                             c: float) -> np.ndarray:
    """Patch LR on the training micrographs; (test micrographs, classes) mean patch probabilities."""
    xt = np.concatenate([x[i] for i in train])
    yt = np.concatenate([np.full(len(x[i]), y[i]) for i in train])
    model = patch_regression(c, max_iter=3000).fit(xt, yt)
    return np.stack([model.predict_proba(x[i]).mean(axis=0) for i in test])


def fit_predict(x: list[np.ndarray], y: np.ndarray, train: np.ndarray, test: np.ndarray, c: float) -> np.ndarray:
    """Class of each test micrograph by mean patch probability."""
    return micrograph_probabilities(x, y, train, test, c).argmax(axis=1)


def cv_predictions(x: list[np.ndarray], y: np.ndarray, names: list[str], c: float, seed: int,
                   folds: int = 5) -> np.ndarray:
    pred = np.zeros(len(y), int)
    for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, names):
        pred[test] = fit_predict(x, y, train, test, c)
    return pred


def nested_accuracy(xs: dict, y: np.ndarray, names: list[str], seed: int) -> tuple[float, list]:
    """Outer 5-fold by micrograph; (families, C) chosen by an inner 4-fold CV on the training part."""
    pred, chosen = np.zeros(len(y), int), []
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, names):
        def inner(key: tuple) -> int:
            fams, c = key
            sub = [xs[fams][i] for i in train]
            return int(np.sum(cv_predictions(sub, y[train], [names[i] for i in train], c, 100 + seed, 4) == y[train]))

        best = max(((f, c) for f in FAMILIES for c in C_VALUES), key=inner)
        chosen.append(best)
        pred[test] = fit_predict(xs[best[0]], y, train, test, best[1])
    return float(np.mean(pred == y)), chosen


POOLING = {"mean": np.mean, "75th percentile": lambda p: np.quantile(p, 0.75),
           "top quarter": lambda p: np.sort(p)[-max(1, len(p) // 4):].mean(), "fraction ≥ 0.5": lambda p: np.mean(p >= 0.5)}


def _patch_model(x: list[np.ndarray], y: np.ndarray, train: np.ndarray, keep: float):
    """Patch LR (C = 1); with ``keep`` < 1, refitted on the ``keep`` most defective-looking share of
    each NHNF micrograph's patches (all HNF patches stay)."""
    def fit(parts, labels):
        return patch_regression(max_iter=3000).fit(np.concatenate(parts), np.concatenate(labels))

    model = fit([x[i] for i in train], [np.full(len(x[i]), y[i]) for i in train])
    if keep >= 1:
        return model
    parts = []
    for i in train:
        p = model.predict_proba(x[i])[:, 1]
        parts.append(x[i] if y[i] == 0 else x[i][np.argsort(-p)[:max(1, round(keep * len(p)))]])
    return fit(parts, [np.full(len(part), y[i]) for part, i in zip(parts, train)])


def pooling_table(x: list[np.ndarray], y: np.ndarray, names: list[str], repeats: int) -> str:
    """Accuracy (mean ± sd over shuffled grouped 5-fold splits) per patch labelling and pooling."""
    lines = ["| patch labels | pooling | accuracy (mean ± sd over splits) |", "|---|---|---|"]
    for keep, label in ((1.0, "image label (baseline)"), (0.5, "MI-refined, top half"), (0.25, "MI-refined, top quarter")):
        accs: dict[str, list[float]] = {name: [] for name in POOLING}
        for seed in range(repeats):
            scores = {name: np.zeros(len(y)) for name in POOLING}
            for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, names):
                model = _patch_model(x, y, train, keep)
                for i in test:
                    p = model.predict_proba(x[i])[:, 1]
                    for name, pool in POOLING.items():
                        scores[name][i] = pool(p)
            for name in POOLING:
                accs[name].append(float(np.mean((scores[name] >= 0.5) == y)))
        lines += [f"| {label} | {name} | {np.mean(a):.1%} ± {np.std(a):.1%} |" for name, a in accs.items()]
    return "\n".join(lines)


def fibre_width_table(feats: dict[str, list[np.ndarray]], y: np.ndarray, names: list[str], repeats: int) -> str:
    """Accuracy (mean ± sd over shuffled grouped 5-fold splits, C = 1) of fibre-width features,
    alone, with the baseline's and averaged with it, and of scale-normalised baseline features;
    with the micrographs each misses in every split."""
    both = [np.concatenate(pair, axis=1) for pair in zip(feats["base"], feats["width"])]
    # each row: the feature sets of the models whose micrograph probabilities are averaged
    rows = {"baseline": [feats["base"]], "fibre width": [feats["width"]],
            "baseline + fibre width, one model": [both],
            "baseline and fibre-width models, p averaged": [feats["base"], feats["width"]],
            "baseline on scale-normalised micrographs": [feats["normalised"]]}
    lines = ["| features | accuracy (mean ± sd over splits) | missed in every split |", "|---|---|---|"]
    for label, models in rows.items():
        accs, missed = [], np.zeros(len(y), int)
        for seed in range(repeats):
            p = np.zeros(len(y))
            for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, names):
                p[test] = np.mean([micrograph_probabilities(x, y, train, test, 1.0)[:, 1] for x in models], axis=0)
            accs.append(float(np.mean((p >= 0.5) == y)))
            missed += (p >= 0.5) != y
        always = ", ".join(names[i] for i in np.flatnonzero(missed == repeats)) or "none"
        lines.append(f"| {label} | {np.mean(accs):.1%} ± {np.std(accs):.1%} | {always} |")
    return "\n".join(lines)


STATISTICS = {"mean, sd": lambda x: np.concatenate([x.mean(0), x.std(0)]),
              "mean, sd, quartiles (shipped)": region_statistics,
              "mean, sd, 10th/90th percentiles": lambda x: np.concatenate([x.mean(0), x.std(0),
                                                                          *np.quantile(x, (0.1, 0.9), axis=0)])}
REGION_C = (0.3, 1.0, 3.0, 10.0)


def _region_cv(grids: list[np.ndarray], y: np.ndarray, groups: list[str], seed: int, statistics=region_statistics,
               c: float = 1.0, windows: int = 0, views: dict | None = None, folds: int = 5) -> dict[str, np.ndarray]:
    """Held-out region-regression predictions per micrograph over one shuffled grouped k-fold split:
    of whole micrographs and of the ``views`` (name → function cutting a window out of a grid)."""
    views = {"whole micrograph": lambda g: g, **(views or {})}
    pred = {name: np.zeros(len(y), int) for name in views}
    stats = lambda g: statistics(g.reshape(-1, g.shape[-1]))  # noqa: E731
    for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups):
        if windows:
            x, labels = region_examples([grids[i] for i in train], y[train], windows=windows, seed=seed)
        else:
            x, labels = np.stack([stats(grids[i]) for i in train]), y[train]
        model = patch_regression(c, max_iter=10000).fit(x, labels)
        for name, cut in views.items():
            pred[name][test] = model.predict(np.stack([stats(cut(grids[i])) for i in test]))
    return pred


def _nested_region(grids: dict, y: np.ndarray, names: list[str], seed: int) -> tuple[float, list]:
    """Outer 5-fold by micrograph; (features, statistics, C) chosen by an inner 4-fold CV."""
    keys = [(f, s, c) for f in grids for s in STATISTICS for c in REGION_C]
    pred, chosen = np.zeros(len(y), int), []
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, names):
        def inner(key: tuple) -> int:
            f, s, c = key
            p = _region_cv([grids[f][i] for i in train], y[train], [names[i] for i in train], 100 + seed,
                           STATISTICS[s], c, folds=4)["whole micrograph"]
            return int(np.sum(p == y[train]))

        best = max(keys, key=inner)
        chosen.append(best)
        f, s, c = best
        x = lambda idx: np.stack([STATISTICS[s](grids[f][i].reshape(-1, grids[f][i].shape[-1])) for i in idx])  # noqa: E731
        pred[test] = patch_regression(c, max_iter=10000).fit(x(train), y[train]).predict(x(test))
    return float(np.mean(pred == y)), chosen


def region_tables(feats: dict[str, list[np.ndarray]], y: np.ndarray, names: list[str],
                  micrographs: list[Micrograph], repeats: int) -> str:
    """The region regression: statistics and features; nested CV; training windows; held-out samples."""
    shapes = [(m.image.shape[0] // PATCH, m.image.shape[1] // PATCH) for m in micrographs]
    grids = {fams: [np.concatenate([feats[f][i] for f in fams], axis=1).reshape(*shapes[i], -1)
                    for i in range(len(y))] for fams in (("base",), ("base", "far"))}
    mean_sd = lambda a: f"{np.mean(a):.1%} ± {np.std(a):.1%}"  # noqa: E731
    out = ["| features | statistics | accuracy, C = 1 |", "|---|---|---|"]
    for fams, g in grids.items():
        for label, statistics in STATISTICS.items():
            accs = [np.mean(_region_cv(g, y, names, seed, statistics)["whole micrograph"] == y) for seed in range(repeats)]
            out.append(f"| {' + '.join(fams)} | {label} | {mean_sd(accs)} |")
    nested = [_nested_region(grids, y, names, seed) for seed in range(repeats)]
    out.append(f"\nNested CV (features, statistics and C chosen inside each training fold), {repeats} splits: "
               f"{mean_sd([a for a, _ in nested])}")
    shipped = grids[("base", "far")]
    views = {"top two patch rows": lambda g: g[:2], "3 × 3 patches": lambda g: g[1:4, 2:5]}
    out += ["", "| region regression trained on | " + " | ".join(["whole micrograph", *views]) + " |", "|---|---|---|---|"]
    for windows in (0, 8):
        preds = [_region_cv(shipped, y, names, seed, windows=windows, views=views) for seed in range(repeats)]
        cells = [mean_sd([np.mean(p[v] == y) for p in preds]) for v in preds[0]]
        label = f"micrographs and {windows} windows each (shipped)" if windows else "whole micrographs"
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    samples = sample_groups(micrographs)
    base = [np.mean(cv_predictions(feats["base"], y, samples, 1.0, seed) == y) for seed in range(repeats)]
    region = [np.mean(_region_cv(shipped, y, samples, seed, windows=8)["whole micrograph"] == y) for seed in range(repeats)]
    out += ["", f"Whole samples held out ({len(set(samples))} samples, grouped 5-fold, {repeats} splits): "
            f"baseline {mean_sd(base)}, shipped recipe {mean_sd(region)}"]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nanofiber-sem"))
    ap.add_argument("--repeats", type=int, default=10, help="differently shuffled 5-fold splits")
    ap.add_argument("--nested-repeats", type=int, default=5)
    ap.add_argument("--pooling", action="store_true", help="compare patch pooling and MI refinement instead")
    ap.add_argument("--fibre-width", action="store_true", help="compare fibre-width and scale-normalised features instead")
    ap.add_argument("--region", action="store_true", help="evaluate the region regression on patch-feature statistics")
    args = ap.parse_args()
    names, y, feats = load_features(args.data)
    if args.region:
        print(region_tables(feats, y, names, _micrographs_of(args.data, names), args.repeats))
        return
    if args.fibre_width:
        print(fibre_width_table({**feats, **load_width_features(args.data, names)}, y, names, args.repeats))
        return
    if args.pooling:
        print(pooling_table(feats["base"], y, names, args.repeats))
        return
    xs = {fams: [np.concatenate([feats[f][i] for f in fams], axis=1) for i in range(len(names))] for fams in FAMILIES}
    print("| features | C | accuracy (mean ± sd over splits) |\n|---|---|---|")
    for fams in FAMILIES:
        for c in C_VALUES:
            accs = [np.mean(cv_predictions(xs[fams], y, names, c, seed) == y) for seed in range(args.repeats)]
            print(f"| {' + '.join(fams)} | {c:g} | {np.mean(accs):.1%} ± {np.std(accs):.1%} |", flush=True)
    nested = [nested_accuracy(xs, y, names, seed) for seed in range(args.nested_repeats)]
    accs = [a for a, _ in nested]
    print(f"\nNested CV (families and C chosen inside each training fold), {args.nested_repeats} splits: "
          f"{np.mean(accs):.1%} ± {np.std(accs):.1%} ({', '.join(f'{a:.1%}' for a in accs)})")
    missed = np.zeros(len(y), int)
    for seed in range(args.repeats):
        missed += cv_predictions(xs[("base",)], y, names, 1.0, seed) != y
    always = [f"{names[i]} ({'NHNF' if y[i] else 'HNF'})" for i in np.flatnonzero(missed == args.repeats)]
    print(f"Missed by the baseline (base, C = 1) in all {args.repeats} splits: {', '.join(always) or 'none'}")


if __name__ == "__main__":
    main()
