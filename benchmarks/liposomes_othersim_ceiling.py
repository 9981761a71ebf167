"""How far the shipped classifiers' recipes go on othersim when trained on othersim itself (a
diagnostic ceiling for #23's transfer targets; nothing here is shipped or registered).

    python benchmarks/liposomes_othersim_ceiling.py [--fields 400] [--seed 0] [--out DIR]
        [--pixel-sizes 1 2.5] [--score-fields 20]

Each problem's shipped inputs and network (encapsulation: LipNet-4 on masked-local crops with the
handcrafted features; lamellarity: LipNet-4 on wall crops, one member of the shipped ensemble's
recipe), 25 epochs, trained on the true objects of ``--fields`` othersim fields of seeds of their
own (400 000 …, alternately at 1 and 2.5 nm/px, balanced classes) and scored as
``liposomes_othersim.py --classifier`` scores a classifier: macro-F1 on the true objects of its
validation fields. Set beside the shipped classifiers' figures there, it separates what the
networks cannot tell apart in othersim's images from what they did not learn from this project's
simulator.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from napari_nanoclass.liposomes.predict import working_image
from napari_nanoclass.liposomes.train import ClassifierConfig, objects_from_fields, train_classifier
from napari_nanoclass.models.registry import save_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import othersim  # noqa: E402  (benchmarks/ is not a package)
from liposomes_othersim import SPLITS, classification  # noqa: E402

TRAIN_SEED = 400_000  # othersim fields to train on: none of the splits', the figure's or the corrections'
RECIPES = {"encapsulation": ("masked-local", True), "lamellarity": ("wall", False)}  # crops, handcrafted features


def training_fields(count: int) -> list[SimpleNamespace]:
    """Othersim fields as the classifiers' training expects them (z-scored image, instance labels,
    each object's classes), alternately at 1 and 2.5 nm/px: the scales the analysis classifies at."""
    fields = []
    for i in range(count):
        pixel_size = (1.0, 2.5)[i % 2]
        field = othersim.simulate(TRAIN_SEED + i, pixel_size_nm=pixel_size)
        image, _ = working_image(field.image, pixel_size, pixel_size)
        objects = [{"label": k + 1, "lamellarity": lam, "encapsulation": enc}
                   for k, (lam, enc) in enumerate(zip(field.lamellarity, field.encapsulation))]
        fields.append(SimpleNamespace(image=image, labels=field.labels, objects=objects, pixel_size_nm=pixel_size))
    return fields


def train(fields: list[SimpleNamespace], seed: int, directory: Path) -> dict[str, str]:
    """One classifier per problem, written to ``directory``: problem -> path."""
    paths = {}
    for problem, (mode, feature_input) in RECIPES.items():
        start = time.perf_counter()
        objects = objects_from_fields(fields, mode=mode)
        config = ClassifierConfig(name=f"othersim-{problem}-ceiling", problem=problem, epochs=25, patience=25,
                                  feature_input=feature_input, input_mode=mode, seed=seed)
        result = train_classifier(objects, config, progress=False)
        info = replace(result.info, training=dict(result.info.training, decision=None))  # balanced decisions
        paths[problem] = str(save_model(result.module, info, directory, register=False))
        best = max(h["val_balanced_accuracy"] for h in result.history)
        print(f"{problem}: {len(objects)} objects, held-out balanced accuracy {best:.3f}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fields", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="where to keep the classifiers (default: a temporary folder)")
    ap.add_argument("--pixel-sizes", type=float, nargs="+", default=[1.0, 2.5])
    ap.add_argument("--score-fields", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.out or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        paths = train(training_fields(args.fields), args.seed, directory)
        for pixel_size in args.pixel_sizes:
            fields = [othersim.simulate(SPLITS["validation"] + i, pixel_size_nm=pixel_size)
                      for i in range(args.score_fields)]
            for problem, s in classification(fields, pixel_size, False, paths).items():
                print(f"{pixel_size:g} nm/px {problem}: macro-F1 {s['macro_f1']:.3f} on {s['objects']} true objects, "
                      f"confusion {s['confusion']}", flush=True)


if __name__ == "__main__":
    main()
