"""Channels-last on the CPU: tiled ``segment()`` of a 2048² image with the shipped model, the
engine's layout (channels-last weights) against the contiguous layout, alternating, same run.

    python benchmarks/engine_layout.py [--repeats 2]

Prints each run's seconds, the mean ratio, and whether the labels are identical.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "drosophila-vnc" / "unlabeled"


def mosaic() -> np.ndarray:
    """A 2048² image: four 1024² sections of stack 2."""
    tiles = [tifffile.imread(DATA / f"{i:02d}.tif") for i in range(4)]
    return np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from napari_nanoclass import load_model, segment

    image, model = mosaic(), load_model("drosophila-seunet")
    segment(image[:512, :512], model)  # warm-up
    convert = torch.nn.Module.to
    times: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    labels: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for layout in times:
            model.module.to(memory_format=torch.contiguous_format)
            if layout == "contiguous":  # keep the engine from converting it for this run
                torch.nn.Module.to = lambda self, *a, **k: (self if k.get("memory_format") is torch.channels_last
                                                            else convert(self, *a, **k))
            start = time.perf_counter()
            labels[layout] = np.asarray(segment(image, model).labels)
            times[layout].append(time.perf_counter() - start)
            torch.nn.Module.to = convert
            print(f"{layout:14s} {times[layout][-1]:.1f} s", flush=True)
    ratio = np.mean(times["channels_last"]) / np.mean(times["contiguous"])
    same = np.array_equal(labels["contiguous"], labels["channels_last"])
    print(f"channels-last / contiguous: {ratio:.2f}; labels identical: {same}")


if __name__ == "__main__":
    main()
