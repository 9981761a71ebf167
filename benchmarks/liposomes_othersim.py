"""The shipped liposome analysis on fields of a simulator it was not trained on (``othersim.py``).

    python benchmarks/liposomes_othersim.py [--split validation|test] [--pixel-sizes 1 2.5] [--fields 20]
        [--detectors auto PATH auto+PATH …] [--classifier PROBLEM=MODEL] [--balanced-decisions] [--no-classes]
        [--finetune 5 10 20 [--seeds 3] [--correction-fields 2] [--erase | --complete]] [--json OUT]

``benchmarks/othersim.py`` was written apart from this project's simulator (by a helper that was
not shown the project's liposome code, docs or models): its own image formation, shapes and class
definitions, so its fields stand in for #23's "fields from a simulator other than the training
one". No shipped model is trained or tuned on them: the validation seeds may inform choices
between candidates, the test seeds are reported (``--finetune`` trains throwaway detectors on
fields of seeds of their own).

Per pixel size: detection P / R / F1 at mask IoU ≥ 0.5 (``core.metrics.match_instances``; pooled
counts over the fields) for each detector (``auto``: the analysis' own choice, with the detector
beside it where it runs one; a name or ``.safetensors`` path: that detector, alone unless it was
retrained from the automatic pair; ``auto+PATH``: the
analysis' own detector with PATH beside it instead of its own),
and the shipped classifiers' macro-F1 on the true objects (the analysis given the true labels), at
the classifiers' operating points or, with ``--balanced-decisions``, as if every class were equally
common.

``--finetune N …`` measures adapting to this other image formation as a user would: the analysis'
detectors (and the one beside, as retraining from corrections does) are fine-tuned on N true
vesicles drawn at random from fields of their own seeds (150 000 …), with ``--erase`` also on
those fields' false detections, or with ``--complete`` on N whole fields with every vesicle marked,
and the ``--split`` fields are scored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sklearn.metrics import confusion_matrix, f1_score

from napari_nanoclass.liposomes import PROBLEMS
from napari_nanoclass.liposomes.predict import analyse
from napari_nanoclass.models.registry import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import othersim  # noqa: E402  (benchmarks/ is not a package)
from liposomes_scale import pooled_detection  # noqa: E402

SPLITS = {"validation": 100_000, "test": 200_000}  # first seed of each split's fields
CORRECTION_SEED = 150_000  # --finetune: the fields a user corrects (neither split)


def detection(fields: list, pixel_size: float, detector: str) -> dict:
    """Pooled detection counts of one detector over ``fields``, with P / R / F1: ``auto``, a
    detector's path (run alone), or ``auto+PATH`` (the default detector with PATH beside it)."""
    beside = load_model(detector.split("+", 1)[1]) if detector.startswith("auto+") else None
    chosen = None if detector == "auto" or beside is not None else load_model(detector)
    return pooled_detection((analyse(field.image, pixel_size, detector=chosen, small_detector=beside).labels,
                             field.labels) for field in fields)


def classification(fields: list, pixel_size: float, balanced: bool, classifiers: dict[str, str] | None = None) -> dict:
    """Macro-F1 and confusion matrix (rows: truth) per problem, on the fields' true objects, with the
    shipped classifiers or ``classifiers`` (problem -> name or path) in their place."""
    truth: dict[str, list[int]] = {p: [] for p in PROBLEMS}
    predicted: dict[str, list[int]] = {p: [] for p in PROBLEMS}
    for field in fields:
        result = analyse(field.image, pixel_size, labels=field.labels, balanced_decisions=balanced,
                         classifiers=classifiers)
        for row in result.objects:
            for problem, names in PROBLEMS.items():
                truth[problem].append(names.index(getattr(field, problem)[row["label"] - 1]))
                predicted[problem].append(names.index(row[problem]))
    return {problem: {"objects": len(truth[problem]),
                      "macro_f1": float(f1_score(truth[problem], predicted[problem], average="macro",
                                                 labels=range(len(names)), zero_division=0)),
                      "confusion": confusion_matrix(truth[problem], predicted[problem],
                                                    labels=range(len(names))).tolist()}
            for problem, names in PROBLEMS.items()}


def finetuned_detection(pixel_size: float, counts: list[int], seeds: int, correction_fields: int, test: list,
                        erase: bool, epochs: int | None = None, lr: float | None = None,
                        complete: bool = False) -> list[dict]:
    """Adapting to another image formation as a user would (``retrain_steps``: the analysis'
    detectors and the one beside), on fields of their own seeds (150 000 …), scored on the ``test``
    fields, which nothing chose. Each N of ``counts`` is N true vesicles drawn at random (per seed)
    from at least ``correction_fields`` fields (more where those hold fewer than N), with ``erase``
    also those fields' false detections, erased; or, ``complete``, N whole fields with every
    vesicle marked (every other pixel background)."""
    import numpy as np

    from napari_nanoclass.core.progress import run_sync
    from napari_nanoclass.liposomes.train import Correction, erased_area, retrain_steps

    fields: list = []
    enough = max(counts) if complete else correction_fields
    while len(fields) < enough or (not complete and sum(int(f.labels.max()) for f in fields) < max(counts)):
        fields.append(othersim.simulate(CORRECTION_SEED + len(fields), pixel_size_nm=pixel_size))
    print(f"  correcting {len(fields)} fields of {sum(int(f.labels.max()) for f in fields)} vesicles", flush=True)
    false = [None] * len(fields)
    if erase and not complete:
        detected = [np.asarray(analyse(f.image, pixel_size).labels) for f in fields]
        false = [np.isin(d, [i for i in np.unique(d) if i and not _matched(d == i, f.labels)])
                 for d, f in zip(detected, fields)]
    objects = [(k, int(j)) for k, f in enumerate(fields) for j in np.unique(f.labels) if j]
    key, unit = ("whole_fields", "whole fields") if complete else ("objects", "objects")
    rows = []
    for n in counts:
        for seed in range(seeds):
            if complete:
                corrections = [Correction(f.image, f.labels, pixel_size, complete=True) for f in fields[:n]]
            else:
                chosen = [objects[i] for i in np.random.default_rng(seed).choice(len(objects), n, replace=False)]
                corrections = []
                for k, f in enumerate(fields):
                    drawn = np.where(np.isin(f.labels, [j for kk, j in chosen if kk == k]), f.labels, 0)
                    erased = None if false[k] is None else erased_area(drawn, false[k])
                    if drawn.any() or (erased is not None and erased.any()):
                        corrections.append(Correction(f.image, drawn, pixel_size, erased=erased))
            start = time.perf_counter()
            tuned = run_sync(retrain_steps(corrections, f"othersim-{n}-{seed}", epochs=epochs, lr=lr, seed=seed))
            seconds = time.perf_counter() - start
            d = pooled_detection((analyse(f.image, pixel_size, detector=tuned.detector,
                                          small_detector=tuned.beside).labels, f.labels) for f in test)
            rows.append({"pixel_size_nm": pixel_size, key: n, "seed": seed, "erase": erase, **d})
            print(f"  fine-tuned on {n} {unit}, seed {seed}: P {d['precision']:.3f} R {d['recall']:.3f} "
                  f"F1 {d['f1']:.3f} ({seconds:.0f} s)", flush=True)
        f1s = [r["f1"] for r in rows if r[key] == n]
        print(f"  fine-tuned on {n} {unit}: F1 {np.mean(f1s):.3f} ± {np.std(f1s):.3f} over {seeds} seeds", flush=True)
    return rows


def _matched(found: object, truth: object) -> bool:
    """Whether one detected object (a mask) matches a true vesicle at mask IoU ≥ 0.5."""
    from napari_nanoclass.core.metrics import match_instances

    return match_instances(found.astype("int32"), truth)["tp"] > 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=list(SPLITS), default="validation")
    ap.add_argument("--pixel-sizes", type=float, nargs="+", default=[1.0, 2.5])
    ap.add_argument("--fields", type=int, default=20)
    ap.add_argument("--detectors", nargs="+", default=["auto"])
    ap.add_argument("--diameter", type=float, nargs=2, default=[20.0, 300.0])
    ap.add_argument("--balanced-decisions", action="store_true")
    ap.add_argument("--no-classes", action="store_true", help="detection only")
    ap.add_argument("--classifier", action="append", default=[], metavar="PROBLEM=MODEL",
                    help="a classifier (name or path) in place of the shipped one for PROBLEM; repeatable")
    ap.add_argument("--finetune", nargs="+", type=int, metavar="N",
                    help="instead: fine-tune the detectors on N true vesicles of --correction-fields fields and "
                         "score the --split fields")
    ap.add_argument("--seeds", type=int, default=3, help="random draws of the N vesicles (--finetune)")
    ap.add_argument("--correction-fields", type=int, default=2)
    ap.add_argument("--erase", action="store_true", help="--finetune also learns those fields' false detections")
    ap.add_argument("--complete", action="store_true",
                    help="--finetune N: N whole fields with every vesicle marked instead of N vesicles")
    ap.add_argument("--finetune-epochs", type=int, help="--finetune's epochs of 20 steps (default: the recipe "
                    "retraining uses for what was corrected)")
    ap.add_argument("--finetune-lr", type=float, help="--finetune's learning rate (default: the analysis' recipe)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    classifiers = dict(item.split("=", 1) for item in args.classifier if "=" in item) or None
    if len(classifiers or {}) != len(args.classifier) or not set(classifiers or {}) <= set(PROBLEMS):
        ap.error(f"--classifier takes PROBLEM=MODEL with PROBLEM one of {', '.join(PROBLEMS)}")
    record: dict = {"split": args.split, "fields": args.fields, "diameter_nm": args.diameter, "rows": []}
    for pixel_size in args.pixel_sizes:
        start = time.perf_counter()
        fields = [othersim.simulate(SPLITS[args.split] + i, pixel_size_nm=pixel_size,
                                    diameter_nm=tuple(args.diameter)) for i in range(args.fields)]
        print(f"{pixel_size} nm/px: {args.fields} fields, {sum(int(f.labels.max()) for f in fields)} vesicles, "
              f"simulated in {time.perf_counter() - start:.0f} s", flush=True)
        if args.finetune:
            record["rows"] += finetuned_detection(pixel_size, args.finetune, args.seeds, args.correction_fields,
                                                  fields, args.erase, args.finetune_epochs, args.finetune_lr,
                                                  args.complete)
            continue
        for detector in args.detectors:
            d = detection(fields, pixel_size, detector)
            record["rows"].append({"pixel_size_nm": pixel_size, "detector": detector, **d})
            print(f"  detection {detector}: P {d['precision']:.3f} R {d['recall']:.3f} F1 {d['f1']:.3f} "
                  f"(tp {d['tp']}, fp {d['fp']}, fn {d['fn']})", flush=True)
        if not args.no_classes:
            c = classification(fields, pixel_size, args.balanced_decisions, classifiers)
            record["rows"].append({"pixel_size_nm": pixel_size, "classes": c})
            for problem, s in c.items():
                print(f"  {problem}: macro-F1 {s['macro_f1']:.3f} on {s['objects']} true objects, "
                      f"confusion {s['confusion']}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
