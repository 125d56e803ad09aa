"""Conversions between checked payloads, physical rows and the rows clients read back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from opencave.services.annotation.layout import RowLayout
from opencave.services.annotation.lookup import PointLookup
from opencave.services.annotation.metadata import ROW_TIME_FORMAT
from opencave.services.annotation.payloads import ParsedRow, RowErrors
from opencave.services.schemas import FieldKind


def point_path(flat_name: str) -> str:
    """``pre_pt_position`` -> ``pre_pt.position``: where a position sits in the nested payload."""
    return flat_name[: -len("_position")] + ".position" if flat_name != "position" else "position"


def lookup_supervoxels(lookup: PointLookup, layout: RowLayout, rows: list[ParsedRow]) -> tuple[list[dict[str, int | None]], RowErrors]:
    """Supervoxel of every bound point of every row, and the rows whose points are outside the volume."""
    found: list[dict[str, int | None]] = [{} for _ in rows]
    errors: RowErrors = {}
    for point in layout.bound_points:
        where = [i for i, row in enumerate(rows) if row.values.get(point.name) is not None]
        for i, row in enumerate(rows):
            found[i][point.supervoxel] = None  # type: ignore[index]
        if not where:
            continue
        positions = np.array([rows[i].values[point.name] for i in where], dtype=np.float64)
        ids, outside = lookup.supervoxels(positions)
        for k, i in enumerate(where):
            if outside[k]:
                errors.setdefault(i, {})[point_path(point.name)] = (
                    f"position {list(rows[i].values[point.name])} is outside the volume, which spans "
                    f"{lookup.describe_bounds()} in this table's voxels; positions are in the table's voxel resolution"
                )
            else:
                found[i][point.supervoxel] = int(ids[k])  # type: ignore[index]
    return found, errors


def physical(layout: RowLayout, row: ParsedRow, row_id: int, created: float, supervoxels: dict[str, int | None]) -> dict[str, Any]:
    """The stored form of a checked annotation."""
    out: dict[str, Any] = {"id": row_id, "created": created, "deleted": None, "superceded_id": None, "valid": row.valid}
    for point in layout.points:
        position = row.values.get(point.name) or (None, None, None)
        out.update(zip(point.axes, position))
        if point.supervoxel is not None:
            out[point.supervoxel] = supervoxels.get(point.supervoxel)
    for scalar in layout.scalars:
        out[scalar.name] = row.values.get(scalar.name)
    return out


def flat_values(layout: RowLayout, stored: dict[str, Any]) -> dict[str, Any]:
    """The flat payload values of a stored row (positions as tuples, absent points as None)."""
    points = {p.name: p for p in layout.points}
    booleans = {s.name for s in layout.scalars if s.kind is FieldKind.BOOLEAN}
    out: dict[str, Any] = {}
    for name in layout.order:
        if name in points:
            xyz = tuple(stored[a] for a in points[name].axes)
            out[name] = None if any(v is None for v in xyz) else xyz
        else:
            value = stored[name]
            out[name] = bool(value) if value is not None and name in booleans else value
    return out


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _row_time(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).strftime(ROW_TIME_FORMAT)


def public(layout: RowLayout, stored: dict[str, Any]) -> dict[str, Any]:
    """A row as ``GET …/annotations`` answers it: flat names, positions as [x, y, z], no segmentation."""
    out: dict[str, Any] = {"id": int(stored["id"]), "valid": bool(stored["valid"])}
    for name, value in flat_values(layout, stored).items():
        out[name] = [_number(v) for v in value] if isinstance(value, tuple) else value
    out["created"] = _row_time(stored["created"])
    out["deleted"] = _row_time(stored["deleted"])
    out["superceded_id"] = None if stored["superceded_id"] is None else int(stored["superceded_id"])
    return out
