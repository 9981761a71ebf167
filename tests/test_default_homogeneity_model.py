"""The shipped homogeneity model: registered with its metadata, and it finds the beads of the sample."""

from __future__ import annotations

import numpy as np

from napari_nanoclass.homogeneity import DEFAULT_MODEL, TWO_CLASS, analyse
from napari_nanoclass.models.registry import PACKAGE_DIR, list_models, load_model
from napari_nanoclass.sample_data import sem_fibres


def test_default_homogeneity_model_is_shipped_with_metadata():
    (info,) = [m for m in list_models() if m.name == DEFAULT_MODEL]
    assert info.task == "patch-classification" and info.patch == 128 and info.class_names == TWO_CLASS
    assert info.training["aggregation"]["method"] in {"mean", "lse"}
    loaded = load_model(DEFAULT_MODEL)
    assert loaded.path.parent == PACKAGE_DIR and loaded.path.stat().st_size < 5 * 2**20


def test_default_model_calls_the_beaded_sample_non_homogeneous_and_maps_it():
    image = sem_fibres()[0][0]
    result = analyse(image, cam=True)
    assert result.summary["verdict"] == "NHNF" and result.summary["nonhomogeneous_fraction"] > 0.5
    assert result.p_nhnf.shape == (6, 8) and result.cam.shape == image.shape
    assert result.cam.min() >= 0 and result.cam.max() == np.float32(1.0)


def test_shipped_texture_model_is_registered_and_finds_the_beads_of_the_sample():
    """The texture baseline shipped as a model (better cross-validated verdicts than the CNN on
    the nanofibre data set); it runs through the same analysis, without a defect map."""
    loaded = load_model("nanofibre-texture")
    assert loaded.info.architecture == "texture-lr" and loaded.info.class_names == TWO_CLASS
    assert loaded.info.patch == 128 and loaded.path.parent == PACKAGE_DIR
    result = analyse(sem_fibres()[0][0], "nanofibre-texture")
    assert result.summary["verdict"] == "NHNF" and result.summary["nonhomogeneous_fraction"] > 0.5
