"""Do the liposome classifiers transfer to imaging settings they were not trained on?

    python benchmarks/liposomes_setting.py [--settings defocus dose size] [--train-fields 120]
        [--test-fields 40] [--epochs 12] [--seeds 0 1] [--input-mode wall] [--pixel-sizes 1 2.5]

For each setting, one knob of the simulator is split into two disjoint ranges. LipNet classifiers
(the shipped architecture and training recipe, fewer epochs, one seed each) are trained on fields
from the first range only, then judged on unseen fields from the same range (in-setting) and from the held-out range
(out-of-setting), all at the balanced class mix and with balanced decisions. The table gives the
macro-F1 and balanced accuracy of each problem, mean ± standard deviation over training seeds;
the drop from in- to out-of-setting is what a user with a different microscope setting would
lose. Same simulator on both sides: a held-out *setting* — except ``imaging``, whose held-out side
is the simulator's realistic image formation (``REALISTIC``: bilayers as projected shells, dose per
Å², ice as a phase object, particulate cargo, irregular shapes, the microscope effects), which
no shipped model has seen: the nearest this project has to fields made by another simulator
(``realistic``: the other way round). ``mixed`` trains on both image formations, field by field
in turn, and judges on unseen fields of each: not a held-out setting, but what a classifier meant
for either would score.

``--input-mode`` picks the classifiers' crops (default ``masked-local``, the shipped encapsulation
classifier's; ``wall``, the lamellarity one's, unrolls each object around its outline in nm,
:func:`liposome_objects.wall_crops`) and ``--pixel-sizes LO HI`` draws every field's pixel size
log-uniformly in that range instead of 2.5 nm.

    python benchmarks/liposomes_setting.py --shipped [NAME|PATH …] [--test-fields 40] [--pixel-sizes 1 2.5]
        [--ensemble] [--validation]

judges the shipped classifiers (no training here), or the ones given,
on the objects of unseen default and ``REALISTIC`` fields, each on objects cut as it takes them;
``--validation`` on other fields, to choose between candidates before judging the chosen one once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score

from napari_nanoclass.liposomes import DEFAULT_CLASSIFIERS, PROBLEMS, simulator
from napari_nanoclass.liposomes import objects as liposome_objects
from napari_nanoclass.liposomes.objects import CROP_MODES, DEFAULT_CROP_MODE
from napari_nanoclass.liposomes.predict import crop_spec
from napari_nanoclass.liposomes.simulator import BALANCED_MIX, REALISTIC, SimulationConfig, simulate_field
from napari_nanoclass.liposomes.train import (
    ClassifierConfig,
    object_probabilities,
    objects_from_fields,
    predict_objects,
    train_classifier,
)
from napari_nanoclass.models.lipnet import decide
from napari_nanoclass.models.registry import load_model

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "liposomes-setting"
TRAIN_SEED, TEST_SEED = 600_000, 650_000  # far from the shipped models' training seeds
SHIPPED_TEST_SEED = TEST_SEED + 9000  # --shipped: the fields reported
VALIDATION_SEED = 760_000  # --shipped --validation: fields for choosing between candidates, not reported as results

BASE = SimulationConfig(mix=BALANCED_MIX)
SETTINGS = {  # name: (training range, held-out range), as SimulationConfig changes
    "defocus": ({"defocus_nm": (1500.0, 2500.0)}, {"defocus_nm": (3200.0, 4500.0)}),
    "dose": ({"dose": (80.0, 150.0)}, {"dose": (15.0, 35.0)}),
    "size": ({"diameter_nm": (30.0, 110.0)}, {"diameter_nm": (140.0, 300.0)}),
    "imaging": ({}, REALISTIC),
    "realistic": (REALISTIC, {}),
    "mixed": ([{}, REALISTIC], REALISTIC),  # trained on both (alternate fields); judged on default | REALISTIC
}


def _label(setting: str) -> str:
    if setting == "mixed":
        return "imaging: default + REALISTIC → default \\| REALISTIC (both trained on)"
    if setting in ("imaging", "realistic"):
        return "imaging: default → REALISTIC" if setting == "imaging" else "imaging: REALISTIC → default"
    inside, outside = SETTINGS[setting]
    return f"{setting}: {list(inside.values())[0]} → {list(outside.values())[0]}"


def _scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    return {"macro_f1": float(f1_score(truth, predicted, average="macro")),
            "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)), "objects": int(len(truth))}


def objects(changes: dict | list[dict], first_seed: int, count: int, mode: str = DEFAULT_CROP_MODE,
            pixel_sizes: tuple[float, float] | None = None, size: int = 32):
    """Objects of ``count`` fields; a list of changes is taken in turn, field by field."""
    turns = changes if isinstance(changes, list) else [changes]
    base = replace(BASE, pixel_size_range_nm=pixel_sizes)
    return objects_from_fields([simulate_field(replace(base, **turns[i % len(turns)]), first_seed + i)
                                for i in range(count)], mode=mode, size=size)


def _code_version() -> str:
    """A digest of the simulator and crop code: results cached before either changed are not reused."""
    return "".join(hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:8]
                   for module in (simulator, liposome_objects))


def run(setting: str, seed: int, n_train: int, n_test: int, epochs: int, mode: str = DEFAULT_CROP_MODE,
        pixel_sizes: tuple[float, float] | None = None) -> dict:
    """Train on the setting's first range, score in- and out-of-setting; cached per arguments and
    per the setting's ranges and the simulator and crop code (a changed preset or simulator is
    measured afresh)."""
    chosen = repr((SETTINGS[setting], mode, pixel_sizes)) + _code_version()
    ranges = hashlib.sha256(chosen.encode()).hexdigest()[:8]
    path = OUT / f"{setting}-{ranges}-seed{seed}-{n_train}-{n_test}-{epochs}.json"
    if path.exists():
        return json.loads(path.read_text())
    inside, outside = SETTINGS[setting]
    train = objects(inside, TRAIN_SEED + 1000 * seed, n_train, mode, pixel_sizes)
    seen = inside[0] if isinstance(inside, list) else inside  # "mixed": its first side is judged as "in"
    tests = {"in": objects(seen, TEST_SEED, n_test, mode, pixel_sizes),
             "out": objects(outside, TEST_SEED + 5000, n_test, mode, pixel_sizes)}
    record: dict = {"setting": setting, "seed": seed, "train_objects": len(train), "input_mode": mode,
                    "pixel_sizes": pixel_sizes}
    for problem in PROBLEMS:
        config = ClassifierConfig(problem=problem, epochs=epochs, patience=epochs, seed=seed, input_mode=mode)
        result = train_classifier(train, config)
        for side, test in tests.items():
            truth = test.targets[problem]
            record[f"{problem}_{side}"] = _scores(truth, predict_objects(result, test, balanced=True).argmax(1))
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return record


def shipped(n_test: int, names: list[str] | None = None, pixel_sizes: tuple[float, float] | None = None,
            ensemble: bool = False, first_seed: int = SHIPPED_TEST_SEED) -> None:
    """Classifiers (default: the shipped ones; each judged on its own problem, on objects cut as it
    takes them), balanced decisions, on the objects of unseen default and REALISTIC fields; with
    ``ensemble`` also the mean of their probabilities (the classifiers given must share problem and crops)."""
    print("| fields | classifier | problem | objects | macro-F1 | balanced accuracy |\n|---|---|---|---|---|---|")
    models = [load_model(name) for name in names or DEFAULT_CLASSIFIERS.values()]
    for fields, changes in (("default", {}), ("REALISTIC", REALISTIC)):
        cut, decided = {}, []
        for model in models:
            problem, (mode, size) = model.info.training["problem"], crop_spec(model.info)
            if (mode, size) not in cut:
                cut[mode, size] = objects(changes, first_seed, n_test, mode, pixel_sizes, size)
            test = cut[mode, size]
            decided.append(decide(object_probabilities(model.module, test), model.info.training, True))
            s = _scores(test.targets[problem], decided[-1].argmax(1))
            print(f"| {fields} | {model.info.name} ({mode}) | {problem} | {s['objects']} | {s['macro_f1']:.3f} | "
                  f"{s['balanced_accuracy']:.3f} |", flush=True)
        if ensemble:
            if len(cut) > 1 or len({m.info.training["problem"] for m in models}) > 1:
                raise SystemExit("--ensemble: give classifiers of one problem that take the same crops")
            s = _scores(test.targets[problem], np.mean(decided, axis=0).argmax(1))
            print(f"| {fields} | mean of {len(models)} ({mode}) | {problem} | {s['objects']} | {s['macro_f1']:.3f} | "
                  f"{s['balanced_accuracy']:.3f} |", flush=True)


def _spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    ap.add_argument("--train-fields", type=int, default=120)
    ap.add_argument("--test-fields", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--input-mode", choices=CROP_MODES, default=DEFAULT_CROP_MODE)
    ap.add_argument("--pixel-sizes", type=float, nargs=2, default=None, metavar=("LO", "HI"))
    ap.add_argument("--shipped", nargs="*", metavar="CLASSIFIER",
                    help="judge these classifiers (registered or paths; none given: the shipped ones) instead")
    ap.add_argument("--ensemble", action="store_true",
                    help="--shipped also judges the mean of the given classifiers' probabilities")
    ap.add_argument("--validation", action="store_true",
                    help="--shipped on validation fields (to choose between candidates) instead of the test fields")
    args = ap.parse_args()
    if args.validation and args.shipped is None:
        raise SystemExit("--validation judges given classifiers: use it with --shipped")
    if args.shipped is not None:
        shipped(args.test_fields, args.shipped, None if args.pixel_sizes is None else tuple(args.pixel_sizes),
                args.ensemble, VALIDATION_SEED if args.validation else SHIPPED_TEST_SEED)
        return
    print("| setting (train → held out) | problem | macro-F1 in | macro-F1 out | balanced acc. in | balanced acc. out |")
    print("|---|---|---|---|---|---|")
    for setting in args.settings:
        records = [run(setting, seed, args.train_fields, args.test_fields, args.epochs, args.input_mode,
                       None if args.pixel_sizes is None else tuple(args.pixel_sizes)) for seed in args.seeds]
        label = _label(setting)
        for problem in PROBLEMS:
            cells = [_spread([r[f"{problem}_{side}"][metric] for r in records])
                     for metric in ("macro_f1", "balanced_accuracy") for side in ("in", "out")]
            print(f"| {label} | {problem} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
