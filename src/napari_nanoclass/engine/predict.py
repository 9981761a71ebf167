"""Running a model over an image: any image size, through any torch model, headless or in napari.

Two ways to push an image through a model, both built on one tile iterator:

* :func:`predict_dense` — per-pixel outputs (class probabilities, labels). The image is cut into
  tiles whose cores are aligned to the model's size divisor; each tile is read with a halo of at
  least the model's receptive radius (reflect padding beyond the image border), predicted in
  batches, and only its core is kept. Away from the border the result therefore equals
  whole-image inference, whatever the tile and batch size.
* :func:`predict_patches` — one output per non-overlapping patch (patch classifiers), as a
  low-resolution map aligned with the image; edge patches are reflect-padded and their valid
  fraction is returned so aggregations can weight them.

Inputs are numpy, dask or zarr arrays (2-D, or stacks processed plane by plane). With ``out`` a
path, the result is streamed into a zarr array chunk by chunk, so peak memory does not grow with
the image. Normalisation statistics come from the whole plane (see :func:`images.image_stats`),
never from a tile. Every function here is a step generator (see :mod:`.progress`): it yields
after each batch, which is where cancellation takes effect.

No napari or Qt import here: this runs in scripts, CLI workers and dask workers alike.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch import nn
from torch.nn import functional as F

from napari_nanoclass.core.atomic import atomic_path
from napari_nanoclass.core.devices import select_device
from napari_nanoclass.core.memory import keep_freed_memory, release_memory
from napari_nanoclass.core.progress import Progress, Steps
from napari_nanoclass.engine.tiling import (
    Window,
    dense_windows,
    patch_windows,
    plan_tile,
    planes,
    read_window,
    round_up,
)
from napari_nanoclass.io.images import image_stats
from napari_nanoclass.models.fusion import fused

Postprocess = Callable[[torch.Tensor], torch.Tensor]


def softmax(logits: torch.Tensor) -> torch.Tensor:
    return F.softmax(logits.float(), dim=1)


def labels_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Class index per pixel, (N, 1, H, W) uint8, as ``argmax`` over channels (first maximum wins).

    A running maximum over the few channels: torch's ``argmax`` along the channel axis reduces
    over a strided dimension and cost ~60 ms per 584² tile on a laptop CPU, a quarter of the
    forward pass; this costs a few milliseconds.
    """
    best = logits[:, 0]
    index = torch.zeros(best.shape, dtype=torch.uint8, device=logits.device)
    for c in range(1, logits.shape[1]):
        better = logits[:, c] > best
        best = torch.where(better, logits[:, c], best)
        index[better] = c
    return index[:, None]


def with_logit_bias(postprocess: Postprocess | None, bias: Sequence[float] | None) -> Postprocess | None:
    """``postprocess`` applied to the logits plus a per-class ``bias`` (a model's calibrated
    decision offsets, :attr:`ModelInfo.logit_bias`); ``postprocess`` itself when there is none."""
    if not bias or not any(bias):
        return postprocess
    shift = torch.tensor(bias, dtype=torch.float32).view(1, -1, 1, 1)

    def shifted(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float() + shift.to(logits.device)
        return logits if postprocess is None else postprocess(logits)

    return shifted


# -- running the model --------------------------------------------------------------------------


PRECISIONS = ("float32", "bfloat16", "float16")


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Reduced precision is opt-in: it is faster, but a few labels may change (docs/engine.md).
    CPUs compute bfloat16 only; float16 there would be emulated, slower than float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision is one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "float32":
        return contextlib.nullcontext()
    if device.type == "cpu" and precision == "float16":
        raise ValueError("float16 runs on GPUs only; on a CPU use precision='bfloat16'")
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


DIHEDRAL = [(k, flip) for k in range(4) for flip in (False, True)]  # the 8 rotations and flips of a square


def dihedral_views(model: nn.Module, x: torch.Tensor,
                   context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                   ) -> Iterator[torch.Tensor | None]:
    """:func:`dihedral_mean` one view at a time: yields None after each of the first seven views and
    the mean after the eighth, so that a caller can report progress and stop between views (with
    test-time augmentation one tile costs eight forwards). Each view runs inside ``context()``,
    entered and left around it, so no torch mode stays switched on while the caller runs."""
    total = torch.zeros(())
    for i, (k, flip) in enumerate(DIHEDRAL):
        with context():
            view = torch.rot90(x, k, (2, 3))
            y = model(view.flip(3) if flip else view).float()
            if y.ndim == 4:
                y = torch.rot90(y.flip(3) if flip else y, -k, (2, 3))
            total = total + y
        yield total / len(DIHEDRAL) if i == len(DIHEDRAL) - 1 else None


def dihedral_mean(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: the mean of the model's outputs over the 8 rotations and flips of
    ``x``, each turned back (spatial outputs) before averaging. EM texture has no preferred
    orientation, so the 8 views are equally valid inputs and their mean is a steadier prediction
    (docs/segmentation.md gives its gain, at 8× the compute)."""
    *_, mean = dihedral_views(model, x)
    return mean


@functools.lru_cache(maxsize=4)
def compiled(model: nn.Module) -> nn.Module:
    """``model`` through ``torch.compile``, once per model: compiling is slow (it happens on the
    first window, which progress then waits for) and pays off only over many windows, so it is
    opt-in and kept for the next image of a run. Windows of one size share one graph; another
    window or batch size compiles another."""
    return torch.compile(model, dynamic=False)


def default_batch_size(device: torch.device) -> int:
    """Batching helps GPUs; on a CPU one tile per forward keeps cancel and progress snappy."""
    return 1 if device.type == "cpu" else 8


def iter_batches(
    model: nn.Module,
    plane: Any,
    windows: Sequence[Window],
    *,
    mean: float,
    std: float,
    batch_size: int,
    device: torch.device,
    precision: str = "float32",
    postprocess: Postprocess | None = None,
    tta: bool = False,
) -> Iterator[tuple[Sequence[Window], np.ndarray | None]]:
    """Yield (windows, outputs) batch by batch: normalised windows through ``model`` in eval mode.
    With ``tta`` the outputs are averaged over the 8 rotations and flips (:func:`dihedral_views`),
    and (windows, None) is yielded after each of the first seven views: a step to report."""
    model.eval()

    def inference() -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(_autocast(device, precision))
        return stack

    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        x = np.stack([read_window(plane, w) for w in batch])[:, None]
        x = torch.from_numpy((x - mean) / std).to(device)
        if tta:
            for y in dihedral_views(model, x, inference):
                if y is None:
                    yield batch, None
        else:
            with inference():
                y = model(x)
        if postprocess is not None:
            with inference():
                y = postprocess(y)
        yield batch, y.float().cpu().numpy() if y.is_floating_point() else y.cpu().numpy()


def activation_bytes_per_pixel(model: nn.Module) -> float:
    """Bytes of all module outputs of one forward per input pixel: an upper bound of inference
    memory (most outputs are freed before the next is made), measured once per model on a small
    input and kept on the module."""
    cached = getattr(model, "_nanoclass_bytes_per_pixel", None)
    if cached is not None:
        return cached
    side = max(64, 4 * int(getattr(model, "size_divisor", 1)))
    first = next(model.parameters(), torch.empty(0))
    total = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        total += sum(t.numel() * t.element_size() for t in (output if isinstance(output, tuple) else (output,))
                     if torch.is_tensor(t))

    hooks = [m.register_forward_hook(count) for m in model.modules() if m is not model]
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, 1, side, side, device=first.device, dtype=first.dtype))
    finally:
        for hook in hooks:
            hook.remove()
    model._nanoclass_bytes_per_pixel = max(total / side**2, 4.0)
    return model._nanoclass_bytes_per_pixel


def default_memory_budget(device: torch.device) -> int:
    """Bytes the engine may fill with one window's activations: half the free GPU memory, or half
    the machine's RAM (the per-pixel estimate is an upper bound, so this leaves room to spare)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # not POSIX
        return 4 * 2**30


CPU_WINDOW = 2048  # largest window side on a CPU unless a memory budget is given: see max_window_side
CPU_STREAM_WINDOW = 1536  # the same for an image streamed in several windows: see budget_tile


def max_window_side(model: nn.Module, device: torch.device, memory_budget: int | None = None) -> int:
    """Side of the largest window whose activations fit ``memory_budget`` bytes.

    Without a budget a CPU also keeps windows within ``CPU_WINDOW``: half the RAM would allow
    larger ones, so a large image streamed through windows would then peak higher than an image
    of ``CPU_WINDOW``² read in one forward, and its peak would grow with the image up to that
    bound. Capped, the peak memory of a streamed image does not depend on its size; larger
    windows would save only a part of the halo, which is already the smaller part of a window
    this large (docs/engine-benchmark.md). A GPU keeps the whole budget (its memory is not the
    host's, and larger batches of windows pay there).
    """
    budget = memory_budget or default_memory_budget(device)
    side = int(math.sqrt(budget / activation_bytes_per_pixel(model)))
    return min(side, CPU_WINDOW) if memory_budget is None and device.type == "cpu" else side


def budget_tile(model: nn.Module, shape: tuple[int, int], halo: int, device: torch.device,
                memory_budget: int | None = None, streamed: bool = False) -> tuple[int, int]:
    """The tile for ``shape`` with the largest windows :func:`max_window_side` allows
    (:func:`plan_tile`): fewer windows mean less halo computed twice, and an image that fits is
    run in one forward. On a CPU without a budget, an image ``streamed`` in several windows (its
    memory handed back after each: :func:`_kept_across`) is read in windows of at most
    ``CPU_STREAM_WINDOW``: a forward's peak varies from run to run with how the heap fragments,
    and a streamed image meets its worst case once per window, so its windows are made small
    enough to peak below a ``CPU_WINDOW``² image read in one forward (docs/engine-benchmark.md),
    for a little more halo computed twice."""
    max_window = max_window_side(model, device, memory_budget)
    divisor = int(getattr(model, "size_divisor", 1))
    tile = plan_tile(shape, halo, divisor, max_window)
    several = any(core < round_up(length, divisor) for core, length in zip(tile, shape))
    if streamed and several and memory_budget is None and device.type == "cpu":
        tile = plan_tile(shape, halo, divisor, min(max_window, CPU_STREAM_WINDOW))
    return tile


def default_halo(model: nn.Module) -> int:
    """The model's receptive radius rounded up to its size divisor (8 divisors if unbounded)."""
    divisor = int(getattr(model, "size_divisor", 1))
    radius = getattr(model, "receptive_radius", 0.0)
    return round_up(math.ceil(radius if math.isfinite(radius) else 8 * divisor), divisor)


def _check_halo(model: nn.Module, halo: int) -> None:
    """Warn when tiles may show seams: a halo below the receptive radius, unless it is at least the
    halo measured for this model (``measured_halo``, from its metadata)."""
    radius = getattr(model, "receptive_radius", 0.0)
    if halo >= getattr(model, "measured_halo", math.inf):
        return
    if math.isinf(radius):
        warnings.warn("model has global context (receptive field = whole input); tiled results are approximate",
                      stacklevel=3)
    elif halo < radius:
        warnings.warn(f"halo {halo} px is smaller than the model's receptive radius {radius:g} px; "
                      "tile seams may show", stacklevel=3)


class _Output:
    """The result array, created on the first batch (when channels and dtype are known).

    In memory (numpy) by default; with ``path`` a zarr array chunked like the tiles, written to a
    temporary folder and moved into place when complete.
    """

    def __init__(self, spatial: tuple[int, ...], chunk: tuple[int, int], path: str | Path | None) -> None:
        self.spatial, self.chunk, self.path = spatial, chunk, path
        self.array: Any = None
        self._atomic: contextlib.ExitStack | None = None

    def ensure(self, channels: int, dtype: np.dtype) -> Any:
        if self.array is None:
            shape = (channels, *self.spatial)
            if self.path is None:
                self.array = np.zeros(shape, dtype=dtype)
            else:
                self._atomic = contextlib.ExitStack()
                tmp = self._atomic.enter_context(atomic_path(self.path))
                chunks = (channels,) + (1,) * (len(shape) - 3) + self.chunk  # one chunk per tile
                self.array = zarr.open_array(str(tmp), mode="w", shape=shape, dtype=dtype, chunks=chunks)
        return self.array

    def finish(self) -> Any:
        if self._atomic is not None:
            self._atomic.close()  # renames the temporary folder onto the target
            return zarr.open_array(str(self.path), mode="r")
        return self.array

    def abort(self) -> None:
        if self._atomic is not None:
            self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)  # discards the temp


def _run(
    model: nn.Module,
    image: Any,
    layout: Callable[[tuple[int, int]], list[Window]],
    out_spatial: Callable[[tuple[int, int]], tuple[int, int]],
    chunk: tuple[int, int],
    *,
    stats: Sequence[tuple[float, float]] | None,
    batch_size: int | None,
    device: str | torch.device | None,
    precision: str,
    postprocess: Postprocess | None,
    out: str | Path | None,
    store: Callable[[Any, int | None, Window, np.ndarray], None],
    tta: bool = False,
    compile: bool = False,
    release_windows: bool = False,
    bounded: bool = False,
) -> Steps[Any]:
    """Shared loop of dense and patch prediction over planes, windows and batches; with
    ``release_windows`` the memory kept for reuse is handed back after each of several windows of a
    streamed image or a stack, or of any image with ``bounded`` (dense windows' activations are
    large; a patch model's are small and its batches many)."""
    dev = select_device(device)
    keep_freed_memory()  # activations' blocks reused instead of page-faulted in afresh (core/memory.py)
    if next(model.parameters(), torch.empty(0)).device != dev:
        model = model.to(dev)
    model.eval()
    model = fused(model)  # batch norms folded into their convolutions: the same function, faster
    if dev.type == "cpu":
        # oneDNN's convolutions run about twice as fast on weights in channels-last layout, with the
        # same labels (docs/engine.md); converted in place, a no-op once done
        model.to(memory_format=torch.channels_last)
    if compile:
        model = compiled(model)
    batch_size = batch_size or default_batch_size(dev)
    image_planes = planes(image)
    plane_shape = tuple(image.shape[-2:])
    windows = layout(plane_shape)
    views = len(DIHEDRAL) if tta else 1  # progress counts each forward: 8 per window with tta
    total = len(windows) * len(image_planes) * views
    spatial = (*image.shape[:-2], *out_spatial(plane_shape))
    output = _Output(spatial, chunk, out)
    done = 0
    # between the windows of an image streamed from or to chunks (a lazy input, an output on disk) or
    # of a stack's planes (each plane's statistics), other blocks are allocated that split the freed
    # activations' ones, and the heap would grow with every window: its free pages go back after
    # each. A 2-D array in memory into an array in memory reuses the same blocks window after window
    # (docs/engine.md, "Memory")
    several = len(windows) * len(image_planes) > 1
    release_between = release_windows and several and not _kept_across(image, out, bounded)
    try:
        yield Progress(0, total, "preparing")
        for z, plane in enumerate(image_planes):
            mean, std = stats[z] if stats is not None else image_stats(plane)
            for batch, result in iter_batches(model, plane, windows, mean=mean, std=std, batch_size=batch_size,
                                              device=dev, precision=precision, postprocess=postprocess, tta=tta):
                done += len(batch)
                if result is not None:  # (with tta, after a window's last view)
                    array = output.ensure(result.shape[1], result.dtype)
                    for window, value in zip(batch, result):
                        store(array, z if image.ndim == 3 else None, window, value)
                    if release_between:
                        release_memory()
                yield Progress(done, total, f"plane {z + 1}/{len(image_planes)}" if len(image_planes) > 1 else "tiles")
        return output.finish()
    except BaseException:
        output.abort()
        raise


def _kept_across(image: Any, out: str | Path | None, bounded: bool) -> bool:
    """Whether the memory kept for reuse stays across an image's windows (a 2-D array in memory
    predicted into one, unless ``bounded``) rather than being handed back after each."""
    return not bounded and out is None and isinstance(image, np.ndarray) and image.ndim == 2


def predict_dense(
    model: nn.Module,
    image: Any,
    *,
    tile: int | None = None,
    halo: int | None = None,
    memory_budget: int | None = None,
    batch_size: int | None = None,
    stats: Sequence[tuple[float, float]] | None = None,
    postprocess: Postprocess | None = softmax,
    device: str | torch.device | None = None,
    precision: str = "float32",
    out: str | Path | None = None,
    tta: bool = False,
    compile: bool = False,
    bounded: bool = False,
) -> Steps[Any]:
    """Per-pixel prediction of a 2-D image or (Z, Y, X) stack → (C, Y, X) or (C, Z, Y, X).

    ``tile`` (the core of a window) defaults to the largest that ``memory_budget`` bytes allow
    (:func:`budget_tile`; by default half the free GPU memory, or half the RAM in windows of at
    most ``CPU_WINDOW`` a side, ``CPU_STREAM_WINDOW`` for an image streamed in several). ``halo``
    defaults to the model's receptive radius rounded up to its size divisor. ``stats`` gives
    (mean, std) per plane; by default they are computed over each whole plane. With
    ``out`` a path, the result is a zarr array on disk (streamed, chunked like the tiles). With
    ``tta`` every tile is predicted in its 8 rotations and flips and the logits averaged. With
    ``compile`` the network runs through :func:`compiled` (long runs only). With ``bounded`` the
    memory kept for reuse is handed back after each window even for an array in memory (a block of
    a large image, whose peak must stay that of one window; docs/engine.md, "Memory").
    """
    divisor = int(getattr(model, "size_divisor", 1))
    halo = default_halo(model) if halo is None else halo
    _check_halo(model, halo)
    if tile is None:
        cores = budget_tile(model, tuple(image.shape[-2:]), halo, select_device(device), memory_budget,
                            streamed=not _kept_across(image, out, bounded))
    else:
        cores = (round_up(tile, divisor),) * 2

    def store(array: Any, z: int | None, window: Window, value: np.ndarray) -> None:
        index = (slice(None),) + ((z,) if z is not None else ()) + window.core
        array[index] = value[(slice(None), *window.crop)]

    return _run(
        model, image, lambda s: dense_windows(s, cores, halo, divisor), lambda s: s, cores,
        stats=stats, batch_size=batch_size, device=device, precision=precision,
        postprocess=postprocess, out=out, store=store, tta=tta, compile=compile, release_windows=True, bounded=bounded,
    )


def predict_patches(
    model: nn.Module,
    image: Any,
    *,
    patch: int = 128,
    batch_size: int | None = None,
    stats: Sequence[tuple[float, float]] | None = None,
    postprocess: Postprocess | None = softmax,
    device: str | torch.device | None = None,
    precision: str = "float32",
    out: str | Path | None = None,
    per_pixel: bool = False,
) -> Steps[Any]:
    """One model output per ``patch``×``patch`` patch → map (C, ⌈Y/p⌉, ⌈X/p⌉) (or with a Z axis).

    Patch (i, j) covers pixels [i·p, (i+1)·p) × [j·p, (j+1)·p) of the image; use
    :func:`patch_coverage` for the valid fraction of edge patches. With ``per_pixel`` the model
    returns a (C, p, p) map per patch (e.g. a class-activation map) and the result is at image
    resolution, (C, Y, X), each patch's valid part placed where the patch lies.
    """

    def store(array: Any, z: int | None, window: Window, value: np.ndarray) -> None:
        index = (slice(None),) + ((z,) if z is not None else ()) + window.core
        array[index] = value.reshape(-1, 1, 1)

    def store_pixels(array: Any, z: int | None, window: Window, value: np.ndarray) -> None:
        h, w = window.crop[0].stop, window.crop[1].stop
        index = (slice(None),) + ((z,) if z is not None else ()) + (slice(window.y0, window.y0 + h),
                                                                      slice(window.x0, window.x0 + w))
        array[index] = value[:, :h, :w]

    def spatial(shape: tuple[int, int]) -> tuple[int, int]:
        return shape if per_pixel else (math.ceil(shape[0] / patch), math.ceil(shape[1] / patch))

    # pixel maps: chunks that hold whole patches, so no patch write straddles a chunk border
    chunk = (round_up(512, patch),) * 2 if per_pixel else (256, 256)
    return _run(
        model, image, lambda s: patch_windows(s, patch), spatial, chunk,
        stats=stats, batch_size=batch_size or default_patch_batch(select_device(device), patch), device=device,
        precision=precision, postprocess=postprocess, out=out, store=store_pixels if per_pixel else store,
    )


CPU_PATCH_BATCH_PX = 16 * 128 * 128  # input pixels per forward of a patch model on a CPU


def default_patch_batch(device: torch.device, patch: int) -> int:
    """Patches per forward: 64 on a GPU; on a CPU as many as ``CPU_PATCH_BATCH_PX`` holds, since a
    larger batch's first activations no longer stay in the processor's cache and a smaller one pays
    the per-call overhead of every layer again (docs/engine-benchmark.md, "Defect-map cost")."""
    if device.type != "cpu":
        return 64
    return max(1, CPU_PATCH_BATCH_PX // (patch * patch))


