"""Freed memory kept for reuse while a job runs, on Linux with glibc; handed back when it ends.

glibc's ``malloc`` serves every block above its mmap threshold (which adapts, up to 32 MiB) with
a fresh ``mmap`` and unmaps it when freed, so each such block's pages are zero-filled again by the
kernel, one page fault per 4 KiB, every time. A network's forward over a large image allocates and
frees tens of activations of 32 MiB and more, and on a CPU those faults were a large share of the
engine's time (docs/engine-benchmark.md). :func:`keep_freed_memory` raises the mmap threshold and
turns off trimming, so that freed blocks stay in the heap and are reused: a job then holds on to
the most it used at once (somewhat more than with fresh mappings, as blocks of other sizes
fragment the heap) until :func:`release_memory` hands what is free back to the system
(``malloc_trim``) when it ends.

A job that streams an image in several windows (read from or written to chunks) reads and writes
chunks between them, and those blocks split the large free ones, so the heap would grow with every
window; the engine therefore hands the free pages back after each window of such a job, and of a
stack's planes (blocks are still reused within a window's forward), which keeps its peak near one
window's. A 2-D array in memory predicted into one allocates the same blocks window after window
and keeps the heap across them, unless its peak must stay bounded: the liposome analysis of a large
image hands the heap back after each window of its blocks and after each block.

Threads other than the main one allocate from arenas of at most 64 MiB each, so there blocks
larger than that are still mapped afresh: a job run in a worker thread (napari's) gains less.

The setting is process-wide and stays once made: it changes where memory comes from, never a
result. ``NANOCLASS_MALLOC=system`` in the environment leaves glibc's defaults alone. Elsewhere
(macOS, Windows, musl) both functions do nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_BYTES = 1 << 30  # blocks up to this size come from the heap; larger ones are mapped and unmapped
NEVER = -1  # as M_TRIM_THRESHOLD: free() never trims the heap (a trimmed top is faulted in again)
OPT_OUT = "NANOCLASS_MALLOC"  # "system": leave the allocator's defaults alone


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it alone has ``mallopt`` and ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's soname; musl has none of these functions
        libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def keep_freed_memory() -> bool:
    """Let freed blocks up to ``KEEP_BYTES`` be reused instead of returned to the kernel, until
    :func:`release_memory`; once per process. Returns whether the allocator was changed (False:
    not glibc, opted out, or a glibc that refuses so high a threshold, which is then left alone:
    turning trimming off would also freeze its adaptive threshold at the lowest value)."""
    libc = _glibc()
    if libc is None or os.environ.get(OPT_OUT, "").lower() == "system":
        return False
    if not libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES):
        return False
    return bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER))


def release_memory() -> None:
    """Hand the heap's free pages back to the system: at the end of a job in a process that lives
    on (napari, a notebook), so what the job kept for reuse does not stay with it, and between the
    windows of a streamed image or a stack (docs/engine.md, "Memory")."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def runs_within(items: Iterable[T], cost: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    """``items`` in order, in runs whose ``cost`` adds up to at most ``limit`` (an item costlier
    than that alone): work batched to save per-call overhead, with the temporaries of a batch,
    which grow with its cost, kept within a bound."""
    run: list[T] = []
    total = 0
    for item in items:
        size = cost(item)
        if run and total + size > limit:
            yield run
            run, total = [], 0
        run.append(item)
        total += size
    if run:
        yield run
