"""The job queue in the live store: work done off the request path by any process that runs jobs.

A job is a row of ``jobs``: a kind, JSON arguments, a status. Processes that run jobs (every
``opencave serve`` unless told not to, and any number of ``opencave worker``) claim the oldest
queued job of the highest priority among the kinds they handle with one statement; on PostgreSQL
its ``FOR UPDATE SKIP LOCKED`` lets many claimers pass each other without waiting, on SQLite the
database's single writer serialises them — the same code either way. While a job runs its
heartbeat is kept fresh; a job whose process has stopped (seen directly on the same host, by a
stale heartbeat elsewhere) is queued again, up to its ``max_attempts`` starts, so a killed
worker loses no acknowledged work. Work a caller runs or waits on itself (a command's import, a
request's version) allows one start: if the process dies, the caller saw it fail, and the work
is discarded rather than done behind its back; ``keep`` turns it into queued work once the
caller has been told it is accepted. Jobs that must not be queued twice carry a ``key``: one queued or
running job per key (a partial unique index), so concurrent submitters agree on one job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from opencave.errors import Conflict, NotFound, OpencaveError
from opencave.services.materialize.versions import builder_gone
from opencave.storage.faults import FAULT_ANSWERS, storage_fault
from opencave.storage.sql import reader
from opencave.storage.tables import jobs

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
STALE_AFTER = timedelta(minutes=2)  # a running job without a heartbeat for this long is abandoned
MAX_ATTEMPTS = 3


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class JobError:
    """Why a job failed, kept so that whoever waits for it can raise the same domain error."""

    message: str
    status: int = 500
    code: str = "job_failed"

    @classmethod
    def of(cls, error: BaseException) -> "JobError":
        if isinstance(error, OpencaveError):
            return cls(error.message, error.status, error.code)
        fault = storage_fault(error)
        if fault is not None:  # a full or read-only disk: the operator's to fix, as for a request
            status, code, message = FAULT_ANSWERS[fault]
            return cls(message, status, code)
        return cls(f"{type(error).__name__}: {error}")

    def to_text(self) -> str:
        return json.dumps({"message": self.message, "status": self.status, "code": self.code})

    @classmethod
    def from_text(cls, text: str | None) -> "JobError | None":
        if text is None:
            return None
        try:
            data = json.loads(text)
            return cls(str(data["message"]), int(data["status"]), str(data["code"]))
        except (ValueError, KeyError, TypeError):
            return cls(text)

    def raise_(self) -> None:
        """Raise the domain error the job failed with (a 500-like failure as a 500)."""
        error = OpencaveError(self.message, code=self.code)
        error.status = self.status
        raise error


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    status: str
    priority: int
    submitted_by: str | None
    key: str | None
    created: datetime
    started: datetime | None
    finished: datetime | None
    attempts: int
    max_attempts: int
    worker: str | None
    heartbeat: datetime | None
    progress: str | None
    result: Any
    error: JobError | None

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "payload": self.payload,
            "priority": self.priority,
            "submitted_by": self.submitted_by,
            "created": _iso(self.created),
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "worker": self.worker,
            "progress": self.progress,
            "result": self.result,
            "error": None if self.error is None else {"message": self.error.message, "code": self.error.code, "status": self.error.status},
        }


def _job(row: Any) -> Job:
    return Job(
        id=row.id,
        kind=row.kind,
        payload=json.loads(row.payload),
        status=row.status,
        priority=row.priority,
        submitted_by=row.submitted_by,
        key=row.key,
        created=_utc(row.created),
        started=_utc(row.started),
        finished=_utc(row.finished),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        worker=row.worker,
        heartbeat=_utc(row.heartbeat),
        progress=row.progress,
        result=None if row.result is None else json.loads(row.result),
        error=JobError.from_text(row.error),
    )


class JobQueue:
    """Submit, claim, follow and finish jobs (one SQL statement per step)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read = reader(engine)

    def submit(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        priority: int = 0,
        submitted_by: str | None = None,
        key: str | None = None,
        attempts: int = MAX_ATTEMPTS,
        claimed_by: str | None = None,
    ) -> Job:
        """Queue a job that may start ``attempts`` times. With ``key``, a queued or running job
        of that key is returned instead of a second one. With ``claimed_by``, the job is
        written already running for that worker (the caller runs it: no other process can
        take it in between)."""
        now = _now()
        values = dict(
            kind=kind,
            payload=json.dumps(payload, sort_keys=True),
            status=QUEUED,
            priority=priority,
            submitted_by=submitted_by,
            key=key,
            created=now,
            attempts=0,
            max_attempts=attempts,
        )
        if claimed_by is not None:
            values.update(status=RUNNING, worker=claimed_by, started=now, heartbeat=now, attempts=1)
        try:
            with self.engine.begin() as conn:
                return _job(conn.execute(jobs.insert().values(**values).returning(*jobs.c)).one())
        except IntegrityError:
            active = self.active_with_key(key) if key else None
            if active is None:
                raise
            return active

    def active_with_key(self, key: str) -> Job | None:
        with self._read.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.key == key, jobs.c.status.in_((QUEUED, RUNNING)))).first()
        return None if row is None else _job(row)

    def get(self, job_id: int) -> Job:
        with self._read.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"There is no job {job_id}; `opencave jobs ls` lists the jobs.", code="job_not_found")
        return _job(row)

    def list(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        submitted_by: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Newest first."""
        query = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if status:
            query = query.where(jobs.c.status == status)
        if kind:
            query = query.where(jobs.c.kind == kind)
        if submitted_by:
            query = query.where(jobs.c.submitted_by == submitted_by)
        with self._read.connect() as conn:
            return [_job(row) for row in conn.execute(query)]

    def claim(self, kinds: Iterable[str], worker: str) -> Job | None:
        """Take the next queued job of ``kinds`` for ``worker``; None when there is none.
        Concurrent claimers never take the same job."""
        kinds = list(kinds)
        if not kinds:
            return None
        candidate = select(jobs.c.id).where(jobs.c.status == QUEUED, jobs.c.kind.in_(kinds))
        candidate = candidate.order_by(jobs.c.priority.desc(), jobs.c.id).limit(1).with_for_update(skip_locked=True)
        now = _now()
        statement = (
            update(jobs)
            .where(jobs.c.id == candidate.scalar_subquery(), jobs.c.status == QUEUED)
            .values(status=RUNNING, worker=worker, started=now, heartbeat=now, attempts=jobs.c.attempts + 1, progress=None)
            .returning(*jobs.c)
        )
        with self.engine.begin() as conn:
            row = conn.execute(statement).first()
        return None if row is None else _job(row)

    def heartbeat(self, job_id: int, worker: str, progress: str | None = None) -> bool:
        """Keep a running job alive; False when this worker no longer holds it (it was given up
        as abandoned, or cancelled)."""
        values: dict[str, Any] = {"heartbeat": _now()}
        if progress is not None:
            values["progress"] = progress[:2000]
        with self.engine.begin() as conn:
            held = conn.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.worker == worker, jobs.c.status == RUNNING).values(**values)
            ).rowcount
        return bool(held)

    def finish(self, job_id: int, worker: str, result: Any = None) -> bool:
        return self._end(job_id, worker, DONE, result=None if result is None else json.dumps(result))

    def fail(self, job_id: int, worker: str, error: JobError) -> bool:
        return self._end(job_id, worker, FAILED, error=error.to_text())

    def _end(self, job_id: int, worker: str, status: str, **values: Any) -> bool:
        with self.engine.begin() as conn:
            ended = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.worker == worker, jobs.c.status == RUNNING)
                .values(status=status, finished=_now(), **values)
            ).rowcount
        return bool(ended)

    def keep(self, job_id: int) -> None:
        """Let a job a caller waited on be started again after a crash (``MAX_ATTEMPTS``): the
        caller has now been told it was accepted."""
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(max_attempts=MAX_ATTEMPTS))

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued job (a running one finishes: its work is written atomically anyway)."""
        with self.engine.begin() as conn:
            cancelled = conn.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.status == QUEUED).values(status=CANCELLED, finished=_now())
            ).rowcount
        job = self.get(job_id)
        if not cancelled and job.status != CANCELLED:
            raise Conflict(f"Job {job_id} is {job.status}; only queued jobs can be cancelled.", code="job_not_queued")
        return job

    def requeue_abandoned(self, now: datetime | None = None) -> list[int]:
        """Queue again the running jobs whose process stopped (or fail them after their
        ``max_attempts`` starts); returns their ids."""
        now = now or _now()
        with self._read.connect() as conn:
            running = conn.execute(
                select(jobs.c.id, jobs.c.worker, jobs.c.heartbeat, jobs.c.attempts, jobs.c.max_attempts).where(jobs.c.status == RUNNING)
            ).all()
        given_up = []
        for row in running:
            gone = builder_gone(row.worker)
            stale = _utc(row.heartbeat) is None or now - _utc(row.heartbeat) > STALE_AFTER
            if gone is False or (gone is None and not stale):
                continue
            again = row.attempts < row.max_attempts
            values: dict[str, Any] = (
                {"status": QUEUED, "worker": None, "heartbeat": None}
                if again
                else {
                    "status": FAILED,
                    "finished": now,
                    "error": JobError(
                        f"the process running it stopped ({row.attempts} of {row.max_attempts} starts); not tried again", 500, "job_abandoned"
                    ).to_text(),
                }
            )
            with self.engine.begin() as conn:
                moved = conn.execute(
                    update(jobs).where(jobs.c.id == row.id, jobs.c.status == RUNNING, jobs.c.worker == row.worker).values(**values)
                ).rowcount
            if moved:
                given_up.append(row.id)
        return given_up

    def counts(self) -> dict[str, int]:
        """Jobs per status (for health pages and ``opencave jobs ls``)."""
        with self._read.connect() as conn:
            return {status: n for status, n in conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))}
