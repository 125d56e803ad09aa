"""What the materialize views pages show: versions, a version's contents, a table's rows.

The pages ask with text from a URL's query string; this module turns that text into the same
typed filters a client's query carries, so a page, its downloads and ``query_table`` answer the
same rows. Nothing here knows about HTTP or HTML.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from opencave.errors import BadRequest
from opencave.services.materialize.answers import Answer
from opencave.services.materialize.requests import QueryOptions
from opencave.services.materialize.service import MaterializeService, VersionTable
from opencave.services.materialize.versions import FrozenTable, Version
from opencave.services.viewer.links import neuroglancer_state, neuroglancer_url
from opencave.wire.materialize_query import Filter, Paging, TableQuery

FILTER_PREFIX = "f."  # a filter on column C is the query parameter ``f.C``
MAX_FILTER_TEXT = 4096  # characters of one filter's value
MAX_IN_VALUES = 1000  # comma-separated values of one integer filter


@dataclass(frozen=True)
class VersionContents:
    """A version with its frozen tables and views (each view with its column types)."""

    version: Version
    tables: list[FrozenTable]
    views: list[tuple[FrozenTable, dict[str, str]]]


@dataclass(frozen=True)
class RowsPage:
    """One page of a table's filtered rows."""

    table: pa.Table
    total: int  # rows matching the filters
    page: int
    page_size: int
    notices: list[str]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def versions(service: MaterializeService, datastack: str, include_expired: bool) -> list[Version]:
    """The datastack's published versions, newest first (NotFound for an unknown datastack)."""
    service.info.aligned_volume_of(datastack)  # NotFound for an unknown datastack
    return sorted(service.registry.list(datastack, include_expired), key=lambda v: v.version, reverse=True)


def version_contents(service: MaterializeService, datastack: str, version: int) -> VersionContents:
    found = service.version(datastack, version)
    tables = service.registry.tables(found) if found.valid else []
    views = [(v, service.view_schema(datastack, version, v.table_name)) for v in service.registry.tables(found, "view")] if found.valid else []
    return VersionContents(found, tables, views)


def filterable_columns(found: VersionTable) -> list[tuple[str, pa.DataType]]:
    """Columns a page can filter on: every stored column except the split positions."""
    positions = {f"{p}_{axis}" for p in found.source.layout.positions for axis in "xyz"}
    return [(name, dtype) for name, dtype in found.source.layout.columns if name not in positions]


def _typed(column: str, dtype: pa.DataType, text: str) -> tuple[str, Any]:
    """One column's filter text as (kind, value): integers may be a comma-separated list."""
    where = f"Filter on {column!r}"
    if pa.types.is_integer(dtype):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if len(parts) > MAX_IN_VALUES:
            raise BadRequest(f"{where} lists {len(parts)} values; give at most {MAX_IN_VALUES}.", code="bad_filter")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise BadRequest(f"{where}: {text[:80]!r} is not an integer or a comma-separated list of integers.", code="bad_filter_value") from None
        if not values:
            raise BadRequest(f"{where} is empty; give an integer or leave the field blank.", code="bad_filter_value")
        return ("equal", values[0]) if len(values) == 1 else ("in", values)
    if pa.types.is_floating(dtype):
        try:
            return ("equal", float(text))
        except ValueError:
            raise BadRequest(f"{where}: {text[:80]!r} is not a number.", code="bad_filter_value") from None
    if pa.types.is_boolean(dtype):
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise BadRequest(f"{where}: {text[:80]!r} must be true or false.", code="bad_filter_value")
        return ("equal", lowered == "true")
    if pa.types.is_string(dtype):
        return ("equal", text)
    raise BadRequest(f"Column {column!r} ({dtype}) cannot be filtered on this page; use client.materialize.query_table.", code="bad_filter")


def parse_filters(found: VersionTable, params: Mapping[str, str]) -> tuple[list[Filter], dict[str, str]]:
    """The ``f.<column>`` parameters as typed filters, and the non-empty ones as given (to refill
    the form). An unknown column or a value that does not fit its column is a BadRequest."""
    columns = dict(filterable_columns(found))
    filters: list[Filter] = []
    given: dict[str, str] = {}
    for key, text in params.items():
        if not key.startswith(FILTER_PREFIX):
            continue
        column = key[len(FILTER_PREFIX) :]
        if column not in columns:
            raise BadRequest(
                f"No column {column[:80]!r} to filter in {found.source.name}; filterable columns are {sorted(columns)}.",
                code="unknown_column",
            )
        if len(text) > MAX_FILTER_TEXT:
            raise BadRequest(f"Filter on {column!r} is {len(text)} characters long; give at most {MAX_FILTER_TEXT}.", code="bad_filter")
        if text == "":
            continue
        kind, value = _typed(column, columns[column], text)
        filters.append(Filter(found.source.name, column, kind, value))
        given[column] = text
    return filters, given


def _answer(service: MaterializeService, found: VersionTable, filters: list[Filter], paging: Paging, count: bool = False) -> Answer:
    query = TableQuery(filters=filters, select_columns=None, paging=paging, desired_resolution=None)
    return service.query_table(found, query, QueryOptions(count=count), rescale=True)


def rows_page(service: MaterializeService, found: VersionTable, filters: list[Filter], page: int, page_size: int) -> RowsPage:
    """Page ``page`` (from 1) of the filtered rows in id order, and how many rows match."""
    if filters:
        total = int(_answer(service, found, filters, Paging(), count=True).table().column(0)[0].as_py())
    else:
        total = found.frozen.row_count
    offset = (page - 1) * page_size
    start = None if filters or found.frozen.kind != "table" else _id_at(service, found, offset)
    if start is None:
        answer = _answer(service, found, filters, Paging(offset=offset, limit=page_size))
    else:  # a deep page starts at its first id, found from the row groups, not by skipping rows
        answer = _answer(service, found, [Filter(found.source.name, "id", "greater_equal", start)], Paging(limit=page_size))
    return RowsPage(answer.table(), total, page, page_size, answer.warnings)


def _id_at(service: MaterializeService, found: VersionTable, offset: int) -> int | None:
    """The id of the row ``offset`` rows into a table's file, which holds its rows sorted by id:
    one row group's ids are read (None past the end)."""
    metadata = pq.ParquetFile(service.registry.files.local_path(found.version.location, found.frozen.file))
    for group in range(metadata.num_row_groups):
        rows = metadata.metadata.row_group(group).num_rows
        if offset < rows:
            return metadata.read_row_group(group, columns=["id"]).column(0)[offset].as_py()
        offset -= rows
    return None


def all_rows(service: MaterializeService, found: VersionTable, filters: list[Filter]) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Every filtered row (up to the server's row cap), streamed as Arrow batches for a download."""
    answer = _answer(service, found, filters, Paging())
    return answer.schema, answer.batches


def row_links(datastack_info: dict, found: VersionTable, records: list[dict[str, Any]]) -> list[str] | None:
    """Each row's Neuroglancer link: the datastack's viewer with the row's root ids (every
    ``*_root_id`` column) selected and its positions marked, centred on the first; None when the
    datastack names no web viewer. Rows hold positions in the table's voxels (``rows_page``)."""
    site = datastack_info.get("viewer_site") or ""
    if not site.startswith(("http://", "https://")):
        return None
    layout = found.source.layout
    columns = list(records[0]) if records else []
    roots = [c for c in columns if c.endswith("_root_id")]
    points = [[f"{p}_{axis}" for axis in "xyz"] for p in layout.positions if all(f"{p}_{axis}" in columns for axis in "xyz")]
    links = []
    for record in records:
        ids = [record[c] for c in roots if record[c]]
        where = [[record[c] for c in point] for point in points if all(record[c] is not None for c in point)]
        state = neuroglancer_state(
            datastack_info, root_ids=ids, points=where, point_resolution=found.source.voxel_resolution, version=found.version.version
        )
        links.append(neuroglancer_url(site, state))
    return links


def csv_chunks(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    """The rows as CSV with a header line, encoded a batch at a time."""
    sink = io.BytesIO()
    with pacsv.CSVWriter(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            yield sink.getvalue()
            sink.seek(0)
            sink.truncate()
    yield sink.getvalue()


def write_parquet(schema: pa.Schema, batches: Iterator[pa.RecordBatch], target: BinaryIO) -> None:
    """The rows as one Parquet file written into ``target`` (a Parquet footer comes last, so the
    whole file is made before any of it is sent)."""
    with pq.ParquetWriter(target, schema, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch)
