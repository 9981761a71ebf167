"""X-ray diffraction pattern identification: the space group of a thin film from its 1-D pattern.

- :mod:`.patterns` — reading ``.xy`` / ``.xye`` / CSV patterns, and preparing them for a model
  (resampling to its 2θ grid, background removal, normalisation, optional FFT low-pass);
- :mod:`.predict` — inference: class probabilities, top 5, class activation over 2θ, and the
  file job behind ``nanoclass xrd``;
- :mod:`.structures` / :mod:`.simulate` — training patterns simulated from crystal structures
  (pymatgen, the ``xrd-train`` extra) with physical augmentations; :mod:`.train` — training and
  the evaluation protocol of benchmarks/xrd.py.

The network is :mod:`napari_nanoclass.models.xrd_cnn`. This module only describes the analysis
and its constants (no torch import).
"""

from napari_nanoclass.core.analysis import Analysis, Option

DEFAULT_MODEL = "xrd-thinfilm"
# the space groups of the thin-film data set, in the shipped model's class order
SPACE_GROUPS = ["Fm-3m", "I4/mcm", "P-3m1", "P2_1/a", "P6_3/mmc", "Pc", "Pm-3m"]
INPUT_SUFFIXES = (".xy", ".xye", ".csv", ".txt", ".dat")  # what `nanoclass xrd FOLDER` picks up
TOP = 5  # ranked classes reported per pattern

ANALYSIS = Analysis(
    name="xrd",
    help="X-ray diffraction patterns (.xy/.xye/.csv): space group, confidence, top 5, activation over 2θ",
    outputs="output folder (xrd.csv, <stem>_xrd.png per pattern)",
    job="napari_nanoclass.xrd.predict:XrdFiles",
    reader="napari_nanoclass.xrd.plot:layers",
    table="xrd.csv",
    key="pattern",
    overview="",
    overview_kind="none",
    inputs=INPUT_SUFFIXES,
    read="napari_nanoclass.xrd.patterns:read_pattern",
    model_option="model",
    model_task="pattern-classification",
    options=(
        Option("model", "--model", f"pattern classifier (default: the shipped model, {DEFAULT_MODEL})",
               default=DEFAULT_MODEL),
        Option("lowpass", "--lowpass", "FFT low-pass denoising: keep this fraction of the frequencies "
               "(default: the model's own setting)", kind=float, low=0.01, high=1.0),
        Option("no_plots", "--no-plots", "do not write a PNG per pattern", kind=bool),
    ),
)
