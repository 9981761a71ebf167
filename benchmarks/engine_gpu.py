"""The tiling engine on a GPU: ``segment()`` against one whole-image forward, by precision and tile.

    python benchmarks/engine_gpu.py [--sizes 2048 8192] [--repeats 3] [--sections DIR] [--out FILE]

Same headline as benchmarks/engine.py (issue #26), on CUDA: the median time of ``segment()`` with
the shipped ``drosophila-seunet`` over the median time of one whole-image fp32 forward of the same
network (the image moved to the GPU, z-scored, padded to the size divisor, argmax, labels back in
host memory), the runs interleaved ``--repeats`` times, with MP/s and the share of labels equal to
the whole forward's. Rows: the budget tile (one window when the image fits), 1024² tiles batched as
the engine batches them on a GPU, 1024² tiles one at a time, and bfloat16 / float16 autocast.
Never a test dependency: needs a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from engine import MODEL, mosaic_image  # benchmarks/engine.py, beside this file

from napari_nanoclass.io.images import image_stats
from napari_nanoclass.models.registry import load_model
from napari_nanoclass.segmentation.predict import segment

ROWS = {  # name: (tile, batch_size, precision)
    "segment": (None, None, "float32"),
    "segment tile=1024": (1024, None, "float32"),
    "segment tile=1024 batch 1": (1024, 1, "float32"),
    "segment bfloat16": (None, None, "bfloat16"),
    "segment float16": (None, None, "float16"),
}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def whole_forward(loaded, image: np.ndarray) -> tuple[float, np.ndarray]:
    """One forward of the whole image on the GPU, host array in, host labels out."""
    sync()
    start = time.perf_counter()
    mean, std = image_stats(image)
    divisor = loaded.module.size_divisor
    pad = [(0, -s % divisor) for s in image.shape]
    x = torch.from_numpy(np.pad((image - mean) / std, pad, mode="reflect").astype(np.float32))[None, None]
    with torch.inference_mode():
        logits = loaded.module(x.to(loaded.device))
        bias = torch.tensor(loaded.info.logit_bias or [0.0] * logits.shape[1], device=loaded.device).view(1, -1, 1, 1)
        labels = (logits + bias).argmax(1)[0, : image.shape[0], : image.shape[1]].cpu().numpy()
    return time.perf_counter() - start, labels


def timed(loaded, image: np.ndarray, tile: int | None, batch: int | None, precision: str) -> tuple[float, np.ndarray]:
    sync()
    start = time.perf_counter()
    labels = np.asarray(segment(image, loaded, tile=tile, batch_size=batch, precision=precision,
                                 pixel_size_nm=loaded.info.pixel_size_nm).labels)
    return time.perf_counter() - start, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON lines file for the rows")
    ap.add_argument("--device", default="cuda", help="cpu only to try the script (without the float16 row)")
    args = ap.parse_args()
    device = torch.device(args.device)
    loaded = load_model(MODEL, device)
    rows_run = {k: v for k, v in ROWS.items() if device.type == "cuda" or v[2] != "float16"}
    rows = []
    for size in args.sizes:
        image = mosaic_image(size)
        whole_forward(loaded, image[:1024, :1024])  # warm-up: cuDNN picks its kernels
        for tile, batch, precision in rows_run.values():
            timed(loaded, image[:2048, :2048], tile, batch, precision)
        runs: dict[str, list[float]] = {}
        agreement: dict[str, float] = {}
        for _ in range(args.repeats):
            seconds, reference = whole_forward(loaded, image)
            runs.setdefault("whole", []).append(seconds)
            for name, (tile, batch, precision) in rows_run.items():
                seconds, labels = timed(loaded, image, tile, batch, precision)
                runs.setdefault(name, []).append(seconds)
                agreement[name] = float((labels == reference).mean())
        whole = float(np.median(runs["whole"]))
        for name, seconds in runs.items():
            median = float(np.median(seconds))
            rows.append({"size": size, "run": name, "seconds": median, "all": seconds, "ratio": median / whole,
                         "mp_per_s": size * size / 1e6 / median, "agreement": agreement.get(name),
                         "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"})
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
