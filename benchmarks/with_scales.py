"""Run a liposome benchmark with the pixel-size-dependent choices of the analysis set otherwise.

    python benchmarks/with_scales.py [--fine-below NM] [--small-up-to NM] [--small-enlargement X]
        [--min-ring-snr S] [--tta]
        benchmarks/liposomes_scale.py ARGS…

``--fine-below`` sets ``liposomes.FINE_BELOW_NM`` (the coarsest pixel size sent to the fine detector,
with the varied-imaging detector beside it) and ``--small-up-to`` ``liposomes.SMALL_UP_TO_NM`` (the
coarsest pixel size at which the small-vesicle detector runs beside the standard one) for that one
run, so that the benchmark's ``auto`` rows compare the choices of docs/liposomes.md ("Where the fine
pair takes over", "The small-vesicle detector at coarser scales"). The second look at half the
scale stays with the detectors that work at 1 nm/px. ``--min-ring-snr`` sets
``liposomes.predict.MIN_RING_SNR`` (0 keeps every detection, as before "Faint specks at coarse
pixel sizes"). ``--small-enlargement`` sets
``liposomes.predict.SMALL_MAX_ENLARGEMENT`` (the small-vesicle detector sees a coarse image enlarged
at most this many times). ``--tta`` runs every analysis of the benchmark with ``tta=True`` (test-time
augmentation: each detector averages over the image's 8 rotations and flips).
"""

from __future__ import annotations

import argparse
import functools
import runpy
import sys
from pathlib import Path

import napari_nanoclass.liposomes as liposomes
from napari_nanoclass.liposomes import predict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fine-below", type=float, default=liposomes.FINE_BELOW_NM)
    ap.add_argument("--small-up-to", type=float, default=liposomes.SMALL_UP_TO_NM)
    ap.add_argument("--small-enlargement", type=float, default=predict.SMALL_MAX_ENLARGEMENT)
    ap.add_argument("--min-ring-snr", type=float, default=predict.MIN_RING_SNR)
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("script", type=Path)
    ap.add_argument("args", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    liposomes.FINE_BELOW_NM, liposomes.SMALL_UP_TO_NM = args.fine_below, args.small_up_to
    predict.MIN_RING_SNR, predict.SMALL_MAX_ENLARGEMENT = args.min_ring_snr, args.small_enlargement
    if args.tta:
        predict.analyse_steps = functools.partial(predict.analyse_steps, tta=True)
    sys.argv = [str(args.script), *args.args]
    sys.path.insert(0, str(args.script.resolve().parent))
    runpy.run_path(str(args.script), run_name="__main__")


if __name__ == "__main__":
    main()
