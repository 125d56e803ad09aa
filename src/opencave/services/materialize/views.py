"""Materialized views: named SQL queries over a datastack's tables, frozen with each version.

A view is defined once (``mat_views``) as DuckDB SQL that names the datastack's tables; every
new version computes it from that version's frozen tables and stores the result next to them,
so view queries are as fast as table queries. Positions keep the split ``<p>_x/_y/_z`` columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import Engine, select

from opencave.errors import BadRequest, Conflict
from opencave.services.materialize.layout import AXES, FrozenLayout
from opencave.storage.sql import reader
from opencave.storage.tables import mat_views


@dataclass(frozen=True)
class ViewDefinition:
    id: int
    datastack: str
    name: str
    description: str
    query: str
    voxel_resolution: tuple[float, float, float]
    notice_text: str | None
    live_compatible: bool

    @property
    def tables(self) -> set[str]:
        return set(duckdb.get_table_names(self.query))

    def metadata(self) -> dict[str, Any]:
        x, y, z = self.voxel_resolution
        return {
            "id": self.id,
            "table_name": self.name,
            "description": self.description,
            "datastack_name": self.datastack,
            "voxel_resolution_x": x,
            "voxel_resolution_y": y,
            "voxel_resolution_z": z,
            "notice_text": self.notice_text,
            "live_compatible": self.live_compatible,
        }


class ViewRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def define(
        self,
        datastack: str,
        name: str,
        query: str,
        description: str,
        voxel_resolution: tuple[float, float, float],
        notice_text: str | None = None,
        live_compatible: bool = False,
    ) -> None:
        """Add a view; it appears in every version created from now on."""
        try:
            duckdb.get_table_names(query)
        except duckdb.Error as error:
            raise BadRequest(f"The view query of {name!r} is not valid SQL: {error}", code="bad_view") from None
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(mat_views.c.id).where(mat_views.c.datastack == datastack, mat_views.c.view_name == name)
            ).first()
            if exists is not None:
                raise Conflict(f"View {name!r} already exists in {datastack}.", code="view_exists")
            conn.execute(
                mat_views.insert().values(
                    datastack=datastack,
                    view_name=name,
                    description=description,
                    query=query,
                    voxel_resolution_x=voxel_resolution[0],
                    voxel_resolution_y=voxel_resolution[1],
                    voxel_resolution_z=voxel_resolution[2],
                    notice_text=notice_text,
                    live_compatible=live_compatible,
                )
            )

    def list(self, datastack: str) -> list[ViewDefinition]:
        with reader(self.engine).connect() as conn:
            rows = conn.execute(select(mat_views).where(mat_views.c.datastack == datastack).order_by(mat_views.c.view_name)).all()
        return [
            ViewDefinition(
                id=row.id,
                datastack=row.datastack,
                name=row.view_name,
                description=row.description,
                query=row.query,
                voxel_resolution=(row.voxel_resolution_x, row.voxel_resolution_y, row.voxel_resolution_z),
                notice_text=row.notice_text,
                live_compatible=bool(row.live_compatible),
            )
            for row in rows
        ]


def layout_of_result(name: str, schema: pa.Schema) -> FrozenLayout:
    """A frozen layout for a view's stored columns: ``<p>_x/_y/_z`` triples are positions."""
    names = schema.names
    positions = tuple(
        n[:-2] for n in names if n.endswith("_x") and all(f"{n[:-2]}_{a}" in names for a in AXES)
    )
    return FrozenLayout(
        schema=f"view:{name}",
        columns=tuple((field.name, field.type) for field in schema),
        positions=positions,
        bound_points=(),
        string_columns=tuple(field.name for field in schema if field.type in (pa.string(), pa.large_string())),
    )


def view_column_types(layout: FrozenLayout) -> dict[str, dict[str, str]]:
    """The view schema JSON caveclient reads: {column: {"type": ...}} with positions as SpatialPoint."""
    split = {f"{p}_{a}" for p in layout.positions for a in AXES}
    out: dict[str, dict[str, str]] = {}
    for name, dtype in layout.columns:
        if name in split:
            continue
        if pa.types.is_boolean(dtype):
            out[name] = {"type": "boolean"}
        elif pa.types.is_integer(dtype):
            out[name] = {"type": "integer"}
        elif pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
            out[name] = {"type": "float"}
        elif pa.types.is_timestamp(dtype):
            out[name] = {"type": "string", "format": "date-time"}
        else:
            out[name] = {"type": "string"}
    for position in layout.positions:
        out[position] = {"type": "SpatialPoint"}
    return out
