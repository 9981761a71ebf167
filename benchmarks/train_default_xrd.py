"""Train the shipped XRD model, ``xrd-thinfilm``, into src/napari_nanoclass/weights/.

    python benchmarks/train_default_xrd.py [--seed 0] [--data ../shared/data/xrd-thinfilm]
    python benchmarks/train_default_xrd.py --simulated-only [--seed 0] [--epochs 12]

By default with ``xrd.train.measured_recipe``: patterns simulated from
``napari_nanoclass.xrd.structures`` and augmented copies of *all* the measured patterns of
``--data`` (protocol B of docs/xrd.md; benchmarks/xrd_measured_cv.py judges this recipe by
cross-validation over films, the shipped model itself has seen every film). ``--simulated-only``
trains the recipe of ``XrdConfig`` instead, with nothing measured (protocol A,
benchmarks/xrd.py). Needs pymatgen (``pip install napari-nanoclass[xrd-train]``); CPU, a few minutes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from napari_nanoclass.models.registry import PACKAGE_DIR
from napari_nanoclass.xrd import DEFAULT_MODEL
from napari_nanoclass.xrd.patterns import Preparation
from napari_nanoclass.xrd.simulate import peak_table
from napari_nanoclass.xrd.structures import COMPOUNDS, classes
from napari_nanoclass.xrd.train import XrdConfig, load_labelled, measured_recipe, train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "xrd-thinfilm"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--simulated-only", action="store_true")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tables, names = [peak_table(c) for c in COMPOUNDS], classes()
    overrides = {"name": DEFAULT_MODEL, "seed": args.seed, **({"epochs": args.epochs} if args.epochs else {})}
    if args.simulated_only:
        config, measured = XrdConfig(**overrides), None
    else:
        config, measured = measured_recipe(**overrides), load_labelled(args.data, names, Preparation())
    result = train(tables, names, config, measured=measured, register=True, directory=PACKAGE_DIR, log=print)
    print(json.dumps({"name": DEFAULT_MODEL, "file": str(result.model.path), "data": result.model.info.training["data"],
                      "history": result.history[-1]}))


if __name__ == "__main__":
    main()
