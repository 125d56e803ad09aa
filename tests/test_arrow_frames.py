"""Arrow answers decode to the frames caveclient makes of them (``read_pandas``), whichever way
the client converts them: small or large, one batch or several, with the server's plain pandas
metadata (dropped for speed) or another server's (kept, as it says more than the types)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from opencave.wire import arrow_ipc


def _table(rows: int) -> pa.Table:
    rng = np.random.default_rng(rows)
    ints = rng.integers(0, 2**62, rows)
    return pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "valid": pa.array(rng.random(rows) < 0.5),
            "root": pa.array(ints, mask=rng.random(rows) < 0.1),  # ints with nulls become floats
            "size": pa.array(rng.random(rows)),
            "x": pa.array(rng.integers(-1000, 1000, rows).astype(np.int32)),
            "cell_type": pa.array(rng.choice(["pyr", "basket", None], rows).tolist(), pa.string()),
            "flag": pa.array([None if i % 7 == 0 else bool(i % 2) for i in range(rows)], pa.bool_()),
            "created": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=int(i)) for i in range(rows)], pa.timestamp("us", tz="UTC")),
        }
    )


def _stream(table: pa.Table, batch_rows: int) -> bytes:
    return b"".join(arrow_ipc.stream_batches(table.schema, table.to_batches(max_chunksize=batch_rows), None))


@pytest.mark.parametrize("rows", [0, 1, 2_247, arrow_ipc.THREADED_ROWS + 5])
@pytest.mark.parametrize("batch_rows", [2_048, 1_000_000])
def test_frames_equal_caveclients(rows, batch_rows):
    body = _stream(_table(rows), batch_rows)
    expected = ipc.open_stream(pa.py_buffer(body)).read_pandas()
    frame = arrow_ipc.decode_frame(body)
    pd.testing.assert_frame_equal(frame, expected, check_exact=True, check_column_type=True, check_index_type=True)
    assert all(frame[c].values.flags.writeable for c in frame.columns if rows), "columns can be edited in place"


def test_a_foreign_servers_pandas_metadata_is_kept():
    frame = pd.DataFrame({"a": [3, 1, 2], "b": [0.5, 0.25, 0.125]}, index=pd.Index([10, 20, 30], name="id"))
    table = pa.Table.from_pandas(frame)  # the index travels as a column, named in the metadata
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    decoded = arrow_ipc.decode_frame(sink.getvalue().to_pybytes())
    pd.testing.assert_frame_equal(decoded, frame)
