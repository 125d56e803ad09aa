"""The registry of materialized versions (``mat_versions``, ``mat_version_tables``).

A version becomes visible only when published (status AVAILABLE, valid); while it is being
built it is RUNNING with a worker name and a heartbeat, so a restarted server can discard the
versions whose builder died without touching ones another live process is still writing.

A worker name identifies one process for good: host, PID, the process's start (boot id and
start tick from /proc, so a new process reusing the PID — PID 1 of every container — is not
mistaken for the builder) and a random instance id.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from datetime import datetime, timedelta, timezone
from typing import Any

from cachetools import LRUCache
from sqlalchemy import Engine, and_, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from opencave.background import repeating
from opencave.errors import Conflict, NotFound
from opencave.storage.sql import reader
from opencave.storage.state import CATALOG_GENERATION, bump_generation
from opencave.storage.tables import mat_version_tables, mat_versions
from opencave.storage.version_files import VersionFiles

AVAILABLE, RUNNING, FAILED, EXPIRED = "AVAILABLE", "RUNNING", "FAILED", "EXPIRED"
PUBLISHED_TABLES_KEPT = 512  # versions × kinds whose table lists a process keeps
STALE_AFTER = timedelta(minutes=2)  # a RUNNING version without a heartbeat for this long is abandoned


_instance: tuple[int, str] | None = None  # (pid, random id) of this process; renewed after a fork


def worker_name() -> str:
    """``host:pid:start:instance`` of this process (``start`` is ``?`` where /proc is missing)."""
    global _instance
    pid = os.getpid()
    if _instance is None or _instance[0] != pid:
        _instance = (pid, f"{socket.gethostname()}:{pid}:{_process_start(pid) or '?'}:{secrets.token_hex(6)}")
    return _instance[1]


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started, as ``<boot id>-<start tick>``; None if unknown (no such
    process, or no /proc). Two processes with one PID never share it."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return f"{boot}-{fields[19]}"  # field 22: start time in clock ticks since boot


def builder_gone(worker: str | None) -> bool | None:
    """Whether the process named ``worker`` has certainly stopped (True), certainly runs
    (False), or cannot be told from here (None: another host, no /proc, an older name)."""
    if worker == worker_name():
        return False
    parts = (worker or "").split(":")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit() or parts[2] == "?":
        return None
    if _process_start(os.getpid()) is None:
        return None
    return _process_start(int(parts[1])) != parts[2]


_builder_gone = builder_gone  # the former name


def format_time(value: datetime | None) -> str | None:
    """CAVE's timestamp format: always six fractional digits, no zone (UTC)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


@dataclass(frozen=True)
class Version:
    id: int
    datastack: str
    version: int
    time_stamp: datetime
    valid: bool
    expires_on: datetime | None
    status: str
    is_merged: bool
    location: str
    created: datetime | None = None  # when its building began: with the id, names it for good

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "datastack": self.datastack,
            "version": self.version,
            "time_stamp": format_time(self.time_stamp),
            "valid": self.valid,
            "expires_on": format_time(self.expires_on),
            "status": self.status,
            "is_merged": self.is_merged,
        }


@dataclass(frozen=True)
class FrozenTable:
    kind: str
    table_name: str
    schema: str | None
    row_count: int
    file: str
    created: datetime
    metadata: dict[str, Any]


def _version(row: Any) -> Version:
    return Version(
        id=row.id,
        datastack=row.datastack,
        version=row.version,
        time_stamp=as_utc(row.time_stamp),
        valid=bool(row.valid),
        expires_on=as_utc(row.expires_on) if row.expires_on else None,
        status=row.status,
        is_merged=bool(row.is_merged),
        location=row.location,
        created=as_utc(row.created),
    )


class VersionRegistry:
    """The versions in the SQL store; ``files`` reaches their files (local or remote)."""

    def __init__(self, engine: Engine, files: VersionFiles | None = None) -> None:
        self.engine = engine
        self.files = files or VersionFiles(Path("versions"), Path("."))
        # A published version's tables never change: kept per process, read once.
        self._published_tables: LRUCache[tuple, list[FrozenTable]] = LRUCache(maxsize=PUBLISHED_TABLES_KEPT)
        self._lock = threading.Lock()

    # -- building ------------------------------------------------------------------------------
    def begin(self, datastack: str, time_stamp: datetime, expires_on: datetime | None, location_root: str) -> Version:
        """Register a RUNNING version numbered after every existing one of the datastack.

        Concurrent builders may pick the same number; the unique constraint refuses all but
        one, and the others take the next number."""
        for _ in range(50):
            try:
                return self._begin(datastack, time_stamp, expires_on, location_root)
            except IntegrityError:
                continue
        raise Conflict(f"Could not number a new version of {datastack}: too many versions are being created at once; retry.", code="version_conflict")

    def begin_numbered(self, datastack: str, number: int, time_stamp: datetime, location_root: str) -> Version:
        """Register a RUNNING version with a given number (an import keeps the number it was
        published with). A FAILED attempt with that number is replaced; any other is a Conflict."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(mat_versions.c.id, mat_versions.c.status).where(mat_versions.c.datastack == datastack, mat_versions.c.version == number)
            ).first()
            if row is not None and row.status == FAILED:
                conn.execute(delete(mat_version_tables).where(mat_version_tables.c.version_id == row.id))
                conn.execute(delete(mat_versions).where(mat_versions.c.id == row.id))
            elif row is not None:
                raise self._taken(datastack, number, row.status)
        try:
            return self._begin(datastack, time_stamp, None, location_root, number)
        except IntegrityError:
            raise self._taken(datastack, number, RUNNING) from None

    @staticmethod
    def _taken(datastack: str, number: int, status: str) -> Conflict:
        being = " is being built or imported now" if status == RUNNING else " exists already"
        return Conflict(
            f"Version {number} of {datastack}{being}; import under another --version number or into another datastack.",
            code="version_exists",
        )

    def _begin(
        self, datastack: str, time_stamp: datetime, expires_on: datetime | None, location_root: str, number: int | None = None
    ) -> Version:
        now = datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            if number is None:
                current = conn.execute(
                    select(func.max(mat_versions.c.version)).where(mat_versions.c.datastack == datastack)
                ).scalar()
                number = (current or 0) + 1
            location = f"{location_root}/{datastack}/v{number}"
            result = conn.execute(
                mat_versions.insert().values(
                    datastack=datastack,
                    version=number,
                    time_stamp=time_stamp,
                    valid=False,
                    expires_on=expires_on,
                    status=RUNNING,
                    is_merged=True,
                    created=now,
                    location=location,
                    worker=worker_name(),
                    heartbeat=now,
                )
            )
            row = conn.execute(select(mat_versions).where(mat_versions.c.id == result.inserted_primary_key[0])).one()
        return _version(row)

    def heartbeat(self, version_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(mat_versions).where(mat_versions.c.id == version_id).values(heartbeat=datetime.now(timezone.utc))
            )

    def keep_alive(self, version_id: int) -> AbstractContextManager[None]:
        """Heartbeat every quarter of ``STALE_AFTER`` while the block runs, so that a live
        build is never taken for abandoned from another host, however long one table takes."""
        return repeating(STALE_AFTER.total_seconds() / 4, lambda: self.heartbeat(version_id), f"version-{version_id}-heartbeat")

    def add_table(self, version_id: int, table: FrozenTable) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                mat_version_tables.insert().values(
                    version_id=version_id,
                    kind=table.kind,
                    table_name=table.table_name,
                    schema=table.schema,
                    row_count=table.row_count,
                    file=table.file,
                    created=table.created,
                    metadata=json.dumps(table.metadata),
                )
            )

    def publish(self, version_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(mat_versions)
                .where(and_(mat_versions.c.id == version_id, mat_versions.c.status == RUNNING))
                .values(status=AVAILABLE, valid=True, worker=None, heartbeat=None)
            )
            bump_generation(conn, CATALOG_GENERATION)

    def fail(self, version_id: int, error: str) -> None:
        """Mark a version FAILED and forget its tables (its files are removed by the caller)."""
        with self.engine.begin() as conn:
            conn.execute(delete(mat_version_tables).where(mat_version_tables.c.version_id == version_id))
            conn.execute(
                update(mat_versions)
                .where(mat_versions.c.id == version_id)
                .values(status=FAILED, valid=False, error=error[:2000], worker=None, heartbeat=None)
            )
            bump_generation(conn, CATALOG_GENERATION)

    def abandoned(self) -> list[Version]:
        """RUNNING versions whose builder is gone. Never this process's own. On this host, one
        whose process has stopped — however recent its heartbeat — while a live process's is
        left alone however long a table takes; where the process cannot be checked (another
        host), one without a heartbeat for ``STALE_AFTER``."""
        now = datetime.now(timezone.utc)
        with reader(self.engine).connect() as conn:
            rows = conn.execute(select(mat_versions).where(mat_versions.c.status == RUNNING)).all()
        out = []
        for row in rows:
            gone = builder_gone(row.worker)
            if gone is None:
                gone = row.heartbeat is None or now - as_utc(row.heartbeat) > STALE_AFTER
            if gone:
                out.append(_version(row))
        return out

    def set_expiry(self, datastack: str, version: int, expires_on: datetime | None) -> Version:
        self.version(datastack, version, include_expired=True)
        with self.engine.begin() as conn:
            conn.execute(
                update(mat_versions)
                .where(and_(mat_versions.c.datastack == datastack, mat_versions.c.version == version))
                .values(expires_on=expires_on)
            )
            bump_generation(conn, CATALOG_GENERATION)
        return self.version(datastack, version, include_expired=True)

    def mark_expired(self, version_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(mat_versions).where(mat_versions.c.id == version_id).values(status=EXPIRED, valid=False))
            bump_generation(conn, CATALOG_GENERATION)

    # -- reading -------------------------------------------------------------------------------
    def list(self, datastack: str, include_expired: bool = False) -> list[Version]:
        query = select(mat_versions).where(mat_versions.c.datastack == datastack)
        if include_expired:
            query = query.where(mat_versions.c.status.in_([AVAILABLE, EXPIRED]))
        else:
            query = query.where(mat_versions.c.status == AVAILABLE, mat_versions.c.valid.is_(True))
        with reader(self.engine).connect() as conn:
            return [_version(row) for row in conn.execute(query.order_by(mat_versions.c.version)).all()]

    def published(self) -> list[Version]:
        """Every published, valid version of every datastack (their files are kept)."""
        query = select(mat_versions).where(mat_versions.c.status == AVAILABLE, mat_versions.c.valid.is_(True))
        with reader(self.engine).connect() as conn:
            rows = conn.execute(query.order_by(mat_versions.c.datastack, mat_versions.c.version)).all()
        return [_version(row) for row in rows]

    def version(self, datastack: str, version: int, include_expired: bool = False) -> Version:
        with reader(self.engine).connect() as conn:
            row = conn.execute(
                select(mat_versions).where(mat_versions.c.datastack == datastack, mat_versions.c.version == version)
            ).first()
        if row is None or row.status not in (AVAILABLE, EXPIRED) or (row.status == EXPIRED and not include_expired):
            available = [v.version for v in self.list(datastack)]
            raise NotFound(
                f"Version {version} not found in datastack {datastack}; available versions are {available}.",
                code="unknown_version",
            )
        return _version(row)

    def tables(self, version: Version, kind: str = "table") -> list[FrozenTable]:
        if version.status != AVAILABLE or version.created is None:
            return self._read_tables(version, kind)
        key = (version.id, version.created, kind)
        with self._lock:
            found = self._published_tables.get(key)
        if found is None:
            found = self._read_tables(version, kind)
            with self._lock:
                self._published_tables[key] = found
        return found

    def _read_tables(self, version: Version, kind: str) -> list[FrozenTable]:
        with reader(self.engine).connect() as conn:
            rows = conn.execute(
                select(mat_version_tables)
                .where(mat_version_tables.c.version_id == version.id, mat_version_tables.c.kind == kind)
                .order_by(mat_version_tables.c.table_name)
            ).all()
        return [
            FrozenTable(
                kind=row.kind,
                table_name=row.table_name,
                schema=row.schema,
                row_count=row.row_count,
                file=row.file,
                created=as_utc(row.created),
                metadata=json.loads(row.metadata),
            )
            for row in rows
        ]
