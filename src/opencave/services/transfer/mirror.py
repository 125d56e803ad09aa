"""Mirror: copy a materialized version from any CAVE deployment into a local frozen version.

CAVE caps every query answer (200,000 rows by default), so a table is fetched as ranges of a
split column (``id``) sized from the remote's own counts (``count=true`` queries): the column's
span is found by counts, then cut until each counted range holds at most a few requests' rows;
a counted range is fetched as even slices with ``filter_greater_dict``/``filter_less_equal_dict``,
and the rows of its slices must add up to its count, and the table's to its total. A slice the
server may have cut (it said so, or it is full) is counted and split on its own, which also
teaches the cap. A range that cannot be made small enough (one value with too many rows and no
further column to split on), or counts that disagree, is an error naming the table and range.

Ranges are written as they arrive, each as one Parquet part of a version package staged under
``<data dir>/mirrors/<name>/v<N>/`` (``tables/<t>/part-<lo>-<hi>.parquet``, written to a hidden
file then renamed). A part's existence means its range is complete, so a re-run after an
interruption plans only what no part covers. A verified table's parts are joined into a few
large files (each again named by the range it covers); then the manifest is written and the
package imported as a version (``runtime.imports``), and the staging removed.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from opencave.errors import BadRequest, Conflict, NotFound
from opencave.services.materialize.layout import FrozenLayout, frozen_layout
from opencave.services.materialize.versions import Version, as_utc
from opencave.services.transfer.mirror_remote import INT64_MAX, INT64_MIN, Answer, Bound, RemoteVersion, describe
from opencave.services.transfer.package import PackageTable, VersionPackage, write_manifest

if TYPE_CHECKING:
    from opencave.runtime import Runtime

MAX_REQUEST_ROWS = 250_000  # rows asked for in one answer at most, whatever the remote allows
SPLIT_FILL = 0.95  # ranges are cut to this share of the rows an answer may hold, so most fit at once
SPAN_START, SPAN_STEP = 2**20, 16  # the upper end of a column's values is searched from here
THREADS = 4
GROUP_REQUESTS = 8  # a counted range spans up to this many requests' rows; its parts are checked against its count together
MERGED_ROWS, MERGED_GROUP = 10_000_000, 131_072  # rows per merged part file, per row group
STATE = "mirror.json"
PART = re.compile(r"^part-(?P<ranges>all|-?\d+--?\d+(?:~-?\d+--?\d+)*)\.parquet$")
VIEW_TYPES = {"integer": pa.int64(), "float": pa.float64(), "number": pa.float64(), "boolean": pa.bool_(), "string": pa.string()}

Progress = Callable[[str], None]
RowsProgress = Callable[[str, int, int], None]  # table, rows staged, rows in total
Emit = Callable[[tuple["Bound", ...], int], None]  # a range ready to fetch, with its count


@dataclass(frozen=True)
class Source:
    """A table or view of the remote version and how its rows are kept."""

    entry: PackageTable
    split_columns: tuple[str, ...]  # columns ranges are cut on, outermost first
    layout: FrozenLayout | None  # tables: the frozen layout their parts are cast to
    view_types: dict[str, pa.DataType] = field(default_factory=dict)  # views: types of columns that answer null
    positions: frozenset[str] = frozenset()  # views: split position columns, stored as float64 like a table's

    @property
    def name(self) -> str:
        return self.entry.name


def part_name(bounds: tuple[Bound, ...]) -> str:
    """The file of a range: ``part-<lo>-<hi>.parquet`` (``~``-joined per split level; ``all``)."""
    text = "~".join(f"{b.lo:020d}-{b.hi:020d}" for b in bounds) or "all"
    return f"part-{text}.parquet"


def parse_part(name: str, columns: tuple[str, ...]) -> tuple[Bound, ...] | None:
    """The range a part file holds (None: not a part name, or more levels than ``columns``)."""
    match = PART.match(name)
    if match is None:
        return None
    if match["ranges"] == "all":
        return ()
    levels = match["ranges"].split("~")
    if len(levels) > len(columns):
        return None
    bounds = []
    for column, level in zip(columns, levels):
        lo, hi = re.fullmatch(r"(-?\d+)-(-?\d+)", level).groups()
        bounds.append(Bound(column, int(lo), int(hi)))
    return tuple(bounds)


def _gaps(lo: int, hi: int, covered: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``(lo, hi]`` outside the ``covered`` (lo, hi] intervals."""
    out, at = [], lo
    for a, b in sorted(covered):
        if a > at:
            out.append((at, min(a, hi)))
        at = max(at, b)
    if at < hi:
        out.append((at, hi))
    return [(a, b) for a, b in out if a < b]


class Mirror:
    """Stages one remote version as a version package, resumably (see the module docstring)."""

    def __init__(
        self,
        remote: RemoteVersion,
        version: int,
        staging: Path,
        *,
        threads: int = THREADS,
        max_request_rows: int = MAX_REQUEST_ROWS,
        progress: Progress | None = None,
        on_rows: RowsProgress | None = None,
    ) -> None:
        self.remote = remote
        self.version = version
        self.staging = Path(staging)
        self.threads = threads
        self.max_request_rows = max_request_rows
        self.cap: int | None = None  # the remote's row cap, once an answer showed it
        self.floor = 0  # the cap is at least this (an answer of this many rows was not cut)
        self.progress = progress or (lambda message: None)
        self.on_rows = on_rows or (lambda table, done, total: None)
        self._lock = threading.Lock()

    # -- answers per request ----------------------------------------------------------------
    @property
    def per_request(self) -> int:
        return min(self.cap or self.max_request_rows, self.max_request_rows)

    def _learn_cap(self, rows: int) -> None:
        with self._lock:
            if rows > 0 and (self.cap is None or rows < self.cap):
                self.cap = rows

    # -- the version ------------------------------------------------------------------------
    def stage(self, tables: list[str] | None = None) -> VersionPackage:
        """Fetch every table and view (or those named) and write the package's manifest."""
        record = self.remote.version_metadata(self.version)
        time_stamp = as_utc(datetime.fromisoformat(str(record["time_stamp"]).replace("Z", "+00:00")))
        sources = self._sources(tables)
        self._claim_staging(time_stamp)
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="mirror-fetch")
        counts = ThreadPoolExecutor(max(1, self.threads // 2), thread_name_prefix="mirror-count")
        try:
            entries = [self._stage_source(source, pool, counts) for source in sources]
        finally:  # on an error or an interruption, requests not yet started are dropped
            counts.shutdown(wait=True, cancel_futures=True)
            pool.shutdown(wait=True, cancel_futures=True)
        package = VersionPackage(datastack=self.remote.datastack, version=self.version, time_stamp=time_stamp, tables=entries)
        write_manifest(self.staging, package)
        return package

    def _claim_staging(self, time_stamp: datetime) -> None:
        """Mark the staging directory as this version's, refusing one left by another source."""
        self.staging.mkdir(parents=True, exist_ok=True)
        state = {"server": self.remote.server_url, "datastack": self.remote.datastack, "version": self.version, "time_stamp": time_stamp.isoformat()}
        path = self.staging / STATE
        if path.exists():
            try:
                found = json.loads(path.read_text())
            except ValueError:
                found = None
            if found != state:
                raise Conflict(
                    f"{self.staging} holds an unfinished mirror of another source ({found}); delete that directory to start again",
                    code="mirror_conflict",
                )
            return
        partial = path.with_name(f".{STATE}.partial")
        partial.write_text(json.dumps(state))
        partial.replace(path)

    def _sources(self, wanted: list[str] | None) -> list[Source]:
        tables = self.remote.tables_metadata(self.version)
        views = self.remote.views(self.version)
        names = [str(m["table_name"]) for m in tables] + list(views)
        if wanted is not None:
            unknown = [n for n in wanted if n not in names]
            if unknown:
                raise NotFound(
                    f"version {self.version} of {self.remote.datastack} on {self.remote.server_url} has no table or view {', '.join(unknown)}; it has {', '.join(sorted(names))}",
                    code="unknown_table",
                )
        keep = set(names if wanted is None else wanted)
        sources = []
        for metadata in tables:
            name = str(metadata["table_name"])
            if name in keep:
                sources.append(self._table_source(name, metadata))
        for name, metadata in views.items():
            if name in keep:
                sources.append(self._view_source(name, {"table_name": name, **metadata}))
        return sources

    def _table_source(self, name: str, metadata: dict[str, Any]) -> Source:
        schema = metadata.get("schema") or metadata.get("schema_type")
        try:
            layout = frozen_layout(str(schema))
        except NotFound:
            raise BadRequest(
                f"table {name} has schema {schema!r}, which opencave's schema registry does not hold; leave it out with --tables",
                code="unknown_schema",
            ) from None
        entry = PackageTable(name=name, kind="table", schema=str(schema), row_count=0, path=f"tables/{name}", metadata=metadata)
        return Source(entry, ("id",), layout)

    def _view_source(self, name: str, metadata: dict[str, Any]) -> Source:
        columns = self.remote.view_schema(self.version, name)
        view_types: dict[str, pa.DataType] = {}
        positions: set[str] = set()
        for column, spec in columns.items():
            if spec.get("type") == "SpatialPoint":
                positions.update(f"{column}_{axis}" for axis in "xyz")
                view_types.update({f"{column}_{axis}": pa.float64() for axis in "xyz"})
            elif spec.get("format") == "date-time":
                view_types[column] = pa.timestamp("us", tz="UTC")
            elif spec.get("type") in VIEW_TYPES:
                view_types[column] = VIEW_TYPES[spec["type"]]
        integers = [c for c, spec in columns.items() if spec.get("type") == "integer"]
        split = ("id",) if "id" in integers else tuple(integers)
        entry = PackageTable(name=name, kind="view", schema=None, row_count=0, path=f"views/{name}", metadata=metadata)
        return Source(entry, split, None, view_types, frozenset(positions))

    # -- one table --------------------------------------------------------------------------
    def _stage_source(self, source: Source, pool: ThreadPoolExecutor, counts: ThreadPoolExecutor) -> PackageTable:
        """Stage one table or view: ranges are counted on ``counts`` and fetched on ``pool`` at once."""
        total = self.remote.count(self.version, source.entry.kind, source.name)
        entry = replace(source.entry, row_count=total)
        source = replace(source, entry=entry)
        directory = self.staging / entry.path
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(".*.partial"):
            stale.unlink()
        done = {bounds: pq.read_metadata(path).num_rows for bounds, path in self._parts(source, directory)}
        staged = sum(done.values())
        self.progress(f"{entry.kind} {entry.name}: {total:,} rows" + (f" ({staged:,} staged before)" if staged else ""))
        self.on_rows(entry.name, staged, total)
        counter = _Counter(staged)

        def keep(bounds: tuple[Bound, ...], rows: pa.Table) -> None:
            self._write(source, bounds, rows)
            self.on_rows(entry.name, counter.add(rows.num_rows), total)

        if not source.split_columns or total == 0 or () in done:
            if () not in done:
                self._fetch_whole(source, total, keep)
        else:
            self._probe_cap(source, total)
            fetches: list[Future] = []

            def emit(bounds: tuple[Bound, ...], n: int) -> None:
                if n <= self.per_request:
                    fetches.append(pool.submit(self._fetch, source, bounds, n, keep))
                    return
                group = _Group(source, bounds, n)
                for piece in self._even(bounds[-1], n):
                    group.pending += 1
                    fetches.append(pool.submit(self._fetch_in_group, source, bounds[:-1] + (piece,), group, keep))

            self._plan(source, (), total, done, counts, emit, GROUP_REQUESTS)
            for fetch in fetches:
                fetch.result()
        self._verify(source, directory)
        self._merge(source, directory)
        return entry

    def _fetch_whole(self, source: Source, total: int, keep: Callable[[tuple[Bound, ...], pa.Table], None]) -> None:
        answer = self.remote.rows(self.version, source.entry.kind, source.name)
        if answer.rows.num_rows != total:
            why = "the server capped the answer" if answer.truncated else "the answer and the count disagree"
            raise BadRequest(
                f"{source.entry.kind} {source.name}: fetched {answer.rows.num_rows:,} of its {total:,} rows ({why}), "
                "and it has no integer column to fetch it in ranges; nothing was imported",
                code="mirror_incomplete",
            )
        keep((), answer.rows)

    def _probe_cap(self, source: Source, total: int) -> None:
        """Learn the remote's row cap from one answer of split-column values only (cheap)."""
        if self.cap is not None or total <= max(self.floor, 0) or total <= 1:
            return
        limit = min(self.max_request_rows, total)
        answer = self.remote.rows(self.version, source.entry.kind, source.name, columns=[source.split_columns[0]], limit=limit)
        rows = answer.rows.num_rows
        if rows < limit:
            self._learn_cap(rows)
            self.progress(f"{self.remote.server_url} answers at most {rows:,} rows per query")
        else:
            with self._lock:
                self.floor = max(self.floor, rows)

    # -- planning ---------------------------------------------------------------------------
    def _count(self, source: Source, bounds: tuple[Bound, ...]) -> int:
        return self.remote.count(self.version, source.entry.kind, source.name, bounds)

    def _span(self, source: Source, prefix: tuple[Bound, ...], column: str, rows: int) -> tuple[int, int]:
        """An interval ``(lo, hi]`` of ``column`` holding every one of the ``rows`` rows within ``prefix``."""
        lo = 0 if self._count(source, prefix + (Bound(column, INT64_MIN, 0),)) == 0 else INT64_MIN
        hi = SPAN_START
        while hi < INT64_MAX and self._count(source, prefix + (Bound(column, hi, INT64_MAX),)) > 0:
            hi = min(hi * SPAN_STEP, INT64_MAX)
        inside = self._count(source, prefix + (Bound(column, lo, hi),))
        if inside != rows:
            raise BadRequest(
                f"{source.entry.kind} {source.name}: {rows - inside:,} of the {rows:,} rows {describe(prefix)} have no value of {column} "
                f"in ({lo}, {hi}] (nulls?), so they cannot be fetched in ranges; nothing was imported",
                code="mirror_incomplete",
            )
        return lo, hi

    def _plan(
        self,
        source: Source,
        prefix: tuple[Bound, ...],
        rows: int,
        done: dict[tuple[Bound, ...], int],
        counts: ThreadPoolExecutor | None,
        emit: Emit,
        group: int = 1,
    ) -> None:
        """Emit the ranges within ``prefix`` (``rows`` rows) that no staged part covers, with
        their counts, each as soon as it is known: ranges of up to ``group`` requests' rows
        (cut further by ``emit``), or of one value of the split column and at most one request."""
        level = len(prefix)
        column = source.split_columns[level]
        lo, hi = self._span(source, prefix, column, rows)
        covered, deeper = [], set()
        for bounds in done:
            if len(bounds) > level and bounds[:level] == prefix:
                if len(bounds) == level + 1:
                    covered.append((bounds[level].lo, bounds[level].hi))
                else:
                    deeper.add(bounds[level])
        for bound in sorted(deeper, key=lambda b: b.lo):
            inner = prefix + (bound,)
            self._plan(source, inner, self._count(source, inner), done, counts, emit, group)

        def piece(bound: Bound, count: int) -> None:
            bounds = prefix + (bound,)
            if count <= self.per_request or (count <= group * self.per_request and bound.hi - bound.lo > 1):
                emit(bounds, count)
            elif level + 1 < len(source.split_columns):
                self._plan(source, bounds, count, done, counts, emit, group)
            else:
                raise BadRequest(
                    f"{source.entry.kind} {source.name}: the {count:,} rows {describe(bounds)} are more than the "
                    f"{self.per_request:,} the server answers at once and cannot be split further; nothing was imported",
                    code="mirror_incomplete",
                )

        gaps = _gaps(lo, hi, covered + [(b.lo, b.hi) for b in deeper])
        self._split(source, prefix, [Bound(column, a, b) for a, b in gaps], counts, piece, group * self.per_request)

    def _split(
        self,
        source: Source,
        prefix: tuple[Bound, ...],
        gaps: list[Bound],
        counts: ThreadPoolExecutor | None,
        piece: Callable[[Bound, int], None],
        limit: int | None = None,
    ) -> None:
        """Cut ``gaps`` by their counts into non-empty ranges of at most ``limit`` rows (default
        ``per_request``) and
        hand each to ``piece`` as its count arrives; a single value holding more is handed on too
        (the next split column must cut it). Counts of sibling ranges need not add up here: the
        staged total is checked against the table's count at the end."""

        def count(bound: Bound) -> int:
            return self._count(source, prefix + (bound,))

        limit = limit or self.per_request
        pending = list(gaps)
        while pending:
            if counts is None:
                results: Iterable[tuple[Bound, int]] = ((bound, count(bound)) for bound in pending)
            else:
                futures = {counts.submit(count, bound): bound for bound in pending}
                results = ((futures[future], future.result()) for future in as_completed(futures))
            after: list[Bound] = []
            for bound, n in results:
                if n == 0:
                    continue
                if n <= limit or bound.hi - bound.lo == 1:
                    piece(bound, n)
                    continue
                after += self._even(bound, n, limit)
            pending = after

    def _even(self, bound: Bound, rows: int, limit: int | None = None) -> list[Bound]:
        """``bound`` cut into equal widths, enough for ``rows`` evenly spread to fill each to
        ``SPLIT_FILL`` of ``limit`` (default ``per_request``)."""
        pieces = min(math.ceil(rows / (SPLIT_FILL * (limit or self.per_request))), bound.hi - bound.lo)
        edges = [bound.lo + (bound.hi - bound.lo) * i // pieces for i in range(pieces + 1)]
        return [Bound(bound.column, a, b) for a, b in zip(edges, edges[1:]) if a < b]

    # -- fetching ---------------------------------------------------------------------------
    def _fetch(
        self,
        source: Source,
        bounds: tuple[Bound, ...],
        count: int,
        keep: Callable[[tuple[Bound, ...], pa.Table], None],
        answer: Answer | None = None,
    ) -> None:
        """Fetch one counted range (unless its ``answer`` is in already); an answer cut short is
        split by its counts and fetched again."""
        answer = answer or self.remote.rows(self.version, source.entry.kind, source.name, bounds)
        got = answer.rows.num_rows
        if got == count:
            keep(bounds, answer.rows)
            return
        where = f"{source.entry.kind} {source.name}, rows {describe(bounds)}"
        if got > count:
            raise BadRequest(f"{where}: the server sent {got:,} rows but counted {count:,}; nothing was imported", code="mirror_incomplete")
        self._learn_cap(got)
        del answer
        prefix, last = bounds[:-1], bounds[-1]
        if last.hi - last.lo == 1 and len(bounds) == len(source.split_columns):
            raise BadRequest(f"{where}: only {got:,} of {count:,} rows arrived and the range cannot be split further; nothing was imported", code="mirror_incomplete")
        pieces: list[tuple[tuple[Bound, ...], int]] = []
        emit = lambda inner, n: pieces.append((inner, n))  # noqa: E731
        if last.hi - last.lo == 1:
            self._plan(source, bounds, count, {}, None, emit)
        else:
            self._split(
                source, prefix, [last], None,
                lambda bound, n: emit(prefix + (bound,), n) if n <= self.per_request else self._plan(source, prefix + (bound,), n, {}, None, emit),
            )
        if len(pieces) == 1 and pieces[0] == (bounds, count):
            raise BadRequest(f"{where}: only {got:,} of {count:,} rows arrived, and again when asked alone; nothing was imported", code="mirror_incomplete")
        for inner, n in pieces:
            self._fetch(source, inner, n, keep)

    def _fetch_in_group(self, source: Source, bounds: tuple[Bound, ...], group: "_Group", keep: Callable[[tuple[Bound, ...], pa.Table], None]) -> None:
        """Fetch one uncounted range of a counted group. An answer the server may have cut (it
        said so, or it holds a full request) is counted and fetched as ``_fetch`` does; the
        group's rows must add up to its count."""
        answer = self.remote.rows(self.version, source.entry.kind, source.name, bounds)
        got = answer.rows.num_rows
        if answer.truncated or got >= self.per_request:
            kept: list[int] = []
            self._fetch(source, bounds, self._count(source, bounds), lambda inner, rows: (kept.append(rows.num_rows), keep(inner, rows)), answer)
            group.finished(sum(kept))
        else:
            keep(bounds, answer.rows)
            group.finished(got)

    def _shape(self, source: Source, rows: pa.Table, bounds: tuple[Bound, ...]) -> pa.Table:
        """An answer as the stored columns: a table's frozen layout (names, order, types)."""
        rows = rows.replace_schema_metadata(None)
        if source.layout is None:
            fields = [
                pa.field(f.name, source.view_types.get(f.name, pa.string()))
                if pa.types.is_null(f.type) or f.name in source.positions
                else f.remove_metadata()
                for f in rows.schema
            ]
            return rows.cast(pa.schema(fields))
        if "valid" not in rows.column_names:  # every row of a version is valid; some servers leave the column out
            rows = rows.append_column("valid", pa.repeat(pa.scalar(True), rows.num_rows))
        missing = [name for name in source.layout.names if name not in rows.column_names]
        if missing:
            raise BadRequest(
                f"table {source.name}: the server's answer lacks the columns {missing} of schema {source.entry.schema}; nothing was imported",
                code="mirror_columns",
            )
        try:
            return rows.select(source.layout.names).cast(source.layout.arrow_schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise BadRequest(f"table {source.name}, rows {describe(bounds)}: {error}", code="mirror_columns") from None

    def _write(self, source: Source, bounds: tuple[Bound, ...], rows: pa.Table) -> None:
        """One range as one Parquet part, complete or absent (written aside, then renamed)."""
        shaped = self._shape(source, rows, bounds)
        shaped = shaped.replace_schema_metadata(source.entry.parquet_metadata())
        path = self.staging / source.entry.path / part_name(bounds)
        partial = path.with_name(f".{path.name}.{threading.get_ident()}.partial")
        pq.write_table(shaped, partial, compression="none", use_dictionary=False)
        partial.replace(path)

    def _parts(self, source: Source, directory: Path) -> list[tuple[tuple[Bound, ...], Path]]:
        """The staged parts in range order, after deleting those a merged part covers (left
        when a run stopped between writing the merged part and deleting what it replaces)."""
        parts = []
        for path in directory.glob("part-*.parquet"):
            bounds = parse_part(path.name, source.split_columns)
            if bounds is not None:
                parts.append((bounds, path))
        parts.sort(key=lambda item: [(b.lo, -b.hi) for b in item[0]] + [(INT64_MAX, 0)])
        kept: list[tuple[tuple[Bound, ...], Path]] = []
        outer: Bound | None = None  # the widest single-level part so far; parts nest or are disjoint
        for bounds, path in parts:
            if outer is not None and bounds and bounds[0] != outer and bounds[0].hi <= outer.hi:
                path.unlink()
                continue
            if len(bounds) == 1:
                outer = bounds[0]
            kept.append((bounds, path))
        return kept

    def _merge(self, source: Source, directory: Path) -> None:
        """Join a verified table's parts into files of up to ``MERGED_ROWS`` rows (each named by
        the range it covers), so the package holds a few large files in id order rather than one
        per request. One part is read at a time; row groups are ``MERGED_GROUP`` rows."""
        groups: list[list[tuple[tuple[Bound, ...], Path, int]]] = [[]]
        for bounds, path in self._parts(source, directory):
            if not bounds:
                return
            rows = pq.read_metadata(path).num_rows
            group = groups[-1]
            same_value = bool(group) and group[-1][0][0] == bounds[0]  # one outer value stays in one file
            if group and not same_value and sum(n for _, _, n in group) + rows > MERGED_ROWS:
                groups.append([])
            groups[-1].append((bounds, path, rows))
        for group in groups:
            if len(group) < 2:
                continue
            covered = (Bound(group[0][0][0].column, group[0][0][0].lo, group[-1][0][0].hi),)
            target = directory / part_name(covered)
            partial = target.with_name(f".{target.name}.partial")
            writer: pq.ParquetWriter | None = None
            pending: list[pa.Table] = []
            try:
                for _, path, _ in group:
                    pending.append(pq.read_table(path))
                    if sum(t.num_rows for t in pending) >= MERGED_GROUP:
                        writer = self._append(writer, partial, pending)
                        pending = []
                writer = self._append(writer, partial, pending)
            finally:
                if writer is not None:
                    writer.close()
            partial.replace(target)
            for bounds, path, _ in group:
                if path != target:
                    path.unlink()

    @staticmethod
    def _append(writer: pq.ParquetWriter | None, path: Path, tables: list[pa.Table]) -> pq.ParquetWriter | None:
        if not tables:
            return writer
        rows = pa.concat_tables(tables)
        if writer is None:
            writer = pq.ParquetWriter(path, rows.schema, compression="none", use_dictionary=False)
        writer.write_table(rows, row_group_size=MERGED_GROUP)
        return writer

    def _verify(self, source: Source, directory: Path) -> None:
        parts = sorted(directory.glob("part-*.parquet"))
        staged = sum(pq.read_metadata(path).num_rows for path in parts)
        if staged != source.entry.row_count:
            raise BadRequest(
                f"{source.entry.kind} {source.name}: {staged:,} rows were staged in {directory} but the server counts "
                f"{source.entry.row_count:,}; delete that directory and mirror again",
                code="mirror_incomplete",
            )


class _Group:
    """A counted range fetched as several uncounted ones: when the last is in, their rows must
    add up to the count."""

    def __init__(self, source: Source, bounds: tuple[Bound, ...], count: int) -> None:
        self.source, self.bounds, self.count = source, bounds, count
        self.pending = 0
        self.rows = 0
        self._lock = threading.Lock()

    def finished(self, rows: int) -> None:
        with self._lock:
            self.rows += rows
            self.pending -= 1
            if self.pending or self.rows == self.count:
                return
        raise BadRequest(
            f"{self.source.entry.kind} {self.source.name}, rows {describe(self.bounds)}: {self.rows:,} rows arrived "
            f"but the server counts {self.count:,}; delete the staging directory and mirror again",
            code="mirror_incomplete",
        )


class _Counter:
    def __init__(self, start: int) -> None:
        self.value = start
        self._lock = threading.Lock()

    def add(self, n: int) -> int:
        with self._lock:
            self.value += n
            return self.value


def staging_directory(data_dir: Path, name: str, version: int) -> Path:
    return Path(data_dir) / "mirrors" / name / f"v{version}"


def mirror(
    runtime: "Runtime",
    server_url: str,
    datastack: str,
    *,
    version: int | None = None,
    tables: list[str] | None = None,
    name: str | None = None,
    token: str | None = None,
    threads: int = THREADS,
    progress: Progress | None = None,
    on_rows: RowsProgress | None = None,
) -> Version:
    """Copy a version of ``datastack`` on ``server_url`` into this store as version N of ``name``.

    The version is the remote's newest unless given; the local one gets the same number and
    timestamp. Returns the imported ``Version``.
    """
    say = progress or (lambda message: None)
    remote = RemoteVersion(server_url, datastack, token, pool=max(8, 2 * threads))
    if version is None:
        versions = remote.versions()
        if not versions:
            raise NotFound(f"{datastack} on {server_url} has no valid version to mirror", code="no_versions")
        version = versions[-1]
    local = name or datastack
    try:
        runtime.materialize.version(local, version)
    except NotFound:
        pass
    else:
        raise Conflict(f"version {version} of {local} exists here already; mirror into another datastack with --as NAME", code="version_exists")
    staging = staging_directory(runtime.settings.data_dir, local, version)
    say(f"mirroring version {version} of {datastack} from {remote.server_url} into {staging}")
    package = Mirror(remote, version, staging, threads=threads, progress=say, on_rows=on_rows).stage(tables)
    say(f"all {len(package.tables)} tables and views complete ({sum(t.row_count for t in package.tables):,} rows); importing")
    imported = runtime.imports.import_version(local, staging, progress=say)
    shutil.rmtree(staging, ignore_errors=True)
    for parent in (staging.parent, staging.parent.parent):
        try:
            parent.rmdir()
        except OSError:
            break
    return imported


