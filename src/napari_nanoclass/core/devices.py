"""Devices and threads: which accelerator to run on, and how many CPU threads torch may use.

Shared by inference, training and the batch workers, so every path picks a device the same way
and parallel workers never oversubscribe the cores.
"""

from __future__ import annotations

import os

import torch


def available_devices() -> list[str]:
    """Devices usable here, best first (what a device drop-down offers)."""
    devices = []
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices + ["cpu"]


def select_device(preference: str | torch.device | None = None) -> torch.device:
    """CUDA, else MPS, else CPU, unless ``preference`` names one (an unavailable one is an error)."""
    if preference in (None, "", "auto"):
        return torch.device(available_devices()[0])
    device = torch.device(preference)
    if device.type != "cpu" and not any(d.startswith(device.type) for d in available_devices()):
        raise RuntimeError(f"device {str(preference)!r} is not available here; available: {available_devices()}")
    return device


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def configure_threads(workers: int = 1) -> int:
    """Give each of ``workers`` parallel workers an equal share of the cores for torch.

    torch threads × workers never exceeds the cores, which would only make them fight.
    Returns the torch thread count set.
    """
    threads = max(1, cpu_cores() // max(1, workers))
    torch.set_num_threads(threads)
    return threads
