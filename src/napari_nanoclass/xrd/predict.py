"""XRD inference: the space group of each pattern, how sure, the ranked top 5, and which peaks
decided (class activation over 2θ).

:func:`classify_steps` is the step generator the napari widget runs; :func:`analyse` runs it
synchronously (``napari_nanoclass.analyse_xrd``); :class:`XrdFiles` is ``nanoclass xrd`` and
``nanoclass batch xrd``: ``xrd.csv`` with one row per pattern and ``<stem>_xrd.png`` per pattern,
the pattern as the model saw it with the activation shaded under it.

A pattern is prepared as the model was trained (its 2θ grid, background removal and scaling,
stored in its metadata), so a model and its preparation can never be mismatched. A model that
carries a reference library (the ideal simulated pattern of each training compound, and the
measured patterns it was trained with, if any) gives the mean of the network's probabilities and
the nearest-reference ones (docs/xrd.md says why); the activation and the peak evidence explain
the network's part for the class given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_nanoclass.core.analysis import FileJob
from napari_nanoclass.core.devices import select_device
from napari_nanoclass.core.progress import CancelToken, Progress, ProgressCallback, Steps, run_sync
from napari_nanoclass.io.images import file_stem, write_csv
from napari_nanoclass.models.registry import LoadedModel, load_model
from napari_nanoclass.models.xrd_cnn import class_activation, peak_evidence
from napari_nanoclass.xrd import DEFAULT_MODEL, TOP
from napari_nanoclass.xrd.patterns import Pattern, PatternError, Preparation, prepare, read_pattern


@dataclass
class XrdResult:
    """One pattern's classification: the prepared input on the model's grid, the class
    probabilities (model's class order) and the activation of the predicted class over 2θ."""

    name: str
    two_theta: np.ndarray  # the model's grid, degrees
    signal: np.ndarray  # the prepared pattern, 0–1
    probabilities: np.ndarray
    class_names: list[str]
    activation: np.ndarray  # class activation (Grad-CAM) of the predicted class, 0–1 on the grid
    evidence: np.ndarray  # gradient × input of the predicted class, 0–1 on the grid: the deciding peaks
    model_name: str = ""
    model_sha256: str = ""

    @property
    def ranked(self) -> list[tuple[str, float]]:
        """(class, probability), most probable first."""
        order = np.argsort(-self.probabilities)
        return [(self.class_names[i], float(self.probabilities[i])) for i in order]

    @property
    def predicted(self) -> str:
        return self.ranked[0][0]

    @property
    def confidence(self) -> float:
        return self.ranked[0][1]

    def deciding_peaks(self, n: int = 3, threshold: float = 0.2, apart: float = 0.5) -> list[float]:
        """2θ of the ``n`` strongest maxima of the evidence above ``threshold`` and at least
        ``apart`` degrees from a stronger one (one split peak is one peak), strongest first: the
        peaks that decided, as numbers."""
        e = self.evidence
        peaks = np.flatnonzero((e[1:-1] >= e[:-2]) & (e[1:-1] > e[2:]) & (e[1:-1] >= threshold)) + 1
        chosen: list[float] = []
        for i in peaks[np.argsort(-e[peaks])]:
            if all(abs(self.two_theta[i] - t) >= apart for t in chosen):
                chosen.append(float(self.two_theta[i]))
        return [round(t, 2) for t in chosen[:n]]

    def row(self, top: int = TOP) -> dict[str, Any]:
        """The ``xrd.csv`` columns of this pattern: prediction, confidence, top ``top`` ranked,
        the deciding peaks."""
        row: dict[str, Any] = {"pattern": self.name, "space_group": self.predicted,
                               "confidence": round(self.confidence, 4)}
        for rank, (name, p) in enumerate(self.ranked[:top], 1):
            row[f"top{rank}"], row[f"p{rank}"] = name, round(p, 4)
        row["deciding_peaks"] = ";".join(f"{t:g}" for t in self.deciding_peaks())
        return row


def preparation(model: LoadedModel, lowpass: float | None = None) -> Preparation:
    """The model's preparation, with ``lowpass`` overriding its FFT low-pass if given."""
    prep = Preparation.from_dict(model.info.normalisation)
    return replace(prep, lowpass=lowpass) if lowpass is not None else prep


def as_pattern(pattern: Pattern | str | Path | Any) -> Pattern:
    """A Pattern from a Pattern, a file path, or a (2θ, intensity) pair of arrays."""
    if isinstance(pattern, Pattern):
        return pattern
    if isinstance(pattern, (str, Path)):
        return read_pattern(pattern)
    from napari_nanoclass.xrd.patterns import check_pattern

    two_theta, intensity = check_pattern(*pattern, source="pattern")
    return Pattern(two_theta, intensity, "pattern")


def classify_steps(pattern: Pattern | str | Path | Any, model: str | LoadedModel = DEFAULT_MODEL, *,
                   lowpass: float | None = None, device: str | None = None) -> Steps[XrdResult]:
    """Classify one pattern (a :class:`Pattern`, a file, or a (2θ, intensity) pair)."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model, select_device(device))
    pattern = as_pattern(pattern)
    yield Progress(0, 2, "preparing the pattern")
    prep = preparation(loaded, lowpass)
    signal = prepare(pattern, prep)
    yield Progress(1, 2, "classifying")
    x = torch.from_numpy(signal)[None, None].to(loaded.device)
    with torch.inference_mode():
        probabilities = loaded.module.probabilities(x)[0].cpu().numpy()
    target = torch.tensor([int(np.argmax(probabilities))], device=loaded.device)  # explain the class given
    activation = class_activation(loaded.module, x, target)[0].cpu().numpy()
    evidence = peak_evidence(loaded.module, x, target)[0].cpu().numpy()
    yield Progress(2, 2, "done")
    return XrdResult(pattern.name, prep.grid, signal, probabilities.astype(np.float64), list(loaded.info.class_names),
                     activation, evidence, loaded.info.name, loaded.sha256)


def analyse(pattern: Pattern | str | Path | Any, model: str | LoadedModel = DEFAULT_MODEL, *,
            progress: ProgressCallback | bool | None = None, cancel: CancelToken | None = None,
            **kwargs: Any) -> XrdResult:
    """Synchronous :func:`classify_steps` (Python API: ``napari_nanoclass.analyse_xrd``)."""
    return run_sync(classify_steps(pattern, model, **kwargs), progress=progress, cancel=cancel)


COLUMNS = ["pattern", "space_group", "confidence", *(f"{k}{i}" for i in range(1, TOP + 1) for k in ("top", "p")),
           "deciding_peaks", "points", "two_theta_min", "two_theta_max", "model", "model_sha256", "status", "error", "path"]


class XrdFiles(FileJob):
    """``nanoclass xrd``: ``xrd.csv`` (one row per pattern) and ``<stem>_xrd.png`` per pattern."""

    def __init__(self, model: str | None = None, *, lowpass: float | None = None, no_plots: bool = False,
                 device: str | None = None, output_format: str = "tif") -> None:
        self.loaded = load_model(model or DEFAULT_MODEL, select_device(device))
        if self.loaded.info.task != "pattern-classification":
            raise PatternError(f"model {self.loaded.info.name!r} is a {self.loaded.info.task} model, not a "
                               "diffraction-pattern classifier")
        self.lowpass, self.plots = lowpass, not no_plots  # output_format: XRD writes no images to format

    def process(self, image: Pattern, path: Path, out_dir: Path, workdir: Path) -> Steps[dict[str, Any]]:
        result = yield from classify_steps(image, self.loaded, lowpass=self.lowpass)
        if self.plots:
            from napari_nanoclass.xrd.plot import write_plot

            write_plot(out_dir / f"{image.name}_xrd.png", result)
        return {**self._row(image.name, path), **result.row(), "points": int(image.two_theta.size),
                "two_theta_min": float(image.two_theta[0]), "two_theta_max": float(image.two_theta[-1]),
                "status": "ok", "error": ""}

    def failed(self, path: Path, error: str) -> dict[str, Any]:
        return {**self._row(file_stem(path), path), "status": "failed", "error": error}

    def _row(self, stem: str, path: Path) -> dict[str, Any]:
        return {"pattern": stem, "path": str(path), "model": self.loaded.info.name, "model_sha256": self.loaded.sha256}

    def write_tables(self, out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
        write_csv(out_dir / "xrd.csv", rows, COLUMNS)

    @classmethod
    def model_names(cls, options: dict[str, Any]) -> dict[str, str]:
        return {"model": options.get("model") or DEFAULT_MODEL}

