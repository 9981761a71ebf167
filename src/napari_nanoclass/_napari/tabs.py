"""One dock with a tab per analysis: five docks opened side by side stack into a window taller
than a screen, so the plugin also offers them all in one tabbed dock.

The tabs are the plugin's own widget contributions (``napari.yaml``), so a new dock appears here
without being listed twice. Each is built the first time its tab is shown (opening the dock
imports no analysis it does not show) and scrolls inside its tab instead of stretching the window.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QScrollArea, QTabWidget

from napari_nanoclass._napari.common import narrow_choices

MANIFEST = Path(__file__).resolve().parents[1] / "napari.yaml"
SELF = "napari-nanoclass.tabs_widget"


def dock_contributions() -> list[tuple[str, str]]:
    """(display name, ``module:Class``) of every dock widget the plugin contributes, this one excepted."""
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    python_names = {c.id: c.python_name for c in manifest.contributions.commands or []}
    return [(w.display_name, python_names[w.command]) for w in manifest.contributions.widgets or []
            if w.command != SELF]


def _widget_class(python_name: str) -> Any:
    module, name = python_name.split(":")
    return getattr(importlib.import_module(module), name)


class AnalysesWidget(QTabWidget):
    """Every napari-nanoclass dock as a tab of one dock."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.setUsesScrollButtons(True)  # the tab bar must not widen the dock: it would squeeze the canvas
        self.tabBar().setExpanding(False)
        self.viewer = napari_viewer
        self.contributions = dock_contributions()
        self.docks: dict[str, Any] = {}  # display name → the dock widget, once built
        for title, _ in self.contributions:
            area = QScrollArea()
            area.setWidgetResizable(True)
            area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            self.addTab(area, title)
        self.currentChanged.connect(self.build)
        self.build(0)

    def build(self, index: int) -> Any:
        """The dock of tab ``index``, built on first use."""
        title, python_name = self.contributions[index]
        if title not in self.docks:
            dock = _widget_class(python_name)(self.viewer)
            narrow_choices(getattr(dock, "native", dock))
            self.docks[title] = dock
            self.widget(index).setWidget(getattr(dock, "native", dock))
        return self.docks[title]
