"""Labelled training data: pairs of images and label masks, from folders or from arrays.

Label masks hold either class indices directly or raw values mapped to classes by a
``label_map``; the Drosophila VNC preset knows that data set's values (see ../shared/data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_nanoclass.io.images import IMAGE_SUFFIXES, ImageError, fill_mask, read_image, recorded_stats

DROSOPHILA_CLASSES = ["background", "membrane", "mitochondria", "synapse"]
DROSOPHILA_COLOURS = ["#00000000", "#f2d21b", "#e8432e", "#36c5f0"]
# raw label values of the merged Drosophila labels -> the paper's 4 classes
DROSOPHILA_LABEL_MAP = {0: 1, 32: 1, 64: 1, 96: 1, 128: 1, 159: 0, 191: 2, 223: 3, 255: 0}
DROSOPHILA_TRAIN = [f"{i:02d}" for i in range(12)]  # the shipped model's split: train and validation only
DROSOPHILA_VAL = [f"{i:02d}" for i in range(12, 16)]
# the three-way protocol of benchmarks/segmentation.py: contiguous blocks of sections, so neighbours
# in z (nearly the same image) never sit on two sides; the test sections are scored once, at the end
DROSOPHILA_SPLIT = {"train": [f"{i:02d}" for i in range(10)], "validation": ["10", "11", "12"],
                    "test": ["13", "14", "15"]}


@dataclass
class Pair:
    """One labelled 2-D image: ``labels`` are class indices (``ignore_index`` = unlabelled).

    ``stats``: the (mean, std) to normalise ``image`` with, where it is a piece of a larger image
    that the analysis normalises as a whole (a square cut around a corrected object): a piece
    normalised over itself would show the network other contrasts than the analysis does. None:
    the image's own statistics, as the engine takes them for a whole image.

    A padded image (:func:`io.images.fill_mask`: a constant where nothing was recorded) is taken
    as the analyses take it: its padding is set to the mean of the recorded pixels, left out of
    the statistics, and its labels there are ignored."""

    image: np.ndarray
    labels: np.ndarray
    name: str
    stats: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        fill = fill_mask(self.image) if np.ndim(self.image) == 2 else None
        if fill is None or fill.all():
            return
        mean, std = recorded_stats(self.image, fill, self.name)
        self.stats = self.stats or (mean, std)
        self.image = np.where(fill, np.asarray(mean, np.asarray(self.image).dtype), self.image)
        self.labels = np.where(fill, IGNORE_INDEX, self.labels)


IGNORE_INDEX = 255


def map_labels(raw: np.ndarray, label_map: Mapping[int, int] | None) -> np.ndarray:
    """Raw mask values -> class indices via a lookup table; unmapped values become ignore."""
    if label_map is None:
        return raw.astype(np.int64)
    lut = np.full(max(int(raw.max()) + 1, max(label_map) + 1), IGNORE_INDEX, dtype=np.int64)
    for value, cls in label_map.items():
        lut[value] = cls
    return lut[raw]


def pairs_from_folders(
    image_dir: str | Path,
    label_dir: str | Path,
    stems: Sequence[str] | None = None,
    label_map: Mapping[int, int] | None = None,
) -> list[Pair]:
    """Match ``image_dir/<stem>.*`` with ``label_dir/<stem>.*``; every image must have labels."""
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    labels = dict(_image_files(label_dir))
    pairs = []
    for stem, path in _image_files(image_dir):
        if stems is not None and stem not in stems:
            continue
        if stem not in labels:
            raise ImageError(f"{path}: no label file named {stem}.* in {label_dir}")
        pairs.append(pair_from_arrays(read_image(path).data, read_image(labels[stem]).data, stem, label_map))
    if not pairs:
        raise ImageError(f"{image_dir}: no images found" + (f" with stems {list(stems)}" if stems else ""))
    return pairs


def images_from_folder(folder: str | Path) -> list[tuple[str, np.ndarray]]:
    """(stem, image) of every image in ``folder``, in name order: unlabelled images for
    self-training."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a folder")
    images = [(stem, np.asarray(read_image(path).data)) for stem, path in _image_files(folder)]
    if not images:
        raise ImageError(f"{folder}: no images found")
    return images


def _image_files(folder: Path) -> list[tuple[str, Path]]:
    """(stem, path) of the image files in ``folder``, in name order; the stem is the name up to
    its first dot, so ``00.ome.tif`` is ``00``."""
    return [(path.name.split(".")[0], path) for path in sorted(folder.iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES]


def pair_from_arrays(image: np.ndarray, labels: np.ndarray, name: str = "layer",
                     label_map: Mapping[int, int] | None = None) -> Pair:
    """A training pair from in-memory arrays (e.g. napari Image + hand-corrected Labels layers)."""
    image, labels = np.asarray(image), np.asarray(labels)
    if image.shape != labels.shape:
        raise ImageError(f"{name}: image shape {image.shape} and labels shape {labels.shape} differ")
    if image.ndim != 2:
        raise ImageError(f"{name}: training takes 2-D images (got {image.ndim}-D); pass planes separately")
    return Pair(image, map_labels(labels, label_map), name)


def drosophila_pairs(root: str | Path, stems: Sequence[str]) -> list[Pair]:
    root = Path(root)
    return pairs_from_folders(root / "raw", root / "labels", stems, DROSOPHILA_LABEL_MAP)
