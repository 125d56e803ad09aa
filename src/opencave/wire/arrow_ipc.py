"""Query answers as Apache Arrow IPC streams, as the materialization engine sends them.

The body is an IPC *stream* (schema message, then record batches) whose buffers are compressed
with the codec the request's ``Accept-Encoding`` names (``lz4`` wins over ``zstd``, as upstream),
served as ``Content-Type: data.arrow``. The schema carries pandas metadata so that
``read_pandas`` restores the frame exactly; answers are written batch by batch so that a whole
table streams without being held in memory twice.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc

CONTENT_TYPE = "data.arrow"
LEGACY_CONTENT_TYPE = "x-application/pyarrow"


def compression_for(accept_encoding: str | None, enabled: bool = True) -> str | None:
    """The IPC buffer codec for an ``Accept-Encoding`` header value (None: uncompressed)."""
    if not enabled or not accept_encoding:
        return None
    tokens = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",")}
    if "lz4" in tokens:
        return "lz4"
    if "zstd" in tokens:
        return "zstd"
    return None


@functools.lru_cache(maxsize=512)
def with_pandas_metadata(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the ``pandas`` metadata ``RecordBatch.from_pandas`` would write for a frame
    with a default RangeIndex, so ``read_pandas`` gives the same frame as upstream's answers.

    Cached: building it goes through an empty DataFrame, which costs milliseconds per answer.
    """
    empty = schema.empty_table().to_pandas()
    pandas_meta = pa.Schema.from_pandas(empty, preserve_index=False).metadata or {}
    metadata = dict(schema.metadata or {})
    if b"pandas" in pandas_meta:
        meta = json.loads(pandas_meta[b"pandas"])
        meta["index_columns"] = [{"kind": "range", "name": None, "start": 0, "stop": 0, "step": 1}]
        metadata[b"pandas"] = json.dumps(meta).encode()
    return schema.with_metadata(metadata)


END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def stream_batches(
    schema: pa.Schema, batches: Iterable[pa.RecordBatch], compression: str | None
) -> Iterator[bytes | memoryview]:
    """Encode ``batches`` as one IPC stream, yielding the bytes of each message as it is made.

    Uncompressed streams are the concatenation of each message's own encapsulated form, so
    every batch is copied once (into its message) instead of passing through a Python file.
    """
    schema = with_pandas_metadata(schema)
    if compression is None:
        yield memoryview(schema.serialize())
        for batch in batches:
            if batch.num_rows:
                yield memoryview((batch.cast(schema) if batch.schema != schema else batch).serialize())
        yield END_OF_STREAM
        return
    sink = io.BytesIO()
    options = ipc.IpcWriteOptions(compression=compression)
    with ipc.new_stream(sink, schema, options=options) as writer:
        yield _drain(sink)
        for batch in batches:
            if batch.num_rows:
                writer.write_batch(batch.cast(schema) if batch.schema != schema else batch)
                yield _drain(sink)
    yield _drain(sink)


def encode_table(table: pa.Table, compression: str | None) -> bytes:
    """A whole table as one IPC stream body."""
    return b"".join(stream_batches(table.schema, table.to_batches(), compression))


def encode_frame(frame: pd.DataFrame, compression: str | None) -> bytes:
    return encode_table(pa.Table.from_pandas(frame, preserve_index=False), compression)


# Answers of fewer rows are converted to pandas in the calling thread: handing a small table's
# columns to pyarrow's thread pool costs more (~0.15 ms of a ~0.3 ms conversion) than it saves.
# They are also consolidated into 2-D blocks even when they came in several batches: copying a
# small answer once is cheaper than making a block per column.
THREADED_ROWS = 65_536


@functools.lru_cache(maxsize=512)
def _plain_pandas_metadata(schema: pa.Schema) -> bool:
    """Whether ``schema``'s ``pandas`` metadata is just what ``with_pandas_metadata`` writes
    for its Arrow types (a default index, nothing else): a frame is then the same without it,
    and converting without it is quicker (~0.04 ms of ~0.14 ms for a neuron's synapses)."""
    bare = schema.remove_metadata()
    return schema.metadata == with_pandas_metadata(bare).metadata


def decode_frame(body: bytes | BinaryIO) -> pd.DataFrame:
    """An IPC stream (a body, or a file-like object read as it arrives; compressed buffers are
    handled by pyarrow) as a DataFrame.

    A large answer of several batches becomes one pandas block per column: consolidating
    same-typed columns into 2-D blocks would copy the whole answer once more, which costs more
    than the transfer itself. Other answers are consolidated: for an answer of one batch, that
    single copy is what makes its columns writable (they would otherwise be read-only views of
    the message).
    """
    source = pa.py_buffer(body) if isinstance(body, bytes | bytearray | memoryview) else body
    table = ipc.open_stream(source).read_all()
    if table.schema.metadata and _plain_pandas_metadata(table.schema):
        table = table.replace_schema_metadata(None)
    large = table.num_rows >= THREADED_ROWS
    if large and table.num_columns and table.column(0).num_chunks > 1:
        return table.to_pandas(split_blocks=True, self_destruct=True, use_threads=True)
    return table.to_pandas(use_threads=large)


def _drain(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data
