"""The ``nanoclass`` command: the same analyses as the napari plugin, headless.

    nanoclass models [--json]
    nanoclass segment IMAGE... --out DIR [--model NAME] [--tile N] [--device D] [--probabilities] [--format F] [--tta]
    nanoclass train-seg --images DIR --labels DIR --name NAME [...]
    nanoclass evaluate-seg --images DIR --labels DIR [--model NAME] [--preset drosophila]
    nanoclass homogeneity IMAGE... --out DIR [--model NAME] [--cam [--cam-model NAME]] [--view N] [--device D] [--format F]
    nanoclass train-homogeneity --data DIR --name NAME [--mode two|three] [--architecture texture|cnn] [...]
    nanoclass liposomes IMAGE... --out DIR [--pixel-size NM] [--detector NAME] [--format F]
    nanoclass train-liposome-detector --image IMG... --labels LABELS... --pixel-size NM --name NAME
                                      [--detection LABELS... | --complete] [--objects N ...]
    nanoclass simulate-liposomes --out DIR [--n N] [--mix study|balanced] [--pixel-size NM [MAX]]
        [--microscope | --realistic]
    nanoclass xrd PATTERN... --out DIR [--model NAME] [--lowpass F] [--no-plots]
    nanoclass batch ANALYSIS INPUT... --out DIR [--workers N | --scheduler ADDRESS] [--format F] [--log L]
    nanoclass demo [--out DIR]

--format tif (default) or ome-zarr: how label images and maps are saved.

Exit status: 0 all good, 1 some inputs failed (each reported with its reason), 2 usage error (a bad
option, no inputs, an unknown model, inputs whose outputs would collide), 3 the output folder cannot
be used (not writable, or another run is writing into it). Errors are one line; --debug shows the
traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from napari_nanoclass import __version__
from napari_nanoclass.core.analysis import FORMATS, PIXEL_SIZES_NM, analyses, argparse_type, number


def _num(kind: type, low: float | None = None, high: float | None = None):  # noqa: ANN202 (an argparse type)
    """An argparse type for a number within [low, high]: refused at parse time, naming the range."""
    return argparse_type(number(kind, low, high))


def _model_name(text: str) -> str:
    """An argparse type for the name a trained model is saved under (a plain identifier)."""
    from napari_nanoclass.models.registry import check_name

    return argparse_type(check_name)(text)


PIXEL_SIZE = _num(float, *PIXEL_SIZES_NM)
COUNT = _num(int, 1)
SEED = _num(int, 0)


def _progress(args: argparse.Namespace) -> bool | None:
    return None if args.quiet else True


def cmd_models(args: argparse.Namespace) -> int:
    from napari_nanoclass.models.registry import list_models

    infos = list_models()
    if args.json:
        print(json.dumps([{"name": i.name, "task": i.task, "class_names": i.class_names,
                           "tile": i.tile, "pixel_size_nm": i.pixel_size_nm, "description": i.description}
                          for i in infos], indent=2))
    else:
        for i in infos:
            print(f"{i.name:28s} {i.task:22s} classes: {', '.join(i.class_names)}")
        if not infos:
            print("no models registered")
    return 0


def _inputs(items: Sequence[str], command: str, out: str) -> list[Path]:
    """Files, folders and globs expanded to image paths, less this tool's own outputs in ``out``
    (when ``out`` is the input folder); says so on stderr when there are none."""
    from napari_nanoclass.core.analysis import get, without_products

    analysis = get(command)
    paths = without_products(analysis.find_inputs(items), out)
    if not paths:
        print(f"nanoclass {command}: no input {'files' if analysis.inputs else 'images'} found", file=sys.stderr)
    return paths


def cmd_analysis(args: argparse.Namespace) -> int:
    """``nanoclass ANALYSIS IMAGE… --out DIR``: the analysis' file job over the inputs."""
    from napari_nanoclass.core.analysis import files_steps, get
    from napari_nanoclass.core.progress import run_sync

    analysis = get(args.command)
    paths = _inputs(args.images, analysis.name, args.out)
    if not paths:
        return 2
    rows = run_sync(files_steps(analysis, paths, args.out, **analysis.options_from_args(args)),
                    progress=_progress(args))
    return _report(rows, args.out)


def _report(rows: Sequence[dict], out: str | Path) -> int:
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed:  # the error names the file (core.analysis.files_steps)
        print(f"FAILED {r['error']}", file=sys.stderr)
    print(f"{len(rows) - len(failed)} of {len(rows)} images done; results in {Path(out).resolve()}")
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from napari_nanoclass._napari.samples import SAMPLE_DIR

    # through the segment parser, so every segment option has its default here too
    argv = ["segment", str(SAMPLE_DIR / "drosophila_section.tif"), "--out", args.out, "--model", "drosophila-seunet"]
    return cmd_analysis(build_parser().parse_args(argv + (["--quiet"] if args.quiet else [])))


def cmd_train_seg(args: argparse.Namespace) -> int:
    from napari_nanoclass.core.progress import run_sync
    from napari_nanoclass.segmentation.data import (
        DROSOPHILA_CLASSES,
        DROSOPHILA_COLOURS,
        DROSOPHILA_LABEL_MAP,
        images_from_folder,
        pairs_from_folders,
    )
    from napari_nanoclass.segmentation.train import TrainConfig, search_frem, self_train_steps, train_steps

    label_map = DROSOPHILA_LABEL_MAP if args.preset == "drosophila" else None
    classes = args.classes.split(",") if args.classes else (DROSOPHILA_CLASSES if args.preset else None)
    if classes is None and args.init_from is None:
        print("nanoclass train-seg: give --classes (comma-separated, index order) or --init-from", file=sys.stderr)
        return 2
    if args.unlabelled and (args.search_trials or args.run_dir):
        print("nanoclass train-seg: --unlabelled (self-training) runs without --search-trials and --run-dir",
              file=sys.stderr)
        return 2
    train = pairs_from_folders(args.images, args.labels, args.train_stems, label_map)
    val = pairs_from_folders(args.val_images or args.images, args.val_labels or args.labels, args.val_stems, label_map)
    config = TrainConfig(name=args.name, class_names=classes or ["?"],
                         class_colours=DROSOPHILA_COLOURS if args.preset else [], width=args.width, depth=args.depth,
                         frem_b=args.frem_b, frem_x=args.frem_x, epochs=args.epochs, iters_per_epoch=args.iters,
                         batch_size=args.batch_size, crop=args.crop, seed=args.seed, init_from=args.init_from,
                         pixel_size_nm=args.pixel_size, calibrate=not args.no_calibrate,
                         augmentation=args.augmentation)
    if args.search_trials:
        study = search_frem(train, val, config, n_trials=args.search_trials, deep_supervision=args.deep_supervision)
        print(json.dumps({"best_params": study.best_params, "best_miou": study.best_value}))
        return 0
    if args.unlabelled:
        threshold = {} if args.pseudo_threshold is None else {"threshold": args.pseudo_threshold}
        steps = self_train_steps(train, val, images_from_folder(args.unlabelled), config, register=True, **threshold)
    else:
        steps = train_steps(train, val, config, run_dir=args.run_dir, resume=args.resume, register=True)
    result = run_sync(steps, progress=_progress(args))
    print(json.dumps({"name": result.info.name, "best_miou": result.best_miou, "history": result.history,
                      "logit_adjustment": result.info.training.get("logit_adjustment"),
                      "self_training": result.info.training.get("self_training")}, indent=1))
    return 0


def cmd_train_homogeneity(args: argparse.Namespace) -> int:
    from napari_nanoclass.homogeneity.texture import fit_texture_model
    from napari_nanoclass.homogeneity.train import MODE_CLASSES, HomogeneityConfig, micrographs_from_folders, train

    micrographs = micrographs_from_folders(args.data, args.mode)
    if args.architecture == "texture":
        model = fit_texture_model(micrographs, MODE_CLASSES[args.mode], args.name, save=True)
    else:
        config = HomogeneityConfig(name=args.name, mode=args.mode, strategy=args.strategy, head=args.head,
                                   dropout=args.dropout, steps=args.steps, batch_size=args.batch_size,
                                   seed=args.seed, init_from=args.init_from)
        model = train(micrographs, config, progress=_progress(args), save=True)
    print(json.dumps({"name": model.info.name, "file": str(model.path), "sha256": model.sha256,
                      "final_loss": model.info.training.get("final_loss"),
                      "recipe": model.info.training.get("recipe")}))
    return 0


def cmd_train_liposome_detector(args: argparse.Namespace) -> int:
    """Fine-tune a liposome detector on objects drawn or corrected by hand (instance label images,
    one per micrograph, in the same order).

    With ``--detection`` (the labels the analysis gave, before the corrections) only what the user
    changed teaches it: objects drawn or redrawn, the ``--objects`` confirmed, and the detections
    erased, as background; without it every object of ``--labels`` (or the ``--objects``) does.
    With ``--complete`` the labels mark every liposome of their images, so every other pixel is
    learnt as background too."""
    from napari_nanoclass.core.progress import run_sync
    from napari_nanoclass.liposomes.train import retrain_steps

    if len(args.labels) != len(args.image) or (args.detection and len(args.detection) != len(args.image)):
        raise ValueError(f"give one --labels{' and one --detection' if args.detection else ''} per --image "
                         f"({len(args.image)} images, {len(args.labels)} labels"
                         f"{f', {len(args.detection)} detections' if args.detection else ''})")
    if args.complete and (args.detection or args.objects):
        raise ValueError("--complete learns every object and every other pixel: it takes no --detection or --objects")
    if args.objects and len(args.image) > 1:
        raise ValueError("--objects names labels of one image: give one --image with it")
    corrections = [_correction(args, i) for i in range(len(args.image))]
    retrained = run_sync(retrain_steps(corrections, args.name, args.detector, epochs=args.epochs, register=True),
                         progress=_progress(args))
    model, beside = retrained.detector, retrained.beside
    print(json.dumps({"name": model.info.name, "file": str(model.path), "sha256": model.sha256,
                      "objects": model.info.training["objects"], "erased": model.info.training["erased"],
                      "whole_images": model.info.training["whole_images"], "base": model.info.training["base"],
                      "epochs": model.info.training["config"]["epochs"], "lr": model.info.training["config"]["lr"],
                      "beside": None if beside is None else {"name": beside.info.name, "file": str(beside.path),
                                                              "sha256": beside.sha256,
                                                              "base": beside.info.training["base"]}}))
    return 0


def _correction(args: argparse.Namespace, i: int):  # noqa: ANN202 (a Correction, imported late)
    """The ``i``-th micrograph of ``train-liposome-detector`` and what was corrected in it."""
    import numpy as np

    from napari_nanoclass.io.images import read_image, read_label_image
    from napari_nanoclass.liposomes.train import Correction, corrected_objects, erased_area, mask_signatures

    image = read_image(args.image[i])
    labels = _same_shape(args.labels[i], read_label_image(args.labels[i])[0], image.data.shape)
    data = np.asarray(image.data, np.float32)
    if args.complete:
        return Correction(data, labels, args.pixel_size, complete=True)
    objects, erased = args.objects, None
    if args.detection:
        detection = _same_shape(args.detection[i], read_label_image(args.detection[i])[0], image.data.shape)
        objects = corrected_objects(labels, mask_signatures(detection), args.objects or ())
        erased = erased_area(labels, detection)
        if not objects and not erased.any():
            raise ValueError(f"{args.labels[i]} is the detection {args.detection[i]} unchanged: draw, redraw or erase "
                             "objects, or name the ones you confirm with --objects")
    return Correction(data, labels, args.pixel_size, objects, erased)


def _same_shape(path: str, labels: object, shape: tuple[int, ...]):  # noqa: ANN202 (an array)
    """``labels`` as an array, refused (naming ``path``) unless it has the image's ``shape``."""
    import numpy as np

    labels = np.asarray(labels)
    if labels.shape != tuple(shape):
        raise ValueError(f"{path}: labels {labels.shape} do not match the image {tuple(shape)}")
    return labels


def cmd_simulate_liposomes(args: argparse.Namespace) -> int:
    from napari_nanoclass.liposomes.simulator import (
        MICROSCOPE,
        MIXES,
        REALISTIC,
        SimulationConfig,
        simulate_field,
        write_fields,
    )

    if len(args.pixel_size) > 2:
        raise ValueError("--pixel-size takes one size or a range MIN MAX")
    config = SimulationConfig(shape=(args.size, args.size), pixel_size_nm=args.pixel_size[0], mix=MIXES[args.mix],
                              pixel_size_range_nm=(min(args.pixel_size), max(args.pixel_size))
                              if len(args.pixel_size) == 2 else None,
                              **({"diameter_nm": tuple(args.diameter)} if args.diameter else {}),
                              **(REALISTIC if args.realistic else MICROSCOPE if args.microscope else {}))
    written = write_fields((simulate_field(config, args.seed + i) for i in range(args.n)), args.out, args.format)
    print(json.dumps({"fields": len(written), "out": str(Path(args.out).resolve())}))
    return 0


def _batch_options(args: argparse.Namespace) -> dict:
    """Analysis options from --model / --pixel-size / --format / --set NAME=VALUE (VALUE read as JSON
    if it parses), built as the Batch dock builds them (:meth:`Analysis.chosen_options`)."""
    from napari_nanoclass.core.analysis import get

    analysis = get(args.analysis)
    values: dict = {}
    if args.model:
        if analysis.model_option is None:
            raise ValueError(f"{args.analysis} takes no --model")
        values[analysis.model_option] = args.model
    if args.pixel_size is not None:
        values["pixel_size_nm"] = args.pixel_size
    values["output_format"] = args.format
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"nanoclass batch: --set takes KEY=VALUE, got {item!r}")
        try:
            values[key] = json.loads(value)
        except ValueError:
            values[key] = value
    return analysis.chosen_options(values)


def _batch_progress(log: str, analysis: str) -> tuple:
    """(on_row, on_progress, close) for ``--log``: two bars (the run, with ETA, and the input in
    hand), JSON lines on stderr (one per finished input, and progress at most once a second), or
    nothing."""
    from napari_nanoclass.core.progress import Throttle

    if log == "quiet":
        return None, None, lambda: None
    if log == "json":
        throttle = Throttle(1.0)

        def row_line(row: dict, done: int, total: int) -> None:
            print(json.dumps({"event": "file", "done": done, "total": total, **row}), file=sys.stderr, flush=True)

        def progress_line(stem: str, step) -> None:
            if throttle.due(step, key=stem):
                print(json.dumps({"event": "progress", "stem": stem, "fraction": round(step.fraction, 4)}),
                      file=sys.stderr, flush=True)

        return row_line, progress_line, lambda: None
    from tqdm.auto import tqdm

    bars: list = []  # (run, input) bars, drawn at the first event: a run refused up front prints only its error

    def ensure() -> tuple:
        if not bars:
            bars.append(tqdm(unit="image", desc=f"nanoclass batch {analysis}", position=0))
            bars.append(tqdm(total=1.0, position=1, leave=False,
                             bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}"))
        return bars[0], bars[1]

    def on_row(row: dict, done: int, total: int) -> None:
        run_bar, _ = ensure()
        run_bar.total = total
        run_bar.update(done - run_bar.n)
        run_bar.set_postfix_str(f"{row['stem']}: {row['status']}")

    def on_progress(stem: str, step) -> None:
        _, file_bar = ensure()
        if file_bar.desc != stem:
            file_bar.reset(total=1.0)
            file_bar.set_description_str(stem, refresh=False)
        file_bar.n = step.fraction
        file_bar.refresh()

    def close() -> None:
        for bar in reversed(bars):
            bar.close()

    return on_row, on_progress, close


def cmd_batch(args: argparse.Namespace) -> int:
    from napari_nanoclass.batch.runner import BatchConfig, run_batch

    if args.config:
        config = BatchConfig.load(args.config)
        config.overwrite = config.overwrite or args.overwrite
    else:
        if not args.analysis or not args.inputs or not args.out:
            print("nanoclass batch: give ANALYSIS INPUT… --out DIR, or --config FILE", file=sys.stderr)
            return 2
        config = BatchConfig(args.analysis, args.inputs, args.out, _batch_options(args), args.overwrite,
                             args.workers, args.scheduler)
    on_row, on_progress, close = _batch_progress(args.log, config.analysis)
    try:
        report = run_batch(config.analysis, config.inputs, config.out, options=config.options,
                           overwrite=config.overwrite, workers=config.workers, scheduler=config.scheduler,
                           on_row=on_row, on_progress=on_progress)
    except KeyboardInterrupt:
        print(f"nanoclass batch: interrupted; finished inputs are kept in {Path(config.out).resolve()} — run the "
              "same command again to do the rest", file=sys.stderr)
        return 130
    finally:
        close()
    for row in report.failed:
        error = row["error"] if row["input"] in row["error"] else f"{row['input']}: {row['error']}"
        print(f"FAILED {error}", file=sys.stderr)
    run = report.run
    print(f"{run['inputs'] - run['failed']} of {run['inputs']} inputs done ({run['skipped']} already complete, "
          f"{run['failed']} failed); results in {Path(config.out).resolve()}")
    return 1 if report.failed else 0


def cmd_evaluate_seg(args: argparse.Namespace) -> int:
    from napari_nanoclass.models.registry import load_model
    from napari_nanoclass.segmentation.data import DROSOPHILA_LABEL_MAP, pairs_from_folders
    from napari_nanoclass.segmentation.train import evaluate

    model = load_model(args.model, args.device or "cpu")
    label_map = DROSOPHILA_LABEL_MAP if args.preset == "drosophila" else None
    pairs = pairs_from_folders(args.images, args.labels, args.stems, label_map)
    scores = evaluate(model.module, pairs, model.info.class_names, tile=args.tile or model.info.tile,
                      device=model.device, logit_bias=None if args.raw else model.info.logit_bias, tta=args.tta)
    print(json.dumps(scores.as_dict()) if args.json else scores.table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nanoclass", description=__doc__.split("\n")[0])
    ap.add_argument("--version", action="version", version=__version__)
    ap.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models")
    p.add_argument("--json", action="store_true", help="machine-readable: name, task, class names in index order")
    p.set_defaults(func=cmd_models)

    for analysis in analyses():
        p = sub.add_parser(analysis.name, help=analysis.help)
        kinds = ", ".join(analysis.inputs) if analysis.inputs else "TIFF, MRC, DM3/DM4, EMD, SER, PNG, zarr / OME-Zarr"
        p.add_argument("images", nargs="+", help=f"files, folders or glob patterns ({kinds})")
        p.add_argument("--out", required=True, help=analysis.outputs)
        for option in analysis.all_options:
            option.add_to(p)
        p.add_argument("--quiet", action="store_true")
        p.set_defaults(func=cmd_analysis)

    p = sub.add_parser("demo", help="segment the bundled sample section")
    p.add_argument("--out", default="nanoclass-demo")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train-homogeneity", help="train a nanofibre patch classifier from labelled micrographs")
    p.add_argument("--data", required=True, help="folder with one sub-folder per class: non_defective, "
                   "slightly_defective, defective")
    p.add_argument("--name", required=True, type=_model_name,
                   help="name to register the model under (letters, digits, . _ + -)")
    p.add_argument("--mode", choices=["two", "three"], default="two", help="HNF/NHNF, or three defect grades")
    p.add_argument("--architecture", choices=["texture", "cnn"], default="texture",
                   help="fibre-morphology or texture statistics + logistic regressions, the recipe of the shipped "
                        "default model: the feature set and regularisation are chosen with whole samples (file stem up "
                        "to the first _ or -) held out (fitted in a minute; no defect map of its own; the CNN options "
                        "below do not apply), or a FibreCNN")
    p.add_argument("--strategy", choices=["instance", "mil"], default="instance",
                   help="patches take the image label (instance) or learn through pooled bags (mil)")
    p.add_argument("--head", choices=["fc", "gap"], default="fc")
    p.add_argument("--dropout", type=_num(float, 0, 0.99), default=0.0)
    p.add_argument("--steps", type=COUNT, default=200, help="training steps (batches of --batch-size patches)")
    p.add_argument("--batch-size", type=COUNT, default=32)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--init-from", help="registered model or file to fine-tune")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_homogeneity)

    p = sub.add_parser("train-liposome-detector",
                       help="fine-tune a liposome detector on objects you drew or corrected")
    p.add_argument("--image", required=True, nargs="+", help="the micrograph(s), recorded at one pixel size")
    p.add_argument("--labels", required=True, nargs="+", help="instance labels of the corrected objects, one per "
                   "image in the same order, same shape (TIFF, or the first labels/ image of an OME-Zarr)")
    p.add_argument("--pixel-size", type=PIXEL_SIZE, required=True, help="nm per pixel of the micrograph")
    p.add_argument("--name", required=True, type=_model_name, help="name to register the fine-tuned detector under")
    p.add_argument("--objects", type=_num(int, 1), nargs="+",
                   help="labels to learn from (default: all); with --detection, the unchanged ones you confirm")
    p.add_argument("--detection", nargs="+", help="the labels the analysis gave before your corrections, one per "
                   "image (<stem>_labels.tif of 'nanoclass liposomes'): learn only what you drew, redrew, confirmed or "
                   "erased (as background)")
    p.add_argument("--complete", action="store_true", help="the labels mark every liposome of their images: every "
                   "other pixel is learnt as background (a longer run that can learn another image formation)")
    p.add_argument("--detector", help="detector to start from (default: the analysis' choice for the pixel size)")
    p.add_argument("--epochs", type=COUNT, help="epochs of 20 steps (default: 5, or 20 with --complete)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_liposome_detector)

    p = sub.add_parser("simulate-liposomes", help="write simulated cryo-TEM liposome fields with ground truth")
    p.add_argument("--out", required=True, help="output folder (<field>.tif, <field>_labels.tif, objects.csv, fields.csv)")
    p.add_argument("--n", type=_num(int, 1, 100_000), default=10, help="number of fields")
    p.add_argument("--size", type=_num(int, 64, 16384), default=512, help="side of a field in pixels")
    p.add_argument("--pixel-size", type=PIXEL_SIZE, nargs="+", default=[2.5], metavar="NM",
                   help="nm per pixel, or MIN MAX: each field's drawn log-uniformly (e.g. 0.1 5)")
    p.add_argument("--diameter", type=_num(float, 1), nargs=2, metavar=("MIN", "MAX"),
                   help="liposome diameters in nm (default 30 300); each is capped to fit its field")
    imaging = p.add_mutually_exclusive_group()
    imaging.add_argument("--microscope", action="store_true",
                         help="image formation with astigmatism, detector MTF, ice crystals / contamination and "
                              "defocus 0.5-5 um, all drawn per field (docs/liposomes.md)")
    imaging.add_argument("--realistic", action="store_true",
                         help="--microscope plus bilayers as projected shells, a dose per A^2 (2-50), ice as a "
                              "random phase object, particulate cargo, irregular shapes and, on half of the fields, "
                              "background flattening (docs/liposomes.md)")
    p.add_argument("--mix", choices=["study", "balanced"], default="study", help="class frequencies")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--format", choices=FORMATS, default="tif",
                   help="tif: image and labels TIFFs; ome-zarr: one OME-Zarr per field, labels under labels/instances")
    p.set_defaults(func=cmd_simulate_liposomes)

    p = sub.add_parser("batch", help="run an analysis over many images: resumable, on a dask cluster if asked")
    p.add_argument("analysis", nargs="?", choices=[a.name for a in analyses()])
    p.add_argument("inputs", nargs="*", help="files, folders or glob patterns (TIFF, PNG, zarr / OME-Zarr)")
    p.add_argument("--out", help="output folder: <stem>/ per input, run_summary.csv/json, batch_config.json")
    p.add_argument("--config", help="repeat a run from its batch_config.json")
    p.add_argument("--model", help="model (the detector for liposomes)")
    p.add_argument("--pixel-size", type=PIXEL_SIZE, help="nm per pixel (liposomes)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other option of the analysis by its "
                   "name, e.g. --set cam=true --set tile=1024 --set classifiers.lamellarity=NAME")
    p.add_argument("--format", choices=FORMATS, default="tif", help="how label images and maps are saved")
    p.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs are complete")
    p.add_argument("--workers", type=_num(int, 1, 256), default=1,
                   help="local worker processes (dask LocalCluster when > 1)")
    p.add_argument("--scheduler", help="address of a running dask.distributed scheduler")
    p.add_argument("--log", choices=["bar", "json", "quiet"], default="bar",
                   help="progress bars (run with ETA, and the current input), JSON lines on stderr, or nothing")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("evaluate-seg", help="per-class IoU, mIoU and confusion matrix of a model on labelled images")
    p.add_argument("--images", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--stems", nargs="*", default=None, help="file stems to evaluate (default: all)")
    p.add_argument("--preset", choices=["drosophila"])
    p.add_argument("--model", default="drosophila-seunet")
    p.add_argument("--tile", type=_num(int, 16, 65536), default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--raw", action="store_true", help="plain argmax, without the model's calibrated decision offsets")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (8 rotations/flips), as segment --tta")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate_seg)

    p = sub.add_parser("train-seg", help="train or fine-tune a segmentation model; saves it to the registry")
    p.add_argument("--images", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--train-stems", nargs="*", default=None, help="file stems for training (default: all)")
    p.add_argument("--val-images")
    p.add_argument("--val-labels")
    p.add_argument("--val-stems", nargs="*", default=None)
    p.add_argument("--preset", choices=["drosophila"], help="label values and classes of a known data set")
    p.add_argument("--classes", help="class names, comma-separated, in label-index order")
    p.add_argument("--name", required=True, type=_model_name,
                   help="name to register the model under (letters, digits, . _ + -)")
    p.add_argument("--init-from", help="registered model or file to fine-tune")
    p.add_argument("--width", type=_num(int, 1, 256), default=12)
    p.add_argument("--depth", type=_num(int, 1, 8), default=4)
    p.add_argument("--frem-b", type=_num(int, 0), default=0, help="FREM: bottleneck channels enhanced (0 = off)")
    p.add_argument("--frem-x", type=_num(float, 1e-6), default=250.0, help="FREM: enhancement factor")
    p.add_argument("--deep-supervision", action="store_true")
    p.add_argument("--epochs", type=COUNT, default=30)
    p.add_argument("--iters", type=COUNT, default=50, help="iterations per epoch")
    p.add_argument("--batch-size", type=COUNT, default=4)
    p.add_argument("--crop", type=_num(int, 32, 8192), default=256)
    p.add_argument("--augmentation", choices=["basic", "stack"], default="basic",
                   help="basic: rotations, flips, contrast, noise; stack: also scale ±20 %%, gamma, blur and uneven "
                        "illumination, for a model that must work on other stacks and microscopes")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--pixel-size", type=PIXEL_SIZE, default=None, help="nm per pixel of the training images")
    p.add_argument("--run-dir", help="checkpoint folder (enables --resume)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--search-trials", type=_num(int, 0), default=0, help="TPE search of FREM B and X with this many trials")
    p.add_argument("--no-calibrate", action="store_true",
                   help="skip fitting the decision offsets on the training images after training")
    p.add_argument("--unlabelled", metavar="DIR",
                   help="self-training: a model trained on the labelled images labels these where it is sure, "
                        "and the model registered is trained afresh on both")
    p.add_argument("--pseudo-threshold", type=_num(float, 0.0, 1.0), default=None,
                   help="with --unlabelled: the probability from which an unlabelled pixel becomes a target "
                        "(default 0.9)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_seg)
    return ap


class _Messages(logging.Handler):
    """The package's log records (which pixel size an input used, warnings) as
    ``nanoclass COMMAND: [warning: ]message`` lines on stderr, or JSON events with ``--log json``."""

    def __init__(self, command: str, as_json: bool = False) -> None:
        super().__init__()
        self.command, self.as_json = command, as_json

    def emit(self, record: logging.LogRecord) -> None:
        warning = record.levelno >= logging.WARNING
        if self.as_json:
            line = json.dumps({"event": "message", "level": "warning" if warning else "info",
                               "message": record.getMessage()})
        else:
            line = f"nanoclass {self.command}: {'warning: ' if warning else ''}{record.getMessage()}"
        print(line, file=sys.stderr, flush=True)


def _log_to_stderr(args: argparse.Namespace) -> logging.Handler:
    """Print the package's messages while ``args``' command runs (warnings only with --quiet)."""
    logger = logging.getLogger("napari_nanoclass")
    handler = _Messages(args.command, getattr(args, "log", "") == "json")
    handler.setLevel(logging.WARNING if getattr(args, "quiet", False) or getattr(args, "log", "") == "quiet"
                     else logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # printed once, here, not again by the root logger
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr with the documented exit status
    (the traceback only with ``--debug``)."""
    args = build_parser().parse_args(argv)
    logger = logging.getLogger("napari_nanoclass")
    level, propagate = logger.level, logger.propagate
    handler = _log_to_stderr(args)
    try:
        return _run(args)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _run(args: argparse.Namespace) -> int:
    from napari_nanoclass.core.outputs import OutputError
    from napari_nanoclass.io.images import ImageError
    from napari_nanoclass.models.registry import ModelError

    try:
        return args.func(args)
    except (ImageError, ModelError, ValueError) as exc:
        status = 2
        error = exc
    except (OutputError, OSError) as exc:
        status = 3
        error = exc
    if args.debug:
        raise error
    print(f"nanoclass {args.command}: error: {error}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
