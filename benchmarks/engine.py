"""Speed, memory and exactness of the tiling engine with the shipped segmentation model.

    python benchmarks/engine.py [--sizes 1024 2048] [--repeats 3] [--rss-sizes 2048 8192]
        [--old-src PATH/src ...] [--system-allocator] [--compile] [--out benchmarks/out/engine]
    python benchmarks/engine.py --sizes --rss-sizes 2048 8192 16384   # peak memory only
    python benchmarks/engine.py --cam-cost [--repeats 5]

Headline (issue #26): the time of ``segment()`` over the time of one whole-image forward of the
same network (``drosophila-seunet``, fp32, the image z-scored and padded to the size divisor, then
argmax), measured in one process with the runs interleaved ``--repeats`` times (a shared CPU's
speed drifts by tens of percent over minutes; the ratio uses medians); throughput in MP/s; and
agreement of the labels with the whole-image forward's, border included. Rows:

* ``whole`` — the reference forward, of the network the engine runs (batch norms folded into the
  convolutions: the same function);
* ``whole, batch norms not folded`` — the same forward of the module as trained;
* ``segment`` — ``segment()`` as users run it (tile from the memory budget);
* ``segment tile=1024`` — the model's training tile, the windows this engine reads;
* ``segment bfloat16`` — ``segment(precision="bfloat16")``: opt-in reduced precision (autocast);
* ``segment tile=1024 compiled`` (with ``--compile``) — ``segment(tile=1024, compile=True)``, timed
  after one untimed run that compiles; the compile run's seconds are printed as ``compile run``;
* ``old engine PATH`` (with ``--old-src``, e.g. ``git worktree``\ s of earlier commits) — ``segment()``
  of that source in a subprocess, timed inside it, interleaved with the others;
* ``segment, glibc's default allocator`` (with ``--system-allocator``) — ``segment()`` of this source
  the same way, with ``NANOCLASS_MALLOC=system``: freed activations returned to the kernel and
  faulted in afresh, as before ``core.memory`` (the setting is per process, so not in this one).

Defect-map cost (``--cam-cost``): ``homogeneity.analyse`` with and without ``cam=True`` of the
bundled SEM sample and of one 1024² view (the sample mirrored to that size), for the shipped
texture model (its defect map comes from the CNN) and the shipped CNN, interleaved ``--repeats``
times; the ratio of the medians is the defect map's cost.

Peak RSS: ``segment()`` in a fresh process per size in ``--rss-sizes``; beyond 4096² the input is a
zarr on disk and labels stream to a zarr work folder (beyond 8192², the in-memory limit), as the
CLI does for large images; with ``--rss-in-memory`` images up to 8192² are arrays in memory (the
mosaic mirrored to the size), as an image loaded whole is. With ``--system-allocator`` each size
also with glibc's defaults.
Images are tiled from the unlabelled Drosophila sections of ../shared/data (random noise without it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import zarr

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ROOT.parent / "shared" / "data" / "drosophila-vnc" / "unlabeled"
MODEL = "drosophila-seunet"


def mosaic_image(size: int) -> np.ndarray:
    """A size² mosaic of real ssTEM sections (mirrored at the joins), or noise without the data."""
    paths = sorted(SECTIONS.glob("*.tif"))
    if not paths:
        return np.random.default_rng(size).integers(0, 255, (size, size), dtype=np.uint8)
    from napari_nanoclass.io.images import read_image

    section = np.asarray(read_image(paths[0]).data)
    reps = -(-size // section.shape[0])
    return np.pad(section, [(0, section.shape[0] * (reps - 1))] * 2, mode="symmetric")[:size, :size].copy()


def whole_forward(loaded, image: np.ndarray, fold: bool = True) -> tuple[float, np.ndarray]:
    """One forward of the whole image: of the network the engine runs (batch norms folded), or with
    ``fold=False`` of the module as trained, to show what folding saves."""
    from napari_nanoclass.io.images import image_stats
    from napari_nanoclass.models.fusion import fused

    mean, std = image_stats(image)
    divisor = loaded.module.size_divisor
    pad = [(0, -s % divisor) for s in image.shape]
    x = torch.from_numpy(np.pad((image - mean) / std, pad, mode="reflect").astype(np.float32))[None, None]
    module = (fused(loaded.module) if fold else loaded.module).to(memory_format=torch.channels_last)
    start = time.perf_counter()
    with torch.inference_mode():
        logits = module(x)
        bias = torch.tensor(loaded.info.logit_bias or [0.0] * logits.shape[1]).view(1, -1, 1, 1)
        labels = (logits + bias).argmax(1)[0, : image.shape[0], : image.shape[1]].numpy()
    return time.perf_counter() - start, labels


def timed_segment(loaded, image: np.ndarray, tile: int | None, precision: str = "float32", compile: bool = False
                  ) -> tuple[float, np.ndarray]:
    from napari_nanoclass.segmentation.predict import segment

    start = time.perf_counter()
    labels = np.asarray(segment(image, loaded, tile=tile, precision=precision, compile=compile).labels)
    return time.perf_counter() - start, labels


def old_segment(src: str, size: int, out: Path, env: dict[str, str] | None = None) -> float:
    """``segment()`` of another source tree (or this one with ``env``) on the same image, timed
    inside its own process."""
    image_path = out / f"image_{size}.npy"
    np.save(image_path, mosaic_image(size))
    code = ("import sys,time,numpy as np;from napari_nanoclass.segmentation.predict import segment;"
            "from napari_nanoclass.models.registry import load_model;m=load_model(sys.argv[2]);"
            "im=np.load(sys.argv[1]);segment(im[:256,:256],m);t=time.perf_counter();segment(im,m);"
            "print(time.perf_counter()-t)")
    result = subprocess.run([sys.executable, "-c", code, str(image_path), MODEL], capture_output=True, text=True,
                            env={**_environ(), "PYTHONPATH": src, **(env or {})}, check=True)
    return float(result.stdout.strip().splitlines()[-1])


SYSTEM = {"NANOCLASS_MALLOC": "system"}  # glibc's own allocator settings (core.memory left alone)


def _environ() -> dict[str, str]:
    """This environment without an allocator opt-out of its own, so each row gets the one it says."""
    return {k: v for k, v in os.environ.items() if k not in SYSTEM}


def speed(sizes: list[int], repeats: int, old_srcs: list[str], out: Path, compile: bool = False,
          system_allocator: bool = False) -> list[dict]:
    from napari_nanoclass.engine import budget_tile, select_device
    from napari_nanoclass.models.registry import load_model

    loaded = load_model(MODEL)
    rows = []
    for size in sizes:
        image = mosaic_image(size)
        timed_segment(loaded, image[:256, :256], None)  # warm-up: layout conversion, oneDNN kernels
        runs: dict[str, list[float]] = {}
        variants = [("segment", None, "float32", False), ("segment tile=1024", 1024, "float32", False),
                    ("segment bfloat16", None, "bfloat16", False)]
        if compile:
            seconds, _ = timed_segment(loaded, image, 1024, compile=True)
            print(json.dumps({"size": size, "run": "compile run", "seconds": seconds}), flush=True)
            variants.append(("segment tile=1024 compiled", 1024, "float32", True))
        reference = None
        agreement: dict[str, float] = {}
        for _ in range(repeats):
            whole_forward(loaded, image)  # untimed: a windowed run before handed the heap back (core.memory)
            seconds, reference = whole_forward(loaded, image)
            runs.setdefault("whole", []).append(seconds)
            runs.setdefault("whole, batch norms not folded", []).append(whole_forward(loaded, image, fold=False)[0])
            for name, tile, precision, compiled in variants:
                seconds, labels = timed_segment(loaded, image, tile, precision, compiled)
                runs.setdefault(name, []).append(seconds)
                agreement[name] = float((labels == reference).mean())
            for old_src in old_srcs:
                runs.setdefault(f"old engine {old_src}", []).append(old_segment(old_src, size, out))
            if system_allocator:
                runs.setdefault("segment, glibc's default allocator", []).append(
                    old_segment(str(ROOT / "src"), size, out, SYSTEM))
        tile = budget_tile(loaded.module, image.shape, loaded.halo, select_device(None))
        whole = float(np.median(runs["whole"]))
        for name, seconds in runs.items():
            median = float(np.median(seconds))
            rows.append({"size": size, "run": name, "seconds": median, "all": seconds, "ratio": median / whole,
                         "mp_per_s": size * size / 1e6 / median, "agreement": agreement.get(name),
                         "tile": list(tile) if name in ("segment", "segment bfloat16")
                         else (1024 if "tile=1024" in name else None)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def cam_cost(repeats: int) -> list[dict]:
    from napari_nanoclass.homogeneity.predict import analyse
    from napari_nanoclass.io.images import read_image
    from napari_nanoclass.models.registry import load_model

    sample = np.asarray(read_image(ROOT / "src" / "napari_nanoclass" / "samples" / "sem_fibres_defective.png").data)
    view = np.pad(sample, [(0, 1024 - sample.shape[0]), (0, 1024 - sample.shape[1])], mode="symmetric")
    rows = []
    for name in ("nanofibre-texture", "nanofibre-homogeneity"):
        loaded = load_model(name)
        analyse(sample[:256, :256], loaded, cam=True)  # warm-up
        for label, image in (("sample", sample), ("1024² view", view)):
            runs: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(repeats):
                for cam in (False, True):
                    start = time.perf_counter()
                    analyse(image, loaded, cam=cam)
                    runs[cam].append(time.perf_counter() - start)
            plain, with_cam = float(np.median(runs[False])), float(np.median(runs[True]))
            rows.append({"model": name, "image": label, "shape": list(image.shape), "verdicts_s": plain,
                         "with_cam_s": with_cam, "ratio": with_cam / plain})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def rss_one(size: int, out: Path, in_memory: bool = False) -> dict:
    from napari_nanoclass.segmentation.predict import segment

    image = mosaic_image(min(size, 4096))
    if in_memory and 4096 < size <= 8192:  # an array in memory up to the in-memory limit, as a loaded image
        image = np.pad(image, [(0, size - 4096)] * 2, mode="symmetric")
    elif size > 4096:  # on disk, written in strips, as a user's large image would be
        path = out / f"input_{size}.zarr"
        if not path.exists():
            array = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(1024, 1024), dtype=np.uint8)
            for y in range(0, size, 4096):
                for x in range(0, size, 4096):
                    array[y:y + 4096, x:x + 4096] = image
        image = zarr.open_array(str(path), mode="r")
    workdir = out / f"work_{size}"
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    segment(image, MODEL, workdir=workdir)
    return {"size": size, "seconds": time.perf_counter() - start, "in_memory": isinstance(image, np.ndarray),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048], help="none: peak memory only")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-sizes", type=int, nargs="*", default=[2048, 8192])
    ap.add_argument("--old-src", nargs="+", default=[], help="src folders of other versions to time beside this one")
    ap.add_argument("--compile", action="store_true", help="add the torch.compile row")
    ap.add_argument("--system-allocator", action="store_true",
                    help="add segment() and peak RSS with glibc's default allocator settings (NANOCLASS_MALLOC=system)")
    ap.add_argument("--cam-cost", action="store_true", help="only the defect-map cost of homogeneity")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "engine"))
    ap.add_argument("--rss-in-memory", action="store_true",
                    help="peak RSS of images up to 8192² held in memory (the in-memory limit) instead of zarr on disk")
    ap.add_argument("--rss-one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.rss_one:
        print(json.dumps(rss_one(args.rss_one, out, args.rss_in_memory)))
        return
    if args.cam_cost:
        cam_cost(args.repeats)
        return
    rows = speed(args.sizes, args.repeats, args.old_src, out, args.compile, args.system_allocator)
    allocators = {"this engine's": {}, **({"glibc's default": SYSTEM} if args.system_allocator else {})}
    one = [sys.executable, __file__, "--out", str(out), *(["--rss-in-memory"] if args.rss_in_memory else [])]
    rss = [{**json.loads(subprocess.run([*one, "--rss-one", str(size)],
                                        check=True, capture_output=True, text=True, env={**_environ(), **env}
                                        ).stdout.splitlines()[-1]), "allocator": name}
           for size in args.rss_sizes for name, env in allocators.items()]
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, model {MODEL}, "
          f"median of {args.repeats} interleaved runs\n")
    if rows:
        print("| image | run | tile | seconds (median) | × whole-image forward | MP/s | labels = whole-image forward's |")
        print("|---|---|---|---|---|---|---|")
    for r in rows:
        agree = "" if r["agreement"] is None else f"{r['agreement']:.4%}"
        print(f"| {r['size']}² | {r['run']} | {r['tile'] or ''} | {r['seconds']:.2f} | {r['ratio']:.2f}× "
              f"| {r['mp_per_s']:.2f} | {agree} |")
    if rss:
        print("\n| image | held | allocator | segment() seconds | peak RSS MiB |\n|---|---|---|---|---|")
        for r in rss:
            held = "in memory" if r["in_memory"] else "zarr on disk"
            print(f"| {r['size']}² | {held} | {r['allocator']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
