"""Model registry: models by name, stored as safetensors with their metadata and a sha256.

A model is one ``.safetensors`` file: the weights, plus a ``nanoclass`` metadata entry holding a
JSON :class:`ModelInfo` (architecture and its parameters, task, class names and colours, input
normalisation, tile/halo or patch size, pixel size). Each registry folder has an ``index.json``
mapping names to files and their sha256, checked at every load. Pickle-based files (``torch.save``)
are refused outright, since unpickling a file a user was sent can run arbitrary code.

Folders searched, in order: the weights shipped in the package, then the user's folder
(``$NANOCLASS_HOME/models``, default ``~/.local/share/napari-nanoclass/models``) where models
trained or fine-tuned by the user are saved.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from napari_nanoclass.core.atomic import atomic_path
from napari_nanoclass.core.outputs import inside
from napari_nanoclass.core.settings import home_dir
from napari_nanoclass.models.fibre_cnn import FibreCNN
from napari_nanoclass.models.lipnet import ENSEMBLE_ARCHITECTURE, LIPNET_ARCHITECTURE, LipNet, LipNetEnsemble
from napari_nanoclass.models.texture_classifier import TextureClassifier
from napari_nanoclass.models.unet import SEUNet
from napari_nanoclass.models.xrd_cnn import XrdCNN

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "weights"
METADATA_KEY = "nanoclass"
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "seunet": SEUNet, "fibre-cnn": FibreCNN, LIPNET_ARCHITECTURE: LipNet, ENSEMBLE_ARCHITECTURE: LipNetEnsemble,
    "texture-lr": TextureClassifier, "xrd-cnn": XrdCNN}


class ModelError(RuntimeError):
    """A model cannot be found, verified or loaded; the message names the file and the reason."""


@dataclass
class ModelInfo:
    """Everything needed to rebuild a model and feed it correctly, stored inside its file."""

    name: str
    task: str  # "segmentation" | "patch-classification" | "object-classification"
    architecture: str
    arch_params: dict[str, Any]
    class_names: list[str]
    class_colours: list[str] = field(default_factory=list)
    normalisation: dict[str, Any] = field(default_factory=lambda: {"method": "zscore"})
    tile: int = 512
    halo: int | None = None  # measured effective halo (training["effective_halo"]); None: the receptive radius
    patch: int | None = None  # for patch classifiers: side of the square patch
    pixel_size_nm: float | None = None
    # per-class offsets added to the logits before softmax/argmax (segmentation; None: none), see
    # training.fit_logit_adjustment
    logit_bias: list[float] | None = None
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class LoadedModel:
    """A ready-to-run model: module in eval mode on its device, with its info and checksum."""

    info: ModelInfo
    module: nn.Module
    sha256: str
    path: Path
    device: torch.device

    @property
    def size_divisor(self) -> int:
        return int(getattr(self.module, "size_divisor", 1))

    @property
    def halo(self) -> int:
        """Halo in pixels: the stored one, else the receptive radius rounded up to the divisor."""
        from napari_nanoclass.engine import default_halo

        return self.info.halo if self.info.halo is not None else default_halo(self.module)


def user_dir() -> Path:
    return home_dir() / "models"


def search_dirs() -> list[Path]:
    return [PACKAGE_DIR, user_dir()]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_index(directory: Path) -> dict[str, dict[str, str]]:
    index = directory / "index.json"
    if not index.exists():
        return {}
    try:
        return json.loads(index.read_text())["models"]
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{index}: corrupt model index ({exc})") from exc


def _entries() -> dict[str, tuple[Path, str]]:
    """name -> (file, expected sha256); later folders do not override earlier ones."""
    found: dict[str, tuple[Path, str]] = {}
    for directory in search_dirs():
        for name, entry in _read_index(directory).items():
            found.setdefault(name, (directory / entry["file"], entry["sha256"]))
    return found


def _check_format(path: Path) -> None:
    """Refuse anything that is not a safetensors file, with a message saying what it is."""
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header. Checked first: the
    # length's low byte can be 0x80, a pickle's first byte
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return
    if head[:2] == b"PK":
        kind = "a torch.save zip archive (pickle inside)"
    elif head[:1] == b"\x80":
        kind = "a Python pickle"
    else:
        kind = "not a safetensors file"
    raise ModelError(
        f"{path}: refused, the file is {kind}. napari-nanoclass loads only .safetensors weights, "
        "because unpickling a file can run arbitrary code. Convert trusted weights with "
        "safetensors.torch.save_file(torch.load(f, weights_only=True), 'model.safetensors')."
    )


def read_info(path: Path) -> ModelInfo:
    """Read a model file's metadata without loading its weights."""
    _check_format(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"{path}: unreadable safetensors file ({exc})") from exc
    if METADATA_KEY not in meta:
        raise ModelError(f"{path}: no '{METADATA_KEY}' metadata; not a napari-nanoclass model")
    return ModelInfo.from_json(meta[METADATA_KEY])


def list_models() -> list[ModelInfo]:
    """The registered models' metadata; an entry whose file is missing or unreadable is left
    out with a warning naming it, so one bad file does not hide the others."""
    infos = []
    for name, (path, _) in _entries().items():
        try:
            infos.append(read_info(path))
        except Exception as exc:  # every reader error: a listing must survive one bad file
            warnings.warn(f"model {name!r} ({path}) cannot be read and is left out: {exc}", stacklevel=2)
    return infos


def registered_info(name: str | None) -> ModelInfo | None:
    """The metadata of the model registered as ``name``, or None when there is none (removed,
    never registered, or its file unreadable). Only its file's header is read, and again only when
    the file changed (a model retrained under the same name): docks ask on every change of a field."""
    entry = _entries().get(name) if name else None
    if entry is None:
        return None
    try:
        return _header(entry[0], entry[0].stat().st_mtime_ns)
    except (OSError, ModelError):
        return None


@functools.lru_cache(maxsize=64)
def _header(path: Path, _modified: int) -> ModelInfo:
    return read_info(path)


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def check_name(name: str) -> str:
    """A model name is a plain identifier (letters, digits, ``_ . + -``; no path, no ``..``),
    since it becomes a file name in the registry folder; ValueError otherwise."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"model name {name!r} must be 1–100 letters, digits, '_', '.', '+' or '-', starting with a "
                         "letter or digit, without '..'")
    return name


def check_free(name: str, directory: Path | None = None) -> str:
    """``name`` if a model can be registered under it in ``directory`` (default: the user's model
    folder): a plain identifier (:func:`check_name`) that no model of another folder has, since a
    name always means one model; ModelError otherwise. Checked before training, so a long job does
    not end in a refusal."""
    check_name(name)
    directory = Path(directory) if directory is not None else user_dir()
    existing = _entries().get(name)
    if existing is not None and existing[0].parent.resolve() != directory.resolve():
        raise ModelError(f"a model named {name!r} already exists in {existing[0].parent}; choose another name")
    return name


def resolve(name_or_path: str | os.PathLike, sha256: str | None = None) -> tuple[Path, str | None]:
    """A registered name or a file path -> (file, the sha256 it must have, if known)."""
    entries = _entries()
    if isinstance(name_or_path, str) and name_or_path in entries:
        path, expected = entries[name_or_path]
        return path, sha256 or expected
    path = Path(name_or_path)
    if path.suffix != ".safetensors" and not path.exists():
        known = ", ".join(sorted(entries)) or "none"
        raise ModelError(f"unknown model {str(name_or_path)!r}; registered models: {known}")
    sidecar = path.with_name(path.name + ".sha256")
    if sha256 is None and sidecar.exists():
        sha256 = sidecar.read_text().split()[0]
    return path, sha256


def load_model(
    name_or_path: str | os.PathLike, device: str | torch.device = "cpu", sha256: str | None = None
) -> LoadedModel:
    """Load a model by registered name or path, verifying its checksum; cached per file content."""
    path, expected = resolve(name_or_path, sha256)
    _check_format(path)
    return _verified(str(path), expected, str(torch.device(device)), _signature(path))


def _signature(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is written or replaced (size, modification and change times, inode):
    as ``make`` and git's index do, a file whose signature is unchanged is not hashed again."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


@functools.lru_cache(maxsize=16)
def _verified(path: str, expected: str | None, device: str, signature: tuple[int, int, int, int]) -> LoadedModel:
    """The model at ``path``, its checksum verified against ``expected``: once per file
    ``signature``, since hashing the file cost a few milliseconds each time an analysis named its
    models (a refusal raises, and is not kept)."""
    actual = sha256_of(Path(path))
    if expected is not None and actual != expected:
        raise ModelError(
            f"{path}: checksum mismatch (expected sha256 {expected[:12]}…, file has {actual[:12]}…); "
            "the file is corrupt or was replaced"
        )
    return _load_cached(path, actual, device)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, sha256: str, device: str) -> LoadedModel:
    info = read_info(Path(path))
    module = build(info)
    try:
        state = load_file(path, device="cpu")
        module.load_state_dict(state)
    except Exception as exc:
        raise ModelError(f"{path}: weights do not fit architecture {info.architecture!r} ({exc})") from exc
    module.to(device).eval()
    if info.halo is not None:  # a halo measured for this model (its metadata says to what tolerance)
        module.measured_halo = info.halo
    return LoadedModel(info, module, sha256, Path(path), torch.device(device))


def build(info: ModelInfo) -> nn.Module:
    """Instantiate the architecture a ModelInfo names, with untrained weights."""
    try:
        factory = ARCHITECTURES[info.architecture]
    except KeyError:
        raise ModelError(f"unknown architecture {info.architecture!r}; known: {sorted(ARCHITECTURES)}") from None
    return factory(**info.arch_params)


def save_model(module: nn.Module, info: ModelInfo, directory: Path | None = None, *,
               filename: str | None = None, register: bool = True) -> Path:
    """Write a model atomically; with ``register`` also enter it (and its sha256) in the index.

    Refuses to shadow a registered model of the same name in another registry folder, so a name
    always means one model. ``register=False`` writes a standalone file (e.g. a training run's
    best checkpoint) that can still be loaded by path.
    """
    directory = Path(directory) if directory is not None else user_dir()
    if register:
        check_free(info.name, directory)
    else:
        check_name(info.name)
    directory.mkdir(parents=True, exist_ok=True)
    target = inside(directory, filename or f"{info.name}.safetensors")
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: info.to_json()})
    if register:
        index = _read_index(directory)
        index[info.name] = {"file": target.name, "sha256": sha256_of(target)}
        with atomic_path(directory / "index.json") as tmp:
            tmp.write_text(json.dumps({"models": index}, indent=2, sort_keys=True) + "\n")
    return target
