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

import importlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_nanoclass.core.progress import Steps, scaled

# the analysis packages, in the order the command line lists them
REGISTERED = ("napari_nanoclass.segmentation", "napari_nanoclass.homogeneity", "napari_nanoclass.liposomes")


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

    @property
    def key(self) -> str:
        """The file job's keyword argument this option sets."""
        return self.name.split(".")[0]

    def add_to(self, parser: Any) -> None:
        """Add this option to an ``argparse`` parser."""
        if self.kind is bool:
            parser.add_argument(self.flag, dest=self.name, action="store_true", help=self.help)
        else:
            parser.add_argument(self.flag, dest=self.name, type=self.kind, default=self.default,
                                required=self.required, choices=self.choices, help=self.help)


FORMATS = ("tif", "ome-zarr")  # the keys of io.images.OUTPUT_FORMATS, without importing the image stack

# options every analysis' file job takes
COMMON_OPTIONS = (
    Option("device", "--device", "cpu, cuda, cuda:1, mps (default: best available)"),
    Option("output_format", "--format", "how label images and maps are saved", default="tif", choices=FORMATS),
)


@dataclass(frozen=True)
class Analysis:
    """What the command line, the batch runner and the reader need to know of an analysis."""

    name: str  # command name: ``nanoclass NAME`` and ``nanoclass batch NAME``
    help: str  # one line for ``--help``
    outputs: str  # what ``--out`` receives, for ``--help``
    job: str  # "module:Class" of its :class:`FileJob`
    reader: str  # "module:function" (folder, stem, stored result row) -> napari LayerData tuples
    overview: str  # name of the output overlaid on the input in a batch ``overview.png`` ("{stem}_labels")
    overview_kind: str  # "labels" (instances or classes in colour) or "map" (a 0–1 map in red)
    options: tuple[Option, ...] = ()
    model_option: str | None = None  # the option naming the main model (``nanoclass batch --model``), if any

    @property
    def all_options(self) -> tuple[Option, ...]:
        return (*self.options, *COMMON_OPTIONS)

    @property
    def option_keys(self) -> set[str]:
        """The keyword arguments its file job accepts."""
        return {o.key for o in self.all_options}

    def job_class(self) -> type[FileJob]:
        return _resolve(self.job)

    def read_layers(self, folder: Path, stem: str, result: dict[str, Any]) -> list[Any]:
        return _resolve(self.reader)(folder, stem, result)

    def options_from_args(self, args: Any) -> dict[str, Any]:
        """The file job's keyword arguments from parsed command-line ``args`` (dotted names nested)."""
        options: dict[str, Any] = {}
        for option in self.all_options:
            value = getattr(args, option.name)
            head, _, entry = option.name.partition(".")
            if entry:
                options.setdefault(head, {})[entry] = value
            else:
                options[head] = value
        return options

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse options this analysis does not have, or an unknown output format, before any work
        (rather than failing every input with the same message)."""
        from napari_nanoclass.io.images import check_output_format

        unknown = sorted(set(options) - self.option_keys)
        if unknown:
            raise ValueError(f"{self.name} has no option {', '.join(unknown)}; "
                             f"its options: {', '.join(sorted(self.option_keys))}")
        check_output_format(options.get("output_format") or "tif")


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


class FileJob:
    """An analysis run over files into one folder: one instance per run, so models load once.

    Subclasses take their options as keyword arguments (loading models in ``__init__``) and
    implement :meth:`process`, :meth:`failed` and :meth:`write_tables`; :func:`files_steps`
    supplies the loop, the progress, the per-file error handling and the clean-up.
    """

    def process(self, image: Any, path: Path, out_dir: Path, workdir: Path) -> Steps[dict[str, Any]]:
        """Analyse one image, write its outputs into ``out_dir``; return its table row.
        ``workdir`` is a scratch folder for results too big for memory (removed afterwards)."""
        raise NotImplementedError

    def failed(self, path: Path, error: str) -> dict[str, Any]:
        """The table row of an input that could not be analysed."""
        raise NotImplementedError

    def write_tables(self, out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
        """Write the run's tables for the rows so far (called after every input, so an interrupted
        run keeps what it finished)."""
        raise NotImplementedError

    @classmethod
    def model_names(cls, options: dict[str, Any]) -> dict[str, str]:
        """Role → name of each model a run with ``options`` uses, without loading any."""
        raise NotImplementedError


def files_steps(analysis: str | Analysis, paths: Sequence[str | Path], out_dir: str | Path,
                **options: Any) -> Steps[list[dict[str, Any]]]:
    """Run ``analysis`` over ``paths`` into ``out_dir`` (``nanoclass NAME``; contract in
    docs/cli.md); yields progress, returns one row per input. A file that fails is reported in
    its row (``status``/``error``) and the others go on."""
    from napari_nanoclass.io.images import file_stem, read_image

    spec = analysis if isinstance(analysis, Analysis) else get(analysis)
    spec.check_options(options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    job = spec.job_class()(**options)
    rows: list[dict[str, Any]] = []
    for i, path in enumerate(map(Path, paths)):
        stem = file_stem(path)
        workdir = out_dir / f".{stem}.work"
        try:
            image = read_image(path)
            row = yield from scaled(job.process(image, path, out_dir, workdir), i, len(paths),
                                    f"{stem} ({i + 1}/{len(paths)})")
        except Exception as exc:  # one bad file must not stop the others; it is reported
            row = job.failed(path, str(exc))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        rows.append(row)
        job.write_tables(out_dir, rows)
    return rows

