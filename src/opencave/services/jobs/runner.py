"""Runs queued jobs: the loop of ``opencave worker`` and of a serving process's job threads.

A handler is a function of the job's arguments and a progress callback that returns a JSON-able
result. One code path runs every job: threads claim jobs from the queue (any process, any
number), or a command records a job already claimed by itself and runs it in its own thread
(``run_here``: the command line's imports and versions, with progress shown as they go).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import OperationalError

from opencave.background import repeating
from opencave.services.jobs.queue import Job, JobError, JobQueue
from opencave.services.materialize.versions import worker_name

log = logging.getLogger("opencave.jobs")

Progress = Callable[[str], None]
Handler = Callable[[dict[str, Any], Progress], Any]

HEARTBEAT_S = 15.0
IDLE_POLL_S = 0.5
ABANDONED_CHECK_S = 30.0
PROGRESS_EVERY_S = 1.0  # progress messages are written at most this often (the latest wins)


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler
    description: str


class JobRunner:
    """Claims and runs jobs of the kinds it knows, on ``threads`` daemon threads."""

    def __init__(self, queue: JobQueue, kinds: Iterable[JobKind], threads: int = 1, only: Iterable[str] | None = None) -> None:
        self.queue = queue
        self.kinds = {kind.name: kind for kind in kinds}
        unknown = set(only or ()) - set(self.kinds)
        if unknown:
            raise ValueError(f"unknown job kinds {sorted(unknown)}; known: {sorted(self.kinds)}")
        self.handled = sorted(only) if only else sorted(self.kinds)
        self.threads = threads
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._workers: list[threading.Thread] = []
        self._last_abandoned_check = 0.0
        self._check_lock = threading.Lock()

    # -- running ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._workers or self.threads <= 0:
            return
        self._stop.clear()
        for number in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"opencave-job-{number}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; wait up to ``timeout`` for running jobs. A job still running when the
        process exits is queued again by the next process that looks (its worker is gone)."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._workers = []

    def poke(self) -> None:
        """A job was just queued here: look at once instead of at the next poll."""
        self._wake.set()

    def serve_forever(self) -> None:
        """Run until ``stop`` (``opencave worker``)."""
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._check_abandoned()
                if self.run_one() is None:
                    self._wake.wait(IDLE_POLL_S)
                    self._wake.clear()
            except Exception:  # the database may be away for a moment; never let the thread die
                log.exception("job loop failed; retrying")
                self._stop.wait(IDLE_POLL_S * 4)

    def _check_abandoned(self) -> None:
        now = time.monotonic()
        if now - self._last_abandoned_check < ABANDONED_CHECK_S or not self._check_lock.acquire(blocking=False):
            return
        try:
            self._last_abandoned_check = now
            for job_id in self.queue.requeue_abandoned():
                log.warning("job %s: its process stopped; queued again (or failed after too many starts)", job_id)
        finally:
            self._check_lock.release()

    def run_one(self) -> Job | None:
        """Claim the next job of the handled kinds and run it here; the job as it ended, or
        None when there was nothing to claim."""
        worker = worker_name()
        job = self.queue.claim(self.handled, worker)
        return None if job is None else self._run(job, worker, None)

    def run_here(self, kind: str, payload: dict[str, Any], progress: Progress | None = None, submitted_by: str | None = None) -> Job:
        """Record a job and run it in this thread (a command's own work, progress shown). It is
        written already claimed, so no other process takes it, and it starts once: if this
        process dies, the job is given up, not finished behind the caller's back. A failure is
        recorded, then raised here as it came (a full disk stays a full disk to the caller)."""
        if kind not in self.kinds:
            raise ValueError(f"unknown job kind {kind!r}")
        worker = worker_name()
        job = self.queue.submit(kind, payload, submitted_by=submitted_by, attempts=1, claimed_by=worker)
        return self._run(job, worker, progress, reraise=True)

    def wait(self, job_id: int, timeout: float | None = None, poll: float = 0.25) -> Job:
        """The job once it has ended (or as it is when ``timeout`` passes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.queue.get(job_id)
            if job.done or (deadline is not None and time.monotonic() >= deadline):
                return job
            time.sleep(poll)

    async def ended(self, job_id: int, timeout: float) -> Job:
        """``wait`` for an event loop: the job once it has ended, or as it is after ``timeout``
        (polled, quickly at first, then every half second)."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            job = await asyncio.to_thread(self.queue.get, job_id)
            if job.done or time.monotonic() >= deadline:
                return job
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    async def run_for_request(self, kind: str, payload: dict[str, Any], submitted_by: str | None, wait_s: float) -> Job:
        """A request's job: run in the request's thread when this process runs jobs, else queued
        for workers and waited for up to ``wait_s``. A queued job starts once (a request killed
        with its process gets no answer, so its work is discarded) unless it is still running
        when the wait ends: it is then kept, to be finished even after a crash. The caller
        answers with the job when it has not ended, raises its error, or returns its result."""
        if self.threads > 0:
            return await asyncio.to_thread(self.run_here, kind, payload, None, submitted_by)
        job = await asyncio.to_thread(lambda: self.queue.submit(kind, payload, submitted_by=submitted_by, attempts=1))
        self.poke()
        job = await self.ended(job.id, wait_s)
        if not job.done:
            await asyncio.to_thread(self.queue.keep, job.id)
        return job

    def _run(self, job: Job, worker: str, progress: Progress | None, reraise: bool = False) -> Job:
        kind = self.kinds[job.kind]
        latest: list[str | None] = [None]
        written: list[Any] = [None, time.monotonic()]  # the progress last written, and when

        def say(message: str) -> None:
            if progress is not None:
                progress(message)
            latest[0] = message

        def keep_alive() -> None:
            """Write the progress when it changed, else a heartbeat every HEARTBEAT_S: from a
            thread of its own, so that the work never waits on it (an import reports progress
            inside its transaction, which on SQLite holds the only write lock)."""
            message = latest[0]
            if message is written[0] and time.monotonic() - written[1] < HEARTBEAT_S:
                return
            written[:] = [message, time.monotonic()]
            try:
                self.queue.heartbeat(job.id, worker, message)
            except OperationalError as error:
                if "database is locked" not in str(error):
                    raise
                # SQLite, while the job's own transaction writes: its process is checked directly
                log.debug("job %s: progress not written while the database is locked", job.id)

        log.info("job %s (%s) started", job.id, job.kind)
        try:
            with repeating(PROGRESS_EVERY_S, keep_alive, f"job {job.id} heartbeat"):
                result = kind.handler(job.payload, say)
        except BaseException as error:  # recorded, then re-raised for the caller or an interpreter exit
            failure = JobError.of(error)
            try:
                self.queue.fail(job.id, worker, failure)
            except Exception:  # e.g. the disk that failed the job also holds the database
                log.exception("job %s (%s): its failure could not be recorded", job.id, job.kind)
            log.log(logging.INFO if failure.status < 500 else logging.ERROR, "job %s (%s) failed: %s", job.id, job.kind, error,
                    exc_info=failure.status >= 500 and not reraise)
            if reraise or not isinstance(error, Exception):
                raise
        else:
            self.queue.finish(job.id, worker, result)
            log.info("job %s (%s) done", job.id, job.kind)
        return self.queue.get(job.id)
