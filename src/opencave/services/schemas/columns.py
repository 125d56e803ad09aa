"""SQL column layouts of the tables a schema produces, for the annotation and materialization engines.

Nested points are flattened with ``_`` (``pre_pt.root_id`` -> ``pre_pt_root_id``). Segmentation
columns (supervoxel/root ids of bound points) live in a separate table ``T__<pcg>`` keyed by the
annotation id; everything else lives in the annotation table ``T`` after the CRUD columns. The flat
layout (frozen materialized tables) is ``id`` plus every flattened column in schema order. As
upstream, every data column is nullable at the SQL level; ``required`` is enforced on load only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from opencave.services.schemas.model import Field, FieldKind, SchemaDef
from opencave.services.schemas.registry import get_schema

TableKind = Literal["annotation", "segmentation", "flat"]
References = Literal["annotation_table", "reference_table"]

SQL_TYPES: dict[FieldKind, str] = {
    FieldKind.STRING: "VARCHAR",
    FieldKind.INTEGER: "INTEGER",
    FieldKind.FLOAT: "FLOAT",
    FieldKind.BOOLEAN: "BOOLEAN",
    FieldKind.BIGINT: "BIGINT",
    FieldKind.USER_ID: "BIGINT",
    FieldKind.REFERENCE: "BIGINT",
    FieldKind.SEGMENTATION: "BIGINT",
    FieldKind.POSITION: "geometry(POINTZ)",
}


@dataclass(frozen=True)
class Column:
    """One SQL column. ``index`` on a geometry column means an N-D GiST index; ``references``
    names the table whose ``id`` this column points at (ON DELETE CASCADE); ``segmentation``
    marks supervoxel/root id columns that the segmentation engine fills and refreshes."""

    name: str
    type: str
    primary_key: bool = False
    nullable: bool = True
    index: bool = False
    references: References | None = None
    segmentation: bool = False


@dataclass(frozen=True)
class FlatField:
    """A leaf field of a schema with its flattened column name."""

    column: str
    field: Field

    @property
    def is_segmentation(self) -> bool:
        return self.field.kind is FieldKind.SEGMENTATION

    def to_column(self) -> Column:
        return Column(
            name=self.column,
            type=SQL_TYPES[self.field.kind],
            index=self.field.index,
            references="reference_table" if self.field.kind is FieldKind.REFERENCE else None,
            segmentation=self.is_segmentation,
        )


@dataclass(frozen=True)
class TableLayout:
    """Everything the engines need to create and query a schema's tables."""

    schema_name: str
    annotation: tuple[Column, ...]
    segmentation: tuple[Column, ...]
    flat: tuple[Column, ...]
    is_reference: bool
    has_segmentation: bool

    def columns(self, table: TableKind) -> list[Column]:
        return list(getattr(self, table))


ID = Column("id", "BIGINT", primary_key=True, nullable=False)
SEGMENTATION_ID = Column("id", "BIGINT", primary_key=True, nullable=False, references="annotation_table")
CRUD_COLUMNS = (
    Column("created", "TIMESTAMP", nullable=False, index=True),
    Column("deleted", "TIMESTAMP", index=True),
    Column("superceded_id", "BIGINT"),  # sic: upstream's spelling is the column name
)


def flatten(schema: SchemaDef, prefix: str = "") -> list[FlatField]:
    """Leaf fields in schema order, nested points expanded in place."""
    out: list[FlatField] = []
    for f in schema.fields:
        if f.kind is FieldKind.POINT:
            assert f.point is not None
            out.extend(flatten(f.point, f"{prefix}{f.name}_"))
        else:
            out.append(FlatField(prefix + f.name, f))
    return out


def schema_layout(name: str, schema: SchemaDef) -> TableLayout:
    leaves = flatten(schema)
    seg = [leaf.to_column() for leaf in leaves if leaf.is_segmentation]
    anno = [leaf.to_column() for leaf in leaves if not leaf.is_segmentation]
    return TableLayout(
        schema_name=name,
        annotation=(ID, *CRUD_COLUMNS, *anno),
        segmentation=(SEGMENTATION_ID, *seg),
        flat=(ID, *(leaf.to_column() for leaf in leaves)),
        is_reference=any(leaf.field.kind is FieldKind.REFERENCE for leaf in leaves),
        has_segmentation=bool(seg),
    )


def layout(name: str) -> TableLayout:
    """Table layouts of a registered schema; raises NotFound for unknown names."""
    return schema_layout(name, get_schema(name))


def columns(name: str, table: TableKind = "annotation") -> list[Column]:
    """Columns of one of the schema's tables, in upstream order, including ``id`` (and the CRUD
    columns for the annotation table)."""
    if table not in ("annotation", "segmentation", "flat"):
        raise ValueError(f"table must be 'annotation', 'segmentation' or 'flat', not {table!r}")
    return layout(name).columns(table)
