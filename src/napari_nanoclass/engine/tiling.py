"""Tile geometry: the windows an image is cut into and how each is read.

Dense prediction cuts a plane into equal windows (core + halo, aligned to the model's size
divisor) so that they batch and tiled results equal whole-image inference away from the border;
patch classifiers use non-overlapping patches. Windows past the border are filled by reflection.
Pure numpy: no torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np


@dataclass(frozen=True)
class Window:
    """A read window (may extend past the image; filled by reflection) and the core it yields."""

    y0: int
    y1: int
    x0: int
    x1: int
    core: tuple[slice, slice]  # where the kept part goes in the output (plane coordinates)
    crop: tuple[slice, slice]  # which part of the model output is kept


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def dense_windows(shape: tuple[int, int], tile: int, halo: int, divisor: int) -> list[Window]:
    """Tiles covering ``shape``: cores of ``tile`` (≤ image, multiple of ``divisor``) plus halo.

    All windows of one image have the same size, so they batch; cores start at multiples of the
    tile size and the halo is a multiple of the divisor, so every window starts on the model's
    pooling grid — the condition for tiled == whole-image results.
    """
    halo = round_up(halo, divisor)
    height, width = shape
    th = min(round_up(tile, divisor), round_up(height, divisor))
    tw = min(round_up(tile, divisor), round_up(width, divisor))
    windows = []
    for y in range(0, height, th):
        for x in range(0, width, tw):
            h, w = min(th, height - y), min(tw, width - x)
            windows.append(
                Window(
                    y - halo, y + th + halo, x - halo, x + tw + halo,
                    core=(slice(y, y + h), slice(x, x + w)),
                    crop=(slice(halo, halo + h), slice(halo, halo + w)),
                )
            )
    return windows


def patch_windows(shape: tuple[int, int], patch: int) -> list[Window]:
    """Non-overlapping patches; ``core`` indexes the patch map, ``crop`` the valid pixels."""
    height, width = shape
    windows = []
    for i, y in enumerate(range(0, height, patch)):
        for j, x in enumerate(range(0, width, patch)):
            windows.append(
                Window(
                    y, y + patch, x, x + patch,
                    core=(slice(i, i + 1), slice(j, j + 1)),
                    crop=(slice(0, min(patch, height - y)), slice(0, min(patch, width - x))),
                )
            )
    return windows


def read_window(plane: Any, window: Window) -> np.ndarray:
    """Read a window of a (lazy) plane; parts outside the image are filled by reflection."""
    height, width = plane.shape
    ya, yb = max(window.y0, 0), min(window.y1, height)
    xa, xb = max(window.x0, 0), min(window.x1, width)
    block = np.asarray(plane[ya:yb, xa:xb], dtype=np.float32)
    pad = ((ya - window.y0, window.y1 - yb), (xa - window.x0, window.x1 - xb))
    if any(any(p) for p in pad):
        block = np.pad(block, pad, mode="reflect" if min(block.shape) > 1 else "edge")
    return block


class _Plane:
    """Plane ``z`` of a lazy (zarr / TIFF) stack: slicing reads only that region.

    Indexing a zarr stack with ``[z]`` would read the whole plane, and a dask wrapper would build
    a task graph for every tile read; this forwards each tile's slices straight to the store.
    """

    def __init__(self, array: Any, z: int) -> None:
        self.array, self.z = array, z
        self.shape, self.dtype, self.ndim = tuple(array.shape[1:]), array.dtype, 2
        self.chunks = tuple(array.chunks[1:])

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        return self.array[(self.z, *key)]


def planes(data: Any) -> list[Any]:
    """The 2-D planes of an image, none of them read into memory before its tiles are needed."""
    if data.ndim == 2:
        return [data]
    if isinstance(data, (np.ndarray, da.Array)):
        return [data[z] for z in range(data.shape[0])]
    return [_Plane(data, z) for z in range(data.shape[0])]


def patch_coverage(shape: tuple[int, int], patch: int) -> np.ndarray:
    """Fraction of each patch that lies inside an image of ``shape`` (1 except at the edges)."""
    rows = np.minimum(patch, shape[0] - np.arange(0, shape[0], patch)) / patch
    cols = np.minimum(patch, shape[1] - np.arange(0, shape[1], patch)) / patch
    return np.outer(rows, cols).astype(np.float32)


def patch_map_placement(patch: int, scale: Sequence[float], translate: Sequence[float]
                        ) -> tuple[list[float], list[float]]:
    """Scale and translate that lay a patch map over an image shown at ``scale``/``translate``:
    one map pixel spans ``patch`` image pixels, shifted so its corner meets its patch's corner
    (napari puts pixel centres at integer coordinates). Leading (plane) axes keep the image's."""
    lead_scale, lead_translate = list(scale[:-2]), list(translate[:-2])
    yx_scale = [float(s) * patch for s in scale[-2:]]
    yx_translate = [float(t) + float(s) * (patch - 1) / 2 for s, t in zip(scale[-2:], translate[-2:])]
    return [*lead_scale, *yx_scale], [*lead_translate, *yx_translate]
