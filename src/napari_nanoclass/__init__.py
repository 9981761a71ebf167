"""napari-nanoclass: deep-learning analysis of electron micrographs of nanomaterials.

The compute core (everything but :mod:`._napari`) never imports napari or Qt, so everything the
plugin does can be scripted:

>>> from napari_nanoclass import read_image, segment, analyse_homogeneity, analyse_liposomes, analyse_xrd, run_batch
>>> result = segment(read_image("section.tif"), "drosophila-seunet", progress=True)
>>> fibres = analyse_homogeneity(read_image("mat.png"), cam=True)  # .summary["verdict"], .p_nhnf, .cam
>>> population = analyse_liposomes(read_image("cryo.tif"), pixel_size_nm=1.2)  # .objects, .summary, .labels
>>> report = run_batch("segment", ["sections/"], "results/")  # resumable; report.rows, report.failed
>>> film = analyse_xrd("film.xy")  # .predicted, .confidence, .ranked (top classes), .activation over 2θ

The names are imported on first use (module ``__getattr__``): ``import napari_nanoclass`` and
``nanoclass --help`` stay fast and import neither torch nor dask. The layout is described in
docs/architecture.md.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("napari-nanoclass")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+src"

# public name -> module that defines it
_API = {
    "segment": "napari_nanoclass.segmentation.predict",
    "segment_steps": "napari_nanoclass.segmentation.predict",
    "analyse_homogeneity": "napari_nanoclass.homogeneity.predict",
    "analyse_liposomes": "napari_nanoclass.liposomes.predict",
    "analyse_xrd": "napari_nanoclass.xrd.predict",
    "read_pattern": "napari_nanoclass.xrd.patterns",
    "run_batch": "napari_nanoclass.batch.runner",
    "batch_steps": "napari_nanoclass.batch.runner",
    "files_steps": "napari_nanoclass.core.analysis",
    "read_image": "napari_nanoclass.io.images",
    "ImageError": "napari_nanoclass.io.images",
    "load_model": "napari_nanoclass.models.registry",
    "list_models": "napari_nanoclass.models.registry",
    "save_model": "napari_nanoclass.models.registry",
    "CancelToken": "napari_nanoclass.core.progress",
    "Cancelled": "napari_nanoclass.core.progress",
    "Progress": "napari_nanoclass.core.progress",
    "run_sync": "napari_nanoclass.core.progress",
}
_RENAMED = {"analyse_homogeneity": "analyse", "analyse_liposomes": "analyse", "analyse_xrd": "analyse"}  # their names in their modules

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'napari_nanoclass' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), _RENAMED.get(name, name))
    globals()[name] = value  # the next lookup skips this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
