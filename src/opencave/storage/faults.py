"""Recognises storage failures that the operator, not the caller, must fix: a full or read-only disk.

Each engine reports them its own way (an ``OSError`` errno, SQLite's "database or disk is full",
PostgreSQL's SQLSTATE class 53, DuckDB and Arrow messages), often wrapped by SQLAlchemy; this is
the one place that knows those forms, so the server can answer 507 instead of 500.
"""

from __future__ import annotations

import errno
from enum import Enum


class StorageFault(Enum):
    FULL = "full"
    READ_ONLY = "read_only"


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded")
_READ_ONLY_TEXTS = ("attempt to write a readonly database", "read-only file system")


def _causes(error: BaseException):
    """The error, what it wraps (SQLAlchemy's ``orig``) and its causes, each once."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [getattr(current, "orig", None), current.__cause__, current.__context__]


def storage_fault(error: BaseException) -> StorageFault | None:
    """The kind of storage fault behind ``error``, or None when it is something else."""
    for cause in _causes(error):
        if isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS:
            return StorageFault.FULL
        if isinstance(cause, OSError) and cause.errno == errno.EROFS:
            return StorageFault.READ_ONLY
        sqlstate = getattr(cause, "sqlstate", None)  # psycopg: class 53 is insufficient resources
        if isinstance(sqlstate, str) and sqlstate in ("53100", "53400"):
            return StorageFault.FULL
        text = str(cause).lower()
        if any(marker in text for marker in _FULL_TEXTS):
            return StorageFault.FULL
        if any(marker in text for marker in _READ_ONLY_TEXTS):
            return StorageFault.READ_ONLY
    return None


# What a request that met each fault answers: the operator must act, so 507 with what to do.
FAULT_ANSWERS = {
    StorageFault.FULL: (
        507,
        "insufficient_storage",
        "The server's storage is full, so this request was not completed; free space in its data "
        "directory or database, then retry.",
    ),
    StorageFault.READ_ONLY: (
        507,
        "read_only_storage",
        "The server's storage is read-only, so this request was not completed; make its data "
        "directory or database writable, then retry.",
    ),
}
