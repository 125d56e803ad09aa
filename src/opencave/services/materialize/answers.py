"""A query answer: Arrow batches plus what the response headers must say about them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

BATCH_ROWS = 262_144


@dataclass
class Answer:
    """Rows to send (``schema`` + ``batches``, consumed once) and their headers' content."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    column_names: dict[str, dict[str, str]] = field(default_factory=dict)
    resolution: tuple[float, float, float] | None = None
    warnings: list[str] = field(default_factory=list)

    def table(self) -> pa.Table:
        return pa.Table.from_batches(list(self.batches), schema=self.schema)


def run(cursor: duckdb.DuckDBPyConnection, sql: str, params: list, stream: bool = True) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Execute on a private cursor and hand back the schema and a batch iterator that closes it."""
    relation = cursor.sql(sql, params=params)
    if not stream:
        table = relation.to_arrow_table()
        cursor.close()
        return table.schema, iter(table.to_batches(max_chunksize=BATCH_ROWS))
    reader = relation.to_arrow_reader(BATCH_ROWS)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:
            cursor.close()

    return reader.schema, batches()


def from_table(table: pa.Table, **headers) -> Answer:
    return Answer(schema=table.schema, batches=iter(table.to_batches(max_chunksize=BATCH_ROWS)), **headers)
