"""Make the screenshots in docs/images: the Segment, Fibre homogeneity and Liposomes widgets run on the bundled
samples, and the Batch folder dock run twice over quarters of the bundled section.

    xvfb-run -a .venv/bin/python scripts/screenshot.py
"""

import tempfile
from pathlib import Path

import napari
import numpy as np
import tifffile

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


def shoot(sample: str, widget_name: str, filename: str) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.open_sample("napari-nanoclass", sample)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-nanoclass", widget_name)
    widget.runner.synchronous = True
    widget.run()
    if widget_name == "Segment":
        viewer.layers[-1].opacity = 0.45
    napari.qt.get_qapp().processEvents()  # let the dock's labels take the size of their new text
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
    napari.qt.get_qapp().processEvents()
    viewer.screenshot(str(IMAGES / filename), canvas_only=False, flash=False)
    print(f"wrote {IMAGES / filename}")
    viewer.close()


shoot("drosophila", "Segment", "segment-widget.png")
shoot("sem_fibres", "Fibre homogeneity", "homogeneity-widget.png")
shoot("liposomes", "Liposomes", "liposome-widget.png")
shoot_batch()
