"""Progress reporting and cancellation shared by every analysis.

Every long computation in napari-nanoclass is written once, as a *step generator*: it yields
:class:`Progress` after each unit of work (a tile, a file, an epoch) and ``return``s its result.
Three drivers consume the same generator:

* :func:`run_sync` drives it in the calling thread (Python API, CLI, tests), forwarding progress to
  a callback or a tqdm bar and honouring a :class:`CancelToken`;
* napari's ``thread_worker`` drives it in a background thread (widgets): each yield becomes a
  ``yielded`` signal for the progress bar, and the dock's Cancel stops and closes it at the next
  yield, in that thread (``_napari.common.TaskRunner``);
* batch runners nest them with ``yield from``.

Because the generator yields after every unit, cancellation takes effect within one unit.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units finished; ``message`` says what is happening (for status bars)."""

    done: int
    total: int
    message: str = ""
    metrics: dict[str, float] | None = None  # e.g. loss and mIoU while training

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


Steps = Generator[Progress, None, T]
ProgressCallback = Callable[[Progress], None]


class Cancelled(RuntimeError):
    """Raised by :func:`run_sync` when its :class:`CancelToken` was set."""


class CancelToken:
    """Thread-safe flag a caller sets to stop a running computation at its next step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class Throttle:
    """Lets progress reports through at most once per ``interval`` seconds per key (e.g. per input
    of a batch), and always the last one (done == total) — for log lines and cluster events, where
    one message per tile would flood the reader."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}

    def due(self, step: Progress, key: str = "") -> bool:
        now = time.monotonic()
        if step.done >= step.total or now - self._last.get(key, -math.inf) >= self.interval:
            self._last[key] = now
            return True
        return False


def run_sync(
    steps: Steps[T],
    progress: ProgressCallback | bool | None = None,
    cancel: CancelToken | None = None,
) -> T:
    """Drive a step generator to completion in this thread and return its result.

    ``progress`` may be a callback, ``True`` for a tqdm bar on stderr, or ``None`` for silence.
    If ``cancel`` is set the generator is closed (its ``finally`` blocks run, so partial outputs
    are cleaned up) and :class:`Cancelled` is raised.
    """
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        def progress(p: Progress) -> None:
            nonlocal bar
            if bar is None:  # drawn at the first step, so a job refused up front prints only its error
                bar = tqdm(total=p.total, unit="step", leave=False)
            bar.total = p.total
            bar.set_description_str(p.message, refresh=False)
            bar.n = p.done
            bar.refresh()

    try:
        while True:
            if cancel is not None and cancel.cancelled:
                steps.close()
                raise Cancelled("cancelled by the user")
            try:
                step = next(steps)
            except StopIteration as stop:
                return stop.value
            if callable(progress):
                progress(step)
    finally:
        if bar is not None:
            bar.close()


def held(steps: Steps[T], at: Progress) -> Steps[T]:
    """Run a sub-job inside a step of a larger job: each of its steps is reported as ``at`` (the
    bar stays where the larger job is, with ``at``'s message), so the job still yields — and can be
    cancelled — while the sub-job runs. Returns the sub-job's result."""
    try:
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                return stop.value
            yield at
    finally:
        steps.close()  # closing the job closes the sub-job now (its clean-up runs), not when it is collected


def mapped(steps: Steps[T], convert: Callable[[Progress], Progress]) -> Steps[T]:
    """``steps`` with every step passed through ``convert``, and their result. Closing the job
    closes ``steps`` at once (their clean-up runs now, not when garbage-collected)."""
    try:
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                return stop.value
            yield convert(step)
    finally:
        steps.close()


def scaled(steps: Steps[T], index: int, count: int, message: str = "", prefix: str = "") -> Steps[T]:
    """Re-express sub-job ``index`` of ``count`` (a plane, a file, a phase) as part of the whole job,
    with ``message`` instead of the sub-job's own, and ``prefix`` before either.

    The outer progress counts thousandths of a sub-job, so the bar moves smoothly and
    monotonically whatever unit each sub-job counts in. Closing the job closes the sub-job now.
    """
    return mapped(steps, lambda step: Progress(int(1000 * (index + step.fraction)), 1000 * count,
                                               prefix + (message or step.message), step.metrics))


POLL_S = 0.05  # how often a job waiting on a side job reports (and can be cancelled)


class _SideJob:
    """A step generator driven to completion in a thread of its own; its fraction done, result
    or error are read from the thread that started it."""

    def __init__(self, steps: Steps[Any], name: str) -> None:
        self.fraction = 0.0
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancel = CancelToken()
        self._thread = threading.Thread(target=self._run, args=(steps,), name=name, daemon=True)
        self._thread.start()

    def _run(self, steps: Steps[Any]) -> None:
        def seen(step: Progress) -> None:
            self.fraction = step.fraction

        try:
            self.result = run_sync(steps, seen, self.cancel)
        except Cancelled as cancelled:
            if not self.cancel.cancelled:  # the job cancelled itself: that is its error
                self.error = cancelled
        except BaseException as error:  # noqa: BLE001 - handed to the starting thread, which raises it
            self.error = error

    def wait(self, timeout: float) -> bool:
        """Whether the job has ended, waiting at most ``timeout`` seconds for it."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Cancel the job at its next step and wait until it has cleaned up."""
        self.cancel.cancel()
        self._thread.join()


def alongside(main: Steps[T], side: Steps[U], message: str = "") -> Steps[tuple[T, U]]:
    """Run ``side`` in a thread of its own while ``main`` runs in this one, and return both results.

    For two independent passes that leave each other's cores free (features measured by
    single-threaded library code beside a network's forward): together they take about the
    time of the longer. Progress is the mean of the two fractions; this job still yields while
    it waits for ``side``, so closing it (Cancel) stops both, and an error in either is raised
    here once ``side`` has stopped."""
    job = _SideJob(side, name=message or "side job")
    try:
        while True:
            try:
                step = next(main)
            except StopIteration as stop:
                main_result = stop.value
                break
            if job.error is not None:
                break
            yield Progress(int(500 * (step.fraction + job.fraction)), 1000, message or step.message, step.metrics)
        while not job.wait(POLL_S):
            yield Progress(int(500 * (1 + job.fraction)), 1000, message)
    finally:
        try:
            main.close()
        finally:
            job.stop()
    if job.error is not None:
        raise job.error
    return main_result, job.result
