"""The effective halo of the shipped segmentation model: how far from a tile's core its output
still depends on the input, measured rather than bounded.

    python benchmarks/engine_halo.py [--size 1536] [--tile 256] [--halos 48 64 96 128 160 208]

Tiles of ``--tile`` px (many seams) are run with each halo on a mosaic of real ssTEM sections and
compared with one whole-image forward: the largest logit difference and the share of labels that
differ. The architecture's receptive radius (the default halo) is a bound; a smaller halo with
identical labels and logits within a stated tolerance can be stored with the model (``halo`` in
its metadata) so that tiled runs on images larger than one window compute less.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from napari_nanoclass import engine
from napari_nanoclass.core.progress import run_sync
from napari_nanoclass.io.images import image_stats
from napari_nanoclass.models.registry import load_model

MODEL = "drosophila-seunet"


def main() -> None:
    from engine import mosaic_image  # benchmarks/engine.py: this script's folder is first on the path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1536)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--halos", type=int, nargs="+", default=[48, 64, 96, 128, 160, 208])
    args = ap.parse_args()
    loaded = load_model(MODEL)
    image = mosaic_image(args.size)
    mean, std = image_stats(image)
    x = torch.from_numpy(((image - mean) / std).astype(np.float32))[None, None]
    with torch.inference_mode():
        whole = loaded.module.eval()(x)[0].numpy()
    labels = whole.argmax(0)
    print(f"model {MODEL}: receptive radius {loaded.module.receptive_radius:g} px, default halo {loaded.halo}")
    for halo in args.halos:
        tiled = run_sync(engine.predict_dense(loaded.module, image, tile=args.tile, halo=halo, postprocess=None))
        row = {"halo": halo, "max_logit_diff": float(np.abs(tiled - whole).max()),
               "labels_differ": float((tiled.argmax(0) != labels).mean())}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
