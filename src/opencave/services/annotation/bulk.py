"""Column-wise paths for millions of rows: bulk loading (demo generator) and Arrow reads
(materialization). Both stay in numpy/Arrow and touch Python objects only per chunk."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine, Table

from opencave.errors import BadRequest
from opencave.services.annotation.layout import RowLayout
from opencave.services.annotation.lookup import PointLookup
from opencave.services.annotation.payloads import INT32, INT64, POSITION_LIMIT
from opencave.services.annotation.rows import point_path
from opencave.services.schemas import FieldKind
from opencave.storage.annotation_rows import bulk_insert, count_rows, create_indexes, drop_indexes, stream_rows

BULK_CHUNK = 50_000
READ_CHUNK = 100_000
EXTRA_INPUTS = ("id", "valid", "superceded_id")


@dataclass
class Values:
    """One physical column of a bulk load: values plus a null mask (None: no nulls)."""

    data: np.ndarray
    null: np.ndarray | None = None

    def chunk(self, a: int, b: int) -> list[Any]:
        out = self.data[a:b].tolist()
        if self.null is not None:
            for i in np.flatnonzero(self.null[a:b]):
                out[i] = None
        return out


def _rows_named(mask: np.ndarray, limit: int = 5) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return f"{rows.size} rows (first: {shown})"


def _float_mask(values: np.ndarray) -> np.ndarray | None:
    nan = np.isnan(values)
    return nan if nan.any() else None


def _integers(name: str, raw: Any, n: int, bounds: tuple[int, int]) -> Values:
    """Integers from an int array, or a float/object array whose NaN/None entries are nulls."""
    arr = np.asarray(raw)
    if arr.dtype.kind in "iub":
        data, null = arr.astype(np.int64), None
    else:
        as_float = np.array([np.nan if v is None else v for v in arr.tolist()], dtype=np.float64) if arr.dtype == object else arr.astype(np.float64)
        null = np.isnan(as_float)
        if np.any(as_float[~null] != np.floor(as_float[~null])):
            raise BadRequest(f"Column {name!r} must hold integers.", code="invalid_column")
        data = np.where(null, 0, as_float).astype(np.int64)
        null = null if null.any() else None
    if data.shape != (n,):
        raise BadRequest(f"Column {name!r} must have one value per row ({n}).", code="invalid_column")
    if data.size and (data.min() < bounds[0] or data.max() > bounds[1]):
        raise BadRequest(f"Column {name!r} has values outside {bounds[0]}..{bounds[1]}.", code="invalid_column")
    return Values(data, null)


def _scalar(kind: FieldKind, name: str, raw: Any, n: int) -> Values:
    if kind is FieldKind.FLOAT:
        data = np.asarray(raw, dtype=np.float64)
        if data.shape != (n,) or np.isinf(data).any():
            raise BadRequest(f"Column {name!r} must hold {n} finite numbers (NaN = null).", code="invalid_column")
        return Values(data, _float_mask(data))
    if kind is FieldKind.INTEGER:
        return _integers(name, raw, n, INT32)
    if kind in (FieldKind.BIGINT, FieldKind.USER_ID, FieldKind.REFERENCE):
        return _integers(name, raw, n, INT64)
    arr = np.asarray(raw, dtype=object if kind is FieldKind.STRING else None)
    if arr.shape != (n,):
        raise BadRequest(f"Column {name!r} must have one value per row ({n}).", code="invalid_column")
    if kind is FieldKind.BOOLEAN:
        if arr.dtype == bool:
            return Values(arr)
        null = np.array([v is None for v in arr.tolist()], dtype=bool)
        return Values(np.array([bool(v) if v is not None else False for v in arr.tolist()]), null if null.any() else None)
    null = np.array([v is None or (isinstance(v, float) and v != v) for v in arr.tolist()], dtype=bool)
    if any(not isinstance(v, str) for v in arr[~null].tolist()):
        raise BadRequest(f"Column {name!r} must hold strings (None = null).", code="invalid_column")
    return Values(arr, null if null.any() else None)


def prepare_columns(layout: RowLayout, columns: Mapping[str, Any], n: int) -> dict[str, Values]:
    """Check bulk columns against the layout; physical column name -> values (no supervoxels yet)."""
    allowed = set(layout.flat_inputs) | set(EXTRA_INPUTS)
    unknown = sorted(set(columns) - allowed)
    if unknown:
        raise BadRequest(f"Unknown columns {unknown}; this table takes {sorted(allowed)}.", code="invalid_column")
    required = [p.name for p in layout.points if p.required] + [s.name for s in layout.scalars if s.required]
    missing = [name for name in required if name not in columns]
    if missing:
        raise BadRequest(f"Missing required columns {missing}.", code="invalid_column")
    out: dict[str, Values] = {}
    for point in layout.points:
        if point.name in columns:
            xyz = np.asarray(columns[point.name], dtype=np.float64)
            if xyz.shape != (n, 3) or np.isinf(xyz).any():
                raise BadRequest(f"Column {point.name!r} must be an ({n}, 3) array of finite positions.", code="invalid_column")
            nan = np.isnan(xyz)
            huge = (np.abs(np.where(nan, 0.0, xyz)) > POSITION_LIMIT).any(axis=1)
            if huge.any():
                raise BadRequest(f"Column {point.name!r} has coordinates beyond ±{POSITION_LIMIT} voxels in {_rows_named(huge)}.", code="invalid_column")
            partial = nan.any(axis=1) & ~nan.all(axis=1)
            if partial.any() or (point.required and nan.any()):
                raise BadRequest(f"Column {point.name!r} has missing coordinates in {_rows_named(nan.any(axis=1))}.", code="invalid_column")
        else:
            xyz = np.full((n, 3), np.nan)
        null = np.isnan(xyz[:, 0])
        for k, axis in enumerate(point.axes):
            out[axis] = Values(np.ascontiguousarray(xyz[:, k]), null if null.any() else None)
    for scalar in layout.scalars:
        if scalar.name not in columns:
            out[scalar.name] = Values(np.zeros(n), np.ones(n, dtype=bool))
            continue
        values = _scalar(scalar.kind, scalar.name, columns[scalar.name], n)
        if scalar.required and values.null is not None:
            raise BadRequest(f"Column {scalar.name!r} is required but null in {_rows_named(values.null)}.", code="invalid_column")
        if scalar.choices is not None:
            bad = ~np.isin(values.data, np.array(scalar.choices, dtype=values.data.dtype))
            if values.null is not None:
                bad &= ~values.null
            if bad.any():
                raise BadRequest(f"Column {scalar.name!r} must be one of {list(scalar.choices)}; not in {_rows_named(bad)}.", code="invalid_column")
        out[scalar.name] = values
    return out


def times(created: Any, deleted: Any, n: int) -> tuple[Values, Values]:
    created = np.asarray(created, dtype=np.float64)
    if created.shape != (n,) or not np.isfinite(created).all():
        raise BadRequest(f"created must hold {n} finite epoch seconds.", code="invalid_column")
    deleted = np.full(n, np.nan) if deleted is None else np.asarray(deleted, dtype=np.float64)
    if deleted.shape != (n,) or np.isinf(deleted).any():
        raise BadRequest(f"deleted must hold {n} epoch seconds (NaN = alive).", code="invalid_column")
    early = ~np.isnan(deleted) & (deleted < created)
    if early.any():
        raise BadRequest(f"deleted is before created in {_rows_named(early)}.", code="invalid_column")
    return Values(created), Values(deleted, _float_mask(deleted))


def find_supervoxels(lookup: PointLookup, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(supervoxel ids, null mask, outside-the-volume mask) of (n, 3) positions (NaN rows: no point)."""
    n = xyz.shape[0]
    null = np.isnan(xyz[:, 0])
    ids = np.zeros(n, dtype=np.int64)
    outside = np.zeros(n, dtype=bool)
    for a in range(0, n, BULK_CHUNK):
        b = min(a + BULK_CHUNK, n)
        keep = np.flatnonzero(~null[a:b]) + a
        found, off = lookup.supervoxels(xyz[keep])
        ids[keep], outside[keep] = found, off
    return ids, null, outside


def add_supervoxels(layout: RowLayout, lookup: PointLookup, out: dict[str, Values], n: int) -> None:
    """Look up every bound point (all rows, before anything is written)."""
    for point in layout.bound_points:
        ids, null, outside = find_supervoxels(lookup, np.stack([out[a].data for a in point.axes], axis=1))
        if outside.any():
            raise BadRequest(
                f"{point_path(point.name)} is outside the volume ({lookup.describe_bounds()} in table voxels) "
                f"in {_rows_named(outside)}.",
                code="position_outside_volume",
            )
        out[point.supervoxel] = Values(ids, null if null.any() else None)  # type: ignore[index]


def write_chunks(
    engine: Engine, table: Table, layout: RowLayout, values: dict[str, Values], n: int, progress: Callable[[int], None] | None
) -> None:
    """Insert in chunks, one transaction each (ids are reserved already, so chunks never collide).

    Loading into an empty table, the indexes are built once at the end instead of row by row.
    """
    names = layout.names
    with engine.begin() as conn:
        empty = n > BULK_CHUNK and count_rows(conn, table) == 0
        if empty:
            drop_indexes(conn, table)
    try:
        for a in range(0, n, BULK_CHUNK):
            b = min(a + BULK_CHUNK, n)
            rows = list(zip(*(values[name].chunk(a, b) for name in names)))
            with engine.begin() as conn:
                bulk_insert(conn, table, names, rows)
            if progress is not None:
                progress(b)
    finally:
        if empty:
            with engine.begin() as conn:
                create_indexes(conn, table)


def read_table(engine: Engine, table: Table, layout: RowLayout, where: Any) -> pa.Table:
    """Matching rows as an Arrow table in the layout's column order (``deleted`` NaN when alive).

    Each chunk of row tuples is converted in one call, as a struct array (several times faster
    than transposing in Python). SQLite hands booleans back as 0/1, read as int8 and cast.
    """
    schema = layout.arrow_schema
    as_ints = pa.schema([pa.field(f.name, pa.int8()) if f.type == pa.bool_() else f for f in schema])
    layouts = [pa.struct(list(schema)), pa.struct(list(as_ints))]
    batches = []
    for rows in stream_rows(engine, table, where, READ_CHUNK):
        try:
            array = pa.array(rows, type=layouts[0])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            layouts.reverse()
            array = pa.array(rows, type=layouts[0])
        batches.append(pa.RecordBatch.from_struct_array(array))
    read = pa.Table.from_batches(batches, schema=pa.schema(list(layouts[0]))) if batches else schema.empty_table()
    read = read.cast(schema)
    index = schema.get_field_index("deleted")
    return read.set_column(index, schema.field(index), pc.fill_null(read["deleted"], np.nan))


def column_ids(engine: Engine, table: Table) -> np.ndarray:
    """Every id of a row table (to check references of a bulk load)."""
    parts = [np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)) for rows in stream_rows(engine, table, None, READ_CHUNK, ["id"])]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
