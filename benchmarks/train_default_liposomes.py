"""Train the shipped liposome models on simulated cryo-TEM fields and register them in the package
(src/napari_nanoclass/weights): the detectors (SE U-Net: background / liposome / boundary) and the
classifiers, each problem by its shipped recipe (``SHIPPED_RECIPES``): lamellarity the mean of
three LipNet-4s on wall crops (seeds 0–2, default and ``REALISTIC`` fields at 1–2.5 nm/px, packed
as one ``lipnet-ensemble``), encapsulation one LipNet-4 on masked-local crops with the handcrafted
features (default fields at 1–2.5 nm/px).

    python benchmarks/train_default_liposomes.py
        [--only detector|fine-detector|varied-detector|small-detector|classifiers]
        [--fields 160] [--problems lamellarity encapsulation]
        [--fine-recorded MIN MAX] [--fine-native-share S] [--fine-diameter MIN MAX] [--fine-out DIR] [--seed N]
        [--fine-imaging default|microscope|realistic|mixed]
        [--classifier-fields N] [--classifier-epochs N] [--[no-]feature-input] [--classifier-mode wall]
        [--classifier-imaging mixed] [--classifier-pixel-sizes 1 2.5|none] [--classifier-out DIR]
    python benchmarks/train_default_liposomes.py --ensemble-of DIR0/NAME.safetensors DIR1/… --classifier-out DIR

The fine detector (``liposome-detector-fine``, for images at 1 nm/px or finer) goes on from the
standard detector's weights on fields simulated at 1 nm/px with vesicles 20–150 nm across and a
wider defocus range (0.5–5 µm); its post-processing (opening, solidity, rim) was chosen on the
left half of the real development micrograph (benchmarks/liposomes_real.py) and is stored with it.
``--fine-recorded`` / ``--fine-native-share`` train it instead on fields recorded at coarser pixel
sizes and resampled to 1 nm/px as the analysis resamples a user's image (candidates compared in
docs/liposomes.md; not the shipped recipe); ``--fine-out`` writes it elsewhere than the package.
``--fine-imaging`` simulates its fields with the simulator's ``MICROSCOPE`` or ``REALISTIC`` image
formation instead of the default one, or alternates default and ``REALISTIC`` fields (``mixed``)
(recorded in the model's ``training["fields"]``; candidates in docs/liposomes.md, "Training on
realistic fields" and "Calibrating ``REALISTIC``").

The varied-imaging detector (``liposome-detector-varied``, run beside the fine one) is the fine
detector's recipe with default and ``REALISTIC`` fields in turn (``--fine-imaging mixed``), recorded
at 1 nm/px (docs/liposomes.md, "A simulator written apart"). ``--only varied-detector`` takes
``--fine-fields``, ``--fine-epochs``, ``--seed`` and ``--fine-out``; its fields are always that
recipe's (the other ``--fine-*`` options do not apply to it).

The small-vesicle detector (``liposome-detector-small``, run beside the standard one for images
between 1 and 2.5 nm/px) is that recipe with fields recorded at 1–3 nm/px, all trained on at
1 nm/px. The analysis shows it a coarse image enlarged at most 2× (``small_working_px``: 1.25 nm/px
at 2.5 nm/px), a scale it was not trained at and was measured on instead (docs/liposomes.md, "Its
cost"). Its rim threshold was chosen on the left
half of the real micrograph recorded again at 1.5–3 nm/px (``benchmarks/liposomes_real.py
--sweep-small``) and is stored with it. ``--small-width`` and ``--small-working-nm`` train candidates
of another width or working pixel size (docs/liposomes.md, "Narrower small-vesicle detectors" and
"A small-vesicle detector trained at 1.5 nm/px"); write them elsewhere with ``--fine-out``.

Classifiers are pre-trained on fields at the balanced class mix (every class well represented),
with oversampling and augmentation; their cross-validated figures at both mixes and the detector's
precision/recall come from ``benchmarks/liposomes_cv.py`` and are in docs/liposomes.md. Any of
``--classifier-fields``, ``--classifier-epochs``, ``--feature-input``, ``--classifier-mode``,
``--classifier-imaging`` (``mixed``: default and ``REALISTIC`` fields in turn),
``--classifier-pixel-sizes`` (each field's pixel size drawn log-uniformly in the range) or
``--seed`` (one classifier of that seed instead of the recipe's seeds), where it differs from the
shipped recipe, trains a candidate; ``--classifier-out`` writes it elsewhere than the package (unregistered,
loadable by path; compared in docs/liposomes.md, "Wall crops"). ``--ensemble-of`` packs
candidates of one recipe as one classifier.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_nanoclass.liposomes import (
    DEFAULT_CLASSIFIERS,
    DEFAULT_DETECTOR,
    FINE_DETECTOR,
    SMALL_DETECTOR,
    VARIED_DETECTOR,
)
from napari_nanoclass.liposomes.objects import CROP_MODES, DEFAULT_CROP_MODE
from napari_nanoclass.liposomes.simulator import (
    BALANCED_MIX,
    MICROSCOPE,
    MIXES,
    REALISTIC,
    STUDY_MIX,
    SimulationConfig,
    simulate_field,
)
from napari_nanoclass.liposomes.train import (
    DETECTOR_CLASSES,
    DETECTOR_COLOURS,
    ClassifierConfig,
    detector_pairs,
    ensemble_classifier,
    objects_from_fields,
    train_classifier,
)
from napari_nanoclass.models.registry import PACKAGE_DIR, load_model, save_model
from napari_nanoclass.segmentation.train import TrainConfig, train

# seeds of the fields used here; liposomes_cv.py evaluates the detector on seeds from TEST_SEED up
TRAIN_SEED, VAL_SEED = 0, 100_000
ENSEMBLE_SEED = 200_000  # fields on which an ensemble of classifiers chooses its operating point


def _windowed_start(path: Path) -> str:
    """The shipped detector's weights in a network with windowed (local) SE, saved to ``path``.

    Global SE makes every pixel depend on the whole tile, so tiled inference would differ from
    whole-image inference; SE over a 5×5 window keeps the engine's tiled == whole guarantee. The
    weights are the same shapes, so training can go on from the global-SE ones.
    """
    base = load_model(DEFAULT_DETECTOR)
    info = replace(base.info, arch_params=dict(base.info.arch_params, se_window=5), name="liposome-detector-start")
    save_model(base.module, info, path.parent, filename=path.name, register=False)
    return str(path)


def train_detector(n_fields: int, epochs: int, windowed_from_shipped: bool) -> None:
    simulation = SimulationConfig(mix=STUDY_MIX)
    train_pairs = detector_pairs([simulate_field(simulation, TRAIN_SEED + i) for i in range(n_fields)])
    val_pairs = detector_pairs([simulate_field(simulation, VAL_SEED + i) for i in range(8)])
    start_from = _windowed_start(Path(tempfile.mkdtemp()) / "start.safetensors") if windowed_from_shipped else None
    config = TrainConfig(name=DEFAULT_DETECTOR, class_names=DETECTOR_CLASSES, class_colours=DETECTOR_COLOURS,
                         width=8, depth=3, se_window=5, crop=256, batch_size=4, epochs=epochs,
                         iters_per_epoch=50, init_from=start_from, lr=1e-3 if start_from else 2e-3,
                         patience=epochs, tile=512, pixel_size_nm=simulation.pixel_size_nm)
    start = time.perf_counter()
    result = train(train_pairs, val_pairs, config, progress=True)
    info = replace(result.info, description=(
        "Liposome detector (SE U-Net, classes background / liposome / boundary) trained on simulated "
        f"cryo-TEM fields at {simulation.pixel_size_nm} nm/px; best validation mIoU {result.best_miou:.4f}"))
    save_model(result.module, info, PACKAGE_DIR)
    print(f"detector: best val mIoU {result.best_miou:.4f} in {time.perf_counter() - start:.0f} s")


FINE_POSTPROCESS = {"smoothing": 0.5, "min_solidity": 0.8, "min_rim_boundary": 0.3}
SMALL_RECORDED_NM = (1.0, 3.0)
SMALL_POSTPROCESS = {"smoothing": 0.5, "min_solidity": 0.8, "min_rim_boundary": 0.55}
# the simulator's image formation for the fine detector's fields (--fine-imaging); "default" is the shipped recipe's,
# "mixed" alternates default and REALISTIC fields
FINE_IMAGING = {"default": {}, "microscope": MICROSCOPE, "realistic": REALISTIC}
FINE_IMAGING_CHOICES = [*FINE_IMAGING, "mixed"]


def fine_fields(n_fields: int, first_seed: int, recorded_nm: tuple[float, float], diameter_nm: tuple[float, float],
                native_share: float = 0.0, imaging: str = "default", working_nm: float = 1.0) -> list:
    """Fields for the fine detector: ``native_share`` of them recorded at ``working_nm``, the others
    at a pixel size log-uniform in ``recorded_nm`` (sized so that each spans about 512 px at
    ``working_nm`` once resampled); vesicles ``diameter_nm`` across; ``imaging`` names the
    simulator's image formation (FINE_IMAGING: the preset's ranges, its defocus range over the
    recipe's; "mixed": default for even field numbers, REALISTIC for odd ones)."""
    fields = []
    for i in range(n_fields):
        rng = np.random.default_rng([first_seed, i])
        native = rng.random() < native_share
        pixel = working_nm if native else float(np.exp(rng.uniform(*np.log(recorded_nm))))
        side = int(round(512 * working_nm / pixel))
        simulation = SimulationConfig(shape=(side, side), pixel_size_nm=pixel, diameter_nm=diameter_nm,
                                      defocus_nm=(500.0, 5000.0), objects=(8, 20), mix=STUDY_MIX)
        formation = ("default", "realistic")[i % 2] if imaging == "mixed" else imaging
        simulation = replace(simulation, **FINE_IMAGING[formation])
        fields.append(simulate_field(simulation, first_seed + i))
    return fields


def train_fine_detector(n_fields: int, epochs: int, recorded_nm: tuple[float, float] = (1.0, 1.0),
                        diameter_nm: tuple[float, float] = (20.0, 150.0), native_share: float = 0.0,
                        directory: Path = PACKAGE_DIR, name: str = FINE_DETECTOR,
                        postprocess: dict | None = None, seed: int = 0, imaging: str = "default",
                        width: int = 8, working_nm: float = 1.0) -> None:
    start = time.perf_counter()
    train_pairs = detector_pairs(fine_fields(n_fields, TRAIN_SEED, recorded_nm, diameter_nm, native_share, imaging,
                                             working_nm), working_px=working_nm)
    val_pairs = detector_pairs(fine_fields(8, VAL_SEED, recorded_nm, diameter_nm, native_share, imaging, working_nm),
                               working_px=working_nm)
    print(f"{n_fields} + 8 {imaging} fields simulated and brought to {working_nm:g} nm/px in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    config = TrainConfig(name=name, class_names=DETECTOR_CLASSES, class_colours=DETECTOR_COLOURS,
                         width=width, depth=3, se_window=5, crop=256, batch_size=4, epochs=epochs, iters_per_epoch=50,
                         # the standard detector's weights fit only its own width: another width starts afresh
                         init_from=DEFAULT_DETECTOR if width == 8 else None, lr=1e-3 if width == 8 else 2e-3,
                         patience=epochs, tile=512, pixel_size_nm=working_nm, seed=seed)
    start = time.perf_counter()
    result = train(train_pairs, val_pairs, config, progress=True)
    seconds = time.perf_counter() - start
    recorded = f"{recorded_nm[0]:g}–{recorded_nm[1]:g}" if recorded_nm[0] != recorded_nm[1] else f"{recorded_nm[0]:g}"
    role = {FINE_DETECTOR: "high-magnification images",
            VARIED_DETECTOR: f"high-magnification images imaged unlike the default fields, beside {FINE_DETECTOR}"}.get(
        name, f"small vesicles beside {DEFAULT_DETECTOR}")
    formation = "" if imaging == "default" else f" ({imaging.upper()} image formation)"
    fields = {"recorded_nm": list(recorded_nm), "native_share": native_share, "working_nm": working_nm,
              "diameter_nm": list(diameter_nm), "first_seed": TRAIN_SEED, "count": n_fields}
    if imaging != "default":  # the shipped models' metadata stay as they were
        fields["imaging"] = imaging
    info = replace(result.info, description=(
        f"Liposome detector for {role} (SE U-Net, background / liposome / boundary) fine-tuned "
        f"from {DEFAULT_DETECTOR} on simulated cryo-TEM fields{formation} recorded at {recorded} nm/px, seen at "
        f"{working_nm:g} nm/px, with vesicles {diameter_nm[0]:g}–{diameter_nm[1]:g} nm; best validation mIoU "
        f"{result.best_miou:.4f}"),
        training=dict(result.info.training, postprocess=postprocess or FINE_POSTPROCESS, fields=fields))
    save_model(result.module, info, directory, register=Path(directory).resolve() == PACKAGE_DIR.resolve())
    print(f"{name}: best val mIoU {result.best_miou:.4f} in {seconds:.0f} s of training")


def classifier_fields(n_fields: int, imaging: str = "default", pixel_sizes: tuple[float, float] | None = None,
                      first_seed: int = TRAIN_SEED, mix: dict | None = None) -> list:
    """The classifiers' training fields (at the balanced mix unless ``mix``): default image
    formation, or default and ``REALISTIC`` in turn (``mixed``); at 2.5 nm/px or drawn in ``pixel_sizes``."""
    turns = [{}, REALISTIC] if imaging == "mixed" else [{}]
    base = SimulationConfig(mix=mix or BALANCED_MIX, pixel_size_range_nm=pixel_sizes)
    return [simulate_field(replace(base, **turns[i % len(turns)]), first_seed + i) for i in range(n_fields)]


def recorded_fields(record: dict, count: int | None = None, first_seed: int | None = None) -> list:
    """The fields a classifier's ``training["fields"]`` describes (as :func:`_classifier_fields_record`
    writes it), or ``count`` others like them from ``first_seed``."""
    sizes = record.get("pixel_size_range_nm")
    return classifier_fields(record["count"] if count is None else count, record.get("imaging", "default"),
                             tuple(sizes) if sizes else None,
                             record["first_seed"] if first_seed is None else first_seed, MIXES[record["mix"]])


def pack_ensemble(paths: list[Path], n_fields: int, directory: Path) -> None:
    """One classifier from several of one recipe (``liposomes.train.ensemble_classifier``); where
    they have an operating point, the ensemble's is chosen on ``n_fields`` fields like their
    training fields but from ENSEMBLE_SEED on, which none of them trained on (the shipped recipe
    has none: balanced decisions). Written as a candidate, outside the package."""
    if Path(directory).resolve() == PACKAGE_DIR.resolve():
        raise SystemExit("an ensemble is a candidate: write it elsewhere (--classifier-out)")
    if Path(directory).resolve() in {Path(p).resolve().parent for p in paths}:
        raise SystemExit("--classifier-out holds a member, which the ensemble (of the same name) would overwrite")
    members = [load_model(Path(p)) for p in paths]
    first = members[0].info
    calibration = None
    if first.training.get("decision"):
        recorded = first.training.get("fields")
        if not recorded:
            raise SystemExit(f"{paths[0]} has an operating point but records no training fields: pack it in Python "
                             "with liposomes.train.ensemble_classifier(..., calibration=held-out objects of its kind)")
        calibration = objects_from_fields(recorded_fields(recorded, n_fields, ENSEMBLE_SEED),
                                          mode=first.training["input_mode"], size=first.patch)
    name = DEFAULT_CLASSIFIERS[first.training["problem"]]
    result = ensemble_classifier(members, name, calibration)
    save_model(result.module, result.info, directory, register=False)
    print(f"{name}: mean of {len(members)}, operating point {result.info.training['decision']}")


@dataclass(frozen=True)
class Recipe:
    """How a classifier is trained: its fields, crops, epochs, inputs and seeds (several seeds: an
    ensemble of one classifier per seed, packed as one)."""

    fields: int
    mode: str
    imaging: str = "default"
    pixel_sizes: tuple[float, float] | None = None
    seeds: tuple[int, ...] = (0,)
    epochs: int = 25
    feature_input: bool = False


# the shipped classifiers' recipes (docs/liposomes.md, "Shipped models")
SHIPPED_RECIPES = {
    "lamellarity": Recipe(480, "wall", "mixed", (1.0, 2.5), seeds=(0, 1, 2)),
    "encapsulation": Recipe(1920, DEFAULT_CROP_MODE, pixel_sizes=(1.0, 2.5), feature_input=True),
}


def recipe_for(problem: str, **changes: Any) -> Recipe:
    """The shipped recipe of ``problem`` with ``changes`` (Recipe fields; ``seed=N``: one classifier
    of that seed instead of the recipe's seeds)."""
    if "seed" in changes:
        changes["seeds"] = (changes.pop("seed"),)
    return replace(SHIPPED_RECIPES[problem], **changes)


def classifier_recipes(args: argparse.Namespace) -> dict[str, Recipe]:
    """Each problem's recipe from the command line: the shipped one, with what the options change."""
    given = {"fields": args.classifier_fields, "epochs": args.classifier_epochs, "mode": args.classifier_mode,
             "imaging": args.classifier_imaging, "feature_input": args.feature_input, "seed": args.seed}
    changes = {key: value for key, value in given.items() if value is not None}
    if args.classifier_pixel_sizes is not None:  # "none": every field at 2.5 nm/px
        sizes = args.classifier_pixel_sizes
        changes["pixel_sizes"] = None if sizes == ["none"] else _pixel_range(sizes)
    return {problem: recipe_for(problem, **changes) for problem in args.problems}


def _pixel_range(values: list[str]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in values)
    except ValueError:
        raise SystemExit(f"--classifier-pixel-sizes takes MIN MAX in nm or 'none', not {' '.join(values)}") from None
    return low, high


def train_classifiers(recipes: dict[str, Recipe], directory: Path = PACKAGE_DIR) -> None:
    """Train each problem's classifier by its recipe into ``directory``; only the shipped recipes
    go into the package."""
    check_recipes(recipes, directory)
    into_package = Path(directory).resolve() == PACKAGE_DIR.resolve()
    made: dict[tuple, object] = {}
    for problem, recipe in recipes.items():
        key = (recipe.fields, recipe.mode, recipe.imaging, recipe.pixel_sizes)
        if key not in made:  # the problems share fields where their recipes do
            made[key] = objects_from_fields(classifier_fields(recipe.fields, recipe.imaging, recipe.pixel_sizes),
                                            mode=recipe.mode)
        with tempfile.TemporaryDirectory() as scratch:
            members = [_train_member(made[key], problem, recipe, seed, Path(scratch) if len(recipe.seeds) > 1
                                     else directory, into_package) for seed in recipe.seeds]
            if len(members) > 1:
                result = ensemble_classifier([load_model(path) for path in members], DEFAULT_CLASSIFIERS[problem])
                save_model(result.module, result.info, directory, register=into_package)
                print(f"{problem}: packed the mean of {len(members)} (seeds {list(recipe.seeds)})")


def check_recipes(recipes: dict[str, Recipe], directory: Path) -> None:
    """Only the shipped recipes go into the package: anything else is a candidate, written elsewhere."""
    if Path(directory).resolve() != PACKAGE_DIR.resolve():
        return
    for problem, recipe in recipes.items():
        if recipe != SHIPPED_RECIPES[problem]:
            raise SystemExit(f"a {problem} classifier unlike the shipped recipe is a candidate: write it elsewhere "
                             "(--classifier-out)")


def _train_member(objects: object, problem: str, recipe: Recipe, seed: int, directory: Path,
                  into_package: bool) -> Path:
    """Train one classifier of ``recipe`` from ``seed`` and write it (registered only as the shipped
    single classifier itself; an ensemble's members are packed, not registered)."""
    name = DEFAULT_CLASSIFIERS[problem]
    start = time.perf_counter()
    config = ClassifierConfig(name=name, problem=problem, epochs=recipe.epochs, patience=recipe.epochs,
                              feature_input=recipe.feature_input, input_mode=recipe.mode, seed=seed)
    inputs = "size and handcrafted features" if recipe.feature_input else "size"
    result = train_classifier(objects, config, progress=True)
    best = max(h["val_balanced_accuracy"] for h in result.history)
    formation = "" if recipe.imaging == "default" else f" ({recipe.imaging} image formation)"
    info = replace(result.info, description=(
        f"LipNet-4 {problem} classifier ({recipe.mode} 32×32 crops + {inputs}) trained on {len(objects)} "
        f"objects of {recipe.fields} simulated fields{formation} at the balanced class mix; held-out balanced "
        f"accuracy {best:.3f}"),
        # liposomes_cv.py trains the SVM baseline on the same fields. No operating point: the
        # training mix is the simulator's, not any sample's, so the shipped models decide as if
        # the classes were equally common (fine-tuning on a sample's own objects sets one)
        training=dict(result.info.training, decision=None,
                      fields=_classifier_fields_record(recipe.fields, recipe.imaging, recipe.pixel_sizes)))
    single = len(recipe.seeds) == 1
    path = save_model(result.module, info, directory, filename=None if single else f"{name}-seed{seed}.safetensors",
                      register=into_package and single)
    print(f"{problem} (seed {seed}): held-out balanced accuracy {best:.3f} in {time.perf_counter() - start:.0f} s")
    return path


def _classifier_fields_record(n_fields: int, imaging: str, pixel_sizes: tuple[float, float] | None) -> dict:
    """What the classifiers were trained on, for their metadata (the shipped ones' as they were)."""
    record = {"mix": "balanced", "first_seed": TRAIN_SEED, "count": n_fields}
    if imaging != "default":
        record["imaging"] = imaging
    if pixel_sizes is not None:
        record["pixel_size_range_nm"] = list(pixel_sizes)
    return record


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["detector", "fine-detector", "varied-detector", "small-detector", "classifiers"])
    ap.add_argument("--fields", type=int, default=160, help="simulated 512² training fields")
    ap.add_argument("--detector-epochs", type=int, default=12)
    ap.add_argument("--fine-fields", type=int, default=80, help="simulated 512² fields at 1 nm/px")
    ap.add_argument("--fine-epochs", type=int, default=10)
    ap.add_argument("--fine-recorded", type=float, nargs=2, default=[1.0, 1.0], metavar=("MIN", "MAX"),
                    help="pixel sizes (nm) the fine detector's fields are recorded at, before 1 nm/px")
    ap.add_argument("--fine-diameter", type=float, nargs=2, default=[20.0, 150.0], metavar=("MIN", "MAX"))
    ap.add_argument("--fine-native-share", type=float, default=0.0, help="share of fields recorded at 1 nm/px")
    ap.add_argument("--fine-out", type=Path, default=None,
                    help="where to write the fine or small detector (default: the package)")
    ap.add_argument("--seed", type=int, default=None,
                    help="training seed of the fine or small detector (default 0), or of one classifier instead of "
                         "its recipe's seeds")
    ap.add_argument("--small-width", type=int, default=8,
                    help="the small-vesicle detector's width (8: the shipped recipe, fine-tuned from the standard "
                         "detector; another width is trained from scratch: a candidate, write it with --fine-out)")
    ap.add_argument("--small-working-nm", type=float, default=1.0,
                    help="the pixel size the small-vesicle detector is trained at (1: the shipped recipe); its "
                         "fields are recorded at 1-3 times it")
    ap.add_argument("--fine-imaging", choices=FINE_IMAGING_CHOICES, default="default",
                    help="the simulator's image formation for the fine detector's fields")
    ap.add_argument("--classifier-fields", type=int, help="simulated 512² fields for the classifiers "
                    "(default: each problem's shipped recipe, SHIPPED_RECIPES)")
    ap.add_argument("--classifier-epochs", type=int, help="training epochs of the classifiers (default: the recipe's)")
    ap.add_argument("--problems", nargs="+", choices=list(DEFAULT_CLASSIFIERS), default=list(DEFAULT_CLASSIFIERS),
                    help="which classifiers to retrain (each records its own training fields)")
    ap.add_argument("--feature-input", action=argparse.BooleanOptionalAction, default=None,
                    help="whether the classifiers also take the SVM baseline's handcrafted features (default: the "
                         "recipe's)")
    ap.add_argument("--classifier-mode", choices=CROP_MODES, help="the classifiers' crops (docs/liposomes.md)")
    ap.add_argument("--classifier-imaging", choices=["default", "mixed"],
                    help="the classifiers' fields: default image formation, or default and REALISTIC in turn")
    ap.add_argument("--classifier-pixel-sizes", nargs="+", metavar="MIN MAX|none",
                    help="draw each classifier field's pixel size in this range (nm), or 'none': every field at "
                         "2.5 nm/px (default: the recipe's)")
    ap.add_argument("--ensemble-of", nargs="+", type=Path, metavar="PATH",
                    help="instead of training: one classifier averaging these (of one recipe), into --classifier-out")
    ap.add_argument("--ensemble-fields", type=int, default=60,
                    help="fields on which --ensemble-of chooses the ensemble's operating point")
    ap.add_argument("--classifier-out", type=Path, default=PACKAGE_DIR, help="where to write the classifiers")
    ap.add_argument("--continue-detector", action="store_true",
                    help="go on from the shipped detector's weights (converted to windowed SE)")
    return ap


def main() -> None:
    args = parser().parse_args()
    if args.ensemble_of:
        pack_ensemble(args.ensemble_of, args.ensemble_fields, args.classifier_out)
        return
    if (args.small_width != 8 or args.small_working_nm != 1.0) and args.fine_out is None:
        raise SystemExit("a small-vesicle detector of another width or scale is a candidate: write it elsewhere "
                         "(--fine-out)")
    args.fine_out = args.fine_out or PACKAGE_DIR
    recipes = classifier_recipes(args)
    if args.only in (None, "classifiers"):
        check_recipes(recipes, args.classifier_out)  # before any detector is trained into the package
    if args.only in (None, "detector"):
        train_detector(args.fields, args.detector_epochs, args.continue_detector)
    if args.only in (None, "fine-detector"):
        train_fine_detector(args.fine_fields, args.fine_epochs, tuple(args.fine_recorded), tuple(args.fine_diameter),
                            args.fine_native_share, args.fine_out, seed=args.seed or 0, imaging=args.fine_imaging)
    if args.only in (None, "varied-detector"):
        train_fine_detector(args.fine_fields, args.fine_epochs, directory=args.fine_out, name=VARIED_DETECTOR,
                            seed=args.seed or 0, imaging="mixed")
    if args.only in (None, "small-detector"):
        recorded = tuple(nm * args.small_working_nm for nm in SMALL_RECORDED_NM)
        train_fine_detector(args.fine_fields, args.fine_epochs, recorded, tuple(args.fine_diameter),
                            directory=args.fine_out, name=SMALL_DETECTOR, postprocess=SMALL_POSTPROCESS,
                            seed=args.seed or 0, width=args.small_width, working_nm=args.small_working_nm)
    if args.only in (None, "classifiers"):
        train_classifiers(recipes, args.classifier_out)


if __name__ == "__main__":
    main()
