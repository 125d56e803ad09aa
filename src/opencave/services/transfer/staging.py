"""Staging: every row of an import's input files, checked and typed, as local Parquet.

Each input file is read once by DuckDB. Every target column becomes a typed expression of the
file's columns plus checks (the value casts, integers are whole, numbers are finite, required
values are there, choices are kept, positions are whole and in range); the failed checks of a
row are kept as a bit mask beside it, so the rows are read once whatever happens next. Only when
some row is bad are the first few found again, by row number, to say which file, row and column
hold what. Later steps read the staged files, never the inputs again.
"""

from __future__ import annotations

import math
from contextlib import ExitStack, suppress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from opencave.errors import BadRequest
from opencave.services.annotation.layout import row_layout
from opencave.services.annotation.payloads import POSITION_LIMIT
from opencave.services.materialize.layout import AXES, FrozenLayout, frozen_layout
from opencave.services.transfer.inputs import InputFile, InputProblem, _quote

OnError = Literal["reject", "skip"]
CRUD_COLUMNS = ("created", "deleted", "superceded_id")  # kept by CAVE's tables, not by frozen layouts
SHOWN_PROBLEMS = 10
STAGE_ROW_GROUP = 122_880


class RowsRejected(BadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_rows")

    @classmethod
    def naming(cls, bad: int, what: str, problems: Sequence[str]) -> "RowsRejected":
        """``bad`` rows that ``what`` (e.g. "do not fit schema synapse"), the first few named."""
        return cls(
            f"{bad:,} row(s) {what}; nothing was imported. "
            + "; ".join(problems)
            + (" …" if bad > len(problems) else "")
            + " (fix the rows, or import with --on-error skip to leave bad rows out)"
        )


def duckdb_type(dtype: pa.DataType) -> str:
    if pa.types.is_int32(dtype):
        return "INTEGER"
    if pa.types.is_int64(dtype):
        return "BIGINT"
    if pa.types.is_float32(dtype):
        return "FLOAT"
    if pa.types.is_floating(dtype):
        return "DOUBLE"
    if pa.types.is_boolean(dtype):
        return "BOOLEAN"
    if pa.types.is_timestamp(dtype):
        return "TIMESTAMP"
    return "VARCHAR"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Check:
    column: str  # the target column (or source column) the problem is reported on
    condition: str  # SQL: true when the row fails
    problem: str  # what is wrong, e.g. "is not an integer"
    source: str | None  # the source column whose value is shown


@dataclass
class Plan:
    """How one input file's columns become the target columns."""

    expressions: list[tuple[str, str]]  # (target column, SQL)
    checks: list[Check]


@dataclass(frozen=True)
class Target:
    """The columns an import writes: a schema's frozen layout, or a view's own columns."""

    columns: tuple[tuple[str, pa.DataType], ...]
    schema: str | None = None  # None: a view (columns kept as the file has them)
    keep_segmentation: bool = True  # take supervoxel and root ids from the file (versions)
    id_required: bool = True

    @classmethod
    def table(cls, schema: str, keep_segmentation: bool = True, id_required: bool = True) -> "Target":
        return cls(frozen_layout(schema).columns, schema, keep_segmentation, id_required)

    @property
    def layout(self) -> FrozenLayout:
        assert self.schema is not None
        return frozen_layout(self.schema)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]


# Casts that cannot fail nor give a value that is not finite (whole numbers into wider ones or
# into floating point; single into double precision keeps its NaN and infinities, checked apart).
LOSSLESS = {
    ("SMALLINT", "INTEGER"),
    ("SMALLINT", "BIGINT"),
    ("INTEGER", "BIGINT"),
    ("SMALLINT", "DOUBLE"),
    ("INTEGER", "DOUBLE"),
    ("BIGINT", "DOUBLE"),
    ("SMALLINT", "FLOAT"),
    ("FLOAT", "DOUBLE"),
}


def _value_checks(target: str, expr: str, source_type: str, to: str, source: str, finite: bool = True) -> tuple[str, list[Check]]:
    """The typed expression of ``expr`` (of DuckDB type ``source_type``) as ``to`` and its checks
    (``finite``: NaN and infinities refused, as annotation values; a view's columns keep them)."""
    if source_type == to or (source_type, to) in LOSSLESS:
        # Nothing to check but what a float may hold; a column of its own type is taken as it is.
        checks = [Check(target, f"NOT isfinite({expr})", "is not a finite number", source)] if finite and source_type in ("DOUBLE", "FLOAT") else []
        return (expr if source_type == to else f"CAST({expr} AS {to})"), checks
    cast = f"TRY_CAST({expr} AS {to})"
    checks = []
    text = source_type == "VARCHAR"
    if to in ("BIGINT", "INTEGER", "SMALLINT"):
        what = "is not an integer" + (" of 32 bits" if to == "INTEGER" else "")
        checks.append(Check(target, f"{expr} IS NOT NULL AND {cast} IS NULL", what, source))
        if text:  # TRY_CAST rounds '1.5'; whole numbers written as '1.0' are fine
            checks.append(
                Check(target, f"contains({expr}, '.') AND TRY_CAST({expr} AS DOUBLE) <> trunc(TRY_CAST({expr} AS DOUBLE))", "is not a whole number", source)
            )
        elif source_type in ("DOUBLE", "FLOAT"):
            checks.append(Check(target, f"{expr} <> trunc({expr})", "is not a whole number", source))
    elif to in ("DOUBLE", "FLOAT"):
        checks.append(Check(target, f"{expr} IS NOT NULL AND {cast} IS NULL", "is not a number", source))
        if finite:
            checks.append(Check(target, f"NOT isfinite({cast})", "is not a finite number", source))
    elif to == "BOOLEAN":
        checks.append(Check(target, f"{expr} IS NOT NULL AND {cast} IS NULL", "is not a boolean (t/f, true/false)", source))
    elif to in ("TIMESTAMP", "TIMESTAMPTZ", "DATE"):
        checks.append(Check(target, f"{expr} IS NOT NULL AND {cast} IS NULL", "is not a time (YYYY-MM-DD HH:MM:SS.ffffff)", source))
    elif to == "VARCHAR" and not text:
        return f"CAST({expr} AS VARCHAR)", checks
    if to == "VARCHAR":
        return expr, checks
    return cast, checks


class Planner:
    """Maps one input file's columns onto a target (renames first), or says what does not fit."""

    def __init__(self, target: Target, renames: dict[str, str]) -> None:
        self.target = target
        self.renames = renames  # new name -> column of the file

    def plan(self, source_columns: dict[str, str], label: str) -> Plan:
        """``source_columns``: the file's column -> DuckDB type (after reading it)."""
        missing_renames = sorted(old for old in self.renames.values() if old not in source_columns)
        if missing_renames:
            raise InputProblem(f"{label}: --columns names {missing_renames}, which the file does not have; it has {sorted(source_columns)}", code="unknown_column")
        renamed_away = set(self.renames.values())
        columns = {new: (old, source_columns[old]) for new, old in self.renames.items()}
        columns.update({name: (name, kind) for name, kind in source_columns.items() if name not in renamed_away and name not in columns})
        if self.target.schema is None:
            return self._view_plan(columns)
        return self._table_plan(columns, label)

    def _view_plan(self, columns: dict[str, tuple[str, str]]) -> Plan:
        plan = Plan([], [])
        wanted = dict(self.target.columns)
        for name, (source, kind) in columns.items():
            to = duckdb_type(wanted[name]) if name in wanted else kind
            expr, checks = _value_checks(name, _ident(source), kind, to, source, finite=False)
            plan.expressions.append((name, expr))
            plan.checks.extend(checks)
        return plan

    def _table_plan(self, columns: dict[str, tuple[str, str]], label: str) -> Plan:
        layout = self.target.layout
        rows = row_layout(layout.schema)
        used: set[str] = set(CRUD_COLUMNS)
        plan = Plan([], [])
        required = {s.name for s in rows.scalars if s.required}
        choices = {s.name: s.choices for s in rows.scalars if s.choices is not None}
        position_axes = {f"{p}_{a}": p for p in layout.positions for a in AXES}
        required_points = {p.name for p in rows.points if p.required}
        lists: dict[str, str] = {}  # position -> SQL of its [x, y, z] list, when given as one column
        for position in layout.positions:
            split = [f"{position}_{a}" for a in AXES]
            if position in columns and not any(s in columns for s in split):
                source, kind = columns[position]
                used.add(position)
                as_list = f"TRY_CAST({_ident(source)} AS DOUBLE[])"
                lists[position] = as_list
                plan.checks.append(
                    Check(position, f"{_ident(source)} IS NOT NULL AND ({as_list} IS NULL OR len({as_list}) <> 3)", "is not a position [x, y, z]", source)
                )
        for name, dtype in self.target.columns:
            to = duckdb_type(dtype)
            point = position_axes.get(name)
            if point in lists:
                axis = AXES.index(name[-1]) + 1
                expr = f"{lists[point]}[{axis}]"
                plan.expressions.append((name, expr))
                plan.checks.append(Check(point, f"NOT isfinite({expr})", "has a coordinate that is not a finite number", columns[point][0]))
                plan.checks.append(Check(point, f"abs({expr}) > {POSITION_LIMIT}", f"has a coordinate beyond ±{POSITION_LIMIT} voxels", columns[point][0]))
                continue
            if name not in columns:
                if name == "id" and self.target.id_required:
                    raise InputProblem(f"{label}: no 'id' column; rows of a version keep the ids they were published with", code="missing_column")
                if name in required or (point is not None and point in required_points):
                    raise InputProblem(f"{label}: no {name!r} column, which schema {layout.schema!r} requires; it has {sorted(columns)}", code="missing_column")
                plan.expressions.append((name, self._default(name, to)))
                continue
            source, kind = columns[name]
            used.add(name)
            if name.endswith(("supervoxel_id", "root_id")) and not self.target.keep_segmentation:
                plan.expressions.append((name, "NULL::BIGINT"))
                continue
            expr, checks = _value_checks(name, _ident(source), kind, to, source)
            plan.expressions.append((name, f"coalesce({expr}, true)" if name == "valid" else expr))
            plan.checks.extend(checks)
            if point is not None:
                plan.checks.append(Check(point, f"abs({expr}) > {POSITION_LIMIT}", f"has a coordinate beyond ±{POSITION_LIMIT} voxels", source))
            if name in required or (name == "id" and self.target.id_required):
                plan.checks.append(Check(name, f"{_ident(source)} IS NULL", "is required but empty", source))
            if name in choices:
                values = ", ".join(_literal(v) for v in choices[name])
                plan.checks.append(Check(name, f"{expr} NOT IN ({values})", f"must be one of {list(choices[name])}", source))
        for position in layout.positions:
            if position in lists:
                continue
            axes = [_ident(columns[f"{position}_{a}"][0]) for a in AXES if f"{position}_{a}" in columns]
            if 0 < len(axes) < 3:
                raise InputProblem(f"{label}: position {position!r} has only some of its columns {[f'{position}_{a}' for a in AXES]}", code="missing_column")
            if axes:
                nulls = " + ".join(f"({a} IS NULL)::INTEGER" for a in axes)
                plan.checks.append(Check(position, f"({nulls}) NOT IN (0, 3)", "has only some coordinates", None))
                if position in required_points:
                    plan.checks.append(Check(position, f"{axes[0]} IS NULL", "is required but empty", None))
        unknown = sorted(set(columns) - used)
        if unknown:
            raise InputProblem(
                f"{label}: columns {unknown} are not part of schema {layout.schema!r} (its columns: {layout.names}); "
                "rename them with --columns NEW=OLD or pick another schema",
                code="unknown_column",
            )
        return plan

    def _default(self, name: str, to: str) -> str:
        if name == "valid":
            return "true"
        if name.endswith(("supervoxel_id", "root_id")) and self.target.keep_segmentation:
            return "0::BIGINT"  # as a version frozen without a segmentation: no ids
        return f"NULL::{to}"


def _literal(value: object) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


@dataclass(frozen=True)
class Part:
    """The checked rows of one input file: ``rows`` selects the target columns and ``_bad`` (the
    failed checks' bit mask); ``numbered`` adds ``_row``, the row's number in its file. A staged
    part is a Parquet file holding all of them; a direct part reads and checks its file anew
    each time (Parquet and Arrow inputs, where a second read costs less than a staged copy)."""

    label: str
    rows: str
    numbered: str
    file: Path | None = None


@dataclass
class Staged:
    """The checked rows of one table, file by file."""

    parts: list[Part] = field(default_factory=list)
    rows: int = 0  # rows kept
    skipped: int = 0  # bad rows left out (on_error="skip")
    not_valid: int = 0  # rows marked not valid, left out of a version
    problems: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """The staged Parquet files (typed target columns, ``_row``, ``_bad``), one per input."""
        return [part.file for part in self.parts if part.file is not None]

    @property
    def labels(self) -> list[str]:
        return [part.label for part in self.parts]

    def relation(self, columns: Sequence[str]) -> str:
        """SQL selecting the kept rows' ``columns`` (file by file, each in its rows' order)."""
        keep = "_bad = 0" + (" AND valid" if "valid" in columns else "")
        selected = ", ".join(_ident(c) for c in columns)
        return " UNION ALL ".join(f"SELECT {selected} FROM ({part.rows}) WHERE {keep}" for part in self.parts)

    def ids_ascending(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Whether the rows' ids already ascend strictly in file order (one file), so a copy
        sorted by id is the rows as they are."""
        return len(self.parts) == 1 and ids_ascending(con, self.parts[0].rows)


def ids_ascending(con: duckdb.DuckDBPyConnection, rows: str) -> bool:
    """Whether the ids of ``rows`` (SQL) ascend strictly in its order: they are then unique, and
    the rows are sorted by id as they are."""
    reader = con.sql(f"SELECT id FROM ({rows})").to_arrow_reader(1 << 20)
    last = None
    for batch in reader:
        ids = batch.column(0)
        if ids.null_count:
            return False
        values = ids.to_numpy()
        if values.size == 0:
            continue
        if (last is not None and values[0] <= last) or (values.size > 1 and not (values[1:] > values[:-1]).all()):
            return False
        last = values[-1]
    return True


@dataclass(frozen=True)
class Kept:
    """Every row of a table's inputs, checked and typed, in file order: the frozen file to be."""

    file: Path
    rows: int


class _Counted:
    """An Arrow stream that counts the rows it hands on (a stream is read once: its length is
    known only after)."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self.rows = 0
        self._reader = reader

    def reader(self) -> pa.RecordBatchReader:
        def batches():
            for batch in self._reader:
                self.rows += batch.num_rows
                yield batch

        return pa.RecordBatchReader.from_batches(self._reader.schema, batches())


def write_kept(
    con: duckdb.DuckDBPyConnection,
    inputs: list[InputFile],
    target: Target,
    out: Path,
    copy_options: str,
    *,
    renames: dict[str, str] | None = None,
    say: Callable[[str], None] | None = None,
) -> Kept | None:
    """The quick path for inputs that are whole: read each input once, check every row and write
    the target columns to ``out`` (Parquet with ``copy_options``) in file order. Only rows that
    pass every check and are valid are written, so when as many rows are written as were read,
    every row was good and ``out`` is final. Otherwise (or when a faster typed read failed) None,
    and ``out`` is gone: ``stage`` then finds, names or skips the rows that are not.

    Static exports are read typed by pyarrow (``InputFile.typed_stream``) rather than as text."""
    if any(item.format not in ("parquet", "arrow", "cave-csv") for item in inputs):
        return None  # text read by DuckDB: counting its rows would be a second read
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with ExitStack() as stack:
        read = _kept_select(con, inputs, target, renames or {}, stack)
        if read is None:
            return None
        select, known_rows, counted = read
        if say:
            say("  reading " + ", ".join(item.label for item in inputs))
        try:
            con.execute(f"COPY ({select}) TO {_quote(partial)} ({copy_options})")
        except (duckdb.Error, pa.ArrowException):
            partial.unlink(missing_ok=True)
            return None  # read again by ``stage``, which says what is wrong
        finally:
            for number in range(len(inputs)):
                with suppress(duckdb.Error):
                    con.unregister(f"kept_{number}")
    written = con.execute(f"SELECT count(*) FROM read_parquet({_quote(partial)})").fetchall()[0][0]
    if written != known_rows + sum(c.rows for c in counted):
        partial.unlink(missing_ok=True)
        return None
    partial.replace(out)
    return Kept(out, written)


def _kept_select(
    con: duckdb.DuckDBPyConnection, inputs: list[InputFile], target: Target, renames: dict[str, str], stack: ExitStack
) -> tuple[str, int, list[_Counted]] | None:
    """SQL of the good, valid rows of ``inputs`` in target columns; the rows known to be read
    (Parquet and Arrow) and the counters of streamed ones. None when a static export cannot be
    streamed typed."""
    planner = Planner(target, renames)
    selects: list[str] = []
    counted: list[_Counted] = []
    known_rows = 0
    for number, item in enumerate(inputs):
        name = f"kept_{number}"
        if item.format == "cave-csv":
            stream = stack.enter_context(item.typed_stream())
            if stream is None:
                return None
            count = _Counted(stream)
            con.register(name, count.reader())
            counted.append(count)
            columns = {f.name: duckdb_type(f.type) for f in stream.schema}
            source = name
        else:
            source = _source(con, item, name)
            columns = _columns(con, item, source)
            known_rows += _row_count(con, item, source)
        plan = planner.plan(columns, item.label)
        failed = " OR ".join(f"coalesce({c.condition}, false)" for c in plan.checks) or "false"
        valid = " AND valid" if "valid" in target.names else ""
        select = ", ".join(f"{expr} AS {_ident(column)}" for column, expr in plan.expressions)
        selects.append(f"SELECT * FROM (SELECT {select}, ({failed}) AS _failed FROM {source}) WHERE NOT _failed{valid}")
    columns = ", ".join(_ident(c) for c in target.names)
    return f"SELECT {columns} FROM ({' UNION ALL '.join(selects)})", known_rows, counted


def _row_count(con: duckdb.DuckDBPyConnection, item: InputFile, source: str) -> int:
    """The rows of a Parquet or Arrow input file, from its metadata."""
    if item.format == "arrow":
        return ds.dataset(item.path, format="feather").count_rows()
    return con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0]


def connect(work: Path, memory_limit: str = "1GB", threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for import work: bounded memory, spilling to ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    con.execute("SET memory_limit = ?", [memory_limit])
    con.execute("SET temp_directory = ?", [str(work / "duckdb-spill")])
    con.execute("SET preserve_insertion_order = true")  # row numbers follow the file
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def _source(con: duckdb.DuckDBPyConnection, item: InputFile, name: str) -> str:
    """A relation name or expression reading ``item`` (Arrow files are registered as datasets)."""
    if item.format == "arrow":
        try:
            dataset = ds.dataset(item.path, format="feather")
        except (pa.ArrowInvalid, OSError) as error:
            raise InputProblem(f"{item.label}: not an Arrow IPC (Feather v2) file ({error})") from None
        con.register(name, dataset)
        return name
    return item.source_sql()


def source_columns(con: duckdb.DuckDBPyConnection, item: InputFile) -> dict[str, str]:
    """The columns of an input file and the DuckDB types they are read as (CSV: text)."""
    return _columns(con, item, _source(con, item, "probe"))


def _columns(con: duckdb.DuckDBPyConnection, item: InputFile, source: str) -> dict[str, str]:
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    except duckdb.Error as error:
        raise InputProblem(f"{item.label}: cannot be read as {item.format} ({_first_line(error)})") from None
    return {row[0]: row[1] for row in described}


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _csv_problem(item: InputFile, error: duckdb.Error) -> InputProblem:
    """DuckDB's CSV errors, told as the file, row and what is wrong."""
    text = str(error)
    lines = text.splitlines()
    line = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("CSV Error on Line:")), None)
    counts = next((l for l in lines if l.startswith("Expected Number of Columns")), None)
    if line and counts and item.format == "cave-csv":
        found = counts.rsplit(" ", 1)[-1]
        return InputProblem(
            f"{item.label}, row {line}: {found} values, but the header file {item.header_label} names {len(item.header)} columns",
            code="column_count_mismatch",
        )
    where = f", row {line}" if line else ""
    return InputProblem(f"{item.label}{where}: cannot be read ({_first_line(error)})")


def stage(
    con: duckdb.DuckDBPyConnection,
    inputs: list[InputFile],
    target: Target,
    out_dir: Path,
    *,
    renames: dict[str, str] | None = None,
    on_error: OnError = "reject",
    check_unique: bool = True,
    direct: bool = False,
    say: Callable[[str], None] | None = None,
) -> Staged:
    """Read, check and type every row of ``inputs`` into ``out_dir`` (``RowsRejected`` naming the
    first bad rows when ``on_error`` is reject and any row is bad; nothing is kept then).

    With ``direct``, Parquet and Arrow inputs are checked in one read and not copied: later
    steps read them through the same typed, checked expressions (``Part.rows``); staged CSV
    files then hold no ``_row`` column (rows are numbered only to name a bad one)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    planner = Planner(target, renames or {})
    staged = Staged()
    bad_total = 0
    for number, item in enumerate(inputs):
        source = _source(con, item, f"input_{number}")
        columns = _columns(con, item, source)
        plan = planner.plan(columns, item.label)
        if len(plan.checks) > 62:
            raise InputProblem(f"{item.label}: too many columns to check at once ({len(plan.checks)} checks)")
        mask = " | ".join(f"(CASE WHEN coalesce({c.condition}, false) THEN {1 << k} ELSE 0 END)" for k, c in enumerate(plan.checks)) or "0"
        select = ", ".join(f"{expr} AS {_ident(name)}" for name, expr in plan.expressions)
        rows = f"SELECT {select}, ({mask})::BIGINT AS _bad FROM {source}"
        numbered = f"SELECT row_number() OVER () AS _row, {select}, ({mask})::BIGINT AS _bad FROM {source}"
        if say:
            say(f"  reading {item.label}")
        if direct and item.format in ("parquet", "arrow"):
            part = Part(item.label, rows, numbered)
        else:
            # Numbering rows serialises the read (a third slower on a gzip CSV): a direct stage
            # numbers them only when a bad row must be named, by reading its file again.
            file = out_dir / f"part-{number:05d}.parquet"
            try:
                con.execute(f"COPY ({rows if direct else numbered}) TO {_quote(file)} (FORMAT parquet, COMPRESSION lz4_raw, ROW_GROUP_SIZE {STAGE_ROW_GROUP})")
            except duckdb.InvalidInputException as error:
                raise _csv_problem(item, error) from None
            except duckdb.ConversionException as error:
                raise InputProblem(f"{item.label}: {_first_line(error)}") from None
            except duckdb.Error as error:  # damaged files (e.g. a Parquet page that does not decode)
                raise InputProblem(f"{item.label}: cannot be read as {item.format} ({_first_line(error)})") from None
            staged_file = f"SELECT * FROM read_parquet({_quote(file)})"
            part = Part(item.label, staged_file, numbered if direct else staged_file, file)
        staged.parts.append(part)
        try:
            total, bad, not_valid = con.execute(
                f"SELECT count(*), count(*) FILTER (WHERE _bad <> 0), "
                f"count(*) FILTER (WHERE _bad = 0 AND {'NOT valid' if 'valid' in target.names else 'false'}) FROM ({part.rows})"
            ).fetchall()[0]  # fetched to the end: an unfinished result blocks registering the next Arrow file
        except duckdb.ConversionException as error:
            raise InputProblem(f"{item.label}: {_first_line(error)}") from None
        except duckdb.Error as error:
            raise InputProblem(f"{item.label}: cannot be read as {item.format} ({_first_line(error)})") from None
        if part.file is None and not bad:  # every row passed: later reads need not check again
            staged.parts[-1] = Part(item.label, f"SELECT {select}, 0::BIGINT AS _bad FROM {source}", numbered)
        staged.rows += total - bad - not_valid
        staged.not_valid += not_valid
        bad_total += bad
        if bad:
            staged.problems.extend(_describe(con, item, source, part, plan, SHOWN_PROBLEMS - len(staged.problems)))
            if on_error == "skip":
                staged.skipped += bad
    if bad_total and on_error == "reject":
        raise RowsRejected.naming(bad_total, f"do not fit schema {target.schema or 'of the view'}", staged.problems)
    if check_unique and "id" in target.names:
        check_unique_ids(con, staged)
    return staged


def _describe(con: duckdb.DuckDBPyConnection, item: InputFile, source: str, part: Part, plan: Plan, limit: int) -> list[str]:
    """``file F, row R, column C: <value> <problem>`` for the first bad rows of one input file."""
    if limit <= 0:
        return []
    bad = con.execute(f"SELECT _row, _bad FROM ({part.numbered}) WHERE _bad <> 0 ORDER BY _row LIMIT {limit}").fetchall()
    numbers = [row for row, _ in bad]
    shown = sorted({c.source for c in plan.checks if c.source})
    values: dict[int, dict[str, object]] = {}
    if shown:
        selected = ", ".join(_ident(s) for s in shown)
        rows = con.execute(
            f"SELECT * FROM (SELECT row_number() OVER () AS _row, {selected} FROM {source}) WHERE _row IN ({', '.join(map(str, numbers))})"
        ).fetchall()
        values = {r[0]: dict(zip(shown, r[1:])) for r in rows}
    out = []
    for row, mask in bad:
        for k, check in enumerate(plan.checks):
            if mask & (1 << k):
                value = values.get(row, {}).get(check.source) if check.source else None
                got = f" (got {_show(value)})" if check.source else ""
                out.append(f"{item.label}, row {row}, column {check.column}: {check.problem}{got}")
                break
    return out[:limit]


def _show(value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_unique_ids(con: duckdb.DuckDBPyConnection, staged: Staged) -> None:
    """``RowsRejected`` naming where repeated ids are (a version's rows keep their ids)."""
    if not staged.parts or staged.rows == 0:
        return
    every = " UNION ALL ".join(f"SELECT id FROM ({part.rows}) WHERE _bad = 0" for part in staged.parts)
    repeated = con.execute(f"SELECT id, count(*) FROM ({every}) WHERE id IS NOT NULL GROUP BY id HAVING count(*) > 1 ORDER BY id LIMIT 5").fetchall()
    if not repeated:
        return
    ids = ", ".join(str(i) for i, _ in repeated)
    places = []
    for part in staged.parts:
        rows = con.execute(f"SELECT _row, id FROM ({part.numbered}) WHERE _bad = 0 AND id IN ({ids}) ORDER BY id, _row LIMIT 10").fetchall()
        places.extend((i, part.label, r) for r, i in rows)
    shown = "; ".join(f"id {i} in {label}, row {r}" for i, label, r in sorted(places)[:10])
    raise RowsRejected(f"ids must be unique, but {len(repeated)}{'+' if len(repeated) == 5 else ''} are repeated: {shown}; nothing was imported.")


def infer_schema(source_columns: Sequence[str], label: str) -> str:
    """The one registry schema whose frozen layout fits ``source_columns`` (BadRequest otherwise)."""
    from opencave.services.schemas import schema_names

    given = set(source_columns) - set(CRUD_COLUMNS)
    fits = []
    for name in schema_names():
        try:
            layout = frozen_layout(name)
            rows = row_layout(name)
        except Exception:  # schemas that have no frozen layout cannot be imported by inference
            continue
        known = set(layout.names) | set(layout.positions)
        if not given <= known:
            continue
        needed = {s.name for s in rows.scalars if s.required} | {p.name for p in rows.points if p.required}
        present = given | {p for p in layout.positions if all(f"{p}_{a}" in given for a in AXES)}
        if needed <= present and all(p in present for p in layout.positions if any(f"{p}_{a}" in given for a in AXES) or p in given):
            fits.append((len(known - given), name))
    if not fits:
        raise BadRequest(f"{label}: no schema of the registry fits its columns {sorted(given)}; name one with --schema TABLE=SCHEMA", code="unknown_schema")
    best = min(fit for fit, _ in fits)
    closest = sorted(name for fit, name in fits if fit == best)
    if len(closest) > 1:
        raise BadRequest(f"{label}: its columns fit several schemas {closest}; name one with --schema TABLE=SCHEMA", code="ambiguous_schema")
    return closest[0]
