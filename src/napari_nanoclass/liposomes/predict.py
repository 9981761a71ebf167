"""Liposomes in cryo-TEM: find every liposome, classify it, report the population.

The pipeline, for one 2-D image at a known pixel size:

1. **Rescale** to the detector's pixel size (2.5 nm/px; 1 nm/px for the fine detector chosen for
   images at ``FINE_BELOW_NM`` or finer) when the image's differs by more than 10 %, so objects
   look as large as in training; results are mapped back. Coarser images up to
   ``SMALL_UP_TO_NM`` are also seen at 1 nm/px (at most 2× enlarged: :func:`small_working_px`) by
   the small-vesicle detector, whose objects are added where the standard detector found none
   (:func:`with_small`): there the smallest vesicles are too few pixels across for it. Images the
   fine detector takes are seen in the same way by the varied-imaging detector beside it: vesicles
   imaged unlike the fine detector's training fields.
2. **Detect**: the SE U-Net gives background / liposome / boundary probabilities per pixel
   (shared tiled engine); interiors become seeds and a watershed grows them into the liposome
   mask, so touching liposomes come out as separate instances; ragged detections are cut at
   their necks or dropped, and detections with no membrane around them are dropped (see
   :func:`instances_from_probabilities`); detections a few input pixels across are kept only where
   their rim stands out of the image's noise (:func:`drop_faint`). Or take instance labels the
   user drew or corrected (``labels=``) and skip detection.
3. **Classify** every object twice — lamellarity (unilamellar / multilamellar / uncertain) and
   encapsulation (full / empty / uncertain) — with one classifier per problem (a LipNet or an
   ensemble of them), on the crop mode the model was trained with, plus the object's size. With
   ``explain``, each classifier's Grad-CAM for the class it gave
   (:func:`~napari_nanoclass.models.lipnet.explain_crops`) is put back over each object
   (:func:`~.objects.paste_maps`): one 0–1 map per problem at the input's size.
4. **Report**: one row per object (:data:`OBJECT_COLUMNS`), one summary per image
   (:data:`SUMMARY_COLUMNS`) with counts, % multilamellar and % loaded (encapsulation
   efficiency), and a size histogram.

:func:`analyse_steps` is what the napari widget runs; :func:`analyse` runs it synchronously;
:class:`LiposomeFiles` is ``nanoclass liposomes`` (output contract in docs/cli.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import edt
import numpy as np
import torch
import zarr
from scipy import ndimage as ndi
from skimage.measure import regionprops
from skimage.segmentation import watershed
from skimage.transform import resize

from napari_nanoclass import engine
from napari_nanoclass.core import shapes
from napari_nanoclass.core.analysis import PIXEL_SIZES_NM, FileJob, number
from napari_nanoclass.core.memory import release_memory, runs_within
from napari_nanoclass.core.progress import CancelToken, Progress, ProgressCallback, Steps, run_sync, scaled
from napari_nanoclass.engine.scaling import chosen_pixel_size, log, rescaled, resized_planes
from napari_nanoclass.io.images import (
    Image,
    ImageError,
    as_greyscale,
    check_exclusion_folder,
    excluded,
    exclusion_mask,
    file_stem,
    fill_mask,
    image_stats,
    ngff_label_metadata,
    output_path,
    placed,
    recorded_part,
    write_csv,
    write_image,
    write_json,
    write_label_image,
)
from napari_nanoclass.liposomes import (
    CLASS_COLOURS,
    DEFAULT_CLASSIFIERS,
    DEFAULT_DETECTOR,
    EXPLANATION_PRODUCT,
    FAINT_BELOW_PX,
    FINE_DETECTOR,
    MIN_DIAMETER_NM,
    MIN_RING_SNR,
    SMALL_DETECTOR,
    VARIED_DETECTOR,
    companion,
    default_detector,
    small_detector_for,
)
from napari_nanoclass.liposomes import objects as liposome_objects
from napari_nanoclass.models.lipnet import decide, explain_crops, predict_crops
from napari_nanoclass.models.registry import LoadedModel, ModelInfo, load_model

T = TypeVar("T")
U = TypeVar("U")

STREAM_ABOVE = 4096 * 4096  # input pixels beyond which an image is analysed block by block
BLOCK_PX = 2048  # side of a block's core in working pixels
MAX_DIAMETER_NM = 1000.0  # the largest liposome a block's margin holds whole
# post-processing of a detector's output, unless its metadata (training["postprocess"]) says otherwise
SMOOTHING = 0.0  # objects are opened with a disk of this fraction of the minimum liposome radius
MIN_SOLIDITY = 0.9  # liposomes are convex: a ragged detection is split at its necks, or dropped
MIN_RIM_BOUNDARY = 0.5  # a liposome is enclosed by its membrane: mean p(boundary) along its outer rim
RAGGED_AT_ONCE = 32  # more ragged objects than this: their distance transforms in one pass over the image
SPACED_AT_ONCE = 256  # an object's maxima spaced with a table of their close pairs up to this many candidates
RAGGED_CHUNK_PX = 1 << 21  # ragged objects cut in runs whose windows hold at most this many pixels together
RESCALE_TOLERANCE = 0.1
SMALL_MAX_OVERLAP = 0.2  # a small-vesicle detection covering more of the standard detector's objects is theirs
SMALL_MAX_ENLARGEMENT = 2.0  # the small-vesicle detector sees a coarse image enlarged at most this many times
# fine detectors (working at LARGE_LOOK_FROM_NM or finer, trained on vesicles up to 150 nm) also look at the
# image LARGE_VIEW times coarser; objects found there LARGE_MIN_NM or more across replace what lies mostly
# inside them (chosen on validation data: docs/liposomes.md, "A second look at half the scale")
LARGE_LOOK_FROM_NM = 1.0
LARGE_VIEW = 2.0
LARGE_MIN_NM = 100.0
LARGE_INSIDE = 0.5
LARGE_WHOLE_SOLIDITY = 0.95  # a fine object this convex inside a large one is a whole vesicle: the large one merged
HISTOGRAM_EDGES_NM = np.arange(0, 420, 20)
LABEL_NAME = "liposomes"  # the instances in an OME-Zarr output: ``labels/liposomes`` of the input image
# lengths name their unit: centroids in the input's pixels (to find the object in its labels) and in nm
OBJECT_COLUMNS = ["image", "label", "centroid_y_px", "centroid_x_px", "centroid_y_nm", "centroid_x_nm", "diameter_nm",
                  "max_width_nm", "area_nm2",
                  "lamellarity", "lamellarity_confidence", "encapsulation", "encapsulation_confidence"]
SUMMARY_COLUMNS = ["image", "n_objects", "n_unilamellar", "n_multilamellar", "n_lamellarity_uncertain", "n_full",
                   "n_empty", "n_encapsulation_uncertain", "pct_multilamellar", "pct_loaded", "mean_diameter_nm",
                   "median_diameter_nm", "pixel_size_nm", "pixel_size_source", "detector", "small_detector",
                   "min_diameter_nm", "min_ring_snr", "tta", "lamellarity_model", "encapsulation_model", "explained",
                   "status", "error", "path"]


@dataclass
class LiposomeResult:
    """Instances, one row per object and the population summary of one image."""

    labels: Any  # (Y, X) int32 instance labels at the input's pixel size: numpy, or zarr for large images
    objects: list[dict[str, Any]]
    summary: dict[str, Any]
    pixel_size_nm: float
    # role ("detector", "small_detector", "<problem>_model") -> name
    models: dict[str, str] = field(default_factory=dict)
    # with explain: problem -> (Y, X) float32 0–1 map at the labels' size, 0 outside objects (numpy or zarr)
    explanations: dict[str, Any] = field(default_factory=dict)

    def histogram(self, edges: np.ndarray = HISTOGRAM_EDGES_NM) -> tuple[np.ndarray, np.ndarray]:
        """Counts of object diameters (nm) per bin."""
        return np.histogram([o["diameter_nm"] for o in self.objects], bins=edges)

    def histogram_by_class(self, problem: str = "lamellarity",
                           edges: np.ndarray = HISTOGRAM_EDGES_NM) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Counts of object diameters (nm) per bin, per class of ``problem`` (a stacked histogram
        shows corrections: moving an object to another class moves it between the stacks)."""
        classes = sorted({str(o.get(problem)) for o in self.objects})
        return {c: np.histogram([o["diameter_nm"] for o in self.objects if str(o.get(problem)) == c], bins=edges)
                for c in classes}

    def features(self) -> dict[str, list[Any]]:
        """The objects as a napari Labels ``features`` table (``index`` = label value)."""
        columns = {"index": [o["label"] for o in self.objects]}
        for column in OBJECT_COLUMNS[2:]:
            columns[column] = [o[column] for o in self.objects]
        return columns

    def colours(self, problem: str = "lamellarity") -> dict[int | None, str]:
        """Label value → colour of its class in ``problem`` (for a DirectLabelColormap)."""
        return class_colours([o["label"] for o in self.objects], [o[problem] for o in self.objects])


def class_colours(labels: Iterable[int], classes: Iterable[str]) -> dict[int | None, str]:
    """Label value → the colour of its class (white if unknown), background transparent: the
    colour map of a liposome Labels layer, wherever it is made (analysis, correction, reader)."""
    colours: dict[int | None, str] = {int(i): CLASS_COLOURS.get(str(c), "#ffffff") for i, c in zip(labels, classes)}
    colours[None] = "transparent"
    return colours


# -- detection -------------------------------------------------------------------------------------


def instances_from_probabilities(probabilities: np.ndarray, min_area_px: int,
                                 min_solidity: float = MIN_SOLIDITY,
                                 min_rim_boundary: float = MIN_RIM_BOUNDARY,
                                 smoothing: float = SMOOTHING) -> np.ndarray:
    """Background / liposome / boundary probabilities → instance labels.

    Seeds are the connected interiors (class "liposome" inside the boundary, with any inner
    rings filled in); a watershed on the boundary probability grows each seed over the whole
    foreground, so a boundary shared by two touching liposomes is split between them. Then:

    * small objects are dropped;
    * with ``smoothing`` > 0 each object is opened with a disk of ``smoothing`` × the minimum
      liposome radius and keeps its largest piece: on a real micrograph, specks of "liposome" next
      to a vesicle join it in the watershed and make it ragged, and the solidity rule below then
      dropped half of the real vesicles (docs/liposomes.md, "On a real micrograph");
    * a ragged object (solidity below ``min_solidity``) is usually two liposomes the detector saw
      as one: it is cut at the necks of its distance transform, and pieces that are convex and
      big enough are kept (the rest is dropped: film edges, debris);
    * objects not enclosed by a membrane are dropped: on 30 simulated validation fields, 22 of
      25 false detections had a mean p(boundary) along their rim below 0.44, true ones above 0.34
      (5 % below 0.66) — ice and contamination blobs look like an interior but have no bilayer.

    On those validation fields (seeds 300 000…) these steps took detection F1 from 0.924 to 0.972.
    """
    classes = _classes(probabilities)
    foreground = fill_holes(classes > 0)
    # holes filled: the interior inside a multilamellar object's inner rings joins its outer seed
    seeds, _ = ndi.label(fill_holes(cross_opening(classes == 1)))
    seeds = _drop_small(seeds, min_area_px // 4 + 1)
    instances = _drop_small(flood(probabilities[2], seeds, foreground), min_area_px)
    instances = _smoothed(instances, round(smoothing * np.sqrt(min_area_px / np.pi)), min_area_px)
    instances = _split_ragged(instances, min_solidity, min_area_px)
    instances[np.isin(instances, _unenclosed(instances, probabilities[2], min_rim_boundary))] = 0
    return sequential(instances)


def _classes(probabilities: np.ndarray) -> np.ndarray:
    """``probabilities.argmax(axis=0)`` of background / liposome / boundary, ties to the first
    class as there, from two comparisons: several times faster than numpy's strided argmax. (Not
    for NaN, which argmax would pick and this does not: the engine's probabilities are finite.)"""
    background, liposome, boundary = probabilities
    classes = (liposome > background).astype(np.int8)
    classes[boundary > np.maximum(background, liposome)] = 2
    return classes


def sequential(labels: np.ndarray) -> np.ndarray:
    """``skimage.segmentation.relabel_sequential(labels)[0]`` as int32: the labels present renumbered
    1 … n in their order, 0 kept. One lookup table from a count of the labels instead of skimage's
    sort of every pixel, a noticeable part of the post-processing on the small-vesicle detector's
    large view. For non-negative labels, as instance labels are."""
    present = np.bincount(np.asarray(labels).ravel(), minlength=1) > 0
    present[0] = False
    lookup = np.zeros(len(present), np.int32)
    lookup[present] = np.arange(1, int(present.sum()) + 1)
    return lookup[labels]


def cross_opening(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_opening(mask, structure=disk(1))`` (the 4-neighbour cross, nothing beyond the
    edge): an erosion and a dilation from array shifts, many times faster than scipy's generic
    structuring-element loop on the large views the small-vesicle detector sees."""
    mask = np.asarray(mask, bool)
    if mask.size == 0:
        return mask.copy()
    eroded = mask.copy()
    eroded[1:] &= mask[:-1]
    eroded[:-1] &= mask[1:]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    eroded[[0, -1]] = False  # scipy erodes the edge: its border value is 0
    eroded[:, [0, -1]] = False
    opened = eroded.copy()
    opened[1:] |= eroded[:-1]
    opened[:-1] |= eroded[1:]
    opened[:, 1:] |= eroded[:, :-1]
    opened[:, :-1] |= eroded[:, 1:]
    return opened


def disk_opening(mask: np.ndarray, radius: int) -> np.ndarray:
    """``ndi.binary_opening(mask, structure=disk(radius))`` (nothing beyond the edge), from two exact
    squared distance transforms instead of scipy's loop over the disk's offsets: a pixel survives
    the erosion when no background pixel (the image's edge included) lies within ``radius``, and
    the dilation brings back every pixel within ``radius`` of a survivor. Integer squared distances
    against radius², so the same pixels."""
    limit = radius * radius
    eroded = liposome_objects.squared_distance_to_background(mask, edge_is_background=True) > limit
    if not eroded.any():
        return eroded
    return liposome_objects.squared_distance_to_background(~eroded) <= limit


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes(mask)``: the background components that do not touch the image's
    edge (4-connected, as there) become foreground. One labelling instead of scipy's iterated
    erosions, several times faster on the large views the small-vesicle detector sees."""
    if mask.size == 0:
        return mask.copy()
    background, count = ndi.label(~mask)
    edges = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    open_to_edge = np.zeros(count + 1, bool)
    open_to_edge[edges] = True
    open_to_edge[0] = True  # label 0 is the mask itself
    return ~open_to_edge[background] | mask


def _smoothed(instances: np.ndarray, radius: int, min_area_px: int) -> np.ndarray:
    """Each object opened with a disk of ``radius`` px (thin attachments cut off), keeping its
    largest piece; objects left smaller than ``min_area_px`` are dropped."""
    if radius < 1:
        return instances
    out = np.zeros_like(instances)
    for region in regionprops(instances):
        opened = disk_opening(np.pad(region.image, radius), radius)[radius:-radius, radius:-radius]
        pieces, n = ndi.label(opened)
        if n:
            largest = np.argmax(np.bincount(pieces.ravel())[1:]) + 1
            out[region.slice][pieces == largest] = region.label
    return _drop_small(out, min_area_px)


def _drop_small(labels: np.ndarray, min_area_px: int) -> np.ndarray:
    """Labels with fewer than ``min_area_px`` pixels set to 0 (skimage's remove_small_objects
    warns when a field holds a single object)."""
    sizes = np.bincount(labels.ravel())
    present = sizes[1:][sizes[1:] > 0]
    if (present >= min_area_px).all():  # nothing to drop: no lookup and copy over the image
        return labels
    # one lookup of each pixel's new label, instead of its size, a comparison and a choice
    lookup = np.where(sizes >= min_area_px, np.arange(sizes.size), 0).astype(labels.dtype)  # 0 stays 0
    return lookup[labels]


def _split_ragged(instances: np.ndarray, min_solidity: float, min_area_px: int) -> np.ndarray:
    """Cut each object with solidity below ``min_solidity`` at the necks of its distance transform
    (one piece per maximum at least a minimum liposome radius apart); keep the convex pieces of
    at least ``min_area_px``, numbered after the objects in the order of the objects and of their
    maxima. The solidity tests take all objects at once: a coarse, noisy image has thousands of
    ragged noise blobs."""
    solid = shapes.solid_enough(instances, min_solidity)
    every_box = ndi.find_objects(instances)
    ragged = [label for label, box in enumerate(every_box, 1) if box is not None and not solid[label]]
    if not ragged:
        return instances.copy()
    out = np.where(np.isin(instances, ragged), 0, instances)
    boxes = [every_box[label - 1] for label in ragged]
    pieces = _ragged_pieces(instances, ragged, boxes, max(2, round(np.sqrt(min_area_px / np.pi))))
    # the pieces lie in the ragged objects' boxes: judged there, not over the whole image
    window = tuple(slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes)) for i in range(2))
    big = np.bincount(pieces[window].ravel()) >= min_area_px
    solid = shapes.solid_enough(np.where(big[pieces[window]], pieces[window], 0), min_solidity)  # small: no test
    kept = np.zeros(big.size, bool)
    kept[: solid.size] = solid
    number = np.zeros(kept.size, out.dtype)
    number[kept] = int(instances.max()) + 1 + np.arange(np.count_nonzero(kept))
    return np.where(kept[pieces], number[pieces], out)


def _ragged_pieces(instances: np.ndarray, ragged: list[int], boxes: list[tuple[slice, slice]],
                   min_distance: int) -> np.ndarray:
    """The ``ragged`` objects (in their ``boxes``) cut by a watershed of their own distance
    transforms from their maxima at least ``min_distance`` apart, as one label image numbering the
    pieces object after object (objects with fewer than two maxima give none). The transforms
    are the distance to the nearest pixel of another label, the background or beyond the image's
    edge: one multi-label transform of the image where many objects are ragged, one per object
    where few are (the same values, scipy's on each object alone)."""
    whole = None
    if len(ragged) > RAGGED_AT_ONCE:
        whole = np.sqrt(edt.edtsq(np.ascontiguousarray(instances), black_border=True, parallel=1).astype(np.float64))
    pieces = np.zeros(instances.shape, np.int64)
    count = 0
    # a few windows' copies held at a time: runs of objects whose boxes hold at most RAGGED_CHUNK_PX pixels
    for chunk in runs_within(zip(ragged, boxes), lambda item: math.prod(s.stop - s.start for s in item[1]),
                             RAGGED_CHUNK_PX):
        masks = [instances[box] == label for label, box in chunk]
        insides = [np.where(mask, whole[box], 0.0) if whole is not None
                   else liposome_objects.distance_to_background(np.pad(mask, 1))[1:-1, 1:-1]
                   for mask, (_, box) in zip(masks, chunk)]
        for (_, box), mask, inside, peaks in zip(chunk, masks, insides, _maxima_of_each(insides, masks, min_distance)):
            if len(peaks) < 2:
                continue
            markers = np.zeros(mask.shape, np.int32)
            markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
            cut = flood(-inside, markers, mask)
            reached = cut > 0  # a part of the object's label that holds no maximum is no piece
            pieces[box][reached] = cut[reached] + count
            count += len(peaks)
    return pieces


def _maxima_of_each(distances: list[np.ndarray], masks: list[np.ndarray], min_distance: int) -> list[np.ndarray]:
    """``[_maxima(d, m, min_distance) for d, m in zip(distances, masks)]``, with one maximum filter
    over all the objects laid side by side (:func:`_mosaic`) instead of one per object: a coarse,
    noisy image has a thousand ragged noise blobs, and each filter call costs more than its pixels."""
    lowest = np.finfo(np.float64).min
    images = [np.where(mask, distance, lowest) for distance, mask in zip(distances, masks)]
    # windows min_distance apart, in a frame of the lowest value: each pixel's filter square reaches
    # only its own window and that value, as mode="nearest" on the window alone gives
    mosaic, corners = _mosaic(images, min_distance, lowest)
    peak = mosaic == ndi.maximum_filter(mosaic, size=2 * min_distance + 1, mode="nearest")
    return [_maxima(distance, mask, min_distance, peak[top : top + mask.shape[0], left : left + mask.shape[1]])
            for (top, left), mask, distance in zip(corners, masks, distances)]


def _mosaic(images: list[np.ndarray], gap: int, fill: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The 2-D ``images`` laid out in rows on one canvas of ``fill``, ``gap`` pixels apart and from
    its edges, and the (top, left) corner of each."""
    width = max([1024, *(image.shape[1] for image in images)]) + 2 * gap
    corners, top, left, row_height = [], gap, gap, 0
    for image in images:
        height, breadth = image.shape
        if left + breadth + gap > width:  # next row
            top, left, row_height = top + row_height + gap, gap, 0
        corners.append((top, left))
        left += breadth + gap
        row_height = max(row_height, height)
    canvas = np.full((top + row_height + gap, width), fill, np.float64)
    for (y, x), image in zip(corners, images):
        canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
    return canvas, corners


def _maxima(distance: np.ndarray, mask: np.ndarray, min_distance: int,
            window_maxima: np.ndarray | None = None) -> np.ndarray:
    """``peak_local_max(distance, min_distance=min_distance, labels=mask, exclude_border=False)``
    for one object whose ``mask`` spans its window (``distance`` ≥ 0), computed as scikit-image
    does: the object's pixels equal to the maximum of their (2·min_distance + 1)² square and above
    the window's least value (or, where every pixel is such a maximum, the object's pixels a
    3×3 cross opening removes), spaced by :func:`_spaced`. ``window_maxima``: which pixels equal
    that maximum, if already known (:func:`_maxima_of_each`)."""
    threshold = distance.min()
    image = np.where(mask, distance, np.finfo(distance.dtype).min)
    if image.size == 1:
        peak = image > threshold
    else:
        if window_maxima is None:
            window_maxima = image == ndi.maximum_filter(image, size=2 * min_distance + 1, mode="nearest")
        # no maximum stands out where every pixel is one: isolated pixels only
        peak = mask ^ ndi.binary_opening(mask) if window_maxima[mask].all() else window_maxima
        peak = peak & (image > threshold)
    return _spaced(np.transpose(np.nonzero(peak)), image[peak], min_distance)


def _spaced(points: np.ndarray, values: np.ndarray, min_distance: int) -> np.ndarray:
    """``points`` (in raster order) by falling ``values``, each kept unless a kept one lies within
    ``min_distance`` (Chebyshev): peak_local_max's spacing, as a loop over an object's few candidates
    instead of skimage's k-d tree, which cost most of the time of cutting thousands of noise blobs.
    Which pairs are that close is worked out once, and where none is every point is kept."""
    if len(points) < 2:
        return points
    points = points[np.argsort(-values, kind="stable")]
    if len(points) <= SPACED_AT_ONCE:
        close = np.abs(points[:, None] - points[None]).max(axis=2) < min_distance
        np.fill_diagonal(close, False)
        if not close.any():
            return points

        def near(i: int) -> np.ndarray:
            return close[i, :i]
    else:  # the pairs would not fit in little memory: each point's worked out when it comes
        def near(i: int) -> np.ndarray:
            return np.abs(points[:i] - points[i]).max(axis=1) < min_distance
    kept = np.ones(len(points), bool)
    for i in range(1, len(points)):  # each point against the kept points before it
        kept[i] = not (near(i) & kept[:i]).any()
    return points[kept]


def flood(image: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``watershed(image, markers, mask=mask)`` of a 2-D image (4-connected), as int32: scikit-image's
    own flooding kernel given the padded arrays its wrapper would build, without the wrapper's
    checks and copies, which cost many times the flooding of a small object (a coarse, noisy image
    has a thousand ragged blobs to cut). The wrapper itself where that kernel is not found as
    expected (:func:`_flooding_kernel`)."""
    kernel = _flooding_kernel()
    if kernel is None:
        return watershed(image, markers, mask=mask).astype(np.int32, copy=False)
    return _flooded_by(kernel, image, markers, mask)


def _flooded_by(kernel: Callable[..., None], image: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """:func:`flood` with scikit-image's ``watershed_raveled`` as ``kernel``."""
    height, width = image.shape
    padded = np.zeros((height + 2, width + 2), np.float64)
    padded[1:-1, 1:-1] = image
    allowed = np.zeros(padded.shape, np.int8)
    allowed[1:-1, 1:-1] = mask
    out = np.zeros(padded.shape, np.int32)
    out[1:-1, 1:-1] = np.where(mask, markers, 0)
    row = width + 2
    # skimage's neighbour order for connectivity 1 (_offsets_to_raveled_neighbors): up, left, right, down
    kernel(padded.ravel(), np.flatnonzero(out), np.array([-row, -1, 1, row], np.intp), allowed.ravel(),
           np.array([row, 1], np.intp), 0.0, out.ravel(), False)
    return out[1:-1, 1:-1].copy()


@lru_cache(maxsize=1)
def _flooding_kernel() -> Callable[..., None] | None:
    """scikit-image's ``watershed_raveled`` (a private function), if it floods a small test image as
    ``watershed`` does; None otherwise (another version may change it), and :func:`flood` then
    calls ``watershed``."""
    try:
        from skimage.segmentation._watershed_cy import watershed_raveled
    except ImportError:
        return None
    image = np.array([[3, 1, 2, 2, 0], [2, 2, 1, 3, 3], [0, 1, 2, 2, 1]], np.float64)
    markers = np.zeros(image.shape, np.int32)
    markers[0, 1], markers[2, 4], markers[1, 0] = 1, 2, 3
    mask = image < 3
    try:
        found = _flooded_by(watershed_raveled, image, markers, mask)
        expected = watershed(image, markers, mask=mask)
    except (TypeError, ValueError):  # its signature or argument types changed
        return None
    return watershed_raveled if np.array_equal(found, expected) else None


def _unenclosed(instances: np.ndarray, boundary: np.ndarray, threshold: float) -> list[int]:
    """Labels whose outer rim (their pixels touching another label or background) has a mean
    boundary probability below ``threshold``."""
    rim = shapes.inner_rim(instances)
    owners = instances[rim]
    count = np.bincount(owners, minlength=instances.max() + 1)
    total = np.bincount(owners, weights=boundary[rim], minlength=instances.max() + 1)
    return [int(i) for i in np.flatnonzero(total < threshold * np.maximum(count, 1)) if i > 0]


def noise_sigma(image: np.ndarray) -> float:
    """The standard deviation of ``image``'s pixel noise, from the median absolute deviation of its
    residual from a 3×3 mean (robust to the objects and to slow background changes), scaled to
    what that residual leaves of white noise."""
    residual = image - ndi.uniform_filter(image, 3)
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))) * 3 / np.sqrt(8))


def ring_snr(image: np.ndarray, labels: np.ndarray, label: int, box: tuple[slice, slice], sigma: float,
             ring_px: int = 2) -> float:
    """How far object ``label``'s rim (its pixels next to the outside) differs from the free pixels
    within ``ring_px`` around it, in standard errors of that difference under pixel noise ``sigma``
    (either sign: the membrane darker, or brighter in inverted images). ``box``: the object's
    bounding box (``ndi.find_objects``). NaN where either set is empty: nothing to judge by."""
    window = tuple(slice(max(b.start - ring_px, 0), b.stop + ring_px) for b in box)
    own = labels[window] == label
    rim = own & ~ndi.binary_erosion(own)
    ring = ndi.binary_dilation(own, iterations=ring_px) & (labels[window] == 0)
    if not rim.any() or not ring.any():
        return float("nan")
    values = image[window]
    error = sigma * np.sqrt(1 / rim.sum() + 1 / ring.sum())
    return float(abs(values[ring].mean() - values[rim].mean()) / error)


def drop_faint(labels: np.ndarray, data: np.ndarray, below_px: float = FAINT_BELOW_PX,
               min_snr: float = MIN_RING_SNR) -> np.ndarray:
    """``labels`` (at any scale) without the objects narrower than ``below_px`` pixels of ``data``
    (the input image) whose rim does not stand out of its noise by ``min_snr`` (:func:`ring_snr`,
    measured on ``data`` itself: enlarging it for a detector adds no information, only correlated
    pixels). Objects that cannot be judged are kept."""
    scale = data.shape[0] / labels.shape[0]
    areas = np.bincount(labels.ravel()) * scale**2
    if not (2 * np.sqrt(areas[1:] / np.pi) < 1.5 * below_px).any():  # an estimate: none can be that narrow
        return labels
    at_input = labels_at(labels, data.shape)
    input_areas = np.bincount(at_input.ravel(), minlength=len(areas))
    image = np.asarray(data, np.float64)
    sigma = noise_sigma(image)
    if not sigma > 0:
        return labels
    boxes = ndi.find_objects(at_input)
    faint = [i for i in range(1, len(boxes) + 1) if boxes[i - 1] is not None
             and 2 * np.sqrt(input_areas[i] / np.pi) < below_px
             and ring_snr(image, at_input, i, boxes[i - 1], sigma) < min_snr]
    if not faint:
        return labels
    keep = np.ones(len(areas), bool)
    keep[faint] = False
    return sequential(np.where(keep[labels], labels, 0))


def detect_steps(image: np.ndarray, detector: LoadedModel, pixel_size_nm: float,
                 min_diameter_nm: float = MIN_DIAMETER_NM, bounded: bool = False,
                 tta: bool = False) -> Steps[np.ndarray]:
    """Instance labels of a normalised 2-D image at the detector's pixel size (in memory; windows as
    large as the memory budget allows, which give the same probabilities as smaller ones, faster;
    ``bounded``: the engine's memory handed back after each window, for a block of a large image;
    ``tta``: the probabilities averaged over the image's 8 rotations and flips)."""
    probabilities = yield from probabilities_steps(image, detector, bounded, tta)
    return instances(probabilities, detector, pixel_size_nm, min_diameter_nm)


def probabilities_steps(image: np.ndarray, detector: LoadedModel, bounded: bool = False,
                        tta: bool = False) -> Steps[np.ndarray]:
    """``detector``'s (background, liposome, boundary) probabilities of a normalised 2-D image
    (:func:`detect_steps`' first half)."""
    return (yield from engine.predict_dense(detector.module, image, halo=detector.halo, stats=[(0.0, 1.0)],
                                            device=detector.device, bounded=bounded, tta=tta))


def instances(probabilities: np.ndarray, detector: LoadedModel, pixel_size_nm: float,
              min_diameter_nm: float = MIN_DIAMETER_NM) -> np.ndarray:
    """Instance labels from ``detector``'s probabilities at ``pixel_size_nm``, with the
    post-processing stored with it (:func:`detect_steps`' second half)."""
    min_area = int(np.pi * (min_diameter_nm / 2 / pixel_size_nm) ** 2)
    return instances_from_probabilities(probabilities, min_area, **detector.info.training.get("postprocess", {}))


def with_small(labels: np.ndarray, small: np.ndarray, max_overlap: float = SMALL_MAX_OVERLAP) -> np.ndarray:
    """``labels`` plus the objects of ``small`` (instance labels of the same shape) of which at most
    ``max_overlap`` lies on ``labels``' objects, on their free pixels only: the standard detector
    keeps what it found, the small-vesicle one only adds what it missed."""
    small = np.asarray(small)
    area = np.bincount(small.ravel())
    covered = np.bincount(small[labels > 0], minlength=len(area))
    added = (covered <= max_overlap * area) & (area > 0)
    added[0] = False
    new = added[small] & (labels == 0)
    out = labels.astype(np.int32, copy=True)
    out[new] = small[new] + int(labels.max())
    return sequential(out)


def with_large(labels: np.ndarray, large: np.ndarray, working_px: float, min_diameter_nm: float = LARGE_MIN_NM,
               inside: float = LARGE_INSIDE, whole_solidity: float = LARGE_WHOLE_SOLIDITY) -> np.ndarray:
    """``labels`` with each object of ``large`` (instance labels of the same shape, found at a
    coarser view) of at least ``min_diameter_nm`` in place of the objects of ``labels`` that lie
    mostly (``inside``) within it: a fine detector cuts vesicles larger than it was trained on into
    pieces (arcs of their membrane), and the coarser view sees them whole. A large object holding a
    whole vesicle of ``labels`` (solidity ≥ ``whole_solidity``: round, not an arc) is not used,
    as the coarser view merged vesicles there. Other objects keep their pixels."""
    large = np.asarray(large)
    area = np.bincount(large.ravel())
    big = 2 * np.sqrt(area / np.pi) * working_px >= min_diameter_nm
    big[0] = False
    own = np.bincount(labels.ravel())
    boxes, own_boxes = ndi.find_objects(large), ndi.find_objects(labels)
    for b in np.flatnonzero(big):
        box = boxes[b - 1]
        held = np.flatnonzero(np.bincount(labels[box][large[box] == b], minlength=len(own)) >= inside * own)
        if any(shapes.solidity(labels[own_boxes[i - 1]] == i) >= whole_solidity
               for i in held[held > 0]):
            big[b] = False
    if not big.any():
        return labels
    in_big = big[large]
    swallowed = np.bincount(labels[in_big], minlength=len(own)) >= inside * own
    swallowed[0] = False
    out = np.where(swallowed[labels], 0, labels).astype(np.int32)
    free = in_big & (out == 0)
    out[free] = large[free] + int(out.max())
    return sequential(out)


def _working(data: np.ndarray, pixel_size_nm: float, working_px: float | None,
             stats: Mapping[float, tuple[float, float]] | None) -> tuple[np.ndarray, float]:
    """``data`` at a detector's ``working_px`` and its pixel size, z-scored over itself
    (:func:`working_image`) or, for a block of a large image, with the whole image's statistics
    at that pixel size (``stats``: :func:`working_stats`)."""
    if stats is None:
        return working_image(data, pixel_size_nm, working_px)
    factor, working_px = _working_scale(pixel_size_nm, working_px)
    mean, std = stats[working_px]
    return (_at_scale(data, factor) - mean) / std, working_px


def working_stats(data: Any, pixel_size_nm: float, working_pxs: Iterable[float | None], name: str = "",
                  tile: int = BLOCK_PX) -> dict[float, tuple[float, float]]:
    """Mean and standard deviation of a large image's recorded pixels as each detector sees them
    (rescaled to each of ``working_pxs`` as :func:`_working` rescales a block; padding left out, as
    :func:`io.images.fill_mask` finds it in each tile), by the pixel size they are seen at, read tile
    by tile (each tile once for all the scales): what the image is z-scored with when it is analysed
    block by block.

    The input's own statistics would not do. Shrinking averages the pixel noise away, so the working
    image of a finely sampled micrograph has a smaller spread than the input: normalised by the
    input's, it would show the detectors less contrast than they were trained on, and than
    :func:`working_image` shows them when the same image is analysed at once."""
    scales = {_working_scale(pixel_size_nm, px) for px in working_pxs}  # (factor, working pixel size)
    steps = [int(1 / factor + 1e-6) if factor < 1 else 1 for factor, _ in scales]
    unit = math.lcm(*steps)
    side = unit * math.ceil(tile / unit)  # whole k × k averages in every tile, at every scale (_at_scale)
    sums = {px: [0, 0.0, 0.0, None] for _, px in scales}  # count, sum, sum of squares, shift
    for y in range(0, data.shape[0], side):
        for x in range(0, data.shape[1], side):
            tile_data = np.asarray(data[y:y + side, x:x + side])
            fill = fill_mask(tile_data)
            for factor, px in scales:
                seen = _at_scale(tile_data, factor).astype(np.float64)
                acc = sums[px]
                acc[3] = float(seen.mean()) if acc[3] is None else acc[3]  # sums about a nearby value: no cancellation
                seen = (seen if fill is None else seen[~_fill_at_scale(fill, factor)]) - acc[3]
                acc[:3] = acc[0] + seen.size, acc[1] + seen.sum(), acc[2] + np.square(seen).sum()
    stats = {}
    for px, (count, total, squares, shift) in sums.items():
        mean = total / max(count, 1)  # no recorded pixel (one value throughout): that value, as it is
        std = math.sqrt(max(squares / max(count, 1) - mean * mean, 0.0))
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise ImageError(f"{name + ': ' if name else ''}image contains NaN or infinite values")
        stats[px] = (mean + shift, std if std > 0 else 1.0)
    return stats


def _fill_at_scale(fill: np.ndarray, factor: float) -> np.ndarray:
    """A block's padding mask (:func:`io.images.fill_mask`) at the scale :func:`_at_scale` brings
    the block to: the pixels that are mostly padding."""
    return _at_scale(fill.view(np.uint8), factor) >= 0.5


def detect_all_steps(data: np.ndarray, pixel_size_nm: float, detector: LoadedModel, small: LoadedModel | None,
                     min_diameter_nm: float = MIN_DIAMETER_NM,
                     stats: Mapping[float, tuple[float, float]] | None = None,
                     min_ring_snr: float = MIN_RING_SNR,
                     tta: bool = False) -> Steps[tuple[np.ndarray, float, np.ndarray]]:
    """(the image at ``detector``'s scale, its pixel size, instance labels there): ``detector``'s
    objects and, with ``small``, those the detector beside it (small-vesicle or varied-imaging) finds
    at its own scale where ``detector`` found none (:func:`with_small`), less those too few input
    pixels across to tell from noise (:func:`drop_faint`, at ``min_ring_snr``); with ``tta`` every
    detector averages its probabilities over the view's 8 rotations and flips. A block of a large image
    (``stats`` given: the whole image's at each working pixel size, :func:`working_stats`) keeps
    its peak memory to one window's
    (``detect_steps(bounded=True)``)."""
    work, working_px = _working(data, pixel_size_nm, detector.info.pixel_size_nm, stats)
    look_coarser = float(detector.info.pixel_size_nm or np.inf) <= LARGE_LOOK_FROM_NM
    parts = (1 if small is None else 2) * (2 if look_coarser else 1)
    block = stats is not None
    # a second detector that sees the image at the first one's scale (the fine pair) takes its view
    same = small is not None and (_working_scale(pixel_size_nm, small_working_px(pixel_size_nm, small))
                                  == _working_scale(pixel_size_nm, detector.info.pixel_size_nm))

    def small_view() -> tuple[np.ndarray, float]:  # made only once the first detector is done (peak memory)
        return (work, working_px) if same else _working(data, pixel_size_nm, small_working_px(pixel_size_nm, small),
                                                        stats)

    how = {"min_diameter_nm": min_diameter_nm, "bounded": block, "tta": tta}  # detect_steps' options
    labels = yield from _pair_steps((work, working_px), detector, small, small_view, how, 0, parts, "detecting")
    if look_coarser:  # the same detectors at half the scale, for vesicles larger than they were trained on
        half = (rescaled(work, 1 / LARGE_VIEW).astype(np.float32), working_px * LARGE_VIEW)
        coarse = yield from _pair_steps(half, detector, small if same else None, lambda: half, how, parts // 2, parts,
                                        "detecting large vesicles")
        labels = with_large(labels, labels_at(coarse, labels.shape), working_px)
    return work, working_px, drop_faint(labels, data, min_snr=min_ring_snr)


def _pair_steps(view: tuple[np.ndarray, float], detector: LoadedModel, small: LoadedModel | None,
                small_view: Callable[[], tuple[np.ndarray, float]], how: Mapping[str, Any], first: int,
                parts: int, message: str) -> Steps[np.ndarray]:
    """Instance labels at ``view`` (image, pixel size) of ``detector`` and, with ``small``, those it
    adds at ``small_view()`` (:func:`with_small`); ``how``: :func:`detect_steps`' options by keyword;
    progress as parts ``first`` (and ``first + 1``) of ``parts``. Both detectors run before either's
    output is post-processed, and the two are post-processed at once (:func:`side_by_side`); in a
    block of a large image (``how["bounded"]``) one after the other, to hold one's output at a time."""
    if small is None:
        return (yield from scaled(detect_steps(view[0], detector, view[1], **how), first, parts, message))
    beside_message = f"{message} ({small.info.name})"
    if how["bounded"]:
        labels = yield from scaled(detect_steps(view[0], detector, view[1], **how), first, parts, message)
        image, px = small_view()
        found = yield from scaled(detect_steps(image, small, px, **how), first + 1, parts, beside_message)
        return with_small(labels, labels_at(found, labels.shape))
    probabilities = yield from scaled(probabilities_steps(view[0], detector, tta=how["tta"]), first, parts, message)
    image, px = small_view()
    beside = yield from scaled(probabilities_steps(image, small, tta=how["tta"]), first + 1, parts, beside_message)
    labels, found = side_by_side(lambda: instances(probabilities, detector, view[1], how["min_diameter_nm"]),
                                 lambda: instances(beside, small, px, how["min_diameter_nm"]))
    return with_small(labels, labels_at(found, labels.shape))


def side_by_side(first: Callable[[], T], second: Callable[[], U]) -> tuple[T, U]:
    """``(first(), second())``, the two run at once in two threads where torch may use two: a pair's
    post-processing spends much of its time in scipy, scikit-image and ``edt`` code that releases
    the GIL, and neither detector's needs the other's result."""
    if torch.get_num_threads() < 2:
        return first(), second()
    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(second)
        return first(), later.result()


# -- classification ----------------------------------------------------------------------------------


@dataclass
class Decisions:
    """One problem's verdicts on every object of an image, in label order."""

    names: list[str]  # class of each object
    confidence: np.ndarray  # its probability
    explanation: np.ndarray | None = None  # (Y, X) 0–1 map at the labels' size: where each crop argued for its class


def classify(image: np.ndarray, labels: np.ndarray, diameters_nm: np.ndarray, pixel_size_nm: float,
             classifiers: Mapping[str, LoadedModel], balanced_decisions: bool = False,
             explain: bool = False) -> dict[str, Decisions]:
    """Per problem: class name and confidence (its probability) of every object, in label order,
    at each classifier's stored operating point, or as if all classes were equally common; with
    ``explain`` also the map of where each object's crop argued for the class it was given."""
    sizes = liposome_objects.log_size(diameters_nm)
    threads = torch.get_num_threads()  # the objects are measured in as many threads as torch may use
    # handcrafted features only for classifiers trained on them (they cost a pass over the objects)
    features = (liposome_objects.features(image, labels, pixel_size_nm, threads)
                if any(m.module.descriptors for m in classifiers.values()) else None)
    out, cut = {}, {}
    for problem, model in classifiers.items():
        mode, size = crop_spec(model.info)
        if (mode, size) not in cut:  # classifiers of the same crop spec share one pass over the objects
            cut[mode, size] = liposome_objects.crops(image, labels, mode, size, pixel_size_nm=pixel_size_nm,
                                                     threads=threads)
        crops = cut[mode, size]
        probabilities = decide(predict_crops(model.module, crops, sizes, features, model.device), model.info.training,
                               balanced_decisions)
        chosen = probabilities.argmax(1)
        explanation = None
        if explain:
            cams = explain_crops(model.module, crops, sizes, chosen, features, model.device)
            explanation = liposome_objects.paste_maps(cams, labels, mode, pixel_size_nm=pixel_size_nm)
        names = model.info.class_names
        out[problem] = Decisions([names[i] for i in chosen], probabilities.max(1, initial=0), explanation)
    return out


# -- the whole analysis -------------------------------------------------------------------------------


def crop_spec(info: ModelInfo) -> tuple[str, int]:
    """Crop mode and side a classifier takes (as recorded at training; masked 32² if not recorded)."""
    return info.training.get("input_mode", "masked"), info.patch or 32


def chosen_classifiers(classifiers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The classifier of every problem: those given, the default ones for the others (choosing
    one problem's model must not drop the other problem)."""
    return {**DEFAULT_CLASSIFIERS, **(classifiers or {})}


def load_on(name: str | LoadedModel, device: str | None) -> LoadedModel:
    """A registered model (or one already loaded) on ``device`` (the best available if None)."""
    return name if isinstance(name, LoadedModel) else load_model(name, engine.select_device(device))


def _working_scale(pixel_size_nm: float, working_px: float | None) -> tuple[float, float]:
    """(rescale factor, pixel size the models see): the detector's ``working_px``, unless the
    image's is within RESCALE_TOLERANCE of it (or there is none): then the image is left alone."""
    factor = pixel_size_nm / (working_px or pixel_size_nm)
    if abs(factor - 1) > RESCALE_TOLERANCE:
        return factor, float(working_px)
    return 1.0, float(pixel_size_nm)


def small_working_px(pixel_size_nm: float, small: LoadedModel) -> float:
    """The pixel size the small-vesicle detector sees an image of ``pixel_size_nm`` at: its own,
    but never more than ``SMALL_MAX_ENLARGEMENT`` times finer than the image's. An image holds no
    detail finer than its pixels, so enlarging it further gives the detector nothing more to see,
    only more pixels to compute (docs/liposomes.md, "Its cost": about the same F1 on real and
    simulated images, though it was trained at 1 nm/px only)."""
    return max(float(small.info.pixel_size_nm), pixel_size_nm / SMALL_MAX_ENLARGEMENT)


def _seen_at(pixel_size_nm: float,
             detectors: tuple[LoadedModel, LoadedModel | None]) -> list[tuple[LoadedModel, float]]:
    """(detector, the pixel size it sees the image at) for the detector and the one beside it
    (small-vesicle or varied-imaging), if any."""
    detector, small = detectors
    seen = [(detector, float(detector.info.pixel_size_nm))]
    return seen + ([(small, small_working_px(pixel_size_nm, small))] if small is not None else [])


def _finest(pixel_size_nm: float, detectors: tuple[LoadedModel, LoadedModel | None]) -> float:
    """The largest rescale factor among ``detectors``: how many times more pixels per side the
    image has where it is largest (the small-vesicle detector sees a coarse image enlarged), which
    is what bounds memory."""
    return max(_working_scale(pixel_size_nm, px)[0] for _, px in _seen_at(pixel_size_nm, detectors))


def working_image(data: np.ndarray, pixel_size_nm: float, working_px: float | None) -> tuple[np.ndarray, float]:
    """The image as the models see it, and its pixel size: rescaled to ``working_px`` nm/px (the
    detector's; left alone within RESCALE_TOLERANCE, or if None) and z-scored over the whole image.

    Analysis and retraining both go through here, so a classifier fine-tuned on corrected objects
    sees its crops at the same scale and contrast as when it later classifies.
    """
    data = np.asarray(data, np.float32)
    factor, working_px = _working_scale(pixel_size_nm, working_px)
    if factor != 1:
        data = rescaled(data, factor)
    mean, std = image_stats(data)
    return ((data - mean) / std).astype(np.float32), working_px


def labels_at(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Instance labels resampled (nearest) to ``shape``; unchanged if already that shape."""
    if labels.shape == tuple(shape):
        return labels
    return resize(labels, shape, order=0, preserve_range=True, anti_aliasing=False).astype(labels.dtype)


def analyse_steps(
    image: Any,
    pixel_size_nm: float | None = None,
    *,
    labels: np.ndarray | None = None,
    detector: str | LoadedModel | None = None,
    small_detector: str | LoadedModel | None = None,
    classifiers: Mapping[str, str | LoadedModel] | None = None,
    name: str = "image",
    min_diameter_nm: float = MIN_DIAMETER_NM,
    min_ring_snr: float | None = None,
    tta: bool = False,
    balanced_decisions: bool = False,
    explain: bool = False,
    device: str | None = None,
    workdir: str | Path | None = None,
    exclude: np.ndarray | None = None,
) -> Steps[LiposomeResult]:
    """Detect (unless ``labels`` are given), classify and summarise the liposomes of a 2-D image.

    ``pixel_size_nm`` is required — given, or recorded in the file of an :class:`Image` (an
    explicit value wins): detection works at a scale chosen from it and diameters are in nm, so a
    guess would give wrong results without saying so. ``detector`` defaults to the one for
    that pixel size (:func:`default_detector`), with the detector beside it (small-vesicle or
    varied-imaging: :func:`default_small_detector`) unless ``detector`` is given; ``small_detector``
    names one to run beside any detector. Detections narrower than ``min_diameter_nm`` are dropped,
    and those narrower than ``FAINT_BELOW_PX`` input pixels whose rim stands out of the noise by
    less than ``min_ring_snr`` standard errors (default: ``MIN_RING_SNR`` as it is when called,
    which benchmarks/with_scales.py sets for one run; 0 keeps them all: :func:`drop_faint`). With
    ``tta`` each detector averages its probabilities over the image's 8 rotations and flips (test-time
    augmentation: several times the detectors' time, for a few more vesicles found on validation
    data; docs/liposomes.md). ``balanced_decisions`` classifies as if every class were equally common
    (more rare objects found, more false alarms) instead of at the operating point each
    classifier chose for the class mix it was trained on. ``explain`` adds, per problem, the map
    of where in each object the classifier saw evidence for the class it gave
    (:attr:`LiposomeResult.explanations`). Images of more than
    ``STREAM_ABOVE`` pixels are analysed block by block (:func:`_analyse_blocks`: the computation
    is bounded by the block, not the image); with ``workdir`` their labels (and maps) are zarr
    arrays there, without one they are held in memory whole. An image analysed in memory that is
    padded (a constant where nothing was recorded: :func:`io.images.recorded_part`) is analysed as
    its recorded part cut out would be, and its results are put back in its frame. ``exclude``, a
    mask of the image's shape, leaves its nonzero regions out as padding is left out
    (:func:`io.images.excluded`): a carbon film or contamination the user marked, which would
    otherwise skew the normalisation and cost vesicles on the ice beside it (docs/liposomes.md).
    """
    data = as_greyscale(image.data if isinstance(image, Image) else image)
    if data.ndim != 2:
        raise ValueError(f"{name}: liposome analysis takes one 2-D image, got shape {tuple(data.shape)}; "
                         "analyse the planes of a stack one by one")
    data = excluded(data, exclude, name)
    if isinstance(image, Image):
        pixel_size_nm, _ = chosen_pixel_size(name, pixel_size_nm, image.pixel_size_nm, image.pixel_size_source)
    if pixel_size_nm is None:
        raise ValueError(f"{name}: no pixel size in the file and none given; liposomes are found and measured in nm, "
                         "so give the image's pixel size (--pixel-size NM, pixel_size_nm=, or the widget's "
                         "'pixel size (nm)')")
    pixel_size_nm = number(float, *PIXEL_SIZES_NM, name=f"{name}: pixel size (nm/px)")(pixel_size_nm)
    min_ring_snr = number(float, 0.0, 1000.0, name=f"{name}: minimum rim contrast (standard errors)")(
        MIN_RING_SNR if min_ring_snr is None else min_ring_snr)
    detection = {"min_diameter_nm": min_diameter_nm, "min_ring_snr": min_ring_snr, "tta": bool(tta)}
    small_detector = small_detector_for(pixel_size_nm, detector, small_detector)
    detector = load_on(detector or default_detector(pixel_size_nm), device)
    small = load_on(small_detector, device) if small_detector and labels is None else None
    models = {p: load_on(m, device) for p, m in chosen_classifiers(classifiers).items()}
    names = {"detector": detector.info.name if labels is None else "user labels",
             "small_detector": small.info.name if small is not None else "",
             **{f"{p}_model": m.info.name for p, m in models.items()}}
    enlarged = max(1.0, _finest(pixel_size_nm, (detector, small))) ** 2  # the input itself counts when shrunk
    if labels is None and math.prod(data.shape) * enlarged > STREAM_ABOVE:
        out_labels, objects, explanations = yield from _analyse_blocks(
            data, pixel_size_nm, (detector, small), models, name, detection, balanced_decisions, explain, workdir)
        return LiposomeResult(out_labels, objects, summarise(name, objects, pixel_size_nm, names, **detection),
                              pixel_size_nm, names, explanations)
    data = np.asarray(data, np.float32)
    full_shape = data.shape
    if labels is not None and np.shape(labels) != full_shape:
        raise ValueError(f"{name}: labels {np.shape(labels)} do not match the image {full_shape}")
    data, fill, box = recorded_part(data, name)  # a padded micrograph: its recorded part, as if cut out
    origin = (0, 0) if box is None else (box[0].start, box[1].start)
    if labels is None:
        work, working_px, work_labels = yield from detect_all_steps(data, pixel_size_nm, detector, small,
                                                                    **detection)
    else:
        work, working_px = working_image(data, pixel_size_nm, detector.info.pixel_size_nm)
        work_labels = labels_at(np.asarray(labels)[box or ...], work.shape)
    if fill is not None:  # nothing was recorded there: no object either
        work_labels = sequential(np.where(labels_at(fill, work.shape), 0, work_labels))
    yield Progress(0, 1, "classifying and explaining objects" if explain else "classifying objects")
    rows = liposome_objects.measure(work_labels, working_px)
    classes = classify(work, work_labels, np.array([r["diameter_nm"] for r in rows]), working_px, models,
                       balanced_decisions, explain)
    scale = data.shape[0] / work.shape[0]
    objects = [_object_row(name, r, classes, i, scale, pixel_size_nm, origin) for i, r in enumerate(rows)]
    out_labels = np.asarray(labels_at(work_labels, data.shape), np.int32)
    explanations = {p: explanation_at(d.explanation, out_labels) for p, d in classes.items()
                    if d.explanation is not None}
    if box is not None:
        out_labels = placed(out_labels, fill, box, full_shape)
        explanations = {p: placed(m, fill, box, full_shape) for p, m in explanations.items()}
    summary = summarise(name, objects, pixel_size_nm, names, **(detection if labels is None else {}))
    yield Progress(1, 1, f"{len(objects)} liposomes")
    return LiposomeResult(out_labels, objects, summary, pixel_size_nm, names, explanations)


def explanation_at(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """An explanation map made at the working scale brought to the size of ``labels`` (linear),
    kept on their objects only, so that it lies exactly on the Labels layer it explains."""
    return resized_planes(values, labels.shape, order=1) * (labels > 0)


def _analyse_blocks(data: Any, pixel_size_nm: float, detectors: tuple[LoadedModel, LoadedModel | None],
                    models: Mapping[str, LoadedModel], name: str, detection: Mapping[str, Any],
                    balanced_decisions: bool, explain: bool,
                    workdir: str | Path | None) -> Steps[tuple[Any, list[dict[str, Any]], dict[str, Any]]]:
    """Detect and classify a large image block by block; returns (instance labels, object rows,
    explanation maps by problem — none without ``explain``). ``detection``: :func:`detect_all_steps`'
    minimum diameter, minimum rim contrast of narrow detections and ``tta``, by keyword.

    Each block is a core of ``BLOCK_PX`` working pixels read with a margin wide enough for the
    largest liposome (``MAX_DIAMETER_NM``) plus the detectors' halo, normalised with the whole
    image's statistics at each detector's scale (:func:`working_stats`); its padding, if any
    (:func:`io.images.fill_mask`), reads as the recorded mean and holds no object. An object belongs
    to the block whose core holds its centroid, so it is found whole and exactly once. Only the
    block in hand is in memory (read lazily from a TIFF or zarr input); labels and maps go to zarr
    arrays in ``workdir`` (in memory without one).
    """
    detector, small = detectors
    stats = working_stats(data, pixel_size_nm, [px for _, px in _seen_at(pixel_size_nm, detectors)], name)
    factor, seen_px = _working_scale(pixel_size_nm, detector.info.pixel_size_nm)  # the detector's view
    height, width = data.shape
    core = max(1, round(BLOCK_PX / _finest(pixel_size_nm, detectors)))  # BLOCK_PX at the finest detector's scale
    margin = math.ceil(MAX_DIAMETER_NM / 2 / pixel_size_nm + max(
        d.halo / _working_scale(pixel_size_nm, px)[0] for d, px in _seen_at(pixel_size_nm, detectors)))
    out = _block_output(workdir, "labels", (height, width), np.int32)
    maps = {p: _block_output(workdir, f"cam_{p}", (height, width), np.float32) for p in models} if explain else {}
    origins = [(y, x) for y in range(0, height, core) for x in range(0, width, core)]
    objects: list[dict[str, Any]] = []
    for i, (y, x) in enumerate(origins):
        y0, y1 = max(0, y - margin), min(height, y + core + margin)
        x0, x1 = max(0, x - margin), min(width, x + core + margin)
        block = np.asarray(data[y0:y1, x0:x1])
        fill = fill_mask(block)
        if fill is not None:  # padding reads as the recorded mean, and holds no object
            block = np.where(fill, np.asarray(stats[seen_px][0], block.dtype), block)
        work, working_px, found = yield from scaled(
            detect_all_steps(block, pixel_size_nm, detector, small, stats=stats, **detection), i, len(origins),
            f"block {i + 1}/{len(origins)}")
        if fill is not None:
            found = sequential(np.where(_fill_at_scale(fill, factor), 0, found))
        scale = block.shape[0] / work.shape[0]
        every = liposome_objects.measure(found, working_px)  # in label order
        owned = [i for i, r in enumerate(every)
                 if y <= y0 + r["centroid_y"] * scale < y + core and x <= x0 + r["centroid_x"] * scale < x + core]
        rows = [every[i] for i in owned]  # in label order, as relabelled here
        kept = sequential(np.where(np.isin(found, [r["label"] for r in rows]), found, 0))
        # every object of the block is classified, not only its own: a neighbour that another block
        # owns must not be taken for the ice around this block's objects (masked-local crops)
        classes = {problem: _owned(decided, owned, kept) for problem, decided in classify(
            work, found, np.array([r["diameter_nm"] for r in every]), working_px, models, balanced_decisions,
            explain).items()}
        first = len(objects) + 1
        for j, r in enumerate(rows):
            shifted = {**r, "label": first + j, "centroid_y": r["centroid_y"] + y0 / scale,
                       "centroid_x": r["centroid_x"] + x0 / scale}
            objects.append(_object_row(name, shifted, classes, j, scale, pixel_size_nm))
        window = (y0, y1, x0, x1)
        _paste(out, kept, window, lambda region, ids, offset=first - 1: np.where(ids > 0, ids + offset, region))
        for problem, target in maps.items():  # each map is 0 off its block's kept objects
            _paste(target, classes[problem].explanation, window, np.maximum)
        # the engine hands its kept memory back after each window of a block (bounded); between
        # blocks, post-processing, classifying and writing would grow the heap too (core/memory.py)
        release_memory()
    yield Progress(1, 1, f"{len(objects)} liposomes")
    return out, objects, maps


def _owned(decided: Decisions, owned: list[int], kept: np.ndarray) -> Decisions:
    """The verdicts of the objects at positions ``owned`` (label order), and the explanation map on
    ``kept``'s objects only (the block's own)."""
    explanation = None if decided.explanation is None else np.where(kept > 0, decided.explanation, 0).astype(np.float32)
    return Decisions([decided.names[i] for i in owned], decided.confidence[owned], explanation)


def _block_output(workdir: str | Path | None, name: str, shape: tuple[int, int], dtype: Any) -> Any:
    """A whole-image result of the block-wise analysis: zeros in memory, or a zarr array
    ``name.zarr`` in ``workdir`` (the blocks fill it, so the image is never held whole)."""
    if workdir is None:
        return np.zeros(shape, dtype)
    return zarr.open_array(str(Path(workdir) / f"{name}.zarr"), mode="w", shape=shape, dtype=dtype,
                           chunks=(1024, 1024))


def _paste(out: Any, block: np.ndarray, window: tuple[int, int, int, int],
           combine: Callable[[np.ndarray, np.ndarray], np.ndarray], band: int = 1024) -> None:
    """Write a block's result (at working scale, nearest-neighbour to the window's size, so maps
    land on the very pixels their labels do) into ``out[window]`` as ``combine(what is there,
    block values)``; in bands of rows, so no window-sized temporaries are made, skipping bands
    where the block is all 0."""
    y0, y1, x0, x1 = window
    rows = np.minimum(((np.arange(y1 - y0) + 0.5) * block.shape[0] / (y1 - y0)).astype(np.int64), block.shape[0] - 1)
    cols = np.minimum(((np.arange(x1 - x0) + 0.5) * block.shape[1] / (x1 - x0)).astype(np.int64), block.shape[1] - 1)
    for start in range(0, y1 - y0, band):
        values = block[rows[start:start + band, None], cols[None, :]]
        if values.any():
            region = np.asarray(out[y0 + start:y0 + start + len(values), x0:x1])
            out[y0 + start:y0 + start + len(values), x0:x1] = combine(region, values)


def _at_scale(block: np.ndarray, factor: float) -> np.ndarray:
    """A block (any pixel type) as float32 rescaled by ``factor``. Shrinking by an integer step
    first averages k × k pixels (edge-padded) in the block's own type, so a block of a finely
    sampled micrograph is never copied to floating point at full size; only the remainder of the
    factor is interpolated."""
    step = int(1 / factor + 1e-6) if factor < 1 else 1
    if step >= 2:
        pad = [(0, -n % step) for n in block.shape]
        padded = np.pad(block, pad, mode="edge")
        block = padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step).mean(
            axis=(1, 3), dtype=np.float32)
        factor *= step
    block = block.astype(np.float32, copy=False)
    if abs(factor - 1) > 1e-3:
        block = rescaled(block, factor)
    return block.astype(np.float32, copy=False)


def _object_row(image: str, measured: dict[str, Any], classes: dict[str, Decisions], i: int,
                scale: float, pixel_size_nm: float, origin: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """One ``objects.csv`` row: ``measured`` at the working scale brought to the input's pixels
    (``scale`` input pixels per working pixel of ``pixel_size_nm``-nm input pixels; the working
    image's first pixel at input pixel ``origin``), every length named with its unit."""
    y_px, x_px = measured["centroid_y"] * scale + origin[0], measured["centroid_x"] * scale + origin[1]
    row = {"image": image, "label": measured["label"], "centroid_y_px": round(y_px, 2), "centroid_x_px": round(x_px, 2),
           "centroid_y_nm": round(y_px * pixel_size_nm, 2), "centroid_x_nm": round(x_px * pixel_size_nm, 2),
           "diameter_nm": round(measured["diameter_nm"], 2), "max_width_nm": round(measured["max_width_nm"], 2),
           "area_nm2": round(measured["area_nm2"], 1)}
    for problem, decided in classes.items():
        row[problem] = decided.names[i]
        row[f"{problem}_confidence"] = round(float(decided.confidence[i]), 4)
    return row


def summarise(image: str, objects: Sequence[Mapping[str, Any]], pixel_size_nm: float,
              models: Mapping[str, str], min_diameter_nm: float | None = None,
              min_ring_snr: float | None = None, tta: bool | None = None) -> dict[str, Any]:
    """Per-image population: counts per class, % multilamellar among objects of certain
    lamellarity, % loaded (encapsulation efficiency) among objects of certain encapsulation; with
    the smallest diameter a detection was kept at, the rim contrast a narrow one needed and whether
    the detectors averaged over rotations and flips (None: the objects were not detected, e.g. user
    labels)."""
    def count(problem: str, cls: str) -> int:
        return sum(o.get(problem) == cls for o in objects)

    uni, multi = count("lamellarity", "unilamellar"), count("lamellarity", "multilamellar")
    full, empty = count("encapsulation", "full"), count("encapsulation", "empty")
    diameters = [o["diameter_nm"] for o in objects]
    return {
        "image": image, "n_objects": len(objects), "n_unilamellar": uni, "n_multilamellar": multi,
        "n_lamellarity_uncertain": count("lamellarity", "uncertain"), "n_full": full, "n_empty": empty,
        "n_encapsulation_uncertain": count("encapsulation", "uncertain"),
        "pct_multilamellar": round(100 * multi / (uni + multi), 2) if uni + multi else float("nan"),
        "pct_loaded": round(100 * full / (full + empty), 2) if full + empty else float("nan"),
        "mean_diameter_nm": round(float(np.mean(diameters)), 2) if diameters else float("nan"),
        "median_diameter_nm": round(float(np.median(diameters)), 2) if diameters else float("nan"),
        "pixel_size_nm": pixel_size_nm, "detector": models.get("detector", ""),
        "small_detector": models.get("small_detector", ""),
        "min_diameter_nm": "" if min_diameter_nm is None else min_diameter_nm,
        "min_ring_snr": "" if min_ring_snr is None else min_ring_snr,
        "tta": "" if tta is None else bool(tta),
        "lamellarity_model": models.get("lamellarity_model", ""),
        "encapsulation_model": models.get("encapsulation_model", ""), "status": "ok", "error": "",
    }


def analyse(image: Any, pixel_size_nm: float | None = None, *, progress: ProgressCallback | bool | None = None,
            cancel: CancelToken | None = None, **kwargs: Any) -> LiposomeResult:
    """Synchronous :func:`analyse_steps` (Python API)."""
    return run_sync(analyse_steps(image, pixel_size_nm, **kwargs), progress=progress, cancel=cancel)


class LiposomeFiles(FileJob):
    """``nanoclass liposomes``: ``<stem>_labels.tif`` (or ``.ome.zarr``: the image with the instances
    under ``labels/liposomes``) per image, with ``explain``
    ``<stem>_cam_lamellarity.tif`` and ``<stem>_cam_encapsulation.tif`` too, ``objects.csv`` (one
    row per object, all images), ``summary.csv`` (one row per image, failures included with their
    error) and ``summary.json`` (the same plus size histograms)."""

    def __init__(self, pixel_size_nm: float | None = None, *, detector: str | None = None,
                 small_detector: str | None = None, classifiers: Mapping[str, str] | None = None,
                 device: str | None = None, min_diameter_nm: float | None = None, min_ring_snr: float | None = None,
                 tta: bool = False, output_format: str = "tif", balanced_decisions: bool = False,
                 explain: bool = False, exclude: str | None = None) -> None:
        self.pixel_size_nm, self.device, self.exclude = pixel_size_nm, device, exclude
        check_exclusion_folder(exclude)  # refused before any input
        self.min_diameter_nm = MIN_DIAMETER_NM if min_diameter_nm is None else min_diameter_nm
        self.min_ring_snr, self.tta = min_ring_snr, bool(tta)
        self.detector_name, self.small_name = detector, small_detector
        self.detectors: dict[str, LoadedModel] = {}  # by name: each input's pixel size may pick its own
        if detector or small_detector or pixel_size_nm is not None:
            self._detector(pixel_size_nm)  # an unknown model is refused before any input
            self._small(pixel_size_nm)
        self.classifiers = {p: load_on(m, device) for p, m in chosen_classifiers(classifiers).items()}
        self.output_format, self.balanced_decisions, self.explain = output_format or "tif", balanced_decisions, explain
        self.objects: list[dict[str, Any]] = []

    def _loaded(self, name: str) -> LoadedModel:
        """A detector by name, loaded once for the whole run."""
        if name not in self.detectors:
            self.detectors[name] = load_on(name, self.device)
        return self.detectors[name]

    def _detector(self, pixel_size_nm: float | None) -> LoadedModel:
        """The chosen detector, or the default one for ``pixel_size_nm``."""
        return self._loaded(self.detector_name or default_detector(pixel_size_nm))

    def _small(self, pixel_size_nm: float | None) -> LoadedModel | None:
        """The detector run beside it (:func:`small_detector_for`), or None."""
        name = small_detector_for(pixel_size_nm, self.detector_name, self.small_name)
        return self._loaded(name) if name else None

    def process(self, image: Image, path: Path, out_dir: Path, workdir: Path) -> Steps[dict[str, Any]]:
        pixel_size, source = chosen_pixel_size(image.name, self.pixel_size_nm, image.pixel_size_nm,
                                               image.pixel_size_source)
        if pixel_size is None:
            raise ValueError(f"{path}: no pixel size in the file; liposomes are measured in nm, so give it with "
                             "--pixel-size NM (nm per pixel; batch: --pixel-size or --set pixel_size_nm=NM)")
        log.info("%s: pixel size %g nm/px (%s)", image.name, pixel_size, source)
        result = yield from analyse_steps(image.data, pixel_size, detector=self._detector(pixel_size),
                                          small_detector=self._small(pixel_size),
                                          classifiers=self.classifiers, name=image.name,
                                          min_diameter_nm=self.min_diameter_nm, min_ring_snr=self.min_ring_snr,
                                          tta=self.tta,
                                          balanced_decisions=self.balanced_decisions, explain=self.explain,
                                          device=self.device, workdir=workdir,
                                          exclude=exclusion_mask(self.exclude, image.name))
        colours = result.colours()
        colours.pop(None, None)
        metadata = ngff_label_metadata(colours, {o["label"]: {k: o[k] for k in ("lamellarity", "encapsulation")
                                                              if k in o} for o in result.objects})
        write_label_image(output_path(out_dir, f"{image.name}_labels", self.output_format), result.labels, image.data,
                          name=LABEL_NAME, pixel_size_nm=pixel_size, label_metadata=metadata, image_name=image.name)
        for problem, values in result.explanations.items():
            write_image(output_path(out_dir, f"{image.name}{EXPLANATION_PRODUCT}{problem}", self.output_format), values,
                        pixel_size_nm=pixel_size)
        self.objects += result.objects
        counts, edges = result.histogram()
        return {**result.summary, "pixel_size_source": source, "path": str(path),
                "explained": " ".join(result.explanations),  # which maps this run wrote: the reader opens those
                "histogram_edges_nm": edges.tolist(), "histogram": counts.tolist()}

    def failed(self, path: Path, error: str) -> dict[str, Any]:
        return {"image": file_stem(path), "path": str(path), "n_objects": 0, "status": "failed", "error": error}

    def write_tables(self, out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
        write_csv(out_dir / "objects.csv", self.objects, OBJECT_COLUMNS)
        write_csv(out_dir / "summary.csv", rows, SUMMARY_COLUMNS)
        write_json(out_dir / "summary.json", {"images": list(rows)})

    @classmethod
    def model_names(cls, options: dict[str, Any]) -> dict[str, str]:
        """The run's models. Without a detector or a pixel size in the options each input's own
        pixel size picks the detectors, so all are named (each input's row says which it used)."""
        chosen, pixel_size, small = options.get("detector"), options.get("pixel_size_nm"), options.get("small_detector")
        if chosen or pixel_size is not None:
            detectors = {"detector": chosen or default_detector(pixel_size)}
            if pixel_size is None:  # each input's own decides whether a retrained detector's companion runs
                small = small or companion(chosen)
            else:
                small = small_detector_for(pixel_size, chosen, small)
        else:  # each input's own pixel size picks them
            detectors = {"detector": DEFAULT_DETECTOR, "fine_detector": FINE_DETECTOR}
            if not small:
                detectors["varied_detector"] = VARIED_DETECTOR
            small = small or SMALL_DETECTOR
        return {**detectors, **({"small_detector": small} if small else {}),
                **chosen_classifiers(options.get("classifiers"))}
