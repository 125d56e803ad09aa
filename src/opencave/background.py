"""The one owner of background work in a process: a fixed pool of worker threads fed by a
bounded queue, plus periodic jobs, started and stopped with the runtime.

Everything submitted here is also done on demand (L2 attributes and meshes are computed when a
request finds them missing, skeletons when asked for), so work that cannot be queued — the
queue is full, or the executor is not running, as in administration commands — is dropped
with a log line instead of blocking the request that caused it. A task may name a ``dropped``
callback that undoes what its submitter prepared (claims, stale data) when it will not run.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger("opencave.background")

DEFAULT_WORKERS = 4
DEFAULT_QUEUE_SIZE = 2000
DEFAULT_STOP_TIMEOUT_S = 10.0
IDLE_POLL_S = 0.2


@contextmanager
def repeating(every_s: float, action: Callable[[], object], name: str) -> Iterator[None]:
    """Run ``action`` every ``every_s`` seconds on a thread of its own while the block runs: the
    heartbeats that tell other processes a long piece of work is still alive. A failed run is
    logged and tried again at the next beat."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                action()
            except Exception:
                log.warning("%s failed; tried again in %.0f s", name, every_s, exc_info=True)

    thread = threading.Thread(target=beat, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@dataclass
class _Task:
    name: str
    run: Callable[[], object]
    dropped: Callable[[], None] | None = None

    def drop(self, why: str) -> None:
        log.log(logging.DEBUG if why == "not running" else logging.WARNING, "background task %s dropped (%s)", self.name, why)
        if self.dropped is not None:
            try:
                self.dropped()
            except Exception:
                log.exception("cleaning up after dropped task %s failed", self.name)


@dataclass
class _Periodic:
    """A job run every ``interval_s``; run again at once while it reports more work waiting."""

    name: str
    interval_s: float
    run: Callable[[], bool | None]
    due: float = 0.0
    busy: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class BackgroundExecutor:
    """A bounded executor: ``workers`` daemon threads, at most ``queue_size`` waiting tasks."""

    def __init__(self, workers: int = DEFAULT_WORKERS, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if workers < 1 or queue_size < 1:
            raise ValueError("a background executor needs at least one worker and one queue slot")
        self.workers = workers
        self._queue: queue.Queue[_Task] = queue.Queue(maxsize=queue_size)
        self._periodic: list[_Periodic] = []
        self._threads: list[threading.Thread] = []
        self._state = threading.Condition()
        self._running = False
        self._active = 0  # tasks being run now
        self._cancel = threading.Event()  # workers discard what is still queued
        self._tick = threading.Event()  # wakes the clock of periodic jobs

    @property
    def running(self) -> bool:
        return self._running

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers and the clock of periodic jobs (again after ``stop``)."""
        with self._state:
            if self._running:
                return
            self._running = True
            self._cancel.clear()
            self._threads = [
                threading.Thread(target=self._work, name=f"background-{i}", daemon=True) for i in range(self.workers)
            ]
            self._threads.append(threading.Thread(target=self._clock, name="background-clock", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """Refuse new work, let the workers finish what is queued for up to ``timeout`` seconds,
        then drop the rest. True if everything finished; a task still running after the
        timeout is left to its daemon thread (the process may exit under it)."""
        with self._state:
            if not self._running:
                return True
            self._running = False
        self._tick.set()
        deadline = time.monotonic() + timeout
        finished = self.join(timeout)
        if not finished:
            self._cancel.set()
            self._drop_queued("stopping")
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("background work still running after %.0f s, abandoned: %s", timeout, ", ".join(alive))
        self._threads = []
        return finished and not alive

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no task is queued or running; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._state:
            while self._queue.unfinished_tasks or self._active:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._state.wait(IDLE_POLL_S if left is None else min(left, IDLE_POLL_S))
        return True

    # -- submitting ------------------------------------------------------------------------------
    def submit(self, name: str, run: Callable[[], object], dropped: Callable[[], None] | None = None) -> bool:
        """Queue ``run``; False (and ``dropped`` called) when it will not run: the queue is full
        or the executor is not running."""
        task = _Task(name, run, dropped)
        if not self._running:
            task.drop("not running")
            return False
        try:
            self._queue.put_nowait(task)
        except queue.Full:
            task.drop(f"queue full: {self._queue.maxsize} tasks waiting")
            return False
        return True

    def every(self, name: str, interval_s: float, run: Callable[[], bool | None]) -> None:
        """Run ``run`` every ``interval_s`` seconds while started (never two runs at once); a
        run returning True has more work waiting and is queued again at once."""
        self._periodic.append(_Periodic(name, interval_s, run))
        self._tick.set()

    # -- threads ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            try:
                task = self._queue.get(timeout=IDLE_POLL_S)
            except queue.Empty:
                if not self._running:
                    return
                continue
            with self._state:
                self._active += 1
            try:
                if self._cancel.is_set():
                    task.drop("stopping")
                else:
                    task.run()
            except Exception:  # a task's failure is its own; the worker carries on
                log.exception("background task %s failed", task.name)
            finally:
                self._queue.task_done()
                with self._state:
                    self._active -= 1
                    self._state.notify_all()

    def _drop_queued(self, why: str) -> None:
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                task.drop(why)
            finally:
                self._queue.task_done()
                with self._state:
                    self._state.notify_all()

    def _clock(self) -> None:
        while self._running:
            self._tick.clear()  # before looking: a job rescheduled meanwhile sets it again
            now = time.monotonic()
            wait = 1.0
            due: list[_Periodic] = []
            for job in list(self._periodic):
                with job.lock:
                    if job.busy:
                        continue
                    if job.due <= now:
                        job.busy = True
                        due.append(job)
                    else:
                        wait = min(wait, job.due - now)
            for job in due:  # outside the job's lock: a refused task reschedules it at once
                self.submit(job.name, lambda job=job: self._run_periodic(job), lambda job=job: self._reschedule(job, False))
            self._tick.wait(max(wait, 0.01))

    def _run_periodic(self, job: _Periodic) -> None:
        more = False
        try:
            more = bool(job.run())
        finally:
            self._reschedule(job, more)

    def _reschedule(self, job: _Periodic, more: bool) -> None:
        with job.lock:
            job.busy = False
            job.due = time.monotonic() + (0.0 if more else job.interval_s)
        self._tick.set()
