"""The "Batch folder" dock on napari's ViewerModel: a threaded run with progress and a per-input
list, results opened through the reader, a rerun that skips, Cancel, bad folders refused, and the
same run from Python."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_nanoclass._napari.batch import BatchWidget
from napari_nanoclass.batch.runner import batch_steps, check_folders, run_batch
from napari_nanoclass.cli import main
from napari_nanoclass.core.analysis import Analysis, Option, analyses

from .test_batch import _images


def _dock(viewer, model: str, folder: Path, out: Path, **fields) -> BatchWidget:
    widget = BatchWidget(viewer)
    widget.model.value = model
    widget.folder.line_edit.value = str(folder)  # "" stays empty (FileEdit.value would make it ".")
    widget.out.line_edit.value = str(out)
    for name, value in fields.items():
        widget.fields[name][1].value = value
    return widget


def _run_threaded(widget: BatchWidget, qtbot, timeout: int = 60000) -> list[tuple[float, object]]:
    """Click Run and wait for the end; returns (time, step) of every progress event the dock got."""
    events: list[tuple[float, object]] = []
    original = widget.on_step
    widget.on_step = lambda step: (events.append((time.perf_counter(), step)), original(step))
    events.append((time.perf_counter(), None))
    widget.run_button.clicked.emit()
    assert widget.runner.worker is not None and widget.runner.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=timeout)
    return events


def test_dock_runs_a_folder_with_progress_and_opens_the_results(viewer, responsive_model, tmp_path, qtbot):
    _images(tmp_path / "in", 3, size=160)
    widget = _dock(viewer, responsive_model, tmp_path / "in", tmp_path / "out", tile=64)  # 3 × 3 tiles each
    events = _run_threaded(widget, qtbot)
    steps = [step for _, step in events[1:]]
    assert widget.runner.last_error is None and widget.report is not None
    within = [s for s in steps if s.step is not None]
    assert {s.stem for s in within} == {"img00", "img01", "img02"} and len(within) >= 27  # tile by tile
    fractions = [s.fraction for s in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # the bar only moves forward, to the end
    gaps = np.diff([t for t, _ in events])
    assert gaps.max() < 1.5, f"longest wait for progress {gaps.max():.2f} s"
    assert widget.table.data.to_list() == [[f"img0{i}", "done", widget.table.data.to_list()[i][2]] for i in range(3)]
    assert all(detail.startswith("new input;") for _, _, detail in widget.table.data.to_list())
    assert widget.summary.value == "3 done, 0 skipped, 0 failed (3 of 3)"
    # the results, read back by the plugin's reader: the source images and their labels
    assert [layer.name for layer in viewer.layers] == ["img00", "img00 labels", "img01", "img01 labels", "img02",
                                                       "img02 labels"]
    for stem in ("img00", "img01", "img02"):
        written = tifffile.imread(tmp_path / "out" / stem / f"{stem}_labels.tif")
        assert np.array_equal(np.asarray(viewer.layers[f"{stem} labels"].data), written)
        assert list(viewer.layers[f"{stem} labels"].features["class"]) == ["c0", "c1", "c2"]
    assert [layer.visible for layer in viewer.layers] == [False] * 4 + [True] * 2  # the last input on top
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert summary["run"]["processed"] == 3 and summary["run"]["options"] == widget.options()


def test_rerun_skips_finished_inputs_and_redoes_a_changed_one(viewer, responsive_model, tmp_path):
    paths = _images(tmp_path / "in", 3)
    widget = _dock(viewer, responsive_model, tmp_path / "in", tmp_path / "out")
    widget.runner.synchronous = True
    widget.run()
    assert [row[1] for row in widget.table.data.to_list()] == ["done"] * 3 and len(viewer.layers) == 6
    tifffile.imwrite(paths[1], np.zeros((96, 96), np.uint8))  # changed since its result
    (tmp_path / "in" / "broken.tif").write_bytes(b"not a tiff")
    widget.run()
    table = widget.table.data.to_list()
    assert [row[:2] for row in table] == [["broken", "failed"], ["img00", "skipped"], ["img01", "done"],
                                         ["img02", "skipped"]]
    assert table[0][2].startswith("broken.tif: ") and table[2][2].startswith("input changed;")
    assert table[1][2] == "already done, nothing changed"
    assert widget.summary.value == "1 done, 2 skipped, 1 failed (4 of 4)"
    # the skipped inputs are not opened twice; the redone one keeps its earlier labels as "(previous)"
    names = [layer.name for layer in viewer.layers]
    assert sorted(names) == sorted(["img00", "img00 labels", "img01 (previous)", "img01 labels (previous)",
                                    "img02", "img02 labels", "img01", "img01 labels"])
    assert not np.asarray(viewer.layers["img01"].data).any()  # the new input, all zeros


def test_cancel_stops_within_a_second_and_a_rerun_does_the_rest(viewer, responsive_model, tmp_path, qtbot):
    _images(tmp_path / "in", 8, size=384)
    out = tmp_path / "out"
    widget = _dock(viewer, responsive_model, tmp_path / "in", out, tile=64)  # 6 × 6 tiles per input
    seen: list[float] = []
    widget.run_button.clicked.emit()
    widget.runner.worker.yielded.connect(lambda _step: seen.append(time.perf_counter()))
    qtbot.waitUntil(lambda: len(widget.rows) >= 1, timeout=60000)  # the first input is finished
    clicked = time.perf_counter()
    widget.runner.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10000)
    latency = time.perf_counter() - clicked
    assert latency < 1.0, f"Cancel took {latency:.2f} s"
    assert np.diff(seen).max() < 1.5  # progress kept coming while it ran
    assert widget.runner.status.value.startswith("cancelled; the ")
    finished = sorted(p.parent.name for p in out.glob("*/result.json"))
    assert 1 <= len(finished) < 8 and not list(out.glob(".*.partial"))  # the input in hand left nothing behind
    assert not viewer.layers  # nothing opened for a cancelled run
    widget.runner.synchronous = True
    widget.run()  # the folder was released at once, and the rerun resumes
    table = widget.table.data.to_list()
    assert sorted(row[0] for row in table if row[1] == "skipped") == finished
    assert sum(row[1] == "done" for row in table) == 8 - len(finished)


@pytest.mark.parametrize("case, message", [
    ("nothing", "choose an input folder"),
    ("missing", "no such folder"),
    ("file", "is a file, not a folder"),
    ("empty", "holds nothing segment reads (files ending in .bmp"),
    ("no images", "holds nothing segment reads"),
    ("same", "is the input folder"),
    ("no output", "choose an output folder"),
])
def test_bad_folders_are_refused_with_a_message(viewer, responsive_model, tmp_path, case, message):
    folder, out = tmp_path / "in", tmp_path / "out"
    _images(folder, 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    chosen = {"nothing": ("", out), "missing": (tmp_path / "nope", out), "file": (folder / "img00.tif", out),
              "empty": (tmp_path / "empty", out), "no images": (tmp_path / "notes", out), "same": (folder, folder),
              "no output": (folder, "")}[case]
    widget = _dock(viewer, responsive_model, *chosen)
    widget.run_button.clicked.emit()
    assert message in widget.runner.status.value and widget.runner.status.value.startswith("error")
    assert widget.runner.worker is None and widget.run_button.enabled  # nothing started
    assert not out.exists() and not (folder / "run_summary.json").exists()


def test_the_dock_run_is_the_python_run(viewer, responsive_model, tmp_path):
    """What the dock runs is run_batch with the dock's options: a Python run afterwards finds
    every input done (same signature), and check_folders gives the dock's inputs."""
    _images(tmp_path / "in", 2)
    widget = _dock(viewer, responsive_model, tmp_path / "in", tmp_path / "out", tta=True)
    widget.open_results.value = False
    widget.runner.synchronous = True
    widget.run()
    assert widget.options() == {"model": responsive_model, "tile": 1024, "tta": True} and not viewer.layers
    report = run_batch("segment", [tmp_path / "in"], tmp_path / "out", options=widget.options())
    assert all(row["skipped"] for row in report.rows)
    # as the command line runs it: no tile (it changes how, not what), the model and tta given
    report = run_batch("segment", [tmp_path / "in"], tmp_path / "out", options={"model": responsive_model, "tta": True})
    assert all(row["skipped"] for row in report.rows)
    report = run_batch("segment", [tmp_path / "in"], tmp_path / "out", options={"model": responsive_model})
    assert not any(row["skipped"] for row in report.rows)  # without tta the results differ: redone
    assert [p.name for p in check_folders("segment", tmp_path / "in", tmp_path / "out")] == ["img00.tif", "img01.tif"]


def test_each_analysis_offers_its_models_and_options(viewer, tiny_liposome_models):
    widget = BatchWidget(viewer)
    shown = {}
    for analysis in ("segment", "homogeneity", "liposomes", "xrd"):
        widget.analysis.value = analysis
        shown[analysis] = {name for name, (_, field) in widget.fields.items() if not field.native.isHidden()}
        assert widget.model.value in widget.model.choices
    for analysis in analyses():  # every option has its field, but the model and device, which have their boxes
        assert shown[analysis.name] == {o.name for o in analysis.all_options} - {analysis.model_option, "device"}
    assert "cam" not in shown["segment"] and "cam_model" in shown["homogeneity"]
    assert {"classifiers.lamellarity", "classifiers.encapsulation"} <= shown["liposomes"]
    widget.analysis.value = "liposomes"
    assert widget.model.value is None and "tiny-detector" in widget.model.choices  # automatic, by pixel size
    assert "drosophila-seunet" not in widget.model.choices
    widget.fields["pixel_size_nm"][1].value = 2.5
    widget.model.value = "tiny-detector"
    assert widget.options() == {"pixel_size_nm": 2.5, "detector": "tiny-detector"}
    widget.analysis.value = "homogeneity"
    assert widget.model.value == "nanofibre-texture" and widget.options() == {"pixel_size_nm": 2.5}


def _away_from_default(option: Option, spec: Analysis, widget: BatchWidget) -> object:
    """A value of ``option`` other than its default that the dock can show (None: none to choose)."""
    if option.name == spec.model_option:
        return next((c for c in widget.model.choices if c not in (None, option.default)), None)
    if option.name == "device":
        return "cpu"
    if option.kind is bool:
        return True
    if option.choices:
        return next(c for c in option.choices if c != option.default)
    if option.kind in (int, float):
        value = option.kind(option.low or 0) + 1
        return value if option.high is None or value <= option.high else round((option.low + option.high) / 2, 2)
    return f"some-{option.name.replace('.', '-')}"


def _cli_args(spec: Analysis, values: dict) -> list[str]:
    """``nanoclass batch`` flags for ``values``: the model, pixel size and format by their own flags,
    the rest by name."""
    own = {spec.model_option: "--model", "pixel_size_nm": "--pixel-size", "output_format": "--format"}
    args = []
    for name, value in values.items():
        args += [own[name], str(value)] if name in own else ["--set", f"{name}={json.dumps(value)}"]
    return args


def _names(options: dict) -> set[str]:
    """The option names a job's keyword arguments set (a mapping's entries as dotted names)."""
    names: set[str] = set()
    for key, value in options.items():
        names |= {f"{key}.{entry}" for entry in value} if isinstance(value, dict) else {key}
    return names


def test_the_dock_and_the_command_line_pass_the_same_options_of_every_analysis(
        viewer, responsive_model, tiny_liposome_models, tmp_path, monkeypatch):
    """Every option of every registered analysis, set away from its default in the dock and on the
    ``nanoclass batch`` command line, reaches the runner, and with the same value from both."""
    import napari_nanoclass._napari.batch as dock
    import napari_nanoclass.batch.runner as runner

    received: dict[str, list[dict]] = {"dock": [], "cli": []}

    def dock_run(analysis, inputs, out, *, options, overwrite):
        received["dock"].append(options)
        raise ValueError("stop before any work")

    def cli_run(analysis, inputs, out, *, options, **kwargs):
        received["cli"].append(options)
        raise KeyboardInterrupt

    monkeypatch.setattr(dock, "check_folders", lambda *args: [])
    monkeypatch.setattr(dock, "batch_steps", dock_run)
    monkeypatch.setattr(runner, "run_batch", cli_run)
    (image,) = _images(tmp_path / "in", 1)
    widget = _dock(viewer, responsive_model, tmp_path / "in", tmp_path / "out")
    for spec in analyses():
        widget.analysis.value = spec.name
        values = {o.name: _away_from_default(o, spec, widget) for o in spec.all_options}
        values = {name: value for name, value in values.items() if value is not None}
        for name, value in values.items():
            box = {spec.model_option: widget.model, "device": widget.device}.get(name) or widget.fields[name][1]
            box.value = value
        widget.run()
        assert main(["batch", spec.name, str(image), "--out", str(tmp_path / "cli"), "--log", "quiet",
                     *_cli_args(spec, values)]) == 130
        from_dock, from_cli = received["dock"][-1], received["cli"][-1]
        assert from_dock == from_cli, spec.name
        assert _names(from_dock) == set(values) and len(values) >= len(spec.all_options) - 1, spec.name
    assert len(received["dock"]) == len(received["cli"]) == len(analyses())


def test_closing_the_run_keeps_finished_inputs_and_releases_the_folder(responsive_model, tmp_path):
    """What Cancel does, without the dock: the generator closed part-way."""
    _images(tmp_path / "in", 3, size=160)
    steps = batch_steps("segment", [tmp_path / "in"], tmp_path / "out", options={"model": responsive_model, "tile": 64})
    for step in steps:
        if step.stem == "img01" and step.step is not None:
            break  # inside the second input
    assert (tmp_path / "out" / ".img01.partial").is_dir()
    steps.close()
    assert not (tmp_path / "out" / ".img01.partial").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "batch_config.json", "img00"]  # no run summary for a run that did not end
    report = run_batch("segment", [tmp_path / "in"], tmp_path / "out", options={"model": responsive_model, "tile": 64})
    assert [row["skipped"] for row in report.rows] == [True, False, False]  # not locked: it resumes


def test_the_manifest_docks_it_as_batch_folder():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(Path(__file__).parents[1] / "src" / "napari_nanoclass" / "napari.yaml")
    widget = next(w for w in manifest.contributions.widgets if w.display_name == "Batch folder")
    command = next(c for c in manifest.contributions.commands if c.id == widget.command)
    assert command.python_name == "napari_nanoclass._napari.batch:BatchWidget"


def test_a_skipped_input_s_probability_layers_are_not_opened_twice(viewer, responsive_model, tmp_path):
    _images(tmp_path / "in", 1)
    widget = _dock(viewer, responsive_model, tmp_path / "in", tmp_path / "out", probabilities=True)
    widget.runner.synchronous = True
    widget.run()
    opened = [layer.name for layer in viewer.layers]
    assert sum("p(" in name for name in opened) == 3  # one layer per class
    widget.run()  # everything skipped as done: nothing opened again, nothing renamed
    assert [layer.name for layer in viewer.layers] == opened


def test_results_are_read_in_the_worker_thread_and_only_added_in_the_gui_thread(viewer, responsive_model, tmp_path,
                                                                                qtbot, monkeypatch):
    import threading

    from napari_nanoclass.io import reader

    threads: list[str] = []
    real = reader.get_reader

    def watched(path):
        threads.append(threading.current_thread().name)
        return real(path)

    monkeypatch.setattr(reader, "get_reader", watched)
    _images(tmp_path / "in", 2)
    widget = _dock(viewer, responsive_model, tmp_path / "in", tmp_path / "out")
    _run_threaded(widget, qtbot)
    assert len(threads) == 2 and threading.main_thread().name not in threads
    assert {"img00 labels", "img01 labels"} <= {layer.name for layer in viewer.layers}
