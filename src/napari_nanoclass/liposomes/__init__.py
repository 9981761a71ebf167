"""Liposomes in cryo-TEM: find every liposome, classify lamellarity and encapsulation, report
the population; correct in napari and retrain.

- :mod:`.predict` — the pipeline (rescale, detect, split, classify, summarise) and the file job
  behind ``nanoclass liposomes``;
- :mod:`.objects` — per-object measurements, crops and handcrafted features (shared by
  inference and training, so both see objects the same way);
- :mod:`.train` — the detector's targets, classifier training with resampling and operating
  points, the SVM baseline, cross-validation;
- :mod:`.simulator` — simulated cryo-TEM fields with ground truth, to pre-train on.

The classifier network is :class:`napari_nanoclass.models.lipnet.LipNet`. This module holds the
class names and the analysis' description only (no torch import).
"""

import logging
from pathlib import Path
from typing import Any

from napari_nanoclass.core.analysis import EXCLUDE_HELP, PIXEL_SIZES_NM, Analysis, Option

LAMELLARITY = ["unilamellar", "multilamellar", "uncertain"]
ENCAPSULATION = ["full", "empty", "uncertain"]
PROBLEMS = {"lamellarity": LAMELLARITY, "encapsulation": ENCAPSULATION}
# ColorBrewer Set1; "uncertain" is purple, not grey: grey objects on a grey micrograph look unlabelled
CLASS_COLOURS = {"unilamellar": "#377eb8", "multilamellar": "#ff7f00", "full": "#e41a1c", "empty": "#4daf4a",
                 "uncertain": "#984ea3"}
DEFAULT_DETECTOR = "liposome-detector"  # works at 2.5 nm/px: liposomes 30–300 nm
FINE_DETECTOR = "liposome-detector-fine"  # works at 1 nm/px: vesicles 20–150 nm with thin bilayers
# images at this pixel size or finer go to the fine detector (docs/liposomes.md: "Where the fine pair takes over")
FINE_BELOW_NM = 1.5
SMALL_DETECTOR = "liposome-detector-small"  # 1 nm/px (images enlarged ≤ 2×), beside the standard one: small vesicles
SMALL_UP_TO_NM = 5.0  # the coarsest images it runs on by default (docs/liposomes.md: "… at coarser scales")
# 1 nm/px, trained on default and REALISTIC image formation in turn, beside the fine detector: vesicles imaged
# unlike the fine detector's training fields
VARIED_DETECTOR = "liposome-detector-varied"
MIN_DIAMETER_NM = 20.0  # smaller detections are noise (liposomes are ≥ 30 nm); --min-diameter raises it
# a detection narrower than FAINT_BELOW_PX input pixels is kept only if its rim stands out of the image's noise
# by MIN_RING_SNR standard errors (in coarse, noisy images the detectors take noise for vesicles a few pixels
# across; chosen on validation data: docs/liposomes.md, "Faint specks at coarse pixel sizes"); --min-ring-snr
FAINT_BELOW_PX = 10.0
MIN_RING_SNR = 4.0
log = logging.getLogger("napari_nanoclass")


def default_detector(pixel_size_nm: float | None) -> str:
    """The detector for images of ``pixel_size_nm``: high-magnification images (up to
    ``FINE_BELOW_NM``, small vesicles whose bilayer a 2.5 nm/px detector cannot resolve) go to the
    fine detector, seen at its 1 nm/px; the others to the standard one. Between 1 and 1.5 nm/px the
    standard pair missed most vesicles of the real micrograph recorded at those scales and of fields
    imaged unlike its training fields, where the fine pair finds them."""
    return FINE_DETECTOR if pixel_size_nm is not None and pixel_size_nm <= FINE_BELOW_NM else DEFAULT_DETECTOR


def default_small_detector(pixel_size_nm: float | None) -> str | None:
    """The detector run beside the default one for images of ``pixel_size_nm`` (None: none); what
    it finds is added where the default detector found nothing (``predict.with_small``).

    * Up to ``FINE_BELOW_NM``: the varied-imaging detector beside the fine one. The fine detector
      learnt one simulator's image formation and misses most vesicles imaged otherwise; the
      varied one, trained on two image formations, finds many of those but fewer on the real
      development micrograph, so together they keep the fine detector's vesicles and add the
      others (docs/liposomes.md, "A simulator written apart").
    * Between ``FINE_BELOW_NM`` and ``SMALL_UP_TO_NM``: vesicles of 20–50 nm are a few pixels
      across at the standard detector's 2.5 nm/px, too few for their bilayer to show; the
      small-vesicle detector sees the image brought to 1 nm/px (enlarged at most 2×:
      ``predict.small_working_px``; docs/liposomes.md, "Other magnifications")."""
    if pixel_size_nm is None or pixel_size_nm > SMALL_UP_TO_NM:
        return None
    return VARIED_DETECTOR if pixel_size_nm <= FINE_BELOW_NM else SMALL_DETECTOR


def small_detector_for(pixel_size_nm: float | None, detector: Any = None, small_detector: Any = None) -> Any:
    """The detector a run uses beside its detector (a name or a loaded model, as given; None: none):
    the one named, else the default one beside the default detector. A detector chosen by name runs
    alone, as the user asked, unless it was fine-tuned in place of the default detector of the
    automatic pair: it then keeps its companion (:func:`companion`: the detector beside its base,
    fine-tuned on the same corrections where it was) at the scales where the automatic pair runs
    the default detector that companion stands for, so correcting and retraining does not lose
    what it found (a detector retrained at 2 nm/px does not take the varied-imaging detector at
    0.5 nm/px, nor one retrained at 0.5 nm/px the small-vesicle detector at 2 nm/px)."""
    if small_detector:
        return small_detector
    default = default_small_detector(pixel_size_nm)
    if detector is None or default is None:
        return default
    beside, stands_for = companion_record(detector)
    return beside if stands_for == default else None


def companion(detector: Any) -> str | None:
    """The detector that runs beside a fine-tuned detector (a name, a path or a loaded model) where
    the automatic pair runs one (:func:`companion_record`), or None."""
    return companion_record(detector)[0]


def companion_record(detector: Any) -> tuple[str | None, str | None]:
    """(the detector that runs beside ``detector``, the default detector beside its base that it
    stands for) as the fine-tuned detector records them (``training["small_detector"]`` and
    ``training["small_detector_default"]``; a companion that was not fine-tuned stands for itself),
    or (None, None): not retrained from the automatic pair, or not there (loading it will then say
    so in its own words). A retrained companion is found by its registered name or as a file beside
    the detector's (a pair copied together); where it is neither, the default it stands for runs
    instead, with a warning."""
    from napari_nanoclass.models.registry import ModelError, read_info, resolve  # torch: not at package import

    info, path = getattr(detector, "info", None), getattr(detector, "path", None)
    if info is None:
        try:
            path = resolve(detector)[0]
            info = read_info(path)
        except ModelError:
            return None, None
    beside = info.training.get("small_detector") or None
    stands_for = info.training.get("small_detector_default") or beside
    if retrained_companion(info.training) is None:
        return beside, stands_for
    try:
        resolve(beside)
        return beside, stands_for
    except ModelError:
        pass
    sibling = None if path is None else Path(path).with_name(f"{beside}.safetensors")
    if sibling is not None and sibling.exists():
        return str(sibling), stands_for
    log.warning("%s: %s, retrained beside it, is neither registered nor beside its file; running %s beside it instead",
                info.name, beside, stands_for)
    return stands_for, stands_for


def retrained_companion(training: dict[str, Any]) -> str | None:
    """The companion a detector's training record names if it was retrained with the detector (it
    is not the default detector it stands for), else None."""
    beside = training.get("small_detector") or None
    return beside if training.get("small_detector_default") not in (None, beside) else None


DEFAULT_CLASSIFIERS = {"lamellarity": "liposome-lamellarity", "encapsulation": "liposome-encapsulation"}
EXPLANATION_PRODUCT = "_cam_"  # <stem>_cam_<problem>: where each object's crop argued for its class

ANALYSIS = Analysis(
    name="liposomes",
    help="cryo-TEM liposomes: instances, lamellarity, encapsulation, population",
    outputs="output folder (<stem>_labels.tif, objects.csv, summary.csv/json)",
    table="summary.csv",
    job="napari_nanoclass.liposomes.predict:LiposomeFiles",
    reader="napari_nanoclass.io.reader:liposome_layers",
    overview="{stem}_labels",
    overview_kind="labels",
    products=("_labels", *(f"{EXPLANATION_PRODUCT}{p}" for p in PROBLEMS)),
    model_option="detector",
    options=(
        Option("pixel_size_nm", "--pixel-size", "nm per pixel of the input images (default: read from each file; "
               "needed for files that record none)", kind=float, low=PIXEL_SIZES_NM[0], high=PIXEL_SIZES_NM[1]),
        Option("detector", "--detector", f"registered detector model (default: {FINE_DETECTOR} for images at "
               f"{FINE_BELOW_NM:g} nm/px or finer, with {VARIED_DETECTOR} beside it, else {DEFAULT_DETECTOR}, with "
               f"{SMALL_DETECTOR} beside it for small vesicles up to {SMALL_UP_TO_NM:g} nm/px; a detector given here "
               "runs alone, unless it was fine-tuned from that automatic choice: it keeps the detector beside it)"),
        Option("small_detector", "--small-detector", "detector run beside the detector, adding what it missed "
               f"(default: {VARIED_DETECTOR} for images at {FINE_BELOW_NM:g} nm/px or finer, {SMALL_DETECTOR} "
               f"between {FINE_BELOW_NM:g} and {SMALL_UP_TO_NM:g} nm/px, when --detector is not given; name one to "
               "run it beside any detector at any pixel size)"),
        Option("min_diameter_nm", "--min-diameter", f"drop detections narrower than this, in nm (default: "
               f"{MIN_DIAMETER_NM:g}), for vesicles known to be larger", kind=float, low=1.0, high=1000.0),
        Option("min_ring_snr", "--min-ring-snr", f"keep a detection under {FAINT_BELOW_PX:g} input pixels across "
               "only if its rim differs from the ice around it by this many standard errors of the image's noise "
               f"(default: {MIN_RING_SNR:g}; 0 keeps them all, e.g. for small vesicles at 4-5 nm/px on clean "
               "images)", kind=float, low=0.0, high=1000.0),
        Option("tta", "--tta", "test-time augmentation: each detector averages its probabilities over the image's 8 "
               "rotations and flips (several times the detectors' time; found a few more vesicles on validation "
               "data, docs/liposomes.md)", kind=bool),
        Option("classifiers.lamellarity", "--lamellarity-model", "lamellarity classifier",
               default=DEFAULT_CLASSIFIERS["lamellarity"]),
        Option("classifiers.encapsulation", "--encapsulation-model", "encapsulation classifier",
               default=DEFAULT_CLASSIFIERS["encapsulation"]),
        Option("balanced_decisions", "--balanced-decisions", "classify as if every class were equally common "
               "(finds more rare objects, more false alarms) instead of at each classifier's stored operating point",
               kind=bool),
        Option("explain", "--explain", "also write <stem>_cam_lamellarity.tif and <stem>_cam_encapsulation.tif: "
               "where in each object its classifier saw evidence for the class it gave (Grad-CAM, 0-1 per object)",
               kind=bool),
        Option("exclude", "--exclude", EXCLUDE_HELP),
    ),
)
