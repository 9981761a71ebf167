"""Sample images shipped with the package (File > Open Sample in napari; ``nanoclass demo``).

Attribution and licences: samples/ATTRIBUTION.md. Returns napari LayerData tuples without
importing napari, so the same samples serve scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tifffile

SAMPLE_DIR = Path(__file__).resolve().parent / "samples"
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
