"""SEM nanofibre homogeneity: homogeneous fibres vs beads and defects, patch by patch.

- :mod:`.predict` — inference: patch maps, verdicts per view and per image, the Grad-CAM defect
  map, and the file job behind ``nanoclass homogeneity``;
- :mod:`.train` — training FibreCNNs (patch labels or multiple-instance bags), cross-validation;
- :mod:`.texture` — the handcrafted model (fibre-morphology or GLCM/LBP texture features per patch,
  regression heads, the recipe chosen with whole samples held out) that gives the default verdicts.

The networks are :mod:`napari_nanoclass.models.fibre_cnn` and
:mod:`napari_nanoclass.models.texture_classifier`. This module only describes the analysis and
its class names (no torch import).
"""

import re

from napari_nanoclass.core.analysis import PIXEL_SIZES_NM, Analysis, Option

DEFAULT_MODEL = "nanofibre-texture"  # verdicts: the best cross-validated accuracy with samples held out
DEFAULT_CAM_MODEL = "nanofibre-homogeneity"  # defect maps for models that cannot make one
CNN_ARCHITECTURE = "fibre-cnn"  # FibreCNN's name in the registry: the only homogeneity model with a CAM
TWO_CLASS = ["HNF", "NHNF"]
THREE_CLASS = ["non_defective", "slightly_defective", "defective"]
CLASS_COLOURS = ["#2b83ba", "#fdae61", "#d7191c"]  # homogeneous … defective, for every homogeneity model
SAMPLE_SEPARATORS = re.compile(r"[_-]")


def sample_name(stem: str) -> str:
    """The sample a micrograph comes from: its file stem up to the first ``_`` or ``-``, case-folded
    (``PPC9_05``, ``ppc9_011_6`` and ``PPC9-`` are one sample). Splits by sample keep every
    micrograph of a sample on one side: the class almost follows the sample."""
    return SAMPLE_SEPARATORS.split(stem, maxsplit=1)[0].lower()


VIEW = 1024  # side of one SEM view in pixels: verdicts are also given per view

ANALYSIS = Analysis(
    name="homogeneity",
    help="SEM nanofibre homogeneity: patch maps and a verdict per image and view",
    outputs="output folder (homogeneity.csv, homogeneity_views.csv, maps)",
    table="homogeneity.csv",
    job="napari_nanoclass.homogeneity.predict:HomogeneityFiles",
    reader="napari_nanoclass.io.reader:homogeneity_layers",
    overview="{stem}_pnhnf",
    overview_kind="map",
    products=("_pnhnf", "_cam"),
    model_option="model",
    model_task="patch-classification",
    options=(
        Option("model", "--model", "model for the verdicts and maps (default: the shipped texture model, "
               f"{DEFAULT_MODEL})", default=DEFAULT_MODEL),
        Option("cam", "--cam", "also write <stem>_cam.tif, where in the patches defects are", kind=bool),
        Option("cam_model", "--cam-model", "FibreCNN that makes the defect map (default: the model if it is one, "
               f"else the shipped CNN, {DEFAULT_CAM_MODEL})"),
        Option("view", "--view", "side of a view in pixels for per-view verdicts", kind=int, default=VIEW, low=16,
               high=2**20),
        Option("pixel_size_nm", "--pixel-size", "nm per pixel of the inputs (default: read from each file); images "
               "are rescaled to the model's pixel size when it records one", kind=float, low=PIXEL_SIZES_NM[0],
               high=PIXEL_SIZES_NM[1]),
    ),
)
