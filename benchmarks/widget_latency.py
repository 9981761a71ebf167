"""Progress and Cancel as a user sees them: each dock widget run threaded on its bundled sample with
the shipped models, as in napari.

    xvfb-run -a python benchmarks/widget_latency.py [--runs segment segment-tta homogeneity liposomes train batch]

Per run: the gaps between progress updates reaching the widget (median and largest, from the start
of the run until it ends), the time to the first update, and the Cancel latency — Cancel is pressed
``--cancel-after`` seconds into a second, identical run, and the time until the widget is idle
again (Run enabled, status "cancelled") is reported. Everything goes through the widgets' own
TaskRunner (napari thread worker), on napari's ViewerModel with a Qt application.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.components import ViewerModel
from qtpy.QtWidgets import QApplication


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    app = QApplication.instance()
    end = time.perf_counter() + timeout
    while not condition():
        app.processEvents()
        if time.perf_counter() > end:
            raise TimeoutError("the widget did not finish in time")
        time.sleep(0.002)


def _timed(widget: Any, cancel_after: float | None, timeout: float = 900) -> dict:
    """Start ``widget``'s run; record when progress arrives; optionally press Cancel."""
    runner = widget.runner
    stamps: list[float] = []
    messages: list[str] = []
    start = time.perf_counter()
    widget.run()
    runner.worker.yielded.connect(lambda step: (stamps.append(time.perf_counter()), messages.append(step.message)))
    pressed = None
    if cancel_after is not None:
        _wait(lambda: time.perf_counter() - start >= cancel_after or widget.run_button.enabled, timeout)
        pressed = time.perf_counter()
        runner.cancel_button.clicked.emit()
    _wait(lambda: widget.run_button.enabled, timeout)
    end = time.perf_counter()
    marks = [start, *stamps, end]
    gaps = np.diff(marks)
    after = (["(start)", *messages][int(gaps.argmax())])
    return {"longest_after": after, "seconds": end - start, "updates": len(stamps), "first_update": (stamps[0] - start) if stamps else None,
            "median_gap": float(np.median(gaps)), "max_gap": float(gaps.max()),
            "cancel_latency": None if pressed is None else end - pressed, "status": runner.status.value}


def _segment(viewer: ViewerModel, tta: bool) -> Any:
    from napari_nanoclass._napari.samples import drosophila_section
    from napari_nanoclass._napari.segmentation import SegmentWidget

    for data, kwargs, _kind in drosophila_section():
        viewer.add_image(data, **kwargs)
    widget = SegmentWidget(viewer)
    widget.tta.value = tta
    return widget


def _homogeneity(viewer: ViewerModel) -> Any:
    from napari_nanoclass._napari.homogeneity import HomogeneityWidget
    from napari_nanoclass._napari.samples import sem_fibres

    for data, kwargs, _kind in sem_fibres():
        viewer.add_image(data, **kwargs)
    return HomogeneityWidget(viewer)


def _liposomes(viewer: ViewerModel) -> Any:
    from napari_nanoclass._napari.liposomes import LiposomeWidget
    from napari_nanoclass._napari.samples import liposome_field

    for data, kwargs, kind in liposome_field():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = LiposomeWidget(viewer)
    widget.image.value = viewer.layers[0]
    return widget


def _train(viewer: ViewerModel) -> Any:
    from napari_nanoclass._napari.segmentation import TrainWidget
    from napari_nanoclass.segmentation.data import DROSOPHILA_CLASSES
    from napari_nanoclass.segmentation.predict import segment

    for data, kwargs, _kind in __import__("napari_nanoclass._napari.samples", fromlist=["x"]).drosophila_section():
        viewer.add_image(data, **kwargs)
    labels = np.asarray(segment(viewer.layers[0].data).labels).astype(np.uint8)  # as if corrected by hand
    viewer.add_labels(labels, name="corrected")
    widget = TrainWidget(viewer)
    widget.base.value = "drosophila-seunet"
    widget.classes.value = ",".join(DROSOPHILA_CLASSES)
    widget.save_as.value = "latency-check"
    widget.epochs.value, widget.iters.value = 2, 10
    return widget


def _batch(viewer: ViewerModel) -> Any:
    """The Batch folder dock segmenting the bundled section and its three rotations (1024² each),
    redoing finished inputs so that the second, cancelled run has work to do."""
    import tempfile
    from pathlib import Path

    import tifffile

    from napari_nanoclass._napari.batch import BatchWidget
    from napari_nanoclass._napari.samples import drosophila_section

    folder = Path(tempfile.mkdtemp(prefix="nanoclass-latency-"))
    (folder / "in").mkdir()
    (section, _kwargs, _kind), = drosophila_section()
    for k in range(4):
        tifffile.imwrite(folder / "in" / f"section_{k}.tif", np.rot90(np.asarray(section), k))
    widget = BatchWidget(viewer)
    widget.folder.value, widget.out.value = str(folder / "in"), str(folder / "out")
    widget.overwrite.value = True
    return widget


RUNS: dict[str, Callable[[ViewerModel], Any]] = {
    "segment": lambda v: _segment(v, False), "segment-tta": lambda v: _segment(v, True),
    "homogeneity": _homogeneity, "liposomes": _liposomes, "train": _train, "batch": _batch,
}


def main() -> None:
    # the training run registers a model and the docks remember their settings: in a throw-away
    # home, never the user's (the shipped models are found in the package either way)
    os.environ["NANOCLASS_HOME"] = tempfile.mkdtemp(prefix="nanoclass-latency-")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    ap.add_argument("--cancel-after", type=float, default=0.5, help="seconds into the second run")
    args = ap.parse_args()
    QApplication.instance() or QApplication([])
    print("| widget run | seconds | updates | first update (s) | median / largest gap (s) | Cancel latency (s), status |")
    print("|---|---|---|---|---|---|")
    for name in args.runs:
        widget = RUNS[name](ViewerModel())
        full = _timed(widget, None)
        cancelled = _timed(widget, args.cancel_after)
        first = "—" if full["first_update"] is None else f"{full['first_update']:.2f}"
        print(f"| {name} | {full['seconds']:.1f} | {full['updates']} | {first} | {full['median_gap']:.2f} / "
              f"{full['max_gap']:.2f} (after {full['longest_after']!r}) | {cancelled['cancel_latency']:.2f} "
              f"({cancelled['status'][:40]}) |", flush=True)


if __name__ == "__main__":
    main()
