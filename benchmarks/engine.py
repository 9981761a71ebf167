"""Throughput, peak memory and exactness of the tiling engine.

    python benchmarks/engine.py [--sizes 1024 4096 16384] [--tile 512] [--out benchmarks/out]

For a small SE U-Net (width 4, depth 2, local SE window 3; receptive radius 33 px → halo 36):
  (a) raw: the batched model forward alone on the same number of tile-with-halo inputs, no
      reading, normalising or stitching (the ceiling the engine can reach); timed on every tile,
      once before and once after (b), and averaged, because a shared CPU's speed drifts by
      ±20 % over minutes — more than the engine's own overhead;
  (b) engine: napari_nanoclass.engine.predict_dense, labels (argmax) streamed into a zarr on disk;
      the 16384² input is itself a zarr on disk;
  (c) MONAI sliding_window_inference, same tile, 25 % overlap, if MONAI is installed (1024² and
      4096² only: it holds the whole image and output in memory).
Each run is a separate process, so "peak RSS" is that run's own maximum resident memory.
Exactness: max |tiled - whole-image| of class probabilities on the 1024² image, more than one
halo away from the border.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from napari_nanoclass import engine
from napari_nanoclass.core.progress import run_sync
from napari_nanoclass.models.unet import SEUNet


def make_model() -> SEUNet:
    torch.manual_seed(0)
    return SEUNet(width=4, depth=2, n_classes=3, se_window=3).eval()


def input_image(size: int, workdir: Path) -> object:
    """numpy up to 4096²; a zarr on disk (written chunk by chunk) beyond."""
    rng = np.random.default_rng(size)
    if size <= 4096:
        return rng.integers(0, 255, (size, size), dtype=np.uint8)
    path = workdir / f"input_{size}.zarr"
    if not path.exists():
        array = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(1024, 1024), dtype=np.uint8)
        for y in range(0, size, 1024):
            array[y : y + 1024] = rng.integers(0, 255, (1024, size), dtype=np.uint8)
    return zarr.open_array(str(path), mode="r")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(kind: str, size: int, tile: int, workdir: Path) -> dict:
    model = make_model()
    image = input_image(size, workdir)
    halo = engine.round_up(int(model.receptive_radius), model.size_divisor)
    windows = engine.dense_windows((size, size), tile, halo, model.size_divisor)
    batch = engine.default_batch_size(torch.device("cpu"))
    start = time.perf_counter()
    if kind == "raw":
        side = tile + 2 * halo
        x = torch.randn(batch, 1, side, side)
        with torch.inference_mode():
            model(x)  # warm-up
            start = time.perf_counter()
            for _ in range(0, len(windows), batch):
                model(x)
        seconds = time.perf_counter() - start
    elif kind == "engine":
        out = workdir / f"labels_{size}.zarr"
        run_sync(engine.predict_dense(model, image, tile=tile, batch_size=batch,
                                      postprocess=engine.labels_from_logits, out=out))
        seconds = time.perf_counter() - start
    elif kind == "monai":
        from monai.inferers import sliding_window_inference

        x = torch.from_numpy(((image - image.mean()) / image.std()).astype(np.float32))[None, None]
        with torch.inference_mode():
            sliding_window_inference(x, (tile, tile), batch, model, overlap=0.25).argmax(1)
        seconds = time.perf_counter() - start
    return {"kind": kind, "size": size, "tiles": len(windows), "seconds": seconds,
            "mpix_per_s": size * size / 1e6 / seconds, "peak_rss_mib": peak_rss_mib()}


def exactness(tile: int) -> dict:
    model = make_model()
    image = np.random.default_rng(0).integers(0, 255, (1024, 1024)).astype(np.uint8)
    x = torch.from_numpy(((image - image.mean()) / image.std()).astype(np.float32))[None, None]
    with torch.inference_mode():
        whole = torch.softmax(model(x), 1)[0].numpy()
    halo = engine.round_up(int(model.receptive_radius), model.size_divisor)
    inner = (slice(None), slice(halo, -halo), slice(halo, -halo))
    result = {"halo": halo}
    tiled = run_sync(engine.predict_dense(model, image, tile=tile))
    result["engine_max_abs_diff"] = float(np.abs(tiled - whole)[inner].max())
    try:
        from monai.inferers import sliding_window_inference

        with torch.inference_mode():
            monai = torch.softmax(sliding_window_inference(x, (tile, tile), 1, model, overlap=0.25), 1)[0].numpy()
        result["monai_max_abs_diff"] = float(np.abs(monai - whole)[inner].max())
    except ImportError:
        result["monai_max_abs_diff"] = None
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--out", default="benchmarks/out")
    ap.add_argument("--one", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    workdir = Path(args.out)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.tile, workdir)))
        return
    try:
        import monai  # noqa: F401

        kinds = ["raw", "engine", "raw", "monai"]
    except ImportError:
        kinds = ["raw", "engine", "raw"]
    rows = []
    for size in args.sizes:
        for kind in kinds:
            if kind == "monai" and size > 4096:
                continue
            cmd = [sys.executable, __file__, "--one", kind, str(size), "--tile", str(args.tile), "--out", args.out]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
            print(rows[-1], flush=True)
    exact = exactness(args.tile)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, tile {args.tile}, halo {exact['halo']}\n")
    print("| image | run | tiles | seconds | MP/s | engine/raw | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        raw = np.mean([r["seconds"] for r in rows if r["size"] == row["size"] and r["kind"] == "raw"])
        ratio = f"{raw / row['seconds']:.0%}" if row["kind"] == "engine" else ""
        print(f"| {row['size']}² | {row['kind']} | {row['tiles']} | {row['seconds']:.1f} | {row['mpix_per_s']:.2f} "
              f"| {ratio} | {row['peak_rss_mib']:.0f} |")
    print(f"\nmax |engine - whole image| (1024², inner): {exact['engine_max_abs_diff']:.2e}")
    if exact["monai_max_abs_diff"] is not None:
        print(f"max |MONAI - whole image| (1024², inner): {exact['monai_max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
