"""One description per analysis, and the one loop that runs any analysis over files.

An analysis package (``segmentation``, ``homogeneity``, ``liposomes``) describes itself with an
:class:`Analysis` in its ``__init__``: its name, its options (which become the command-line flags
of ``nanoclass NAME`` and the keys ``nanoclass batch NAME --set`` accepts), its outputs, and where
its :class:`FileJob` and its reader live. The command line, the batch runner and the napari reader
all look analyses up here, so adding one is a new package plus one line in :data:`REGISTERED`.

Descriptions name their code as ``"module:attribute"`` strings, imported only when a job runs or
a result is opened: listing analyses (``nanoclass --help``) imports neither torch nor dask.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_nanoclass.core.progress import Steps, scaled

# the analysis packages, in the order the command line lists them
REGISTERED = ("napari_nanoclass.segmentation", "napari_nanoclass.homogeneity", "napari_nanoclass.liposomes",
              "napari_nanoclass.xrd")


PIXEL_SIZES_NM = (0.01, 1000.0)  # nm per pixel a microscope image can plausibly have
FILL_SIDE = 15  # padding fills squares this wide (io.images.fill_mask); odd: erosion and dilation undo each other
EXCLUDE_HELP = ("folder of exclusion masks named like the images (<stem>.tif, ...): their nonzero regions, at least "
                f"{FILL_SIDE} px across, are left out of the analysis (a carbon film, contamination, a grid bar); an "
                "image without one is analysed whole")


def number(kind: type, low: float | None = None, high: float | None = None, name: str = "value"
           ) -> Callable[[Any], Any]:
    """A converter for a bounded number (an ``argparse`` type, and the check of ``--set`` and
    Python options): the value as ``kind`` within [low, high], else ValueError naming the range."""
    def convert(value: Any) -> Any:
        try:
            converted = kind(value)
            valid = (math.isfinite(converted) and (low is None or converted >= low)
                     and (high is None or converted <= high)
                     and not (kind is int and isinstance(value, float) and not value.is_integer()))
        except (TypeError, ValueError):
            valid = False
        if not valid:
            bounds = (f"between {low:g} and {high:g}" if low is not None and high is not None
                      else f"at least {low:g}" if low is not None else f"at most {high:g}")
            what = "a whole number" if kind is int else "a number"
            raise ValueError(f"{name} must be {what} {bounds}, got {value!r}")
        return converted

    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


@dataclass(frozen=True)
class Option:
    """One option of an analysis: a keyword argument of its file job and a command-line flag.

    A dotted ``name`` (``classifiers.lamellarity``) is one entry of a mapping option.
    ``kind`` is ``str``, ``int`` or ``float`` for a value, ``bool`` for an on/off switch.
    """

    name: str
    flag: str
    help: str
    kind: type = str
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] | None = None
    low: float | None = None  # allowed range of a number
    high: float | None = None
    # False for options that change how the work is done, not its result (tile size, compiling):
    # a batch rerun that differs only in them reuses what is done
    changes_result: bool = True

    @property
    def key(self) -> str:
        """The file job's keyword argument this option sets."""
        return self.name.split(".")[0]

    def convert(self, value: Any) -> Any:
        """``value`` as this option's kind, checked against its range and choices (ValueError)."""
        if value is None:
            return None
        if self.kind in (int, float):
            return number(self.kind, self.low, self.high, self.flag)(value)
        if self.kind is bool and not isinstance(value, bool):
            raise ValueError(f"{self.flag} is on or off (true or false), got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.flag} ({self.help}) must be one of {', '.join(self.choices)}, got {value!r}")
        return value

    def add_to(self, parser: Any) -> None:
        """Add this option to an ``argparse`` parser (numbers checked against their range there)."""
        if self.kind is bool:
            parser.add_argument(self.flag, dest=self.name, action="store_true", help=self.help)
            return
        kind = number(self.kind, self.low, self.high) if self.kind in (int, float) else self.kind
        parser.add_argument(self.flag, dest=self.name, type=argparse_type(kind), default=self.default,
                            required=self.required, choices=self.choices, help=self.help,
                            metavar=None if self.choices else self.flag.lstrip("-").upper().replace("-", "_"))


def argparse_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """``convert`` with its ValueError turned into argparse's usage error (its message kept)."""
    import argparse

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


IMAGE_READER = "napari_nanoclass.io.images:read_image"  # how an analysis of micrographs opens an input
FORMATS = ("tif", "ome-zarr")  # the keys of io.images.OUTPUT_FORMATS, without importing the image stack

# options every analysis' file job takes
COMMON_OPTIONS = (
    Option("device", "--device", "cpu, cuda, cuda:1, mps (default: best available)"),
    Option("output_format", "--format", "output format of label images and maps", default="tif", choices=FORMATS),
)


@dataclass(frozen=True)
class Analysis:
    """What the command line, the batch runner and the reader need to know of an analysis."""

    name: str  # command name: ``nanoclass NAME`` and ``nanoclass batch NAME``
    help: str  # one line for ``--help``
    outputs: str  # what ``--out`` receives, for ``--help``
    job: str  # "module:Class" of its :class:`FileJob`
    reader: str  # "module:function" (folder, stem, stored result row) -> napari LayerData tuples
    overview: str  # name of the output overlaid on the input in a batch ``overview.png`` ("{stem}_labels"; "": none)
    overview_kind: str  # "labels" (instances or classes in colour) or "map" (a 0–1 map in red)
    products: tuple[str, ...] = ()  # suffixes of the images it writes per input ("_labels"): never inputs
    options: tuple[Option, ...] = ()
    model_option: str | None = None  # the option naming the main model (``nanoclass batch --model``), if any
    model_task: str | None = None  # the registry task of the models that option takes (to offer them by name)
    table: str = ""  # the table its job writes with one row per input (``path``, ``status`` and ``key``): the reader
    # finds a plain output folder by it
    key: str = "image"  # the column of ``table`` holding each input's stem (XRD tables name a "pattern", not an image)
    # what it reads: file suffixes picked from a folder (() = images), and "module:function" opening one input
    inputs: tuple[str, ...] = ()
    read: str = IMAGE_READER

    @property
    def all_options(self) -> tuple[Option, ...]:
        return (*self.options, *COMMON_OPTIONS)

    def result_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` without those that leave the results unchanged: what a batch run's
        signature records, so that the dock, the command line and Python agree on what is done."""
        inert = {o.key for o in self.all_options if not o.changes_result}
        return {name: value for name, value in options.items() if name not in inert}

    @property
    def option_keys(self) -> set[str]:
        """The keyword arguments its file job accepts."""
        return {o.key for o in self.all_options}

    def find_inputs(self, items: Sequence[str | Path]) -> list[Path]:
        """Files, folders and globs expanded to this analysis' inputs (images unless it says)."""
        from napari_nanoclass.io.images import find_images

        return find_images(items, self.inputs or None)

    @property
    def reads_images(self) -> bool:
        """Whether its inputs are micrographs (so the reader can show them under the results)."""
        return self.read == IMAGE_READER

    def job_class(self) -> type[FileJob]:
        return _resolve(self.job)

    def read_layers(self, folder: Path, stem: str, result: dict[str, Any]) -> list[Any]:
        return _resolve(self.reader)(folder, stem, result)

    def options_from_args(self, args: Any) -> dict[str, Any]:
        """The file job's keyword arguments from parsed command-line ``args`` (dotted names nested):
        every option's value, defaults included, as ``nanoclass NAME`` has always passed them."""
        return _nested((option.name, getattr(args, option.name)) for option in self.all_options)

    def chosen_options(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The file job's keyword arguments from option name → value, as the Batch dock's fields
        and ``nanoclass batch``'s flags give them: each value checked as its option's kind, those
        unset (None) or at the option's default (off, for a switch) left out, dotted names nested;
        a mapping given for a mapping option (``classifiers``) counts as its entries. Both build
        them here, so an option added to a description is taken by both, and the same choices
        give the same batch signature (a form cannot tell a default chosen from one untouched)."""
        by_name = {option.name: option for option in self.all_options}
        flat = dict(_entries(values, by_name))
        unknown = sorted(set(flat) - set(by_name))
        if unknown:
            raise ValueError(f"{self.name} has no option {', '.join(unknown)}; "
                             f"its options: {', '.join(sorted(by_name))}")
        converted = ((name, by_name[name].convert(value)) for name, value in flat.items())
        return _nested((name, value) for name, value in converted
                       if value is not None and value != _unset(by_name[name]))

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse options this analysis does not have, or an unknown output format, before any work
        (rather than failing every input with the same message)."""
        from napari_nanoclass.io.images import check_output_format

        unknown = sorted(set(options) - self.option_keys)
        if unknown:
            raise ValueError(f"{self.name} has no option {', '.join(unknown)}; "
                             f"its options: {', '.join(sorted(self.option_keys))}")
        for option in self.all_options:
            head, _, entry = option.name.partition(".")
            value = options.get(head)
            if entry:  # one entry of a mapping option
                value = value.get(entry) if isinstance(value, dict) else None
            if option.required and value is None:
                raise ValueError(f"{self.name} needs {option.flag} ({option.help}; batch option {option.name})")
            option.convert(value)
        check_output_format(options.get("output_format") or "tif")


def _nested(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Keyword arguments from (option name, value) pairs, a dotted name an entry of its mapping."""
    options: dict[str, Any] = {}
    for name, value in pairs:
        head, _, entry = name.partition(".")
        if entry:
            options.setdefault(head, {})[entry] = value
        else:
            options[head] = value
    return options


def _entries(values: Mapping[str, Any], options: Mapping[str, Option]) -> Iterable[tuple[str, Any]]:
    """(option name, value) pairs, a mapping given for the head of dotted options split into them."""
    for name, value in values.items():
        if name not in options and isinstance(value, dict) and any(o.startswith(f"{name}.") for o in options):
            yield from ((f"{name}.{entry}", v) for entry, v in value.items())
        else:
            yield name, value


def _unset(option: Option) -> Any:
    """The value that leaves ``option`` as the analysis would have it untouched: its default, and
    off for a switch without one."""
    return bool(option.default) if option.kind is bool else option.default


def _resolve(reference: str) -> Any:
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def analyses() -> list[Analysis]:
    """Every registered analysis, in command-line order."""
    return [importlib.import_module(package).ANALYSIS for package in REGISTERED]


def get(name: str) -> Analysis:
    """The analysis called ``name``; a clear error naming the known ones otherwise."""
    for analysis in analyses():
        if analysis.name == name:
            return analysis
    raise ValueError(f"unknown analysis {name!r}; choose one of {', '.join(a.name for a in analyses())}")


class FileJob(ABC):
    """An analysis run over files into one folder: one instance per run, so models load once.

    Subclasses take their options as keyword arguments (loading models in ``__init__``) and
    implement :meth:`process`, :meth:`failed` and :meth:`write_tables`; :func:`files_steps`
    supplies the loop, the progress, the per-file error handling and the clean-up.
    """

    @abstractmethod
    def process(self, image: Any, path: Path, out_dir: Path, workdir: Path) -> Steps[dict[str, Any]]:
        """Analyse one image, write its outputs into ``out_dir``; return its table row.
        ``workdir`` is a scratch folder for results too big for memory (removed afterwards)."""

    @abstractmethod
    def failed(self, path: Path, error: str) -> dict[str, Any]:
        """The table row of an input that could not be analysed."""

    @abstractmethod
    def write_tables(self, out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
        """Write the run's tables for the rows so far (called after every input, so an interrupted
        run keeps what it finished)."""

    @classmethod
    @abstractmethod
    def model_names(cls, options: dict[str, Any]) -> dict[str, str]:
        """Role → name of each model a run with ``options`` uses, without loading any."""


def check_unique_stems(paths: Sequence[Path]) -> None:
    """Refuse inputs whose outputs would collide (``a.x.tif`` and ``a.y.tif`` are both ``a``)."""
    from napari_nanoclass.io.images import file_stem

    seen: dict[str, Path] = {}
    for path in paths:
        other = seen.setdefault(file_stem(path), path)
        if other != path:
            raise ValueError(f"{other} and {path} share the name {file_stem(path)!r}; their outputs would collide — "
                             "rename one or run them into separate output folders")


def without_products(paths: Sequence[Path], out_dir: str | Path) -> list[Path]:
    """``paths`` less the images a previous run wrote into ``out_dir`` for another of them
    (``a_labels.tif`` beside ``a.tif`` when the output folder is the input folder)."""
    from napari_nanoclass.io.images import file_stem

    out_dir = Path(out_dir).resolve()
    stems = {file_stem(p) for p in paths}
    suffixes = {s for a in analyses() for s in a.products}

    def product(path: Path) -> bool:
        stem = file_stem(path)
        return path.resolve().parent == out_dir and any(
            stem.endswith(s) and stem[: -len(s)] in stems for s in suffixes)

    return [p for p in paths if not product(p)]


def _remove_scratch(out_dir: Path) -> None:
    """Scratch folders (``.<stem>.work``) a killed run left behind; only a run holding the folder
    calls this, so none of them is in use."""
    for work in out_dir.glob(".*.work"):
        shutil.rmtree(work, ignore_errors=True)


def _naming(path: Path, error: str) -> str:
    """An error message on one line that names the input file (file first)."""
    error = " ".join(error.split())
    return error if str(path) in error or path.name in error else f"{path}: {error}"


def files_steps(analysis: str | Analysis, paths: Sequence[str | Path], out_dir: str | Path, *,
                claim_folder: bool = True, **options: Any) -> Steps[list[dict[str, Any]]]:
    """Run ``analysis`` over ``paths`` into ``out_dir`` (``nanoclass NAME``; contract in
    docs/cli.md); yields progress, returns one row per input. A file that fails is reported in
    its row (``status``/``error``) and the others go on.

    Before any compute: the options are checked, inputs whose outputs would collide are refused,
    and ``out_dir`` is checked writable and held for this run (:func:`.outputs.claim`; the batch
    runner, which holds the whole output folder itself, passes ``claim_folder=False``).
    """
    from napari_nanoclass.core.outputs import check_writable, claim
    from napari_nanoclass.io.images import file_stem

    spec = analysis if isinstance(analysis, Analysis) else get(analysis)
    read_input = _resolve(spec.read)
    spec.check_options(options)
    paths = [Path(p) for p in paths]
    check_unique_stems(paths)
    with claim(out_dir) if claim_folder else contextlib.nullcontext(check_writable(out_dir)) as folder:
        _remove_scratch(folder)
        job = spec.job_class()(**options)
        rows: list[dict[str, Any]] = []
        for i, path in enumerate(paths):
            stem = file_stem(path)
            workdir = folder / f".{stem}.work"
            try:
                image = read_input(path)
                row = yield from scaled(job.process(image, path, folder, workdir), i, len(paths),
                                        f"{stem} ({i + 1}/{len(paths)})")
            except Exception as exc:  # one bad file must not stop the others; it is reported
                row = job.failed(path, _naming(path, str(exc)))
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            rows.append(row)
            job.write_tables(folder, rows)
    return rows
