"""The shared tiled inference engine: every analysis pushes its images through a model here.

:mod:`.tiling` cuts an image into windows (pure geometry); :mod:`.predict` runs a model over them
batch by batch as a step generator (progress and cancel), keeping only each window's core, and
streams large results to zarr. The names below are the engine's public API
(``from napari_nanoclass import engine; engine.predict_dense(...)``).
"""

from napari_nanoclass.core.devices import available_devices, configure_threads, cpu_cores, select_device
from napari_nanoclass.engine.predict import (
                                             activation_bytes_per_pixel,
                                             budget_tile,
                                             compiled,
                                             default_batch_size,
                                             default_halo,
                                             dihedral_mean,
                                             iter_batches,
                                             labels_from_logits,
                                             predict_dense,
                                             predict_patches,
                                             softmax,
                                             with_logit_bias,
)
from napari_nanoclass.engine.tiling import (
                                             Window,
                                             dense_windows,
                                             patch_coverage,
                                             patch_windows,
                                             plan_tile,
                                             planes,
                                             read_window,
                                             round_up,
)

__all__ = [
    "Window", "activation_bytes_per_pixel", "available_devices", "budget_tile", "compiled", "configure_threads", "cpu_cores",
    "default_batch_size", "default_halo", "dense_windows", "dihedral_mean", "iter_batches", "labels_from_logits",
    "patch_coverage", "patch_windows", "plan_tile", "planes", "predict_dense", "predict_patches", "read_window",
    "round_up", "select_device", "softmax", "with_logit_bias",
]
