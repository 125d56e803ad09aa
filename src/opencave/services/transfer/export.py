"""Export a materialized version as open files that an import reads back exactly.

Two layouts (see ``package``): ``parquet``, the version package (one Parquet dataset per table
and view, each file describing itself), and ``cave-csv``, the CAVE static-export layout in
which MICrONS publishes its versions (gzip CSV of PostgreSQL text values plus a header file of
column types), with the same ``version.json`` beside it so nothing about the version is lost.

Tables are streamed a record batch at a time from the version's frozen file (sorted by id; the
clustered copies are not exported), so memory stays bounded whatever a table's size. Everything
is written into a hidden sibling of the output directory, which takes the output's name only
once its manifest is written: a failed or interrupted export leaves nothing half-done, and
nothing already in the output is ever overwritten.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from isal import igzip_threaded

from opencave.errors import BadRequest, NotFound
from opencave.services.materialize.versions import FrozenTable, Version
from opencave.services.transfer.workspace import remove_abandoned
from opencave.services.transfer.package import PackageTable, VersionPackage, write_manifest

if TYPE_CHECKING:
    from opencave.services.materialize.service import MaterializeService

Format = Literal["parquet", "cave-csv"]
FORMATS: tuple[Format, ...] = ("parquet", "cave-csv")
Progress = Callable[[PackageTable, int], None]  # (entry, rows written so far), after each CSV batch or Parquet part

BATCH_ROWS = 65_536  # one row group of the frozen files; one batch of CSV text is ~10 MB
PART_ROWS = 1_048_576  # rows per Parquet part file: datasets that readers can split
PARQUET_COMPRESSION = "zstd"  # read by every Parquet reader, and smaller than the frozen files' lz4
GZIP_LEVEL = 1  # ISA-L's fastest level compresses CSV of numbers nearly as well as gzip's default
FORMAT_THREADS = 2  # batches turned into CSV text, or Parquet parts encoded, at once (Arrow releases the GIL)


@dataclass(frozen=True)
class ExportedTable:
    name: str
    kind: str
    rows: int
    files: list[str]
    bytes: int


@dataclass
class ExportSummary:
    """What an export wrote, for the command line to print."""

    datastack: str
    version: int
    format: Format
    out: Path
    tables: list[ExportedTable] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables)


# -- PostgreSQL text of Arrow values (cave-csv) ------------------------------------------------
def postgres_type(dtype: pa.DataType, where: str) -> str:
    """The PostgreSQL type a column of ``dtype`` has in a CAVE static export's header file."""
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_int64(dtype) or pa.types.is_uint32(dtype):
        return "bigint"
    if pa.types.is_int32(dtype) or pa.types.is_uint16(dtype):
        return "integer"
    if pa.types.is_int16(dtype) or pa.types.is_int8(dtype) or pa.types.is_uint8(dtype):
        return "smallint"
    if pa.types.is_float64(dtype):
        return "double precision"
    if pa.types.is_float32(dtype):
        return "real"
    if pa.types.is_decimal(dtype) or pa.types.is_uint64(dtype):
        return "numeric"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "character varying"
    if pa.types.is_timestamp(dtype):
        return "timestamp with time zone" if dtype.tz else "timestamp without time zone"
    if pa.types.is_date(dtype):
        return "date"
    raise BadRequest(f"{where} is of type {dtype}, which a CAVE static export cannot hold; export it as --format parquet.", code="unexportable_column")


def _whole(column: pa.Array) -> bool:
    """Whether every value is a whole number below 10^15 in magnitude and none is -0.0: then
    a double's text is its integer's digits (as PostgreSQL prints it), which are made three
    times faster than a float's (positions in voxels usually are whole)."""
    if column.null_count == len(column) or not pc.all(pc.equal(pc.trunc(column), column)).as_py():
        return False
    if pc.max(pc.abs(column)).as_py() >= 1e15:
        return False
    zero = pc.equal(column, 0)
    return not pc.any(pc.and_(zero, pc.less(pc.divide(1.0, column), 0))).as_py()


def _float_text(column: pa.Array) -> pa.Array:
    """Shortest text that reads back as the same float; PostgreSQL's names for NaN and infinities."""
    if column.type == pa.float64() and _whole(column):
        return pc.cast(pc.cast(column, pa.int64()), pa.string())
    text = pc.cast(column, pa.string())
    if pc.all(pc.is_finite(column)).as_py() is not False:
        return text
    text = pc.if_else(pc.is_nan(column), "NaN", text)
    text = pc.if_else(pc.equal(column, float("inf")), "Infinity", text)
    return pc.if_else(pc.equal(column, float("-inf")), "-Infinity", text)


def _string_text(column: pa.Array) -> pa.Array:
    """PostgreSQL's CSV quoting: only values holding a delimiter, quote or line break, the
    empty string (an unquoted empty field is NULL) and ``\\.`` are quoted."""
    column = pc.cast(column, pa.string())
    needs = pc.or_(
        pc.match_substring_regex(column, '[",\r\n]'),
        pc.or_(pc.equal(column, ""), pc.equal(column, "\\.")),
    )
    if not pc.any(needs).as_py():
        return column
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(column, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, column)


def postgres_text(column: pa.Array) -> pa.Array:
    """A column as PostgreSQL writes it in CSV (NULL stays null: an empty unquoted field)."""
    dtype = column.type
    if pa.types.is_boolean(dtype):
        return pc.if_else(column, "t", "f")
    if pa.types.is_floating(dtype):
        return _float_text(column)
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return _string_text(column)
    if pa.types.is_timestamp(dtype):
        # the stored instant in UTC, always six fractional digits
        text = pc.cast(pc.cast(column, pa.timestamp("us"), safe=False), pa.string())
        return pc.binary_join_element_wise(text, "+00", "") if dtype.tz else text
    return pc.cast(column, pa.string())


def csv_lines(batch: pa.RecordBatch) -> pa.Buffer:
    """The batch as CSV lines of PostgreSQL text values, no header (one buffer, not copied)."""
    if batch.num_rows == 0:
        return pa.py_buffer(b"")
    columns = [postgres_text(column) for column in batch.columns]
    line = pc.binary_join_element_wise(*columns, ",", null_handling="replace", null_replacement="")
    line = pc.binary_join_element_wise(line, "", "\n")
    offsets = np.frombuffer(line.buffers()[1], dtype=np.int32)[line.offset : line.offset + len(line) + 1]
    return line.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def header_lines(schema: pa.Schema, where: str) -> str:
    """The static export's header file: ``column,postgres_type`` per column, no header row."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    for column in schema:
        writer.writerow([column.name, postgres_type(column.type, f"{where}, column {column.name!r},")])
    return text.getvalue()


# -- the exporter ------------------------------------------------------------------------------
def data_path(name: str, kind: str, format: Format) -> str:
    """Where an entry's data lives in the output, relative to it (the manifest's ``path``)."""
    if format == "parquet":
        return f"{'tables' if kind == 'table' else 'views'}/{name}"
    return f"{name}_merged.csv.gz" if kind == "table" else f"{name}.csv.gz"


def header_path(name: str, kind: str) -> str:
    return f"{name}_merged_header.csv" if kind == "table" else f"{name}_header.csv"


class VersionExporter:
    """Writes a version of a datastack to a directory, as a version package or a static export."""

    def __init__(self, materialize: "MaterializeService") -> None:
        self.materialize = materialize
        self.registry = materialize.registry

    def export(
        self,
        datastack: str,
        version: int,
        out: Path | str,
        format: Format = "parquet",
        tables: list[str] | None = None,
        progress: Progress | None = None,
    ) -> ExportSummary:
        """Export ``tables`` (names of tables or views; default all) of a version into ``out``,
        a directory that must not exist yet or be empty. All input is checked before anything
        is written; on any failure nothing is left behind."""
        started = time.perf_counter()
        if format not in FORMATS:
            raise BadRequest(f"Unknown export format {format!r}; choose one of {', '.join(FORMATS)}.", code="unknown_format")
        found, frozen = self._select(datastack, version, tables)
        out = Path(out).expanduser().absolute()
        _check_output(out)
        entries = [self._entry(found, table, format) for table in frozen]
        _check_paths(entries, format)
        if format == "cave-csv":  # a column a static export cannot hold is refused before writing
            headers = {e.name: header_lines(pq.read_schema(self._source(found, t)), f"{e.kind} {e.name!r}") for e, t in zip(entries, frozen)}
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(out)
        partial = _partial_directory(out)
        summary = ExportSummary(datastack, version, format, out)
        say = progress or (lambda entry, rows: None)
        try:
            for entry, table in zip(entries, frozen):
                source = self._source(found, table)
                if format == "parquet":
                    written = _write_parquet(source, partial / entry.path, entry, say)
                else:
                    (partial / header_path(entry.name, entry.kind)).write_text(headers[entry.name])
                    written = [_write_csv_gz(source, partial / entry.path, entry, say)]
                summary.tables.append(
                    ExportedTable(
                        name=entry.name,
                        kind=entry.kind,
                        rows=entry.row_count,
                        files=[str(path.relative_to(partial)) for path in written],
                        bytes=sum(path.stat().st_size for path in written),
                    )
                )
            write_manifest(partial, VersionPackage(datastack, version, found.time_stamp, entries, files=format))
            _publish(partial, out)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        summary.seconds = time.perf_counter() - started
        return summary

    def _select(self, datastack: str, number: int, names: list[str] | None) -> tuple[Version, list[FrozenTable]]:
        """The version and its frozen tables then views to export (NotFound naming what exists)."""
        found = self.materialize.version(datastack, number)  # unknown datastack or version: NotFound
        if not found.valid:
            raise NotFound(
                f"Version {number} of {datastack} has expired and its files are gone; available versions are {self.materialize.versions(datastack)}.",
                code="version_expired",
            )
        tables, views = self.registry.tables(found, "table"), self.registry.tables(found, "view")
        if names is None:
            return found, tables + views
        by_name = {t.table_name: t for t in views} | {t.table_name: t for t in tables}
        wanted = list(dict.fromkeys(name.strip() for name in names if name.strip()))
        unknown = [name for name in wanted if name not in by_name]
        if unknown or not wanted:
            raise NotFound(
                f"Version {number} of {datastack} has no table or view named {', '.join(unknown) or '(none given)'}; "
                f"its tables are {[t.table_name for t in tables]} and its views {[v.table_name for v in views]}.",
                code="unknown_table",
            )
        return found, [by_name[name] for name in wanted]

    def _source(self, version: Version, table: FrozenTable) -> Path:
        try:  # a remote version's file is fetched into the local cache
            path: Path | None = self.registry.files.local_path(version.location, table.file)
        except FileNotFoundError:
            path = None
        if path is None or not path.is_file():
            raise NotFound(
                f"The file of {table.kind} {table.table_name!r} of version {version.version} of {version.datastack} is missing ({version.location}/{table.file}); the version cannot be exported.",
                code="version_file_missing",
            )
        return path

    def _entry(self, version: Version, table: FrozenTable, format: Format) -> PackageTable:
        rows = pq.ParquetFile(self._source(version, table)).metadata.num_rows
        if rows != table.row_count:
            raise BadRequest(
                f"The file of {table.kind} {table.table_name!r} of version {version.version} of {version.datastack} holds {rows:,} rows "
                f"but the version lists {table.row_count:,}; the version is damaged and cannot be exported.",
                code="version_damaged",
            )
        return PackageTable(
            name=table.table_name,
            kind="table" if table.kind == "table" else "view",
            schema=table.schema,
            row_count=rows,
            path=data_path(table.table_name, table.kind, format),
            metadata=table.metadata,
        )


def _reader(source: Path) -> pq.ParquetFile:
    """A reader that streams: with pre-buffering (pyarrow's default) every row group read stays
    cached until the reader closes, about 100 MB per million synapse rows."""
    return pq.ParquetFile(source, pre_buffer=False)


def _part_plan(source: Path) -> list[list[int]]:
    """The source's row groups, grouped into parts of at most ``PART_ROWS`` rows (at least one
    part, empty for an empty table, so that every dataset carries its columns)."""
    metadata = pq.ParquetFile(source).metadata
    parts: list[list[int]] = [[]]
    rows = 0
    for group in range(metadata.num_row_groups):
        count = metadata.row_group(group).num_rows
        if parts[-1] and rows + count > PART_ROWS:
            parts.append([])
            rows = 0
        parts[-1].append(group)
        rows += count
    return parts


def _write_part(source: Path, groups: list[int], path: Path, schema: pa.Schema) -> int:
    """Rewrite some row groups of the source as one part file (a batch at a time)."""
    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    rows = 0
    # Dictionary pages only for text: on ids and positions they cost time and space.
    with pq.ParquetWriter(path, schema, compression=PARQUET_COMPRESSION, use_dictionary=strings or False) as writer:
        if groups:
            for batch in _reader(source).iter_batches(batch_size=BATCH_ROWS, row_groups=groups):
                writer.write_batch(batch)  # one row group per batch, as in the frozen file
                rows += batch.num_rows
    return rows


def _write_parquet(source: Path, directory: Path, entry: PackageTable, say: Progress) -> list[Path]:
    """The frozen file's rows as parts of at most ``PART_ROWS`` rows, each carrying the entry.
    Parts are encoded on ``FORMAT_THREADS`` threads at once (encoding is the slow part)."""
    schema = pq.read_schema(source)
    schema = schema.with_metadata({**(schema.metadata or {}), **entry.parquet_metadata()})
    directory.mkdir(parents=True)
    plan = _part_plan(source)
    parts = [directory / f"part-{number:05d}.parquet" for number in range(len(plan))]
    rows = 0
    with ThreadPoolExecutor(FORMAT_THREADS, thread_name_prefix="parquet-part") as pool:
        futures = [pool.submit(_write_part, source, groups, path, schema) for groups, path in zip(plan, parts)]
        try:
            for future in futures:
                rows += future.result()
                say(entry, rows)
        finally:
            for future in futures:
                future.cancel()
    return parts


def _write_csv_gz(source: Path, path: Path, entry: PackageTable, say: Progress) -> Path:
    """The frozen file's rows as gzip CSV lines. Batches become text on ``FORMAT_THREADS``
    threads (Arrow compute releases the GIL) while ISA-L compresses on its own threads."""
    pending: deque[tuple[int, Future[pa.Buffer]]] = deque()
    rows = 0
    with igzip_threaded.open(path, "wb", compresslevel=GZIP_LEVEL, threads=FORMAT_THREADS) as handle, ThreadPoolExecutor(
        FORMAT_THREADS, thread_name_prefix="csv-text"
    ) as pool:

        def write_oldest() -> None:
            nonlocal rows
            count, done = pending.popleft()
            handle.write(done.result())
            rows += count
            say(entry, rows)

        try:
            for batch in _reader(source).iter_batches(batch_size=BATCH_ROWS):
                pending.append((batch.num_rows, pool.submit(csv_lines, batch)))
                if len(pending) > FORMAT_THREADS:
                    write_oldest()
            while pending:
                write_oldest()
        finally:
            for _, future in pending:
                future.cancel()
    return path


# -- the output directory ----------------------------------------------------------------------
def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BadRequest(f"{out} is a file; give a directory to export into (a new one, or an empty one).", code="output_exists")
    if out.is_dir() and any(out.iterdir()):
        raise BadRequest(f"{out} is not empty; export into a new or empty directory so that nothing in it is overwritten.", code="output_not_empty")


def _check_paths(entries: list[PackageTable], format: Format) -> None:
    """Names that would share a file (a view ``x_merged`` beside a table ``x`` in a static export)."""
    seen: dict[str, str] = {}
    for entry in entries:
        other = seen.setdefault(entry.path, f"{entry.kind} {entry.name!r}")
        if other != f"{entry.kind} {entry.name!r}":
            raise BadRequest(
                f"{other} and {entry.kind} {entry.name!r} would both be written to {entry.path} in a {format} export; export them separately with --tables.",
                code="export_name_clash",
            )


PARTIAL = ".{name}.partial-"  # then the PID of the exporting process and a random suffix


def _partial_directory(out: Path) -> Path:
    """A new hidden sibling of ``out`` to write into, named after this process."""
    partial = out.parent / f"{PARTIAL.format(name=out.name)}{os.getpid()}-{secrets.token_hex(4)}"
    partial.mkdir()
    return partial


def _remove_abandoned(out: Path) -> None:
    """Remove the partial directories of exports to ``out`` whose process is gone (killed)."""
    remove_abandoned(out.parent, PARTIAL.format(name=out.name))


def _publish(partial: Path, out: Path) -> None:
    """Give the finished export its name (an empty ``out`` is replaced, anything else refused)."""
    try:
        os.rename(partial, out)
    except OSError as error:
        if out.exists():
            raise BadRequest(f"{out} was created or filled while exporting; nothing was written to it. Export again into a new directory.", code="output_not_empty") from None
        raise error
