"""docs/images/liposomes-real-vs-simulated.png: the bundled real cryo-EM sample beside simulated
fields of the same size, pixel size and vesicle sizes — the simulator's default image formation and
the realistic one (``REALISTIC``: projected bilayer shells, a dose per Å², ice as a random phase
object, particulate cargo, irregular shapes, plus the microscope effects) — each with the same
contrast stretch (1st–99th percentile). The real sample was saved as a figure and is strongly
low-passed (its power falls by three decades between 0.3 and 1.3 /nm, shot noise included), so the
realistic field is also shown through a Gaussian of 0.34 nm, which matches that fall-off. A second
row gives the radially averaged power spectra (log-log) of the real crop and the simulated fields.

    .venv/bin/python scripts/liposome_realism_figure.py
"""

from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from napari_nanoclass._napari.samples import VESICLES_PIXEL_NM, cryoem_vesicles  # noqa: E402
from napari_nanoclass.liposomes.simulator import REALISTIC, SimulationConfig, simulate_field  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "liposomes-real-vs-simulated.png"
DISPLAY_LOWPASS_NM = 0.34  # Gaussian sigma whose transfer matches the real figure's fall-off


def stretched(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1, 99])
    return np.clip((image - low) / (high - low), 0, 1)


def radial_power(image: np.ndarray, pixel_size_nm: float, edges: np.ndarray) -> np.ndarray:
    """Mean power of the unit-variance image in rings of spatial frequency (1/nm); NaN (a gap in
    the plot) for a ring no frequency of the image falls in."""
    image = (image - image.mean()) / image.std()
    power = np.abs(np.fft.fft2(image)) ** 2 / image.size
    k = np.hypot(np.fft.fftfreq(image.shape[0], pixel_size_nm)[:, None],
                 np.fft.fftfreq(image.shape[1], pixel_size_nm)[None, :])
    rings = [(k >= a) & (k < b) for a, b in zip(edges[:-1], edges[1:])]
    return np.array([power[ring].mean() if ring.any() else np.nan for ring in rings])


def images_over_spectra(panels: list[tuple[str, np.ndarray]], pixel_size_nm: float, edges: np.ndarray, *,
                        labels: list[str], axis_labels: tuple[str, str], interpolation: str,
                        figsize: tuple[float, float], image_height: float) -> plt.Figure:
    """The layout both liposome realism figures share: four titled images in a row (1–99 % stretch)
    over the radial power spectra of all four, each in its line style with its legend label."""
    figure = plt.figure(figsize=figsize)
    grid = figure.add_gridspec(2, 4, height_ratios=[image_height, 3.2])
    for i, (title, image) in enumerate(panels):
        ax = figure.add_subplot(grid[0, i])
        ax.imshow(stretched(np.asarray(image, np.float32)), cmap="gray", interpolation=interpolation)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    centres = np.sqrt(edges[:-1] * edges[1:])
    ax = figure.add_subplot(grid[1, 1:3])
    for (_, image), style, label in zip(panels, ("k-", "C0--", "C1-", "C3-"), labels):
        ax.loglog(centres, radial_power(np.asarray(image, np.float32), pixel_size_nm, edges), style, label=label)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.legend(fontsize=9)
    return figure


def main() -> None:
    (real, _, _), = cryoem_vesicles()
    real = np.asarray(real, np.float32)
    base = SimulationConfig(shape=real.shape, pixel_size_nm=VESICLES_PIXEL_NM, objects=(8, 12),
                            diameter_nm=(25.0, 65.0))
    # as in the real sample: no carbon edge or contamination in view, a defocus near its Thon rings'
    # (about 2.4 µm), ice noise at the top of REALISTIC's range
    realistic = replace(base, **{**REALISTIC, "carbon_probability": 0.0, "contamination": (0, 0),
                                 "defocus_nm": (2000.0, 3000.0),
                                 "ice_noise": (0.012, 0.015)})  # grainy ice, as in the real one
    default = simulate_field(base, seed=3).image
    simulated = simulate_field(realistic, seed=4)
    smooth = ndi.gaussian_filter(simulated.image, DISPLAY_LOWPASS_NM / VESICLES_PIXEL_NM)
    drawn = simulated.imaging
    panels = [("real micrograph (vesicle-picker sample)", real),
              ("simulated, default image formation", default),
              (f"simulated, REALISTIC ({drawn['dose_per_a2']:.0f} e⁻/Å², Δf {drawn['defocus_nm'] / 1000:.1f} µm)",
               simulated.image),
              (f"the same REALISTIC field, low-passed like the real figure (σ {DISPLAY_LOWPASS_NM} nm)", smooth)]
    figure = images_over_spectra(
        panels, VESICLES_PIXEL_NM, np.geomspace(0.02, 0.5 / VESICLES_PIXEL_NM, 80),
        labels=[title.split(" (")[0] if "low-passed" not in title else "REALISTIC, low-passed" for title, _ in panels],
        axis_labels=("spatial frequency (1/nm)", "radial power (unit-variance image)"), interpolation="lanczos",
        figsize=(20, 9.6), image_height=5.6)
    side = real.shape[1] * VESICLES_PIXEL_NM
    figure.suptitle(f"each panel {side:.0f} nm wide at {VESICLES_PIXEL_NM} nm/px; vesicles 25–65 nm across", fontsize=11)
    figure.tight_layout()
    figure.savefig(OUT, dpi=72)
    print(f"wrote {OUT}; REALISTIC field drew {drawn}")


if __name__ == "__main__":
    main()
