"""Nothing lost, nothing overwritten by surprise: output-folder safety and input contracts.

One regression test per defect found by trying the tool as a new user would (issue #22), then
property-based tests over inputs, a fault-injection test and a concurrency test.
"""

from __future__ import annotations

import json
import os
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_nanoclass import run_batch
from napari_nanoclass.cli import main
from napari_nanoclass.core.analysis import files_steps
from napari_nanoclass.core.outputs import OutputError
from napari_nanoclass.core.progress import run_sync
from napari_nanoclass.io.images import ImageError, file_stem, read_image


def _image(path: Path, seed: int = 0, size: int = 96) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8))
    return path


def _cli(*args: str, registry: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NANOCLASS_HOME": str(registry.parent)}
    return subprocess.run([sys.executable, "-m", "napari_nanoclass.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


# -- 1. a dot-named input never resolves to the output folder itself --------------------------------


def test_dot_named_input_with_overwrite_keeps_the_output_folder(responsive_model, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    hidden = _image(tmp_path / "in" / ".hidden.tif")
    apple = _image(tmp_path / "in" / "._copy.tif", seed=1)
    assert main(["batch", "segment", str(hidden), str(apple), "--out", str(out), "--model", responsive_model,
                 "--overwrite", "--log", "quiet"]) == 0
    assert (out / "precious.txt").read_text() == "keep"
    assert (out / "hidden" / "hidden_labels.tif").is_file() and (out / "_copy" / "result.json").is_file()
    assert main(["batch", "segment", str(hidden), "--out", str(out), "--model", responsive_model,
                 "--overwrite", "--log", "quiet"]) == 0
    assert (out / "precious.txt").read_text() == "keep" and (out / "batch_config.json").is_file()


# -- 2. two runs into one folder ------------------------------------------------------------------------


def test_two_runs_started_together_into_one_folder(responsive_model, user_registry, tmp_path):
    for i in range(6):
        _image(tmp_path / "in" / f"img{i}.tif", seed=i, size=160)
    out = tmp_path / "out"
    # small tiles: many windows per input, so the first run still holds the folder when the second starts
    args = ["batch", "segment", str(tmp_path / "in"), "--out", str(out), "--model", responsive_model,
            "--set", "tile=32", "--log", "quiet"]
    env = {**os.environ, "NANOCLASS_HOME": str(user_registry.parent)}
    runs = [subprocess.Popen([sys.executable, "-m", "napari_nanoclass.cli", *args], env=env,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 3], results  # one ran, the other was refused at once
    refused = next(err for code, err in results if code == 3)
    assert "another nanoclass run is writing into this folder" in refused and "Traceback" not in refused
    for i in range(6):
        stored = json.loads((out / f"img{i}" / "result.json").read_text())
        assert stored["status"] == "ok" and Path(stored["result"]["labels"]).is_file()
    again = run_batch("segment", [tmp_path / "in"], out, options={"model": responsive_model, "tile": 32})
    assert all(row["skipped"] for row in again.rows)  # the same settings: nothing to redo
    with pytest.raises(OutputError, match="another nanoclass run"):  # while one holds it, in-process too
        from napari_nanoclass.core.outputs import claim

        with claim(out):
            run_batch("segment", [tmp_path / "in"], out, options={"model": responsive_model})


# -- 3. a rerun with other options or models redoes the inputs, saying why -------------------------------


def test_rerun_with_other_options_or_model_redoes_and_says_why(responsive_model, tiny_model, tmp_path):
    image = _image(tmp_path / "in" / "a.tif")
    out = tmp_path / "out"
    first = run_batch("segment", [image], out, options={"model": responsive_model})
    assert first.rows[0]["reason"] == "new input"
    same = run_batch("segment", [image], out, options={"model": responsive_model})
    assert same.rows[0]["skipped"] and same.rows[0]["reason"] == "complete, same signature"
    tta = run_batch("segment", [image], out, options={"model": responsive_model, "tta": True})
    assert not tta.rows[0]["skipped"] and tta.rows[0]["reason"] == "options changed: tta"
    other = run_batch("segment", [image], out, options={"model": tiny_model, "tta": True})
    assert not other.rows[0]["skipped"] and other.rows[0]["reason"].startswith("options changed: model")
    stored = json.loads((out / "a" / "result.json").read_text())
    assert stored["signature"]["models"]["model"].startswith(f"{tiny_model} sha256:")
    assert stored["signature"]["input"]["sha256"] and stored["signature"]["version"]
    os.utime(image, ns=(1, 1))  # touched, same bytes: still the same input
    assert run_batch("segment", [image], out, options={"model": tiny_model, "tta": True}).rows[0]["skipped"]
    _image(image, seed=9)  # new content
    changed = run_batch("segment", [image], out, options={"model": tiny_model, "tta": True})
    assert changed.rows[0]["reason"] == "input changed"


# -- 4. numbers are checked when the command is read ---------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["liposomes", "x.tif", "--out", "o", "--pixel-size", "0"],
    ["liposomes", "x.tif", "--out", "o", "--pixel-size", "-1"],
    ["liposomes", "x.tif", "--out", "o", "--pixel-size", "1e9"],
    ["liposomes", "x.tif", "--out", "o", "--pixel-size", "nan"],
    ["batch", "segment", "x.tif", "--out", "o", "--workers", "0"],
    ["batch", "segment", "x.tif", "--out", "o", "--workers", "-1"],
    ["segment", "x.tif", "--out", "o", "--tile", "0"],
    ["homogeneity", "x.tif", "--out", "o", "--view", "-5"],
    ["train-seg", "--images", "i", "--labels", "l", "--name", "n", "--epochs", "0"],
    ["simulate-liposomes", "--out", "o", "--n", "-3"],
], ids=lambda a: " ".join(a[:1] + a[-2:]))
def test_out_of_range_numbers_are_refused_with_the_allowed_range(args, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and ("between" in err or "at least" in err) and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_liposomes_without_a_pixel_size_are_refused_not_guessed(tmp_path):
    from napari_nanoclass import analyse_liposomes

    with pytest.raises(ValueError, match="no pixel size"):
        analyse_liposomes(np.zeros((64, 64), np.float32))
    # a file that records no pixel size fails with how to give one, and leaves no result behind
    report = run_batch("liposomes", [_image(tmp_path / "a.tif")], tmp_path / "o")
    (failed,) = report.failed
    assert "a.tif: no pixel size in the file" in failed["error"] and "--pixel-size NM" in failed["error"]
    assert not (tmp_path / "o" / "a").exists()


def test_numbers_are_checked_from_python_and_batch_options_too(tmp_path):
    from napari_nanoclass import analyse_liposomes

    with pytest.raises(ValueError, match="pixel size .* between"):
        analyse_liposomes(np.zeros((64, 64), np.float32), 0.0)
    with pytest.raises(ValueError, match="workers must be"):
        run_batch("segment", [tmp_path], tmp_path / "o", workers=0)
    with pytest.raises(ValueError, match="--tile must be a whole number between"):
        run_batch("segment", [tmp_path], tmp_path / "o", options={"tile": -5})


# -- 5. inputs that would share outputs ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["segment", "homogeneity", "liposomes"])
def test_inputs_sharing_a_name_are_refused_by_every_command(command, tmp_path, capsys):
    a, b = _image(tmp_path / "a.x.tif"), _image(tmp_path / "a.y.tif", seed=1)
    extra = ["--pixel-size", "2.5"] if command == "liposomes" else []
    assert main([command, str(a), str(b), "--out", str(tmp_path / "out"), *extra]) == 2
    assert "share the name 'a'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- 6. model names stay inside the registry -------------------------------------------------------------------


def test_training_names_cannot_leave_the_registry(user_registry, tmp_path, capsys):
    for command in (["train-homogeneity", "--data", str(tmp_path)], ["train-seg", "--images", "i", "--labels", "l"]):
        with pytest.raises(SystemExit) as stop:
            main([*command, "--name", "../../../x"])
        assert stop.value.code == 2 and "model name '../../../x' must be" in capsys.readouterr().err
    from napari_nanoclass.models.registry import save_model
    from napari_nanoclass.models.unet import SEUNet
    from tests.conftest import tiny_info

    info = tiny_info("../escaped")
    with pytest.raises(ValueError, match="model name"):
        save_model(SEUNet(**info.arch_params), info)
    with pytest.raises(OutputError, match="not a plain name"):
        save_model(SEUNet(**info.arch_params), tiny_info("ok"), filename="../x.safetensors", register=False)
    assert not list(user_registry.parent.parent.rglob("*escaped*"))
    assert not (user_registry.parent / "x.safetensors").exists()


# -- 7. an output folder that cannot be written is found before any compute -------------------------------------


def test_unwritable_output_is_one_line_before_any_compute(responsive_model, tmp_path, capsys, monkeypatch):
    from napari_nanoclass.segmentation import predict

    image = _image(tmp_path / "a.tif")
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")

    def no_compute(*_args, **_kwargs):
        raise AssertionError("the model was loaded although the output folder cannot be written")

    monkeypatch.setattr(predict.SegmentFiles, "__init__", no_compute)
    for args in (["segment", str(image), "--out", str(blocker / "out"), "--model", responsive_model],
                 ["batch", "segment", str(image), "--out", str(blocker / "out"), "--model", responsive_model]):
        assert main(args) == 3
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot write results here" in err[0] and str(blocker) in err[0]


# -- 8. recorded paths point to the final folder -------------------------------------------------------------------


def test_recorded_paths_point_to_files_that_exist(responsive_model, tmp_path):
    image = _image(tmp_path / "a.tif")
    report = run_batch("segment", [image], tmp_path / "out", options={"model": responsive_model,
                                                                      "probabilities": True})
    stored = json.loads((tmp_path / "out" / "a" / "result.json").read_text())
    paths = [stored["result"]["labels"], stored["result"]["probabilities"], report.rows[0]["output"]]
    assert all(".partial" not in p and Path(p).exists() for p in paths)
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert ".partial" not in json.dumps(summary)


# -- 10. smaller ones --------------------------------------------------------------------------------------------------


def test_one_bad_registry_entry_does_not_break_the_listing(tiny_model, user_registry, capsys):
    index = json.loads((user_registry / "index.json").read_text())
    (user_registry / "broken.safetensors").write_bytes(b"\x80\x04garbage")
    index["models"]["broken"] = {"file": "broken.safetensors", "sha256": "0" * 64}
    (user_registry / "index.json").write_text(json.dumps(index))
    with pytest.warns(UserWarning, match="'broken'"):
        assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert tiny_model in out and "drosophila-seunet" in out and "broken" not in out


def test_batch_with_an_unknown_model_is_a_usage_error_like_segment(tmp_path, capsys):
    image = _image(tmp_path / "a.tif")
    assert main(["batch", "segment", str(image), "--out", str(tmp_path / "o"), "--model", "nope"]) == 2
    assert main(["segment", str(image), "--out", str(tmp_path / "o2"), "--model", "nope"]) == 2
    assert capsys.readouterr().err.count("unknown model 'nope'") == 2


def test_nan_image_error_names_the_file(responsive_model, tmp_path):
    path = tmp_path / "nan.tif"
    data = np.ones((64, 64), np.float32)
    data[3, 3] = np.nan
    tifffile.imwrite(path, data)
    rows = run_sync(files_steps("segment", [path], tmp_path / "out", model=responsive_model))
    assert rows[0]["status"] == "failed" and str(path) in rows[0]["error"] and "NaN" in rows[0]["error"]


def test_segment_into_its_input_folder_skips_its_own_outputs(responsive_model, tmp_path, capsys):
    folder = tmp_path / "data"
    _image(folder / "a.tif")
    _image(folder / "b_labels.tif", seed=1)  # a user's own file: not an output of an input here
    for _ in range(2):
        assert main(["segment", str(folder), "--out", str(folder), "--model", responsive_model, "--quiet"]) == 0
        assert "2 of 2 images done" in capsys.readouterr().out
    assert sorted(p.name for p in folder.glob("*_labels_labels*")) == ["b_labels_labels.tif"]


def test_scratch_left_by_a_killed_run_is_removed(responsive_model, tmp_path):
    out = tmp_path / "out"
    stale = out / ".a.work" / "labels.partial-12345.zarr"
    stale.mkdir(parents=True)
    run_sync(files_steps("segment", [_image(tmp_path / "a.tif")], out, model=responsive_model))
    assert not (out / ".a.work").exists()


# -- properties over inputs --------------------------------------------------------------------------------------

NAMES = st.text(alphabet=string.ascii_letters + string.digits + " ._-+()äé", min_size=1, max_size=24).filter(
    lambda s: s not in (".", ".."))


@given(name=NAMES)
def test_output_names_are_plain_names_whatever_the_input_name(name):
    stem = file_stem(f"some/folder/{name}")
    assert stem and "/" not in stem and "." not in stem and stem == file_stem(name)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.sampled_from([(1, 1), (5, 40), (8, 8), (33, 20), (1, 16, 16), (3, 16, 16), (2, 2, 16, 16),
                              (16, 16, 3), (16, 16, 4), (4, 16, 16, 3)]),
       dtype=st.sampled_from(["uint8", "uint16", "int16", "float32", "float64", "bool", "complex64"]),
       special=st.sampled_from([None, np.nan, np.inf, -np.inf]),
       name=NAMES)
def test_read_image_gives_a_greyscale_image_or_one_clear_error(tmp_path_factory, shape, dtype, special, name):
    folder = tmp_path_factory.mktemp("img")
    data = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    if special is not None and data.dtype.kind == "f":
        data.flat[0] = special
    path = folder / f"{name}.tif"
    tifffile.imwrite(path, data)
    try:
        image = read_image(path)
    except ImageError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert image.data.ndim in (2, 3) and min(image.data.shape[-2:]) >= 8 and image.name == file_stem(path)
    if data.ndim == image.data.ndim:
        np.testing.assert_array_equal(np.asarray(image.data), data)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES, size=st.sampled_from([(4, 4), (24, 40), (70, 33)]), nan=st.booleans(),
       command=st.sampled_from(["segment", "homogeneity", "liposomes"]))
def test_every_command_writes_inside_its_folder_or_fails_naming_the_file(
        tmp_path_factory, responsive_model, tiny_liposome_models, name, size, nan, command):
    folder = tmp_path_factory.mktemp("cmd")
    data = np.random.default_rng(1).random(size).astype(np.float32)
    if nan:
        data[0, 0] = np.nan
    path = folder / "in" / f"{name}.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, data)
    out = folder / "out"
    detector, classifiers = tiny_liposome_models
    options = {"segment": {"model": responsive_model}, "homogeneity": {},
               "liposomes": {"pixel_size_nm": 2.5, "detector": detector, "classifiers": classifiers}}[command]
    rows = run_sync(files_steps(command, [path], out, **options))
    if rows[0]["status"] == "ok":
        assert not nan and min(size) >= 8
    else:
        assert str(path) in rows[0]["error"] and "\n" not in rows[0]["error"]
    written = [p for p in folder.rglob("*") if p.is_file() and out not in p.parents and p != path]
    assert not written, f"wrote outside the output folder: {written}"
    assert all(file_stem(path) in p.name for p in out.glob("*.tif"))


def _done(out: Path) -> int:
    return len(list(out.glob("*/result.json")))


# -- faults ------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_batch_killed_at_random_points_ends_with_the_same_outputs(responsive_model, user_registry, tmp_path):
    for i in range(8):
        _image(tmp_path / "in" / f"img{i}.tif", seed=i, size=160)
    # small tiles: many windows per input, so a kill lands part-way through one
    reference = run_batch("segment", [tmp_path / "in"], tmp_path / "ref", options={"model": responsive_model,
                                                                                  "tile": 32})
    assert not reference.failed
    out = tmp_path / "out"
    env = {**os.environ, "NANOCLASS_HOME": str(user_registry.parent)}
    command = [sys.executable, "-m", "napari_nanoclass.cli", "batch", "segment", str(tmp_path / "in"), "--out",
               str(out), "--model", responsive_model, "--set", "tile=32", "--log", "quiet"]
    rng = np.random.default_rng(7)
    after_kill: list[int] = []
    for _ in range(4):  # kill after a random number of finished inputs, part-way through the next
        process = subprocess.Popen(command, env=env)
        target = _done(out) + int(rng.integers(1, 3))
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline and _done(out) < target:
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0, 0.3)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        after_kill.append(_done(out))
    assert any(0 < n < 8 for n in after_kill), f"no run was killed part-way: {after_kill}"
    final = run_batch("segment", [tmp_path / "in"], out, options={"model": responsive_model, "tile": 32})
    assert not final.failed and not list(out.glob(".*.partial"))
    assert sum(row["skipped"] for row in final.rows) == after_kill[-1]  # finished inputs are kept
    for i in range(8):
        stem = f"img{i}"
        np.testing.assert_array_equal(tifffile.imread(out / stem / f"{stem}_labels.tif"),
                                      tifffile.imread(tmp_path / "ref" / stem / f"{stem}_labels.tif"))
        assert ((out / stem / f"{stem}_classes.csv").read_text()
                == (tmp_path / "ref" / stem / f"{stem}_classes.csv").read_text())


def test_a_folder_is_replaced_only_once_its_successor_is_in_place(tmp_path, monkeypatch):
    from napari_nanoclass.core import atomic

    target, new = tmp_path / "result", tmp_path / "result.partial"
    (target).mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    moves = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (moves.append((Path(a).name, Path(b).name)),
                                                             real_replace(a, b)))
    atomic.replace(new, target)
    assert moves == [("result", ".result.old"), ("result.partial", "result")]  # never a moment with neither
    assert [p.name for p in target.iterdir()] == ["new.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["result"]
