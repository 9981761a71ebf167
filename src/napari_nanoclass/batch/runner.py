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

The run is a step generator, :func:`batch_steps` (see :mod:`..core.progress`), which the napari
dock drives in a worker thread (progress bar, per-input list, Cancel) and :func:`run_batch` drives
here: it yields :class:`BatchProgress` as it checks the inputs, within the input being processed
(its tiles) and as each input is settled (done, skipped or failed, with its summary row). Closing
it stops the run at the next step: finished inputs stay, the one in hand leaves no ``.partial``
folder. From cluster workers an input's progress travels as dask events on
:data:`PROGRESS_TOPIC`, at most twice a second per input. :func:`run_batch` turns the steps into
two callbacks: ``on_row`` as each processed input finishes, and ``on_progress`` within an input.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_nanoclass import __version__
from napari_nanoclass.core.analysis import Analysis, check_unique_stems, files_steps, get
from napari_nanoclass.core.atomic import replace
from napari_nanoclass.core.memory import release_memory
from napari_nanoclass.core.outputs import claim, inside
from napari_nanoclass.core.progress import Progress, ProgressCallback, Steps, Throttle, mapped, run_sync
from napari_nanoclass.io.images import IMAGE_SUFFIXES, exclusion_path, file_stem, write_csv, write_json
from napari_nanoclass.io.reader import RESULT

PROGRESS_TOPIC = "napari-nanoclass-progress"
SUMMARY_COLUMNS = ["input", "stem", "status", "error", "seconds", "output", "skipped", "reason"]
POLL = 0.05  # seconds between looks at a cluster's finished inputs and progress events
HEARTBEAT = 0.5  # at most this long without a step while a cluster works, so Cancel is seen


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
    exclusion = _exclusion_fingerprint(signature["options"], path)
    if (old.get("exclusion") is None) != (exclusion is None) or (
            exclusion is not None and not _same_input(old["exclusion"], exclusion)):
        return "exclusion mask changed"
    return None


def _exclusion_fingerprint(options: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The fingerprint of the input's exclusion mask (the ``exclude`` option's folder), if it has
    one: a mask drawn, redrawn or removed since its result makes the result stale."""
    mask = exclusion_path(options.get("exclude"), file_stem(path))
    return None if mask is None else _fingerprint(mask)


def _moved(value: Any, partial: str, final: str) -> Any:
    """``value`` (a result row) with paths inside the ``.partial`` folder pointing to the final one."""
    if isinstance(value, str) and value.startswith(partial):
        return final + value[len(partial):]
    if isinstance(value, dict):
        return {k: _moved(v, partial, final) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, partial, final) for v in value]
    return value


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
    """:func:`process_one_steps` driven to its row, in the calling process or on a dask worker;
    ``sharing`` workers on this machine split its cores for torch. ``progress`` is a callback for
    this input's own progress, or ``True`` on a dask worker to send it to the client as events.
    What its forwards kept for reuse is handed back before it returns: a dask worker's memory
    limit counts it (:mod:`napari_nanoclass.core.memory`)."""
    if sharing:
        from napari_nanoclass.core.devices import configure_threads

        configure_threads(sharing)
    if progress is True:
        progress = _event_reporter(file_stem(Path(path)))
    try:
        return run_sync(process_one_steps(analysis, path, out, options, signature, overwrite, reason),
                        progress or None)
    finally:
        release_memory()


def process_one_steps(analysis: str, path: str | Path, out: str | Path, options: dict[str, Any],
                      signature: dict[str, Any], overwrite: bool = False, reason: str = "") -> Steps[dict[str, Any]]:
    """Process one input into ``out/<stem>/`` (built in ``.<stem>.partial`` and renamed when whole),
    yielding its progress; its ``result.json`` records ``signature`` plus the input's fingerprint,
    and why it was done. A folder ``<stem>/`` that this tool did not write (no ``result.json``) is
    never replaced unless ``overwrite``. Never raises for a bad input: the row says ``failed`` and
    why. Closed part-way (Cancel, Ctrl-C), it removes its ``.partial`` folder.
    """
    source, out_dir = Path(path), Path(out)
    stem = file_stem(source)
    final, partial = inside(out_dir, stem), inside(out_dir, f".{stem}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.perf_counter()
    row: dict[str, Any] = {"input": str(source), "stem": stem, "output": str(final), "skipped": False,
                           "reason": reason}
    marker = {"analysis": analysis, "options": options, "signature": {
        **signature, "input": _fingerprint(source), "exclusion": _exclusion_fingerprint(signature["options"], source)}}
    try:
        if final.exists() and not (final / RESULT).is_file() and not overwrite:
            raise FileExistsError(f"{final} exists and is not a napari-nanoclass result; move it away or "
                                  "rerun with --overwrite to replace it")
        results = yield from files_steps(analysis, [source], partial, claim_folder=False, **options)
        result = results[0]
        if result.get("status") != "ok":
            raise RuntimeError(result.get("error") or "failed")
        write_overview(get(analysis), partial, stem, source)
        row.update(status="ok", error="", seconds=round(time.perf_counter() - start, 3))
        result = _moved(result, str(partial), str(final))
        write_json(partial / RESULT, {**row, **marker, "result": result})
        replace(partial, final)
    except Exception as exc:  # reported in the run summary; the batch goes on
        row.update(status="failed", error=str(exc), seconds=round(time.perf_counter() - start, 3))
    finally:  # gone already when the input is complete
        shutil.rmtree(partial, ignore_errors=True)
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
    from napari_nanoclass.io.images import find_output, read_image, read_label_image, read_output

    if not analysis.overview:  # an analysis without an image to overlay (xrd writes its own plot)
        return None
    found = find_output(folder, analysis.overview.format(stem=stem))
    if found is None:
        return None
    grey = _thumbnail(read_image(source).data, size).astype(np.float32)
    lo, hi = np.percentile(grey, (1, 99))
    grey = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    result = read_label_image(found)[0] if analysis.overview_kind == "labels" else read_output(found)
    overlay = resize(_thumbnail(result, size), grey.shape, order=0, preserve_range=True,
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


@dataclass(frozen=True)
class BatchProgress(Progress):
    """A step of a batch run. ``done``/``total`` count thousandths of an input over the whole run,
    so a bar moves within inputs; ``stem`` is the input in hand and ``step`` its own progress; the
    step that settles an input (done, skipped or failed) carries its summary ``row``. ``finished``
    of ``count`` inputs are settled."""

    stem: str = ""
    step: Progress | None = None
    row: dict[str, Any] | None = None
    finished: int = 0
    count: int = 0


def _at(finished: float, count: int, stem: str, message: str, step: Progress | None = None,
        row: dict[str, Any] | None = None) -> BatchProgress:
    return BatchProgress(int(1000 * finished), 1000 * count, message, stem=stem, step=step, row=row,
                         finished=int(finished), count=count)


def _settled(row: dict[str, Any], finished: int, count: int) -> BatchProgress:
    """The step that reports a settled input, saying how."""
    how = "already done" if row["skipped"] else "done" if row["status"] == "ok" else "failed"
    return _at(finished, count, row["stem"], f"{row['stem']}: {how} ({finished}/{count})", row=row)


def check_folders(analysis: str, folder: str | Path | None, out: str | Path | None) -> list[Path]:
    """The inputs a batch of ``analysis`` over ``folder`` into ``out`` would process; ValueError
    with what to change otherwise: no folder chosen or no such folder, nothing in it the analysis
    reads, no output folder, or an output folder that is the input folder or one of the inputs
    (results would be mixed with the inputs, and a rerun would take its run summary for an
    input). For forms, where folders are picked rather than typed as a command line."""
    spec = get(analysis)
    if not folder or not str(folder).strip():
        raise ValueError("choose an input folder")
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder" if not folder.exists() else f"{folder} is a file, not a folder")
    inputs = spec.find_inputs([folder])
    if not inputs:
        suffixes = spec.inputs or sorted(IMAGE_SUFFIXES)
        raise ValueError(f"{folder} holds nothing {analysis} reads (files ending in {', '.join(suffixes)})")
    if not out or not str(out).strip():
        raise ValueError("choose an output folder")
    target = Path(out).resolve()
    if target == folder.resolve():
        raise ValueError(f"{out} is the input folder; choose another output folder (a new subfolder is fine)")
    if any(target == p.resolve() or p.resolve() in target.parents for p in inputs):
        raise ValueError(f"{out} is one of the inputs; choose another output folder")
    if target.is_file():
        raise ValueError(f"{out} is a file; choose a folder for the results")
    return inputs


def run_batch(analysis: str, inputs: Iterable[str | Path], out: str | Path, *, options: dict[str, Any] | None = None,
              overwrite: bool = False, workers: int = 1, scheduler: str | None = None,
              on_row: Callable[[dict[str, Any], int, int], None] | None = None,
              on_progress: Callable[[str, Progress], None] | None = None) -> BatchReport:
    """Run ``analysis`` over ``inputs`` (files, folders, globs) into ``out``; see the module docstring.

    ``on_row(row, done, total)`` is called as each processed input finishes (``done`` counts the
    skipped ones too), ``on_progress(stem, progress)`` as an input's work advances (progress bars,
    logs). Both are called in this thread, also when the inputs run on a cluster.
    """
    def report(step: BatchProgress) -> None:
        if step.row is not None:
            if on_row is not None and not step.row["skipped"]:
                on_row(step.row, step.finished, step.count)
        elif step.step is not None and on_progress is not None:
            on_progress(step.stem, step.step)

    return run_sync(batch_steps(analysis, inputs, out, options=options, overwrite=overwrite, workers=workers,
                                scheduler=scheduler), report)


def batch_steps(analysis: str, inputs: Iterable[str | Path], out: str | Path, *, options: dict[str, Any] | None = None,
                overwrite: bool = False, workers: int = 1, scheduler: str | None = None) -> Steps[BatchReport]:
    """:func:`run_batch` as a step generator: yields :class:`BatchProgress`, returns the report.

    Everything that can be refused (options, models, names, the output folder) is refused before
    the first step. Closed part-way, the output folder keeps the finished inputs and is released;
    no run summary is written, and a rerun does the rest.
    """
    config = BatchConfig(analysis, [str(i) for i in inputs], str(out), dict(options or {}), overwrite, workers,
                         scheduler)
    spec = get(analysis)
    spec.check_options(config.options)
    signature = {"analysis": analysis, "options": spec.result_options(config.options),
                 "models": _models(spec, config.options),
                 "version": __version__}
    paths = spec.find_inputs(config.inputs)
    check_unique_stems(paths)
    with claim(out) as out_dir:
        write_json(out_dir / "batch_config.json", asdict(config))
        start = time.perf_counter()
        todo, skipped = yield from _triage(paths, out_dir, signature, overwrite)
        if (scheduler is None and workers <= 1) or not todo:  # no cluster started for nothing to do
            processed = yield from _in_process(analysis, todo, out_dir, config.options, signature, overwrite,
                                               len(skipped), len(paths))
        else:
            processed = yield from _on_cluster(analysis, todo, out_dir, config.options, signature, overwrite,
                                               len(skipped), len(paths), workers, scheduler)
        rows = {r["input"]: r for r in [*skipped, *processed]}
        ordered = [rows[str(p)] for p in paths]
        run = {"analysis": analysis, "options": config.options, "version": __version__, "inputs": len(paths),
               "processed": len(todo), "skipped": len(paths) - len(todo),
               "failed": sum(r["status"] != "ok" for r in ordered), "seconds": round(time.perf_counter() - start, 3),
               "workers": workers, "scheduler": scheduler, "models": signature["models"]}
        write_csv(out_dir / "run_summary.csv", ordered, SUMMARY_COLUMNS)
        write_json(out_dir / "run_summary.json", {"run": run, "files": ordered})
    return BatchReport(ordered, run)


def _triage(paths: Sequence[Path], out_dir: Path, signature: dict[str, Any], overwrite: bool
            ) -> Steps[tuple[list[tuple[Path, str]], list[dict[str, Any]]]]:
    """The inputs to do (with why) and the rows of those complete with the same signature, which
    are skipped. Checking an input may hash it, so this yields after each one."""
    todo: list[tuple[Path, str]] = []
    skipped: list[dict[str, Any]] = []
    for i, path in enumerate(paths):
        stored = _stored(path, out_dir)
        reason = "overwrite" if overwrite else redo_reason(stored, signature, path)
        if reason is None:
            skipped.append({k: stored[k] for k in SUMMARY_COLUMNS if k in stored} | {
                "skipped": True, "reason": "complete, same signature"})
            yield _settled(skipped[-1], len(skipped), len(paths))
        else:
            todo.append((path, reason))
            yield _at(len(skipped), len(paths), "", f"checking inputs ({i + 1}/{len(paths)})")
    return todo, skipped


def _in_process(analysis: str, todo: Sequence[tuple[Path, str]], out_dir: Path, options: dict[str, Any],
                signature: dict[str, Any], overwrite: bool, finished: int, count: int) -> Steps[list[dict[str, Any]]]:
    """The inputs one after another in this process, each yielding its own progress; what their
    forwards kept for reuse is handed back at the end (:mod:`napari_nanoclass.core.memory`)."""
    rows = []
    try:
        for path, reason in todo:
            stem = file_stem(path)
            label = f"{stem} ({finished + 1}/{count})"
            steps = process_one_steps(analysis, path, out_dir, options, signature, overwrite, reason)
            rows.append((yield from _within(steps, finished, count, stem, label)))
            finished += 1
            yield _settled(rows[-1], finished, count)
    finally:
        release_memory()
    return rows


def _within(steps: Steps[dict[str, Any]], finished: int, count: int, stem: str, label: str
            ) -> Steps[dict[str, Any]]:
    """An input's own steps as steps of the run; closing the run closes them at once."""
    return mapped(steps, lambda step: _at(finished + step.fraction, count, stem, label, step=step))


def _on_cluster(analysis: str, todo: Sequence[tuple[Path, str]], out_dir: Path, options: dict[str, Any],
                signature: dict[str, Any], overwrite: bool, finished: int, count: int, workers: int,
                scheduler: str | None) -> Steps[list[dict[str, Any]]]:
    """The inputs on a dask cluster (a LocalCluster of ``workers``, or ``scheduler``'s): each
    settled as it completes, with the workers' progress events passed on from this thread."""
    from queue import SimpleQueue

    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  dashboard_address=None)
    client = Client(scheduler or cluster)
    events: SimpleQueue = SimpleQueue()  # filled in the client's thread
    rows: list[dict[str, Any]] = []
    futures: list[Any] = []
    try:
        client.subscribe_topic(PROGRESS_TOPIC, lambda event: events.put(event[1]))
        sharing = workers if scheduler is None else None
        futures += [client.submit(process_one, analysis, str(p), str(out_dir), options, signature, sharing, True,
                                 overwrite, reason, pure=False) for p, reason in todo]
        pending = as_completed(futures)
        last = time.perf_counter()
        while True:
            for step in _events(events, finished, count):
                last = time.perf_counter()
                yield step
            for future in pending.next_batch(block=False):
                rows.append(future.result())
                finished += 1
                last = time.perf_counter()
                yield _settled(rows[-1], finished, count)
            if pending.is_empty():
                break
            if time.perf_counter() - last > HEARTBEAT:  # nothing reported: a step all the same
                last = time.perf_counter()
                yield _at(finished, count, "", f"{finished}/{count} inputs settled; waiting for the workers")
            time.sleep(POLL)
        yield from _events(events, finished, count)
    finally:  # closed part-way: inputs not started are dropped, not left running on the cluster
        client.cancel([future for future in futures if not future.done()])
        client.close()
        if cluster is not None:
            cluster.close()
    return rows


def _events(events: Any, finished: int, count: int) -> Steps[None]:
    """The progress events received from cluster workers so far, as steps of the run."""
    while not events.empty():
        event = events.get()
        step = Progress(event["done"], event["total"], event["message"])
        yield _at(finished, count, event["stem"], f"{event['stem']}: {step.fraction:.0%}", step=step)


def _models(analysis: Analysis, options: dict[str, Any]) -> dict[str, str]:
    """Names and sha256 of the models a run uses (the options' or the analysis' defaults); a
    model that cannot be found stops the run before any work (ModelError)."""
    from napari_nanoclass.models.registry import resolve, sha256_of

    return {role: f"{name} sha256:{sha256_of(resolve(name)[0])}"
            for role, name in analysis.job_class().model_names(options).items()}
