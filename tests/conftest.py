"""Shared fixtures: a temporary user registry, tiny random segmentation and fibre models, and a
napari ViewerModel for widget tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_nanoclass.models.registry import ModelInfo, save_model
from napari_nanoclass.models.unet import SEUNet

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def user_registry(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty user model folder (the user's real one is never touched)."""
    home = tmp_path_factory.mktemp("nanoclass-home")
    monkeypatch.setenv("NANOCLASS_HOME", str(home))
    return home / "models"


@pytest.fixture
def viewer(qtbot):
    """napari's ViewerModel (layers, no canvas) for widget tests; qtbot gives them a QApplication."""
    from napari.components import ViewerModel

    return ViewerModel()


@pytest.fixture
def fibre_model(user_registry) -> str:
    """A tiny random FibreCNN (32-px patches) registered as "tiny-fibre"."""
    from napari_nanoclass.homogeneity.train import HomogeneityConfig, model_info
    from napari_nanoclass.models.fibre_cnn import FibreCNN

    torch.manual_seed(0)
    info = model_info(HomogeneityConfig(name="tiny-fibre", widths=[4, 8], hidden=8, patch=32))
    save_model(FibreCNN(**info.arch_params).eval(), info)
    return info.name


def tiny_info(name: str = "tiny-seg", classes: int = 3) -> ModelInfo:
    params = dict(in_channels=1, n_classes=classes, width=4, depth=2, se_window=3)
    return ModelInfo(name=name, task="segmentation", architecture="seunet", arch_params=params,
                     class_names=[f"c{i}" for i in range(classes)],
                     class_colours=["#00000000", "#ff0000", "#00ff00", "#0000ff"][:classes], tile=64)


@pytest.fixture
def tiny_model(user_registry) -> str:
    """Register a tiny random SE U-Net (depth 2, 3 classes) and return its name."""
    torch.manual_seed(0)
    info = tiny_info()
    save_model(SEUNet(**info.arch_params).eval(), info)
    return info.name


@pytest.fixture
def em_image() -> np.ndarray:
    """A small EM-like uint8 image: dark rings (membranes) on a noisy background."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:200, :232]
    img = 150 + 20 * rng.standard_normal((200, 232))
    for cy, cx, r in [(50, 60, 30), (130, 150, 45), (150, 40, 20)]:
        d = np.hypot(yy - cy, xx - cx)
        img[np.abs(d - r) < 3] -= 80
    return np.clip(img, 0, 255).astype(np.uint8)


def needs_data(sub: str) -> Path:
    path = DATA / sub
    if not path.exists():
        pytest.skip(f"shared data {path} not present")
    return path


@pytest.fixture
def responsive_model(user_registry) -> str:
    """A tiny random SE U-Net whose class map follows the input (see :func:`save_responsive`)."""
    return save_responsive(tiny_info("responsive-seg"))


def save_responsive(info) -> str:
    """Register a tiny random SE U-Net described by ``info`` whose class map follows the input (its
    head amplified: an untrained tiny net otherwise gives one class everywhere), so that equal
    outputs mean equal computations; returns its name."""
    torch.manual_seed(0)
    module = SEUNet(**info.arch_params).eval()
    head = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        head.bias.zero_()
        head.weight.mul_(1000)
    save_model(module, info)
    return info.name


@pytest.fixture
def tiny_liposome_models(user_registry) -> tuple[str, dict[str, str]]:
    """A tiny random liposome detector and two classifiers trained one epoch, registered."""
    from dataclasses import replace

    from napari_nanoclass.liposomes.simulator import (
        BALANCED_MIX,
        SimulationConfig,
        simulate_field,
    )
    from napari_nanoclass.liposomes.train import (
        DETECTOR_CLASSES,
        ClassifierConfig,
        objects_from_fields,
        train_classifier,
    )

    torch.manual_seed(0)
    info = replace(tiny_info("tiny-detector"), class_names=DETECTOR_CLASSES, pixel_size_nm=2.5)
    save_model(SEUNet(**info.arch_params).eval(), info)
    config = SimulationConfig(shape=(128, 128), objects=(3, 5), diameter_nm=(40.0, 120.0), mix=BALANCED_MIX)
    objects = objects_from_fields([simulate_field(config, seed) for seed in range(10)])
    names = {}
    for problem in ("lamellarity", "encapsulation"):
        train_classifier(objects, ClassifierConfig(name=f"tiny-{problem}", problem=problem, epochs=1), register=True)
        names[problem] = f"tiny-{problem}"
    return "tiny-detector", names


def reader_layers(path):
    """The layers napari gets when it opens ``path`` with this plugin's reader (on a ViewerModel)."""
    from napari.components import ViewerModel

    from napari_nanoclass.io.reader import get_reader

    reader = get_reader(str(path))
    assert reader is not None, path
    viewer = ViewerModel()
    for data, meta, kind in reader(str(path)):
        getattr(viewer, f"add_{kind}")(data, **meta)
    return viewer.layers
