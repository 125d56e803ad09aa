"""The physical row layout of an annotation table, derived from its schema's flat layout.

Positions are stored as three FLOAT columns (``P_x``, ``P_y``, ``P_z``) so no spatial extension
is needed; each bound point keeps its supervoxel id, looked up when the row is written. Root ids
are not stored: they change with every proofreading edit, so the materialization engine derives
them from the supervoxels and the chunkedgraph at query time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa

from opencave.services.schemas import FieldKind, get_schema, layout
from opencave.services.schemas.columns import flatten
from opencave.storage.annotation_rows import ColumnSpec

AXES = ("x", "y", "z")
POSITION_TYPE = "geometry(POINTZ)"

CRUD = (
    ColumnSpec("id", "BIGINT", nullable=False, primary_key=True),
    ColumnSpec("created", "FLOAT", nullable=False, index=True),
    ColumnSpec("deleted", "FLOAT", index=True),
    ColumnSpec("superceded_id", "BIGINT"),
    ColumnSpec("valid", "BOOLEAN"),
)
CRUD_ARROW = {
    "id": pa.int64(),
    "created": pa.float64(),
    "deleted": pa.float64(),
    "superceded_id": pa.int64(),
    "valid": pa.bool_(),
}
SCALAR_SQL = {
    FieldKind.STRING: "VARCHAR",
    FieldKind.INTEGER: "INTEGER",
    FieldKind.FLOAT: "FLOAT",
    FieldKind.BOOLEAN: "BOOLEAN",
    FieldKind.BIGINT: "BIGINT",
    FieldKind.USER_ID: "BIGINT",
    FieldKind.REFERENCE: "BIGINT",
}
ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "INTEGER": pa.int32(),
    "FLOAT": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "BIGINT": pa.int64(),
}


@dataclass(frozen=True)
class PointColumns:
    """A position column of the flat layout and, for bound points, its supervoxel column."""

    name: str  # flat name, e.g. "pre_pt_position"
    supervoxel: str | None  # e.g. "pre_pt_supervoxel_id"; None for unbound points
    required: bool  # the point (or bare position) must be given

    @property
    def axes(self) -> tuple[str, str, str]:
        return (f"{self.name}_x", f"{self.name}_y", f"{self.name}_z")


@dataclass(frozen=True)
class ScalarColumn:
    name: str
    kind: FieldKind
    required: bool
    choices: tuple | None


@dataclass(frozen=True)
class RowLayout:
    """Everything the service needs to store, check and read one schema's rows."""

    schema_name: str
    columns: tuple[ColumnSpec, ...]  # physical, in order: CRUD then data columns
    points: tuple[PointColumns, ...]
    scalars: tuple[ScalarColumn, ...]
    is_reference: bool
    order: tuple[str, ...]  # flat names of positions and scalars, in schema order

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(c.name, CRUD_ARROW.get(c.name) or ARROW_TYPES[c.type]) for c in self.columns])

    @property
    def bound_points(self) -> tuple[PointColumns, ...]:
        return tuple(p for p in self.points if p.supervoxel is not None)

    @property
    def flat_inputs(self) -> list[str]:
        """Flat column names a bulk insert may carry (positions as one (n, 3) column)."""
        return [p.name for p in self.points] + [s.name for s in self.scalars]


def _required_leaves(schema_name: str) -> set[str]:
    """Flat names of leaves that must be present: required fields inside required points."""
    required: set[str] = set()

    def walk(fields, prefix: str, parent_required: bool) -> None:
        for f in fields:
            name = prefix + f.name
            if f.kind is FieldKind.POINT:
                assert f.point is not None
                walk(f.point.fields, name + "_", parent_required and f.required)
            elif f.required and parent_required:
                required.add(name)

    walk(get_schema(schema_name).fields, "", True)
    return required


@lru_cache(maxsize=None)
def row_layout(schema_name: str) -> RowLayout:
    """The row layout of a registered schema (NotFound for unknown names)."""
    flat = layout(schema_name)
    kinds = {leaf.column: leaf.field for leaf in flatten(get_schema(schema_name))}
    required = _required_leaves(schema_name)
    names = {c.name for c in flat.flat}
    columns: list[ColumnSpec] = list(CRUD)
    points: list[PointColumns] = []
    scalars: list[ScalarColumn] = []
    order: list[str] = []
    for column in flat.flat:
        name = column.name
        if name in ("id", "valid"):
            continue
        field = kinds[name]
        if column.type == POSITION_TYPE:
            prefix = name[: -len("position")]
            supervoxel = prefix + "supervoxel_id"
            point = PointColumns(name, supervoxel if supervoxel in names else None, name in required)
            points.append(point)
            order.append(name)
            columns.extend(ColumnSpec(axis, "FLOAT") for axis in point.axes)
        elif field.kind is FieldKind.SEGMENTATION:
            if name.endswith("supervoxel_id"):
                columns.append(ColumnSpec(name, "BIGINT"))
            # root ids are derived at query time, never stored
        else:
            columns.append(ColumnSpec(name, SCALAR_SQL[field.kind]))
            scalars.append(ScalarColumn(name, field.kind, name in required, field.choices))
            order.append(name)
    return RowLayout(schema_name, tuple(columns), tuple(points), tuple(scalars), flat.is_reference, tuple(order))
