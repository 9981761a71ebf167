"""How much simulated liposome fields look like the real development micrograph, in numbers.

    python benchmarks/liposomes_realism.py [--imaging default microscope realistic] [--fields 6]

Everything is measured where the fine detector looks: each image brought to 1 nm/px and z-scored
as the analysis does (``liposomes.predict.working_image``). For the real micrograph
(``../shared/data/cryoem-vesicles/vesicles_01.tif``, 0.2 nm/px) the vesicles are the ``certain``
circles of our annotation (benchmarks/data/vesicles_01_annotation.csv); for simulated fields
(recorded at 1 nm/px, 512², vesicles 20–150 nm, defocus 0.5–5 µm, the study's class mix: the fine
detector's training fields, seeds far from any training seed) the true objects. Per vesicle:

* **wall**: the darkest 1 nm ring of the radial profile within 4 nm of its radius, minus the median
  of the ice 6–14 nm outside it, in units of the local grain (the robust standard deviation of
  the image minus its 2 nm Gaussian blur in that ice);
* **interior**: the median inside (more than 6 nm from the wall) minus that ice median, same units.

Per image: **grain**, the standard deviation of the image minus its 2 nm blur away from the
objects, and **smooth**, the standard deviation of the image blurred by 8 nm: what dominates the
z-scored view, fine grain or large-scale contrast (ice gradients, carbon, contamination, dense
interiors). Medians and quartiles over vesicles or images. Describes the images only; no model runs.
"""

from __future__ import annotations

import argparse

import numpy as np
import tifffile
from liposomes_real import DATA, annotation, disks  # benchmarks/liposomes_real.py, beside this file
from scipy import ndimage as ndi

from napari_nanoclass.liposomes.predict import working_image
from napari_nanoclass.liposomes.simulator import MICROSCOPE, REALISTIC, STUDY_MIX, SimulationConfig, simulate_field

SEED = 900_000  # far from every training, validation and test seed of the liposome benchmarks
IMAGING = {"default": {}, "microscope": MICROSCOPE, "realistic": REALISTIC}
FIELDS = dict(shape=(512, 512), pixel_size_nm=1.0, diameter_nm=(20.0, 150.0), defocus_nm=(500.0, 5000.0),
              objects=(8, 20), mix=STUDY_MIX)  # the fine detector's training fields (train_default_liposomes.py)


def vesicle(view: np.ndarray, cy: float, cx: float, radius: float) -> tuple[float, float] | None:
    """(wall, interior) of one vesicle of ``radius`` px centred at (cy, cx) in a 1 nm/px view, or
    None where its surroundings leave the image or it is under 12 nm across."""
    reach = int(radius * 1.6) + 16
    y0, x0 = int(cy) - reach, int(cx) - reach
    if radius < 6 or y0 < 0 or x0 < 0 or int(cy) + reach >= view.shape[0] or int(cx) + reach >= view.shape[1]:
        return None
    crop = view[y0:int(cy) + reach + 1, x0:int(cx) + reach + 1]
    rows, cols = np.indices(crop.shape)
    rho = np.hypot(rows + y0 - cy, cols + x0 - cx)
    ice = (rho >= radius + 6) & (rho <= radius + 14)
    grain = (crop - ndi.gaussian_filter(crop, 2.0))[ice]
    unit = 1.4826 * np.median(np.abs(grain - np.median(grain)))
    bins = np.round(rho).astype(int).ravel()
    profile = np.bincount(bins, crop.ravel()) / np.maximum(np.bincount(bins), 1)
    wall = profile[max(int(radius - 4), 0):int(radius + 4) + 1].min()
    level = np.median(crop[ice])
    return (wall - level) / unit, (np.median(crop[rho <= max(radius - 6, 2)]) - level) / unit


def image_scales(view: np.ndarray, objects: np.ndarray | None = None) -> tuple[float, float]:
    """(grain, smooth) of a 1 nm/px view; grain away from ``objects`` (a mask) where given."""
    away = np.ones(view.shape, bool) if objects is None else ~ndi.binary_dilation(objects, iterations=8)
    return float(np.std((view - ndi.gaussian_filter(view, 2.0))[away])), float(np.std(ndi.gaussian_filter(view, 8.0)))


def real() -> tuple[list, list]:
    """The certain vesicles' rows and the image's scales, its grain away from every annotated one."""
    view, _ = working_image(tifffile.imread(DATA).astype(np.float32), 0.2, 1.0)
    circles = [{**t, "y": (t["y"] + 0.5) / 5 - 0.5, "x": (t["x"] + 0.5) / 5 - 0.5, "r": t["r"] / 5}
               for t in annotation()]  # in the 1 nm/px view
    rows = [vesicle(view, t["y"], t["x"], t["r"]) for t in circles if t["tier"] == "certain"]
    return [r for r in rows if r is not None], [image_scales(view, disks(circles, view.shape) > 0)]


def simulated(imaging: str, n_fields: int) -> tuple[list, list]:
    config = SimulationConfig(**{**FIELDS, **IMAGING[imaging]})
    rows, images = [], []
    for seed in range(SEED, SEED + n_fields):
        field = simulate_field(config, seed)
        view, _ = working_image(field.image, config.pixel_size_nm, 1.0)
        rows += [vesicle(view, o["centre_y"], o["centre_x"], o["diameter_nm"] / 2) for o in field.objects]
        images.append(image_scales(view, field.labels > 0))
    return [r for r in rows if r is not None], images


def quartiles(values: np.ndarray) -> str:
    return " / ".join(f"{v:.2f}" for v in np.percentile(values, [25, 50, 75]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--imaging", nargs="+", choices=list(IMAGING), default=list(IMAGING))
    ap.add_argument("--fields", type=int, default=6, help="simulated fields per image formation")
    args = ap.parse_args()
    print("| images | vesicles | wall (q25 / median / q75) | interior (q25 / median / q75) | grain | smooth |\n"
          "|---|---|---|---|---|---|")
    for name, (rows, images) in [("real micrograph", real())] + [(f"{i} fields", simulated(i, args.fields))
                                                                  for i in args.imaging]:
        rows, images = np.array(rows), np.array(images)
        print(f"| {name} | {len(rows)} | {quartiles(rows[:, 0])} | {quartiles(rows[:, 1])} | "
              f"{np.median(images[:, 0]):.2f} | {np.median(images[:, 1]):.2f} |", flush=True)


if __name__ == "__main__":
    main()
