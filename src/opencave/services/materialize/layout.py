"""The column layout of a frozen (materialized) table, derived from its schema.

Frozen tables are "merged" (upstream's flat model: annotation and segmentation columns in one
table, no CRUD columns). Columns come in the order users of CAVE see them: ``id``, ``valid``,
each bound point's supervoxel and root id, the other scalar fields, then every position split
into ``<point>_position_x/_y/_z``. Positions are stored as float64 (exact); answers round them
to integers unless they are rescaled.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pyarrow as pa

from opencave.services.annotation.layout import ARROW_TYPES, AXES
from opencave.services.schemas.columns import layout as schema_layout

__all__ = ["AXES", "BoundPoint", "FrozenLayout", "frozen_layout", "split_position"]


@dataclass(frozen=True)
class BoundPoint:
    """A point linked to the segmentation: ``<prefix>supervoxel_id`` and ``<prefix>root_id``."""

    prefix: str

    @property
    def supervoxel_column(self) -> str:
        return f"{self.prefix}supervoxel_id"

    @property
    def root_column(self) -> str:
        return f"{self.prefix}root_id"


@dataclass(frozen=True)
class FrozenLayout:
    schema: str
    columns: tuple[tuple[str, pa.DataType], ...]  # stored columns, positions split
    positions: tuple[str, ...]  # position column names (unsplit), e.g. "pre_pt_position"
    bound_points: tuple[BoundPoint, ...]
    string_columns: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, dtype) for name, dtype in self.columns])

    @property
    def root_columns(self) -> list[str]:
        return [point.root_column for point in self.bound_points]

    def type_of(self, column: str) -> pa.DataType | None:
        return dict(self.columns).get(column)


def split_position(column: str) -> list[str]:
    return [f"{column}_{axis}" for axis in AXES]


@cache
def frozen_layout(schema: str) -> FrozenLayout:
    """The frozen layout of a registered schema (``NotFound`` for unknown schema names)."""
    flat = schema_layout(schema).flat
    ids: list[tuple[str, pa.DataType]] = [("id", pa.int64())]
    segmentation: list[tuple[str, pa.DataType]] = []
    scalars: list[tuple[str, pa.DataType]] = []
    positions: list[str] = []
    bound: list[BoundPoint] = []
    for column in flat[1:]:
        if column.type.startswith("geometry"):
            positions.append(column.name)
        elif column.segmentation:
            segmentation.append((column.name, pa.int64()))
            if column.name.endswith("supervoxel_id"):
                bound.append(BoundPoint(column.name.removesuffix("supervoxel_id")))
        elif column.name == "valid":
            ids.append(("valid", pa.bool_()))
        else:
            scalars.append((column.name, ARROW_TYPES[column.type]))
    split = [(name, pa.float64()) for column in positions for name in split_position(column)]
    return FrozenLayout(
        schema=schema,
        columns=tuple(ids + segmentation + scalars + split),
        positions=tuple(positions),
        bound_points=tuple(bound),
        string_columns=tuple(name for name, dtype in scalars if dtype == pa.string()),
    )
