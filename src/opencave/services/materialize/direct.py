"""Answers to the commonest frozen query — the rows of a few roots — without an SQL engine.

"One neuron's inputs" is a filter on a root column with one or a few ids. Its rows come from
the clustered copy's Arrow twin, or the copy itself, through ``RootRowReader``; the other
filters, the answer's columns (positions split and rounded, or rescaled), id order and paging
are then applied with Arrow compute functions. The answer equals the one the planner's SQL
gives, value for value and type for type; a query this path cannot answer exactly that way (a
float or regex or spatial filter, a random sample, a copy without an index, a position that
does not round to a 32-bit integer) is left to the SQL path (``answer`` gives None).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from opencave.services.materialize.layout import AXES, split_position
from opencave.services.materialize.planner import Source, clustered_filter, selected_columns
from opencave.services.materialize.root_rows import RootRowReader
from opencave.wire.materialize_query import Filter

_EQUALITIES = {"equal", "in", "notin"}
_ORDERINGS = {"greater": pc.greater, "less": pc.less, "greater_equal": pc.greater_equal, "less_equal": pc.less_equal}


def _filterable(f: Filter, dtype: pa.DataType | None) -> bool:
    """Whether Arrow compute gives exactly SQL's answer for this filter (NaN and collation
    rules differ for floats and text order, so those stay with SQL)."""
    if dtype is None or f.kind not in _EQUALITIES and f.kind not in _ORDERINGS:
        return False
    if pa.types.is_integer(dtype) or pa.types.is_boolean(dtype):
        return True
    return pa.types.is_string(dtype) and f.kind in _EQUALITIES


def _mask(table: pa.Table, f: Filter, dtype: pa.DataType) -> pa.ChunkedArray | pa.Array:
    column = table.column(f.column)
    if pa.types.is_integer(dtype):
        column = pc.cast(column, pa.int64())  # compares with any 64-bit value, as SQL does
        dtype = pa.int64()
    if f.kind in ("in", "notin"):
        values = pa.array(list(dict.fromkeys(f.value)), type=dtype)
        if not len(values):  # SQL: IN () is false; NOT IN () is true, even for nulls
            return pa.repeat(pa.scalar(f.kind == "notin"), table.num_rows)
        member = pc.is_in(column, value_set=values)
        # SQL's NOT IN drops nulls, as every comparison with null does
        return member if f.kind == "in" else pc.and_(pc.invert(member), pc.is_valid(column))
    value = pa.scalar(f.value, type=dtype)
    return pc.equal(column, value) if f.kind == "equal" else _ORDERINGS[f.kind](column, value)


def _rounded_int32_columns(table: pa.Table, names: list[str]) -> dict[str, pa.Array] | None:
    """The columns ``names`` as SQL's ``CAST(round(x) AS INTEGER)`` gives them: halves away
    from zero, exactly (Arrow's own rounding sends -0.49999999999999994 to -1), in one numpy
    pass over all of them; None when a value is NaN or does not round within 32 bits (SQL then
    says what is wrong)."""
    values = np.empty((len(names), table.num_rows), dtype=np.float64)
    nulls: dict[str, np.ndarray] = {}
    for row, name in enumerate(names):
        column = table.column(name)
        if column.null_count:
            nulls[name] = column.is_null().to_numpy(zero_copy_only=False)
            column = pc.fill_null(column, 0)
        values[row] = column.to_numpy()
    whole = np.trunc(values)
    fraction = values - whole  # exact for every finite double
    whole += fraction >= 0.5
    whole -= fraction <= -0.5
    limits = np.iinfo(np.int32)
    if whole.size and not (whole.min() >= limits.min and whole.max() <= limits.max):  # NaN fails too
        return None
    rounded = whole.astype(np.int32)
    return {name: pa.array(rounded[row], mask=nulls.get(name)) for row, name in enumerate(names)}


def _answer_columns(
    source: Source, table: pa.Table, columns: list[str], factors: tuple[float, float, float] | None
) -> pa.Table | None:
    """The answer's columns, as ``planner.column_expressions`` computes them (None when a
    position does not round within 32 bits)."""
    arrays: list[Any] = []
    names: list[str] = []
    stored_positions = [name for c in columns if c in source.layout.positions for name in split_position(c)]
    rounded = _rounded_int32_columns(table, stored_positions) if factors is None else {}
    if rounded is None:
        return None
    for column in columns:
        if column not in source.layout.positions:
            values = table.column(column)
            wanted = source.layout.type_of(column)
            arrays.append(values if values.type == wanted else values.cast(wanted))
            names.append(column)
            continue
        for axis, stored in enumerate(split_position(column)):
            if factors is None:
                values = rounded[stored]
            else:
                values = pc.multiply(pc.cast(table.column(stored), pa.float64()), pa.scalar(factors[axis], pa.float64()))
            arrays.append(values)
            names.append(f"{column}_{AXES[axis]}")
    return pa.table(arrays, names=names)


def answer(
    reader: RootRowReader,
    source: Source,
    filters: list[Filter],
    select: list[str] | None,
    factors: tuple[float, float, float] | None,
    *,
    count: bool = False,
    random_sample: int | None = None,
    offset: int | None = None,
    limit: int | None = None,
    in_memory: bool = False,
) -> pa.Table | None:
    """The answer of ``planner.simple_select`` with these arguments (filters already checked),
    or None when it must be computed with SQL. With ``in_memory``, only an answer read from an
    Arrow twin already mapped, in a bounded number of rows (``RootRowReader.read``); None
    otherwise."""
    key = clustered_filter(source, filters)
    if key is None or random_sample or "id" not in source.layout.names:
        return None
    others = [f for f in filters if f is not key]
    types = {f.column: source.layout.type_of(f.column) for f in others}
    if not all(_filterable(f, types[f.column]) for f in others):
        return None
    columns = [] if count else selected_columns(source, select)
    stored = [name for c in columns for name in (split_position(c) if c in source.layout.positions else [c])]
    needed = list(dict.fromkeys(["id", *stored, *types]))
    roots = [key.value] if key.kind == "equal" else key.value
    copy = source.arrow_copies.get(key.column) or source.clustered[key.column]
    rows = reader.read(Path(copy), key.column, roots, needed, in_memory=in_memory)
    if rows is None:
        return None
    for f in others:
        rows = rows.filter(_mask(rows, f, types[f.column]))
    if count:
        return pa.table({"count": pa.array([rows.num_rows], pa.int64())})
    if len(set(roots)) > 1:
        ids = rows.column("id").to_numpy()
        if len(ids) > 1 and np.any(ids[1:] < ids[:-1]):
            rows = rows.take(pa.array(np.argsort(ids, kind="stable")))
    if offset or limit is not None:
        rows = rows.slice(offset or 0, limit if limit is not None else rows.num_rows)
    return _answer_columns(source, rows, columns, factors)
