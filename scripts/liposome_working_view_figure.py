"""docs/images/liposomes-working-view.png: what the fine detector sees — the bundled real cryo-EM
sample (0.2 nm/px) and simulated training fields, each brought to the detector's 1 nm/px exactly as
the analysis brings a user's image (``liposomes.predict.working_image``), with their radial power
spectra there. Left to right: the real sample; a field of the shipped fine detector's recipe (default
image formation, recorded at 1 nm/px); two fields of the ``REALISTIC`` candidates' recipe (recorded
at 0.2 nm/px, drawn over the preset's whole ranges, as in training, not picked to look real; their
titles say whether the field was flattened).

    .venv/bin/python scripts/liposome_working_view_figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from liposome_realism_figure import images_over_spectra  # noqa: E402  (this script's folder)

from napari_nanoclass._napari.samples import VESICLES_PIXEL_NM, cryoem_vesicles  # noqa: E402
from napari_nanoclass.liposomes.predict import working_image  # noqa: E402
from napari_nanoclass.liposomes.simulator import (  # noqa: E402
    REALISTIC,
    STUDY_MIX,
    Field,
    SimulationConfig,
    simulate_field,
)

OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "liposomes-working-view.png"
WORKING_NM = 1.0  # the fine detector's pixel size


def field(pixel_size_nm: float, side_nm: float, seed: int, **imaging) -> Field:
    """A training field of the fine detectors' recipe (benchmarks/train_default_liposomes.py)."""
    side = int(round(side_nm / pixel_size_nm))
    config = SimulationConfig(shape=(side, side), pixel_size_nm=pixel_size_nm, diameter_nm=(20.0, 150.0),
                              objects=(8, 20), mix=STUDY_MIX, **{"defocus_nm": (500.0, 5000.0), **imaging})
    return simulate_field(config, seed)


def realistic(side_nm: float, seed: int) -> tuple[str, np.ndarray, float]:
    """A REALISTIC training field at 0.2 nm/px, titled with its flattening and dose."""
    drawn = field(0.2, side_nm, seed, **REALISTIC)
    flattening = f"flattened σ {drawn.imaging['flatten_nm']:g} nm" if drawn.imaging["flatten_nm"] else "not flattened"
    return (f"REALISTIC field (0.2 nm/px), seed {seed}:\n{flattening}, {drawn.imaging['dose_per_a2']:.0f} e⁻/Å²",
            drawn.image, 0.2)


def main() -> None:
    (real, _, _), = cryoem_vesicles()
    side_nm = real.shape[0] * VESICLES_PIXEL_NM
    sources = [("real sample, recorded at 0.2 nm/px", np.asarray(real, np.float32), VESICLES_PIXEL_NM),
               ("shipped fine detector's field (default, 1 nm/px)", field(1.0, side_nm, 7).image, 1.0),
               realistic(side_nm, 8), realistic(side_nm, 9)]
    views = [(title, working_image(image, pixel, WORKING_NM)[0]) for title, image, pixel in sources]
    figure = images_over_spectra(
        views, WORKING_NM, np.geomspace(0.01, 0.5 / WORKING_NM, 40),
        labels=[title.replace("\n", " ") for title, _ in views],
        axis_labels=("spatial frequency (1/nm), as the detector sees it", "radial power (z-scored view)"),
        interpolation="nearest", figsize=(20, 9.2), image_height=5.2)
    figure.suptitle(f"each panel {side_nm:.0f} nm wide, shown at the fine detector's {WORKING_NM:g} nm/px "
                    "(z-scored as the analysis does; 1-99 % stretch)", fontsize=11)
    figure.savefig(OUT, dpi=80, bbox_inches="tight")
    print(OUT)


if __name__ == "__main__":
    main()
