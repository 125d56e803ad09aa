"""A query answer: Arrow batches plus what the response headers must say about them.

Answers are consumed once, batch by batch, whatever their size: Arrow IPC and JSON bodies are
both encoded per batch as the batches arrive (``wire.arrow_ipc``, ``json_records``), so a
server holds one batch of an answer at a time, not the whole of it. The first batch is made
before an answer is handed back (``primed``): a query that fails, fails before the first byte
is sent, while a 4xx can still say why.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import duckdb
import pandas as pd
import pyarrow as pa

BATCH_ROWS = 262_144
# An answer made whole in memory with at most this many rows is encoded in the request's worker
# thread and sent as one body: streaming costs a hop between threads per message, which is most
# of the time of a small answer. Larger ones stream, so a server never holds two copies of them.
WHOLE_BODY_ROWS = 65_536
# Rows per JSON encoder call (~2 MB of text for a synapse table). Larger calls are no faster and
# their big transient strings fragment the heap: 32,768 rows raised a process's memory twice as much.
JSON_ROWS = 4_096

# Integers stay integers in JSON even where a column holds nulls (pandas' default turns the
# whole column into floats, which would print ids as rounded floats).
_NULLABLE_INTEGERS = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
}


@dataclass
class Answer:
    """Rows to send (``schema`` + ``batches``, consumed once) and their headers' content."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    column_names: dict[str, dict[str, str]] = field(default_factory=dict)
    resolution: tuple[float, float, float] | None = None
    warnings: list[str] = field(default_factory=list)
    small: bool = False  # whole in memory, at most WHOLE_BODY_ROWS rows: sent as one body

    def table(self) -> pa.Table:
        return pa.Table.from_batches(list(self.batches), schema=self.schema)


def primed(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``batches`` with the first one already made, so that its errors raise here and now."""
    first = next(batches, None)
    return batches if first is None else itertools.chain([first], batches)


def run(
    cursor: duckdb.DuckDBPyConnection, sql: str, params: list, stream: bool = True, batch_rows: int = BATCH_ROWS
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Execute on a private cursor and hand back the schema and a batch iterator that closes it
    (its first batch made already)."""
    try:
        relation = cursor.sql(sql, params=params)
        if not stream:
            table = relation.to_arrow_table()
            cursor.close()
            return table.schema, iter(table.to_batches(max_chunksize=batch_rows))
        reader = relation.to_arrow_reader(batch_rows)
    except BaseException:
        cursor.close()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:
            cursor.close()

    return reader.schema, primed(batches())


def from_table(table: pa.Table, **headers) -> Answer:
    return Answer(
        schema=table.schema, batches=iter(table.to_batches(max_chunksize=BATCH_ROWS)), small=table.num_rows <= WHOLE_BODY_ROWS, **headers
    )


def json_records(batches: Iterable[pa.RecordBatch]) -> Iterator[bytes]:
    """The rows as one JSON array of records, encoded ``JSON_ROWS`` rows at a time.

    Values are written by pandas' ``to_json(orient="records")`` (ASCII, timestamps as epoch
    milliseconds, NaN as null, floats to 10 significant digits), as whole answers always were.
    """
    yield b"["
    first = True
    for batch in batches:
        for start in range(0, batch.num_rows, JSON_ROWS):
            frame = pa.Table.from_batches([batch.slice(start, JSON_ROWS)]).to_pandas(types_mapper=_NULLABLE_INTEGERS.get)
            text = frame.to_json(orient="records")[1:-1]
            del frame
            yield (text if first else "," + text).encode()
            first = False
    yield b"]"
