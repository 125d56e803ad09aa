"""Connectivity requests and answers: one definition for the server and opencave's client.

Bodies are JSON objects declared by the pydantic models below (their limits are in the OpenAPI
document). Answers are one table plus a small metadata object naming the moment they describe
(datastack, synapse table, version, timestamp, threshold, whether it was cut): as an Arrow IPC
stream whose schema metadata holds the object under :data:`META_KEY` (what the client asks
for), or as JSON ``{"meta": {...}, "data": {column: [values]}}``.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.ipc as ipc
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

ARROW_STREAM = "application/vnd.apache.arrow.stream"
META_KEY = b"opencave.connectivity"
MAX_ID = 2**63 - 1
MAX_ROOTS = 1_000_000  # roots of one side of an edge query (the body-size limit comes first)
MAX_MATRIX_ROOTS = 50_000  # an adjacency matrix's side
MAX_PARTNER_ROOTS = 100_000
MAX_PATH_ROOTS = 10_000
MAX_HOPS = 5
MAX_PATHS = 100_000
MAX_SYNAPSE_THRESHOLD = 2**31 - 1

# answer tables, in column order (a cell-type answer's type columns take the table's own type)
def _schema(*columns: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema(list(columns))


_ROOT, _COUNT, _SIZE = pa.int64(), pa.int64(), pa.float64()
EDGES = _schema(("pre_pt_root_id", _ROOT), ("post_pt_root_id", _ROOT), ("n_synapses", _COUNT), ("size_sum", _SIZE))
PARTNERS = _schema(("root_id", _ROOT), ("partner_root_id", _ROOT), ("n_synapses", _COUNT), ("size_sum", _SIZE))
COMMON_PARTNERS = _schema(("partner_root_id", _ROOT), ("root_id", _ROOT), ("n_synapses", _COUNT), ("size_sum", _SIZE))
PATHS = _schema(("path", pa.list_(_ROOT)), ("n_hops", pa.int64()), ("weights", pa.list_(_COUNT)), ("bottleneck", _COUNT))
DIFF = _schema(
    ("root_id", _ROOT), ("root_id_after", _ROOT), ("direction", pa.string()), ("partner_root_id", _ROOT),
    ("n_before", _COUNT), ("n_after", _COUNT), ("change", _COUNT), ("status", pa.string()),
)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


RootId = Annotated[int, Field(ge=1, le=MAX_ID, description="a root id")]
Moment = Annotated[
    datetime | None,
    AfterValidator(_utc),
    Field(description="ISO 8601 (UTC when no offset is given) or unix seconds"),
]
Name = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$")]


def _roots(limit: int, optional: bool = False) -> Any:
    if optional:
        return Field(None, max_length=limit, description=f"root ids (at most {limit:,}); absent: every root")
    return Field(min_length=1, max_length=limit, description=f"root ids (at most {limit:,})")


class _Request(BaseModel):
    """The moment and synapse table every request names; neither version nor timestamp: the
    datastack's newest version (now, for a datastack without versions)."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(None, ge=1, le=2**31 - 1, description="a materialized version")
    timestamp: Moment = None
    synapse_table: Name | None = Field(None, description="default: the datastack's synapse table")
    min_synapses: int = Field(1, ge=1, le=MAX_SYNAPSE_THRESHOLD, description="connections with fewer synapses are left out")

    @model_validator(mode="after")
    def _one_moment(self) -> "_Request":
        if getattr(self, "version", None) is not None and getattr(self, "timestamp", None) is not None:
            raise ValueError("give a version or a timestamp, not both")
        return self


class EdgesRequest(_Request):
    pre_roots: list[RootId] | None = _roots(MAX_ROOTS, optional=True)
    post_roots: list[RootId] | None = _roots(MAX_ROOTS, optional=True)


class AdjacencyRequest(_Request):
    roots: list[RootId] = _roots(MAX_MATRIX_ROOTS)

    @model_validator(mode="after")
    def _distinct(self) -> "AdjacencyRequest":
        if len(set(self.roots)) != len(self.roots):
            raise ValueError("roots must be distinct: each names one row and one column of the matrix")
        return self


class PartnersRequest(_Request):
    roots: list[RootId] = _roots(MAX_PARTNER_ROOTS)
    direction: Literal["input", "output"] = "input"


class CellTypeRequest(_Request):
    cell_type_table: Name
    column: Name = "cell_type"


class PathsRequest(_Request):
    sources: list[RootId] = _roots(MAX_PATH_ROOTS)
    targets: list[RootId] = _roots(MAX_PATH_ROOTS)
    max_hops: int = Field(3, ge=1, le=MAX_HOPS)
    max_paths: int = Field(1000, ge=1, le=MAX_PATHS)


class DiffRequest(BaseModel):
    """Two moments (each a version or a timestamp) and the roots, as of the first, to follow."""

    model_config = ConfigDict(extra="forbid")

    roots: list[RootId] = _roots(MAX_PARTNER_ROOTS)
    from_version: int | None = Field(None, ge=1, le=2**31 - 1)
    from_timestamp: Moment = None
    to_version: int | None = Field(None, ge=1, le=2**31 - 1)
    to_timestamp: Moment = None
    synapse_table: Name | None = None
    min_synapses: int = Field(1, ge=1, le=MAX_SYNAPSE_THRESHOLD)

    @model_validator(mode="after")
    def _moments(self) -> "DiffRequest":
        for side in ("from", "to"):
            given = [getattr(self, f"{side}_version") is not None, getattr(self, f"{side}_timestamp") is not None]
            if sum(given) != 1:
                raise ValueError(f"give exactly one of {side}_version and {side}_timestamp")
        return self


def ordered_unique(ids: list[int]) -> list[int]:
    """``ids`` without repeats, first occurrence kept (answers follow the order asked)."""
    return list(dict.fromkeys(ids))


# -- answers -----------------------------------------------------------------------------------
def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_arrow(table: pa.Table, meta: dict[str, Any]) -> bytes:
    """The answer as an Arrow IPC stream with ``meta`` in its schema metadata."""
    schema = table.schema.with_metadata({META_KEY: json.dumps(meta).encode()})
    sink = io.BytesIO()
    with ipc.new_stream(sink, schema) as writer:
        writer.write_table(table.replace_schema_metadata(schema.metadata))
    return sink.getvalue()


def decode_arrow(content: bytes) -> tuple[pa.Table, dict[str, Any]]:
    table = ipc.open_stream(pa.BufferReader(content)).read_all()
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    return table.replace_schema_metadata(None), meta


def json_answer(table: pa.Table, meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "data": table.to_pydict()}
