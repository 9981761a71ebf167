"""Batch processing: bad inputs isolated, resumable after SIGKILL, config replay, dask LocalCluster,
and the same result from the CLI, Python and the napari widget."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_nanoclass import run_batch
from napari_nanoclass.cli import main


def _images(folder: Path, n: int, size: int = 96) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.tif"
        tifffile.imwrite(path, rng.integers(0, 255, (size, size), dtype=np.uint8))
        paths.append(path)
    return paths


def _outputs(out: Path) -> dict[str, np.ndarray]:
    return {p.parent.name: tifffile.imread(p) for p in sorted(out.glob("*/*_labels.tif"))}


def test_bad_inputs_are_reported_and_the_batch_goes_on(responsive_model, tmp_path):
    folder = tmp_path / "in"
    _images(folder, 2)
    (folder / "corrupt.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    (folder / "empty.tif").write_bytes(b"")
    tifffile.imwrite(folder / "huge.tif", np.zeros((16, 16), np.uint8))
    with tifffile.TiffFile(folder / "huge.tif") as tif:  # where the size tags' values are stored
        offsets = [tif.pages[0].tags[name].valueoffset for name in ("ImageWidth", "ImageLength")]
    header = bytearray((folder / "huge.tif").read_bytes())  # declare 60000 × 60000 pixels in 256 bytes
    for offset in offsets:
        header[offset:offset + 4] = (60000).to_bytes(4, "little")
    (folder / "huge.tif").write_bytes(bytes(header))
    (folder / "notes.png").write_text("this is text, not an image")
    tifffile.imwrite(folder / "colour.tif", np.zeros((64, 64, 3), np.uint8) + [10, 200, 30])
    tifffile.imwrite(folder / "grey_rgb.tif", np.repeat(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64, 1), 3, 2))
    tifffile.imwrite(folder / "stack.tif", np.random.default_rng(1).integers(0, 255, (3, 64, 64), dtype=np.uint8))
    report = run_batch("segment", [folder], tmp_path / "out", options={"model": responsive_model})
    status = {Path(r["input"]).name: r for r in report.rows}
    failed = {"corrupt.tif", "empty.tif", "notes.png", "colour.tif", "huge.tif"}
    assert {n for n, r in status.items() if r["status"] == "failed"} == failed
    assert "empty" in status["empty.tif"]["error"] and "notes.png" in status["notes.png"]["error"]
    assert "colour (RGB)" in status["colour.tif"]["error"] and "truncated" in status["huge.tif"]["error"]
    assert tifffile.imread(tmp_path / "out" / "stack" / "stack_labels.tif").shape == (3, 64, 64)  # stack in, stack out
    from skimage.io import imread

    assert imread(tmp_path / "out" / "stack" / "overview.png").shape == (64, 64, 3)
    assert tifffile.imread(tmp_path / "out" / "grey_rgb" / "grey_rgb_labels.tif").shape == (64, 64)
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert summary["run"]["failed"] == 5 and summary["run"]["inputs"] == 9
    assert summary["run"]["models"]["model"].startswith(f"{responsive_model} sha256:")
    assert not list((tmp_path / "out").glob(".*partial"))  # failures leave no half-written folder
    assert main(["batch", "segment", str(folder), "--out", str(tmp_path / "out"), "--model", responsive_model,
                 "--log", "quiet"]) == 1


def test_the_memory_kept_for_reuse_is_handed_back_when_the_inputs_are_done(responsive_model, tmp_path, monkeypatch):
    from napari_nanoclass.batch import runner

    released, rows = [], []
    monkeypatch.setattr(runner, "release_memory", lambda: released.append(len(rows)))
    _images(tmp_path / "in", 2)
    run_batch("segment", [tmp_path / "in"], tmp_path / "out", options={"model": responsive_model},
              on_row=lambda row, done, total: rows.append(row))
    assert released == [2]  # once, after both inputs, not between them


def test_rerun_skips_complete_inputs_and_redoes_changed_ones(responsive_model, tmp_path):
    paths = _images(tmp_path / "in", 3)
    out = tmp_path / "out"
    first = run_batch("segment", [tmp_path / "in"], out, options={"model": responsive_model})
    assert [r["skipped"] for r in first.rows] == [False] * 3
    written = {stem: (out / stem / "result.json").stat().st_mtime_ns for stem in ("img00", "img01")}
    tifffile.imwrite(paths[1], np.zeros((96, 96), np.uint8))  # changed since its result
    again = run_batch("segment", [tmp_path / "in"], out, options={"model": responsive_model})
    assert [r["skipped"] for r in again.rows] == [True, False, True]
    assert (out / "img00" / "result.json").stat().st_mtime_ns == written["img00"]  # untouched
    assert (out / "img01" / "result.json").stat().st_mtime_ns > written["img01"]  # redone
    forced = run_batch("segment", [tmp_path / "in"], out, options={"model": responsive_model}, overwrite=True)
    assert not any(r["skipped"] for r in forced.rows)
    # the stored configuration repeats the run exactly
    config = json.loads((out / "batch_config.json").read_text())
    assert config["analysis"] == "segment" and config["options"] == {"model": responsive_model} and config["overwrite"]
    assert main(["batch", "--config", str(out / "batch_config.json"), "--log", "json"]) == 0
    # a folder in the way that the tool did not write is never replaced silently
    shutil.rmtree(out / "img02")
    (out / "img02").mkdir()
    (out / "img02" / "notes.txt").write_text("someone's work")
    kept = run_batch("segment", [tmp_path / "in"], out, options={"model": responsive_model})
    assert [r["status"] for r in kept.rows] == ["ok", "ok", "failed"]
    assert "not a napari-nanoclass result" in kept.rows[2]["error"]
    assert (out / "img02" / "notes.txt").read_text() == "someone's work"


def test_killed_run_resumes_to_the_same_results(responsive_model, user_registry, tmp_path):
    _images(tmp_path / "in", 12, size=192)
    reference = run_batch("segment", [tmp_path / "in"], tmp_path / "ref", options={"model": responsive_model})
    assert not reference.failed
    out = tmp_path / "out"
    # small tiles make each input many steps, so that the run is still going when Ctrl-C arrives
    command = [sys.executable, "-m", "napari_nanoclass.cli", "batch", "segment", str(tmp_path / "in"), "--out",
               str(out), "--model", responsive_model, "--set", "tile=32", "--log", "quiet"]
    env = {**os.environ, "NANOCLASS_HOME": str(user_registry.parent)}
    process = subprocess.Popen(command, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*/result.json"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    complete = len(list(out.glob("*/result.json")))
    assert 3 <= complete < 12, "the run should have been killed part-way"
    resumed = run_batch("segment", [tmp_path / "in"], out, options={"model": responsive_model})
    assert sum(r["skipped"] for r in resumed.rows) >= complete - 1 and not resumed.failed
    ref, got = _outputs(tmp_path / "ref"), _outputs(out)
    assert ref.keys() == got.keys() and all(np.array_equal(ref[k], got[k]) for k in ref)
    assert len({ref[k].tobytes() for k in ref}) == len(ref)  # outputs differ per image: a real comparison
    assert not list(out.glob(".*partial"))


def test_ctrl_c_stops_cleanly_and_the_rerun_completes(responsive_model, user_registry, tmp_path):
    _images(tmp_path / "in", 12, size=192)
    out = tmp_path / "out"
    # small tiles make each input many steps, so that the run is still going when Ctrl-C arrives
    command = [sys.executable, "-m", "napari_nanoclass.cli", "batch", "segment", str(tmp_path / "in"), "--out",
               str(out), "--model", responsive_model, "--set", "tile=32", "--log", "quiet"]
    env = {**os.environ, "NANOCLASS_HOME": str(user_registry.parent)}
    # a suite started in the background (``cmd &``) hands its children SIGINT ignored: a user's
    # terminal does not, so the child gets the default disposition back
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*/result.json"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in err and "Traceback" not in err
    done = len(list(out.glob("*/result.json")))
    assert 2 <= done < 12
    resumed = run_batch("segment", [tmp_path / "in"], out, options={"model": responsive_model})
    assert not resumed.failed and sum(r["skipped"] for r in resumed.rows) == done
    reference = run_batch("segment", [tmp_path / "in"], tmp_path / "ref", options={"model": responsive_model})
    ref, got = _outputs(tmp_path / "ref"), _outputs(out)
    assert not reference.failed and ref.keys() == got.keys() and all(np.array_equal(ref[k], got[k]) for k in ref)


@pytest.mark.timeout(300)
def test_local_cluster_gives_the_same_results(responsive_model, tmp_path):
    _images(tmp_path / "in", 4)
    run_batch("segment", [tmp_path / "in"], tmp_path / "seq", options={"model": responsive_model})
    finished: dict[str, float] = {}

    def on_progress(stem: str, step) -> None:
        finished[stem] = max(finished.get(stem, 0.0), step.fraction)

    parallel = run_batch("segment", [tmp_path / "in"], tmp_path / "par", options={"model": responsive_model}, workers=2,
                         on_progress=on_progress)
    assert not parallel.failed and parallel.run["workers"] == 2
    seq, par = _outputs(tmp_path / "seq"), _outputs(tmp_path / "par")
    assert seq.keys() == par.keys() and all(np.array_equal(seq[k], par[k]) for k in seq)
    deadline = time.time() + 10  # the workers' progress events reach this process asynchronously
    while time.time() < deadline and len(finished) < 4:
        time.sleep(0.1)
    assert finished == dict.fromkeys(seq, 1.0)  # every input reported its progress from its worker, to the end


def test_progress_within_each_input_and_overall(responsive_model, tmp_path, capsys):
    _images(tmp_path / "in", 2, size=160)  # 3 × 3 tiles of 64 px each
    rows, steps = [], {}
    run_batch("segment", [tmp_path / "in"], tmp_path / "out", options={"model": responsive_model, "tile": 64},
              on_row=lambda row, done, total: rows.append((row["stem"], done, total)),
              on_progress=lambda stem, step: steps.setdefault(stem, []).append(step.fraction))
    assert rows == [("img00", 1, 2), ("img01", 2, 2)]
    assert steps.keys() == {"img00", "img01"}
    for fractions in steps.values():  # tile by tile, in order, to the end
        assert len(fractions) >= 9 and fractions == sorted(fractions) and fractions[-1] == 1.0
    capsys.readouterr()
    assert main(["batch", "segment", str(tmp_path / "in"), "--out", str(tmp_path / "json"), "--model",
                 responsive_model, "--log", "json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["stem"], e["done"]) for e in events if e["event"] == "file"] == [("img00", 1), ("img01", 2)]
    assert {e["stem"] for e in events if e["event"] == "progress" and e["fraction"] == 1.0} == {"img00", "img01"}
    assert main(["batch", "segment", str(tmp_path / "in"), "--out", str(tmp_path / "bar"), "--model",
                 responsive_model]) == 0
    err = capsys.readouterr().err
    assert "nanoclass batch segment" in err and "img01" in err and "2/2" in err


def test_ome_zarr_outputs_match_tiff_and_open_again(responsive_model, tmp_path):
    import zarr

    from napari_nanoclass.io.images import read_image, read_label_image, read_output

    stack = tmp_path / "in" / "stack.tif"
    stack.parent.mkdir()
    tifffile.imwrite(stack, np.random.default_rng(3).integers(0, 255, (2, 96, 80), dtype=np.uint8))
    assert main(["batch", "segment", str(stack), "--out", str(tmp_path / "zarr"), "--model", responsive_model,
                 "--format", "ome-zarr", "--set", "probabilities=true", "--log", "quiet"]) == 0
    run_batch("segment", [stack], tmp_path / "tif", options={"model": responsive_model})
    folder = tmp_path / "zarr" / "stack"
    group = zarr.open_group(str(folder / "stack_labels.ome.zarr"), mode="r")  # the input, its labels under it
    assert group["labels"].attrs["labels"] == ["classes"] and "image-label" in group["labels/classes"].attrs
    for node in (group, group["labels/classes"]):
        assert [a["name"] for a in node.attrs["multiscales"][0]["axes"]] == ["z", "y", "x"]
    np.testing.assert_array_equal(np.asarray(read_image(folder / "stack_labels.ome.zarr").data),
                                  tifffile.imread(stack))
    labels = np.asarray(read_label_image(folder / "stack_labels.ome.zarr")[0])
    assert np.array_equal(labels, tifffile.imread(tmp_path / "tif" / "stack" / "stack_labels.tif"))
    assert len(np.unique(labels)) > 1 and not list(folder.glob("*.tif"))
    probabilities = zarr.open_group(str(folder / "stack_probabilities.ome.zarr"), mode="r")
    assert [a["name"] for a in probabilities.attrs["multiscales"][0]["axes"]] == ["c", "z", "y", "x"]
    assert np.allclose(np.asarray(read_output(folder / "stack_probabilities.ome.zarr")).sum(0), 1, atol=1e-5)
    from skimage.io import imread

    overview = imread(folder / "overview.png")  # the first plane, its labels overlaid in colour
    assert overview.shape == (96, 80, 3) and (overview[..., 0] != overview[..., 1]).any()
    layer = _open_in_viewer(folder).layers["stack labels"]
    assert np.array_equal(np.asarray(layer.data), labels) and list(layer.features["class"]) == ["c0", "c1", "c2"]
    from napari_nanoclass.core.analysis import FORMATS
    from napari_nanoclass.io.images import OUTPUT_FORMATS

    assert list(FORMATS) == list(OUTPUT_FORMATS)  # the CLI offers every format the writer knows
    with pytest.raises(SystemExit):  # a format that does not exist is refused before any work
        main(["batch", "segment", str(stack), "--out", str(tmp_path / "x"), "--format", "png"])
    with pytest.raises(ValueError, match="output format"):
        run_batch("segment", [stack], tmp_path / "y", options={"model": responsive_model, "output_format": "png"})


def test_cli_python_and_widget_agree(responsive_model, tmp_path, qtbot):
    from napari.components import ViewerModel

    from napari_nanoclass._napari.segmentation import SegmentWidget
    from napari_nanoclass.io.images import read_image

    (path,) = _images(tmp_path / "in", 1)
    assert main(["batch", "segment", str(path), "--out", str(tmp_path / "cli"), "--model", responsive_model,
                 "--log", "quiet"]) == 0
    run_batch("segment", [path], tmp_path / "py", options={"model": responsive_model})
    viewer = ViewerModel()
    viewer.add_image(read_image(path).data, name="img")
    widget = SegmentWidget(viewer)
    widget.model.value = responsive_model
    widget.runner.synchronous = True
    widget.run_button.clicked.emit()
    from_widget = np.asarray(viewer.layers[f"{responsive_model} labels"].data)
    cli, py = _outputs(tmp_path / "cli")["img00"], _outputs(tmp_path / "py")["img00"]
    assert len(np.unique(cli)) > 1 and np.array_equal(cli, py) and np.array_equal(cli, from_widget)


def test_duplicate_names_and_unknown_analysis_are_refused(tmp_path):
    _images(tmp_path / "a", 1)
    _images(tmp_path / "b", 1)
    with pytest.raises(ValueError, match="share the name"):
        run_batch("segment", [tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    with pytest.raises(ValueError, match="unknown analysis"):
        run_batch("classify", [tmp_path / "a"], tmp_path / "out")


def _open_in_viewer(folder: Path):
    from napari.components import ViewerModel

    from napari_nanoclass.io.reader import get_reader

    viewer = ViewerModel()
    layers = get_reader(str(folder))(str(folder))
    for data, meta, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **meta)
    # the batch root opens every input, this one included
    assert _layer_names(get_reader(str(folder.parent))(str(folder.parent))) >= _layer_names(layers)
    return viewer


def _layer_names(layers) -> set[str]:
    """The names of the layers LayerData tuples make (a list of them with a channel axis)."""
    return {name for _, meta, _ in layers for name in (meta["name"] if isinstance(meta["name"], list) else [meta["name"]])}


def test_results_of_each_analysis_open_again_as_layers(responsive_model, tiny_liposome_models, tmp_path, qtbot):
    import torch

    from napari_nanoclass.homogeneity.train import HomogeneityConfig, model_info
    from napari_nanoclass.liposomes import CLASS_COLOURS
    from napari_nanoclass.liposomes.simulator import SimulationConfig, simulate_field
    from napari_nanoclass.models.fibre_cnn import FibreCNN
    from napari_nanoclass.models.registry import save_model

    stack = tmp_path / "in" / "stack.tif"
    stack.parent.mkdir()
    tifffile.imwrite(stack, np.random.default_rng(3).integers(0, 255, (2, 64, 64), dtype=np.uint8))
    run_batch("segment", [stack], tmp_path / "seg", options={"model": responsive_model})
    viewer = _open_in_viewer(tmp_path / "seg" / "stack")
    labels = viewer.layers["stack labels"]
    assert labels.data.shape == (2, 64, 64) and list(labels.features["class"]) == ["c0", "c1", "c2"]
    assert np.allclose(labels.colormap.map(np.array([1]))[0], [1, 0, 0, 1])  # the model's colour for class 1

    torch.manual_seed(0)
    info = model_info(HomogeneityConfig(name="tiny-fibre", widths=[4, 8], hidden=8, patch=32))
    save_model(FibreCNN(**info.arch_params).eval(), info)
    mat = tmp_path / "in" / "mat.tif"
    tifffile.imwrite(mat, np.random.default_rng(4).integers(0, 255, (96, 128), dtype=np.uint8))
    run_batch("homogeneity", [mat], tmp_path / "fib", options={"model": "tiny-fibre"})
    heat = _open_in_viewer(tmp_path / "fib" / "mat").layers["mat p(NHNF)"]
    assert heat.data.shape == (96, 128) and tuple(heat.scale) == (1, 1) and heat.colormap.name == "inferno"

    _, classifiers = tiny_liposome_models  # the shipped detector, so that there are objects to read back
    cryo = tmp_path / "in" / "cryo.tif"
    tifffile.imwrite(cryo, simulate_field(SimulationConfig(shape=(256, 256), objects=(4, 5)), seed=2).image)
    run_batch("liposomes", [cryo], tmp_path / "lip", options={"pixel_size_nm": 2.5, "classifiers": classifiers,
                                                              "output_format": "ome-zarr"})
    assert (tmp_path / "lip" / "cryo" / "cryo_labels.ome.zarr").is_dir()
    layer = _open_in_viewer(tmp_path / "lip" / "cryo").layers["cryo liposomes"]
    index = list(layer.features["index"])
    assert index and index == sorted(np.unique(layer.data[layer.data > 0]).tolist())
    first = layer.features.iloc[0]
    expected = CLASS_COLOURS[first["lamellarity"]]
    assert np.allclose(layer.colormap.map(np.array([index[0]]))[0, :3],
                       [int(expected[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    assert {"diameter_nm", "lamellarity", "encapsulation_confidence"} <= set(layer.features.columns)


def test_overview_of_a_large_stack_is_a_small_first_plane(tmp_path):
    from skimage.io import imread

    from napari_nanoclass.batch.runner import write_overview
    from napari_nanoclass.core.analysis import get
    from napari_nanoclass.io.images import write_label_image

    source = tmp_path / "big.tif"
    tifffile.imwrite(source, np.random.default_rng(0).integers(0, 255, (3, 1100, 900), dtype=np.uint8))
    labels = np.zeros((3, 1100, 900), np.uint8)
    labels[0, :550] = 1  # the top half of the first plane only
    write_label_image(tmp_path / "big_labels.ome.zarr", labels, tifffile.imread(source), name="classes")
    overview = imread(write_overview(get("segment"), tmp_path, "big", source))
    assert overview.shape == (367, 300, 3)  # every 3rd pixel: at most 512 a side
    coloured = overview[..., 0] != overview[..., 1]
    assert coloured[:180].mean() > 0.9 and coloured[190:].mean() < 0.05


def test_run_records_the_model_that_made_the_defect_maps():
    from napari_nanoclass.batch.runner import _models
    from napari_nanoclass.core.analysis import get
    from napari_nanoclass.homogeneity import DEFAULT_CAM_MODEL, DEFAULT_MODEL

    homogeneity = get("homogeneity")
    default = _models(homogeneity, {"cam": True})
    assert default["model"].startswith(f"{DEFAULT_MODEL} sha256:")
    assert default["cam_model"].startswith(f"{DEFAULT_CAM_MODEL} sha256:")  # the texture model has no CAM
    cnn = _models(homogeneity, {"model": DEFAULT_CAM_MODEL, "cam": True})
    assert cnn["cam_model"] == cnn["model"]  # a CNN makes its own
    assert "cam_model" not in _models(homogeneity, {})


PAUSE = 1.5  # seconds each toy input takes without a step of its own: longer than the heartbeat


@pytest.mark.timeout(60)
def test_closing_a_cluster_run_cancels_what_is_pending_and_a_rerun_does_the_rest(monkeypatch, tmp_path):
    """Cancel on the cluster path: steps keep coming while a worker is busy (heartbeats), closing
    the run cancels the inputs not yet settled and releases the output folder, and a rerun on the
    same cluster skips what was finished and does the rest."""
    from dask.distributed import Client, LocalCluster

    from napari_nanoclass.batch.runner import HEARTBEAT, batch_steps
    from napari_nanoclass.core import analysis as registry
    from napari_nanoclass.core.outputs import claim

    monkeypatch.setattr(registry, "REGISTERED", (*registry.REGISTERED, "tests.toy_analysis"))
    cancelled: list = []
    cancel = Client.cancel
    monkeypatch.setattr(Client, "cancel", lambda self, futures, *a, **k: (cancelled.extend(futures),
                                                                          cancel(self, futures, *a, **k))[1])
    _images(tmp_path / "in", 4, size=32)
    out = tmp_path / "out"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        steps = batch_steps("threshold", [tmp_path / "in"], out, options={"pause": PAUSE},
                            scheduler=cluster.scheduler_address)
        seen = []
        for step in steps:
            seen.append((time.perf_counter(), step))
            if step.row is not None:
                break  # the first input is settled, the second in hand on the one worker thread
        steps.close()
        assert seen[-1][1].row["stem"] == "img00" and seen[-1][1].row["status"] == "ok"
        working = [t for t, step in seen if not step.message.startswith("checking inputs")]
        assert max(np.diff(working)) < HEARTBEAT + 2.0  # a step about every heartbeat (slack for a loaded machine)
        assert any("waiting for the workers" in step.message for _, step in seen)
        # the three inputs not settled were cancelled on the cluster, not left to run
        assert len(cancelled) == 3 and all(future.cancelled() for future in cancelled)
        with claim(out):  # the folder is released: another run may take it
            pass
        time.sleep(2 * PAUSE + 0.3)  # the one in hand is done, and the next would be, had it been left to run
        finished = sorted(p.parent.name for p in out.glob("*/result.json"))
        assert finished in (["img00"], ["img00", "img01"])  # at most the one in hand ran on
        assert not list(out.glob(".*partial"))
        # the pause changes how long, not what: the rerun reuses the finished inputs and does the rest
        report = run_batch("threshold", [tmp_path / "in"], out, options={"pause": 0.0},
                           scheduler=cluster.scheduler_address)
    assert not report.failed and [r["skipped"] for r in report.rows] == [r["stem"] in finished for r in report.rows]
    assert sorted(p.parent.name for p in out.glob("*/result.json")) == ["img00", "img01", "img02", "img03"]


def test_a_rerun_redoes_the_inputs_whose_exclusion_mask_changed(responsive_model, tmp_path):
    """With ``exclude``, an input's mask is part of what its result was made from: a mask drawn,
    redrawn or removed since makes the result stale, and only that input is done again."""
    _images(tmp_path / "in", 3)
    (tmp_path / "masks").mkdir()
    mask = np.zeros((96, 96), np.uint8)
    mask[:40, :40] = 1
    tifffile.imwrite(tmp_path / "masks" / "img00.tif", mask)
    out, options = tmp_path / "out", {"model": responsive_model, "exclude": str(tmp_path / "masks")}
    first = run_batch("segment", [tmp_path / "in"], out, options=options)
    assert not first.failed and not tifffile.imread(out / "img00" / "img00_labels.tif")[:40, :40].any()
    assert [r["skipped"] for r in run_batch("segment", [tmp_path / "in"], out, options=options).rows] == [True] * 3
    mask[:40, :60] = 1
    tifffile.imwrite(tmp_path / "masks" / "img00.tif", mask)  # redrawn
    tifffile.imwrite(tmp_path / "masks" / "img02.tif", mask)  # drawn for an input that had none
    again = run_batch("segment", [tmp_path / "in"], out, options=options)
    assert [(r["skipped"], r["reason"]) for r in again.rows] == [
        (False, "exclusion mask changed"), (True, "complete, same signature"), (False, "exclusion mask changed")]
    assert not tifffile.imread(out / "img02" / "img02_labels.tif")[:40, :60].any()
