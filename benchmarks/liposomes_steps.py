"""The liposome analysis' CPU steps outside the networks, timed against another source tree's.

    git worktree add /tmp/base COMMIT
    python benchmarks/liposomes_steps.py --base /tmp/base/src [--fields 3] [--repeats 7] [--pixel-size 2.5]

Whole-analysis timings on a shared host drift more than a change to these steps moves them
(docs/liposomes.md, "Its cost"); so both versions of each step run here in one process,
alternately, on the same inputs: the detectors' instance post-processing
(``instances_from_probabilities``, on the probabilities both detectors give for each study field),
the wall and masked-local crops and the handcrafted features (on the fields' true objects, in as
many threads as torch uses, as the analysis cuts them) and the objects' measurements (diameter,
maximum width); and the whole analysis, networks included (each tree's ``predict`` with its own
``objects``; the other modules are this tree's). Prints the median seconds per field of each version, their
ratio and the range of the paired ratios, and checks that both give the same arrays.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from napari_nanoclass.liposomes import objects as new_objects
from napari_nanoclass.liposomes import predict as new_predict
from napari_nanoclass.liposomes.simulator import STUDY_MIX, SimulationConfig, simulate_field

SEED = 560_000  # benchmarks/liposomes_scale.py's fields


def load(name: str, path: Path) -> ModuleType:
    """A module of the other tree under its own name (its absolute imports resolve to this tree)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def detector_outputs(image: np.ndarray, pixel_size: float) -> list[tuple[np.ndarray, tuple, dict]]:
    """(probabilities, arguments) of every ``instances_from_probabilities`` call the analysis of
    ``image`` makes (one per detector it runs), caught while it runs."""
    caught = []
    original = new_predict.instances_from_probabilities

    def catch(probabilities: np.ndarray, *args: object, **kwargs: object) -> np.ndarray:
        caught.append((probabilities, args, kwargs))
        return original(probabilities, *args, **kwargs)

    new_predict.instances_from_probabilities = catch
    try:
        new_predict.analyse(image, pixel_size)
    finally:
        new_predict.instances_from_probabilities = original
    return caught


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the other tree's src folder")
    ap.add_argument("--fields", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--pixel-size", type=float, default=2.5)
    args = ap.parse_args()
    package = args.base / "napari_nanoclass" / "liposomes"
    versions = {"base": (load("base_objects", package / "objects.py"), load("base_predict", package / "predict.py")),
                "this": (new_objects, new_predict)}
    versions["base"][1].liposome_objects = versions["base"][0]  # the other tree's analysis cuts its own crops
    px, threads = args.pixel_size, torch.get_num_threads()
    fields = [simulate_field(SimulationConfig(pixel_size_nm=px, mix=STUDY_MIX), SEED + i) for i in range(args.fields)]
    truths = [(((f.image - f.image.mean()) / f.image.std()).astype(np.float32), f.labels.astype(np.int32))
              for f in fields]
    detected = [d for f in fields for d in detector_outputs(f.image, px)]
    steps = {
        "post-processing": lambda o, p: [p.instances_from_probabilities(pr, *args, **kwargs)
                                         for pr, args, kwargs in detected],
        "wall crops": lambda o, p: [o.wall_crops(image, labels, px, 32, threads) for image, labels in truths],
        "masked-local crops": lambda o, p: [o.crops(image, labels, "masked-local", 32, threads=threads)
                                            for image, labels in truths],
        "features": lambda o, p: [o.features(image, labels, px, threads) for image, labels in truths],
        "measurements": lambda o, p: [o.measure(labels, px) for _, labels in truths],
        "whole analysis": lambda o, p: [p.analyse(f.image, px).labels for f in fields],
    }
    for step, run in steps.items():
        results = {tag: run(*modules) for tag, modules in versions.items()}  # warm, and compared
        same = all(np.array_equal(a, b) for a, b in zip(results["base"], results["this"]))
        seconds: dict[str, list[float]] = {tag: [] for tag in versions}
        for _ in range(args.repeats):
            for tag, modules in versions.items():
                start = time.perf_counter()
                run(*modules)
                seconds[tag].append((time.perf_counter() - start) / args.fields)
        base, this = (np.array(seconds[tag]) for tag in ("base", "this"))
        paired = this / base
        print(f"{step}: {np.median(base) * 1e3:.1f} ms per field before, {np.median(this) * 1e3:.1f} ms now "
              f"({np.median(this) / np.median(base):.2f}x; paired {paired.min():.2f}-{paired.max():.2f}); "
              f"same arrays: {same}")


if __name__ == "__main__":
    main()
