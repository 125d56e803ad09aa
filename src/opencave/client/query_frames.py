"""Turning materialization answers into DataFrames: Arrow decoding, position columns, timestamps.

These are the module-level helpers of caveclient's ``materializationengine`` (re-exported by
``opencave.client.materialize``) with the same results, written for speed: position columns
are joined with one vectorised pass instead of a Python list per row.
"""

from __future__ import annotations

import copy
import io
import ipaddress
import itertools
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests

from ..wire import arrow_ipc

# Buffer compression asked for with Arrow answers (``Accept-Encoding``), as caveclient does.
DEFAULT_COMPRESSION = "zstd"
# Materialization timestamps travel in exactly this form (no zone; UTC by convention).
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"

_AXES = {"x": 0, "y": 1, "z": 2}
# Upstream's row-cap warning and its live-query variant; opencave's server uses the first.
_TRUNCATION = re.compile(r"limited query to \d+ rows|there may be more results", re.IGNORECASE)


# Loopback answers are read in pieces this large (requests' default of 10 kB costs seconds).
ANSWER_READ_BYTES = 8 << 20


def answer_encoding(server_address: str) -> str:
    """The ``Accept-Encoding`` of Arrow answers from ``server_address``.

    Over loopback, compressing buffers only costs time: decoding a compressed 10-million-row
    answer takes several times longer than moving it uncompressed. Anywhere else the buffers
    are compressed, as caveclient asks.
    """
    host = urlsplit(server_address).hostname or ""
    if host == "localhost":
        return "identity"
    try:
        return "identity" if ipaddress.ip_address(host).is_loopback else DEFAULT_COMPRESSION
    except ValueError:
        return DEFAULT_COMPRESSION


def _check_arrow(response: requests.Response) -> None:
    """Raise ValueError unless the answer is an Arrow IPC stream (``Content-Type: data.arrow``).

    caveclient tries pyarrow's removed ``deserialize`` for the legacy ``x-application/pyarrow``
    type; that cannot work with any current pyarrow, so the error says to upgrade the server
    instead. A ``; charset``-style suffix on the content type is tolerated.
    """
    content_type = response.headers.get("Content-Type")
    media_type = (content_type or "").split(";")[0].strip()
    if media_type == arrow_ipc.CONTENT_TYPE:
        return
    if media_type == arrow_ipc.LEGACY_CONTENT_TYPE:
        raise ValueError(
            "The server answered in the legacy 'x-application/pyarrow' format, which current pyarrow "
            "cannot read. The materialization service must be upgraded (>= 5.13.0)."
        )
    raise ValueError(f"Unknown response type: {content_type}")


def deserialize_query_response(response: requests.Response) -> pd.DataFrame:
    """The DataFrame of an Arrow IPC stream answer; ValueError for any other content type."""
    _check_arrow(response)
    return arrow_ipc.decode_frame(response.content)


class _Pieces(io.RawIOBase):
    """A readable file over an iterator of byte pieces, so an answer is decoded as it arrives
    and each piece is freed once read (joining them first would hold the body twice)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._rest = memoryview(piece)
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def read_query_answer(response: requests.Response) -> pd.DataFrame:
    """The DataFrame of an Arrow answer requested with ``stream=True``: an answer of known
    length up to ``ANSWER_READ_BYTES`` is read whole, in one call; a longer one is decoded
    piece by piece as it arrives."""
    _check_arrow(response)
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) <= ANSWER_READ_BYTES and not response.headers.get("Content-Encoding"):
        return arrow_ipc.decode_frame(response.raw.read())
    pieces = _Pieces(response.iter_content(chunk_size=ANSWER_READ_BYTES))
    return arrow_ipc.decode_frame(io.BufferedReader(pieces, buffer_size=1 << 16))


def response_warnings(response: requests.Response) -> list[str]:
    """The ``Warning`` header lines of a response, one string per line.

    ``requests`` joins repeated header lines with ", ", which cannot be split back because
    warnings contain commas; the raw urllib3 headers keep the lines apart.
    """
    raw_headers = getattr(getattr(response, "raw", None), "headers", None)
    getlist = getattr(raw_headers, "getlist", None)
    if callable(getlist):
        return [str(value) for value in getlist("Warning")]
    value = response.headers.get("Warning")
    return [value] if value else []


def warning_attrs(response: requests.Response) -> dict[str, Any]:
    """``{"warnings": [...], "truncated": bool}`` if the server sent warnings, else ``{}``.

    A server that caps the rows of an answer says so in a warning; ``truncated`` makes that
    visible on the DataFrame (``df.attrs.get("truncated", False)``) instead of only in a log.
    Nothing is added without warnings, so ``attrs`` stay equal to caveclient's.
    """
    lines = response_warnings(response)
    if not lines:
        return {}
    return {"warnings": lines, "truncated": any(_TRUNCATION.search(line) for line in lines)}


def _xyz_groups(columns: Sequence[Any]) -> Iterator[tuple[str, list[str]]]:
    """``(base, [base_x, base_y, base_z])`` for each run of adjacent columns named
    ``<base>_x, <base>_y, <base>_z`` in that order (caveclient's grouping rule)."""
    names = [c for c in columns if isinstance(c, str)]
    for base, group in itertools.groupby(names, key=lambda name: name[:-2]):
        members = list(group)
        if "".join(name[-1:] for name in members) == "xyz":
            yield base, members


def convert_position_columns(
    df: pd.DataFrame, given_resolution: Sequence[float], desired_resolution: Sequence[float]
) -> pd.DataFrame:
    """Scale split position columns (in place) from ``given_resolution`` to
    ``desired_resolution`` (nm per voxel); returns ``df``."""
    factors = np.asarray(given_resolution, dtype=float) / np.asarray(desired_resolution, dtype=float)
    if np.all(factors == 1):
        return df
    for _, members in _xyz_groups(df.columns):
        for column in members:
            df[column] = df[column] * factors[_AXES[column[-1]]]
    return df


def _column_values(column: pd.Series) -> np.ndarray:
    """A column as numpy values; nullable extension columns as objects (NA stays NA)."""
    if isinstance(column.dtype, pd.api.extensions.ExtensionDtype):
        return column.to_numpy(dtype=object)
    return column.to_numpy()


def _row_arrays(columns: list[np.ndarray]) -> np.ndarray:
    """One 3-element array per row of x/y/z columns, typed as ``np.array(list_of_values)``
    would type it (caveclient builds them that way: ints → int64, floats → float64)."""
    values = np.column_stack(columns)
    kind = values.dtype.kind
    if kind == "i":
        rows = values.astype(np.int64, copy=False)
    elif kind == "u":
        fits = values.size == 0 or values.max() <= np.iinfo(np.int64).max
        rows = values.astype(np.int64 if fits else np.uint64, copy=False)
    elif kind == "f":
        rows = values.astype(np.float64, copy=False)
    elif kind == "b":
        rows = values
    else:  # objects, nullable extension types: per row, exactly as caveclient
        rows = [np.array(row) for row in values.astype(object).tolist()]
    result = np.empty(len(rows), dtype=object)
    result[:] = list(rows)  # row views of one block: no per-row allocation of data
    return result


def concatenate_position_columns(df: pd.DataFrame, inplace: bool = False) -> pd.DataFrame:
    """Replace each ``<p>_x, <p>_y, <p>_z`` column triple with one column ``<p>`` of 3-element
    arrays, appended after the other columns (caveclient's column order).

    caveclient builds a Python list per row; this converts each triple with one numpy pass,
    several times faster on large answers.
    """
    groups = list(_xyz_groups(df.columns))
    if not groups:
        return df if inplace else df.copy()
    # pandas deep-copies ``attrs`` into every column it hands out: set them aside meanwhile
    attrs, df.attrs = df.attrs, {}
    try:
        joined = {
            # An empty answer gets caveclient's empty column (float64), not an object one.
            base: _row_arrays([_column_values(df[c]) for c in members]) if len(df) else np.array([], dtype=np.float64)
            for base, members in groups
        }
        dropped = {column for _, members in groups for column in members}
        if inplace:
            df.drop(columns=list(dropped), inplace=True)
            for base, values in joined.items():
                df[base] = values
            return df
        kept = {name: df[name] for name in df.columns if name not in dropped}
        result = pd.DataFrame({**kept, **joined}, index=df.index, copy=False)
        result.attrs = copy.deepcopy(attrs)
        return result
    finally:
        df.attrs = attrs


def convert_timestamp(ts: Any) -> datetime:
    """A UTC-aware datetime from what users and servers give as a time.

    ``"now"`` → now; a naive datetime is taken as UTC; an aware one is converted to UTC; a
    string is parsed as ``YYYY-MM-DDTHH:MM:SS.ffffff`` (other ISO-8601 forms are accepted too);
    None → ``pd.Timestamp.max`` (naive, as caveclient). Unlike caveclient, which returns a
    naive *local* time for floats (and then fails comparing it with aware times), numbers are
    POSIX seconds in UTC.
    """
    if isinstance(ts, str) and ts == "now":
        return datetime.now(UTC)
    if isinstance(ts, datetime):
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if isinstance(ts, (int, float, np.integer, np.floating)) and not isinstance(ts, bool):
        return datetime.fromtimestamp(float(ts), UTC)
    if ts is None:
        return pd.Timestamp.max.to_pydatetime(warn=False)
    try:
        parsed = datetime.strptime(ts, TIMESTAMP_FORMAT)
    except ValueError:
        parsed = datetime.fromisoformat(ts)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def string_format_timestamp(ts: Any) -> Any:
    """``YYYY-MM-DDTHH:MM:SS.ffffff`` for a datetime; anything else unchanged."""
    if isinstance(ts, datetime):
        return ts.strftime(TIMESTAMP_FORMAT)
    return ts


def parse_resolution(value: Any) -> Any:
    """The ``dataframe_resolution`` header (``"4.0, 4.0, 40.0"``) as floats; other values as given."""
    if isinstance(value, str):
        return [float(part) for part in value.split(",")]
    return value
