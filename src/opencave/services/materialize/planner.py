"""SQL for materialization queries, run by DuckDB over frozen Parquet files or Arrow tables.

One builder serves every query kind: a *source* is any DuckDB table expression with a frozen
layout (a version's Parquet file, a clustered copy, or an in-memory Arrow table of a live
answer), so frozen and live answers share their filter and column semantics exactly.
Integers are inlined after validation (so DuckDB can prune row groups on them); strings and
floats are bound parameters.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from opencave.errors import BadRequest
from opencave.storage.snapshots import parquet_source
from opencave.services.materialize.layout import AXES, FrozenLayout, split_position
from opencave.wire.materialize_query import LIST_KINDS, Filter

INT64_MAX = 2**63 - 1
_COMPARISONS = {"equal": "=", "greater": ">", "less": "<", "greater_equal": ">=", "less_equal": "<="}
CLUSTER_MAX_IDS = 64  # a root-id filter with at most this many ids reads the clustered copy


@dataclass
class Source:
    """A table as the planner sees it."""

    name: str
    layout: FrozenLayout
    relation: str  # DuckDB table expression
    voxel_resolution: tuple[float, float, float]
    clustered: dict[str, Path] = field(default_factory=dict)  # root column -> its clustered copy
    arrow_copies: dict[str, Path] = field(default_factory=dict)  # root column -> the copy's Arrow twin
    row_count: int | None = None


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class SqlParts:
    """Accumulates SQL text fragments and their bound parameters."""

    params: list[Any] = field(default_factory=list)

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return "?"


def _check_value(source: Source, f: Filter, dtype: pa.DataType, value: Any) -> Any:
    where = f"filter on {f.table}.{f.column}"
    if pa.types.is_integer(dtype):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise BadRequest(f"{where}: {value!r} is not an integer; this column holds integers.", code="bad_filter_value")
        value = int(value)
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise BadRequest(f"{where}: {value} is out of the 64-bit integer range.", code="bad_filter_value")
        return value
    if pa.types.is_floating(dtype):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadRequest(f"{where}: {value!r} is not a number; this column holds numbers.", code="bad_filter_value")
        return float(value)
    if pa.types.is_boolean(dtype):
        if not isinstance(value, bool):
            raise BadRequest(f"{where}: {value!r} is not true or false; this column holds booleans.", code="bad_filter_value")
        return value
    if not isinstance(value, str):
        raise BadRequest(f"{where}: {value!r} is not a string; this column holds text.", code="bad_filter_value")
    return value


_REGEX_CHECK = threading.Lock()
_regex_db: duckdb.DuckDBPyConnection | None = None


def _check_regex(source: Source, f: Filter) -> None:
    """A pattern DuckDB (RE2) cannot compile is the caller's mistake: say so before the query
    runs (an error while an answer streams would cut the connection)."""
    global _regex_db
    with _REGEX_CHECK:
        if _regex_db is None:
            _regex_db = duckdb.connect(":memory:")
        try:
            _regex_db.execute("SELECT regexp_matches('', ?)", [f.value]).fetchall()
        except duckdb.Error as error:
            message = str(error).removeprefix("Invalid Input Error: ")
            raise BadRequest(
                f"Regex filter on {source.name}.{f.column}: {f.value!r} is not a valid regular expression "
                f"(RE2 syntax: no look-arounds or back-references): {message}.",
                code="bad_filter",
            ) from None


def check_filters(source: Source, filters: list[Filter]) -> list[Filter]:
    """The filters on ``source`` with values converted to the column types (BadRequest otherwise)."""
    out = []
    layout = source.layout
    for f in filters:
        if f.kind == "spatial":
            if f.column not in layout.positions:
                raise BadRequest(
                    f"filter_spatial_dict: {f.column!r} is not a position column of {source.name}; "
                    f"position columns are {list(layout.positions)}.",
                    code="unknown_column",
                )
            out.append(f)
            continue
        dtype = layout.type_of(f.column)
        if dtype is None:
            hint = " (filter positions with filter_spatial_dict)" if f.column in layout.positions else ""
            raise BadRequest(
                f"column {f.column!r} not found in {source.name}{hint}; its columns are {layout.names}.",
                code="unknown_column",
            )
        if f.kind == "regex":
            if dtype != pa.string():
                raise BadRequest(
                    f"Regex filter is only supported on string columns; {source.name}.{f.column} is not one.",
                    code="bad_filter",
                )
            _check_regex(source, f)
            out.append(f)
        elif f.kind in LIST_KINDS:
            out.append(Filter(f.table, f.column, f.kind, [_check_value(source, f, dtype, v) for v in f.value]))
        else:
            out.append(Filter(f.table, f.column, f.kind, _check_value(source, f, dtype, f.value)))
    return out


def _membership(column: str, values: list[Any], parts: SqlParts, negate: bool, inline: bool = False) -> str:
    """``column [NOT] IN values``. Few integers are inlined (row-group statistics can prune on
    them); long integer lists travel as one bound array (``list_contains``, or an anti join for
    NOT IN), several times faster than parsing and planning thousands of literals — unless
    ``inline``: on a copy sorted by the column, pruning row groups by the literals saves far
    more than they cost."""
    if not values:
        return "TRUE" if negate else "FALSE"
    operator = "NOT IN" if negate else "IN"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        unique = list(dict.fromkeys(values))
        if len(unique) > CLUSTER_MAX_IDS and not inline:
            if negate:
                return f"{column} NOT IN (SELECT unnest({parts.bind(unique)}::BIGINT[]))"
            return f"list_contains({parts.bind(unique)}::BIGINT[], {column})"  # no join to plan: ~1.5x faster
        return f"{column} {operator} ({', '.join(map(str, unique))})"
    return f"{column} {operator} ({', '.join(parts.bind(v) for v in values)})"


def condition(f: Filter, parts: SqlParts, alias: str = "", inline: bool = False) -> str:
    """One filter as a SQL condition (values already checked; ``inline``: id lists as literals)."""
    prefix = f"{alias}." if alias else ""
    if f.kind == "spatial":
        lo, hi = f.value
        return " AND ".join(
            f"{prefix}{quote(f'{f.column}_{axis}')} BETWEEN {float(a)!r} AND {float(b)!r}"
            for axis, a, b in zip(AXES, lo, hi)
        )
    column = prefix + quote(f.column)
    if f.kind in ("in", "notin"):
        return _membership(column, f.value, parts, negate=f.kind == "notin", inline=inline)
    if f.kind == "regex":
        return f"regexp_matches({column}, {parts.bind(f.value)})"
    value = f.value
    rendered = str(value) if isinstance(value, int) and not isinstance(value, bool) else parts.bind(value)
    return f"{column} {_COMPARISONS[f.kind]} {rendered}"


def where(filters: list[Filter], parts: SqlParts, alias: str = "", extra: list[str] | None = None, inline: Filter | None = None) -> str:
    conditions = [condition(f, parts, alias, inline=f is inline) for f in filters] + list(extra or [])
    return " WHERE " + " AND ".join(f"({c})" for c in conditions) if conditions else ""


def scale_factors(source: Source, desired: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
    """Per-axis factors from table voxels to ``desired`` (None: no rescaling)."""
    if desired is None:
        return None
    factors = tuple(s / d for s, d in zip(source.voxel_resolution, desired))
    return None if all(f == 1 for f in factors) else factors  # type: ignore[return-value]


def selected_columns(source: Source, select: list[str] | None, add_supervoxels: bool = True) -> list[str]:
    """Base column names (positions unsplit) to answer, in answer order.

    As upstream, selecting ``X_root_id`` also selects ``X_supervoxel_id`` (just before it):
    caveclient's ``live_query`` needs the supervoxels to bring the roots to its timestamp.
    """
    layout = source.layout
    if not select:  # None, or an empty list as upstream: every column
        split = {name for p in layout.positions for name in split_position(p)}
        base = [name for name in layout.names if name not in split]
        return base + list(layout.positions)
    known = set(layout.names) | set(layout.positions)
    unknown = [c for c in select if c not in known]
    if unknown:
        raise BadRequest(
            f"column(s) {unknown} not found in {source.name}; its columns are "
            f"{[c for c in layout.names if not c.endswith(('_x', '_y', '_z')) or c[:-2] not in layout.positions] + list(layout.positions)}.",
            code="unknown_column",
        )
    if not add_supervoxels:
        return list(select)
    out: list[str] = []
    for column in select:
        supervoxel = column.removesuffix("root_id") + "supervoxel_id"
        if column.endswith("root_id") and supervoxel in layout.names and supervoxel not in out:
            out.append(supervoxel)
        if column not in out:
            out.append(column)
    return out


def column_expressions(
    source: Source,
    columns: list[str],
    factors: tuple[float, float, float] | None,
    alias: str = "",
    rename: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """(SQL expression, answer column name) pairs; positions split and rounded or rescaled."""
    prefix = f"{alias}." if alias else ""
    rename = rename or {}
    out = []
    for column in columns:
        if column in source.layout.positions:
            name = rename.get(column, column)
            for axis, stored in enumerate(split_position(column)):
                expr = f"{prefix}{quote(stored)}"
                if factors is None:
                    expr = f"CAST(round({expr}) AS INTEGER)"
                else:
                    expr = f"({expr} * {factors[axis]!r})"
                out.append((expr, f"{name}_{AXES[axis]}"))
        else:
            out.append((prefix + quote(column), rename.get(column, column)))
    return out


def clustered_filter(source: Source, filters: list[Filter]) -> Filter | None:
    """The first filter selective enough to read a clustered copy: one or a few ids of a root
    column that has one."""
    for f in filters:
        if f.column in source.clustered and ((f.kind == "in" and 0 < len(f.value) <= CLUSTER_MAX_IDS) or f.kind == "equal"):
            return f
    return None


def pick_relation(source: Source, filters: list[Filter], prune_on: str | None = None) -> tuple[str, bool, Filter | None]:
    """The file to read: a clustered copy when a selective root-id filter allows pruning —
    one or a few ids, or the ``in`` filter on ``prune_on`` (the caller found its ids' row
    groups few), whose ids are then written as literals.

    Returns the relation, whether rows must be re-sorted by id (a copy is sorted by its column,
    then id, so the rows of a single value already come in id order) and the filter to inline.
    """
    many = next((f for f in filters if prune_on and f.column == prune_on and f.kind == "in" and f.column in source.clustered), None)
    if many is not None:
        return parquet_source(source.clustered[many.column]), True, many
    f = clustered_filter(source, filters)
    if f is None:
        return source.relation, False, None
    single = f.kind == "equal" or len(set(f.value)) == 1
    return parquet_source(source.clustered[f.column]), not single, None


def sample_clause(source: Source, random_sample: int | None) -> str:
    if not random_sample or source.row_count is None or random_sample >= source.row_count:
        return ""
    percent = 100.0 * random_sample / max(source.row_count, 1)
    return f" TABLESAMPLE bernoulli({percent!r} PERCENT)"


def paging_clause(offset: int | None, limit: int | None) -> str:
    text = ""
    if limit is not None:
        text += f" LIMIT {int(limit)}"
    if offset:
        text += f" OFFSET {int(offset)}"
    return text


def simple_select(
    source: Source,
    filters: list[Filter],
    select: list[str] | None,
    factors: tuple[float, float, float] | None,
    *,
    extra_conditions: list[str] | None = None,
    count: bool = False,
    random_sample: int | None = None,
    offset: int | None = None,
    limit: int | None = None,
    order: bool = False,
    add_supervoxels: bool = True,
    prune_on: str | None = None,
) -> tuple[str, list[Any], list[str]]:
    """SQL of a single-table query: (sql, params, answer column names).

    Stored column names (``pre_pt_position_x``) select the raw stored values; position names
    (``pre_pt_position``) give the split, rounded or rescaled answer columns. ``prune_on``: a
    root column whose long ``in`` filter should read that column's clustered copy."""
    filters = check_filters(source, filters)
    columns = selected_columns(source, select, add_supervoxels)
    parts = SqlParts()
    relation, resort, inline = pick_relation(source, filters, prune_on) if not random_sample else (source.relation, False, None)
    body = f" FROM {relation}{sample_clause(source, random_sample)}{where(filters, parts, extra=extra_conditions, inline=inline)}"
    if count:
        return "SELECT count(*) AS count" + body, parts.params, ["count"]
    exprs = column_expressions(source, columns, factors)
    ordered = order or resort or offset or limit is not None
    # views without an id keep their stored order, which is fixed when the version is made
    order_by = " ORDER BY id" if ordered and "id" in source.layout.names else ""
    if order_by and "id" not in columns:
        # ordering needs the id even when it is not answered
        inner = ", ".join(f"{e} AS {quote(n)}" for e, n in exprs)
        sql = f"SELECT {', '.join(quote(n) for _, n in exprs)} FROM (SELECT {inner}, id AS __order_id{body}) ORDER BY __order_id{paging_clause(offset, limit)}"
        return sql, parts.params, [n for _, n in exprs]
    sql = "SELECT " + ", ".join(f"{e} AS {quote(n)}" for e, n in exprs) + body + order_by + paging_clause(offset, limit)
    return sql, parts.params, [n for _, n in exprs]


DEFAULT_SUFFIXES = ("_x", "_y")


def _kind(dtype: pa.DataType | None) -> str:
    """What a column holds, as far as joining goes: values of one kind compare without casts
    (DuckDB fails mid-answer when it must cast text to numbers)."""
    if dtype is not None and (pa.types.is_integer(dtype) or pa.types.is_floating(dtype)):
        return "numbers"
    if dtype is not None and pa.types.is_boolean(dtype):
        return "booleans"
    if dtype is not None and pa.types.is_timestamp(dtype):
        return "times"
    return "text" if dtype is not None and pa.types.is_string(dtype) else str(dtype)


def join_select(
    left: Source,
    right: Source,
    on: tuple[str, str],
    filters: list[Filter],
    select_map: dict[str, list[str]] | None,
    legacy_select: list[str] | None,
    suffixes: dict[str, str] | None,
    factors: tuple[tuple[float, float, float] | None, tuple[float, float, float] | None],
    *,
    count: bool = False,
    random_sample: int | None = None,
    offset: int | None = None,
    limit: int | None = None,
    add_supervoxels: bool = True,
) -> tuple[str, list[Any], list[str], dict[str, dict[str, str]]]:
    """SQL of an inner join of two tables on ``left.on[0] = right.on[1]``.

    Returns (sql, params, answer column names, {table: {column: answer column}}). Column names
    present in both selections get their table's suffix.
    """
    sources = (left, right)
    for source, column in zip(sources, on):
        if column not in source.layout.names:
            raise BadRequest(f"join column {column!r} not found in {source.name}; its columns are {source.layout.names}.", code="unknown_column")
    kinds = [_kind(source.layout.type_of(column)) for source, column in zip(sources, on)]
    if kinds[0] != kinds[1]:
        raise BadRequest(
            f"join columns do not match: {left.name}.{on[0]} holds {kinds[0]} but {right.name}.{on[1]} holds {kinds[1]}; "
            "join columns holding the same kind of value (e.g. target_id with id).",
            code="bad_join",
        )
    names = {s.name for s in sources}
    stray = sorted({f.table for f in filters} - names)
    if stray:
        raise BadRequest(f"filters name table(s) {stray} that are not part of the join {sorted(names)}.", code="unknown_table")
    per_table = [check_filters(s, [f for f in filters if f.table == s.name]) for s in sources]
    if legacy_select is not None and select_map is None:
        select_map = {s.name: [] for s in sources}
        for column in legacy_select:
            owner = next((s for s in sources if column in s.layout.names or column in s.layout.positions), None)
            if owner is None:
                raise BadRequest(f"column {column!r} not found in any table referenced ({sorted(names)}).", code="unknown_column")
            select_map[owner.name].append(column)
    chosen = [selected_columns(s, (select_map or {}).get(s.name), add_supervoxels) for s in sources]
    both = set(chosen[0]) & set(chosen[1])
    suffix_of = {s.name: (suffixes or {}).get(s.name, DEFAULT_SUFFIXES[i]) for i, s in enumerate(sources)}
    parts = SqlParts()
    exprs: list[tuple[str, str]] = []
    column_map: dict[str, dict[str, str]] = {}
    for alias, source, columns, factor in zip(("a", "b"), sources, chosen, factors):
        rename = {c: c + suffix_of[source.name] for c in columns if c in both}
        pairs = column_expressions(source, columns, factor, alias=alias, rename=rename)
        exprs.extend(pairs)
        column_map[source.name] = {c: rename.get(c, c) for c in columns}
    answer = [n for _, n in exprs]
    if len(set(answer)) != len(answer):
        raise BadRequest(f"The join gives duplicate column names {answer}; choose distinct suffixes.", code="bad_suffixes")
    conditions = [condition(f, parts, alias) for alias, fs in zip(("a", "b"), per_table) for f in fs]
    body = (
        f" FROM {left.relation} AS a{sample_clause(left, random_sample)}"
        f" JOIN {right.relation} AS b ON a.{quote(on[0])} = b.{quote(on[1])}"
    )
    if conditions:
        body += " WHERE " + " AND ".join(f"({c})" for c in conditions)
    if count:
        return "SELECT count(*) AS count" + body, parts.params, ["count"], column_map
    # Hash joins interleave rows across threads: order explicitly so answers are reproducible.
    sql = "SELECT " + ", ".join(f"{e} AS {quote(n)}" for e, n in exprs) + body + " ORDER BY a.id, b.id" + paging_clause(offset, limit)
    return sql, parts.params, answer, column_map
