"""The client's local, content-addressed query cache (``CAVEclient(..., cache=True)``).

Answers pinned to a materialized version, or to an explicit moment in the past, never change,
so they can be kept for good: each DataFrame is written once as a Parquet file named by the
SHA-256 of its content, and a SQLite index maps the *resolved key* of the query (server,
datastack, service, method, table, resolved version or moment, normalised parameters) to that
hash. A truncated answer (a server's row cap cut it) is never stored: it is not the answer.

``QueryCache`` is what the sub-clients call; it also records every call for ``client.lock``
(see ``opencave.client.lockfile``). ``cli_ls``/``cli_rm`` implement ``opencave cache ls|rm``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .query_frames import convert_timestamp

ATTRS_KEY = b"opencave.attrs"
# A moment counts as past (its answer can no longer change) this long after it; edits are
# stamped when they start, so a moment a few seconds old may still gain an edit.
SETTLED = timedelta(minutes=1)
# Filter keywords whose list values are sets: order and repeats do not change the answer.
SET_FILTERS = frozenset({"filter_in_dict", "filter_out_dict"})


# -- where, and how content is named ------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$OPENCAVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/opencave``, else ``~/.cache/opencave``."""
    if os.environ.get("OPENCAVE_CACHE_DIR"):
        return Path(os.environ["OPENCAVE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "opencave"


def resolve_cache_dir(cache: bool | str | os.PathLike[str] | None) -> Path | None:
    """The directory a client's ``cache=`` argument means (None: caching off)."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return default_cache_dir()
    return Path(cache).expanduser()


def frame_table(frame: pd.DataFrame) -> pa.Table:
    """The Arrow table stored for ``frame``: its data, index and dtypes (pandas metadata), and
    its ``attrs`` as JSON in the schema metadata, in one chunk so equal frames give equal bytes."""
    table = pa.Table.from_pandas(frame, preserve_index=None)  # a RangeIndex as metadata, others as columns
    metadata = dict(table.schema.metadata or {})
    metadata[ATTRS_KEY] = json.dumps(frame.attrs, ensure_ascii=False, allow_nan=True).encode()
    return table.replace_schema_metadata(metadata).combine_chunks()


def parquet_bytes(table: pa.Table) -> bytes:
    """The Parquet file of ``table``, written in memory (the bytes the content hash covers)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def content_hash(data: bytes) -> str:
    """SHA-256 of a stored file's bytes: its name in the store.

    The file, not an in-memory layout, is hashed: Arrow buffers of equal tables may differ
    (validity bitmaps, offsets) while the Parquet file of equal tables is the same.
    """
    return hashlib.sha256(data).hexdigest()


def table_frame(table: pa.Table) -> pd.DataFrame:
    """The DataFrame a stored table holds, ``attrs`` included."""
    frame = table.to_pandas()
    raw = (table.schema.metadata or {}).get(ATTRS_KEY)
    frame.attrs = json.loads(raw) if raw else {}
    return frame


class NotStorable(ValueError):
    """A frame the Parquet round trip would not give back identically."""


def roundtrip_problem(frame: pd.DataFrame, back: pd.DataFrame) -> str | None:
    """What differs in structure between a frame and its stored copy (values are Arrow's to
    keep), or None. Catches what Parquet cannot carry, e.g. an empty categorical's categories."""
    if not frame.columns.equals(back.columns):
        return "its columns"
    if not frame.index.equals(back.index) or type(frame.index) is not type(back.index) or frame.index.names != back.index.names:
        return "its index"
    for column, (left, right) in enumerate(zip(frame.dtypes, back.dtypes)):
        if left != right:
            return f"the dtype of column {frame.columns[column]!r} ({left} comes back as {right})"
    return None


def attrs_storable(frame: pd.DataFrame) -> bool:
    """Whether ``attrs`` survive JSON unchanged (else the stored copy would differ)."""
    try:
        return json.loads(json.dumps(frame.attrs, allow_nan=True)) == frame.attrs
    except (TypeError, ValueError):
        return False


# -- keys ---------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` as JSON-native types: numpy scalars and arrays, tuples, sets, datetimes."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=_sort_key)
    if isinstance(value, (np.ndarray, pd.Series, pd.Index)) and value.dtype.kind in "iub":
        return np.asarray(value).tolist()  # fast for long id arrays; Python ints and bools
    if isinstance(value, (list, tuple)) and all(type(v) is int or type(v) is str for v in value):
        return list(value)
    if isinstance(value, (list, tuple, np.ndarray, pd.Series, pd.Index)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, datetime):
        return utc(value).isoformat()
    if isinstance(value, pd.Timestamp):
        return utc(value.to_pydatetime()).isoformat()
    return value


def _sort_key(value: Any) -> tuple[str, str]:
    return (type(value).__name__, json.dumps(value, sort_keys=True, default=str))


def _sorted_sets(value: Any) -> Any:
    """Sort and deduplicate the lists inside a (possibly table-nested) set filter."""
    if isinstance(value, dict):
        return {k: _sorted_sets(v) for k, v in value.items()}
    if isinstance(value, list):
        if all(type(v) is int for v in value):  # the usual case: ids, often many
            for dtype in (np.int64, np.uint64):
                try:
                    return np.unique(np.asarray(value, dtype=dtype)).tolist()
                except OverflowError:
                    continue
        if all(type(v) is int for v in value) or all(type(v) is str for v in value):
            return sorted(set(value))
        unique = {json.dumps(v, sort_keys=True): v for v in value}
        return sorted(unique.values(), key=_sort_key)
    return value


def normalise_params(params: Mapping[str, Any], set_keys: frozenset[str] = SET_FILTERS) -> dict[str, Any]:
    """Parameters as a canonical JSON-native dict, so equal queries get equal keys.

    Values become JSON types; empty dicts and lists mean "not given" (None); lists under
    ``set_keys`` (filters by membership) are sorted and deduplicated at every nesting level.
    Everything else keeps its order (``select_columns`` orders the columns).
    """
    normal: dict[str, Any] = {}
    for key in sorted(params):
        value = _plain(params[key])
        if value == {} or value == []:
            value = None
        if key in set_keys and value is not None:
            value = _sorted_sets(value)
        normal[key] = value
    return normal


def utc(moment: datetime) -> datetime:
    """A datetime in UTC (naive ones are taken as UTC, as the client does)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class QueryKey:
    """One call, as asked (``version``/``timestamp`` None = default/latest) or as resolved."""

    server: str
    datastack: str
    service: str
    method: str
    table: str | None
    version: int | None
    timestamp: str | None  # ISO 8601, UTC
    params: dict[str, Any] = field(hash=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "datastack": self.datastack,
            "service": self.service,
            "method": self.method,
            "table": self.table,
            "version": self.version,
            "timestamp": self.timestamp,
            "params": self.params,
        }

    @property
    def digest(self) -> str:
        return hashlib.sha256(canonical(self.as_json()).encode()).hexdigest()


# -- the store ----------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    server TEXT NOT NULL,
    datastack TEXT NOT NULL,
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    table_name TEXT,
    version INTEGER,
    timestamp TEXT,
    params TEXT NOT NULL,
    rows INTEGER NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_hash ON entries (hash);
"""


@dataclass(frozen=True)
class Entry:
    """One row of the index."""

    key: str
    hash: str
    server: str
    datastack: str
    service: str
    method: str
    table: str | None
    version: int | None
    timestamp: str | None
    params: dict[str, Any]
    rows: int
    size: int
    created: float
    last_used: float

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__}


class CacheStore:
    """Parquet files named by content hash under ``objects/``, indexed in ``index.sqlite``.

    Several processes may share a directory: files appear by atomic rename, and index changes
    (and the removal of files no entry names any more) happen in SQLite write transactions.
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.objects = self.directory / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def __getstate__(self) -> dict[str, Any]:
        # Connections stay with their process and thread: a copy opens its own.
        return {"directory": self.directory, "objects": self.objects}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.directory / "index.sqlite", timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=60000")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across crashes of the process
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def path_of(self, digest: str) -> Path:
        return self.objects / digest[:2] / f"{digest}.parquet"

    # content

    def write(self, frame: pd.DataFrame) -> tuple[str, int]:
        """Store ``frame`` (if not there yet); returns its content hash and file size.

        Raises ``NotStorable`` if the stored copy would not be an identical DataFrame.
        """
        data = parquet_bytes(frame_table(frame))
        problem = roundtrip_problem(frame, table_frame(pq.read_table(pa.BufferReader(data))))
        if problem is not None:
            raise NotStorable(f"the answer does not come back identical from Parquet: {problem}")
        digest = content_hash(data)
        target = self.path_of(digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                os.replace(temporary, target)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
        return digest, target.stat().st_size

    def read(self, digest: str, verify: bool = False) -> pd.DataFrame | None:
        """The frame stored under ``digest``, None if absent. ``verify`` re-hashes the content
        and raises ValueError if it does not match."""
        try:
            data = self.path_of(digest).read_bytes()
        except FileNotFoundError:
            return None
        if verify and content_hash(data) != digest:
            raise ValueError(f"cached content {digest[:12]} is corrupt: its hash does not match its name")
        return table_frame(pq.read_table(pa.BufferReader(data)))

    def has(self, digest: str) -> bool:
        return self.path_of(digest).exists()

    # index

    def put(self, key: QueryKey, frame: pd.DataFrame) -> str:
        """Store ``frame`` as the answer of ``key``; returns its content hash."""
        digest, size = self.write(frame)
        now = time.time()
        with self._transaction() as db:
            if not self.has(digest):  # removed by a concurrent ``rm`` between write and here
                digest, size = self.write(frame)
            db.execute(
                "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET "
                "hash=excluded.hash, rows=excluded.rows, size=excluded.size, last_used=excluded.last_used",
                (
                    key.digest, digest, key.server, key.datastack, key.service, key.method, key.table,
                    key.version, key.timestamp, canonical(key.params), len(frame), size, now, now,
                ),
            )
        return digest

    def lookup(self, key: QueryKey) -> tuple[str, pd.DataFrame] | None:
        """``(hash, frame)`` stored for ``key``, or None; marks the entry used."""
        row = self._db().execute("SELECT hash FROM entries WHERE key = ?", (key.digest,)).fetchone()
        if row is None:
            return None
        try:
            frame = self.read(row[0])
        except (pa.ArrowException, OSError):  # a damaged file: a miss, and forgotten
            frame = None
        if frame is None:  # the file went missing: forget the entry
            with self._transaction() as db:
                db.execute("DELETE FROM entries WHERE key = ? AND hash = ?", (key.digest, row[0]))
            return None
        try:
            with self._transaction() as db:
                db.execute("UPDATE entries SET last_used = ? WHERE key = ?", (time.time(), key.digest))
        except sqlite3.OperationalError:  # a busy index must not fail a hit
            pass
        return row[0], frame

    def entries(self, server: str | None = None, datastack: str | None = None) -> list[Entry]:
        """Index entries, oldest use first, optionally of one server and/or datastack."""
        query, args = "SELECT * FROM entries WHERE 1=1", []
        if server is not None:
            query += " AND server = ?"
            args.append(server.rstrip("/"))
        if datastack is not None:
            query += " AND datastack = ?"
            args.append(datastack)
        rows = self._db().execute(query + " ORDER BY last_used, key", args).fetchall()
        return [Entry(*row[:9], json.loads(row[9]), *row[10:]) for row in rows]  # type: ignore[misc]

    def remove(self, keys: list[str]) -> int:
        """Delete entries by key, then every file no entry names; returns entries removed."""
        with self._transaction() as db:
            removed = 0
            for key in keys:
                removed += db.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount
            used = {row[0] for row in db.execute("SELECT DISTINCT hash FROM entries")}
            for path in self.objects.glob("*/*.parquet"):
                if path.stem not in used:
                    path.unlink(missing_ok=True)
        return removed


# -- what clients call --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """A server's answer with what it belongs to."""

    frame: pd.DataFrame
    version: int | None  # the version the answer belongs to (resolved), or None
    timestamp: datetime | None  # the moment it belongs to (UTC, resolved), or None
    truncated: bool = False


@dataclass
class Recorded:
    """One call a client made, for its lockfile."""

    call: QueryKey  # as asked
    version: int | None  # as resolved
    timestamp: str | None
    hash: str | None
    rows: int
    truncated: bool
    stored: bool  # its content is in the cache directory
    reason: str | None = None  # why not, if not

    def as_json(self) -> dict[str, Any]:
        call = self.call.as_json()
        del call["server"]
        return {
            "call": call,
            "resolved": {"version": self.version, "timestamp": self.timestamp},
            "hash": self.hash,
            "rows": self.rows,
            "truncated": self.truncated,
            "replayable": self.stored,
            **({"reason": self.reason} if self.reason else {}),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else utc(moment).isoformat()


class QueryCache:
    """Answers a client's queries from the store when it can, records every call.

    One per client; ``directory`` None means caching is off: calls then go straight to the
    server and are not recorded (a lockfile needs the content anyway). Calls made while
    another is being answered (a live query that turns into a version query) belong to the
    outer call and are neither recorded nor looked up on their own.
    """

    def __init__(self, server: str, directory: str | os.PathLike[str] | None = None):
        self.server = server.rstrip("/")
        self.store = CacheStore(directory) if directory is not None else None
        self.records: list[Recorded] = []
        self._depth = threading.local()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Copies (pickled clients) keep the store and the record; locks are made anew.
        state = self.__dict__.copy()
        del state["_depth"], state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._depth = threading.local()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.store is not None

    @property
    def directory(self) -> Path | None:
        return None if self.store is None else self.store.directory

    def key(
        self, service: str, method: str, datastack: str, table: str | None,
        version: int | None, timestamp: datetime | None, params: Mapping[str, Any],
    ) -> QueryKey:
        return QueryKey(
            self.server, datastack, service, method, table, version, _iso(timestamp), normalise_params(params)
        )

    @staticmethod
    def pinned(version: int | None, timestamp: datetime | None) -> bool:
        """Whether an answer at this version/moment can no longer change."""
        if version is not None:
            return True
        return timestamp is not None and utc(timestamp) <= datetime.now(timezone.utc) - SETTLED

    @contextmanager
    def _outermost(self) -> Iterator[bool]:
        depth = getattr(self._depth, "value", 0)
        self._depth.value = depth + 1
        try:
            yield depth == 0
        finally:
            self._depth.value = depth

    def answer(
        self,
        *,
        service: str,
        method: str,
        datastack: str,
        table: str | None,
        version: int | None,
        timestamp: datetime | None,
        params: dict[str, Any],
        fetch: Callable[[], Fetched],
    ) -> pd.DataFrame:
        """The answer of a call: from the store if it holds it (no server contact when the
        version or moment is given), else ``fetch()``, stored if pinned and not truncated."""
        with self._outermost() as outermost:
            if not outermost or self.store is None:  # caching off: nothing to keep or lock
                return fetch().frame
            if timestamp is not None and not isinstance(timestamp, datetime):
                timestamp = convert_timestamp(timestamp)  # POSIX seconds or an ISO string
            call = self.key(service, method, datastack, table, version, timestamp, params)
            return self._answer(call, fetch)

    def _answer(self, call: QueryKey, fetch: Callable[[], Fetched]) -> pd.DataFrame:
        timestamp = None if call.timestamp is None else datetime.fromisoformat(call.timestamp)
        if self.store is not None and self.pinned(call.version, timestamp):
            hit = self.store.lookup(call)
            if hit is not None:
                digest, frame = hit
                self._record(Recorded(call, call.version, call.timestamp, digest, len(frame), False, True))
                return frame
        fetched = fetch()
        frame = fetched.frame
        resolved = QueryKey(
            call.server, call.datastack, call.service, call.method, call.table,
            fetched.version, _iso(fetched.timestamp), call.params,
        )
        digest, stored, reason = None, False, None
        assert self.store is not None
        if fetched.truncated:
            reason = "the server truncated the answer"
        elif not self.pinned(fetched.version, fetched.timestamp):
            reason = "the answer is not pinned to a version or a past moment"
        elif not attrs_storable(frame):
            reason = "the answer's attrs are not plain JSON"
        else:
            # Stored under what it resolved to: a default-version call fills the entry a later
            # call naming that version hits.
            try:
                digest = self.store.put(resolved, frame)
                stored = True
            except NotStorable as error:
                reason = str(error)
        self._record(
            Recorded(call, fetched.version, _iso(fetched.timestamp), digest, len(frame), fetched.truncated, stored, reason)
        )
        return frame

    def _record(self, record: Recorded) -> None:
        with self._lock:
            self.records.append(record)


# -- opencave cache ls | rm ---------------------------------------------------------------------


def _store_for(args: Any) -> CacheStore | None:
    directory = Path(args.dir).expanduser() if getattr(args, "dir", None) else default_cache_dir()
    if not (directory / "index.sqlite").exists():
        return None
    return CacheStore(directory)


def _selected(store: CacheStore | None, args: Any) -> list[Entry]:
    if store is None:
        return []
    return store.entries(server=getattr(args, "server", None), datastack=getattr(args, "datastack", None))


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M")


def cli_ls(args: Any) -> int:
    """``opencave cache ls``: one line per entry (or a JSON line with ``--json``)."""
    entries = _selected(_store_for(args), args)
    for entry in entries:
        if getattr(args, "json", False):
            print(json.dumps(entry.as_json(), sort_keys=True))
            continue
        pinned = f"v{entry.version}" if entry.version is not None else (entry.timestamp or "-")
        print(
            f"{entry.key[:12]}  {entry.server}  {entry.datastack}  {entry.method}:{entry.table or '-'}  {pinned}  "
            f"{entry.rows} rows  {_size(entry.size)}  used {_when(entry.last_used)}"
        )
    if not entries and not getattr(args, "json", False):
        print("no cached answers", file=sys.stderr)
    return 0


def cli_rm(args: Any) -> int:
    """``opencave cache rm KEY... | --all``, optionally only entries unused for DAYS days."""
    prefixes: list[str] = list(getattr(args, "entries", None) or [])
    if not prefixes and not getattr(args, "all", False):
        print("error: name the entries to remove (key prefixes, as `opencave cache ls` shows) or pass --all", file=sys.stderr)
        return 2
    if prefixes and getattr(args, "all", False):
        print("error: give either keys or --all, not both", file=sys.stderr)
        return 2
    store = _store_for(args)
    entries = _selected(store, args)
    older_than = getattr(args, "older_than", None)
    if older_than is not None:
        cutoff = time.time() - older_than * 86400
        entries = [e for e in entries if e.last_used < cutoff]
    if prefixes:
        chosen = []
        for prefix in prefixes:
            matches = [e for e in entries if e.key.startswith(prefix.lower())]
            if not matches:
                print(f"error: no cached answer has a key starting with {prefix!r}", file=sys.stderr)
                return 2
            chosen += matches
        entries = chosen
    removed = store.remove(sorted({e.key for e in entries})) if store is not None and entries else 0
    print(f"removed {removed} cached answer{'s' if removed != 1 else ''}")
    return 0
