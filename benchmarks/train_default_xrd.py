"""Train the shipped XRD model, ``xrd-thinfilm``, into src/napari_nanoclass/weights/.

    python benchmarks/train_default_xrd.py [--seed 0] [--epochs 12]

Trained only on patterns simulated from ``napari_nanoclass.xrd.structures`` with the recipe of
``XrdConfig`` (the one benchmarks/xrd.py evaluates over several seeds); no measured pattern is
used. Needs pymatgen (``pip install napari-nanoclass[xrd-train]``); CPU, a few minutes.
"""

from __future__ import annotations

import argparse
import json

import torch

from napari_nanoclass.models.registry import PACKAGE_DIR
from napari_nanoclass.xrd import DEFAULT_MODEL
from napari_nanoclass.xrd.simulate import peak_table
from napari_nanoclass.xrd.structures import COMPOUNDS, classes
from napari_nanoclass.xrd.train import XrdConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=XrdConfig.epochs)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tables = [peak_table(c) for c in COMPOUNDS]
    config = XrdConfig(name=DEFAULT_MODEL, seed=args.seed, epochs=args.epochs)
    result = train(tables, classes(), config, register=True, directory=PACKAGE_DIR, log=print)
    print(json.dumps({"name": DEFAULT_MODEL, "file": str(result.model.path), "history": result.history[-1]}))


if __name__ == "__main__":
    main()
