"""docs/images/liposomes-wall-crops.png: what a ``wall`` classifier sees (``objects.wall_crops``):
each vesicle unrolled around its outline at 1 nm/px (rows: 6 nm outside to 25 nm inside the
outline, 1 nm apart; columns: 32 angles). Top row: single bilayers of the real development
micrograph (the annotated circles we called unilamellar, brought to 1 nm/px as the analysis brings
it); then unilamellar and multilamellar vesicles of default and ``REALISTIC`` simulated fields at
1 nm/px (the first six of each class, seeds from 700, not picked).

    .venv/bin/python scripts/liposome_wall_crops_figure.py     # needs ../shared/data (the micrograph)
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from liposomes_real import DATA, NATIVE_NM, annotation, disks  # noqa: E402

from napari_nanoclass.io.images import read_image  # noqa: E402
from napari_nanoclass.liposomes import objects as liposome_objects  # noqa: E402
from napari_nanoclass.liposomes.predict import labels_at, working_image  # noqa: E402
from napari_nanoclass.liposomes.simulator import BALANCED_MIX, REALISTIC, SimulationConfig, simulate_field  # noqa: E402
from napari_nanoclass.liposomes.train import objects_from_fields  # noqa: E402

OUT = ROOT / "docs" / "images" / "liposomes-wall-crops.png"
WORKING_NM, PER_ROW = 1.0, 6


def real_crops() -> np.ndarray:
    """Wall crops of the single bilayers we called by eye, at the working scale."""
    called = [t for t in annotation() if t["lamellarity"] == "unilamellar"]
    data = np.asarray(read_image(DATA).data, np.float32)
    work, px = working_image(data, NATIVE_NM, WORKING_NM)
    labels = labels_at(disks(called, data.shape), work.shape)
    return liposome_objects.crops(work, labels, "wall", pixel_size_nm=px)[:PER_ROW]


def simulated_crops(imaging: dict, lamellarity: int) -> np.ndarray:
    """The first wall crops of one lamellarity class in simulated fields at 1 nm/px."""
    config = SimulationConfig(mix=BALANCED_MIX, pixel_size_nm=WORKING_NM, **imaging)
    objects = objects_from_fields([simulate_field(config, 700 + i) for i in range(8)], mode="wall")
    return objects.crops[objects.targets["lamellarity"] == lamellarity][:PER_ROW]


def main() -> None:
    rows = [("real, single bilayers", real_crops())]
    for name, imaging in (("default", {}), ("REALISTIC", REALISTIC)):
        for index, kind in ((0, "unilamellar"), (1, "multilamellar")):
            rows.append((f"{name}, {kind}", simulated_crops(imaging, index)))
    fig, axes = plt.subplots(len(rows), PER_ROW, figsize=(1.6 * PER_ROW + 1.2, 1.7 * len(rows)))
    for (title, crops), line in zip(rows, axes):
        for i, ax in enumerate(line):
            ax.set_xticks([])
            ax.set_yticks([])
            if i < len(crops):
                ax.imshow(crops[i], cmap="gray", vmin=-2.5, vmax=2.5, aspect="auto")
                ax.axhline(liposome_objects.WALL_OUTSIDE_NM / liposome_objects.WALL_STEP_NM, color="#e41a1c", lw=0.6)
        line[0].set_ylabel(title, fontsize=9)
    fig.suptitle("Wall crops at 1 nm/px: rows from 6 nm outside (top) to 25 nm inside the outline (red), "
                 "columns around the vesicle", fontsize=10)
    fig.tight_layout()
    fig.savefig(OUT, dpi=90)
    print(OUT)


if __name__ == "__main__":
    main()
