"""Open saved results again as napari layers, at physical scale (nm) wherever the pixel size is known.

What opens (:func:`get_reader`):

* a batch input folder ``DIR/<stem>/`` (or its ``result.json``), a batch root ``DIR/`` (every
  complete input in it), and the output folder of any analysis with a table, ``nanoclass segment
  | homogeneity | liposomes | xrd`` (every input its table lists as done, by its ``key`` column);
* a single result file (``<stem>_labels.tif``, ``<stem>_pnhnf.ome.zarr``…) in such a folder: that
  input's results;
* a micrograph in a microscope format (MRC, DM3/DM4, EMD, SER) as an image layer in nm.

Each input's layers are the source image (when the analysis reads micrographs: its file if it
can still be found, else the copy an OME-Zarr label output holds under its labels) followed by what
the widget would have made — class labels with their colours and per-class table, the homogeneity
map with its colour map and patch scale, liposome instances with their per-object ``features``
table and class colours — and the optional maps saved with them: the defect map, class
probabilities and liposome explanations (the last two as the widgets show them:
:func:`probability_layer`, :func:`explanation_layer`). The pixel size is the one the analysis
used (recorded in its table), else the one the result file or the source image carries; layers
then have ``scale`` in nm and ``metadata["pixel_size_nm"]``.

Returns napari LayerData tuples without importing napari, so scripts can use it too. Analyses
are reached through :mod:`napari_nanoclass.core.analysis` only: none is named here.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from napari_nanoclass.core.analysis import Analysis, analyses, get
from napari_nanoclass.engine.tiling import patch_map_pixels, patch_outline_pixels
from napari_nanoclass.io.formats import MRC_SUFFIXES, RSCIIO_SUFFIXES
from napari_nanoclass.io.images import (
    OUTPUT_FORMATS,
    Image,
    find_output,
    labelled_image,
    read_image,
    read_label_image,
    read_output,
)

RESULT = "result.json"  # what the batch runner writes into each complete input folder
RUN_SUMMARY = "run_summary.json"  # what the batch runner writes into its output folder

LayerData = tuple[Any, dict[str, Any], str]
Reader = Callable[[str | list[str]], list[LayerData]]


def get_reader(path: str | list[str]) -> Reader | None:
    """napari reader hook: a reader for anything in the module docstring, else None (so napari's
    own readers take plain images)."""
    if isinstance(path, list):
        return None
    path = Path(path)
    if _marker(path) is not None:
        return read_results
    if path.is_dir() and (path / RUN_SUMMARY).is_file():
        return read_batch
    if path.is_dir() and _folder_analysis(path) is not None:
        return read_output_folder
    if _result_file(path) is not None:
        return read_result_file
    if path.is_file() and path.suffix.lower() in MRC_SUFFIXES | set(RSCIIO_SUFFIXES):
        return read_micrograph
    return None


def _marker(path: Path) -> Path | None:
    marker = path if path.name == RESULT else path / RESULT
    return marker if marker.is_file() else None


def _one(path: str | list[str]) -> Path:
    return Path(path if isinstance(path, str) else path[0])


def read_results(path: str | list[str]) -> list[LayerData]:
    """The layers of one input's batch results (see the module docstring)."""
    marker = _marker(_one(path))
    if marker is None:
        raise ValueError(f"{path}: not a napari-nanoclass result folder (no {RESULT})")
    stored = json.loads(marker.read_text())
    result = {"path": stored.get("input"), **stored["result"]}
    return input_layers(get(stored["analysis"]), marker.parent, stored["stem"], result)


def read_batch(path: str | list[str]) -> list[LayerData]:
    """The layers of every complete input of a batch output folder, in name order."""
    root = _one(path)
    layers: list[LayerData] = []
    for folder in sorted(p for p in root.iterdir() if (p / RESULT).is_file()):
        layers += read_results(str(folder))
    return layers


def _folder_analysis(folder: Path) -> Analysis | None:
    """The analysis whose table lies in ``folder`` (the output folder of ``nanoclass NAME``)."""
    return next((a for a in analyses() if a.table and (folder / a.table).is_file()), None)


def _table_rows(folder: Path, analysis: Analysis) -> list[dict[str, str]]:
    """The rows of the inputs the analysis finished in ``folder``."""
    return [r for r in _rows(folder / analysis.table) if r.get("status", "ok") == "ok"]


def read_output_folder(path: str | list[str]) -> list[LayerData]:
    """The layers of every input an output folder of ``nanoclass NAME`` lists as done."""
    folder = _one(path)
    analysis = _folder_analysis(folder)
    if analysis is None:
        raise ValueError(f"{folder}: not a napari-nanoclass output folder (no table of any analysis)")
    layers: list[LayerData] = []
    for row in _table_rows(folder, analysis):
        layers += input_layers(analysis, folder, row[analysis.key], row)
    return layers


def _result_file(path: Path) -> tuple[Analysis, str] | None:
    """(analysis, stem) of a result image in an output folder of that analysis, else None."""
    name = path.name
    suffix = next((s for s in OUTPUT_FORMATS.values() if name.endswith(s)), None)
    if suffix is None or not path.exists():
        return None
    for analysis in analyses():
        if not (analysis.table and (path.parent / analysis.table).is_file()) and _marker(path.parent) is None:
            continue
        for product in analysis.products:
            if name.endswith(product + suffix):
                return analysis, name[: -len(product + suffix)]
    return None


def read_result_file(path: str | list[str]) -> list[LayerData]:
    """The layers of the input a single result file belongs to."""
    file = _one(path)
    found = _result_file(file)
    if found is None:
        raise ValueError(f"{file}: not a result file of a napari-nanoclass output folder")
    if _marker(file.parent) is not None:
        return read_results(str(file.parent))
    analysis, stem = found
    rows = [r for r in _table_rows(file.parent, analysis) if r.get(analysis.key) == stem]
    return input_layers(analysis, file.parent, stem, rows[0] if rows else {analysis.key: stem})


def read_micrograph(path: str | list[str]) -> list[LayerData]:
    """A microscope file as an image layer in nm (its pixel size and source in the metadata)."""
    image = read_image(_one(path))
    return [_image_layer(image)]


def _image_layer(image: Any) -> LayerData:
    meta: dict[str, Any] = {"name": image.name, "metadata": {"pixel_size_nm": image.pixel_size_nm,
                                                             "pixel_size_source": image.pixel_size_source}}
    if image.pixel_size_nm:
        meta["scale"] = [1.0] * (image.data.ndim - 2) + [image.pixel_size_nm] * 2
    return image.data, meta, "image"


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def input_layers(analysis: Analysis, folder: Path, stem: str, result: dict[str, Any]) -> list[LayerData]:
    """One input's layers: its source image if found, then the analysis' own, all at physical scale."""
    from napari_nanoclass.io.images import ImageError

    source = None
    path = result.get("path")
    if path and analysis.reads_images and Path(path).exists():
        try:
            source = read_image(path)
        except ImageError:
            source = None  # the results still open without it
    if source is None and analysis.reads_images:
        source = _image_in_output(analysis, folder, stem)
    pixel_size = _number(result.get("pixel_size_nm"))
    if pixel_size is None and source is not None:
        pixel_size = source.pixel_size_nm
    if pixel_size is None:
        pixel_size = _output_pixel_size(analysis, folder, stem)
    layers: list[LayerData] = []
    if source is not None:  # in input pixels like the results, so all are scaled alike below
        data, meta, kind = _image_layer(source)
        meta.pop("scale", None)
        if result.get("pixel_size_source"):
            meta["metadata"]["pixel_size_source"] = result["pixel_size_source"]
        layers.append((data, meta, kind))
    layers += analysis.read_layers(folder, stem, result)
    return [_in_nm(layer, pixel_size) for layer in layers] if pixel_size else layers


def _image_in_output(analysis: Analysis, folder: Path, stem: str) -> Image | None:
    """The input image an OME-Zarr label output holds (its labels lie under it), named as the
    input, for when the input file has moved; None for TIFF and older stand-alone label outputs."""
    output = find_output(folder, analysis.overview.format(stem=stem)) if analysis.overview_kind == "labels" else None
    image = labelled_image(output) if output is not None else None
    return replace(image, name=stem) if image is not None else None


def _output_pixel_size(analysis: Analysis, folder: Path, stem: str) -> float | None:
    """The pixel size a full-size result file (the overview's) records, if any."""
    from napari_nanoclass.io.images import file_calibration

    if analysis.overview_kind != "labels":
        return None
    output = find_output(folder, analysis.overview.format(stem=stem))
    if output is None:
        return None
    return file_calibration(output).pixel_size_nm


def _in_nm(layer: LayerData, pixel_size: float) -> LayerData:
    """A layer whose y/x ``scale`` and ``translate`` are in input pixels, in nm."""
    data, meta, kind = layer
    ndim = len(data.shape) - (1 if meta.get("channel_axis") is not None else 0)
    scale = list(meta.get("scale") or [1.0] * ndim)
    translate = list(meta.get("translate") or [0.0] * ndim)
    scale[-2:] = [s * pixel_size for s in scale[-2:]]
    translate[-2:] = [t * pixel_size for t in translate[-2:]]
    metadata = {**(meta.get("metadata") or {}), "pixel_size_nm": pixel_size}
    return data, {**meta, "scale": scale, "translate": translate, "metadata": metadata}, kind


def _found(folder: Path, name: str) -> Path:
    """Where a saved map or label image is (TIFF or OME-Zarr), with a clear error when it is missing."""
    path = find_output(folder, name)
    if path is None:
        raise ValueError(f"{folder}: {name}.tif / {name}.ome.zarr is missing; rerun the batch with --overwrite")
    return path


def _output(folder: Path, name: str) -> Any:
    """A saved map."""
    return read_output(_found(folder, name))


def _labels(folder: Path, name: str) -> tuple[Any, dict[str, Any]]:
    """A saved label image and its NGFF ``image-label`` metadata (under its image in an OME-Zarr
    output, or at the root of an older one; ``{}`` for TIFF)."""
    return read_label_image(_found(folder, name))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _columns(rows: list[dict[str, str]]) -> dict[str, list[Any]]:
    """A CSV table as columns, numbers as numbers (a features table to sort, plot and compute with)."""
    columns: dict[str, list[Any]] = {}
    for key in rows[0] if rows else []:
        values = [r[key] for r in rows]
        for kind in (int, float):
            try:
                values = [kind(v) for v in values]
                break
            except ValueError:
                continue
        columns[key] = values
    return columns


def segmentation_layers(folder: Path, stem: str, result: dict[str, Any]) -> list[LayerData]:
    labels, label_metadata = _labels(folder, f"{stem}_labels")
    table = _rows(folder / f"{stem}_classes.csv")
    class_names = [r["class"] for r in table]
    meta: dict[str, Any] = {"name": f"{stem} labels", "features": _columns(table),
                            "metadata": {"model": result.get("model"), "class_names": class_names}}
    colours = _class_colours(result.get("model")) or _ngff_colours(label_metadata)
    if colours:
        meta["colormap"] = {**colours, None: "transparent"}
    layers: list[LayerData] = [(labels, meta, "labels")]
    # optional (--probabilities): only when this run wrote them, not a file an earlier run left
    probabilities = find_output(folder, f"{stem}_probabilities") if result.get("probabilities") else None
    if probabilities is not None:
        layers.append(probability_layer(read_output(probabilities), class_names, stem))
    return layers


def probability_layer(probabilities: Any, class_names: list[str], name: str) -> LayerData:
    """Per-class probabilities (C, [Z,] Y, X) as one image layer per class ("<name> p(<class>)"),
    hidden at first: a probability layer over the labels hides them, so the user picks which to see."""
    meta = {"name": [f"{name} p({c})" for c in class_names], "channel_axis": 0, "colormap": "magma",
            "contrast_limits": (0.0, 1.0), "visible": False, "metadata": {"class_names": list(class_names)}}
    return probabilities, meta, "image"


EXPLANATION_COLORMAPS = {"lamellarity": "inferno", "encapsulation": "cyan"}  # black at 0: adds nothing there


def explanation_layer(values: Any, name: str, problem: str, visible: bool = True) -> LayerData:
    """A liposome explanation map (0–1, 0 outside objects) as an image layer added onto what lies
    below, so the micrograph and the objects stay readable; black adds nothing."""
    meta = {"name": f"{name} {problem} explanation", "colormap": EXPLANATION_COLORMAPS[problem],
            "blending": "additive", "contrast_limits": (0.0, 1.0), "opacity": 0.7, "visible": visible,
            "metadata": {"problem": problem}}
    return values, meta, "image"


def _registered_info(model: str | None) -> Any:
    """The registered model's info, or None when it is no longer registered here (the registry,
    and torch with it, is imported only when a result is read)."""
    from napari_nanoclass.models.registry import registered_info

    return registered_info(model)


def _class_colours(model: str | None) -> dict[int, str]:
    info = _registered_info(model)
    return dict(enumerate(info.class_colours)) if info is not None else {}


def _ngff_colours(label_metadata: dict[str, Any]) -> dict[int, str]:
    """Label value → ``#rrggbbaa`` from NGFF ``image-label`` ``colors``: the colours the result was
    saved with, for when its model is no longer registered here."""
    return {int(c["label-value"]): "#" + "".join(f"{int(v):02x}" for v in c["rgba"])
            for c in label_metadata.get("colors", []) if "label-value" in c and len(c.get("rgba", [])) == 4}


NHNF_OUTLINE = "#d7191c"  # the defective end of homogeneity.CLASS_COLOURS
CAM_LIMITS = (0.25, 1.0)  # a defect map's weak tail adds no colour, so the fibres around defects stay grey


def outline_width(shape: Sequence[int]) -> int:
    """Outline width in pixels that stays visible when the whole image fills the window."""
    return max(2, round(max(int(s) for s in shape[-2:]) / 400))


def homogeneity_map_layers(p_nhnf: Any, patch_px: float, shape: Sequence[int], name: str, *, cam: Any = None,
                           cam_name: str = "", metadata: dict[str, Any] | None = None,
                           cam_metadata: dict[str, Any] | None = None) -> list[LayerData]:
    """The layers a homogeneity result is shown with, over an image of (Y, X) ``shape``, for the
    widget and the reader alike: outlines of the non-homogeneous patches (p(NHNF) ≥ 0.5, the
    patches the NHNF area fraction counts), shown; the p(NHNF) heat map, hidden (a colour field
    over every patch hides the fibres; it is one click away); the Grad-CAM defect map, which is
    near zero away from defects and so only tints them."""
    p_nhnf = np.asarray(p_nhnf)
    layers: list[LayerData] = [
        (patch_outline_pixels(p_nhnf >= 0.5, patch_px, shape, outline_width(shape)),
         {"name": f"{name} NHNF patches", "opacity": 1.0, "blending": "translucent_no_depth",
          "colormap": {0: "transparent", 1: NHNF_OUTLINE, None: "transparent"},
          "metadata": {"what": "outline of the patches with p(NHNF) ≥ 0.5", **(metadata or {})}}, "labels"),
        (patch_map_pixels(p_nhnf, patch_px, shape),
         {"name": f"{name} p(NHNF)", "colormap": "inferno", "blending": "additive", "opacity": 0.6,
          "contrast_limits": (0.0, 1.0), "visible": False, "metadata": dict(metadata or {})}, "image")]
    if cam is not None:
        layers.append((cam, {"name": f"{cam_name} defect map", "colormap": "magenta", "blending": "additive",
                             "opacity": 0.45, "contrast_limits": CAM_LIMITS, "metadata": dict(cam_metadata or {})},
                       "image"))
    return layers


def homogeneity_layers(folder: Path, stem: str, result: dict[str, Any]) -> list[LayerData]:
    info = _registered_info(result.get("model"))
    patch = _number(result.get("patch_px")) or (int(info.patch) if info is not None and info.patch else 128)
    p_nhnf = np.asarray(_output(folder, f"{stem}_pnhnf"))
    height, width = _number(result.get("height_px")), _number(result.get("width_px"))
    shape = (int(height), int(width)) if height and width else tuple(int(n * patch) for n in p_nhnf.shape[-2:])
    cam = find_output(folder, f"{stem}_cam")  # optional (--cam)
    return homogeneity_map_layers(p_nhnf, patch, shape, stem, cam=None if cam is None else read_output(cam),
                                  cam_name=stem, metadata={"summary": result})


def liposome_layers(folder: Path, stem: str, result: dict[str, Any]) -> list[LayerData]:
    from napari_nanoclass.liposomes.predict import OBJECT_COLUMNS, class_colours

    labels = _labels(folder, f"{stem}_labels")[0]
    rows = [r for r in _rows(folder / "objects.csv") if r["image"] == stem] if (folder / "objects.csv").is_file() else []
    features: dict[str, list[Any]] = {"index": [int(r["label"]) for r in rows]}
    for column in (c for c in OBJECT_COLUMNS[2:] if not rows or c in rows[0]):  # older tables lack some
        features[column] = [r[column] if column in ("lamellarity", "encapsulation") else float(r[column])
                            for r in rows]
    meta = {"name": f"{stem} liposomes", "features": features,
            "colormap": class_colours(features["index"], features["lamellarity"]),
            "metadata": {"summary": result}}
    return [(np.asarray(labels), meta, "labels"), *_explanation_layers(folder, stem, result)]


def _explanation_layers(folder: Path, stem: str, result: dict[str, Any]) -> list[LayerData]:
    """The explanation maps the run that made ``result`` saved (``--explain``; none without), the
    first one shown. Maps an earlier run left in the folder are not this result's: not opened."""
    from napari_nanoclass.liposomes import EXPLANATION_PRODUCT, PROBLEMS

    explained = str(result.get("explained") or "").split()
    found = [(p, find_output(folder, f"{stem}{EXPLANATION_PRODUCT}{p}")) for p in PROBLEMS if p in explained]
    found = [(p, path) for p, path in found if path is not None]
    return [explanation_layer(read_output(path), stem, p, visible=i == 0) for i, (p, path) in enumerate(found)]
