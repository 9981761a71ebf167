"""Training for the liposome analysis: the detector (SE U-Net), the LipNet classifiers with the
study's imbalance strategies, the handcrafted-features SVM baseline, and cross-validation.

Objects come from simulated fields (:mod:`liposome_simulator`) or from a user's image with a
corrected Labels layer and classes per object (:func:`objects_from_image`). Cross-validation
always keeps the objects of one image on the same side of a split (grouped, stratified folds).

Imbalance strategies (``ClassifierConfig.strategy``), all per training epoch:

* ``"oversample"`` — minority classes repeated at random up to the majority's count
  (imbalanced-learn ``RandomOverSampler``);
* ``"undersample"`` — a fresh random 20 % of the majority class dropped every epoch (the study's);
* ``"smote"`` — synthetic minority crops interpolated between neighbours (imbalanced-learn SMOTE,
  on the crop pixels and the size input), made once before training;
* ``"none"``.

``class_weights`` (inverse frequency in the loss), ``label_smoothing`` and the augmentations
(rotate, shift, flip, shear, zoom) combine with any of them.

Resampling makes the network decide as if the classes were equally common. After training, an
operating point between that and the training data's own class mix is chosen on the held-out
images (:func:`choose_decision`) and stored with the model; :func:`models.lipnet.decide` applies it.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.measure import regionprops
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch.nn import functional as F

from napari_nanoclass import engine
from napari_nanoclass.core.metrics import class_metrics, confusion_matrix
from napari_nanoclass.core.progress import Progress, Steps, run_sync, scaled
from napari_nanoclass.core.shapes import inner_rim
from napari_nanoclass.liposomes import PROBLEMS, default_detector, default_small_detector, small_detector_for
from napari_nanoclass.liposomes import objects as liposome_objects
from napari_nanoclass.liposomes.predict import (
    crop_spec,
    labels_at,
    load_on,
    small_working_px,
    working_image,
)
from napari_nanoclass.liposomes.simulator import Field
from napari_nanoclass.models.lipnet import (
    ENSEMBLE_ARCHITECTURE,
    LIPNET_ARCHITECTURE,
    LipNet,
    LipNetEnsemble,
    decide,
    predict_crops,
    shift_prior,
)
from napari_nanoclass.models.registry import (
    LoadedModel,
    ModelInfo,
    check_free,
    check_name,
    load_model,
    save_model,
    sha256_of,
)
from napari_nanoclass.segmentation.data import IGNORE_INDEX, Pair
from napari_nanoclass.segmentation.train import TrainConfig, train_steps

DETECTOR_CLASSES = ["background", "liposome", "boundary"]
DETECTOR_COLOURS = ["transparent", "#4daf4a", "#e41a1c"]
STRATEGIES = ("none", "oversample", "undersample", "smote")
AUGMENTATIONS = ("rotate", "shift", "flip", "shear", "zoom")
MIN_VALIDATION = 60  # held-out objects needed to choose an epoch by validation
PRIOR_STRENGTHS = np.round(np.linspace(0.0, 1.0, 11), 2)  # operating points tried on the held-out images


# -- detection targets ------------------------------------------------------------------------------


def detection_target(labels: np.ndarray, boundary_px: int = 2) -> np.ndarray:
    """Instance labels → classes background / liposome / boundary (the object's outer ``boundary_px``
    pixels). Touching objects are separated by their boundaries, so interiors give one seed each."""
    edge = inner_rim(labels)
    for _ in range(boundary_px - 1):
        edge |= inner_rim(np.where(edge, 0, labels)) & (labels > 0)
    target = (labels > 0).astype(np.int64)
    target[edge] = 2
    return target


def detector_pairs(fields: Sequence[Field], working_px: float | None = None) -> list[Pair]:
    """Training pairs for :func:`training.train_steps` from simulated fields.

    With ``working_px`` every field is first brought to that pixel size exactly as the analysis
    brings a user's image to its detector (:func:`working_image`), so a detector can learn what
    fields recorded at coarser pixels look like once resampled (smooth, with blob-like noise).
    """
    pairs = []
    for i, f in enumerate(fields):
        image, labels = f.image, f.labels
        if working_px is not None:
            image, _ = working_image(f.image, f.pixel_size_nm, working_px)
            labels = labels_at(f.labels, image.shape)
        pairs.append(Pair(image, detection_target(labels), f"field {i}"))
    return pairs


# fine-tuning on corrections: chosen on the left half of the real development micrograph, scored only on
# its vesicles that were not trained on (benchmarks/liposomes_real.py --finetune; docs/liposomes.md)
RING = 1.0  # background ring around a corrected object, in object radii
FINETUNE_EPOCHS = 5
FINETUNE_LR = 2e-4
WHOLE_EPOCHS = 20  # whole corrected images: chosen on othersim validation fields (docs/liposomes.md)
WHOLE_LR = 1e-3
ERASED = "erased"  # name of a training pair around a region the user erased
WHOLE = "whole image"  # name of the training pair of a complete correction (every liposome marked)
WHOLE_CROP = 256  # largest training crop of whole images
BESIDE_SUFFIX = "-beside"  # <name>-beside: the detector beside a retrained one, fine-tuned on the same corrections


def correction_pairs(image: np.ndarray, labels: np.ndarray, pixel_size_nm: float,
                     detector: str | LoadedModel | None = None, objects: Sequence[int] | None = None,
                     side: int = 96, erased: np.ndarray | None = None, beside: bool = False,
                     complete: bool = False) -> list[Pair]:
    """Training pairs for fine-tuning a detector on what a user drew, confirmed or erased.

    ``labels`` are instance labels of the image; ``objects`` the labels to learn from (default:
    all); ``erased`` (the image's shape, :func:`erased_area`) the pixels the user took away from
    the detection. The target (:func:`correction_target`, at the detector's working scale, as the
    analysis sees the image) holds what the user checked and nothing else: the objects' interiors
    and rims, a ring of background around each, and the erased pixels as background — a false
    detection the user removed teaches "no liposome here". Every other pixel is ignored by the loss:
    untouched objects and the ice around them are the detector's own guesses, and learning them
    would only confirm its mistakes. One pair per object and per erased region beyond the objects'
    rings (a trimmed outline is learnt with its object): a square around it. ``beside``: for a
    detector that runs beside another, at the view the analysis gives it (``small_working_px``).

    ``complete``: ``labels`` mark every liposome of the image, so every other pixel is known to be
    background and the whole image is one pair with every pixel in the loss. A few squares teach
    little about an image formation unlike the training fields'; whole images do
    (docs/liposomes.md, "Retraining on whole corrected images").
    """
    if complete and (objects is not None or erased is not None):
        raise ValueError("a complete correction learns every object and every other pixel as background: "
                         "it takes no objects or erased pixels")
    detector = load_on(detector or default_detector(pixel_size_nm), None)
    working_px = small_working_px(pixel_size_nm, detector) if beside else detector.info.pixel_size_nm
    work, _ = working_image(image, pixel_size_nm, working_px)
    labels = labels_at(np.asarray(labels), work.shape)
    if complete:
        return [Pair(work, detection_target(labels), WHOLE, stats=(0.0, 1.0))]  # work: normalised already
    wanted = [int(i) for i in (objects if objects is not None else np.unique(labels[labels > 0]))]
    removed = np.zeros(work.shape, bool) if erased is None else labels_at(np.asarray(erased, np.uint8), work.shape) > 0
    removed &= labels == 0
    # erased beyond the objects' rings (not a trimmed outline, which is learnt with its object)
    alone = removed & (correction_target(labels, wanted) == IGNORE_INDEX)
    target = correction_target(labels, wanted, removed)
    regions = [(f"object {r.label}", r) for r in regionprops(np.where(np.isin(labels, wanted), labels, 0))]
    regions += [(f"{ERASED} {r.label}", r) for r in regionprops(ndi.label(alone)[0])]
    if not regions:
        raise ValueError(f"none of the objects {sorted(wanted)} is in the labels, and nothing was erased")
    pairs = []
    for name, region in regions:
        half = max(side, round(1.5 * region.equivalent_diameter_area)) // 2
        cy, cx = (round(c) for c in region.centroid)
        window = (slice(max(0, cy - half), cy + half), slice(max(0, cx - half), cx + half))
        pairs.append(Pair(work[window], target[window], name, stats=(0.0, 1.0)))  # work: normalised as a whole
    return pairs


def correction_target(labels: np.ndarray, objects: Sequence[int], erased: np.ndarray | None = None) -> np.ndarray:
    """Detector classes where the user checked the image, :data:`IGNORE_INDEX` elsewhere: each of
    ``objects`` with its rim (:func:`detection_target`) and a ring of :data:`RING` radii of
    background around it (other objects' pixels stay unknown: not checked), and ``erased`` pixels
    not covered by an object as background."""
    corrected = np.where(np.isin(labels, objects), labels, 0)
    known = corrected > 0
    for region in regionprops(corrected):
        reach = max(3, round(RING * region.equivalent_diameter_area / 2))
        around = tuple(slice(max(0, b.start - reach), b.stop + reach) for b in region.slice)
        ring = ndi.binary_dilation(corrected[around] == region.label, iterations=reach)
        known[around] |= ring & (labels[around] == 0)
    target = np.where(known, detection_target(corrected), IGNORE_INDEX).astype(np.int64)
    if erased is not None:
        target[erased & (labels == 0)] = 0
    return target


def erased_area(labels: np.ndarray, detection: np.ndarray) -> np.ndarray:
    """Pixels the detection gave to a liposome (``detection``: its instance labels, or where it found
    any) that the user's corrected ``labels`` leave as background: false detections erased, outlines
    trimmed. They are the only negatives a user gives, so fine-tuning learns them as background."""
    return (np.asarray(detection) > 0) & (np.asarray(labels) == 0)


def mask_signatures(labels: np.ndarray) -> dict[int, str]:
    """A short digest of each object's pixels (label → hex). Taken when the analysis hands out its
    labels, it tells later which objects a user redrew: their digest no longer matches."""
    labels = np.asarray(labels)
    signatures = {}
    for label, box in enumerate(ndi.find_objects(labels), 1):
        if box is None:
            continue
        digest = hashlib.blake2b(digest_size=8)
        digest.update(np.asarray([(b.start, b.stop) for b in box], np.int64).tobytes())
        digest.update(np.packbits(labels[box] == label).tobytes())
        signatures[label] = digest.hexdigest()
    return signatures


def corrected_objects(labels: np.ndarray, detected: Mapping[int, str], confirmed: Iterable[int] = ()) -> list[int]:
    """The objects of ``labels`` a user drew, redrew or confirmed: labels the detection did not have,
    objects whose pixels differ from the detection's (``detected``: :func:`mask_signatures` of the
    analysis' labels), and the ``confirmed`` ones. The rest are the detector's own guesses, which
    must not teach it (they would only confirm its mistakes)."""
    confirmed = set(int(c) for c in confirmed)
    return sorted(label for label, signature in mask_signatures(labels).items()
                  if label in confirmed or detected.get(label) != signature)


def finetune_detector_steps(pairs: Sequence[Pair], name: str, detector: str | LoadedModel | None = None,
                            *, pixel_size_nm: float | None = None, epochs: int = FINETUNE_EPOCHS,
                            iters_per_epoch: int = 20,
                            lr: float = FINETUNE_LR, seed: int = 0, register: bool = False,
                            companion: str | None = None) -> Steps[LoadedModel]:
    """Fine-tune a detector on :func:`correction_pairs` (built with the same ``detector``); the new
    model keeps the base's working pixel size and post-processing, and records how many objects
    and erased regions it learnt from, and the detector to run beside it at ``pixel_size_nm``
    (``companion``, else the one its base ran beside; None: the automatic choice, whose pair it
    then replaces; see :func:`small_detector_for`) with the default detector that one stands for.
    No pixels are held out for validation (a user's few corrections are all there is).
    :func:`finetune_on_corrections_steps` fine-tunes the detector beside it too."""
    if register:
        check_free(name)
    beside = companion or small_detector_for(pixel_size_nm, detector)
    base = load_on(detector or default_detector(pixel_size_nm), None)
    crop = training_crop(pairs)
    config = TrainConfig(name=name, class_names=list(base.info.class_names),
                         class_colours=list(base.info.class_colours), init_from=str(base.path), epochs=epochs, iters_per_epoch=iters_per_epoch, crop=crop,
                         batch_size=4, lr=lr, patience=epochs, tile=base.info.tile, seed=seed,
                         pixel_size_nm=base.info.pixel_size_nm, calibrate=False)
    result = yield from train_steps(pairs, pairs, config)
    erased = sum(p.name.startswith(ERASED) for p in pairs)
    whole = sum(p.name == WHOLE for p in pairs)
    objects = len(pairs) - erased - whole
    info = replace(result.info, description=f"{base.info.name} fine-tuned on {objects} corrected objects, {erased} "
                                            f"erased regions and {whole} completely corrected images",
                   training=dict(result.info.training, postprocess=base.info.training.get("postprocess", {}),
                                 base=base.info.name, base_sha256=base.sha256, objects=objects,
                                 erased=erased, whole_images=whole, small_detector=beside,
                                 small_detector_default=default_small_detector(pixel_size_nm) if beside else None))
    model = LoadedModel(info, result.module.eval(), "", None, torch.device("cpu"))
    return registered(model) if register else model


def training_crop(pairs: Sequence[Pair]) -> int:
    """Side of the training crops: the smallest pair's (whole squares around corrected objects), or,
    with whole images among the pairs, the smallest of those, at most :data:`WHOLE_CROP` (squares
    are padded with ignored pixels to it): crops of a whole image see objects with their context."""
    whole = [p for p in pairs if p.name == WHOLE]
    side = min(min(p.image.shape) for p in (whole or pairs))
    return max(32, min(side, WHOLE_CROP if whole else side) // 8 * 8)


def registered(model: LoadedModel) -> LoadedModel:
    """``model`` saved and entered in the user's model folder under its name."""
    path = save_model(model.module, model.info)
    return replace(model, sha256=sha256_of(path), path=path)


@dataclass
class Retrained:
    """A detector fine-tuned on a user's corrections, and the detector beside it fine-tuned on the
    same ones (None where the analysis runs none beside it)."""

    detector: LoadedModel
    beside: LoadedModel | None


@dataclass
class Correction:
    """One image a user corrected, to retrain a detector on (:func:`retrain_steps`): its instance
    ``labels``, the ``objects`` among them the user drew, redrew or confirmed (None: all) and the
    ``erased`` pixels (:func:`erased_area`); or, ``complete``, labels that mark every liposome of
    the image, so that every other pixel is background (:func:`correction_pairs`)."""

    image: np.ndarray
    labels: np.ndarray
    pixel_size_nm: float
    objects: Sequence[int] | None = None
    erased: np.ndarray | None = None
    complete: bool = False

    def pairs(self, detector: str | LoadedModel | None, beside: bool = False) -> list[Pair]:
        """This correction's training pairs for ``detector`` (:func:`correction_pairs`)."""
        return correction_pairs(self.image, self.labels, self.pixel_size_nm, detector, self.objects,
                                erased=self.erased, beside=beside, complete=self.complete)


def finetune_on_corrections_steps(image: np.ndarray, labels: np.ndarray, pixel_size_nm: float, name: str,
                                  detector: str | LoadedModel | None = None, *, objects: Sequence[int] | None = None,
                                  erased: np.ndarray | None = None, complete: bool = False,
                                  **options: Any) -> Steps[Retrained]:
    """:func:`retrain_steps` on one corrected image (the napari widget's case)."""
    return (yield from retrain_steps([Correction(image, labels, pixel_size_nm, objects, erased, complete)], name,
                                     detector, **options))


def retrain_steps(corrections: Sequence[Correction], name: str, detector: str | LoadedModel | None = None, *,
                  beside: str | LoadedModel | None = None, epochs: int | None = None, iters_per_epoch: int = 20,
                  lr: float | None = None, seed: int = 0, register: bool = False) -> Steps[Retrained]:
    """Fine-tune ``detector`` (None: the automatic choice for the first correction's pixel size) on
    the ``corrections`` of one or more images (:class:`Correction`) and, where the analysis runs a
    detector beside it (:func:`small_detector_for`; or ``beside``), that one too on the same
    corrections at its own view: a false detection the user erased from what the detector beside
    found would otherwise come back with the next run. ``epochs`` and ``lr`` default to the recipe
    for what was corrected (:func:`recipe`). With ``register`` both are saved, the one beside as
    ``<name>-beside``, recorded in the detector's metadata as its companion; both names are
    checked before training, and nothing is saved until both are trained (a cancelled job leaves
    neither). Unregistered, the detector records the untuned default beside it (a name is all the
    record holds): pass ``Retrained.beside`` to the analysis as ``small_detector``, and as
    ``beside`` to retrain the pair again."""
    if not corrections:
        raise ValueError("no corrected image to retrain on")
    pixel_size_nm = corrections[0].pixel_size_nm
    beside = beside or small_detector_for(pixel_size_nm, detector)
    beside_name = f"{name}{BESIDE_SUFFIX}"
    if register:
        check_free(name)
        if beside:
            try:
                check_free(beside_name)
            except ValueError as exc:  # a name of 94–100 characters: say why it is too long
                raise ValueError(f"{exc} (the detector beside {name!r} is saved under that name)") from exc
    beside = load_on(beside, None) if beside else None  # a companion that is not there fails before training
    default_epochs, default_lr = recipe(corrections)
    options = dict(pixel_size_nm=pixel_size_nm, epochs=epochs or default_epochs, iters_per_epoch=iters_per_epoch,
                   lr=lr or default_lr, seed=seed)
    parts = 2 if beside else 1
    # one detector for every image, the one fine-tuned below: not each image's own default
    pairs = [pair for c in corrections for pair in c.pairs(detector or default_detector(pixel_size_nm))]
    tuned = yield from scaled(finetune_detector_steps(pairs, name, detector, **options,
                                                      companion=beside_name if register and beside else None),
                              0, parts, "retraining the detector")
    tuned_beside = None
    if beside:
        yield Progress(1, 2, f"preparing the corrections for {beside.info.name}")
        beside_pairs = [pair for c in corrections for pair in c.pairs(beside, beside=True)]
        tuned_beside = yield from scaled(finetune_detector_steps(beside_pairs, beside_name, beside, **options), 1, 2,
                                         f"retraining {beside.info.name}")
    if register:
        tuned_beside = registered(tuned_beside) if tuned_beside is not None else None
        tuned = registered(tuned)
    return Retrained(tuned, tuned_beside)


def recipe(corrections: Sequence[Correction]) -> tuple[int, float]:
    """(epochs, learning rate) for fine-tuning on ``corrections``: a nudge of the shipped weights for
    a few corrected objects (:data:`FINETUNE_EPOCHS`, :data:`FINETUNE_LR`), a longer, stronger run
    when whole images were corrected (:data:`WHOLE_EPOCHS`, :data:`WHOLE_LR`), which carry enough
    to learn another image formation from (docs/liposomes.md)."""
    if any(c.complete for c in corrections):
        return WHOLE_EPOCHS, WHOLE_LR
    return FINETUNE_EPOCHS, FINETUNE_LR


# -- objects ----------------------------------------------------------------------------------------


@dataclass
class Objects:
    """Liposomes as classifier inputs: one row per object across any number of images."""

    crops: np.ndarray  # (N, S, S) float32
    log_size: np.ndarray  # (N,) float32
    features: np.ndarray  # (N, F) handcrafted features for the SVM
    targets: dict[str, np.ndarray]  # problem -> (N,) class index
    groups: np.ndarray  # (N,) image index: never split across folds
    crop_mode: str = liposome_objects.DEFAULT_CROP_MODE  # how the crops were cut (a classifier needs its own)

    def __len__(self) -> int:
        return len(self.log_size)

    def subset(self, index: np.ndarray) -> Objects:
        return Objects(self.crops[index], self.log_size[index], self.features[index],
                       {k: v[index] for k, v in self.targets.items()}, self.groups[index], self.crop_mode)

    @classmethod
    def concatenate(cls, parts: Sequence[Objects]) -> Objects:
        modes = {p.crop_mode for p in parts}
        if len(modes) > 1:
            raise ValueError(f"cannot join objects cropped in different modes: {sorted(modes)}")
        return cls(np.concatenate([p.crops for p in parts]), np.concatenate([p.log_size for p in parts]),
                   np.concatenate([p.features for p in parts]),
                   {k: np.concatenate([p.targets[k] for p in parts]) for k in PROBLEMS},
                   np.concatenate([p.groups for p in parts]), modes.pop())


def objects_from_image(image: np.ndarray, labels: np.ndarray, classes: dict[int, dict[str, str]],
                       pixel_size_nm: float, *, mode: str = liposome_objects.DEFAULT_CROP_MODE, size: int = 32,
                       group: int = 0) -> Objects:
    """Objects of one z-scored image whose instance ``labels`` have ``classes[label][problem]``
    (class names; a missing problem or label is left out of that problem's training as −1)."""
    measured = liposome_objects.measure(labels, pixel_size_nm)
    ids = [r["label"] for r in measured]
    diameters = np.array([r["diameter_nm"] for r in measured])
    targets = {problem: np.array([names.index(classes[i][problem]) if problem in classes.get(i, {}) else -1
                                  for i in ids], np.int64) for problem, names in PROBLEMS.items()}
    threads = torch.get_num_threads()
    return Objects(liposome_objects.crops(image, labels, mode, size, pixel_size_nm=pixel_size_nm, threads=threads),
                   liposome_objects.log_size(diameters),
                   liposome_objects.features(image, labels, pixel_size_nm, threads),
                   targets, np.full(len(ids), group, np.int64), mode)


def training_objects(image: np.ndarray, labels: np.ndarray, classes: dict[int, dict[str, str]],
                     pixel_size_nm: float, detector: str | LoadedModel | None = None,
                     classifier: str | LoadedModel | None = None) -> Any:
    """Objects of a corrected result (its instance ``labels`` and each label's ``classes``) for
    retraining a classifier, at the scale and normalisation :func:`analyse` classifies at, and
    cropped the way ``classifier`` (the model to fine-tune) takes its input (the default crop mode
    at 32² if none)."""
    mode, size = ((liposome_objects.DEFAULT_CROP_MODE, 32) if classifier is None
                  else crop_spec(load_on(classifier, None).info))
    detector = load_on(detector or default_detector(pixel_size_nm), None)
    work, working_px = working_image(image, pixel_size_nm, detector.info.pixel_size_nm)
    return objects_from_image(work, labels_at(np.asarray(labels), work.shape), classes, working_px,
                              mode=mode, size=size)


def objects_from_fields(fields: Sequence[Field], *, mode: str = liposome_objects.DEFAULT_CROP_MODE,
                        size: int = 32) -> Objects:
    """Objects of simulated fields with their true classes; group = field index."""
    parts = []
    for i, f in enumerate(fields):
        classes = {o["label"]: {p: o[p] for p in PROBLEMS} for o in f.objects}
        present = np.unique(f.labels[f.labels > 0])
        kept = np.where(np.isin(f.labels, [k for k in present if k in classes]), f.labels, 0)
        parts.append(objects_from_image(f.image, kept, classes, f.pixel_size_nm, mode=mode, size=size, group=i))
    return Objects.concatenate(parts)


# -- the CNN classifier --------------------------------------------------------------------------------


@dataclass
class ClassifierConfig:
    """One LipNet training run for one problem (stored with the model)."""

    name: str = "my-liposome-classifier"
    problem: str = "lamellarity"
    variant: str = "4"
    input_mode: str = liposome_objects.DEFAULT_CROP_MODE
    input_size: int = 32
    size_input: bool = True
    feature_input: bool = False  # the SVM's handcrafted features join the dense layer
    strategy: str = "oversample"
    class_weights: bool = False
    label_smoothing: float = 0.1
    augment: list[str] = field(default_factory=lambda: ["rotate", "shift", "flip"])
    dropout: float = 0.3
    epochs: int = 40
    batch_size: int = 64
    min_steps_per_epoch: int = 20  # small (fine-tuning) sets are cycled so an epoch still teaches something
    lr: float = 1e-3
    patience: int = 8  # epochs without validation improvement (balanced accuracy) before stopping
    seed: int = 0
    pixel_size_nm: float = 2.5
    init_from: str | None = None  # registered classifier to fine-tune (keeps its architecture)

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"unknown problem {self.problem!r}; choose one of {sorted(PROBLEMS)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.input_mode not in liposome_objects.CROP_MODES:
            raise ValueError(f"unknown input mode {self.input_mode!r}; choose one of {liposome_objects.CROP_MODES}")
        unknown = set(self.augment) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"unknown augmentations {sorted(unknown)}; choose from {AUGMENTATIONS}")


@dataclass
class ClassifierResult:
    module: LipNet | LipNetEnsemble
    info: ModelInfo
    history: list[dict[str, float]]


def classifier_info(config: ClassifierConfig, history: list[dict[str, float]],
                    decision: dict[str, Any] | None = None) -> ModelInfo:
    names = PROBLEMS[config.problem]
    return ModelInfo(
        name=config.name, task="object-classification", architecture=LIPNET_ARCHITECTURE,
        arch_params=dict(variant=config.variant, n_classes=len(names), input_size=config.input_size,
                         dropout=config.dropout, size_input=config.size_input,
                         descriptors=len(liposome_objects.FEATURE_NAMES) if config.feature_input else 0),
        class_names=list(names), normalisation={"method": "zscore"}, tile=512, patch=config.input_size,
        pixel_size_nm=config.pixel_size_nm,
        description=f"LipNet-{config.variant} {config.problem} classifier ({config.input_mode} crops)",
        training={"config": asdict(config), "problem": config.problem, "input_mode": config.input_mode,
                  "history": history[-1:] if history else [], "decision": decision},
    )


def _augment(x: torch.Tensor, kinds: Sequence[str], generator: torch.Generator, mode: str = "masked") -> torch.Tensor:
    """Random affine transforms of a batch of crops (zeros = the mean fill in from outside); for
    ``"wall"`` crops their equivalents in the unrolled frame (:func:`_augment_wall`)."""
    if mode == "wall":
        return _augment_wall(x, kinds, generator)
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = uniform(0, 2 * math.pi) if "rotate" in kinds else torch.zeros(n)
    zoom = uniform(0.9, 1.1) if "zoom" in kinds else torch.ones(n)
    shear = uniform(-0.2, 0.2) if "shear" in kinds else torch.zeros(n)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if "flip" in kinds else torch.ones(n)
    shift = uniform(-0.15, 0.15) if "shift" in kinds else torch.zeros(n)
    shift_y = uniform(-0.15, 0.15) if "shift" in kinds else torch.zeros(n)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin + shear, shift], 1),
                         torch.stack([sin * flip, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


WALL_SHIFT_ROWS = 2  # "shift" of wall crops: the outline drawn up to this many rows off the wall


def _augment_wall(x: torch.Tensor, kinds: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    """Augmentations of unrolled (rows: distance from the outline, columns: angle) crops: a rotation
    is a circular shift of the columns, a flip reverses them, and a shift moves the rows by up to
    :data:`WALL_SHIFT_ROWS` (an outline drawn a little off the wall), repeating the edge row; shear
    and zoom would change the distances in nm, which carry the lamellae, and are not applied."""
    out = []
    for crop in x:
        if "rotate" in kinds:
            crop = torch.roll(crop, int(torch.randint(crop.shape[-1], (1,), generator=generator)), dims=-1)
        if "flip" in kinds and float(torch.rand(1, generator=generator)) < 0.5:
            crop = torch.flip(crop, dims=(-1,))
        if "shift" in kinds:
            rows = int(torch.randint(-WALL_SHIFT_ROWS, WALL_SHIFT_ROWS + 1, (1,), generator=generator))
            index = torch.clamp(torch.arange(crop.shape[-2]) - rows, 0, crop.shape[-2] - 1)
            crop = crop[..., index, :]
        out.append(crop)
    return torch.stack(out)


def _epoch_indices(y: np.ndarray, strategy: str, rng: np.random.Generator) -> np.ndarray:
    """Which training rows (with repeats) make up one epoch under ``strategy``."""
    index = np.arange(len(y))
    if strategy == "oversample":
        from imblearn.over_sampling import RandomOverSampler

        index = RandomOverSampler(random_state=int(rng.integers(2**31))).fit_resample(index[:, None], y)[0][:, 0]
    elif strategy == "undersample":
        counts = np.bincount(y)
        majority = np.flatnonzero(y == counts.argmax())
        dropped = rng.choice(majority, size=int(0.2 * len(majority)), replace=False)
        index = np.setdiff1d(index, dropped)
    return rng.permutation(index)


def _smote(objects: Objects, y: np.ndarray, seed: int) -> tuple[Objects, np.ndarray]:
    """Training set grown with SMOTE samples of every minority class (crops and sizes)."""
    from imblearn.over_sampling import SMOTE, RandomOverSampler

    n, s = objects.crops.shape[0], objects.crops.shape[1]
    flat = np.concatenate([objects.crops.reshape(n, -1), objects.log_size[:, None], objects.features], axis=1)
    smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
    sampler = (SMOTE(k_neighbors=min(5, smallest - 1), random_state=seed) if smallest > 1
               else RandomOverSampler(random_state=seed))  # SMOTE needs two of a class to interpolate
    flat, y = sampler.fit_resample(flat, y)
    grown = Objects(flat[:, : s * s].reshape(-1, s, s).astype(np.float32), flat[:, s * s].astype(np.float32),
                    flat[:, s * s + 1 :], {}, np.zeros(len(y), np.int64), objects.crop_mode)
    return grown, y


def trained_mix(y: np.ndarray, n_classes: int, config: ClassifierConfig) -> np.ndarray:
    """The class mix the network effectively learnt from: equal shares of the classes present
    after over-sampling, SMOTE or class weights; the data's own mix (majority less a fifth after
    under-sampling) otherwise."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    if config.strategy in ("oversample", "smote") or config.class_weights:
        counts = (counts > 0).astype(np.float64)
    elif config.strategy == "undersample":
        counts[counts.argmax()] *= 0.8
    return counts / counts.sum()


def choose_decision(probabilities: np.ndarray, y: np.ndarray, data_mix: np.ndarray,
                    trained: np.ndarray) -> dict[str, Any]:
    """The operating point between balanced decisions (strength 0) and the Bayes correction for
    the data's class mix (strength 1) with the best macro F1 on held-out objects (ties: the
    weaker shift). F1 weighs the rare objects found against majority objects wrongly called rare,
    which is what a population count needs. Without held-out objects the decisions stay balanced.
    """
    ratio = np.divide(data_mix, trained, out=np.ones_like(data_mix), where=trained > 0)
    strength, score = 0.0, None
    if len(y):
        present = np.unique(y)
        scores = [f1_score(y, shift_prior(probabilities, ratio, t).argmax(1), labels=present, average="macro",
                           zero_division=0) for t in PRIOR_STRENGTHS]
        best = int(np.argmax(scores))
        strength, score = float(PRIOR_STRENGTHS[best]), float(scores[best])
    return {"data_mix": data_mix.round(6).tolist(), "prior_ratio": ratio.round(6).tolist(),
            "prior_strength": strength, "validation_macro_f1": score}


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Mean recall over the classes present: chance is 1/C however imbalanced the data."""
    recalls = [np.mean(pred[y == c] == c) for c in range(n_classes) if np.any(y == c)]
    return float(np.mean(recalls)) if recalls else float("nan")


def _split_validation(objects: Objects, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about a tenth of the images (stratified) for early stopping.

    With fewer than :data:`MIN_VALIDATION` held-out objects (one image, a small fine-tuning set)
    the "best" epoch would be picked by noise: then everything trains and the last epoch is kept.
    """
    everything = (np.arange(len(y)), np.zeros(0, np.int64))
    folds = min(10, len(np.unique(objects.groups)), int(np.bincount(y).max()))
    if folds < 2:
        return everything
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes: fewer members than folds
        train, val = next(splitter.split(np.zeros(len(y)), y, objects.groups))
    return (train, val) if len(val) >= MIN_VALIDATION else everything


def _initial_classifiers(config: ClassifierConfig) -> tuple[list[LipNet], ClassifierConfig, ModelInfo | None]:
    """The network(s) training starts from, the config with the base's architecture and crops, and
    the base's description: a fresh LipNet; a registered LipNet's weights; or each member of a
    registered ensemble (each fine-tuned in turn, then packed again)."""
    if config.init_from is None:
        torch.manual_seed(config.seed)  # its initial weights too: torch's own seed differs in every process
        return [LipNet(**classifier_info(config, []).arch_params)], config, None
    base = load_model(config.init_from)
    params = {k: v for k, v in base.info.arch_params.items() if k != "members"}
    config = replace(config, variant=params["variant"], input_size=params["input_size"],
                     size_input=params["size_input"], feature_input=params.get("descriptors", 0) > 0,
                     input_mode=base.info.training.get("input_mode", config.input_mode),
                     problem=base.info.training.get("problem", config.problem))
    sources = base.module.members if base.info.architecture == ENSEMBLE_ARCHITECTURE else [base.module]
    modules = []
    for source in sources:
        module = LipNet(**dict(params, dropout=config.dropout))
        module.load_state_dict(source.state_dict())
        modules.append(module)
    return modules, config, base.info


def _fit_steps(module: LipNet, train: Objects, y: np.ndarray, val: Objects, y_val: np.ndarray,
               config: ClassifierConfig, dev: torch.device, weights: torch.Tensor | None,
               step: tuple[int, int, str]) -> Steps[list[dict[str, float]]]:
    """Train one LipNet from ``config.seed``, keep its best epoch on the held-out objects (the last
    one without any) and return its history; progress counts epochs from ``step`` (first epoch,
    total epochs, message prefix), so several networks can share one progress bar."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n_classes = len(PROBLEMS[config.problem])
    module.to(dev)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=1e-4)
    best = (-1.0, {k: v.detach().clone() for k, v in module.state_dict().items()})
    history: list[dict[str, float]] = []
    bad = 0
    for epoch in range(config.epochs):
        module.train()
        losses = []
        order = _epoch_indices(y, config.strategy, rng)
        repeats = math.ceil(config.min_steps_per_epoch * config.batch_size / len(order))
        order = np.concatenate([order] + [rng.permutation(order) for _ in range(repeats - 1)])
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            x = _augment(torch.from_numpy(train.crops[batch, None]), config.augment, generator,
                         config.input_mode).to(dev)
            descriptors = torch.from_numpy(train.features[batch].astype(np.float32)).to(dev) if module.descriptors else None
            logits = module(x, torch.from_numpy(train.log_size[batch]).to(dev), descriptors)
            loss = F.cross_entropy(logits, torch.from_numpy(y[batch]).to(dev), weight=weights,
                                   label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        validated = len(y_val) > 0
        score = balanced_accuracy(y_val, object_probabilities(module, val, dev).argmax(1), n_classes) \
            if validated else float("nan")
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_balanced_accuracy": score})
        if not validated or score > best[0]:
            state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            best, bad = (score if validated else best[0], state), 0
        else:
            bad += 1
        message = f"{step[2]}epoch {epoch + 1}: loss {history[-1]['loss']:.3f}"
        yield Progress(step[0] + epoch + 1, step[1], message + (f", val balanced accuracy {score:.3f}" if validated
                                                               else ""), dict(history[-1]))
        if bad >= config.patience:
            break
    module.load_state_dict(best[1])
    module.cpu().eval()
    return history


def train_classifier_steps(objects: Objects, config: ClassifierConfig, *, register: bool = False,
                           device: str | None = None) -> Steps[ClassifierResult]:
    """Train a LipNet (or fine-tune a LipNet or an ensemble of them) on the objects'
    ``config.problem`` classes; yields progress per epoch.

    Objects with an unknown class (−1) are left out. The epoch with the best balanced accuracy on
    held-out images is kept (early stopping after ``patience`` epochs without improvement); with
    too few objects to hold any out, all train and the last epoch is kept. Fine-tuning an ensemble
    (``init_from``) fine-tunes each member on the same objects and split, member i from seed
    ``config.seed + i`` (members differ by their seeds), and packs them again; its operating point
    is chosen for the mean, as a single classifier's is.
    """
    if register:
        check_name(config.name)  # before the compute, not when saving after it
    modules, config, base = _initial_classifiers(config)
    if objects.crop_mode != config.input_mode:
        raise ValueError(f"the objects were cropped in mode {objects.crop_mode!r} but the classifier takes "
                         f"{config.input_mode!r}: build them with mode={config.input_mode!r}")
    y_all = objects.targets[config.problem]
    known = np.flatnonzero(y_all >= 0)
    if len(known) < 2 or len(np.unique(y_all[known])) < 2:
        raise ValueError(f"training a {config.problem} classifier needs objects of at least two classes")
    objects, y_all = objects.subset(known), y_all[known]
    train_idx, val_idx = _split_validation(objects, y_all, config.seed)
    train, y = objects.subset(train_idx), y_all[train_idx]
    val, y_val = objects.subset(val_idx), y_all[val_idx]
    if config.strategy == "smote":
        train, y = _smote(train, y, config.seed)
    if modules[0].descriptors and config.init_from is None:
        modules[0].set_descriptor_scaling(train.features)  # a fine-tuned model keeps its base's scaling
    dev = engine.select_device(device)
    n_classes = len(PROBLEMS[config.problem])
    weights = None
    if config.class_weights:
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        weights = torch.tensor(np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0),
                               dtype=torch.float32, device=dev)
    histories, total = [], len(modules) * config.epochs
    for i, module in enumerate(modules):
        prefix = f"member {i + 1} of {len(modules)}, " if len(modules) > 1 else ""
        histories.append((yield from _fit_steps(module, train, y, val, y_val, replace(config, seed=config.seed + i),
                                                dev, weights, (i * config.epochs, total, prefix))))
        if len(histories[-1]) < config.epochs:  # stopped early: its share of the bar is done
            yield Progress((i + 1) * config.epochs, total, f"{prefix}stopped early after epoch {len(histories[-1])}")
    module = modules[0] if len(modules) == 1 else _packed(modules, classifier_info(config, []).arch_params)
    data_mix = np.bincount(y_all, minlength=n_classes) / len(y_all)
    decision = choose_decision(object_probabilities(module, val), y_val, data_mix,
                               trained_mix(y_all[train_idx], n_classes, config))
    info = classifier_info(config, histories[0], decision)
    if len(modules) > 1:
        info = _ensemble_info(info, info.name, decision, [{"name": info.name, "seed": config.seed + i,
                                                           "history": h[-1:]} for i, h in enumerate(histories)],
                              f"{base.description}; fine-tuned on {len(known)} objects")
    if register:
        save_model(module, info)
    return ClassifierResult(module, info, [dict(h, member=i) for i, history in enumerate(histories) for h in history]
                            if len(histories) > 1 else histories[0])


def _packed(modules: Sequence[LipNet], arch_params: dict[str, Any]) -> LipNetEnsemble:
    """LipNets of one architecture (``arch_params``) as one :class:`LipNetEnsemble`."""
    packed = LipNetEnsemble(len(modules), **arch_params)
    for target, module in zip(packed.members, modules):
        target.load_state_dict(module.state_dict())
    return packed.eval()


def _ensemble_info(first: ModelInfo, name: str, decision: dict[str, Any] | None, members: list[dict[str, Any]],
                   description: str) -> ModelInfo:
    """An ensemble's metadata from its first member's (``first``, whose recipe all share): its own
    name, architecture, operating point and description, and per member what tells it apart."""
    training = {key: value for key, value in first.training.items() if key != "history"}
    return replace(first, name=name, architecture=ENSEMBLE_ARCHITECTURE,
                   arch_params={"members": len(members), **first.arch_params}, description=description,
                   training={**training, "decision": decision,
                             "config": {**training.get("config", {}), "name": name, "seed": None},
                             "members": members})


def train_classifier(objects: Objects, config: ClassifierConfig, *, progress: Any = None,
                     **kwargs: Any) -> ClassifierResult:
    """Synchronous :func:`train_classifier_steps`."""
    return run_sync(train_classifier_steps(objects, config, **kwargs), progress=progress)


def predict_objects(result: ClassifierResult, objects: Objects, *, balanced: bool = False,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """(N, C) class probabilities of objects at the classifier's operating point (or balanced)."""
    return decide(object_probabilities(result.module, objects, device), result.info.training, balanced)


def ensemble_classifier(members: Sequence[LoadedModel], name: str,
                        calibration: Objects | None = None) -> ClassifierResult:
    """One classifier from several of one recipe (a problem, classes, crops and architecture),
    their probabilities averaged (:class:`LipNetEnsemble`). Its operating point is chosen as a
    single classifier's is (:func:`choose_decision`, the members' data and trained mixes) on
    ``calibration`` objects, which none of the members may have trained on; without them its
    decisions are balanced."""
    first = members[0].info

    def recipe(info: ModelInfo) -> tuple:
        config, decision = info.training.get("config", {}), info.training.get("decision") or {}
        return (info.architecture, info.arch_params, info.class_names, info.patch, info.training.get("problem"),
                info.training.get("input_mode"), info.training.get("fields"), config.get("strategy"),
                config.get("class_weights"), decision.get("prior_ratio"))

    for member in members[1:]:
        if recipe(member.info) != recipe(first):
            raise ValueError(f"{member.info.name} is not of {first.name}'s recipe (architecture, classes, problem, "
                             "crops, training fields and class balancing must match): an ensemble averages "
                             "classifiers of one kind")
    if len({m.sha256 for m in members}) < len(members):
        raise ValueError("the same classifier is given twice: an ensemble averages different ones")
    if first.architecture != LIPNET_ARCHITECTURE:
        raise ValueError(f"{first.name} is a {first.architecture}, not a LipNet")
    module = _packed([m.module for m in members], first.arch_params)
    decision = None
    own = first.training.get("decision") or {}
    if calibration is not None and own.get("data_mix"):
        if calibration.crop_mode != first.training.get("input_mode") or calibration.crops.shape[1] != first.patch:
            cut = f"{calibration.crop_mode} {calibration.crops.shape[1]}²"
            raise ValueError(f"calibration objects cut as {cut} crops; {first.name} takes "
                             f"{first.training.get('input_mode')} {first.patch}² ones")
        y = calibration.targets[first.training["problem"]]
        known = calibration.subset(np.flatnonzero(y >= 0))  # objects of unknown class say nothing
        data_mix, ratio = np.asarray(own["data_mix"]), np.asarray(own["prior_ratio"])
        trained = np.divide(data_mix, ratio, out=np.zeros_like(data_mix), where=ratio > 0)
        decision = choose_decision(object_probabilities(module, known), y[y >= 0], data_mix, trained / trained.sum())
    each = [{"name": m.info.name, "sha256": m.sha256, "seed": m.info.training.get("config", {}).get("seed"),
             "history": m.info.training.get("history", [])} for m in members]
    info = _ensemble_info(first, name, decision, each,
                          f"Mean of {len(members)} classifiers of one recipe ({first.description.split(';')[0]})")
    return ClassifierResult(module, info, [])


def object_probabilities(module: LipNet | LipNetEnsemble, objects: Objects,
                         device: str | torch.device = "cpu") -> np.ndarray:
    """(N, C) balanced class probabilities of a LipNet for objects (crops, sizes and features)."""
    return predict_crops(module, objects.crops, objects.log_size, objects.features, device)


# -- the SVM baseline -----------------------------------------------------------------------------------


def svm_baseline(features: np.ndarray, y: np.ndarray, *, probabilities: bool = False) -> Pipeline:
    """The study's baseline: RBF SVM on standardised handcrafted features, class weights inverse
    to frequency. With ``probabilities`` it is sigmoid-calibrated (``predict_proba``), so it can be
    given an operating point the same way as the CNN.

    Calibration cross-validates inside the training data, so every class needs two objects at
    least: rarer classes are left out of the calibrated model (``classes_`` says which are in;
    their probability is then zero) and the folds are as many as the rarest class allows, up to 5.
    """
    svm = SVC(C=10.0, class_weight="balanced")
    if not probabilities:
        return make_pipeline(StandardScaler(), svm).fit(features, y)
    counts = np.bincount(y)
    keep = counts[y] >= 2
    folds = int(min(5, counts[counts >= 2].min()))
    return make_pipeline(StandardScaler(), CalibratedClassifierCV(svm, cv=folds, ensemble=False)).fit(
        features[keep], y[keep])


# -- cross-validation --------------------------------------------------------------------------------------


def cross_validate(objects: Objects, problem: str, method: str, *, folds: int = 5, seed: int = 0,
                   config: ClassifierConfig | None = None, progress: Any = None) -> dict[str, Any]:
    """Stratified, grouped ``folds``-fold CV of ``method`` ("cnn" | "svm") on one problem; returns
    the pooled confusion matrix, per-class TPR/TNR/PPV/NPV/F1 and accuracies. For the CNN these are
    at each fold model's chosen operating point, and again under ``"balanced_decisions"``.
    ``"probabilities"`` holds every object's held-out class probabilities (the CNN's balanced ones;
    a sigmoid-calibrated SVM's), so methods can also be compared at matched specificity."""
    y = objects.targets[problem]
    names = PROBLEMS[problem]
    pred, pred_balanced = np.full(len(y), -1), np.full(len(y), -1)
    probabilities = np.zeros((len(y), len(names)), np.float32)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = list(splitter.split(np.zeros(len(y)), y, objects.groups))
    strengths = []
    for k, (train, test) in enumerate(splits):
        if method == "svm":
            x_train, x_test = objects.features[train], objects.features[test]
            pred[test] = svm_baseline(x_train, y[train]).predict(x_test)
            probabilities[test] = _class_columns(svm_baseline(x_train, y[train], probabilities=True), x_test,
                                                 len(names))
        else:
            cfg = replace(config or ClassifierConfig(), problem=problem, seed=seed + k)
            result = run_sync(train_classifier_steps(objects.subset(train), cfg))
            probabilities[test] = object_probabilities(result.module, objects.subset(test))
            pred[test] = decide(probabilities[test], result.info.training).argmax(1)
            pred_balanced[test] = probabilities[test].argmax(1)
            strengths.append(result.info.training["decision"]["prior_strength"])
        if progress is not None:
            progress(Progress(k + 1, folds, f"{method} {problem}: fold {k + 1}/{folds}"))
    out = {"problem": problem, "method": method, **classification_scores(y, pred, names),
           "targets": y.tolist(), "probabilities": probabilities.round(5).tolist()}
    if method != "svm":
        out.update(prior_strengths=strengths, balanced_decisions=classification_scores(y, pred_balanced, names))
    return out


def _class_columns(model: Pipeline, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``predict_proba`` with one column per class index, zero for classes absent from training."""
    out = np.zeros((len(x), n_classes), np.float32)
    out[:, model.classes_] = model.predict_proba(x)
    return out


def classification_scores(y: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Confusion matrix, per-class TPR/TNR/PPV/NPV/F1, accuracy and balanced accuracy."""
    confusion = confusion_matrix(pred, y, len(names))
    return {"confusion": confusion.tolist(), "per_class": class_metrics(confusion, names),
            "accuracy": float(np.mean(pred == y)), "balanced_accuracy": balanced_accuracy(y, pred, len(names))}
