"""A toy analysis (a global threshold) registered by test_layout to show that a new analysis needs
only its own package and one registration: the command line, batch and reader pick it up. Its
``pause`` makes each input take that long without a step of its own, as a slow model does, for
tests of what a batch run does meanwhile (heartbeats, Cancel)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_nanoclass.core.analysis import Analysis, FileJob, Option
from napari_nanoclass.core.progress import Progress, Steps
from napari_nanoclass.io.images import (
    file_stem,
    find_output,
    output_path,
    read_label_image,
    write_csv,
    write_label_image,
)

ANALYSIS = Analysis(
    name="threshold", help="foreground above a fraction of the intensity range", outputs="output folder",
    job="tests.toy_analysis:ThresholdFiles", reader="tests.toy_analysis:layers", overview="{stem}_labels",
    overview_kind="labels",
    options=(Option("level", "--level", "fraction of the range", kind=float, default=0.5),
             Option("pause", "--pause", "seconds each input takes", kind=float, default=0.0, low=0, high=60,
                    changes_result=False)),
)


class ThresholdFiles(FileJob):
    def __init__(self, level: float = 0.5, pause: float = 0.0, *, device: str | None = None,
                 output_format: str = "tif") -> None:
        self.level, self.pause, self.output_format = level, pause, output_format or "tif"

    def process(self, image: Any, path: Path, out_dir: Path, workdir: Path) -> Steps[dict[str, Any]]:
        data = np.asarray(image.data, np.float32)
        yield Progress(0, 1, "thresholding")
        time.sleep(self.pause)
        labels = (data > data.min() + self.level * (data.max() - data.min())).astype(np.uint8)
        write_label_image(output_path(out_dir, f"{image.name}_labels", self.output_format), labels, image.data,
                          name="foreground")
        return {"image": image.name, "path": str(path), "level": self.level, "foreground": float(labels.mean()),
                "status": "ok", "error": ""}

    def failed(self, path: Path, error: str) -> dict[str, Any]:
        return {"image": file_stem(path), "path": str(path), "status": "failed", "error": error}

    def write_tables(self, out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
        write_csv(out_dir / "threshold.csv", rows)

    @classmethod
    def model_names(cls, options: dict[str, Any]) -> dict[str, str]:
        return {}


def layers(folder: Path, stem: str, result: dict[str, Any]) -> list[Any]:
    return [(read_label_image(find_output(folder, f"{stem}_labels"))[0], {"name": f"{stem} threshold"}, "labels")]
