"""Segmentation: an EM image into a Labels layer of classes with an SE-U-Net (FREM-trained).

- :mod:`.predict` — inference: :func:`~.predict.segment` (an image in, class labels out) and the
  file job behind ``nanoclass segment``;
- :mod:`.train` — training and fine-tuning (FREM, calibrated decision offsets, FREM search);
- :mod:`.data` — image/label pairs from folders or layers, the Drosophila data set's classes.

The network itself is :class:`napari_nanoclass.models.unet.SEUNet`. This module only describes
the analysis (no torch import), so the command line can list it cheaply.
"""

from napari_nanoclass.core.analysis import EXCLUDE_HELP, PIXEL_SIZES_NM, Analysis, Option

DEFAULT_MODEL = "drosophila-seunet"

ANALYSIS = Analysis(
    name="segment",
    help="segment images into class labels",
    outputs="output folder (<stem>_labels, <stem>_classes.csv, segmentation.csv)",
    table="segmentation.csv",
    job="napari_nanoclass.segmentation.predict:SegmentFiles",
    reader="napari_nanoclass.io.reader:segmentation_layers",
    overview="{stem}_labels",
    overview_kind="labels",
    products=("_labels", "_probabilities"),
    model_option="model",
    model_task="segmentation",
    options=(
        Option("model", "--model", "registered model name or .safetensors file", default=DEFAULT_MODEL),
        Option("tile", "--tile", "tile size in pixels (default: the largest that half the memory allows)", kind=int,
               low=16, high=65536, changes_result=False),
        Option("probabilities", "--probabilities", "also write <stem>_probabilities.tif", kind=bool),
        Option("tta", "--tta", "average over 8 rotations/flips: slightly better, 8x slower", kind=bool),
        Option("precision", "--precision", "bfloat16: faster on recent CPUs and GPUs, a few labels may change "
               "(docs/engine.md); float16: GPUs only", default="float32", choices=("float32", "bfloat16", "float16")),
        Option("compile", "--compile", "compile the network first (torch.compile): slow up front, then faster "
               "tiles; for long runs (docs/engine-benchmark.md)", kind=bool, changes_result=False),
        Option("pixel_size_nm", "--pixel-size", "nm per pixel of the inputs (default: read from each file); images "
               "are rescaled to the model's pixel size", kind=float, low=PIXEL_SIZES_NM[0], high=PIXEL_SIZES_NM[1]),
        Option("exclude", "--exclude", EXCLUDE_HELP),
    ),
)
