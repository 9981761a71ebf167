"""The compute core stays free of napari and Qt, so it runs in scripts, CLI and dask workers."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import napari_nanoclass

GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy", "magicgui")


def test_compute_core_imports_neither_napari_nor_qt():
    core = [m.name for m in pkgutil.walk_packages(napari_nanoclass.__path__, "napari_nanoclass.")
            if "widgets" not in m.name]
    assert "napari_nanoclass.homogeneity" in core and "napari_nanoclass.engine" in core
    code = ("import importlib, sys\n"
            f"for name in {core!r}: importlib.import_module(name)\n"
            f"loaded = sorted(k for k in sys.modules if k.split('.')[0] in {GUI!r})\n"
            "print(loaded)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"core modules pulled in GUI packages: {out}"
