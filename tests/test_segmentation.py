"""Segmentation API and the `nanoclass segment` output contract."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
import zarr

from napari_nanoclass import segment
from napari_nanoclass.cli import main
from napari_nanoclass.core.outputs import LOCK_NAME
from napari_nanoclass.models.registry import load_model
from napari_nanoclass.segmentation import predict as segmentation


def test_segment_returns_class_indices_and_table(tiny_model, em_image):
    result = segment(em_image, tiny_model, probabilities=True)
    assert result.labels.shape == em_image.shape and result.labels.dtype == np.uint8
    assert result.probabilities.shape == (3, *em_image.shape)
    np.testing.assert_array_equal(result.labels, result.probabilities.argmax(0))
    table = result.class_table()
    assert [r["class"] for r in table] == ["c0", "c1", "c2"]
    assert sum(r["area_px"] for r in table) == em_image.size
    assert result.model_sha256 == load_model(tiny_model).sha256


def test_stack_gives_stack_labels_equal_to_per_plane(tiny_model, em_image):
    stack = np.stack([em_image, em_image[::-1]])
    result = segment(stack, tiny_model)
    assert result.labels.shape == stack.shape
    np.testing.assert_array_equal(result.labels[1], segment(stack[1], tiny_model).labels)


def test_large_images_stream_through_zarr(tiny_model, em_image, tmp_path, monkeypatch):
    monkeypatch.setattr(segmentation, "IN_MEMORY_LIMIT", 1000)
    with pytest.raises(ValueError, match="workdir"):
        segment(em_image, tiny_model)
    result = segment(zarr.array(em_image), tiny_model, workdir=tmp_path)
    assert not isinstance(result.labels, np.ndarray)
    np.testing.assert_array_equal(np.asarray(result.labels), segment(em_image, tiny_model, workdir=tmp_path).labels)


def test_cli_segment_contract_and_bad_files_reported(tiny_model, em_image, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    tifffile.imwrite(inputs / "good.tif", em_image)
    (inputs / "empty.tif").write_bytes(b"")
    (inputs / "notes.png").write_text("hello")
    out = tmp_path / "out"
    code = main(["segment", str(inputs), "--out", str(out), "--model", tiny_model, "--quiet"])
    assert code == 1  # some inputs failed
    labels = tifffile.imread(out / "good_labels.tif")
    np.testing.assert_array_equal(labels, segment(em_image, tiny_model).labels)
    with open(out / "segmentation.csv") as fh:
        rows = {r["image"]: r for r in csv.DictReader(fh)}
    assert rows["good"]["status"] == "ok"
    assert rows["empty"]["status"] == "failed" and "empty" in rows["empty"]["error"]
    assert rows["notes"]["status"] == "failed"
    err = capsys.readouterr().err
    assert "empty.tif" in err and "notes.png" in err
    leftovers = [p for p in out.iterdir() if "partial" in p.name or p.name.startswith(".")]
    assert [p.name for p in leftovers] == [LOCK_NAME]  # only the (released) lock that kept other runs out


def test_cli_unknown_model_is_a_usage_error(em_image, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", em_image)
    assert main(["segment", str(tmp_path / "a.tif"), "--out", str(tmp_path / "o"), "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_cli_evaluate_seg_reports_iou_per_class(tiny_model, em_image, tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    tifffile.imwrite(tmp_path / "img" / "a.tif", em_image)
    predicted = segment(em_image, tiny_model).labels
    tifffile.imwrite(tmp_path / "lab" / "a.tif", predicted)  # labels = the model's own output
    assert main(["evaluate-seg", "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"),
                 "--model", tiny_model, "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    present = [c for i, c in enumerate(["c0", "c1", "c2"]) if (predicted == i).any()]
    assert all(scores[f"iou_{c}"] == 1.0 for c in present) and scores["miou"] == 1.0


def test_zarr_stack_gives_the_same_labels_as_in_memory(tiny_model, em_image):
    stack = np.stack([em_image, em_image[:, ::-1]])
    lazy = segment(zarr.array(stack, chunks=(1, 64, 64)), tiny_model)
    np.testing.assert_array_equal(lazy.labels, segment(stack, tiny_model).labels)


def test_stored_decision_offsets_are_applied_by_segment_and_evaluate_seg(responsive_model, em_image, tmp_path,
                                                                         capsys):
    from dataclasses import replace

    from napari_nanoclass.models.registry import save_model

    loaded = load_model(responsive_model)
    plain = segment(em_image, loaded).labels
    assert len(np.unique(plain)) > 1
    save_model(loaded.module, replace(loaded.info, name="offset-seg", logit_bias=[0.0, 0.0, 1e6]))
    shifted = segment(em_image, "offset-seg", probabilities=True)
    assert (shifted.labels == 2).all()
    np.testing.assert_allclose(shifted.probabilities.sum(0), 1.0, atol=1e-5)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    tifffile.imwrite(tmp_path / "img" / "a.tif", em_image)
    tifffile.imwrite(tmp_path / "lab" / "a.tif", plain)
    args = ["evaluate-seg", "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"),
            "--model", "offset-seg", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["iou_c2"] == pytest.approx((plain == 2).mean())
    assert main([*args, "--raw"]) == 0
    assert json.loads(capsys.readouterr().out)["miou"] == 1.0


def test_cli_segment_tta_writes_the_augmented_prediction(responsive_model, em_image, tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", em_image)
    augmented = segment(em_image, responsive_model, tta=True).labels
    assert (augmented != segment(em_image, responsive_model).labels).any()
    assert main(["segment", str(tmp_path / "a.tif"), "--out", str(tmp_path / "out"), "--model", responsive_model,
                 "--tta", "--quiet"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "a_labels.tif"), augmented)
