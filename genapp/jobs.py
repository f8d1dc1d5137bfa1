"""A small manager for background training jobs: at most `max_running` at once across all users, the rest wait in
a first-in-first-out queue whose positions can be shown, one unfinished job per session, a stop flag per job.

Each job runs `work(job)` on its own thread once a slot is free. `work` polls `job.should_stop()` (the Stop button)
and may publish progress with `job.report(value)`; whatever it returns becomes `job.result`. A job that is stopped
while still waiting never starts. Finished jobs are forgotten by the manager, and `job.release()` drops what a job
still holds (its work function, last report and result), so a model lives only as long as its session keeps it.
No gradio here: the Train tab maps sessions to their `session_hash`.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

State = Literal["queued", "running", "finished", "failed", "cancelled"]


class JobLimitError(RuntimeError):
    """A session asked for a second job, or the waiting line is full."""


class Job:
    """One unit of background work. Read `state`, `position`, `report_value`, `result`, `error`; call `stop()`."""

    def __init__(self, manager: JobManager, job_id: int, session: str, work: Callable[[Job], Any]) -> None:
        self.id = job_id
        self.session = session
        self.state: State = "queued"
        self.result: Any = None
        self.error: BaseException | None = None
        self.report_value: Any = None
        self.reports = 0  # how many times `report` was called: a cheap "anything new?" check
        self._manager = manager
        self._work: Callable[[Job], Any] | None = work
        self._stop = threading.Event()
        self._done = threading.Event()
        self._released = False

    # -- the worker's side --
    def should_stop(self) -> bool:
        return self._stop.is_set()

    def report(self, value: Any) -> None:
        """Publish the latest progress (replaces the previous report)."""
        self.report_value = value
        self.reports += 1

    # -- the owner's side --
    @property
    def position(self) -> int:
        """1 for the first job in line, 2 for the next, ...; 0 once it runs or has ended."""
        return self._manager.position(self)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def stop(self) -> None:
        """Ask the job to end: a waiting job is taken out of the line, a running one sees `should_stop()`."""
        self._stop.set()
        self._manager._cancel_if_waiting(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended (True) or `timeout` seconds passed (False)."""
        return self._done.wait(timeout)

    def release(self) -> None:
        """Drop the work function, the last report and the result (call after taking what you need). On a job
        that is still running this takes effect when it ends: what it returns is dropped then."""
        self._released = True
        self._work = None
        self.report_value = None
        self.result = None

    def __repr__(self) -> str:
        return f"Job(id={self.id}, session={self.session!r}, state={self.state!r})"


class JobManager:
    """At most `max_running` jobs at once; up to `max_waiting` more wait in line (FIFO); one per session."""

    def __init__(self, max_running: int = 2, max_waiting: int = 16, name: str = "genapp-job") -> None:
        if max_running < 1 or max_waiting < 0:
            raise ValueError(f"max_running must be >= 1 and max_waiting >= 0, got {max_running}, {max_waiting}")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.name = name
        self._lock = threading.Lock()
        self._waiting: deque[Job] = deque()
        self._running: set[Job] = set()
        self._by_session: dict[str, Job] = {}
        self._ids = itertools.count(1)

    def submit(self, session: str, work: Callable[[Job], Any]) -> Job:
        """Queue `work(job)` for `session`; it starts at once if a slot is free.

        JobLimitError if this session already has a job that has not ended, or the line is full."""
        with self._lock:
            if session in self._by_session:
                raise JobLimitError("you already have a training job; stop it or wait for it to end")
            if len(self._running) >= self.max_running and len(self._waiting) >= self.max_waiting:
                raise JobLimitError(f"{len(self._running)} jobs run and {len(self._waiting)} wait already; "
                                    "try again in a minute")
            job = Job(self, next(self._ids), session, work)
            self._by_session[session] = job
            self._waiting.append(job)
            self._dispatch()
        return job

    def job_of(self, session: str) -> Job | None:
        """The session's job that has not ended yet, if any."""
        with self._lock:
            return self._by_session.get(session)

    def stop(self, session: str) -> bool:
        """Stop the session's job; False if it has none."""
        job = self.job_of(session)
        if job is None:
            return False
        job.stop()
        return True

    def position(self, job: Job) -> int:
        with self._lock:
            try:
                return self._waiting.index(job) + 1
            except ValueError:
                return 0

    def counts(self) -> tuple[int, int]:
        """(running, waiting) right now."""
        with self._lock:
            return len(self._running), len(self._waiting)

    # -- internals --
    def _dispatch(self) -> None:  # under the lock
        while self._waiting and len(self._running) < self.max_running:
            job = self._waiting.popleft()
            job.state = "running"
            self._running.add(job)
            threading.Thread(target=self._run, args=(job,), name=f"{self.name}-{job.id}", daemon=True).start()

    def _run(self, job: Job) -> None:
        try:
            work = job._work
            job._work = None  # the thread's frame holds it while it runs; nothing after
            if work is None:
                raise RuntimeError("the job was released before it ran")
            job.result = work(job)
            job.state = "finished"
        except BaseException as error:  # handed to the owner
            job.error = error
            job.state = "failed"
        finally:
            self._finish(job)

    def _cancel_if_waiting(self, job: Job) -> None:
        with self._lock:
            if job not in self._waiting:
                return
            self._waiting.remove(job)
            job.state = "cancelled"
            self._forget(job)

    def _finish(self, job: Job) -> None:
        with self._lock:
            self._running.discard(job)
            self._forget(job)
            self._dispatch()

    def _forget(self, job: Job) -> None:  # under the lock
        if self._by_session.get(job.session) is job:
            del self._by_session[job.session]
        job._work = None
        if job._released:  # nobody will read them
            job.result = job.report_value = None
        job._done.set()
