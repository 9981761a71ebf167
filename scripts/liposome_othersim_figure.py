"""docs/images/liposomes-othersim.png: fields of the simulator written apart (benchmarks/othersim.py)
beside the bundled real cryo-EM sample, all seen at 1 nm/px with the same contrast stretch (1st–99th
percentile), with what the analysis finds outlined: the fine detector's objects in cyan, the ones the
varied-imaging detector beside it adds in magenta, and (simulated fields) the true vesicles as
yellow dots at their centres. Fields from seeds 300 000 … (neither the benchmark's validation nor
its test seeds).

    .venv/bin/python scripts/liposome_othersim_figure.py
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from napari_nanoclass._napari.samples import VESICLES_PIXEL_NM, cryoem_vesicles  # noqa: E402
from napari_nanoclass.liposomes import FINE_DETECTOR  # noqa: E402
from napari_nanoclass.liposomes.predict import analyse, labels_at, working_image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import othersim  # noqa: E402
from liposome_realism_figure import stretched  # noqa: E402  (beside this script in scripts/)

OUT = ROOT / "docs" / "images" / "liposomes-othersim.png"
SEEDS = (300_000, 300_001, 300_002, 300_003, 300_004)


def overlay(axis: plt.Axes, image: np.ndarray, pixel_size_nm: float, title: str) -> None:
    """The image as the fine detector sees it (1 nm/px) with the fine detector's objects (cyan) and
    those the pair adds (magenta) outlined."""
    both = np.asarray(analyse(image, pixel_size_nm).labels)
    alone = np.asarray(analyse(image, pixel_size_nm, detector=FINE_DETECTOR).labels)
    shown, _ = working_image(image, pixel_size_nm, 1.0)
    rgb = np.repeat(stretched(shown)[..., None], 3, axis=2)
    kept, added = np.where(alone > 0, both, 0), np.where(alone > 0, 0, both)
    for labels, colour in ((kept, (0.0, 0.9, 1.0)), (added, (1.0, 0.2, 1.0))):
        rgb[find_boundaries(labels_at(labels, shown.shape), mode="inner")] = colour
    axis.imshow(rgb)
    axis.set_title(title, fontsize=9)
    axis.axis("off")


def main() -> None:
    (real, _, _), = cryoem_vesicles()
    figure, axes = plt.subplots(2, 3, figsize=(13.5, 10))
    axes = axes.ravel()
    overlay(axes[0], np.asarray(real, np.float32), VESICLES_PIXEL_NM, "real sample (bundled), seen at 1 nm/px")
    for axis, seed in zip(axes[1:], SEEDS):
        field = othersim.simulate(seed, 1.0, (256, 256), (20.0, 150.0))
        overlay(axis, field.image, 1.0, f"othersim seed {seed}: defocus {field.params['optics']['defocus_um']:.1f} µm, "
                                        f"{field.params['optics']['dose_e_per_A2']:.0f} e⁻/Å²")
        centres = ndi.center_of_mass(field.labels > 0, field.labels, range(1, int(field.labels.max()) + 1))
        axis.scatter([c[1] for c in centres], [c[0] for c in centres], s=10, c="yellow", marker="o")
    figure.suptitle("cyan: fine detector; magenta: added by the varied-imaging detector beside it; "
                    "yellow dots: true vesicles", fontsize=10)
    figure.tight_layout()
    figure.savefig(OUT, dpi=72)
    print(OUT)


if __name__ == "__main__":
    main()
