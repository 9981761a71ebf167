"""Where a user's napari-nanoclass state lives, and the dock widgets' remembered settings.

Everything goes under one folder, ``$NANOCLASS_HOME`` (default
``~/.local/share/napari-nanoclass``): registered models in ``models/``, each dock's last
settings in ``settings/<dock>.json``. A settings file that cannot be read is ignored with a
warning (a dock must open with its defaults rather than not at all); one is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from napari_nanoclass.core.atomic import atomic_path

log = logging.getLogger("napari_nanoclass")


def home_dir() -> Path:
    """The user's napari-nanoclass folder (``$NANOCLASS_HOME``, tests point it elsewhere)."""
    home = os.environ.get("NANOCLASS_HOME")
    return Path(home) if home else Path.home() / ".local" / "share" / "napari-nanoclass"


def settings_file(name: str) -> Path:
    return home_dir() / "settings" / f"{name}.json"


def load_settings(name: str) -> dict[str, Any]:
    """The settings saved under ``name``, or {} when there are none or they cannot be read."""
    path = settings_file(name)
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: ignored, not readable as settings (%s)", path, exc)
        return {}
    return values if isinstance(values, dict) else {}


def save_settings(name: str, values: dict[str, Any]) -> None:
    with atomic_path(settings_file(name)) as tmp:
        tmp.write_text(json.dumps(values, indent=1, sort_keys=True, default=str))  # paths as text
