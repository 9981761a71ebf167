"""Batch processing: one analysis over many images, resumable, in this process or on a dask cluster.

``nanoclass batch ANALYSIS INPUT… --out DIR`` and :func:`run_batch` write, in ``DIR``:

* ``<stem>/`` — the analysis' own outputs for one input, exactly as its single command writes
  them (docs/cli.md), plus ``overview.png`` (the input with its labels or defect map overlaid). Each is built in ``.<stem>.partial/`` and renamed to ``<stem>/`` only when
  complete, so a folder ``<stem>/`` is always whole: a killed run leaves at most a ``.partial``
  folder, which the next run removes and redoes.
* ``<stem>/result.json`` — the input's result row plus the run's signature (analysis, options,
  models with their sha256, package version, the input's size, time and content hash).
* ``run_summary.csv`` / ``run_summary.json`` — one row per input (status, error, seconds, output
  folder) and, in the JSON, the run: analysis, options, package version, models with their
  checksums, timings, counts.
* ``batch_config.json`` — everything needed to repeat the run exactly (``--config`` reads it).

A rerun skips inputs whose folder is complete and whose signature is unchanged, and redoes the
others saying why (``overwrite`` redoes all); a file that fails is reported with the reason and
the others go on. One run holds the output folder at a time. A folder in the way that this tool
did not write is never replaced without ``overwrite``.

Inputs are processed in this process by default (torch already uses every core for one image);
``workers`` > 1 starts a dask ``LocalCluster`` of that many single-threaded processes with torch
threads shared out so that threads × workers ≤ cores, and ``scheduler`` sends the inputs to an
existing dask.distributed cluster. Models are cached per process, so each worker loads a model once.

Progress comes at two levels: ``on_row`` as each input finishes, and ``on_progress`` within the
input being processed (its tiles); from cluster workers the latter travels as dask events on
:data:`PROGRESS_TOPIC`, at most twice a second per input.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_nanoclass import __version__
from napari_nanoclass.core.analysis import Analysis, check_unique_stems, files_steps, get
from napari_nanoclass.core.outputs import claim, inside
from napari_nanoclass.core.progress import Progress, ProgressCallback, Throttle, run_sync
from napari_nanoclass.io.images import file_stem, write_csv, write_json
from napari_nanoclass.io.reader import RESULT

PROGRESS_TOPIC = "napari-nanoclass-progress"
SUMMARY_COLUMNS = ["input", "stem", "status", "error", "seconds", "output", "skipped", "reason"]


@dataclass
class BatchConfig:
    """A batch run, as stored in ``batch_config.json`` (options are the analysis' keyword arguments)."""

    analysis: str
    inputs: list[str]
    out: str
    options: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    workers: int = 1
    scheduler: str | None = None

    def __post_init__(self) -> None:
        get(self.analysis)  # an unknown analysis is refused here, naming the known ones
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a whole number of at least 1, got {self.workers!r}")

    @classmethod
    def load(cls, path: str | Path) -> BatchConfig:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a batch configuration ({exc})") from exc


# -- one input -------------------------------------------------------------------------------------


HASHED_UP_TO = 256 * 2**20  # bytes: inputs up to this size are identified by content, larger ones by size and time


def _fingerprint(path: Path) -> dict[str, Any]:
    """What identifies an input's content: size and modification time, and the sha256 of files
    small enough to hash cheaply (a copied or touched file with the same bytes is not redone)."""
    stat = path.stat()
    found: dict[str, Any] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if path.is_file() and stat.st_size <= HASHED_UP_TO:
        from napari_nanoclass.models.registry import sha256_of

        found["sha256"] = sha256_of(path)
    return found


def _same_input(old: dict[str, Any], new: dict[str, Any]) -> bool:
    if old.get("size") != new.get("size"):
        return False
    if "sha256" in old and "sha256" in new:
        return old["sha256"] == new["sha256"]
    return old.get("mtime_ns") == new.get("mtime_ns")


def redo_reason(stored: dict[str, Any] | None, signature: dict[str, Any], path: Path) -> str | None:
    """Why an input's stored result cannot be reused for a run with ``signature`` (analysis,
    options, models with their sha256, package version) — None when it can."""
    if stored is None:
        return "new input"
    old = stored.get("signature")
    if old is None:
        return "result has no signature (written by an older version)"
    for key in ("analysis", "options", "models"):
        if old.get(key) != signature[key]:
            if isinstance(signature[key], dict) and isinstance(old.get(key), dict):
                keys = set(old[key]) | set(signature[key])
                changed = sorted(k for k in keys if old[key].get(k) != signature[key].get(k))
                return f"{key} changed: {', '.join(changed)}"
            return f"{key} changed"
    if old.get("version") != signature["version"]:
        return f"package version changed: {old.get('version')} -> {signature['version']}"
    if not _same_input(old.get("input", {}), _fingerprint(path)):
        return "input changed"
    return None


def _moved(value: Any, partial: str, final: str) -> Any:
    """``value`` (a result row) with paths inside the ``.partial`` folder pointing to the final one."""
    if isinstance(value, str) and value.startswith(partial):
        return final + value[len(partial):]
    if isinstance(value, dict):
        return {k: _moved(v, partial, final) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, partial, final) for v in value]
    return value


def _run_analysis(analysis: str, path: Path, target: Path, options: dict[str, Any],
                  progress: ProgressCallback | None) -> dict[str, Any]:
    """Run one analysis' file job on one input into ``target``; returns its result row."""
    return run_sync(files_steps(analysis, [path], target, claim_folder=False, **options), progress)[0]


def _event_reporter(stem: str, interval: float = 0.5) -> ProgressCallback:
    """Progress of one input on a dask worker, sent to the client as events on PROGRESS_TOPIC
    (the first, then at most one per ``interval`` seconds, and the last)."""
    from dask.distributed import get_worker

    worker, throttle = get_worker(), Throttle(interval)

    def report(step: Progress) -> None:
        if throttle.due(step):
            worker.log_event(PROGRESS_TOPIC, {"stem": stem, "done": step.done, "total": step.total,
                                              "message": step.message})

    return report


def process_one(analysis: str, path: str, out: str, options: dict[str, Any], signature: dict[str, Any],
                sharing: int | None = None, progress: ProgressCallback | bool | None = None,
                overwrite: bool = False, reason: str = "") -> dict[str, Any]:
    """Process one input into ``out/<stem>/`` (built in ``.<stem>.partial`` and renamed when whole);
    its ``result.json`` records ``signature`` plus the input's fingerprint, and why it was done.

    Runs in the calling process or on a dask worker; ``sharing`` workers on this machine split its
    cores for torch. ``progress`` is a callback for this input's own progress, or ``True`` on a
    dask worker to send it to the client as events. A folder ``<stem>/`` that this tool did not
    write (no ``result.json``) is never replaced unless ``overwrite``. Never raises for a bad
    input: the row says ``failed`` and why.
    """
    if sharing:
        from napari_nanoclass.core.devices import configure_threads

        configure_threads(sharing)
    source, out_dir = Path(path), Path(out)
    stem = file_stem(source)
    final, partial = inside(out_dir, stem), inside(out_dir, f".{stem}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.perf_counter()
    row: dict[str, Any] = {"input": str(source), "stem": stem, "output": str(final), "skipped": False,
                           "reason": reason}
    marker = {"analysis": analysis, "options": options, "signature": {**signature, "input": _fingerprint(source)}}
    if progress is True:
        progress = _event_reporter(stem)
    try:
        if final.exists() and not (final / RESULT).is_file() and not overwrite:
            raise FileExistsError(f"{final} exists and is not a napari-nanoclass result; move it away or "
                                  "rerun with --overwrite to replace it")
        result = _run_analysis(analysis, source, partial, options, progress or None)
        if result.get("status") != "ok":
            raise RuntimeError(result.get("error") or "failed")
        write_overview(get(analysis), partial, stem, source)
        row.update(status="ok", error="", seconds=round(time.perf_counter() - start, 3))
        result = _moved(result, str(partial), str(final))
        write_json(partial / RESULT, {**row, **marker, "result": result})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
    except Exception as exc:  # reported in the run summary; the batch goes on
        shutil.rmtree(partial, ignore_errors=True)
        row.update(status="failed", error=str(exc), seconds=round(time.perf_counter() - start, 3))
    return row


def write_overview(analysis: Analysis, folder: Path, stem: str, source: Path, size: int = 512) -> Path | None:
    """``overview.png``: the input (first plane of a stack), at most ``size`` px, with the
    analysis' overview output overlaid: labels in colour, or a 0–1 map (p(NHNF)) in red — to
    check a run at a glance."""
    import numpy as np
    from skimage.color import label2rgb
    from skimage.io import imsave
    from skimage.transform import resize

    from napari_nanoclass.core.atomic import atomic_path
    from napari_nanoclass.io.images import find_output, read_image, read_output

    if not analysis.overview:  # an analysis without an image to overlay (xrd writes its own plot)
        return None
    found = find_output(folder, analysis.overview.format(stem=stem))
    if found is None:
        return None
    grey = _thumbnail(read_image(source).data, size).astype(np.float32)
    lo, hi = np.percentile(grey, (1, 99))
    grey = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    overlay = resize(_thumbnail(read_output(found), size), grey.shape, order=0, preserve_range=True,
                     anti_aliasing=False)
    if analysis.overview_kind == "labels":
        rgb = label2rgb(overlay.astype(np.int64), image=grey, alpha=0.35, bg_label=0)
    else:
        alpha = 0.6 * np.clip(overlay, 0, 1)[..., None]
        rgb = np.repeat(grey[..., None], 3, axis=2) * (1 - alpha) + np.array([1.0, 0.1, 0.1]) * alpha
    target = folder / "overview.png"
    with atomic_path(target) as tmp:
        imsave(tmp, (np.clip(rgb, 0, 1) * 255).astype(np.uint8), check_contrast=False)
    return target


def _thumbnail(array: Any, size: int) -> Any:
    """The first plane of an image or stack, subsampled to at most ``size`` px a side — read with a
    stride, so a lazy (zarr, TIFF) whole-slide result is never loaded whole."""
    import numpy as np

    step = max(1, -(-max(array.shape[-2:]) // size))
    lead = (0,) * (array.ndim - 2)
    return np.asarray(array[(*lead, slice(None, None, step), slice(None, None, step))])


def _stored(path: Path, out_dir: Path) -> dict[str, Any] | None:
    """The ``result.json`` of an input whose output folder is whole, or None."""
    try:
        return json.loads((out_dir / file_stem(path) / RESULT).read_text())
    except (OSError, ValueError):
        return None


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class BatchReport:
    """What a batch did: one row per input, and the run's metadata (also in run_summary.json)."""

    rows: list[dict[str, Any]]
    run: dict[str, Any]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]


def run_batch(analysis: str, inputs: Iterable[str | Path], out: str | Path, *, options: dict[str, Any] | None = None,
              overwrite: bool = False, workers: int = 1, scheduler: str | None = None,
              on_row: Callable[[dict[str, Any], int, int], None] | None = None,
              on_progress: Callable[[str, Progress], None] | None = None) -> BatchReport:
    """Run ``analysis`` over ``inputs`` (files, folders, globs) into ``out``; see the module docstring.

    ``on_row(row, done, total)`` is called as each input finishes, ``on_progress(stem, progress)``
    as an input's work advances (progress bars, logs; from a cluster, in the client's thread).
    """
    config = BatchConfig(analysis, [str(i) for i in inputs], str(out), dict(options or {}), overwrite, workers,
                         scheduler)
    spec = get(analysis)
    spec.check_options(config.options)
    signature = {"analysis": analysis, "options": config.options, "models": _models(spec, config.options),
                 "version": __version__}
    paths = spec.find_inputs(config.inputs)
    check_unique_stems(paths)
    with claim(out) as out_dir:
        write_json(out_dir / "batch_config.json", asdict(config))
        start = time.perf_counter()
        rows: dict[str, dict[str, Any]] = {}
        todo: list[tuple[Path, str]] = []
        for path in paths:
            stored = _stored(path, out_dir)
            reason = "overwrite" if overwrite else redo_reason(stored, signature, path)
            if reason is None:
                rows[str(path)] = {k: stored[k] for k in SUMMARY_COLUMNS if k in stored} | {
                    "skipped": True, "reason": "complete, same signature"}
            else:
                todo.append((path, reason))
        finished = len(rows)
        for row in _execute(analysis, todo, out_dir, config.options, signature, workers, scheduler, on_progress,
                            overwrite):
            rows[row["input"]] = row
            finished += 1
            if on_row is not None:
                on_row(row, finished, len(paths))
        ordered = [rows[str(p)] for p in paths]
        run = {"analysis": analysis, "options": config.options, "version": __version__, "inputs": len(paths),
               "processed": len(todo), "skipped": len(paths) - len(todo),
               "failed": sum(r["status"] != "ok" for r in ordered), "seconds": round(time.perf_counter() - start, 3),
               "workers": workers, "scheduler": scheduler, "models": signature["models"]}
        write_csv(out_dir / "run_summary.csv", ordered, SUMMARY_COLUMNS)
        write_json(out_dir / "run_summary.json", {"run": run, "files": ordered})
    return BatchReport(ordered, run)


def _execute(analysis: str, todo: Sequence[tuple[Path, str]], out_dir: Path, options: dict[str, Any],
             signature: dict[str, Any], workers: int, scheduler: str | None,
             on_progress: Callable[[str, Progress], None] | None, overwrite: bool) -> Iterable[dict[str, Any]]:
    """Rows as inputs finish: here one after another, or on a dask cluster as they complete."""
    if scheduler is None and workers <= 1:
        for path, reason in todo:
            stem = file_stem(path)
            report = None if on_progress is None else (lambda step, stem=stem: on_progress(stem, step))
            yield process_one(analysis, str(path), str(out_dir), options, signature, progress=report,
                              overwrite=overwrite, reason=reason)
        return
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  dashboard_address=None)
    client = Client(scheduler or cluster)
    try:
        if on_progress is not None:
            client.subscribe_topic(PROGRESS_TOPIC, lambda event: on_progress(
                event[1]["stem"], Progress(event[1]["done"], event[1]["total"], event[1]["message"])))
        sharing = workers if scheduler is None else None
        futures = [client.submit(process_one, analysis, str(p), str(out_dir), options, signature, sharing,
                                 on_progress is not None, overwrite, reason, pure=False) for p, reason in todo]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _models(analysis: Analysis, options: dict[str, Any]) -> dict[str, str]:
    """Names and sha256 of the models a run uses (the options' or the analysis' defaults); a
    model that cannot be found stops the run before any work (ModelError)."""
    from napari_nanoclass.models.registry import resolve, sha256_of

    return {role: f"{name} sha256:{sha256_of(resolve(name)[0])}"
            for role, name in analysis.job_class().model_names(options).items()}
