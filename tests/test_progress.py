"""Running a side job beside the main one (core.progress.alongside)."""

from __future__ import annotations

import threading
import time

import pytest

from napari_nanoclass.core.progress import Cancelled, CancelToken, Progress, alongside, run_sync

WAIT_S = 5.0


def _job(name: str, steps: int, log: list, *, wait_for: threading.Event | None = None,
         signal: threading.Event | None = None, fail_at: int | None = None, step_s: float = 0.0):
    """A step generator that records (name, thread, step) and its clean-up; it can wait for
    another job's signal (so the test fails instead of hanging if the two do not overlap)."""
    try:
        for i in range(steps):
            if i == 1 and signal is not None:
                signal.set()
            if i == 2 and wait_for is not None:
                assert wait_for.wait(WAIT_S), f"{name} never ran beside the other job"
            if i == fail_at:
                raise RuntimeError(f"{name} failed")
            log.append((name, threading.get_ident(), i))
            time.sleep(step_s)
            yield Progress(i + 1, steps, name)
        return f"{name} done"
    finally:
        log.append((name, "closed"))


def test_side_job_runs_in_its_own_thread_at_the_same_time_and_both_results_come_back():
    log: list = []
    main_started, side_started = threading.Event(), threading.Event()
    main = _job("main", 5, log, signal=main_started, wait_for=side_started)
    side = _job("side", 5, log, signal=side_started, wait_for=main_started)
    seen: list[Progress] = []
    assert run_sync(alongside(main, side, "both"), seen.append) == ("main done", "side done")
    threads = {name: {entry[1] for entry in log if entry[0] == name and len(entry) == 3} for name in ("main", "side")}
    assert threads["main"] == {threading.get_ident()} and len(threads["side"]) == 1
    assert threads["side"] != threads["main"]
    fractions = [step.fraction for step in seen]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] <= 1
    assert {step.message for step in seen} == {"both"}


def test_cancelling_stops_the_side_job_and_cleans_both_up():
    log: list = []
    token, cancelled = CancelToken(), threading.Event()

    def cancel_at_first(step: Progress) -> None:
        token.cancel()
        cancelled.set()  # the side job waits for this at its third step, then goes on at 10 ms a step

    with pytest.raises(Cancelled):
        run_sync(alongside(_job("main", 50, log), _job("side", 50, log, wait_for=cancelled, step_s=0.01)),
                 cancel_at_first, token)
    assert ("main", "closed") in log and ("side", "closed") in log  # the side thread has ended too
    assert max(entry[2] for entry in log if entry[0] == "side" and len(entry) == 3) < 49


@pytest.mark.parametrize("failing", ["main", "side"])
def test_an_error_in_either_job_stops_the_other_and_is_raised(failing: str):
    log: list = []
    jobs = {name: _job(name, 50, log, fail_at=3 if name == failing else None, step_s=0.01) for name in ("main", "side")}
    with pytest.raises(RuntimeError, match=f"{failing} failed"):
        run_sync(alongside(jobs["main"], jobs["side"]))
    assert ("main", "closed") in log and ("side", "closed") in log
    other = "side" if failing == "main" else "main"
    assert max(entry[2] for entry in log if entry[0] == other and len(entry) == 3) < 49  # stopped early


def test_when_main_ends_first_the_job_waits_for_the_side_reporting_its_progress():
    log: list = []
    seen: list[Progress] = []
    result = run_sync(alongside(_job("main", 2, log), _job("side", 20, log, step_s=0.02)), seen.append)
    assert result == ("main done", "side done")
    waiting = [step.done for step in seen[2:]]  # after main's two steps: main counts as done
    assert waiting and min(waiting) >= 500 and len(set(waiting)) > 1


def test_a_side_job_that_cancels_itself_fails_the_whole_job():
    def side():
        yield Progress(0, 1)
        raise Cancelled("the side job gave up")

    with pytest.raises(Cancelled, match="gave up"):
        run_sync(alongside(_job("main", 3, [], step_s=0.01), side()))


def test_the_side_job_is_stopped_even_when_closing_the_main_job_fails():
    log: list = []
    token = CancelToken()

    def main():
        try:
            yield Progress(0, 2)
            yield Progress(1, 2)
        finally:
            raise OSError("main's clean-up failed")

    with pytest.raises(OSError, match="clean-up"):
        run_sync(alongside(main(), _job("side", 200, log, step_s=0.01)), lambda step: token.cancel(), token)
    assert ("side", "closed") in log  # stopped and cleaned up before the error came out
