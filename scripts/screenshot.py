"""Make the screenshots in docs/images: the Segment, Fibre homogeneity and Liposomes widgets run on the bundled
samples, and the Liposomes widget's explanation maps.

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python scripts/screenshot.py [FILENAME ...]

Without names, all of them.
"""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


def shoot(sample: str, widget_name: str, filename: str, before: Callable[[Any], None] = lambda _w: None,
          after: Callable[[Any, Any], None] = lambda _v, _w: None) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.open_sample("napari-nanoclass", sample)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-nanoclass", widget_name)
    widget.runner.synchronous = True
    before(widget)
    widget.run()
    after(viewer, widget)
    napari.qt.get_qapp().processEvents()  # let the dock's labels take the size of their new text
    viewer.screenshot(str(IMAGES / filename), canvas_only=False, flash=False)
    print(f"wrote {IMAGES / filename}")
    viewer.close()


def translucent_labels(viewer: Any, _widget: Any) -> None:
    viewer.layers[-1].opacity = 0.45


def explain(widget: Any) -> None:
    widget.explain.value = True


def outlined_objects(viewer: Any, _widget: Any) -> None:
    """Objects as outlines in their class colours, so the map inside them is seen whole, on a
    canvas wide enough for the whole field."""
    viewer.layers["simulated liposomes liposomes"].contour = 2
    viewer.window.resize(1600, 1100)
    napari.qt.get_qapp().processEvents()
    viewer.reset_view()


SHOTS = {
    "segment-widget.png": lambda name: shoot("drosophila", "Segment", name, after=translucent_labels),
    "homogeneity-widget.png": lambda name: shoot("sem_fibres", "Fibre homogeneity", name),
    "liposome-widget.png": lambda name: shoot("liposomes", "Liposomes", name),
    "liposome-explanation.png": lambda name: shoot("liposomes", "Liposomes", name, before=explain,
                                                   after=outlined_objects),
}

for filename in sys.argv[1:] or SHOTS:
    SHOTS[filename](filename)
