"""Make docs/images/segment-widget.png: the Segment widget run on the bundled sample.

    xvfb-run -a .venv/bin/python scripts/screenshot.py
"""

from pathlib import Path

import napari

viewer = napari.Viewer(show=True)
viewer.window.resize(1400, 900)
viewer.open_sample("napari-nanoclass", "drosophila")
_dock, widget = viewer.window.add_plugin_dock_widget("napari-nanoclass", "Segment")
widget.runner.synchronous = True
widget.run()
viewer.layers[-1].opacity = 0.45
out = Path(__file__).resolve().parent.parent / "docs/images/segment-widget.png"
viewer.screenshot(str(out), canvas_only=False, flash=False)
print(f"wrote {out}")
viewer.close()
