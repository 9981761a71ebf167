"""Train the shipped homogeneity models on all of ../shared/data/nanofiber-sem and register them
in the package (src/napari_nanoclass/weights).

    python benchmarks/train_default_homogeneity.py [--mode two] [--strategy mil] [--steps 400]
    python benchmarks/train_default_homogeneity.py --architecture texture   # nanofibre-texture (default recipe)

Their cross-validated figures (same settings, by micrograph) come from
``benchmarks/homogeneity_cv.py`` and are in docs/homogeneity.md.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from napari_nanoclass.homogeneity.texture import fit_texture_model
from napari_nanoclass.homogeneity.train import MODE_CLASSES, HomogeneityConfig, micrographs_from_folders, train
from napari_nanoclass.models.registry import PACKAGE_DIR, save_model

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"two": "nanofibre-homogeneity", "three": "nanofibre-defects-3class"}
TEXTURE_NAMES = {"two": "nanofibre-texture", "three": "nanofibre-texture-3class"}
SOURCE = ("all 66 micrographs of the Nanofiber SEM data set (Yardimci & Ersoy, doi:10.6084/m9.figshare.28376219); "
          "cross-validated figures in docs/homogeneity.md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nanofiber-sem"))
    ap.add_argument("--mode", default="two", choices=["two", "three"])
    ap.add_argument("--strategy", default="mil", choices=["instance", "mil"])
    ap.add_argument("--head", default="fc", choices=["fc", "gap"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--architecture", default="cnn", choices=["cnn", "texture"])
    args = ap.parse_args()
    if args.architecture == "texture":
        start = time.perf_counter()
        model = fit_texture_model(micrographs_from_folders(args.data, args.mode), MODE_CLASSES[args.mode],
                                  TEXTURE_NAMES[args.mode])
        recipe = model.info.training["recipe"]
        info = replace(model.info, description=f"SEM nanofibre homogeneity ({args.mode}-class), {recipe['feature_set']} "
                       f"features + logistic regression (C = {recipe['C']:g}, both chosen {recipe['chosen_by']}), "
                       f"fitted on {SOURCE}")
        path = save_model(model.module, info, PACKAGE_DIR)
        print(f"{path} ({path.stat().st_size / 2**10:.0f} KiB) fitted in {time.perf_counter() - start:.0f} s; "
              f"recipe {recipe}")
        return
    config = HomogeneityConfig(name=NAMES[args.mode], mode=args.mode, strategy=args.strategy, head=args.head,
                               steps=args.steps)
    micrographs = micrographs_from_folders(args.data, args.mode)
    start = time.perf_counter()
    model = train(micrographs, config, progress=True)
    info = replace(model.info, description=f"SEM nanofibre homogeneity ({args.mode}-class, {args.strategy} "
                   f"training, {args.head} head), trained on {SOURCE}")
    path = save_model(model.module, info, PACKAGE_DIR)
    print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB) trained in {time.perf_counter() - start:.0f} s; "
          f"final loss {info.training['final_loss']:.3f}")


if __name__ == "__main__":
    main()
