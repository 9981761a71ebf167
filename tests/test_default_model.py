"""The shipped segmentation model: registered, checksum-verified, and actually segments."""

from __future__ import annotations

import numpy as np
import tifffile
from skimage.io import imread

from napari_nanoclass._napari.samples import drosophila_section
from napari_nanoclass.cli import main
from napari_nanoclass.core.metrics import SegmentationScores, confusion_matrix
from napari_nanoclass.models.registry import PACKAGE_DIR, list_models, load_model
from napari_nanoclass.segmentation.data import (
    DROSOPHILA_CLASSES,
    DROSOPHILA_LABEL_MAP,
    map_labels,
)
from napari_nanoclass.segmentation.predict import segment

from .conftest import needs_data


def test_default_model_is_shipped_with_metadata():
    (info,) = [m for m in list_models() if m.name == "drosophila-seunet"]
    assert info.class_names == DROSOPHILA_CLASSES and info.pixel_size_nm == 4.6
    loaded = load_model("drosophila-seunet")
    assert loaded.path.parent == PACKAGE_DIR
    assert loaded.path.stat().st_size < 30 * 2**20


def test_default_model_segments_its_held_out_sample_section():
    labels_dir = needs_data("drosophila-vnc") / "labels"
    image = drosophila_section()[0][0][:512, :512]
    truth = map_labels(imread(labels_dir / "12.png")[:512, :512], DROSOPHILA_LABEL_MAP)
    result = segment(image, "drosophila-seunet")
    scores = SegmentationScores(DROSOPHILA_CLASSES, confusion_matrix(result.labels, truth, 4))
    assert scores.iou[1] > 0.5 and scores.iou[0] > 0.7  # membrane and background clearly found
    assert np.isin(np.unique(result.labels), range(4)).all()


def test_demo_command_segments_the_bundled_section(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    labels = tifffile.imread(tmp_path / "drosophila_section_labels.tif")
    np.testing.assert_array_equal(labels, segment(drosophila_section()[0][0], "drosophila-seunet").labels)


def test_the_stored_halo_keeps_tiles_within_its_tolerance_of_a_whole_image_forward():
    """drosophila-seunet stores a measured halo, smaller than its receptive radius: small tiles
    with it must still give the whole-image forward's labels, and logits within the stated bound."""
    import torch

    from napari_nanoclass import engine
    from napari_nanoclass.core.progress import run_sync
    from napari_nanoclass.io.images import image_stats

    loaded = load_model("drosophila-seunet")
    assert loaded.halo == loaded.info.training["effective_halo"]["halo"] < loaded.module.receptive_radius
    image = np.asarray(drosophila_section()[0][0])[:768, :768]
    mean, std = image_stats(image)
    with torch.inference_mode():
        whole = loaded.module(torch.from_numpy(((image - mean) / std).astype(np.float32))[None, None])[0].numpy()
    tiled = run_sync(engine.predict_dense(loaded.module, image, tile=256, halo=loaded.halo, postprocess=None))
    assert np.abs(tiled - whole).max() <= 1e-3
    assert (tiled.argmax(0) == whole.argmax(0)).all()
