"""Liposome benchmark on simulated cryo-TEM fields: detection precision/recall/F1 at IoU ≥ 0.5 of the
shipped detector on unseen test fields; grouped stratified 5-fold CV of LipNet vs the SVM baseline
per problem and class mix (per-class TPR, TNR, PPV, NPV, F1 and normalised confusion matrices); and
the shipped classifiers vs the SVM trained on the same simulated fields, on unseen fields at the
study's class mix (``--heldout-fields``): at each method's own decisions, at operating points
chosen for that mix, at matched specificity (each method's TPR where the other's decisions put the
TNR) and as one-vs-rest ROC AUC. The CV is compared at matched specificity too.

    python benchmarks/liposomes_cv.py [--fields 120] [--epochs 15] [--mixes study balanced] [--strategy S]
        [--input-modes masked cropped surroundings] [--heldout-fields 1000 [--heldout-classifiers PATH …]]
        [--table FILE]

Results are cached per setting in benchmarks/out/liposomes/ (delete a file to recompute it); the
table printed at the end is the one in docs/liposomes.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
from liposomes_scale import field_detection  # benchmarks/liposomes_scale.py, beside this file
from sklearn.metrics import roc_auc_score
from train_default_liposomes import recorded_fields  # how the classifiers' training fields are made

from napari_nanoclass.core.metrics import normalised, tpr_at_tnr
from napari_nanoclass.liposomes import DEFAULT_CLASSIFIERS, DEFAULT_DETECTOR, PROBLEMS, small_detector_for
from napari_nanoclass.liposomes.objects import CROP_MODES
from napari_nanoclass.liposomes.predict import FAINT_BELOW_PX, MIN_RING_SNR, SMALL_MAX_ENLARGEMENT
from napari_nanoclass.liposomes.simulator import MIXES, SimulationConfig, simulate_field
from napari_nanoclass.liposomes.train import (
    ClassifierConfig,
    Objects,
    choose_decision,
    classification_scores,
    cross_validate,
    object_probabilities,
    objects_from_fields,
    svm_baseline,
    trained_mix,
)
from napari_nanoclass.models.lipnet import decide
from napari_nanoclass.models.registry import LoadedModel, ModelInfo, load_model

OUT = Path(__file__).resolve().parent / "out" / "liposomes"
TEST_SEED = 500_000  # far from the seeds the shipped models were trained on (0 …, 100 000 …)
HELDOUT_SEED = TEST_SEED + 20_000  # unseen study-mix test fields of the shipped classifiers
CALIBRATION_SEED = TEST_SEED + 30_000  # study-mix fields on which operating points are chosen


def detection(n_fields: int, detector: str | None = None) -> dict:
    """Detection scores and whole-pipeline time per field of the shipped models (cached per their
    sha256): the analysis' default detectors, or ``detector`` alone."""
    small = small_detector_for(SimulationConfig().pixel_size_nm, detector)  # the analysis' own rule
    models = [detector or DEFAULT_DETECTOR, *([small] if small else []), *DEFAULT_CLASSIFIERS.values()]
    # keyed by the models, by how the analysis shows a coarse image to the small-vesicle detector and by
    # which small detections it tests against the noise
    path = OUT / (f"detection-{n_fields}-{'-'.join(load_model(m).sha256[:8] for m in models)}"
                  f"-x{SMALL_MAX_ENLARGEMENT:g}-faint{FAINT_BELOW_PX:g}-{MIN_RING_SNR:g}.json")
    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    scores = field_detection(SimulationConfig(), TEST_SEED, n_fields, load_model(detector) if detector else None)
    out = {**scores, "fields": n_fields, "seconds_per_field": (time.perf_counter() - start) / n_fields}
    path.write_text(json.dumps(out, indent=1))
    return out


def classification(mix: str, problem: str, method: str, objects, epochs: int, n_fields: int, mode: str,
                   strategy: str = "oversample", feature_input: bool = False) -> dict:
    feature_input = feature_input and method == "cnn"
    suffix = (("" if mode == "masked" else f"-{mode}") + ("" if strategy == "oversample" else f"-{strategy}")
              + ("-features" if feature_input else ""))
    path = OUT / f"cv-{mix}-{problem}-{method}-{n_fields}-{epochs}{suffix}.json"
    cached = json.loads(path.read_text()) if path.exists() else {}
    if "probabilities" in cached:  # older caches lack the held-out probabilities
        return cached
    start = time.perf_counter()
    config = ClassifierConfig(problem=problem, epochs=epochs, patience=max(epochs // 3, 3), input_mode=mode,
                              strategy=strategy, feature_input=feature_input)
    result = cross_validate(objects, problem, method, config=config)
    result.update(mix=mix, seconds=time.perf_counter() - start, objects=len(objects), input_mode=mode,
                  strategy=strategy, feature_input=feature_input)
    path.write_text(json.dumps(result, indent=1))
    return result


@functools.cache
def _fields_objects(mix: str, first_seed: int, count: int, mode: str) -> Objects:
    return objects_from_fields([simulate_field(SimulationConfig(mix=MIXES[mix]), first_seed + i)
                                for i in range(count)], mode=mode)


def _training_objects(info: ModelInfo) -> Objects:
    """The objects of the simulated fields a classifier was trained on (as
    train_default_liposomes.py records them: image formation ``mixed`` alternates default and
    ``REALISTIC`` fields; a pixel-size range draws each field's), cut its way."""
    fields = info.training.get("fields")
    if not fields:
        raise SystemExit(f"{info.name} does not record its training fields: retrain it with "
                         "benchmarks/train_default_liposomes.py --only classifiers")
    return objects_from_fields(recorded_fields(fields), mode=info.training["input_mode"])


def heldout(n_test: int, n_calibration: int, classifiers: list[str] | None = None) -> list[dict]:
    """Each shipped classifier (or each of ``classifiers``, registered or paths, judged on the
    problem it records) and the SVM baseline trained on the same simulated fields, on ``n_test``
    unseen fields at the study's class mix: both with their own balanced decisions, and both at an
    operating point for the study mix chosen on ``n_calibration`` other fields. Cached per
    classifier version, so retraining one classifier re-measures only that one."""
    models = [load_model(name) for name in classifiers or DEFAULT_CLASSIFIERS.values()]
    return [r for model in models
            for r in _heldout_problem(model.info.training["problem"], model, n_test, n_calibration)]


def _heldout_problem(problem: str, model: LoadedModel, n_test: int, n_calibration: int) -> list[dict]:
    path = OUT / f"heldout-{problem}-{n_test}-{n_calibration}-{model.sha256[:8]}.json"
    cached = json.loads(path.read_text()) if path.exists() else []
    if cached and all("auc" in r for r in cached):  # older caches lack the matched comparison
        return cached
    start = time.perf_counter()
    train = _training_objects(model.info)
    mode = model.info.training["input_mode"]
    test, calibration = (_fields_objects("study", seed, n, mode)
                         for seed, n in ((HELDOUT_SEED, n_test), (CALIBRATION_SEED, n_calibration)))
    names = PROBLEMS[problem]
    y_train, y_cal, y_test = (o.targets[problem] for o in (train, calibration, test))
    # the SVM's balanced class weights make it learn from the same equal shares as the CNN
    trained = trained_mix(y_train, len(names), ClassifierConfig(**model.info.training["config"]))
    cal_mix = np.bincount(y_cal, minlength=len(names)) / len(y_cal)
    svm = svm_baseline(train.features, y_train, probabilities=True)
    outputs = {
        "cnn": (object_probabilities(model.module, calibration), object_probabilities(model.module, test), None),
        "svm": (svm.predict_proba(calibration.features), svm.predict_proba(test.features),
                svm_baseline(train.features, y_train).predict(test.features)),
    }
    results = []
    for method, (p_cal, p_test, own) in outputs.items():
        decision = choose_decision(p_cal, y_cal, cal_mix, trained)
        chosen = decide(p_test, {"decision": decision}).argmax(1)
        results.append({"problem": problem, "method": method, "mix": "study, unseen fields", "input_mode": mode,
                        "feature_input": model.module.descriptors > 0 and method == "cnn",
                        **classification_scores(y_test, chosen, names),
                        "prior_strengths": [decision["prior_strength"]],
                        "balanced_decisions": classification_scores(
                            y_test, p_test.argmax(1) if own is None else own, names),
                        "train_objects": len(train), "test_objects": len(test),
                        "calibration_objects": len(calibration), "seconds": time.perf_counter() - start})
    attach_comparison(results[0], results[1], y_test, outputs["cnn"][1], outputs["svm"][1])
    path.write_text(json.dumps(results, indent=1))
    return results


def attach_comparison(cnn: dict, svm: dict, y: np.ndarray, p_cnn: np.ndarray, p_svm: np.ndarray) -> None:
    """Adds each class's one-vs-rest ROC AUC to both results and, to the CNN's, the comparison at
    matched specificity: at each decision point of either method (own decisions; the chosen
    operating point where there is one), per class, that method's TPR and TNR and the other
    method's TPR when its probability of the class is thresholded at (at least) the same TNR."""
    names = list(cnn["per_class"])
    own = {"cnn": cnn["balanced_decisions"], "svm": svm.get("balanced_decisions", svm)}
    points = {m: {"own": own[m]["per_class"], **({"chosen": r["per_class"]} if "balanced_decisions" in r else {})}
              for m, r in (("cnn", cnn), ("svm", svm))}
    probabilities = {"cnn": np.asarray(p_cnn), "svm": np.asarray(p_svm)}
    for method, r in (("cnn", cnn), ("svm", svm)):
        r["auc"] = {c: float(roc_auc_score(y == i, probabilities[method][:, i])) if 0 < np.sum(y == i) < len(y)
                    else float("nan") for i, c in enumerate(names)}
    rows = []
    for method, other in (("svm", "cnn"), ("cnn", "svm")):
        for point, per_class in points[method].items():
            for i, cls in enumerate(names):
                if not np.any(y == i):
                    continue
                tnr = per_class[cls]["TNR"]
                other_tpr, other_tnr = tpr_at_tnr(probabilities[other][:, i], y == i, tnr)
                rows.append({"point": f"{method}, {point}", "class": cls, "tnr": tnr, method: per_class[cls]["TPR"],
                             other: other_tpr, f"{other}_tnr": other_tnr})
    cnn["matched"] = rows


def matched_table(results: list[dict]) -> str:
    """The CNN vs SVM comparisons at matched specificity, and each class's one-vs-rest AUC."""
    lines = ["| mix | problem | input | class | operating point | TNR | TPR CNN | TPR SVM |", "|" + "---|" * 8]
    auc = ["| mix | problem | input | class | AUC CNN | AUC SVM |", "|" + "---|" * 6]
    point_names = {"own": "own decisions", "chosen": "chosen"}
    for r in results:
        if r["method"] != "cnn" or "matched" not in r:
            continue
        svm = next(s for s in results if s["method"] == "svm" and (s["mix"], s["problem"]) == (r["mix"], r["problem"]))
        mode = r.get("input_mode", "masked") + (" + features" if r.get("feature_input") else "")
        head = f"| {r['mix']} | {r['problem']} | {mode} |"
        auc += [f"{head} {c} | {r['auc'][c]:.4f} | {svm['auc'][c]:.4f} |" for c in r["auc"]]
        for m in r["matched"]:
            method, point = m["point"].split(", ")
            cnn_tpr, svm_tpr = (f"{m[k]:.3f}" if k == method else f"**{m[k]:.3f}**" for k in ("cnn", "svm"))
            lines.append(f"{head} {m['class']} | {method.upper()} {point_names[point]} | {m['tnr']:.3f} | "
                         f"{cnn_tpr} | {svm_tpr} |")
    if len(lines) == 2:
        return ""
    return "\n".join(["TPR at matched specificity (bold: that method thresholded at the other's TNR):", "", *lines,
                      "", "One-vs-rest ROC AUC:", "", *auc])


def cv_comparisons(results: list[dict]) -> None:
    """Matched-specificity comparisons of every CV CNN result with the SVM of its mix and problem."""
    for cnn in (r for r in results if r["method"] == "cnn" and "probabilities" in r and "matched" not in r):
        svm = next((s for s in results if s["method"] == "svm" and "probabilities" in s
                    and (s["mix"], s["problem"]) == (cnn["mix"], cnn["problem"])), None)
        if svm is not None:
            attach_comparison(cnn, svm, np.array(cnn["targets"]), np.array(cnn["probabilities"]),
                              np.array(svm["probabilities"]))


def _rows(r: dict) -> list[tuple[str, dict]]:
    """(decisions, scores) of one result: its own decisions (the SVM's class weights, the CNN's
    balanced ones) and, where measured, those at a chosen operating point."""
    own = "class weights" if r["method"] == "svm" else "balanced"
    if "balanced_decisions" not in r:  # CV of the SVM, or cached before operating points existed
        return [(own, r)]
    strengths = "/".join(f"{t:g}" for t in r["prior_strengths"])
    return [(f"chosen (strength {strengths})", r), (own, r["balanced_decisions"])]


def table(results: list[dict]) -> str:
    lines = ["| mix | problem | method | input | decisions | class | n | TPR | TNR | PPV | NPV | F1 |",
             "|" + "---|" * 12]
    matrices = []
    for r in results:
        mode = ("features" if r["method"] == "svm"
                else r.get("input_mode", "masked") + (" + features" if r.get("feature_input") else ""))
        for decisions, scores in _rows(r):
            for cls, m in scores["per_class"].items():
                lines.append(f"| {r['mix']} | {r['problem']} | {r['method']} | {mode} | {decisions} | {cls} | "
                             f"{m['support']} | " + " | ".join(f"{m[k]:.3f}" for k in ("TPR", "TNR", "PPV", "NPV", "F1"))
                             + " |")
            matrix = np.round(normalised(np.array(scores["confusion"])), 3).tolist()
            matrices.append(f"* {r['mix']} / {r['problem']} / {r['method']} ({mode}, {decisions.split(' (')[0]}): "
                            f"{matrix}")
    return "\n".join(lines + ["", "Normalised confusion matrices (rows: true class, columns: predicted, in the "
                                   "order above):", "", *matrices])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fields", type=int, default=120, help="simulated 512² fields per class mix for the CV")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--mixes", nargs="*", default=["balanced", "study"], choices=sorted(MIXES),
                    help="class mixes for the CV (none: skip the CV)")
    ap.add_argument("--methods", nargs="+", default=["svm", "cnn"])
    ap.add_argument("--input-modes", nargs="+", default=["masked"], choices=CROP_MODES,
                    help="CNN crop modes to compare")
    ap.add_argument("--strategy", default="oversample", choices=["oversample", "undersample", "smote", "none"],
                    help="the CNN's imbalance strategy")
    ap.add_argument("--feature-input", action="store_true",
                    help="the CNN also takes the SVM's handcrafted features (LipNet descriptors)")
    ap.add_argument("--detection-fields", type=int, default=20)
    ap.add_argument("--detection-detector", help="score this detector alone (default: the analysis' own choice)")
    ap.add_argument("--heldout-fields", type=int, default=0,
                    help="unseen study-mix fields for the shipped classifiers vs the SVM (0: skip)")
    ap.add_argument("--heldout-classifiers", nargs="+", metavar="NAME|PATH",
                    help="judge these classifiers instead of the shipped ones in the held-out comparison")
    ap.add_argument("--calibration-fields", type=int, default=300,
                    help="study-mix fields on which the held-out comparison chooses operating points")
    ap.add_argument("--table", help="also write the Markdown table here")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for mix in args.mixes:
        fields = [simulate_field(SimulationConfig(mix=MIXES[mix]), TEST_SEED + 10_000 + i) for i in range(args.fields)]
        for mode in args.input_modes:
            objects = objects_from_fields(fields, mode=mode)
            for problem in PROBLEMS:
                for method in args.methods if mode == args.input_modes[0] else ["cnn"]:
                    results.append(classification(mix, problem, method, objects, args.epochs, args.fields, mode,
                                                  args.strategy, args.feature_input))
                    print(f"{mix} {problem} {method} {mode}: balanced accuracy "
                          f"{results[-1]['balanced_accuracy']:.3f}", flush=True)
    cv_comparisons(results)
    if args.heldout_fields:
        results += heldout(args.heldout_fields, args.calibration_fields, args.heldout_classifiers)
    det = detection(args.detection_fields, args.detection_detector)
    summary = (f"Detection on {det['fields']} unseen simulated 512² fields (study mix), IoU ≥ 0.5: precision "
               f"{det['precision']:.3f}, recall {det['recall']:.3f}, F1 {det['f1']:.3f} ({det['tp']} TP, {det['fp']} FP, "
               f"{det['fn']} FN; {det['seconds_per_field']:.2f} s per field for the whole pipeline)")
    text = "\n\n".join(part for part in (summary, table(results), matched_table(results)) if part)
    print(text)
    if args.table:
        Path(args.table).write_text(text + "\n")


if __name__ == "__main__":
    main()
