"""Large liposome images analysed block by block: time and peak memory for several block sizes.

    python benchmarks/liposomes_blocks.py [--side 4096] [--mosaic 1] [--pixel-size 2.5] [--diameter 30 300]
        [--block-px 2048 4096]

A study-mix field of ``--side``² pixels is simulated at ``--pixel-size`` (vesicles as dense as in
the simulator's 512² fields; seed 7) and, with ``--mosaic 2``, mirrored into a 2 × 2 mosaic twice
as wide. It is analysed once per ``liposomes.predict.BLOCK_PX`` value, each in a fresh process
(peak RSS is a process's), and scored against the simulated vesicles (mask IoU ≥ 0.5); the
results are compared with the first block size's: the same foreground, the same objects (by
centroid) and which of their table columns differ. The field must be large enough to be analysed
block by block (over ``STREAM_ABOVE`` pixels at the finest detector's scale).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


def one(block_px: int, folder: Path, pixel_size: float, out: Path) -> None:
    """Analyse the saved field with ``BLOCK_PX = block_px``; labels, rows, seconds, peak RSS and the
    detection scores to ``out``."""
    from napari_nanoclass.core.metrics import match_instances
    from napari_nanoclass.liposomes import predict

    predict.BLOCK_PX = block_px
    image = np.load(folder / "field.npy")
    start = time.perf_counter()
    result = predict.analyse(image, pixel_size)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    labels = np.asarray(result.labels)
    np.save(out.with_suffix(".npy"), labels)
    scores = match_instances(labels, np.load(folder / "truth.npy"))
    out.with_suffix(".json").write_text(json.dumps({"seconds": seconds, "peak_mib": peak, "objects": result.objects,
                                                    "scores": scores}, default=str))


def field(side: int, mosaic: int, pixel_size: float, diameter: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(image, true instance labels) of the simulated field, mirrored into a ``mosaic`` × ``mosaic``
    mosaic (each copy's vesicles numbered apart)."""
    from napari_nanoclass.liposomes.simulator import STUDY_MIX, SimulationConfig, simulate_field

    area = (side / 512) ** 2  # the simulator's 512² fields hold 6–14 vesicles
    config = SimulationConfig(shape=(side, side), pixel_size_nm=pixel_size, diameter_nm=diameter, mix=STUDY_MIX,
                              objects=(int(6 * area), int(14 * area)))
    simulated = simulate_field(config, 7)
    extra = ((0, side * (mosaic - 1)),) * 2
    image = np.pad(simulated.image.astype(np.float32), extra, mode="symmetric")  # mirrored copies: no seams
    labels = np.pad(simulated.labels.astype(np.int32), extra, mode="symmetric")
    copy = np.arange(mosaic**2).reshape(mosaic, mosaic).repeat(side, 0).repeat(side, 1)
    return image, np.where(labels > 0, labels + copy * int(labels.max()), 0).astype(np.int32)


def compared(first: Path, other: Path) -> str:
    """How ``other``'s result differs from ``first``'s."""
    a, b = (json.loads(p.with_suffix(".json").read_text())["objects"] for p in (first, other))
    by_a, by_b = ({(round(float(o["centroid_y_px"]), 3), round(float(o["centroid_x_px"]), 3)): o for o in rows}
                  for rows in (a, b))
    same_foreground = np.array_equal(np.load(first.with_suffix(".npy")) > 0, np.load(other.with_suffix(".npy")) > 0)
    columns: Counter = Counter(key for c in by_a if c in by_b for key in by_a[c]
                               if key != "label" and by_a[c][key] != by_b[c][key])
    return (f"same foreground: {same_foreground}; same objects: {set(by_a) == set(by_b)}; "
            f"objects with a column that differs, by column: {dict(columns) or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=4096)
    ap.add_argument("--mosaic", type=int, default=1)
    ap.add_argument("--pixel-size", type=float, default=2.5)
    ap.add_argument("--diameter", type=float, nargs=2, default=[30.0, 300.0])
    ap.add_argument("--block-px", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--one", nargs=3, metavar=("BLOCK_PX", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(int(args.one[0]), Path(args.one[1]), args.pixel_size, Path(args.one[2]))
        return
    with tempfile.TemporaryDirectory() as folder:
        image, truth = field(args.side, args.mosaic, args.pixel_size, tuple(args.diameter))
        np.save(Path(folder) / "field.npy", image)
        np.save(Path(folder) / "truth.npy", truth)
        del image, truth
        outs = []
        for block_px in args.block_px:
            out = Path(folder) / f"block{block_px}"
            subprocess.run([sys.executable, __file__, "--one", str(block_px), folder, str(out),
                            "--pixel-size", str(args.pixel_size)], check=True)
            record = json.loads(out.with_suffix(".json").read_text())
            tp, fp, fn, f1 = (record["scores"][k] for k in ("tp", "fp", "fn", "f1"))
            print(f"BLOCK_PX {block_px}: {len(record['objects'])} objects, {record['seconds']:.1f} s, "
                  f"peak RSS {record['peak_mib']:.0f} MiB; against the simulated vesicles TP {tp}, FP {fp}, "
                  f"FN {fn}, F1 {f1:.3f}", flush=True)
            if outs:
                print(f"  against BLOCK_PX {args.block_px[0]}: {compared(outs[0], out)}", flush=True)
            outs.append(out)


if __name__ == "__main__":
    main()
