"""Freed memory kept for reuse during a job and handed back after it (core.memory)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_nanoclass import engine
from napari_nanoclass.core import memory
from napari_nanoclass.core.progress import run_sync
from napari_nanoclass.models.unet import SEUNet

pytestmark = pytest.mark.skipif(memory._glibc() is None, reason="the allocator settings exist on glibc only")

BLOCK = 96 * 2**20  # above glibc's largest adaptive mmap threshold (32 MiB): without the setting, mmapped


def _page_faults_of_a_block(nbytes: int) -> int:
    """Minor page faults while a block of ``nbytes`` is allocated and written."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(nbytes, dtype=torch.uint8).fill_(1)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_the_engine_keeps_freed_blocks_for_reuse_and_a_job_end_hands_them_back():
    run_sync(engine.predict_dense(SEUNet(width=4, depth=2).eval(), np.zeros((64, 64), np.float32), device="cpu"))
    if not memory.keep_freed_memory():  # set by the engine's run, once per process
        pytest.skip("this glibc refuses the setting, or NANOCLASS_MALLOC=system")
    pages = BLOCK // resource.getpagesize()
    # where the heap first places a block depends on what it holds; then freed blocks serve the next
    # ones (without the setting every block of this size is mapped afresh: all its pages fault)
    assert min(_page_faults_of_a_block(BLOCK) for _ in range(5)) < pages // 20
    block = torch.empty(BLOCK, dtype=torch.uint8).fill_(1)
    del block
    kept = _resident_bytes()
    memory.release_memory()
    assert kept - _resident_bytes() > BLOCK // 2  # the free block's pages went back to the system


def test_the_setting_can_be_left_alone_from_the_environment():
    code = ("from napari_nanoclass.core import memory; import sys; "
            "print(memory.keep_freed_memory(), 'torch' in sys.modules)")
    env = {**os.environ, memory.OPT_OUT: "system"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]  # left alone; and the module needs no torch
    del env[memory.OPT_OUT]
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_a_streamed_image_hands_the_heap_back_after_each_window_and_an_image_in_memory_keeps_it(monkeypatch, tmp_path):
    import zarr

    from napari_nanoclass.engine import predict

    released = []
    monkeypatch.setattr(predict, "release_memory", lambda: released.append(True))
    model = SEUNet(width=4, depth=2).eval()
    image = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32)
    whole = run_sync(engine.predict_dense(model, image, tile=128, device="cpu"))
    in_memory = run_sync(engine.predict_dense(model, image, tile=32, device="cpu"))
    assert not released  # 16 windows, but an array into an array: the same blocks serve every window
    lazy = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=image.shape, chunks=(64, 64), dtype=image.dtype)
    lazy[:] = image
    streamed = run_sync(engine.predict_dense(model, lazy, tile=32, device="cpu"))
    assert len(released) == 16  # 4 × 4 windows read from chunks, after each
    run_sync(engine.predict_dense(model, image, tile=32, out=tmp_path / "out.zarr", device="cpu"))
    assert len(released) == 2 * 16  # written to chunks on disk: after each too
    run_sync(engine.predict_dense(model, lazy, tile=32, tta=True, device="cpu"))
    assert len(released) == 3 * 16  # with its eight views: after each window's last
    run_sync(engine.predict_dense(model, lazy, tile=128, device="cpu"))
    assert len(released) == 3 * 16  # one window: what it freed stays for the next job's reuse
    run_sync(engine.predict_dense(model, np.stack([image, image]), tile=128, device="cpu"))
    assert len(released) == 3 * 16 + 2  # a stack in memory: after each plane (its statistics between them)
    run_sync(engine.predict_dense(model, image, tile=32, bounded=True, device="cpu"))
    assert len(released) == 4 * 16 + 2  # in memory, but bounded (a block of a large image): after each window
    np.testing.assert_allclose(in_memory, whole, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(streamed), in_memory)
    patch_model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    run_sync(engine.predict_patches(patch_model, lazy, patch=32, device="cpu"))
    assert len(released) == 4 * 16 + 2  # a patch model's batches keep theirs
