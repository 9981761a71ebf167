"""Tile geometry: the windows an image is cut into and how each is read.

Dense prediction cuts a plane into equal windows (core + halo, aligned to the model's size
divisor, kept inside the image) so that they batch and tiled results equal whole-image inference;
patch classifiers use non-overlapping patches. Window parts past the border (rounding to the
divisor, edge patches) are filled by reflection.
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


def _axis_windows(length: int, tile: int, halo: int, divisor: int) -> list[tuple[int, int, int, int]]:
    """(read start, read end, core start, core end) along one axis; see :func:`dense_windows`."""
    padded = round_up(length, divisor)
    core = min(round_up(tile, divisor), padded)
    size = core + 2 * round_up(halo, divisor)
    if size >= padded:  # one window holds the whole axis: no tiling, no halo
        return [(0, padded, 0, length)]
    windows = []
    for start in range(0, length, core):
        read = min(max(start - (size - core) // 2, 0), padded - size)  # slid inside the image at its edges
        windows.append((read, read + size, start, min(start + core, length)))
    return windows


def dense_windows(shape: tuple[int, int], tile: int | tuple[int, int], halo: int, divisor: int) -> list[Window]:
    """Tiles covering ``shape``: cores of ``tile`` (a side, or (rows, cols); rounded up to a
    multiple of ``divisor``) read with ``halo``.

    All windows of one image have the same size, so they batch. Windows stay inside the image
    (rounded up to the divisor): at an edge a window slides inwards rather than reading a halo of
    reflected pixels, and an axis no longer than one window is read whole. Every window starts on
    the model's pooling grid and every core is ``halo`` away from its window's edges except at the
    image's own edges, so the tiled result equals one forward of the whole image (padded to the
    divisor) everywhere, the border included, while no pixel outside the image is computed.
    """
    (height, width), (tile_y, tile_x) = shape, (tile, tile) if isinstance(tile, int) else tile
    windows = []
    for y0, y1, cy0, cy1 in _axis_windows(height, tile_y, halo, divisor):
        for x0, x1, cx0, cx1 in _axis_windows(width, tile_x, halo, divisor):
            windows.append(Window(y0, y1, x0, x1, core=(slice(cy0, cy1), slice(cx0, cx1)),
                                  crop=(slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))))
    return windows


def plan_tile(shape: tuple[int, int], halo: int, divisor: int, max_window: int) -> tuple[int, int]:
    """The tile (core side) that covers ``shape`` with the fewest and then smallest windows no
    larger than ``max_window`` a side: an axis that fits in one window is read whole, a longer one
    is split into equal cores (not a fixed tile and a thin remainder, whose halo costs as much)."""
    halo = round_up(halo, divisor)
    core_limit = max(divisor, (max_window - 2 * halo) // divisor * divisor)
    cores = []
    for length in shape:
        padded = round_up(length, divisor)
        if padded <= max(max_window, core_limit):
            cores.append(padded)
        else:
            cores.append(round_up(-(-length // -(-length // core_limit)), divisor))
    return cores[0], cores[1]


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


MAP_CHUNK = 2048  # side of the blocks a patch map is drawn in: bounded memory for any image size


def _patch_index(pixels: np.ndarray, patch: float, n: int) -> np.ndarray:
    """Patch row (or column) of each pixel row (or column) in ``pixels``; ``patch`` may be
    fractional (an image rescaled to a model's pixel size), so it is not rounded, which would
    drift over a wide image."""
    return np.minimum((pixels / float(patch)).astype(np.int64), n - 1)


def _drawn(grid: Any, shape: Sequence[int], draw: Any, dtype: Any) -> Any:
    """A lazy (…, Y, X) image whose blocks ``draw(grid, ys, xs)`` paints from the patch ``grid``
    (…, rows, cols) for pixel rows ``ys`` and columns ``xs``."""
    grid = np.asarray(grid)
    full = (*grid.shape[:-2], int(shape[-2]), int(shape[-1]))
    chunks = (*(1,) * (grid.ndim - 2), min(MAP_CHUNK, full[-2]), min(MAP_CHUNK, full[-1]))  # a plane at a time

    def block(_b: np.ndarray, block_info: dict[Any, Any]) -> np.ndarray:
        *lead, (y0, y1), (x0, x1) = block_info[None]["array-location"]
        plane = grid[tuple(slice(a, b) for a, b in lead)]
        return draw(plane, np.arange(y0, y1), np.arange(x0, x1)).astype(dtype)

    return da.zeros(full, chunks=chunks, dtype=dtype).map_blocks(block, dtype=dtype)


def patch_map_pixels(grid: Any, patch: float, shape: Sequence[int]) -> Any:
    """A patch map (…, rows, cols) at image resolution over an image of (Y, X) ``shape``: every
    pixel holds its patch's value. Drawn at patch resolution, the last row and column of patches
    (partly outside the image) ran past the image's edge; this stops where the image does. Lazy
    (dask, in blocks), so a large image's map costs no memory until a view of it is drawn."""
    rows, cols = np.asarray(grid).shape[-2:]

    def draw(g: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return g[..., _patch_index(ys, patch, rows), :][..., _patch_index(xs, patch, cols)]

    return _drawn(grid, shape, draw, np.asarray(grid).dtype)


def patch_outline_pixels(mask: Any, patch: float, shape: Sequence[int], width: int) -> Any:
    """The outline, ``width`` pixels wide, of the regions the boolean patch ``mask`` (…, rows,
    cols) marks, at image resolution (uint8 0/1, lazy like :func:`patch_map_pixels`): a line
    around flagged patches leaves the micrograph inside them visible, which a colour wash hides.
    Lines run inside the regions and along the image's edge where a region meets it."""
    mask = np.asarray(mask, bool)
    rows, cols = mask.shape[-2:]
    height, breadth = int(shape[-2]), int(shape[-1])

    def index(pixels: np.ndarray, length: int, n: int) -> np.ndarray:
        inside = (pixels >= 0) & (pixels < length)
        return np.where(inside, _patch_index(np.clip(pixels, 0, length - 1), patch, n), -1)

    def draw(g: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        padded = np.pad(g, [(0, 0)] * (g.ndim - 2) + [(0, 1), (0, 1)])  # index -1 = outside: not flagged
        r, c = index(ys, height, rows), index(xs, breadth, cols)
        at = padded[..., r[:, None], c[None, :]]
        interior = at.copy()
        for dr in (index(ys - width, height, rows), index(ys + width, height, rows)):
            interior &= padded[..., dr[:, None], c[None, :]]
        for dc in (index(xs - width, breadth, cols), index(xs + width, breadth, cols)):
            interior &= padded[..., r[:, None], dc[None, :]]
        return at & ~interior

    return _drawn(mask, shape, draw, np.uint8)


def check_min_size(shape: Sequence[int], minimum: int, name: str, model: str, why: str) -> None:
    """Refuse an image whose (Y, X) is smaller than a model's minimum before any compute: below
    it the result is mostly padding (a 20×20 crop "100 % mitochondria"), not a measurement."""
    if min(int(s) for s in shape[-2:]) < minimum:
        raise ValueError(f"{name}: image of {tuple(int(s) for s in shape[-2:])} px is smaller than {model!r} needs "
                         f"({minimum}×{minimum} px at the model's pixel size: {why}); use a larger image or region")
