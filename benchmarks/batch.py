"""Batch benchmark: segment a folder of micrographs with 1 worker and with N workers (images/s, peak
memory, speed-up), then kill a run half-way with SIGKILL, resume it, and check that its outputs
equal those of the uninterrupted run.

    python benchmarks/batch.py [--data ../shared/data/drosophila-vnc] [--images 40] [--workers 2]

Input: the Drosophila ssTEM sections, 1024² each (20 unlabelled + the 16 labelled ones' images =
36); beyond 36, the first sections again rotated by 90° (a different input for the model, same
size and content statistics), so that the issue's 40-image folder can be run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import tifffile

ROOT = Path(__file__).resolve().parents[1]


def _fill(folder: Path, data: Path, n: int) -> None:
    """Write ``n`` input images into ``folder``: the sections, then rotated ones if more are asked."""
    found = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".tif", ".tiff", ".png")
                   and p.parent.name != "labels")
    if not found:
        raise SystemExit(f"{data}: no images")
    for path in found[:n]:
        shutil.copy(path, folder / f"{path.parent.name}_{path.name}")
    for i in range(max(0, n - len(found))):
        path = found[i % len(found)]
        tifffile.imwrite(folder / f"rot90_{i}_{path.stem}.tif", np.rot90(tifffile.imread(path)).copy())


def _run(folder: Path, out: Path, workers: int) -> tuple[float, float]:
    """Wall time and peak RSS (MiB, the run and all its worker processes) of one CLI batch run."""
    command = [sys.executable, "-m", "napari_nanoclass.cli", "batch", "segment", str(folder), "--out", str(out),
               "--workers", str(workers), "--log", "quiet"]
    start = time.perf_counter()
    process = psutil.Popen(command)
    peak = 0.0
    while process.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
            peak = max(peak, rss / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.1)
    if process.returncode:
        raise SystemExit(f"batch run failed with exit status {process.returncode}")
    return time.perf_counter() - start, peak


def _labels(out: Path) -> dict[str, np.ndarray]:
    return {p.parent.name: tifffile.imread(p) for p in sorted(out.glob("*/*_labels.tif"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "drosophila-vnc"))
    ap.add_argument("--images", type=int, default=40, help="36 = all 20 unlabelled + 16 labelled sections")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nanoclass-batch-"))
    folder = work / "in"
    folder.mkdir()
    _fill(folder, Path(args.data), args.images)
    seconds1, peak1 = _run(folder, work / "one", 1)
    secondsn, peakn = _run(folder, work / "many", args.workers)
    n = args.images
    print(f"1 worker: {n / seconds1:.2f} images/s ({seconds1:.1f} s), peak RSS {peak1:.0f} MiB")
    print(f"{args.workers} workers: {n / secondsn:.2f} images/s ({secondsn:.1f} s), peak RSS {peakn:.0f} MiB; "
          f"speed-up {seconds1 / secondsn:.2f}×")

    killed = work / "killed"
    command = [sys.executable, "-m", "napari_nanoclass.cli", "batch", "segment", str(folder), "--out", str(killed),
               "--log", "quiet"]
    process = subprocess.Popen(command)
    while len(list(killed.glob("*/result.json"))) < n // 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(list(killed.glob("*/result.json")))
    partial = [p.name for p in killed.glob(".*.partial")]
    subprocess.run([*command], check=True)
    reference, resumed = _labels(work / "one"), _labels(killed)
    same = reference.keys() == resumed.keys() and all(np.array_equal(reference[k], resumed[k]) for k in reference)
    print(f"SIGKILL after {done_before}/{n} complete (partial folders left: {partial or 'none'}); resumed run "
          f"{'equals' if same else 'DIFFERS FROM'} the uninterrupted run on all {len(resumed)} outputs")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
