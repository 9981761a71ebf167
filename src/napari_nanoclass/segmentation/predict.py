"""Semantic segmentation of EM images with a registered model: image in, class labels out.

:func:`segment_steps` is the step generator the napari widget runs in a worker thread;
:func:`segment` runs it synchronously; :class:`SegmentFiles` is the file job behind
``nanoclass segment`` and ``nanoclass batch segment`` (output contract in docs/cli.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from napari_nanoclass import engine
from napari_nanoclass.core.analysis import FileJob
from napari_nanoclass.core.progress import CancelToken, ProgressCallback, Steps, run_sync
from napari_nanoclass.engine.scaling import chosen_pixel_size, log, model_scale_factor, rescaled_planes, resized_planes
from napari_nanoclass.engine.tiling import check_min_size
from napari_nanoclass.io.images import (
    Image,
    as_greyscale,
    check_exclusion_folder,
    excluded,
    exclusion_mask,
    file_stem,
    image_stats,
    ngff_label_metadata,
    output_path,
    placed,
    recorded_part,
    recorded_stats,
    write_csv,
    write_image,
    write_label_image,
)
from napari_nanoclass.models.registry import LoadedModel, load_model
from napari_nanoclass.segmentation import DEFAULT_MODEL

# beyond this many pixels results are streamed to zarr on disk instead of held in memory
IN_MEMORY_LIMIT = 64 * 2**20
LABEL_NAME = "classes"  # the class labels in an OME-Zarr output: ``labels/classes`` of the input image


@dataclass
class SegmentationResult:
    """Class index per pixel, optional class probabilities, and what the classes are."""

    labels: Any  # (Y, X) or (Z, Y, X), uint8; numpy, or dask over a zarr on disk
    probabilities: Any | None  # (C, Y, X) or (C, Z, Y, X) float32 softmax; argmax over C is ``labels``
    class_names: list[str]
    class_colours: list[str]
    model_name: str
    model_sha256: str
    pixel_size_nm: float | None = None  # the input's, when known (outputs are at the input's size)
    fill: Any | None = None  # where the input holds no recorded data (io.images.fill_mask): label 0, not counted

    def class_table(self) -> list[dict[str, Any]]:
        """Area in pixels and fraction per class (and in nm² when the pixel size is known) of the
        recorded pixels: the Labels layer's features table and a CSV. Columns name their unit
        (``area_px``, ``area_nm2``)."""
        counts = _bincount(self.labels, len(self.class_names))
        if self.fill is not None:
            counts[0] -= int(np.count_nonzero(self.fill))
        total = max(int(counts.sum()), 1)
        area = {} if not self.pixel_size_nm else {"area_nm2": lambda n: round(float(n) * self.pixel_size_nm ** 2, 3)}
        return [
            {"index": i, "class": name, "area_px": int(n), "fraction": n / total, **{k: f(n) for k, f in area.items()}}
            for i, (name, n) in enumerate(zip(self.class_names, counts))
        ]

    def label_metadata(self) -> dict[str, Any]:
        """NGFF ``image-label`` colours and class names, so OME-Zarr viewers show the classes."""
        return ngff_label_metadata({i: c for i, c in enumerate(self.class_colours)},
                                   {i: {"class": n} for i, n in enumerate(self.class_names)})


def _bincount(labels: Any, n: int) -> np.ndarray:
    if isinstance(labels, np.ndarray):
        return np.bincount(labels.ravel(), minlength=n)[:n]
    lazy = labels if isinstance(labels, da.Array) else da.from_array(labels, chunks=labels.chunks)
    return da.bincount(lazy.ravel(), minlength=n).compute()[:n]


def segment_steps(
    image: Any,
    model: str | LoadedModel = DEFAULT_MODEL,
    *,
    tile: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    probabilities: bool = False,
    workdir: str | Path | None = None,
    tta: bool = False,
    pixel_size_nm: float | None = None,
    name: str = "image",
    precision: str = "float32",
    compile: bool = False,
    exclude: np.ndarray | None = None,
) -> Steps[SegmentationResult]:
    """Segment a 2-D image or a (Z, Y, X) stack; yields progress per tile. ``tile`` defaults to
    the largest the memory allows (one forward for an image that fits: no halo computed twice).
    ``tta`` averages each tile over its 8 rotations and flips: a little more accurate, 8× slower.
    ``precision="bfloat16"`` runs the network in reduced precision: faster where the CPU or GPU
    computes it natively, at the cost of a few changed labels (opt-in; docs/engine.md).
    ``compile`` compiles the network first (``engine.compiled``): for long runs, never the default.

    ``pixel_size_nm`` (default: the Image's own) is compared with the model's: when they differ
    the image is segmented at the model's scale and the labels brought back to the input's size
    (:mod:`napari_nanoclass.engine.scaling`). Large images (more than ``IN_MEMORY_LIMIT`` pixels)
    need ``workdir``: probabilities and labels are then zarr arrays there, streamed chunk by chunk;
    they are not rescaled.

    ``probabilities`` keeps the softmax per class (with the model's decision offsets, so that the
    labels are its argmax) from the same tiled pass, instead of labels only: the labels are then
    taken from it, and both are brought back to the input's size by nearest neighbour, so the
    argmax of the probabilities is the labels at every pixel.

    A padded image (a constant where nothing was recorded, as registered sections and stitched
    montages are: :func:`io.images.recorded_part`) is segmented as its recorded part cut out would
    be; the padding is labelled 0 and marked in the result's ``fill``. A large one is searched for
    padding block by block, and its mask is kept in ``workdir``. ``exclude``, a mask of a plane's
    shape, leaves its nonzero regions of every plane out in the same way (:func:`io.images.excluded`).
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model, engine.select_device(device))
    data = as_greyscale(image.data if isinstance(image, Image) else image)
    if isinstance(image, Image):
        name = image.name
        pixel_size_nm, _ = chosen_pixel_size(name, pixel_size_nm, image.pixel_size_nm, image.pixel_size_source)
    full_shape = tuple(data.shape)
    if not isinstance(data, np.ndarray) and int(np.prod(full_shape)) <= IN_MEMORY_LIMIT:
        data = np.asarray(data)  # held whole anyway, as its labels are
    data = excluded(data, exclude, name)
    data, fill, box = recorded_part(data, name, store=Path(workdir) / "fill.zarr" if workdir else None)
    input_shape = tuple(data.shape[-2:])
    factor = model_scale_factor(name, pixel_size_nm, loaded.info.pixel_size_nm, loaded.info.name)
    if factor != 1 and int(np.prod(data.shape)) * max(factor, 1) ** 2 > IN_MEMORY_LIMIT:
        log.warning("%s: too large to rescale in memory; segmented at its own pixels", name)
        factor = 1.0
    if factor != 1:
        data = rescaled_planes(data, factor)
    check_min_size(data.shape, loaded.halo, name, loaded.info.name, "its receptive radius, the context one pixel's class "
                   "is decided from")
    big = int(np.prod(data.shape)) > IN_MEMORY_LIMIT
    if big and workdir is None:
        raise ValueError(f"image of {data.shape} is too large to hold in memory; give a workdir for zarr output")
    stats = _normalisation(loaded, data, fill)
    # without probabilities the engine emits labels directly: no C×Y×X float array, no second pass
    post = engine.with_logit_bias(engine.softmax if probabilities else engine.labels_from_logits,
                                  loaded.info.logit_bias)
    name = "probabilities.zarr" if probabilities else "labels.zarr"
    out = yield from engine.predict_dense(
        loaded.module, data, tile=tile, halo=loaded.halo, batch_size=batch_size,
        stats=stats, device=loaded.device, postprocess=post, out=Path(workdir) / name if big else None, tta=tta,
        precision=precision, compile=compile,
    )
    if not probabilities:
        labels = da.from_zarr(out)[0] if big else out[0]
    elif big:
        labels_path = Path(workdir) / "labels.zarr"
        da.from_zarr(out).argmax(axis=0).astype(np.uint8).to_zarr(str(labels_path), overwrite=True)
        labels = da.from_zarr(str(labels_path))
    else:
        labels = out.argmax(axis=0).astype(np.uint8)
    if factor != 1:  # back to the input's size
        labels = resized_planes(labels, input_shape, order=0)
        out = resized_planes(out, input_shape, order=0) if probabilities else out
    if fill is not None:  # back into the input's frame, 0 where nothing was recorded
        labels = placed(labels, fill, box, full_shape)
        if probabilities:
            out = placed(da.from_zarr(out) if big else out, fill, box, (out.shape[0], *full_shape))
        fill = placed(fill, np.zeros_like(fill), box, full_shape, outside=True)
    info = loaded.info
    return SegmentationResult(labels, out if probabilities else None, list(info.class_names),
                              list(info.class_colours), info.name, loaded.sha256, pixel_size_nm, fill)


def _normalisation(loaded: LoadedModel, data: Any, fill: np.ndarray | None = None) -> list[tuple[float, float]]:
    """Per-plane (mean, std): fixed ones stored with the model, else each whole plane's, or of its
    recorded pixels where ``fill`` (at the input's scale) marks padding."""
    norm = loaded.info.normalisation
    image_planes = engine.planes(data)  # lazy planes: a zarr stack is not read whole here
    if norm.get("method") == "fixed":
        return [(float(norm["mean"]), float(norm["std"]))] * len(image_planes)
    if fill is None:
        return [image_stats(plane) for plane in image_planes]
    masks = fill.reshape(-1, *fill.shape[-2:])
    if masks.shape[-2:] != image_planes[0].shape:  # the image was rescaled (in memory) for the model
        masks = resized_planes(masks, image_planes[0].shape, order=0)
    return [recorded_stats(plane, mask) for plane, mask in zip(image_planes, masks)]


def segment(image: Any, model: str | LoadedModel = DEFAULT_MODEL, *, progress: ProgressCallback | bool | None = None,
            cancel: CancelToken | None = None, **kwargs: Any) -> SegmentationResult:
    """Synchronous :func:`segment_steps` (Python API)."""
    return run_sync(segment_steps(image, model, **kwargs), progress=progress, cancel=cancel)


class SegmentFiles(FileJob):
    """``nanoclass segment``: per input ``<stem>_labels.tif`` (class index per pixel) and
    ``<stem>_classes.csv``, optionally ``<stem>_probabilities.tif`` (``.ome.zarr`` instead with
    ``output_format="ome-zarr"``, the labels then under ``labels/classes`` of the input image), and
    ``segmentation.csv`` with one row per input."""

    def __init__(self, model: str | None = None, *, tile: int | None = None, device: str | None = None,
                 probabilities: bool = False, output_format: str = "tif", tta: bool = False,
                 pixel_size_nm: float | None = None, precision: str = "float32", compile: bool = False,
                 exclude: str | None = None) -> None:
        check_exclusion_folder(exclude)  # refused before any input
        self.loaded = load_model(model or DEFAULT_MODEL, engine.select_device(device))
        self.exclude = exclude
        self.tile, self.probabilities, self.tta, self.precision = tile, probabilities, tta, precision or "float32"
        self.output_format, self.pixel_size_nm, self.compile = output_format or "tif", pixel_size_nm, compile

    def process(self, image: Image, path: Path, out_dir: Path, workdir: Path) -> Steps[dict[str, Any]]:
        pixel_size, source = chosen_pixel_size(image.name, self.pixel_size_nm, image.pixel_size_nm,
                                               image.pixel_size_source)
        if pixel_size is not None:
            log.info("%s: pixel size %g nm/px (%s)", image.name, pixel_size, source)
        result = yield from segment_steps(image.data, self.loaded, tile=self.tile, probabilities=self.probabilities,
                                          workdir=workdir, tta=self.tta, pixel_size_nm=pixel_size, name=image.name,
                                          precision=self.precision, compile=self.compile,
                                          exclude=exclusion_mask(self.exclude, image.name))
        return {**self._row(image.name, path), "pixel_size_nm": pixel_size, "pixel_size_source": source,
                **_write_result(result, image.data, out_dir, image.name, self.output_format), "status": "ok",
                "error": ""}

    def failed(self, path: Path, error: str) -> dict[str, Any]:
        return {**self._row(file_stem(path), path), "status": "failed", "error": error}

    def _row(self, stem: str, path: Path) -> dict[str, Any]:
        return {"image": stem, "path": str(path), "model": self.loaded.info.name}

    def write_tables(self, out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
        write_csv(out_dir / "segmentation.csv", rows)

    @classmethod
    def model_names(cls, options: dict[str, Any]) -> dict[str, str]:
        return {"model": options.get("model") or DEFAULT_MODEL}


def _write_result(result: SegmentationResult, image: Any, out_dir: Path, stem: str,
                  output_format: str) -> dict[str, Any]:
    """The labels (OME-Zarr: as ``labels/classes`` of a copy of ``image``), the class table and
    the probabilities when asked for; the paths and class fractions for the table row."""
    labels_path = write_label_image(output_path(out_dir, f"{stem}_labels", output_format), result.labels, image,
                                    name=LABEL_NAME, pixel_size_nm=result.pixel_size_nm,
                                    label_metadata=result.label_metadata(), image_name=stem)
    table = result.class_table()
    write_csv(out_dir / f"{stem}_classes.csv", table)
    written = {"labels": str(labels_path)}
    if result.probabilities is not None:
        axes = "c" + "zyx"[-(result.probabilities.ndim - 1):]
        written["probabilities"] = str(write_image(output_path(out_dir, f"{stem}_probabilities", output_format),
                                                   result.probabilities, axes=axes, pixel_size_nm=result.pixel_size_nm,
                                                   channel_names=result.class_names))
    written.update({f"fraction_{r['class']}": round(r["fraction"], 6) for r in table})
    return written
