"""Test-time augmentation and ensembles of segmentation runs, chosen on validation, under the
three-way protocol.

    python benchmarks/segmentation_combine.py --models DIR [--rows frem stack-frem] [--data DIR] [--out FILE]

``DIR`` holds the networks that ``benchmarks/segmentation.py --save-models DIR`` kept, named
``ROW-seedS-...safetensors`` (trained on sections 00-09, epoch chosen on 10-12, decision offsets
fitted on 00-09). Each network's class probabilities (with its own decision offsets) are computed
once per section, plain and with test-time augmentation (the 8 rotations and flips), and combined:

* ``single``: each network alone;
* ``seeds``: the mean of one row's networks over its seeds (one ensemble per row, so no spread);
* ``pair``: for each seed, the mean of that seed's network of every row (one per recipe), so the
  spread over seeds is reported as for single networks.

Each variant's validation mIoU (sections 10-12) and test mIoU (13-15) are printed; the variant to
report is the one with the best validation mIoU, and the test column of the others is shown only to
see whether validation chose well. Needs no GPU: each network runs over six sections, plain and
with its 8 views.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from napari_nanoclass import engine
from napari_nanoclass.core.metrics import SegmentationScores, confusion_matrix
from napari_nanoclass.core.progress import run_sync
from napari_nanoclass.models.registry import load_model
from napari_nanoclass.segmentation.data import (
    DROSOPHILA_CLASSES,
    DROSOPHILA_SPLIT,
    IGNORE_INDEX,
    Pair,
    drosophila_pairs,
)

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"(?P<row>.+)-seed(?P<seed>\d+)-")


def probabilities(path: Path, pairs: list[Pair], tta: bool) -> list[np.ndarray]:
    """One network's class probabilities (C, Y, X) per section, with its decision offsets."""
    model = load_model(path)
    post = engine.with_logit_bias(engine.softmax, model.info.logit_bias)
    return [run_sync(engine.predict_dense(model.module, p.image, tile=model.info.tile, postprocess=post, tta=tta,
                                          stats=[p.stats] if p.stats else None)).astype(np.float32)
            for p in pairs]


def miou(probs: list[np.ndarray], pairs: list[Pair]) -> float:
    """mIoU over the sections together (one confusion matrix), as ``train.evaluate`` scores."""
    n = len(DROSOPHILA_CLASSES)
    confusion = sum(confusion_matrix(p.argmax(0), pair.labels, n, ignore=IGNORE_INDEX) for p, pair in zip(probs, pairs))
    return SegmentationScores(list(DROSOPHILA_CLASSES), confusion).miou


def mean_of(members: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.mean(section, axis=0) for section in zip(*members)]


def variants(rows: list[str], seeds: list[int]) -> dict[str, list[tuple]]:
    """Variant name → the list of member sets it is scored on (one set per seed, or one in all)."""
    out: dict[str, list[tuple]] = {}
    for row in rows:
        out[f"single {row}"] = [((row, s),) for s in seeds]
        out[f"seeds {row}"] = [tuple((row, s) for s in seeds)]
    if len(rows) > 1:
        out[f"pair {'+'.join(rows)}"] = [tuple((row, s) for row in rows) for s in seeds]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--rows", nargs="+", default=None, help="default: every row found in --models")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/drosophila-vnc"))
    ap.add_argument("--out", default=None, help="JSON file for the table's figures")
    args = ap.parse_args()
    files = {}
    for path in sorted(Path(args.models).glob("*.safetensors")):
        m = NAME.match(path.name)
        if m and (args.rows is None or m["row"] in args.rows):
            key = m["row"], int(m["seed"])
            if key in files:  # e.g. runs of two budgets in one folder
                ap.error(f"two networks for {key[0]} seed {key[1]} in {args.models}: {files[key].name}, {path.name}")
            files[key] = path
    rows = args.rows or sorted({row for row, _ in files})
    seeds = sorted({s for _, s in files})
    missing = [(r, s) for r in rows for s in seeds if (r, s) not in files]
    if missing:
        ap.error(f"no network for {missing} in {args.models}")
    parts = {part: drosophila_pairs(args.data, DROSOPHILA_SPLIT[part]) for part in ("validation", "test")}
    probs = {}  # (row, seed, tta, part) -> per-section probabilities
    for key, path in files.items():
        for tta in (False, True):
            for part, pairs in parts.items():
                probs[(*key, tta, part)] = probabilities(path, pairs, tta)
            print(f"{path.name}: tta={tta} done", flush=True)
    results = []
    for name, sets in variants(rows, seeds).items():
        for tta in (False, True):
            scores = {part: [miou(mean_of([probs[(*k, tta, part)] for k in members]), parts[part])
                             for members in sets] for part in parts}
            results.append({"variant": name + (" + TTA" if tta else ""), "networks": len(sets[0]),
                            **{f"{part}_miou": values for part, values in scores.items()}})
    chosen = max(results, key=lambda r: np.mean(r["validation_miou"]))
    print("\n| variant | networks per prediction | validation mIoU (10–12) | test mIoU (13–15) |\n|---|---|---|---|")
    for r in results:
        mark = " (chosen on validation)" if r is chosen else ""
        print(f"| {r['variant']}{mark} | {r['networks']} | {_spread(r['validation_miou'])} | "
              f"**{_spread(r['test_miou'])}** |")
    if args.out:
        Path(args.out).write_text(json.dumps({"chosen": chosen["variant"], "results": results}, indent=1))


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1%}"
    return f"{np.mean(values):.1%} ± {np.std(values):.1%} ({', '.join(f'{v:.3f}' for v in values)})"


if __name__ == "__main__":
    main()
