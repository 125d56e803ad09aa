"""Which of a datastack's tables hold synapses, cell types, nuclei and proofreading status.

Decided from each table's schema (its columns), never from table names: a synapse table binds a
``pre_pt`` and a ``post_pt`` point; a cell-type table has a ``cell_type`` column and either binds
a point itself or references a nucleus table; a nucleus table's schema is a nucleus detection;
a proofreading table's schema records a proofread status. When several tables fit a role, the
one the datastack record names (``synapse_table``, ``soma_table``, ...) comes first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opencave.errors import NotFound
from opencave.services.materialize.layout import FrozenLayout, frozen_layout

SYNAPSE, CELL_TYPE, NUCLEUS, PROOFREADING = "synapse", "cell type", "nucleus", "proofreading"
DECLARED = {
    SYNAPSE: "synapse_table",
    NUCLEUS: "soma_table",
    CELL_TYPE: "cell_identification_table",
    PROOFREADING: "proofreading_status_table",
}


@dataclass(frozen=True)
class Table:
    """One table of a moment, as the browser uses it."""

    name: str
    schema: str
    layout: FrozenLayout
    reference_table: str | None
    row_count: int | None
    description: str
    metadata: dict[str, Any]


@dataclass
class Roles:
    """The tables of each role, preferred one first."""

    synapse: list[Table] = field(default_factory=list)
    cell_type: list[Table] = field(default_factory=list)
    nucleus: list[Table] = field(default_factory=list)
    proofreading: list[Table] = field(default_factory=list)

    def role_of(self, name: str) -> str | None:
        for role, tables in ((SYNAPSE, self.synapse), (CELL_TYPE, self.cell_type), (NUCLEUS, self.nucleus), (PROOFREADING, self.proofreading)):
            if any(t.name == name for t in tables):
                return role
        return None


def as_table(meta: dict[str, Any]) -> Table | None:
    """A table's browser view from its metadata (None for a schema this server does not know)."""
    schema = meta.get("schema_type") or meta.get("schema")
    try:
        layout = frozen_layout(schema)
    except NotFound:
        return None
    return Table(
        name=meta["table_name"],
        schema=schema,
        layout=layout,
        reference_table=meta.get("reference_table") or None,
        row_count=meta.get("row_count"),
        description=meta.get("description") or "",
        metadata=meta,
    )


def _is_synapse(table: Table) -> bool:
    return {"pre_pt_root_id", "post_pt_root_id"} <= set(table.layout.root_columns)


def _is_nucleus(table: Table) -> bool:
    return "nucleus" in table.schema and "pt_root_id" in table.layout.root_columns


def _is_proofreading(table: Table) -> bool:
    return "proofread" in table.schema and "pt_root_id" in table.layout.root_columns


def _is_cell_type(table: Table, nuclei: set[str]) -> bool:
    if table.layout.type_of("cell_type") is None:
        return False
    return "pt_root_id" in table.layout.root_columns or (table.reference_table in nuclei and table.layout.type_of("target_id") is not None)


def classify(tables: list[Table], record: dict[str, Any]) -> Roles:
    """The role tables among ``tables``; ``record`` is the datastack record (its declared tables first)."""
    nuclei = [t for t in tables if _is_nucleus(t)]
    names = {t.name for t in nuclei}
    found = {
        SYNAPSE: [t for t in tables if _is_synapse(t)],
        NUCLEUS: nuclei,
        CELL_TYPE: [t for t in tables if _is_cell_type(t, names)],
        PROOFREADING: [t for t in tables if _is_proofreading(t)],
    }
    for role, key in DECLARED.items():
        declared = record.get(key)
        found[role].sort(key=lambda t: (t.name != declared, t.name))
    return Roles(synapse=found[SYNAPSE], cell_type=found[CELL_TYPE], nucleus=found[NUCLEUS], proofreading=found[PROOFREADING])
