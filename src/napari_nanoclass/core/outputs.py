"""Output folders that are safe to write into.

A run checks that its folder can be written before any compute (not after an hour of it), holds
the folder for itself while it writes (a second run into the same folder is refused at once,
never interleaved), and writes only to paths that stay inside the folder.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".nanoclass.lock"


class OutputError(RuntimeError):
    """An output folder cannot be used (not writable, or another run is writing into it)."""


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it; OutputError if not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nanoclass-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write results here ({exc.strerror or exc}); "
                          "choose another --out or fix its permissions") from exc
    return folder


@contextmanager
def claim(folder: str | Path) -> Iterator[Path]:
    """Hold ``folder`` for this run: checked writable, then locked (``.nanoclass.lock``, an OS lock
    that a crashed or killed run releases by itself). Another run holding it → OutputError."""
    from filelock import FileLock, Timeout

    folder = check_writable(folder)
    lock = FileLock(folder / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutputError(f"{folder}: another nanoclass run is writing into this folder; wait for it to finish "
                          "or choose another --out") from None
    try:
        yield folder
    finally:
        lock.release()


def inside(folder: str | Path, name: str) -> Path:
    """``folder / name``, refusing a name that would lead out of ``folder`` (``..``, a path)."""
    folder = Path(folder)
    path = folder / name
    if not name or path.resolve().parent != folder.resolve():
        raise OutputError(f"{name!r} is not a plain name inside {folder}; refusing to write there")
    return path
