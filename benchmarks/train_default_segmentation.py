"""Train the shipped default segmentation model on the Drosophila VNC split (train 00-11, val 12-15).

    python benchmarks/train_default_segmentation.py [--data ../shared/data/drosophila-vnc]
        [--epochs 30] [--iters 60] [--run-dir runs/default-seg] [--finalize]

Checkpoints every epoch in --run-dir (resumable: rerun the same command). When done, or with
--finalize (take the best epoch so far), the best model is written into the package's weights
folder and registered, and its validation table into docs/segmentation-default.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from safetensors import safe_open

from napari_nanoclass.datasets import (DROSOPHILA_CLASSES, DROSOPHILA_COLOURS, DROSOPHILA_TRAIN, DROSOPHILA_VAL,
                                       drosophila_pairs)
from napari_nanoclass.models.registry import PACKAGE_DIR, load_model, read_info, save_model
from napari_nanoclass.training import TrainConfig, evaluate, train_steps

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/drosophila-vnc"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--run-dir", default=str(ROOT / "runs/default-seg"))
    ap.add_argument("--finalize", action="store_true", help="ship the best epoch so far without training")
    args = ap.parse_args()
    config = TrainConfig(name="drosophila-seunet", class_names=DROSOPHILA_CLASSES, class_colours=DROSOPHILA_COLOURS,
                         width=12, depth=4, epochs=args.epochs, iters_per_epoch=args.iters, batch_size=4, crop=256,
                         lr=2e-3, patience=10, tile=1024, pixel_size_nm=4.6)
    val = drosophila_pairs(args.data, DROSOPHILA_VAL)
    run_dir = Path(args.run_dir)
    if not args.finalize:
        train = drosophila_pairs(args.data, DROSOPHILA_TRAIN)
        start = time.time()
        steps = train_steps(train, val, config, run_dir=run_dir, resume=True)
        for step in steps:
            if step.metrics and "val_miou" in step.metrics:
                print(f"[{time.time() - start:7.0f}s] {step.message}", flush=True)
    best = load_model(run_dir / "best.safetensors")
    scores = evaluate(best.module, val, DROSOPHILA_CLASSES, tile=1024)
    info = read_info(run_dir / "best.safetensors")
    path = save_model(best.module, info, PACKAGE_DIR)
    history = json.loads(safe_open(str(run_dir / "last.safetensors"), framework="pt").metadata()["state"])["history"]
    curve = ", ".join(f"{h['val_miou']:.3f}" for h in history)
    doc = ROOT / "docs/segmentation-default.md"
    doc.write_text(
        "# Default segmentation model `drosophila-seunet`\n\n"
        f"SE U-Net (width {config.width}, depth {config.depth}, local SE window 5), trained on CPU on Drosophila VNC "
        "sections 00–11, validated on whole sections 12–15 through the tiling engine (tile 1024).\n"
        f"{config.iters_per_epoch} iterations of batch {config.batch_size} per epoch; {len(history)} of "
        f"{config.epochs} planned epochs run (stopped by hand to fit the session), best epoch "
        f"{info.training.get('best_epoch')}; file `{path.name}` ({path.stat().st_size / 2**20:.1f} MiB).\n\n"
        f"Validation mIoU per epoch: {curve}.\n\n"
        "Validation (sections 12–15, all pixels):\n\n" + scores.table() + "\n\n"
        "Reproduce: `python benchmarks/train_default_segmentation.py` (resumable; `--finalize` ships the best epoch).\n"
    )
    print(scores.table())
    print(f"wrote {path} and {doc}")


if __name__ == "__main__":
    main()
