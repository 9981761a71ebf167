"""Atomic outputs: nothing that looks complete is ever only half written.

Every file or folder napari-nanoclass writes goes to a temporary sibling first and is renamed
into place only when complete (``os.replace`` is atomic on one filesystem), so a crash, a kill or
a Ctrl-C leaves either the old result or none, never a truncated one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write a file or folder to; move it onto ``target`` on success.

    The temporary name keeps the target's suffix (``x.partial-123.tif``) so libraries that pick
    a format from the extension still do the right thing.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}{PARTIAL_SUFFIX}-{os.getpid()}{target.suffix}")
    _remove(tmp)
    try:
        yield tmp
        replace(tmp, target)
    finally:
        _remove(tmp)


def replace(new: Path, target: Path) -> None:
    """Move ``new`` onto ``target``. A folder cannot be replaced in one step, so an old one is
    first renamed aside and removed only once the new one is in place: a crash in between leaves
    it as ``.<name>.old``, never lost."""
    if not (target.is_dir() and new.is_dir()):
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old")
    _remove(old)
    os.replace(target, old)
    os.replace(new, target)
    _remove(old)
