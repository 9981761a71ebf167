"""Liposome detection on a real cryo-EM micrograph, against our own annotation.

    python benchmarks/liposomes_real.py [--pixel-size 0.2 0.3 0.5] [--detector NAME|PATH] [--data PATH] [--blocks]
    python benchmarks/liposomes_real.py --sweep liposome-detector liposome-detector-fine [PATH] [--sweep-rim 0.5 0.3]
    python benchmarks/liposomes_real.py --finetune 5 10 20 [--seeds 3] [--erase]   # adapting to corrected objects
    python benchmarks/liposomes_real.py --complete [--seeds 3]   # adapting to a completely corrected left half
    python benchmarks/liposomes_real.py --resample 0.4 1.0 2.0 [--detector NAME|PATH] [--small-detector NAME|PATH]
    python benchmarks/liposomes_real.py --sweep-small NAME|PATH … --resample 1.5 2 2.5 3   # its rim threshold
    python benchmarks/liposomes_real.py --lamellarity [NAME|PATH …] [--pixel-size 0.2 1 2.5] [--ensemble]

The micrograph is ``../shared/data/cryoem-vesicles/vesicles_01.tif`` (2217², about 0.2 nm/px; not
in the repository). Its annotation, ``benchmarks/data/vesicles_01_annotation.csv``, is one circle
per vesicle (centre and radius in pixels of the micrograph): 42 ``certain`` and 9 ``probable``
(faint or textured objects we could not decide on). How it was made: a ring filter proposed
candidates, each was accepted, rejected or added by eye on a 1024² overview, then every circle was
refined to the membrane (the centre and radius maximising the darkness of the ring against its
surroundings); see docs/liposomes.md. It was never used to train or choose a shipped model: it is
test data.

Matching: each detected object's bounding box against each annotated circle's box, one-to-one
(Hungarian) at box IoU ≥ 0.3 and ≥ 0.5. A detection matched to a ``probable`` vesicle counts
neither way, and a ``probable`` vesicle left unmatched is not a miss. Reported per pixel size
given to the analysis, for the whole micrograph and for its left and right halves (by the
vesicle's centre; the halves are the fine-tuning split).

``--resample`` records the micrograph again at coarser pixel sizes (area-averaged, as a detector
with bigger pixels integrates), gives the analysis each true pixel size and scales the annotation
with it: the same vesicles as a lower magnification would show them. ``--sweep-small`` compares
rim thresholds of small-vesicle detectors run beside the standard one at those pixel sizes (the
choice by the mean F1 of the left half; the right half reports it).

``--lamellarity`` judges lamellarity classifiers (the shipped one and any given) on the vesicles
whose wall we could call by eye: the ``lamellarity`` column, ``unilamellar`` for 32 of the 42
certain vesicles (one bilayer, its two leaflets resolved, at 0.2 nm/px); left empty for the ten
with a radius of 15 nm or less (too small to tell; one of them has a ring inside). None is
multilamellar, so this measures one thing only: how many single bilayers a classifier calls
unilamellar. The objects are the annotated circles (as a user's corrected labels), classified as
the analysis classifies them at each pixel size (recorded again as ``--resample`` does).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.measure import regionprops

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "cryoem-vesicles" / "vesicles_01.tif"
ANNOTATION = ROOT / "data" / "vesicles_01_annotation.csv"
NATIVE_NM = 0.2  # the micrograph's own pixel size (--lamellarity records it again from this)


def annotation(path: Path = ANNOTATION) -> list[dict]:
    with open(path, newline="") as fh:
        return [{"y": float(r["y"]), "x": float(r["x"]), "r": float(r["radius_px"]), "tier": r["tier"],
                 "lamellarity": r.get("lamellarity", "")} for r in csv.DictReader(fh)]


LAMELLARITY_CLASSES = ("unilamellar", "multilamellar", "uncertain")


def lamellarity(image: object, truth: list[dict], classifiers: list[str], pixel_sizes: list[float],
                native: float, ensemble: bool = False) -> None:
    """Classes the lamellarity ``classifiers`` give the vesicles we called by eye, per pixel size;
    with ``ensemble`` also those of the classifiers packed as one (``ensemble_classifier``: the
    mean of their probabilities, balanced decisions), through the same analysis."""
    from napari_nanoclass import analyse_liposomes
    from napari_nanoclass.liposomes import DEFAULT_CLASSIFIERS

    called = [t for t in truth if t["lamellarity"]]
    names = classifiers or [DEFAULT_CLASSIFIERS["lamellarity"]]
    models = {name: _model(name) for name in names}
    with tempfile.TemporaryDirectory() as scratch:
        if ensemble:
            models[f"mean of {len(names)}"] = _packed([models[name] for name in names], Path(scratch))
        print("| pixel size (nm) | classifier | vesicles | unilamellar | multilamellar | uncertain |")
        print("|---|---|---|---|---|---|")
        for nm in pixel_sizes:
            recorded, scaled = resampled(image, called, nm, native) if nm != native else (image, called)
            labels = disks(scaled, recorded.data.shape)
            for name, model in models.items():
                found = analyse_liposomes(recorded, nm, labels=labels, classifiers={"lamellarity": model})
                classes = [o["lamellarity"] for o in found.objects]
                counts = [sum(c == k for c in classes) for k in LAMELLARITY_CLASSES]
                print(f"| {nm:g} | {Path(name).name if Path(name).exists() else name} | {len(classes)} | "
                      + " | ".join(str(c) for c in counts) + " |", flush=True)


def _packed(members: list, directory: Path) -> object:
    """Classifiers of one recipe as one ensemble, written to ``directory`` and loaded from there."""
    from napari_nanoclass.liposomes.train import ensemble_classifier
    from napari_nanoclass.models.registry import load_model, save_model

    result = ensemble_classifier(members, "mean-of-classifiers")
    return load_model(save_model(result.module, result.info, directory, register=False))


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two (y0, x0, y1, x1) boxes."""
    dy = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    dx = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = dy * dx
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _matching(labels: np.ndarray, truth: list[dict], iou: float, part: str) -> tuple[list, list, list]:
    """The detected regions and annotated vesicles of ``part`` ("all", "left" or "right", by their
    centre's half) and their one-to-one matches (detection index, vesicle index) at box ``iou``."""
    width = labels.shape[1]
    regions = regionprops(labels)
    true_boxes = [(t["y"] - t["r"], t["x"] - t["r"], t["y"] + t["r"], t["x"] + t["r"], t["y"], t["x"]) for t in truth]

    def inside(cx: float) -> bool:
        return part == "all" or (cx < width / 2) == (part == "left")

    regions = [r for r in regions if inside(r.centroid[1])]
    boxes = [r.bbox for r in regions]
    kept = [(b, t) for b, t in zip(true_boxes, truth) if inside(b[5])]
    cost = np.array([[_box_iou(b, tb[:4]) for tb, _ in kept] for b in boxes]).reshape(len(boxes), len(kept))
    rows, cols = linear_sum_assignment(-cost) if cost.size else ([], [])
    return regions, [t for _, t in kept], [(i, j) for i, j in zip(rows, cols) if cost[i, j] >= iou]


def score(labels: np.ndarray, truth: list[dict], iou: float, part: str = "all") -> dict:
    """Precision, recall, F1 of instance ``labels`` against the annotated circles at box ``iou``;
    ``part`` = "all", "left" or "right" (objects and vesicles by their centre's half)."""
    regions, kept, matched = _matching(labels, truth, iou, part)
    tp = sum(kept[j]["tier"] == "certain" for _, j in matched)
    fp = len(regions) - len(matched)
    fn = sum(t["tier"] == "certain" for t in kept) - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(precision, 3), "recall": round(recall, 3),
            "f1": round(f1, 3)}


def probabilities_at(detector: object, data: np.ndarray, pixel_size: float,
                     small: bool = False) -> tuple[np.ndarray, int]:
    """``detector``'s probabilities for an image recorded at ``pixel_size``, seen at its working
    scale as the analysis sees it (``small``: as it sees a small-vesicle detector's), and the
    minimum object area there (px): what a sweep of post-processings starts from, computed once."""
    from napari_nanoclass import engine
    from napari_nanoclass.core.progress import run_sync
    from napari_nanoclass.liposomes.predict import MIN_DIAMETER_NM, small_working_px, working_image

    seen = small_working_px(pixel_size, detector) if small else detector.info.pixel_size_nm
    work, working_px = working_image(data, pixel_size, seen)
    probabilities = run_sync(engine.predict_dense(detector.module, work, halo=detector.halo, stats=[(0.0, 1.0)],
                                                  device=detector.device))
    return probabilities, int(np.pi * (MIN_DIAMETER_NM / 2 / working_px) ** 2)


SWEEP = {"smoothing": (0.0, 0.5, 0.7), "min_solidity": (0.9, 0.8), "min_rim_boundary": (0.5, 0.3)}


def sweep(image: object, truth: list[dict], detectors: list[str], pixel_size: float,
          rims: tuple[float, ...] | None = None) -> list[dict]:
    """F1 on the left half, the right half and the whole micrograph for every post-processing in
    SWEEP (``rims`` in place of its rim thresholds) and every detector (registered, or a path): the
    choice is made on the left half, the right half reports it."""
    import itertools

    from napari_nanoclass.liposomes.predict import instances_from_probabilities, labels_at

    grid = dict(SWEEP, min_rim_boundary=tuple(rims)) if rims else SWEEP
    rows = []
    for name in detectors:
        probabilities, min_area = probabilities_at(_model(name), np.asarray(image.data, np.float32), pixel_size)
        for values in itertools.product(*grid.values()):
            params = dict(zip(grid, values))
            labels = labels_at(instances_from_probabilities(probabilities, min_area, **params), image.data.shape)
            f1 = {part: score(labels, truth, 0.3, part)["f1"] for part in ("left", "right", "all")}
            rows.append({"detector": name, **params, **f1})
            print(f"{name:24s} {params}  F1 left {f1['left']:.3f}  right {f1['right']:.3f}  all {f1['all']:.3f}")
    best = max(rows, key=lambda r: r["left"])
    print(f"chosen on the left half: {best}")
    return rows


SMALL_SWEEP = (0.3, 0.45, 0.55, 0.6, 0.65, 0.7)  # min_rim_boundary of the small-vesicle detector's objects


def _model(name: str) -> object:
    """A registered detector, or one saved at a path (a candidate not in the registry)."""
    from napari_nanoclass import load_model

    return load_model(Path(name) if name.endswith(".safetensors") else name)


def sweep_small(image: object, truth: list[dict], candidates: list[str], pixel_sizes: list[float],
                native: float) -> list[dict]:
    """F1 of the left and right halves, the micrograph recorded at each of ``pixel_sizes``, for
    each small-vesicle detector run beside the standard one with each rim threshold in
    SMALL_SWEEP; the choice (the best mean left-half F1) is printed."""
    from napari_nanoclass.core.progress import run_sync
    from napari_nanoclass.liposomes import DEFAULT_DETECTOR
    from napari_nanoclass.liposomes.predict import (
        detect_steps,
        instances_from_probabilities,
        labels_at,
        with_small,
        working_image,
    )

    standard = _model(DEFAULT_DETECTOR)
    views = []
    for nm in pixel_sizes:
        view, scaled = resampled(image, truth, nm, native)
        data = np.asarray(view.data, np.float32)
        work, px = working_image(data, nm, standard.info.pixel_size_nm)
        views.append((nm, data, scaled, run_sync(detect_steps(work, standard, px))))
    rows = []
    for name in candidates:
        small = _model(name)
        post = {k: v for k, v in small.info.training.get("postprocess", {}).items() if k != "min_rim_boundary"}
        found = [probabilities_at(small, data, nm, small=True) for nm, data, _, _ in views]
        for rim in SMALL_SWEEP:
            row = {"detector": name, "min_rim_boundary": rim}
            for (nm, data, scaled, standard_labels), (probabilities, min_area) in zip(views, found):
                small_labels = instances_from_probabilities(probabilities, min_area, min_rim_boundary=rim, **post)
                merged = labels_at(with_small(standard_labels, labels_at(small_labels, standard_labels.shape)),
                                   data.shape)
                row[nm] = {part: score(merged, scaled, 0.3, part)["f1"] for part in ("left", "right")}
            row["left"] = float(np.mean([row[nm]["left"] for nm in pixel_sizes]))
            row["right"] = float(np.mean([row[nm]["right"] for nm in pixel_sizes]))
            rows.append(row)
            print(f"{name} rim {rim:.2f}: " + "  ".join(f"{nm:g} nm/px {row[nm]['left']:.3f}/{row[nm]['right']:.3f}"
                                                       for nm in pixel_sizes)
                  + f"  mean left {row['left']:.3f} right {row['right']:.3f}", flush=True)
    best = max(rows, key=lambda r: r["left"])
    print(f"chosen on the left half: {best['detector']} rim {best['min_rim_boundary']} "
          f"(mean left {best['left']:.3f}, right {best['right']:.3f})")
    return rows


def disks(truth: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """Instance labels (1, 2, …) of annotated circles, as a user's corrected objects would be."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, t in enumerate(truth, 1):
        labels[(yy - t["y"]) ** 2 + (xx - t["x"]) ** 2 <= t["r"] ** 2] = i
    return labels


def false_detections(labels: np.ndarray, truth: list[dict], part: str) -> np.ndarray:
    """Where the detections of ``part`` that match no annotated vesicle (certain or probable, box
    IoU ≥ 0.3) are: what a user correcting that part would erase."""
    regions, _, matched = _matching(labels, truth, 0.3, part)
    unmatched = {regions[i].label for i in set(range(len(regions))) - {i for i, _ in matched}}
    return np.isin(labels, sorted(unmatched))


def finetune(image: object, truth: list[dict], counts: list[int], seeds: int, pixel_size: float,
             erase: bool = False) -> None:
    """Fine-tune the default detector (and the detector beside it, where the analysis runs one) on N
    certain vesicles of the left half (drawn at random per seed) — with ``erase`` also on the left
    half's false detections, erased as a user would — and score the right half, which no choice has
    seen: with the detector beside it retrained too (the analysis' way) and as shipped (the way
    before), and how many erased detections come back."""
    from napari_nanoclass import analyse_liposomes
    from napari_nanoclass.core.progress import run_sync
    from napari_nanoclass.liposomes.train import erased_area, finetune_on_corrections_steps

    width = image.data.shape[1]
    left = [t for t in truth if t["tier"] == "certain" and t["x"] < width / 2]
    detected = shipped_right_half(image, truth, pixel_size)
    false = false_detections(detected, truth, "left") if erase else None
    gone = [] if false is None else [int(i) for i in np.unique(detected[false])]
    if erase:
        print(f"erasing {len(gone)} false detections of the left half")
    for n in counts:
        f1s: dict[str, list[float]] = {"retrained beside": [], "beside as shipped": []}
        for seed in range(seeds):
            chosen = [left[i] for i in np.random.default_rng(seed).choice(len(left), n, replace=False)]
            corrected = disks(chosen, image.data.shape)
            erased = None if false is None else erased_area(corrected, false)
            start = time.perf_counter()
            retrained = run_sync(finetune_on_corrections_steps(np.asarray(image.data, np.float32), corrected,
                                                               pixel_size, f"finetuned-{n}-{seed}", erased=erased,
                                                               seed=seed))
            seconds = time.perf_counter() - start
            runs = {"retrained beside": retrained.beside, "beside as shipped": None}
            for way, beside in runs.items():
                if way == "retrained beside" and beside is None:
                    continue  # no detector beside at this pixel size: one way only
                labels = np.asarray(analyse_liposomes(image, pixel_size, detector=retrained.detector,
                                                      small_detector=beside).labels)
                right = score(labels, truth, 0.3, "right")
                back = sum((labels[detected == i] > 0).mean() > 0.5 for i in gone)
                f1s[way].append(right["f1"])
                print(f"{n:3d} objects, seed {seed}, {way}: right half F1 {right['f1']:.3f} "
                      f"(P {right['precision']:.3f} R {right['recall']:.3f})"
                      + (f", {back} of {len(gone)} erased detections back" if gone else "")
                      + f"; fine-tuned in {seconds:.0f} s", flush=True)
        for way, values in f1s.items():
            if values:
                print(f"{n:3d} objects, {way}: right half F1 {np.mean(values):.3f} ± {np.std(values):.3f} "
                      f"over {seeds} seeds")


def shipped_right_half(image: object, truth: list[dict], pixel_size: float) -> np.ndarray:
    """The shipped analysis' labels of the micrograph, its right-half score printed: the figure
    without fine-tuning that a fine-tuning run is compared with."""
    from napari_nanoclass import analyse_liposomes

    detected = np.asarray(analyse_liposomes(image, pixel_size).labels)
    base = score(detected, truth, 0.3, "right")
    print(f"no fine-tuning: right half F1 {base['f1']:.3f} (P {base['precision']:.3f} R {base['recall']:.3f})")
    return detected


def complete_left(image: object, truth: list[dict], seeds: int, pixel_size: float) -> None:
    """Fine-tune the default detector (and the one beside it) on the left half as a completely
    corrected image (every annotated vesicle seen there marked, the ``probable`` ones too, as a user
    marking all they see would; every other pixel background) with the recipe for
    whole images, and score the right half, which no choice has seen."""
    from napari_nanoclass import analyse_liposomes
    from napari_nanoclass.core.progress import run_sync
    from napari_nanoclass.liposomes.train import Correction, retrain_steps

    data = np.asarray(image.data, np.float32)
    half = data.shape[1] // 2
    labels = disks(truth, data.shape)[:, :half]  # every vesicle seen in the left half, cut ones included
    shipped_right_half(image, truth, pixel_size)
    f1s = []
    for seed in range(seeds):
        start = time.perf_counter()
        retrained = run_sync(retrain_steps([Correction(data[:, :half], labels, pixel_size, complete=True)],
                                           f"complete-{seed}", seed=seed))
        seconds = time.perf_counter() - start
        found = analyse_liposomes(image, pixel_size, detector=retrained.detector, small_detector=retrained.beside)
        right = score(np.asarray(found.labels), truth, 0.3, "right")
        f1s.append(right["f1"])
        print(f"left half completely corrected ({len(np.unique(labels)) - 1} vesicles), seed {seed}: right half F1 "
              f"{right['f1']:.3f} (P {right['precision']:.3f} R {right['recall']:.3f}); fine-tuned in {seconds:.0f} s",
              flush=True)
    print(f"left half completely corrected: right half F1 {np.mean(f1s):.3f} ± {np.std(f1s):.3f} over {seeds} seeds")


def resampled(image: object, truth: list[dict], pixel_size: float, native: float) -> tuple[object, list[dict]]:
    """The micrograph and its annotation as recorded at ``pixel_size`` nm/px instead of ``native``."""
    from skimage.transform import rescale

    from napari_nanoclass.io.images import Image

    factor = native / pixel_size
    data = rescale(np.asarray(image.data, np.float32), factor, order=1, anti_aliasing=factor < 1, preserve_range=True)
    scaled = [{**t, "y": (t["y"] + 0.5) * factor - 0.5, "x": (t["x"] + 0.5) * factor - 0.5, "r": t["r"] * factor}
              for t in truth]
    return Image(data.astype(np.float32), name=f"{image.name} at {pixel_size:g} nm/px"), scaled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pixel-size", type=float, nargs="+", default=[0.2])
    ap.add_argument("--detector", default=None, help="detector (registered, or a .safetensors path; default: the "
                    "analysis' choice for the pixel size)")
    ap.add_argument("--small-detector", default=None, help="small-vesicle detector (registered, or a .safetensors "
                    "path) run beside the detector (default: the analysis' choice for the pixel size)")
    ap.add_argument("--sweep-small", nargs="+", metavar="DETECTOR",
                    help="compare rim thresholds of these small-vesicle detectors at the --resample pixel sizes")
    ap.add_argument("--blocks", action="store_true", help="analyse block by block, as images above STREAM_ABOVE "
                    "pixels are (docs/liposomes.md, \"Large images\")")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--sweep", nargs="+", metavar="DETECTOR",
                    help="compare post-processings of these detectors (at the first --pixel-size) instead")
    ap.add_argument("--sweep-rim", nargs="+", type=float, metavar="P",
                    help="--sweep's rim thresholds (min_rim_boundary; default: SWEEP's 0.5 and 0.3)")
    ap.add_argument("--finetune", nargs="+", type=int, metavar="N",
                    help="fine-tune on N corrected vesicles of the left half, score the right half, instead")
    ap.add_argument("--complete", action="store_true",
                    help="fine-tune on the left half with every vesicle marked, score the right half, instead")
    ap.add_argument("--seeds", type=int, default=3, help="random draws of the N vesicles (--finetune), training "
                    "seeds (--complete)")
    ap.add_argument("--erase", action="store_true",
                    help="--finetune also learns the left half's false detections, erased, as background")
    ap.add_argument("--lamellarity", nargs="*", metavar="CLASSIFIER",
                    help="classify the vesicles called by eye with these lamellarity classifiers (default: the "
                         "shipped one) at each --pixel-size (the micrograph recorded again), instead")
    ap.add_argument("--ensemble", action="store_true",
                    help="--lamellarity also classifies with the given classifiers packed as one ensemble")
    ap.add_argument("--resample", nargs="+", type=float, metavar="NM",
                    help="record the micrograph again at these pixel sizes (from the first --pixel-size, its own) "
                         "and give the analysis each true pixel size, instead")
    args = ap.parse_args()

    from napari_nanoclass import analyse_liposomes, read_image

    image = read_image(args.data)
    truth = annotation()
    if args.sweep:
        sweep(image, truth, args.sweep, args.pixel_size[0], args.sweep_rim)
        return
    if args.sweep_small:
        sweep_small(image, truth, args.sweep_small, args.resample, args.pixel_size[0])
        return
    if args.lamellarity is not None:
        lamellarity(image, truth, args.lamellarity, args.pixel_size, NATIVE_NM, args.ensemble)
        return
    if args.complete:
        complete_left(image, truth, args.seeds, args.pixel_size[0])
        return
    if args.finetune:
        finetune(image, truth, args.finetune, args.seeds, args.pixel_size[0], args.erase)
        return
    if args.resample:
        runs = [(nm, *resampled(image, truth, nm, args.pixel_size[0])) for nm in args.resample]
    else:
        runs = [(nm, image, truth) for nm in args.pixel_size]
    detector = _model(args.detector) if args.detector else None
    if args.blocks:
        from napari_nanoclass.liposomes import predict

        predict.STREAM_ABOVE = 0
    results = []
    for pixel_size, image, truth in runs:
        start = time.perf_counter()
        found = analyse_liposomes(image, pixel_size, detector=detector,
                                  small_detector=_model(args.small_detector) if args.small_detector else None)
        seconds = time.perf_counter() - start
        labels = np.asarray(found.labels)
        row = {"pixel_size_nm": pixel_size, "detector": args.detector or found.summary["detector"],
               "small_detector": found.summary["small_detector"], "objects": len(found.objects),
               "seconds": round(seconds, 1)}
        for iou in (0.3, 0.5):
            for part in ("all", "left", "right"):
                row[f"{part}@{iou}"] = score(labels, truth, iou, part)
        results.append(row)
        a3, a5 = row["all@0.3"], row["all@0.5"]
        print(f"{pixel_size:5.2f} nm/px  {row['detector']:22s} {row['small_detector'] or '-':24s} "
              f"{row['objects']:3d} objects  "
              f"box IoU≥0.3: P {a3['precision']:.3f} R {a3['recall']:.3f} F1 {a3['f1']:.3f}   "
              f"≥0.5: P {a5['precision']:.3f} R {a5['recall']:.3f} F1 {a5['f1']:.3f}   "
              f"halves F1@0.3 {row['left@0.3']['f1']:.3f} / {row['right@0.3']['f1']:.3f}  ({seconds:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps({"results": results}, indent=1))


if __name__ == "__main__":
    main()
