"""Padded images: what the shipped models give on the recorded part of a padded image, with the
padding found (``io.images.recorded_part``, the default) and, with ``--ignore-padding``, counted as
data as before 2026-11-28; likewise an SEM's data bar.

    python benchmarks/padding.py [--ignore-padding] [--sections 13 14 15] [--rotate 12] [--border 0.1] [--montage 8]

- Liposomes: the real development micrograph (0.2 nm/px) with a border of zeros (and of its mean,
  as IMOD pads), 5 % of its side on each edge; F1 at box IoU ≥ 0.3 against our annotation (all vesicles, and those wholly inside
  the recorded part).
- Fibre homogeneity: every SEM micrograph of the dataset above a data bar as SEMs write one (70
  rows of white text and a scale bar on black); how many verdicts differ from the micrograph alone.
- Segmentation: ssTEM sections of the Drosophila stack with a border of zeros or of their mean
  (``--border`` of the side on each edge) and rotated by ``--rotate`` degrees with 0 in the corners, as registered
  sections are; mIoU of ``drosophila-seunet`` on the recorded part, beside the section as recorded
  (border) and on harmless surroundings (rotation: the corners set to the recorded mean by hand).
  A montage of the first section tiled ``--montage`` times per side, with zeros above and to the
  right (half ``--border`` of its side), is segmented from a zarr on disk (too large to hold: the
  streamed path), beside its recorded part alone.

The sections default to the test sections of the three-way protocol: this measures one shipped
model with and without the change; nothing is chosen on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from skimage.transform import rotate

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from liposomes_real import DATA, NATIVE_NM, annotation, score  # noqa: E402  (benchmarks/ is not a package)

STACK = ROOT.parent.parent / "shared" / "data" / "drosophila-vnc"
SEM = ROOT.parent.parent / "shared" / "data" / "nanofiber-sem"


def with_data_bar(image: np.ndarray, rows: int = 70) -> np.ndarray:
    """``image`` above a data bar: white strokes of text and a scale bar on black."""
    bar = np.zeros((rows, image.shape[1]), image.dtype)
    for x in range(20, image.shape[1] - 60, 90):
        bar[20:45, x:x + 3] = bar[20:23, x:x + 30] = bar[42:45, x:x + 30] = 255
    bar[55:60, 40:240] = 255
    return np.concatenate([image, bar])


def bordered(image: np.ndarray, share: float, fill: str = "zeros") -> tuple[np.ndarray, np.ndarray]:
    """``image`` padded on a band of ``share`` of its side along each edge with zeros or (``fill`` =
    "mean") the mean of the rest, as IMOD pads by default; and the recorded mask."""
    recorded = np.zeros(image.shape, bool)
    b = int(image.shape[0] * share)
    recorded[b:image.shape[0] - b, b:image.shape[1] - b] = True
    value = image[recorded].mean() if fill == "mean" else 0
    return np.where(recorded, image, value).astype(image.dtype), recorded


def miou(found: np.ndarray, truth: np.ndarray, where: np.ndarray, classes: int = 4) -> float:
    """Mean IoU over ``classes`` on the pixels ``where`` (unlabelled pixels of ``truth`` skipped),
    as the project scores segmentation (``core.metrics``)."""
    from napari_nanoclass.core.metrics import SegmentationScores, confusion_matrix

    return SegmentationScores([str(c) for c in range(classes)], confusion_matrix(found[where], truth[where], classes)).miou


def liposomes() -> None:
    from napari_nanoclass import analyse_liposomes, read_image

    image = np.asarray(read_image(DATA).data, np.float32)
    truth = annotation()
    padded, recorded = bordered(image, 0.05)
    inside = [t for t in truth if recorded[int(t["y"]), int(t["x"])] and all(
        recorded[int(np.clip(t["y"] + dy, 0, image.shape[0] - 1)), int(np.clip(t["x"] + dx, 0, image.shape[1] - 1))]
        for dy, dx in ((-t["r"], 0), (t["r"], 0), (0, -t["r"]), (0, t["r"])))]
    for name, data in (("as recorded", image), ("border of zeros", padded),
                       ("border of the mean", bordered(image, 0.05, "mean")[0])):
        labels = np.asarray(analyse_liposomes(data, NATIVE_NM).labels)
        print(f"liposomes, real micrograph, {name}: all {score(labels, truth, 0.3)}; "
              f"the {len(inside)} inside the recorded part {score(labels, inside, 0.3)}")


def homogeneity() -> None:
    from napari_nanoclass import analyse_homogeneity, read_image
    from napari_nanoclass.io.images import as_greyscale

    changed, fractions, paths = 0, [], sorted(SEM.glob("*/*.png"))
    for path in paths:
        image = np.asarray(as_greyscale(read_image(path).data), np.float32)
        alone, barred = analyse_homogeneity(image).summary, analyse_homogeneity(with_data_bar(image)).summary
        changed += alone["verdict"] != barred["verdict"]
        fractions.append(abs(alone["nonhomogeneous_fraction"] - barred["nonhomogeneous_fraction"]))
    print(f"homogeneity, {len(paths)} SEM micrographs above a data bar: {changed} verdicts changed, "
          f"non-homogeneous fraction moved by {np.mean(fractions):.3f} on average (at most {np.max(fractions):.3f})")


def segmentation(sections: list[str], share: float, degrees: float) -> None:
    from napari_nanoclass import segment
    from napari_nanoclass.segmentation.data import drosophila_pairs

    for pair in drosophila_pairs(STACK, sections):
        image, truth = pair.image.astype(np.float32), pair.labels
        whole = np.asarray(segment(image).labels)
        padded, recorded = bordered(image, share)
        border = miou(np.asarray(segment(padded).labels), truth, recorded)
        mean_border = miou(np.asarray(segment(bordered(image, share, "mean")[0]).labels), truth, recorded)
        turned = rotate(image, degrees, resize=True, order=1, preserve_range=True, cval=0).astype(np.float32)
        turned_truth = rotate(truth.astype(np.float32), degrees, resize=True, order=0, cval=255, preserve_range=True)
        inside = (rotate(np.ones(image.shape, np.float32), degrees, resize=True, order=0, cval=0) > 0.5) & (
            turned_truth < 255)
        reference = np.where(inside, turned, turned[inside].mean()).astype(np.float32)
        print(f"segmentation, section {pair.name}: border {border:.4f}, of the mean {mean_border:.4f} (as recorded, same area "
              f"{miou(whole, truth, recorded):.4f}); rotated {degrees:g}° "
              f"{miou(np.asarray(segment(turned).labels), turned_truth, inside):.4f} (corners at the mean by hand "
              f"{miou(np.asarray(segment(reference).labels), turned_truth, inside):.4f})")


def montage(section: str, tiles: int, border: int) -> None:
    """A stitched montage too large for segmentation to hold (streamed through zarr on disk): the
    section tiled ``tiles`` × ``tiles`` with ``border`` px of zeros above and to the right; mIoU of
    ``drosophila-seunet`` on the recorded part and the time it takes, beside the recorded part alone."""
    import tempfile
    import time

    import zarr

    from napari_nanoclass import segment
    from napari_nanoclass.segmentation.data import drosophila_pairs

    pair = drosophila_pairs(STACK, [section])[0]
    image, truth = np.tile(pair.image, (tiles, tiles)), np.tile(pair.labels, (tiles, tiles))
    padded = np.zeros((image.shape[0] + border, image.shape[1] + border), image.dtype)
    padded[border:, :image.shape[1]] = image
    recorded = np.zeros(padded.shape, bool)
    recorded[border:, :image.shape[1]] = True
    with tempfile.TemporaryDirectory() as folder:
        for name, data, where in (("recorded part alone", image, slice(None)), ("padded", padded, recorded)):
            stored = zarr.open_array(f"{folder}/{name}.zarr", mode="w", shape=data.shape, chunks=(1024, 1024),
                                     dtype=data.dtype)
            stored[:] = data
            start = time.perf_counter()
            labels = np.asarray(segment(stored, workdir=Path(folder) / name).labels)[where].reshape(truth.shape)
            print(f"segmentation, montage of section {section} ({padded.shape[0]} × {padded.shape[1]} px, streamed), "
                  f"{name}: mIoU {miou(labels, truth, np.ones(truth.shape, bool)):.4f} in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ignore-padding", action="store_true", help="count the padding as data, as before")
    ap.add_argument("--sections", nargs="+", default=["13", "14", "15"])
    ap.add_argument("--border", type=float, default=0.1, help="share of the side padded on each edge (sections)")
    ap.add_argument("--rotate", type=float, default=12.0, help="degrees the sections are turned by")
    ap.add_argument("--montage", type=int, default=8, help="a section tiled this many times per side, streamed")
    args = ap.parse_args()
    if args.ignore_padding:
        from napari_nanoclass.homogeneity import predict as homogeneity_predict
        from napari_nanoclass.liposomes import predict as liposome_predict
        from napari_nanoclass.segmentation import predict as segmentation_predict

        for module in (liposome_predict, segmentation_predict):
            module.recorded_part = lambda data, source="", store=None: (data, None, None)
        homogeneity_predict._without_data_bar = lambda data, name: data
    liposomes()
    homogeneity()
    segmentation(args.sections, args.border, args.rotate)
    montage(args.sections[0], args.montage, round(args.border * 1024 * args.montage / 2))


if __name__ == "__main__":
    main()
