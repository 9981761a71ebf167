"""Sample images shipped with the package (File > Open Sample in napari; ``nanoclass demo``).

Attribution and licences: samples/ATTRIBUTION.md. Returns napari LayerData tuples without
importing napari, so the same samples serve scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_nanoclass.io.images import read_image

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "samples"
DROSOPHILA_CITATION = (
    "Gerhard, Funke, Martel, Cardona, Fetter (2013). Segmented anisotropic ssTEM dataset of neural tissue. "
    "figshare, doi:10.6084/m9.figshare.856713. CC BY-NC-SA 3.0."
)


def drosophila_section() -> list[tuple[Any, dict[str, Any], str]]:
    """One 1024² ssTEM section (4.6 nm/pixel) of Drosophila larva ventral nerve cord."""
    data = tifffile.imread(SAMPLE_DIR / "drosophila_section.tif")
    meta = {"name": "Drosophila ssTEM section", "scale": (4.6, 4.6),
            "metadata": {"pixel_size_nm": 4.6, "source": DROSOPHILA_CITATION}}
    return [(data, meta, "image")]


SEM_CITATION = (
    "Yardimci, Ersoy (2025). Nanofiber SEM Dataset (Automated Defect Classification of Electrospun "
    "Polyacrylonitrile Nanofibers via Deep Learning of SEM Images). figshare, doi:10.6084/m9.figshare.28376219."
)


def sem_fibres() -> list[tuple[Any, dict[str, Any], str]]:
    """An SEM micrograph of electrospun PAN nanofibres with beads (labelled "defective")."""
    data = np.asarray(read_image(SAMPLE_DIR / "sem_fibres_defective.png").data)
    meta = {"name": "SEM nanofibres (defective)", "metadata": {"label": "defective", "source": SEM_CITATION}}
    return [(data, meta, "image")]


VESICLES_CITATION = (
    "Karimi, Coupland, Rubinstein. vesicle-picker (MIT licence); bioRxiv doi:10.1101/2024.07.15.603622. "
    "A 1024² crop of their example micrograph."
)
VESICLES_PIXEL_NM = 0.2  # estimated from the vesicle sizes: the figure it was saved as records none


def cryoem_vesicles() -> list[tuple[Any, dict[str, Any], str]]:
    """A real cryo-EM micrograph of membrane vesicles (a 1024² crop, about 0.2 nm/px): what users
    bring, beside the simulated field the models were trained on. Never used for training."""
    data = np.asarray(read_image(SAMPLE_DIR / "cryoem_vesicles.png").data)
    meta = {"name": "cryo-EM vesicles (real)", "scale": (VESICLES_PIXEL_NM, VESICLES_PIXEL_NM),
            "metadata": {"pixel_size_nm": VESICLES_PIXEL_NM, "pixel_size_source": "estimated from vesicle sizes",
                         "source": VESICLES_CITATION}}
    return [(data, meta, "image")]


def liposome_field() -> list[tuple[Any, dict[str, Any], str]]:
    """A simulated 768² cryo-TEM field (2.5 nm/px, study class mix) and its true instances, whose
    ``features`` table holds each liposome's true classes (seed fixed: the same field every time)."""
    from napari_nanoclass.liposomes.simulator import SimulationConfig, simulate_field

    field = simulate_field(SimulationConfig(shape=(768, 768), objects=(18, 26)), seed=7)
    features = {"index": [o["label"] for o in field.objects],
                **{k: [o[k] for o in field.objects] for k in ("lamellarity", "encapsulation", "diameter_nm")}}
    meta = {"name": "simulated liposomes", "scale": (2.5, 2.5), "metadata": {"pixel_size_nm": 2.5}}
    truth = {"name": "true liposomes", "scale": (2.5, 2.5), "features": features, "visible": False}
    return [(field.image, meta, "image"), (field.labels, truth, "labels")]
