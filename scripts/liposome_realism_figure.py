"""docs/images/liposomes-real-vs-simulated.png: the bundled real cryo-EM sample beside simulated
fields of the same size, pixel size and vesicle sizes — the simulator's default image formation,
with the microscope effects (``MICROSCOPE``: wider defocus, astigmatism, detector MTF,
contamination), and those at a far lower dose than the simulator draws — each shown with the same
contrast stretch (1st–99th percentile).

    .venv/bin/python scripts/liposome_realism_figure.py
"""

from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from napari_nanoclass._napari.samples import VESICLES_PIXEL_NM, cryoem_vesicles  # noqa: E402
from napari_nanoclass.liposomes.simulator import MICROSCOPE, SimulationConfig, simulate_field  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "liposomes-real-vs-simulated.png"


def stretched(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1, 99])
    return np.clip((image - low) / (high - low), 0, 1)


def main() -> None:
    (real, _, _), = cryoem_vesicles()
    base = SimulationConfig(shape=real.shape, pixel_size_nm=VESICLES_PIXEL_NM, objects=(8, 12),
                            diameter_nm=(25.0, 65.0))
    microscope = replace(base, **MICROSCOPE)
    panels = [("real micrograph (vesicle-picker sample)", real),
              ("simulated, default image formation", simulate_field(base, seed=3).image),
              ("simulated, microscope effects (MICROSCOPE)", simulate_field(microscope, seed=3).image),
              ("MICROSCOPE at 2–4 e⁻ per pixel", simulate_field(replace(microscope, dose=(2.0, 4.0)), seed=3).image)]
    figure, axes = plt.subplots(1, 4, figsize=(20, 5.6))
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(stretched(np.asarray(image, np.float32)), cmap="gray", interpolation="lanczos")
        ax.set_title(title, fontsize=11)
        ax.set_axis_off()
    side = real.shape[1] * VESICLES_PIXEL_NM
    figure.suptitle(f"each panel {side:.0f} nm wide at {VESICLES_PIXEL_NM} nm/px; vesicles 25–65 nm across", fontsize=11)
    figure.tight_layout()
    figure.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
