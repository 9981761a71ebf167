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


def patch_map_placement(patch: int, scale: Sequence[float], translate: Sequence[float]
                        ) -> tuple[list[float], list[float]]:
    """Scale and translate that lay a patch map over an image shown at ``scale``/``translate``:
    one map pixel spans ``patch`` image pixels, shifted so its corner meets its patch's corner
    (napari puts pixel centres at integer coordinates). Leading (plane) axes keep the image's."""
    lead_scale, lead_translate = list(scale[:-2]), list(translate[:-2])
    yx_scale = [float(s) * patch for s in scale[-2:]]
    yx_translate = [float(t) + float(s) * (patch - 1) / 2 for s, t in zip(scale[-2:], translate[-2:])]
    return [*lead_scale, *yx_scale], [*lead_translate, *yx_translate]


def patch_map_pixels(grid: Any, patch: int, shape: Sequence[int]) -> Any:
    """A patch map (…, rows, cols) at image resolution, cropped to the image's (Y, X) ``shape``:
    every pixel holds its patch's value. Drawn at patch resolution, the last row and column of
    patches (partly outside the image) ran past the image's edge; this stops where the image does.
    Lazy (dask), so a large image's map costs no memory until a view of it is drawn."""
    lazy = da.from_array(np.asarray(grid), chunks=-1)
    full = da.repeat(da.repeat(lazy, int(patch), axis=-2), int(patch), axis=-1)
    return full[..., : int(shape[-2]), : int(shape[-1])]


def check_min_size(shape: Sequence[int], minimum: int, name: str, model: str, why: str) -> None:
    """Refuse an image whose (Y, X) is smaller than a model's minimum before any compute: below
    it the result is mostly padding (a 20×20 crop "100 % mitochondria"), not a measurement."""
    if min(int(s) for s in shape[-2:]) < minimum:
        raise ValueError(f"{name}: image of {tuple(int(s) for s in shape[-2:])} px is smaller than {model!r} needs "
                         f"({minimum}×{minimum} px at the model's pixel size: {why}); use a larger image or region")
