"""Make the screenshots in docs/images: the Segment, Fibre homogeneity and Liposomes widgets run on the bundled
samples.

    xvfb-run -a .venv/bin/python scripts/screenshot.py
"""

from pathlib import Path

import napari

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


shoot("drosophila", "Segment", "segment-widget.png")
shoot("sem_fibres", "Fibre homogeneity", "homogeneity-widget.png")
shoot("liposomes", "Liposomes", "liposome-widget.png")
