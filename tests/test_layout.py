"""The layout holds: the compute core is free of napari and Qt, inference of training code and of
heavy optional libraries; the package and ``nanoclass --help`` start without torch; every analysis
is described once and the command line, the batch runner and the reader all use that description."""

from __future__ import annotations

import inspect
import pkgutil
import subprocess
import sys

import numpy as np
import pytest

import napari_nanoclass
from napari_nanoclass.core import analysis as registry
from napari_nanoclass.core.analysis import FileJob, analyses

GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy", "magicgui")
TRAINING_ONLY = ("optuna", "imblearn", "matplotlib", "sklearn", "pymatgen")
INFERENCE = ("napari_nanoclass.segmentation.predict", "napari_nanoclass.homogeneity.predict",
             "napari_nanoclass.liposomes.predict", "napari_nanoclass.xrd.predict", "napari_nanoclass.engine",
             "napari_nanoclass.io.images",
             "napari_nanoclass.io.reader", "napari_nanoclass.batch.runner", "napari_nanoclass.cli")


def _loaded_after(code: str) -> set[str]:
    """Top-level names of the modules loaded by a fresh interpreter after running ``code``."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(sorted(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(eval(out.strip().splitlines()[-1]))


def test_compute_core_imports_neither_napari_nor_qt():
    core = [m.name for m in pkgutil.walk_packages(napari_nanoclass.__path__, "napari_nanoclass.")
            if not m.name.startswith("napari_nanoclass._napari")]
    assert {"napari_nanoclass.homogeneity.predict", "napari_nanoclass.engine.predict"} <= set(core)
    loaded = _loaded_after(f"import importlib\nfor name in {core!r}: importlib.import_module(name)")
    assert not {m.split(".")[0] for m in loaded} & set(GUI), "core modules pulled in GUI packages"


def test_inference_imports_no_training_code_and_no_training_libraries():
    loaded = _loaded_after(f"import importlib\nfor name in {INFERENCE!r}: importlib.import_module(name)")
    tops = {m.split(".")[0] for m in loaded}
    assert "torch" in tops  # the check below means something only if inference itself was imported
    assert not tops & set(GUI + TRAINING_ONLY), tops & set(GUI + TRAINING_ONLY)
    training = {m for m in loaded if m.startswith("napari_nanoclass.") and
                (m.endswith(".train") or m == "napari_nanoclass.homogeneity.texture")}
    assert not training, f"inference imported training modules: {training}"


def test_package_import_and_cli_help_do_not_import_torch():
    for code in ("import napari_nanoclass", "import napari_nanoclass; napari_nanoclass.__version__",
                 "from napari_nanoclass.cli import build_parser\n"
                 "for a in ([], ['segment'], ['homogeneity'], ['liposomes'], ['xrd'], ['batch']):\n"
                 "    try: build_parser().parse_args([*a, '--help'])\n"
                 "    except SystemExit: pass"):
        loaded = {m.split(".")[0] for m in _loaded_after(code)}
        assert not loaded & {"torch", "dask", "zarr", "skimage", "scipy"}, (code, loaded)


def test_lazy_api_resolves_every_name_to_the_analysis_itself():
    from napari_nanoclass.homogeneity.predict import analyse as homogeneity
    from napari_nanoclass.liposomes.predict import analyse as liposomes

    for name in napari_nanoclass.__all__:
        assert getattr(napari_nanoclass, name) is not None
    assert napari_nanoclass.analyse_homogeneity is homogeneity
    assert napari_nanoclass.analyse_liposomes is liposomes
    assert {"segment", "analyse_homogeneity", "analyse_liposomes", "run_batch", "read_image", "load_model",
            "list_models"} <= set(dir(napari_nanoclass))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        napari_nanoclass.nope  # noqa: B018


@pytest.mark.parametrize("spec", analyses(), ids=lambda a: a.name)
def test_each_description_matches_its_file_job_reader_and_command(spec):
    from napari_nanoclass.cli import build_parser

    job = spec.job_class()
    assert issubclass(job, FileJob)
    parameters = set(inspect.signature(job.__init__).parameters) - {"self"}
    assert spec.option_keys == parameters, "the description's options are exactly the job's arguments"
    assert callable(registry._resolve(spec.reader))
    assert spec.model_option in spec.option_keys
    help_text = build_parser()._subparsers._group_actions[0].choices[spec.name].format_help()
    for option in spec.all_options:
        assert option.flag in help_text
    assert job.model_names({}), "a run with default options names its models"


def test_chosen_options_are_the_job_arguments_away_from_the_defaults():
    """The one builder behind the Batch dock and ``nanoclass batch``: values checked, unset and
    default ones left out, dotted names nested (also when the mapping is given whole)."""
    homogeneity, liposomes = registry.get("homogeneity"), registry.get("liposomes")
    assert homogeneity.chosen_options({"model": "nanofibre-texture", "view": 1024, "cam": False, "cam_model": None,
                                       "output_format": "tif", "device": None}) == {}
    assert homogeneity.chosen_options({"view": "2048", "cam": True, "device": "cpu"}) == {
        "view": 2048, "cam": True, "device": "cpu"}
    by_entry = liposomes.chosen_options({"classifiers.lamellarity": "mine", "classifiers.encapsulation":
                                         "liposome-encapsulation", "pixel_size_nm": 2.5})
    assert by_entry == {"classifiers": {"lamellarity": "mine"}, "pixel_size_nm": 2.5}
    assert liposomes.chosen_options({"classifiers": {"lamellarity": "mine"}, "pixel_size_nm": 2.5}) == by_entry
    with pytest.raises(ValueError, match="homogeneity has no option tile; its options: cam, cam_model"):
        homogeneity.chosen_options({"tile": 64})
    with pytest.raises(ValueError, match="liposomes has no option classifiers.size"):
        liposomes.chosen_options({"classifiers": {"size": "x"}})
    with pytest.raises(ValueError, match="--view must be a whole number between 16"):
        homogeneity.chosen_options({"view": 3})


def test_a_new_analysis_is_one_package_and_one_registration(monkeypatch, tmp_path, capsys):
    """A toy analysis registered in one line runs from the command line and in batch, refuses
    unknown options, and its batch results open again through the reader."""
    from skimage.io import imsave

    from napari_nanoclass.batch.runner import run_batch
    from napari_nanoclass.cli import main
    from napari_nanoclass.io.reader import get_reader

    monkeypatch.setattr(registry, "REGISTERED", (*registry.REGISTERED, "tests.toy_analysis"))
    image = tmp_path / "img.png"
    imsave(image, np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1)), check_contrast=False)

    assert main(["threshold", str(image), "--out", str(tmp_path / "cli"), "--level", "0.25", "--quiet"]) == 0
    table = (tmp_path / "cli" / "threshold.csv").read_text().splitlines()
    assert table[0].startswith("image,path,level,foreground") and table[1].startswith("img,")
    assert abs(float(table[1].split(",")[3]) - 0.75) < 0.05  # a quarter of the ramp lies below the level

    report = run_batch("threshold", [image], tmp_path / "batch", options={"level": 0.5})
    assert not report.failed and report.run["models"] == {}
    layers = get_reader(str(tmp_path / "batch" / "img"))(str(tmp_path / "batch" / "img"))
    assert [kind for _, _, kind in layers] == ["image", "labels"]  # the source image, then the result
    assert layers[1][0].shape == (64, 64) and layers[0][1]["name"] == "img"
    assert (tmp_path / "batch" / "img" / "overview.png").is_file()

    with pytest.raises(ValueError, match="threshold has no option tile"):
        run_batch("threshold", [image], tmp_path / "bad", options={"tile": 3})
    assert main(["batch", "threshold", str(image), "--out", str(tmp_path / "b2"), "--log", "quiet"]) == 0
