"""The shipped homogeneity models: registered with their metadata; on the beaded sample the texture
model (verdicts) calls it non-homogeneous and the CNN maps the defects."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nanoclass._napari.samples import sem_fibres
from napari_nanoclass.homogeneity import (
    CNN_ARCHITECTURE,
    DEFAULT_CAM_MODEL,
    DEFAULT_MODEL,
    TWO_CLASS,
)
from napari_nanoclass.homogeneity.predict import analyse
from napari_nanoclass.models.registry import PACKAGE_DIR, list_models, load_model


@pytest.mark.parametrize(("name", "architecture", "pooling"),
                         [(DEFAULT_MODEL, "texture-lr", "region"), (DEFAULT_CAM_MODEL, CNN_ARCHITECTURE, "mean")])
def test_default_homogeneity_models_are_shipped_with_metadata(name, architecture, pooling):
    (info,) = [m for m in list_models() if m.name == name]
    assert info.task == "patch-classification" and info.patch == 128 and info.class_names == TWO_CLASS
    assert info.architecture == architecture and info.training["aggregation"]["method"] == pooling
    loaded = load_model(name)
    assert loaded.path.parent == PACKAGE_DIR and loaded.path.stat().st_size < 5 * 2**20


def test_default_analysis_calls_the_beaded_sample_non_homogeneous_and_the_cnn_maps_it():
    image = sem_fibres()[0][0]
    result = analyse(image, cam=True)
    assert result.model_name == DEFAULT_MODEL and result.cam_model_name == DEFAULT_CAM_MODEL
    assert result.summary["verdict"] == "NHNF" and result.summary["nonhomogeneous_fraction"] > 0.5
    assert result.p_nhnf.shape == (6, 8) and result.cam.shape == image.shape
    assert result.cam.min() >= 0 and result.cam.max() == np.float32(1.0)


def test_shipped_cnn_alone_also_finds_the_beads_of_the_sample():
    result = analyse(sem_fibres()[0][0], DEFAULT_CAM_MODEL, cam=True)
    assert result.cam_model_name == DEFAULT_CAM_MODEL  # a CNN makes its own map
    assert result.summary["verdict"] == "NHNF" and result.summary["nonhomogeneous_fraction"] > 0.5
