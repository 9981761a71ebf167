"""Model registry: safetensors round trip, metadata, checksum, refusal of pickles, caching."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import replace

import pytest
import torch

from napari_nanoclass.cli import main
from napari_nanoclass.models import registry
from napari_nanoclass.models.registry import (
    ModelError,
    list_models,
    load_model,
    read_info,
    save_model,
    sha256_of,
)
from napari_nanoclass.models.unet import SEUNet

from .conftest import tiny_info


def test_round_trip_keeps_weights_and_metadata(user_registry):
    info = tiny_info("round-trip")
    torch.manual_seed(3)
    module = SEUNet(**info.arch_params).eval()
    path = save_model(module, info)
    loaded = load_model("round-trip")
    assert loaded.info == info and loaded.path == path
    assert loaded.sha256 == sha256_of(path)
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), module(x))
    assert not loaded.module.training
    assert loaded.halo == 36  # receptive radius 33 (SE window 3) rounded up to the size divisor 4


def test_loading_is_cached_until_the_file_changes(tiny_model, user_registry):
    first, second = load_model(tiny_model), load_model(tiny_model)
    assert first is second
    torch.manual_seed(9)
    info = tiny_info()
    save_model(SEUNet(**info.arch_params), info)  # re-registered: new content, new checksum
    assert load_model(tiny_model) is not first


def test_checksum_mismatch_is_refused(tiny_model, user_registry):
    path = user_registry / f"{tiny_model}.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_model(tiny_model)


def test_the_checksum_is_computed_once_per_version_of_the_file(tiny_model, user_registry, monkeypatch):
    hashed = []
    monkeypatch.setattr(registry, "sha256_of", lambda path, real=sha256_of: hashed.append(path) or real(path))
    first = load_model(tiny_model)
    assert load_model(tiny_model) is first and len(hashed) == 1  # the same file: not hashed again
    path = user_registry / f"{tiny_model}.safetensors"
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))  # written in place: same size, same inode
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))  # a later time, as a clock would give
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_model(tiny_model)
    assert len(hashed) == 2


def test_sidecar_checksum_is_checked_for_files_loaded_by_path(tiny_model, user_registry, tmp_path):
    copy = tmp_path / "shared.safetensors"
    copy.write_bytes((user_registry / f"{tiny_model}.safetensors").read_bytes())
    (tmp_path / "shared.safetensors.sha256").write_text("0" * 64 + "  shared.safetensors\n")
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_model(copy)
    (tmp_path / "shared.safetensors.sha256").write_text(sha256_of(copy))
    assert load_model(copy).info.name == tiny_model


def test_pickled_weight_files_are_refused_without_unpickling(tmp_path):
    torch_file = tmp_path / "weights.safetensors"
    torch.save(SEUNet(width=4, depth=1).state_dict(), torch_file)
    with pytest.raises(ModelError, match="torch.save zip archive"):
        load_model(torch_file)

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelError, match="Python pickle"):
        load_model(evil)


def test_safetensors_whose_header_length_starts_like_a_pickle_load(user_registry):
    """The 8-byte header length of a safetensors file can begin with 0x80, a pickle's first byte."""
    info = tiny_info("pickle-lookalike")
    module = SEUNet(**info.arch_params).eval()
    for pad in range(256):  # the header grows by one byte per description character
        path = save_model(module, replace(info, description="x" * pad))
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert load_model("pickle-lookalike").info.description == "x" * pad


def test_unknown_name_lists_known_models(tiny_model):
    with pytest.raises(ModelError, match="tiny-seg"):
        load_model("no-such-model")


def test_name_clash_with_another_folder_is_refused(tiny_model, tmp_path):
    with pytest.raises(ModelError, match="already exists"):
        save_model(SEUNet(width=4, depth=2, n_classes=3), tiny_info(), tmp_path)


def test_weights_that_do_not_fit_the_architecture_are_reported(user_registry):
    info = tiny_info("mismatch")
    save_model(SEUNet(**info.arch_params), info)
    meta = read_info(user_registry / "mismatch.safetensors")
    meta.arch_params["width"] = 8
    from safetensors.torch import load_file, save_file

    path = user_registry / "mismatch.safetensors"
    save_file(load_file(path), str(path), metadata={"nanoclass": meta.to_json()})
    with pytest.raises(ModelError, match="do not fit"):
        load_model(path, sha256=sha256_of(path))


def test_cli_models_json_lists_name_task_and_classes(tiny_model, capsys):
    assert main(["models", "--json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert models[tiny_model]["task"] == "segmentation"
    assert models[tiny_model]["class_names"] == ["c0", "c1", "c2"]
    assert {m.name for m in list_models()} == set(models)
