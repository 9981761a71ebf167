"""The effective halo of a shipped dense model: how far from a tile's core its output still
depends on the input, measured rather than bounded.

    python benchmarks/engine_halo.py [--model drosophila-seunet] [--size 1536] [--tile 256]
        [--halos 48 64 96 128 160 208]
    python benchmarks/engine_halo.py --model liposome-detector --halos 32 48 64 80 96 [--store 80]

Tiles of ``--tile`` px (many seams) are run with each halo on one image and compared with one
whole-image forward: the largest logit difference and the share of labels (argmax) that differ.
The image is a mosaic of real ssTEM sections for the segmentation model and, for a liposome
detector, a simulated cryo-TEM field at the detector's own pixel size (study mix, 20–300 nm,
seed ``--seed``, far from training seeds), z-scored as the analysis shows it
(``liposomes.predict.working_image``). The architecture's receptive radius (the default halo) is a
bound; a smaller halo with identical labels and logits within a stated tolerance can be stored with
the model (``halo`` in its metadata) so that tiled runs on images larger than one window compute
less: ``--store H`` writes halo H and this measurement into the shipped model's metadata (the same
weights; the registry's checksum is updated), if H kept every label and the logits within
``TOLERANCE``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import torch

from napari_nanoclass import engine
from napari_nanoclass.core.progress import run_sync
from napari_nanoclass.io.images import image_stats
from napari_nanoclass.models.registry import LoadedModel, load_model, save_model

MODEL = "drosophila-seunet"
FIELD_SEED = 880_000  # simulated fields used for nothing else
TOLERANCE = 1e-3  # largest logit difference a stored halo may give, labels identical


def halo_image(loaded: LoadedModel, size: int, seed: int) -> tuple[np.ndarray, list[tuple[float, float]] | None, str]:
    """(image, the engine's ``stats``, what the image is): a liposome detector's z-scored simulated
    field (the engine then normalises nothing more, as in the analysis), else an ssTEM mosaic it
    z-scores itself."""
    if loaded.info.name.startswith("liposome-detector"):
        from napari_nanoclass.liposomes.predict import working_image
        from napari_nanoclass.liposomes.simulator import STUDY_MIX, SimulationConfig, simulate_field

        px = float(loaded.info.pixel_size_nm)
        field = simulate_field(SimulationConfig(shape=(size, size), pixel_size_nm=px, diameter_nm=(20.0, 300.0),
                                                mix=STUDY_MIX), seed)
        return working_image(field.image, px, px)[0], [(0.0, 1.0)], f"simulated field, seed {seed}"
    from engine import mosaic_image  # benchmarks/engine.py: this script's folder is first on the path

    return mosaic_image(size), None, "mosaic of stack-2 sections"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--size", type=int, default=1536)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--halos", type=int, nargs="+", default=[48, 64, 96, 128, 160, 208])
    ap.add_argument("--seed", type=int, default=FIELD_SEED)
    ap.add_argument("--store", type=int, help="write this halo into the shipped model's metadata")
    args = ap.parse_args()
    if args.store is not None and args.store not in args.halos:
        ap.error("--store must be one of the measured --halos")
    loaded = load_model(args.model)
    image, stats, what = halo_image(loaded, args.size, args.seed)
    mean, std = stats[0] if stats else image_stats(image)
    x = torch.from_numpy(((image - mean) / std).astype(np.float32))[None, None]
    with torch.inference_mode():
        whole = loaded.module.eval()(x)[0].numpy()
    labels = whole.argmax(0)
    print(f"model {args.model}: receptive radius {loaded.module.receptive_radius:g} px, halo now {loaded.halo}")
    rows = {}
    for halo in args.halos:
        tiled = run_sync(engine.predict_dense(loaded.module, image, tile=args.tile, halo=halo, stats=stats,
                                              postprocess=None))
        rows[halo] = {"halo": halo, "max_logit_diff": float(np.abs(tiled - whole).max()),
                      "labels_differ": float((tiled.argmax(0) != labels).mean())}
        print(json.dumps(rows[halo]), flush=True)
    if args.store is not None:
        store(loaded, rows, what, args)


def store(loaded: LoadedModel, rows: dict[int, dict], image: str, args: argparse.Namespace) -> None:
    """Write halo ``args.store`` and what it was measured on (``image``) into ``loaded``'s file,
    with the measurement of the next smaller halo tried beside it."""
    row = rows[args.store]
    if row["labels_differ"] or row["max_logit_diff"] > TOLERANCE:
        raise SystemExit(f"halo {args.store} px is outside the tolerance: {row}")
    smaller = [h for h in rows if h < args.store]
    below = rows[max(smaller)] if smaller else None
    measured = (f"benchmarks/engine_halo.py: {args.size}² {image}, {args.tile} px tiles; max logit change "
                f"{row['max_logit_diff']:.2g}, no label changed"
                + (f" ({below['halo']} px: {below['max_logit_diff']:.2g}, {below['labels_differ']:.4%} of the labels)"
                   if below else ""))
    effective = {"halo": args.store, "measured": measured, "receptive_radius": float(loaded.module.receptive_radius),
                 "tolerance": f"logits within {TOLERANCE:g} of one whole-image forward, labels identical"}
    info = replace(loaded.info, halo=args.store, training={**loaded.info.training, "effective_halo": effective})
    path = save_model(loaded.module, info, loaded.path.parent, filename=loaded.path.name)
    print(f"stored halo {args.store} px in {path}")


if __name__ == "__main__":
    main()
