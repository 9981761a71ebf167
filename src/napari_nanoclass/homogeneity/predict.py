"""SEM nanofibre homogeneity: every 128×128 patch of a micrograph of any size classified, a map
of where the defects are, and a verdict per 1024×1024 view and per image.

The paper this follows classified one chosen 128×128 sub-image per micrograph; here the engine
classifies all of them (:func:`engine.predict_patches`), edge patches reflect-padded and weighted
by the fraction of them inside the image. Aggregation, per view and per image:

* ``p_nhnf`` — probability that the region is non-homogeneous, from the patches pooled as the
  model was trained (stored in its metadata): mean of patch probabilities for patch-label
  training, log-sum-exp pooling of logits for multiple-instance training, or, for a texture model
  with a region head, a regression on statistics of the features of the region's whole patches
  (its reflect-padded edge patches only when it has no whole one);
* ``verdict`` — ``NHNF`` when ``p_nhnf`` ≥ the model's threshold (0.5 unless trained otherwise),
  else ``HNF``; ``confidence`` is the probability of the verdict given;
* ``nonhomogeneous_fraction`` — area fraction of patches whose own ``p_nhnf`` ≥ 0.5.

Class 0 of every homogeneity model is the homogeneous class; three-class models add
``slightly_defective`` and ``defective`` and also report the most probable class.

:func:`analyse_steps` is the step generator the napari widget runs; :func:`analyse` runs it
synchronously; :class:`HomogeneityFiles` is ``nanoclass homogeneity`` (contract in docs/cli.md).

Two shipped models share the work: the texture classifier (``DEFAULT_MODEL``) gives the verdicts,
because it cross-validates best by micrograph, and the FibreCNN (``DEFAULT_CAM_MODEL``) the defect
map, which needs a CNN's differentiable feature maps. A FibreCNN chosen as the model makes its
own map.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
from torch import nn

from napari_nanoclass import engine
from napari_nanoclass.core.analysis import FileJob
from napari_nanoclass.core.progress import CancelToken, ProgressCallback, Steps, alongside, run_sync, scaled
from napari_nanoclass.engine.scaling import chosen_pixel_size, log, model_scale_factor, rescaled_planes, resized_planes
from napari_nanoclass.engine.tiling import check_min_size
from napari_nanoclass.homogeneity import CNN_ARCHITECTURE, DEFAULT_CAM_MODEL, DEFAULT_MODEL, VIEW
from napari_nanoclass.io.images import (
    Image,
    as_greyscale,
    edge_bands,
    file_stem,
    image_stats,
    output_path,
    write_csv,
    write_image,
)
from napari_nanoclass.models.fibre_cnn import FibreCNN, grad_cam, logits_and_grad_cam
from napari_nanoclass.models.fusion import fused
from napari_nanoclass.models.registry import LoadedModel, ModelInfo, load_model, read_info, resolve

IN_MEMORY_LIMIT = 64 * 2**20  # pixels; beyond it a CAM is streamed to zarr in a workdir


@dataclass
class Aggregation:
    """How patch logits become a region's class probabilities (stored with each model)."""

    method: str = "mean"  # "mean" of patch probabilities | "lse" log-sum-exp pooling of logits | "region"
    r: float = 4.0  # sharpness of "lse": → mean of logits as r → 0, → max as r → ∞
    threshold: float = 0.5  # p_nhnf at or above which a region is called NHNF
    # "region": the model's region head, (N, F) patch features and (N,) weights → (C,) logits
    region_logits: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, loaded: LoadedModel) -> Aggregation:
        aggregation = cls(**loaded.info.training.get("aggregation", {}))
        if aggregation.method == "region":
            if getattr(loaded.module, "region_head", None) is None:
                raise ValueError(f"model {loaded.info.name!r} pools by region features but has no region head")
            aggregation.region_logits = loaded.module.region_logits
        return aggregation

    def pool(self, logits: np.ndarray, weights: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """(C, N) patch logits, (N,) weights and, for "region", (F, N) patch features → (C,)
        class probabilities of the region."""
        if self.method == "region":
            if self.region_logits is None or features is None:
                raise ValueError("region pooling needs the model's region head and the patches' features")
            return _softmax(self.region_logits(features.T, weights), axis=0)
        w = weights / max(float(weights.sum()), 1e-12)
        if self.method == "mean":
            return (_softmax(logits, axis=0) * w).sum(axis=1)
        if self.method == "lse":
            scaled_logits = self.r * logits
            top = scaled_logits.max(axis=1, keepdims=True)
            pooled = (top[:, 0] + np.log((np.exp(scaled_logits - top) * w).sum(axis=1))) / self.r
            return _softmax(pooled, axis=0)
        raise ValueError(f"unknown aggregation method {self.method!r} (mean, lse or region)")


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@dataclass
class HomogeneityResult:
    """Patch maps of one image (2-D, or a stack with a leading Z axis) and their verdicts."""

    logits: np.ndarray  # (C, [Z,] gy, gx) patch logits
    coverage: np.ndarray  # (gy, gx) fraction of each patch inside the image
    class_names: list[str]
    patch: int
    summary: dict[str, Any]  # the image's verdict: p_nhnf, verdict, confidence, fraction, class
    views: list[dict[str, Any]]  # the same per view (and per plane for stacks)
    cam: Any | None = None  # ([Z,] Y, X) float32 Grad-CAM, 0–1, or None
    model_name: str = ""
    model_sha256: str = ""
    cam_model_name: str = ""  # the FibreCNN that made ``cam`` (the model itself, or DEFAULT_CAM_MODEL)
    features: np.ndarray | None = None  # (F, [Z,] gy, gx) patch features a region head pools, or None
    patch_px: float = 0.0  # side of one patch in input pixels (``patch`` unless rescaled to the model's scale)
    pixel_size_nm: float | None = None  # the input's, when known

    def __post_init__(self) -> None:
        self.patch_px = self.patch_px or float(self.patch)

    @property
    def probabilities(self) -> np.ndarray:
        """(C, [Z,] gy, gx) per-patch class probabilities."""
        return _softmax(self.logits, axis=0)

    @property
    def p_nhnf(self) -> np.ndarray:
        """([Z,] gy, gx) per-patch probability of non-homogeneous (1 − p(class 0))."""
        return 1.0 - self.probabilities[0]


def region_summary(logits: np.ndarray, coverage: np.ndarray, class_names: Sequence[str],
                   aggregation: Aggregation, features: np.ndarray | None = None) -> dict[str, Any]:
    """Verdict of one region from its (C, gy, gx) patch logits, (gy, gx) coverage and, for
    region pooling, (F, gy, gx) patch features."""
    flat, weights = logits.reshape(logits.shape[0], -1), coverage.ravel()
    flat_features = None if features is None else features.reshape(features.shape[0], -1)
    probs = aggregation.pool(flat, weights, flat_features)
    p_nhnf = float(1.0 - probs[0])
    nhnf = p_nhnf >= aggregation.threshold
    patch_nhnf = 1.0 - _softmax(flat, axis=0)[0]
    fraction = float((weights * (patch_nhnf >= 0.5)).sum() / max(float(weights.sum()), 1e-12))
    return {
        "verdict": "NHNF" if nhnf else "HNF",
        "p_nhnf": round(p_nhnf, 6),
        "confidence": round(p_nhnf if nhnf else 1.0 - p_nhnf, 6),
        "nonhomogeneous_fraction": round(fraction, 6),
        "predicted_class": class_names[int(np.argmax(probs))],
    }


def view_summaries(logits: np.ndarray, coverage: np.ndarray, class_names: Sequence[str],
                   aggregation: Aggregation, patch: int, view: int = VIEW,
                   features: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One summary per ``view``×``view`` region of the patch grid (edge views may be smaller)."""
    step = max(view // patch, 1)
    rows = []
    for i in range(0, coverage.shape[0], step):
        for j in range(0, coverage.shape[1], step):
            window = (slice(None), slice(i, i + step), slice(j, j + step))
            part = None if features is None else features[window]
            rows.append({"view_row": i // step, "view_col": j // step, "y0_px": i * patch, "x0_px": j * patch,
                         **region_summary(logits[window], coverage[window[1:]], class_names, aggregation, part)})
    return rows


def has_cam(info: ModelInfo) -> bool:
    """Whether a model can give a Grad-CAM defect map: it needs a CNN's differentiable feature
    maps, which the texture classifier (features measured by scikit-image) does not have."""
    return info.architecture == CNN_ARCHITECTURE


def cam_model_name(model: str, cam_model: str | None = None) -> str:
    """Name of the model :func:`cam_source` takes for ``model``, from the metadata alone (for
    recording what a batch run used without loading weights)."""
    if cam_model is not None:
        return cam_model
    return model if has_cam(read_info(resolve(model)[0])) else DEFAULT_CAM_MODEL


def cam_source(model: LoadedModel, cam_model: str | LoadedModel | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """The FibreCNN whose Grad-CAM is the defect map of ``model``'s analysis: ``cam_model`` if
    given, else ``model`` itself when it can make one, else ``DEFAULT_CAM_MODEL``. Its patch must
    be ``model``'s, so that the map is weighted by the verdict model's patch probabilities."""
    if cam_model is None:
        cam_model = model if has_cam(model.info) else DEFAULT_CAM_MODEL
    source = cam_model if isinstance(cam_model, LoadedModel) else load_model(cam_model, device)
    if not has_cam(source.info):
        raise ValueError(f"model {source.info.name!r} ({source.info.architecture}) has no class-activation map; "
                         f"choose a FibreCNN for the defect map, such as {DEFAULT_CAM_MODEL!r}")
    if int(source.info.patch or 128) != int(model.info.patch or 128):
        raise ValueError(f"defect-map model {source.info.name!r} works on {source.info.patch}-px patches, "
                         f"{model.info.name!r} on {model.info.patch}-px ones: choose models of one patch size")
    return source


class _GradCam(nn.Module):
    """Grad-CAM of a FibreCNN as a module, so the engine can tile it like any other model."""

    def __init__(self, model: FibreCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_cam(self.model, x)


class _LogitsAndGradCam(nn.Module):
    """A FibreCNN's logits and Grad-CAM from one forward, as (N, 1 + C, p, p): channel 0 the map,
    then each logit repeated over its patch, so the engine tiles it as a per-pixel model and the
    patch logits are read back at any pixel of their patch (:func:`_split_cam`)."""

    def __init__(self, model: FibreCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, cam_map = logits_and_grad_cam(self.model, x)
        return torch.cat([cam_map, logits[:, :, None, None].expand(-1, -1, *cam_map.shape[2:])], dim=1)


def _network(module: nn.Module, pooled_features: bool) -> nn.Module:
    """The module that runs: a FibreCNN with its batch norms folded (faster, same function; folded
    here, before a Grad-CAM wrapper that the engine would otherwise copy on every call), a texture
    model with the features its region head pools when it pools them."""
    if isinstance(module, FibreCNN):
        return fused(module)
    return module.with_features() if pooled_features else module


def _patch_passes(loaded: LoadedModel, cam_loaded: LoadedModel | None, data: Any, patch: int,
                  batch_size: int | None, stats: list[tuple[float, float]], pooled_features: bool,
                  cam_out: Path | None) -> Steps[tuple[np.ndarray, Any]]:
    """(patch outputs (C[+F], [Z,] gy, gx), the unweighted Grad-CAM as a ([Z,] Y, X) array or
    None). A FibreCNN that makes its own map gives its verdicts from the map's pass: one forward
    over the patches instead of two. Another CAM source runs a second pass: beside the verdicts'
    (:func:`alongside`) for a texture model, whose features are measured by single-threaded
    scikit-image code that leaves the network's forward the other cores; after them for another
    CNN."""
    def run(module: nn.Module, per_pixel: bool = False) -> Steps[Any]:
        return engine.predict_patches(module, data, patch=patch, batch_size=batch_size, stats=stats,
                                      postprocess=None, device=loaded.device, per_pixel=per_pixel,
                                      out=cam_out if per_pixel else None)

    network = _network(loaded.module, pooled_features)
    if cam_loaded is None:
        return np.asarray((yield from run(network))), None
    if cam_loaded.module is loaded.module:
        both = yield from run(_LogitsAndGradCam(network), per_pixel=True)
        return _split_cam(both, patch)
    cam_pass = run(_GradCam(_network(cam_loaded.module, False)), per_pixel=True)
    if has_cam(loaded.info):  # two networks: side by side their threads would compete for the same cores
        outputs = np.asarray((yield from scaled(run(network), 0, 2, "patches")))
        cam_map = yield from scaled(cam_pass, 1, 2, "defect map (Grad-CAM)")
    else:
        outputs, cam_map = yield from alongside(run(network), cam_pass, "patches and defect map (Grad-CAM)")
    return np.asarray(outputs), cam_map[0] if isinstance(cam_map, np.ndarray) else da.from_zarr(cam_map)[0]


def _split_cam(both: Any, patch: int) -> tuple[np.ndarray, Any]:
    """(C, [Z,] gy, gx) logits and the ([Z,] Y, X) map from :class:`_LogitsAndGradCam`'s
    per-pixel output (in memory, or a zarr array for a large image): each patch's logits are read
    at its first pixel, which every patch has inside the image."""
    if isinstance(both, np.ndarray):  # copies, so the (1 + C)-channel array is freed
        return both[1:, ..., ::patch, ::patch].copy(), both[0].copy()
    array = da.from_zarr(both)
    return np.asarray(array[1:, ..., ::patch, ::patch]), array[0]


def analyse_steps(
    image: Any,
    model: str | LoadedModel = DEFAULT_MODEL,
    *,
    cam: bool = False,
    cam_model: str | LoadedModel | None = None,
    view: int = VIEW,
    batch_size: int | None = None,
    device: str | None = None,
    workdir: str | Path | None = None,
    pixel_size_nm: float | None = None,
    name: str = "image",
) -> Steps[HomogeneityResult]:
    """Classify every patch of a 2-D image or (Z, Y, X) stack; optionally a Grad-CAM map too,
    made by :func:`cam_source` (``cam_model``, or the model itself if it is a FibreCNN, or
    ``DEFAULT_CAM_MODEL``).

    ``pixel_size_nm`` (default: the Image's own) is compared with the model's: when both are known
    and differ, patches are cut at the model's scale (a patch then covers ``patch_px`` input
    pixels), view corners are given in input pixels and the CAM at the input's size.
    Patch maps are small (one value per 128² pixels) and always in memory; a CAM of more than
    ``IN_MEMORY_LIMIT`` pixels needs ``workdir`` and is streamed to zarr there. A data bar under or
    beside an image in memory is left out (:func:`_without_data_bar`); the CAM is 0 on it.
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model, engine.select_device(device))
    info, patch = loaded.info, int(loaded.info.patch or 128)
    cam_loaded = cam_source(loaded, cam_model, loaded.device) if cam else None
    data = as_greyscale(image.data if isinstance(image, Image) else image)
    if isinstance(image, Image):
        name = image.name
        pixel_size_nm, _ = chosen_pixel_size(name, pixel_size_nm, image.pixel_size_nm, image.pixel_size_source)
    full_shape = tuple(data.shape)
    data = _without_data_bar(data, name)
    input_shape = tuple(data.shape[-2:])
    factor = model_scale_factor(name, pixel_size_nm, info.pixel_size_nm, info.name)
    if factor != 1 and int(np.prod(data.shape)) * max(factor, 1) ** 2 > IN_MEMORY_LIMIT:
        log.warning("%s: too large to rescale in memory; analysed at its own pixels", name)
        factor = 1.0
    if factor != 1:
        data = rescaled_planes(data, factor)
    check_min_size(data.shape, patch, name, info.name, "one patch, the smallest area it classifies")
    # a CNN's own map comes with its logits in the same per-pixel output: 1 + C values per pixel
    channels = 1 + len(info.class_names) if cam_loaded is not None and cam_loaded.module is loaded.module else 1
    big = int(np.prod(data.shape)) * channels > IN_MEMORY_LIMIT
    if cam and big and workdir is None:
        raise ValueError(f"image of {data.shape} is too large for an in-memory CAM; give a workdir for zarr output")
    aggregation = Aggregation.of(loaded)
    pooled_features = aggregation.method == "region"  # the region head needs the patch features too
    stats = [image_stats(plane) for plane in engine.planes(data)]
    outputs, cam_map = yield from _patch_passes(loaded, cam_loaded, data, patch, batch_size, stats, pooled_features,
                                                Path(workdir) / "cam.zarr" if big and cam else None)
    n_classes = len(info.class_names)
    logits, features = (outputs[:n_classes], outputs[n_classes:]) if pooled_features else (outputs, None)
    coverage = engine.patch_coverage(data.shape[-2:], patch)
    summary, views = _summaries(logits, coverage, list(info.class_names), aggregation, patch, view, features)
    if factor != 1:  # view corners in the input's pixels
        views = [{**v, "y0_px": round(v["y0_px"] / factor), "x0_px": round(v["x0_px"] / factor)} for v in views]
    result = HomogeneityResult(logits, coverage, list(info.class_names), patch, summary, views,
                               model_name=info.name, model_sha256=loaded.sha256, features=features,
                               patch_px=patch / factor, pixel_size_nm=pixel_size_nm)
    if cam_loaded is not None:
        result.cam = _scale_cam(cam_map, result.p_nhnf, patch)
        if factor != 1:
            result.cam = resized_planes(result.cam, input_shape, order=1)
        if tuple(result.cam.shape) != full_shape:  # 0 on the data bar
            result.cam = np.pad(np.asarray(result.cam), [(0, f - c) for f, c in zip(full_shape, result.cam.shape)])
        result.cam_model_name = cam_loaded.info.name
    return result


def _without_data_bar(data: Any, name: str) -> Any:
    """``data`` less the bands along its bottom and right edges that are mostly its extreme values
    (:func:`io.images.edge_bands`): an SEM's data bar, whose writing would be classified as fibre
    defects. Only such bands are cut, from the far edges, so patches and views keep their place;
    padding elsewhere is not looked for (:func:`io.images.fill_mask`), for the gaps between fibres
    can be saturated black. Images not in memory are left as they are."""
    if not isinstance(data, np.ndarray):
        return data
    boxes = [edge_bands(plane, near=False) for plane in data.reshape(-1, *data.shape[-2:])]
    rows, cols = max(b[0].stop for b in boxes), max(b[1].stop for b in boxes)
    if (rows, cols) == tuple(data.shape[-2:]):
        return data
    log.info("%s: a band of %d rows and %d columns along the bottom and right edges is mostly the image's "
             "extreme values (a data bar); analysed without it", name, data.shape[-2] - rows, data.shape[-1] - cols)
    return data[..., :rows, :cols]


def _summaries(logits: np.ndarray, coverage: np.ndarray, names: list[str], aggregation: Aggregation,
               patch: int, view: int, features: np.ndarray | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Image summary over all planes; view rows per plane (with a ``plane`` column for stacks)."""
    if logits.ndim == 3:
        return (region_summary(logits, coverage, names, aggregation, features),
                view_summaries(logits, coverage, names, aggregation, patch, view, features))
    n_planes = logits.shape[1]
    stacked_cov = np.broadcast_to(coverage, (n_planes, *coverage.shape))
    views = [{"plane": z, **row} for z in range(n_planes)
             for row in view_summaries(logits[:, z], coverage, names, aggregation, patch, view,
                                       None if features is None else features[:, z])]
    return region_summary(logits, stacked_cov, names, aggregation, features), views


def _scale_cam(cam: Any, p_nhnf: np.ndarray, patch: int) -> Any:
    """Weight each patch's CAM by its p_nhnf and scale to 0–1 over the whole image.

    Weighting keeps confidently homogeneous patches dark; one scale for the whole image (not
    per patch) keeps strong defects brighter than weak ones.
    """
    if isinstance(cam, da.Array):  # a CAM on disk: weight it lazily, chunk by chunk
        blocks = tuple(c // patch for c in cam.chunksize[-2:])
        grid = da.from_array(p_nhnf, chunks=(*p_nhnf.shape[:-2], *blocks))
        weight = da.repeat(da.repeat(grid, patch, axis=-2), patch, axis=-1)[..., : cam.shape[-2], : cam.shape[-1]]
        weighted = cam * weight.rechunk(cam.chunks)
        top = float(weighted.max().compute())
    else:
        weight = np.repeat(np.repeat(p_nhnf, patch, axis=-2), patch, axis=-1)[..., : cam.shape[-2], : cam.shape[-1]]
        weighted = cam * weight
        top = float(weighted.max()) if weighted.size else 0.0
    return (weighted / top if top > 0 else weighted).astype(np.float32)


def analyse(image: Any, model: str | LoadedModel = DEFAULT_MODEL, *, progress: ProgressCallback | bool | None = None,
            cancel: CancelToken | None = None, **kwargs: Any) -> HomogeneityResult:
    """Synchronous :func:`analyse_steps` (Python API)."""
    return run_sync(analyse_steps(image, model, **kwargs), progress=progress, cancel=cancel)


SUMMARY_COLUMNS = ["image", "verdict", "nonhomogeneous_fraction", "p_nhnf", "confidence", "predicted_class",
                   "height_px", "width_px", "patches", "views", "patch_px", "pixel_size_nm", "pixel_size_source", "model",
                   "model_sha256", "cam_model", "status", "error", "path"]


class HomogeneityFiles(FileJob):
    """``nanoclass homogeneity``: per input ``<stem>_pnhnf.tif`` (patch map of p_nhnf) and with
    ``cam`` ``<stem>_cam.tif`` (``.ome.zarr`` with ``output_format="ome-zarr"``);
    ``homogeneity.csv`` (one row per image) and ``homogeneity_views.csv`` (one row per view)."""

    def __init__(self, model: str | None = None, *, cam: bool = False, cam_model: str | None = None,
                 view: int = VIEW, device: str | None = None, output_format: str = "tif",
                 pixel_size_nm: float | None = None) -> None:
        self.loaded = load_model(model or DEFAULT_MODEL, engine.select_device(device))
        self.cam_loaded = cam_source(self.loaded, cam_model, self.loaded.device) if cam else None  # once, not per file
        self.view, self.output_format, self.pixel_size_nm = view, output_format or "tif", pixel_size_nm
        self.view_rows: list[dict[str, Any]] = []

    def process(self, image: Image, path: Path, out_dir: Path, workdir: Path) -> Steps[dict[str, Any]]:
        stem = image.name
        pixel_size, source = chosen_pixel_size(stem, self.pixel_size_nm, image.pixel_size_nm, image.pixel_size_source)
        if pixel_size is not None:
            log.info("%s: pixel size %g nm/px (%s)", stem, pixel_size, source)
        result = yield from analyse_steps(image.data, self.loaded, cam=self.cam_loaded is not None,
                                          cam_model=self.cam_loaded, view=self.view, workdir=workdir,
                                          pixel_size_nm=pixel_size, name=stem)
        map_pixel = pixel_size * result.patch_px if pixel_size else None
        write_image(output_path(out_dir, f"{stem}_pnhnf", self.output_format), result.p_nhnf.astype(np.float32),
                    pixel_size_nm=map_pixel)
        if result.cam is not None:
            write_image(output_path(out_dir, f"{stem}_cam", self.output_format), result.cam, pixel_size_nm=pixel_size)
        shape = image.data.shape
        self.view_rows += [{"image": stem, **v} for v in result.views]
        return {**self._row(stem, path), **result.summary, "height_px": shape[-2], "width_px": shape[-1],
                "patches": int(result.coverage.size), "views": len(result.views), "patch_px": round(result.patch_px, 4),
                "pixel_size_nm": pixel_size, "pixel_size_source": source,
                "cam_model": result.cam_model_name, "status": "ok", "error": ""}

    def failed(self, path: Path, error: str) -> dict[str, Any]:
        return {**self._row(file_stem(path), path), "status": "failed", "error": error}

    def _row(self, stem: str, path: Path) -> dict[str, Any]:
        return {"image": stem, "path": str(path), "model": self.loaded.info.name, "model_sha256": self.loaded.sha256}

    def write_tables(self, out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
        write_csv(out_dir / "homogeneity.csv", rows, SUMMARY_COLUMNS)
        write_csv(out_dir / "homogeneity_views.csv", self.view_rows)

    @classmethod
    def model_names(cls, options: dict[str, Any]) -> dict[str, str]:
        names = {"model": options.get("model") or DEFAULT_MODEL}
        if options.get("cam"):
            with contextlib.suppress(Exception):  # an unreadable model fails each file with its own message
                names["cam_model"] = cam_model_name(names["model"], options.get("cam_model"))
        return names
