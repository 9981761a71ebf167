"""napari-nanoclass: deep-learning analysis of electron micrographs of nanomaterials.

The compute core (this package minus the ``_*widgets`` modules) never imports napari or Qt, so
everything the plugin does can be scripted:

>>> from napari_nanoclass import read_image, segment
>>> result = segment(read_image("section.tif"), "drosophila-seunet", progress=True)
>>> from napari_nanoclass.homogeneity import analyse
>>> fibres = analyse(read_image("mat.png"), cam=True)  # fibres.summary["verdict"], .p_nhnf, .cam
>>> from napari_nanoclass.liposomes import analyse as liposomes
>>> population = liposomes(read_image("cryo.tif"), pixel_size_nm=1.2)  # .objects, .summary, .labels
>>> from napari_nanoclass import run_batch
>>> report = run_batch("segment", ["sections/"], "results/")  # resumable; report.rows, report.failed
"""

from importlib.metadata import PackageNotFoundError, version

from .batch import run_batch
from .images import ImageError, read_image
from .models import list_models, load_model, save_model
from .progress import CancelToken, Cancelled, Progress, run_sync
from .segmentation import segment, segment_files_steps, segment_steps

try:
    __version__ = version("napari-nanoclass")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+src"

__all__ = [
    "CancelToken", "Cancelled", "ImageError", "Progress", "__version__", "list_models", "load_model",
    "read_image", "run_batch", "run_sync", "save_model", "segment", "segment_files_steps", "segment_steps",
]
