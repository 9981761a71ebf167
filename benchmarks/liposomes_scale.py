"""Liposome detection across recording pixel sizes, on unseen simulated fields.

    python benchmarks/liposomes_scale.py [--pixel-sizes 1 1.5 2 2.5 3 5] [--fields 10]
        [--detectors auto liposome-detector liposome-detector-fine PATH] [--diameter 20 300]
        [--imaging default astigmatism mtf contamination defocus microscope] [--small-detector NAME|PATH] [--seed N]
    python benchmarks/liposomes_scale.py --time-fields 3 [--pixel-sizes 2.5] [--imaging binned]   # s per field

Each field is simulated at the given pixel size (512² pixels, vesicles log-uniform in
``--diameter`` nm, the simulator's default defocus and dose, study class mix; seeds far from any
training seed), given to the analysis with its true pixel size, and scored one-to-one at mask
IoU ≥ 0.5 (``core.metrics.match_instances``). ``auto`` is the analysis' own choice of detector for
the pixel size (``liposomes.default_detector``, with the small-vesicle detector beside it where
``default_small_detector`` says); ``--small-detector`` runs one beside every detector.
``--imaging`` adds the simulator's microscope effects one at a time at their ``MICROSCOPE``
ranges (or all of them: ``microscope``), which the shipped detectors never saw in training;
``default`` is the image formation they were trained on. ``binned`` is ``default`` with the dose per
pixel growing with the pixel's area from the default's at 2.5 nm/px (``BINNED_FROM_NM``), as in an
image binned from a finer recording: the default dose is per pixel, so at 4–5 nm/px it is a tenth
of an electron per Å² or less, far noisier than micrographs recorded there. Same simulator
otherwise: this says whether the working scale and those effects are handled, not how real
micrographs fare (benchmarks/liposomes_real.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_nanoclass.core.metrics import match_instances
from napari_nanoclass.liposomes import DEFAULT_DETECTOR, default_detector
from napari_nanoclass.liposomes.predict import analyse
from napari_nanoclass.liposomes.simulator import MICROSCOPE, REALISTIC, STUDY_MIX, SimulationConfig, simulate_field
from napari_nanoclass.models.registry import load_model

BINNED_FROM_NM = 2.5  # --imaging binned: the default dose per pixel at this pixel size, scaled by the pixel's area
SCALE_SEED = 560_000  # beside liposomes_cv.py's test seeds, far from the training seeds (0 …, 100 000 …)
IMAGING = {"default": {}, "microscope": MICROSCOPE, "realistic": REALISTIC,
           **{name: {key: MICROSCOPE[key]} for name, key in (
    ("astigmatism", "astigmatism_nm"), ("mtf", "mtf_nyquist"), ("contamination", "contamination"),
    ("defocus", "defocus_nm"))}}


def pooled_detection(found_and_true: Iterable[tuple[Any, Any]]) -> dict:
    """Detection counts over (found, true) instance label pairs, matched at mask IoU ≥ 0.5, with
    precision, recall and F1 of the pooled counts (0 where undefined)."""
    totals = {"tp": 0, "fp": 0, "fn": 0}
    for found, true in found_and_true:
        scores = match_instances(found, true)
        for k in totals:
            totals[k] += scores[k]
    tp, fp, fn = totals["tp"], totals["fp"], totals["fn"]
    return {**totals, "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "f1": 2 * tp / max(2 * tp + fp + fn, 1)}


def field_detection(config: SimulationConfig, first_seed: int, n_fields: int, detector: object = None,
                    small_detector: object = None) -> dict:
    """:func:`pooled_detection` over ``n_fields`` simulated fields from ``first_seed``, each
    analysed at its true pixel size."""
    fields = (simulate_field(config, first_seed + i) for i in range(n_fields))
    return pooled_detection((analyse(f.image, f.pixel_size_nm, detector=detector, small_detector=small_detector).labels,
                             f.labels) for f in fields)


def field_config(pixel_size: float, diameter: tuple[float, float], imaging: str = "default") -> SimulationConfig:
    """The study-mix fields of ``--imaging``: ``binned`` is the default image formation with the
    dose per pixel scaled by the pixel's area from ``BINNED_FROM_NM``."""
    config = SimulationConfig(pixel_size_nm=pixel_size, diameter_nm=diameter, mix=STUDY_MIX,
                              **IMAGING.get(imaging, {}))
    if imaging == "binned":
        area = (pixel_size / BINNED_FROM_NM) ** 2
        config = replace(config, dose=(config.dose[0] * area, config.dose[1] * area))
    return config


def score(detector: str, pixel_size: float, n_fields: int, diameter: tuple[float, float],
          imaging: str = "default", small_detector: str | None = None, first_seed: int = SCALE_SEED) -> dict:
    config = field_config(pixel_size, diameter, imaging)
    chosen = None if detector == "auto" else load_model(Path(detector) if detector.endswith(".safetensors")
                                                         else detector)
    return field_detection(config, first_seed, n_fields, chosen, small_detector)


def timing(pixel_size: float, n_fields: int, repeats: int = 3, imaging: str = "default") -> dict[str, float]:
    """Median seconds of the whole analysis (detection, classification, summary) of a 512² study
    field at ``pixel_size`` (the simulator's default vesicle sizes, ``imaging`` as for scoring):
    the analysis' own detectors against the standard detector alone, alternated in one process so
    that both see the same machine."""
    import time

    import numpy as np

    fields = [simulate_field(field_config(pixel_size, SimulationConfig().diameter_nm, imaging), SCALE_SEED + i).image
              for i in range(n_fields)]
    analyse(fields[0], pixel_size)  # models loaded, caches warm
    seconds: dict[str, list[float]] = {"auto": [], DEFAULT_DETECTOR: []}
    for _ in range(repeats):
        for image in fields:
            for detector in seconds:
                start = time.perf_counter()
                analyse(image, pixel_size, detector=None if detector == "auto" else detector)
                seconds[detector].append(time.perf_counter() - start)
    return {detector: float(np.median(values)) for detector, values in seconds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pixel-sizes", type=float, nargs="+", default=[1.0, 1.5, 2.0, 2.5, 3.0, 5.0])
    ap.add_argument("--fields", type=int, default=10)
    ap.add_argument("--detectors", nargs="+", default=["auto"])
    ap.add_argument("--diameter", type=float, nargs=2, default=[20.0, 300.0])
    ap.add_argument("--imaging", nargs="+", choices=[*IMAGING, "binned"], default=["default"])
    ap.add_argument("--small-detector", help="run this small-vesicle detector beside every detector")
    ap.add_argument("--seed", type=int, default=SCALE_SEED,
                    help="first field's seed (default: the reported fields; e.g. 590000 for fields to choose on; "
                         "not used by --time-fields)")
    ap.add_argument("--time-fields", type=int, help="time the analysis on this many fields instead")
    args = ap.parse_args()
    if args.time_fields:
        for pixel_size in args.pixel_sizes:
            for imaging in args.imaging:
                medians = timing(pixel_size, args.time_fields, imaging=imaging)
                print(f"{pixel_size:g} nm/px, {imaging}, median s per 512² field: "
                      + ", ".join(f"{name} {value:.3f}" for name, value in medians.items()), flush=True)
        return
    print("| detector | nm/px | imaging | P | R | F1 |\n|---|---|---|---|---|---|")
    for detector in args.detectors:
        for pixel_size in args.pixel_sizes:
            for imaging in args.imaging:
                s = score(detector, pixel_size, args.fields, tuple(args.diameter), imaging, args.small_detector,
                          args.seed)
                name = f"auto ({default_detector(pixel_size)})" if detector == "auto" else detector
                name += f" + {args.small_detector}" if args.small_detector else ""
                print(f"| {name} | {pixel_size:g} | {imaging} | {s['precision']:.3f} | {s['recall']:.3f} | "
                      f"{s['f1']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
