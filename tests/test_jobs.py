"""The training-job manager: a global limit with a FIFO line and its positions, one job per session, stop flags,
failures that free their slot, and finished jobs that let go of what they made."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from genapp.jobs import JobLimitError, JobManager

TIMEOUT = 10.0


def gated(gate: threading.Event, started: list | None = None):
    """A job body that records that it started, then waits for `gate` (or its stop flag)."""
    def work(job):
        if started is not None:
            started.append(job.session)
        while not gate.is_set() and not job.should_stop():
            gate.wait(0.01)
        return "stopped" if job.should_stop() else f"done {job.session}"
    return work


def wait_until(predicate, what: str) -> None:
    event = threading.Event()
    for _ in range(int(TIMEOUT / 0.01)):
        if predicate():
            return
        event.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_at_most_two_run_and_the_rest_wait_in_order():
    manager = JobManager(max_running=2)
    gates = {s: threading.Event() for s in "abcde"}
    started: list[str] = []
    jobs = {s: manager.submit(s, gated(gates[s], started)) for s in "abcde"}
    wait_until(lambda: len(started) == 2, "two jobs to start")
    assert sorted(started) == ["a", "b"] and manager.counts() == (2, 3)
    assert [jobs[s].position for s in "abcde"] == [0, 0, 1, 2, 3]
    assert [jobs[s].state for s in "abcde"] == ["running", "running", "queued", "queued", "queued"]
    gates["b"].set()  # b ends: c, the first in line, takes its slot and the others move up
    assert jobs["b"].wait(TIMEOUT) and jobs["b"].result == "done b" and jobs["b"].state == "finished"
    wait_until(lambda: "c" in started, "c to start")
    assert [jobs[s].position for s in "cde"] == [0, 1, 2] and manager.counts() == (2, 2)
    for s in "acde":
        gates[s].set()
    assert all(jobs[s].wait(TIMEOUT) for s in "abcde")
    assert started.index("c") < started.index("d") < started.index("e")  # first in, first out
    assert manager.counts() == (0, 0)


def test_one_unfinished_job_per_session():
    manager = JobManager(max_running=2)
    gate = threading.Event()
    job = manager.submit("a", gated(gate))
    with pytest.raises(JobLimitError, match="already have a training job"):
        manager.submit("a", gated(gate))
    assert manager.job_of("a") is job
    other = manager.submit("b", gated(gate))  # another session is fine
    gate.set()
    assert job.wait(TIMEOUT) and other.wait(TIMEOUT)
    assert manager.job_of("a") is None
    again = manager.submit("a", gated(gate))  # once it has ended, the session may train again
    assert again.wait(TIMEOUT) and again.result == "done a"


def test_a_full_line_is_refused():
    manager = JobManager(max_running=1, max_waiting=1)
    gate = threading.Event()
    manager.submit("a", gated(gate))
    manager.submit("b", gated(gate))
    with pytest.raises(JobLimitError, match="1 jobs run and 1 wait"):
        manager.submit("c", gated(gate))
    gate.set()


def test_stop_ends_a_running_job_and_cancels_a_waiting_one():
    manager = JobManager(max_running=1)
    gate = threading.Event()
    started: list[str] = []
    running = manager.submit("a", gated(gate, started))
    waiting = manager.submit("b", gated(gate, started))
    wait_until(lambda: started == ["a"], "a to start")
    assert manager.stop("b") and waiting.wait(TIMEOUT)
    assert waiting.state == "cancelled" and waiting.position == 0 and manager.counts() == (1, 0)
    assert manager.stop("a") and running.wait(TIMEOUT)
    assert running.state == "finished" and running.result == "stopped"
    assert started == ["a"]  # b never ran
    assert not manager.stop("a")  # nothing left to stop


def test_a_failing_job_reports_its_error_and_frees_its_slot():
    manager = JobManager(max_running=1)

    def boom(job):
        raise RuntimeError("out of luck")

    failed = manager.submit("a", boom)
    assert failed.wait(TIMEOUT) and failed.state == "failed" and "out of luck" in str(failed.error)
    ok = manager.submit("b", lambda job: 42)
    assert ok.wait(TIMEOUT) and ok.result == 42


def test_reports_reach_the_owner():
    manager = JobManager()
    gate = threading.Event()

    def work(job):
        for i in range(3):
            job.report({"step": i})
        gate.wait(TIMEOUT)

    job = manager.submit("a", work)
    wait_until(lambda: job.reports == 3, "three reports")
    assert job.report_value == {"step": 2}
    gate.set()
    assert job.wait(TIMEOUT)


def test_finished_jobs_let_go_of_their_results():
    class Model:  # stands in for a trained network
        pass

    manager = JobManager()
    job = manager.submit("a", lambda j: Model())
    assert job.wait(TIMEOUT)
    ref = weakref.ref(job.result)
    job.release()
    gc.collect()
    assert ref() is None and manager.job_of("a") is None


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        JobManager(max_running=0)
    with pytest.raises(ValueError):
        JobManager(max_waiting=-1)


def test_releasing_a_running_job_drops_its_result_when_it_ends():
    manager = JobManager()
    gate = threading.Event()

    class Model:
        pass

    made: list = []

    def work(job):
        gate.wait(TIMEOUT)
        made.append(weakref.ref(model := Model()))
        return model

    job = manager.submit("a", work)
    job.release()  # the owner left before the end
    gate.set()
    assert job.wait(TIMEOUT) and job.result is None
    gc.collect()
    assert made and made[0]() is None
