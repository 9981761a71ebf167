"""Make the screenshots in docs/images: the Segment, Fibre homogeneity and Liposomes widgets run on the bundled
samples, the Liposomes widget's explanation maps, the Liposomes widget leaving a marked carbon film out,
and the Batch folder dock run twice over quarters of the bundled section.

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python scripts/screenshot.py [FILENAME ...]

Without names, all of them.
"""

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
import numpy as np
import tifffile

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
# docks start from their defaults, not from settings this user's docks remembered
os.environ["NANOCLASS_HOME"] = tempfile.mkdtemp(prefix="nanoclass-screenshot-")


def settle() -> None:
    """Let the docks lay out again: a label that grows posts a layout request that its dock handles
    only on a later pass of the event loop."""
    for _ in range(3):
        napari.qt.get_qapp().processEvents()


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
    settle()
    viewer.screenshot(str(IMAGES / filename), canvas_only=False, flash=False)
    print(f"wrote {IMAGES / filename}")
    viewer.close()


def shoot_batch(filename: str = "batch-widget.png") -> None:
    """Three quarters of the section segmented, then the fourth and a file that is not an image
    added and the dock run again: its list shows inputs skipped, done and failed."""
    folder = Path(tempfile.mkdtemp(prefix="nanoclass-screenshot-"))
    (folder / "sections").mkdir()
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    (section,) = viewer.open_sample("napari-nanoclass", "drosophila")
    quarters = [np.asarray(section.data)[y:y + 512, x:x + 512] for y in (0, 512) for x in (0, 512)]
    viewer.layers.clear()
    for i, quarter in enumerate(quarters[:3]):
        tifffile.imwrite(folder / "sections" / f"section_q{i + 1}.tif", quarter)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-nanoclass", "Batch folder")
    widget.folder.value, widget.out.value = str(folder / "sections"), str(folder / "results")
    widget.runner.synchronous = True
    widget.run()
    tifffile.imwrite(folder / "sections" / "section_q4.tif", quarters[3])
    (folder / "sections" / "notes.tif").write_text("a note saved as .tif")
    widget.run()
    viewer.layers[-1].opacity = 0.45
    settle()
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
    settle()
    viewer.reset_view()


def carbon_film(widget: Any) -> None:
    """The real micrograph with a dark carbon film over its left edge, marked by a rectangle in a
    Shapes layer and chosen under 'exclude'."""
    viewer = widget.viewer
    image = viewer.layers[0]
    image.data = np.where(np.arange(image.data.shape[1]) < 300, image.data * 0.4, image.data).astype(np.float32)
    height = image.data.shape[0]
    viewer.add_shapes([[[0, 0], [0, 310], [height - 1, 310], [height - 1, 0]]], shape_type="rectangle",
                      name="carbon film", edge_color="yellow", face_color="transparent", edge_width=6,
                      scale=image.scale)  # drawn on the image, as its pixels
    widget.exclude.value = viewer.layers["carbon film"]


SHOTS = {
    "segment-widget.png": lambda name: shoot("drosophila", "Segment", name, after=translucent_labels),
    "homogeneity-widget.png": lambda name: shoot("sem_fibres", "Fibre homogeneity", name),
    "liposome-widget.png": lambda name: shoot("liposomes", "Liposomes", name),
    "liposome-explanation.png": lambda name: shoot("liposomes", "Liposomes", name, before=explain,
                                                   after=outlined_objects),
    "liposome-exclude.png": lambda name: shoot("cryoem_vesicles", "Liposomes", name, before=carbon_film,
                                               after=translucent_labels),
    "batch-widget.png": shoot_batch,
}

for filename in sys.argv[1:] or SHOTS:
    SHOTS[filename](filename)
