"""The FREM paper's comparison rows on the Drosophila VNC split, under one training budget.

    python benchmarks/segmentation.py [--epochs 30] [--iters 60] [--batch 4] [--lr 1e-3] [--width 12]
        [--rows baseline frem ...] [--device cuda]

Rows (same seed, epochs, iterations, crops): U-Net + SE (baseline); the same without the deepest
layers (depth - 1); + deep supervision at the bottleneck (λ = 0.4); + channel dropout at rate
B / channels; + FREM (B, X scaled from the paper's B = 8 of 512 channels, X = 250). Trains on
sections 00-11, evaluates whole sections 12-15 through the tiling engine, prints a Markdown
table of per-class IoU, mIoU and seconds per epoch, and each row's validation mIoU per epoch.
Rows are independent: on a GPU, run them as parallel processes (one ``--rows`` each).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from napari_nanoclass.segmentation.data import DROSOPHILA_CLASSES, DROSOPHILA_TRAIN, DROSOPHILA_VAL, drosophila_pairs
from napari_nanoclass.segmentation.train import TrainConfig, evaluate, train

ROOT = Path(__file__).resolve().parent.parent


def rows(base: TrainConfig, frem_b: int, frem_x: float) -> dict[str, TrainConfig]:
    bottleneck = base.width * 2**base.depth
    return {
        "baseline": base,
        "shallower": replace(base, depth=base.depth - 1),
        "deep-supervision": replace(base, deep_supervision=True, aux_weight=0.4),
        "dropout": replace(base, dropout=frem_b / bottleneck),
        "frem": replace(base, frem_b=frem_b, frem_x=frem_x),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/drosophila-vnc"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--width", type=int, default=12)
    ap.add_argument("--frem-b", type=int, default=None, help="default: 8/512 of the bottleneck channels")
    ap.add_argument("--frem-x", type=float, default=250.0)
    ap.add_argument("--rows", nargs="*", default=None)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    base = TrainConfig(class_names=DROSOPHILA_CLASSES, width=args.width, depth=4, epochs=args.epochs,
                       iters_per_epoch=args.iters, batch_size=args.batch, lr=args.lr, patience=args.epochs,
                       seed=0, tile=1024)
    frem_b = args.frem_b or max(1, round(8 / 512 * base.width * 2**base.depth))
    train_pairs = drosophila_pairs(args.data, DROSOPHILA_TRAIN)
    val_pairs = drosophila_pairs(args.data, DROSOPHILA_VAL)
    header = "| row | " + " | ".join(DROSOPHILA_CLASSES) + " | mIoU | best epoch | s/epoch |"
    lines = [header, "|" + "---|" * (len(DROSOPHILA_CLASSES) + 4)]
    for name, config in rows(base, frem_b, args.frem_x).items():
        if args.rows and name not in args.rows:
            continue
        start = time.time()
        result = train(train_pairs, val_pairs, config, device=args.device)
        per_epoch = (time.time() - start) / max(len(result.history), 1)
        scores = evaluate(result.module, val_pairs, DROSOPHILA_CLASSES, tile=1024, device=args.device)
        best = max(result.history, key=lambda h: h["val_miou"])["epoch"]
        lines.append(f"| {name} | " + " | ".join(f"{v:.2%}" for v in scores.iou) +
                     f" | **{scores.miou:.2%}** | {best} | {per_epoch:.1f} |")
        print(lines[-1], flush=True)
        print(f"{name} validation mIoU per epoch: " + ", ".join(f"{h['val_miou']:.3f}" for h in result.history),
              flush=True)
    print(f"\nbudget: {args.epochs} epochs × {args.iters} iterations, batch {args.batch}, lr {args.lr:g}, crop 256, "
          f"width {args.width}, "
          f"FREM B={frem_b} X={args.frem_x:g}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
