"""Open saved results again as napari layers: a batch output folder ``DIR/<stem>/`` (or its
``result.json``) becomes the layers the widget would have made — class labels with their colours and
per-class table, the homogeneity map with its colour map and patch scale, liposome instances with
their per-object ``features`` table and class colours.

Returns napari LayerData tuples without importing napari, so scripts can use it too.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from napari_nanoclass.core.analysis import get
from napari_nanoclass.engine.tiling import patch_map_placement
from napari_nanoclass.io.images import find_output, read_output

RESULT = "result.json"  # what the batch runner writes into each complete input folder

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """napari reader hook: a reader for a batch result folder or its result.json, else None."""
    if isinstance(path, list):
        return None
    return read_results if _marker(Path(path)) is not None else None


def _marker(path: Path) -> Path | None:
    marker = path if path.name == RESULT else path / RESULT
    return marker if marker.is_file() else None


def read_results(path: str | list[str]) -> list[LayerData]:
    """The layers of one input's batch results (see the module docstring)."""
    marker = _marker(Path(path if isinstance(path, str) else path[0]))
    if marker is None:
        raise ValueError(f"{path}: not a napari-nanoclass result folder (no {RESULT})")
    stored = json.loads(marker.read_text())
    folder, stem = marker.parent, stored["stem"]
    return get(stored["analysis"]).read_layers(folder, stem, stored["result"])


def _output(folder: Path, name: str) -> Any:
    """A saved map or label image (TIFF or OME-Zarr), with a clear error when it is missing."""
    path = find_output(folder, name)
    if path is None:
        raise ValueError(f"{folder}: {name}.tif / {name}.ome.zarr is missing; rerun the batch with --overwrite")
    return read_output(path)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def segmentation_layers(folder: Path, stem: str, result: dict[str, Any]) -> list[LayerData]:
    labels = _output(folder, f"{stem}_labels")
    table = _rows(folder / f"{stem}_classes.csv")
    meta: dict[str, Any] = {"name": f"{stem} labels", "features": {k: [r[k] for r in table] for k in table[0]},
                            "metadata": {"model": result.get("model"), "class_names": [r["class"] for r in table]}}
    colours = _class_colours(result.get("model"))
    if colours:
        meta["colormap"] = {**dict(enumerate(colours)), None: "transparent"}
    return [(labels, meta, "labels")]


def _model_info(model: str | None) -> Any:
    """The registered model's info, or None when it is no longer registered here."""
    from napari_nanoclass.models.registry import list_models

    return next((m for m in list_models() if m.name == model), None)


def _class_colours(model: str | None) -> list[str]:
    info = _model_info(model)
    return list(info.class_colours) if info is not None else []


def homogeneity_layers(folder: Path, stem: str, result: dict[str, Any]) -> list[LayerData]:
    info = _model_info(result.get("model"))
    patch = int(info.patch) if info is not None and info.patch else 128
    p_nhnf = np.asarray(_output(folder, f"{stem}_pnhnf"))
    scale, translate = patch_map_placement(patch, [1.0] * p_nhnf.ndim, [0.0] * p_nhnf.ndim)
    layers: list[LayerData] = [(p_nhnf, {
        "name": f"{stem} p(NHNF)", "colormap": "inferno", "blending": "additive", "opacity": 0.4,
        "contrast_limits": (0.0, 1.0), "scale": scale, "translate": translate,
        "metadata": {"summary": result}}, "image")]
    cam = find_output(folder, f"{stem}_cam")  # optional (--cam)
    if cam is not None:
        layers.append((read_output(cam), {"name": f"{stem} defect map", "colormap": "magenta",
                                          "blending": "additive", "opacity": 0.5}, "image"))
    return layers


def liposome_layers(folder: Path, stem: str, result: dict[str, Any]) -> list[LayerData]:
    from napari_nanoclass.liposomes.predict import OBJECT_COLUMNS, class_colours

    labels = _output(folder, f"{stem}_labels")
    rows = [r for r in _rows(folder / "objects.csv") if r["image"] == stem]
    features: dict[str, list[Any]] = {"index": [int(r["label"]) for r in rows]}
    for column in OBJECT_COLUMNS[2:]:
        features[column] = [r[column] if column in ("lamellarity", "encapsulation") else float(r[column])
                            for r in rows]
    meta = {"name": f"{stem} liposomes", "features": features,
            "colormap": class_colours(features["index"], features["lamellarity"]),
            "metadata": {"summary": result, "pixel_size_nm": result.get("pixel_size_nm")}}
    return [(np.asarray(labels), meta, "labels")]
