"""Declared request inputs shared by every router: ids, id lists, bounds, timestamps, flags, text.

Each type is an ``Annotated`` alias that FastAPI puts in the OpenAPI document with its limits, and
whose validator accepts the forms caveclient really sends (``"True"``, ``"1,2,3"``,
``"x0-x1_y0-y1_z0-z1"``, ``"None"`` …). A value that does not fit fails with
:func:`invalid`: a ``PydanticCustomError`` whose type is the error ``code`` and whose message says
what to fix; ``server/errors.py`` answers it with 400 and that code (other validation failures
answer 422 ``invalid_request``).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from opencave.wire.materialize_query import parse_timestamp

UINT64_MAX = 2**64 - 1
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
MAX_COORDINATE = 2**40  # voxel and nanometre coordinates; far beyond any volume, far below overflow
LATEST_UNIX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z, the last moment datetime can hold
MAX_JSON_IDS = 1_000_000
MAX_QUERY_IDS = 10_000  # ids in one query string; longer lists go in a POST body
MAX_NAME = 255
MAX_TEXT = 65_536

# Error codes raised by these validators, answered with 400 (see server/errors.py).
CODES: set[str] = set()


def invalid(code: str, message: str) -> PydanticCustomError:
    """A validation failure with its own error code and a message that says what to fix."""
    CODES.add(code)
    return PydanticCustomError(code, "{message}", {"message": message})


for _code in ("bad_node_id", "bad_id", "invalid_ids", "too_many_ids", "bad_bounds", "bad_timestamp", "bad_flag", "bad_text", "bad_number"):
    CODES.add(_code)


def _schema(schema: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema(schema)


# -- integers ----------------------------------------------------------------------------------
def _integer(value: Any, low: int, high: int, what: str, code: str) -> int:
    if isinstance(value, bool):
        raise invalid(code, f"{what} must be an integer; got {value!r}.")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,40}\s*", value):
        number = int(value)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise invalid(code, f"{what} must be a decimal integer; got {value!r}.")
    if not low <= number <= high:
        raise invalid(code, f"{what} {number} is out of range; it must be between {low} and {high}.")
    return number


def _node_id(value: Any) -> int:
    return _integer(value, 1, UINT64_MAX, "Node id", "bad_node_id")


def _node_id_or_zero(value: Any) -> int:
    return _integer(value, 0, UINT64_MAX, "Node id", "bad_node_id")


def _row_id(value: Any) -> int:
    return _integer(value, 0, INT64_MAX, "Id", "bad_id")


def _serial_id(value: Any) -> int:
    return _integer(value, 0, INT32_MAX, "Id", "bad_id")


def _int32(value: Any) -> int:
    return _integer(value, -INT32_MAX - 1, INT32_MAX, "Number", "bad_number")


NodeId = Annotated[
    int,
    BeforeValidator(_node_id),
    _schema({"type": "integer", "format": "uint64", "minimum": 1, "maximum": UINT64_MAX}),
]
"""A chunkedgraph node id (supervoxel, L2 … root): 1 … 2^64-1."""

NodeIdOrZero = Annotated[
    int,
    BeforeValidator(_node_id_or_zero),
    _schema({"type": "integer", "format": "uint64", "minimum": 0, "maximum": UINT64_MAX}),
]
"""A node id where 0 means "none" (e.g. an annotation without a segment)."""

RowId = Annotated[
    int,
    BeforeValidator(_row_id),
    _schema({"type": "integer", "format": "int64", "minimum": 0, "maximum": INT64_MAX}),
]
"""A database row id (user, group, dataset, annotation): a signed 64-bit integer ≥ 0."""

SerialId = Annotated[
    int,
    BeforeValidator(_serial_id),
    _schema({"type": "integer", "format": "int32", "minimum": 0, "maximum": INT32_MAX}),
]
"""A row id of the auth and info tables (users, groups, tokens, datasets, aligned volumes, terms
of service): 32-bit serial numbers on every engine."""

Int32 = Annotated[
    int,
    BeforeValidator(_int32),
    _schema({"type": "integer", "format": "int32", "minimum": -INT32_MAX - 1, "maximum": INT32_MAX}),
]
"""A small integer (versions, layers, levels of detail)."""


# -- id lists ----------------------------------------------------------------------------------
def _split_ids(value: Any, parse, limit: int) -> list[int]:
    """``"1,2,3"``, ``"[1, 2]"``, repeated parameters or a JSON list → a list of ints."""
    items = value if isinstance(value, (list, tuple)) else [value]
    parts: list[Any] = []
    for item in items:
        if isinstance(item, str):
            parts.extend(p for p in item.strip().strip("[]").split(",") if p.strip())
        else:
            parts.append(item)
        if len(parts) > limit:
            raise invalid("too_many_ids", f"Too many ids; send at most {limit:,} per request (longer lists go in a POST body).")
    try:
        return [parse(p) for p in parts]
    except PydanticCustomError as error:
        raise invalid("invalid_ids", f"Ids must be comma-separated integers, e.g. 1,2,3: {error.message()}") from None


def node_id_list(limit: int = MAX_QUERY_IDS, allow_zero: bool = False):
    """A list of node ids given as ``1,2,3``, repeated parameters or a JSON array; with
    ``allow_zero``, 0 stands for "no segment" (caveclient sends it for unassigned annotations)."""
    parse = _node_id_or_zero if allow_zero else _node_id
    return Annotated[
        list[int],
        BeforeValidator(lambda value: _split_ids(value, parse, limit)),
        _schema({"type": "array", "items": {"type": "integer", "format": "uint64", "minimum": 0 if allow_zero else 1, "maximum": UINT64_MAX}, "maxItems": limit}),
    ]


def row_id_list(limit: int = MAX_QUERY_IDS):
    """A list of row ids given as ``1,2,3``, repeated parameters or a JSON array."""
    return Annotated[
        list[int],
        BeforeValidator(lambda value: _split_ids(value, _row_id, limit)),
        _schema({"type": "array", "items": {"type": "integer", "format": "int64", "minimum": 0, "maximum": INT64_MAX}, "maxItems": limit}),
    ]


NodeIdList = node_id_list(MAX_JSON_IDS)
"""Node ids in a JSON body: at most a million."""

NodeIdOrZeroList = node_id_list(MAX_JSON_IDS, allow_zero=True)
"""Node ids in a JSON body where 0 means "no segment" and answers as such."""

QueryNodeIds = node_id_list()
RowIdList = row_id_list()
SerialIdList = Annotated[
    list[int],
    BeforeValidator(lambda value: _split_ids(value, _serial_id, MAX_QUERY_IDS)),
    _schema({"type": "array", "items": {"type": "integer", "format": "int32", "minimum": 0, "maximum": INT32_MAX}, "maxItems": MAX_QUERY_IDS}),
]


def node_id_array(ids: list[int]) -> np.ndarray:
    return np.array(ids, dtype=np.uint64)


# -- numbers, bounds, times --------------------------------------------------------------------
def _finite(value: Any, what: str = "Number") -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise invalid("bad_number", f"{what} must be a number; got {value!r}.") from None
    if not math.isfinite(number) or abs(number) > MAX_COORDINATE:
        raise invalid("bad_number", f"{what} must be a finite number of magnitude at most {MAX_COORDINATE}; got {value!r}.")
    return number


Coordinate = Annotated[float, BeforeValidator(_finite), _schema({"type": "number", "minimum": -MAX_COORDINATE, "maximum": MAX_COORDINATE})]
"""A finite coordinate (voxels or nm) that fits every integer type the services compute with."""

Point = Annotated[list[Coordinate], Field(min_length=3, max_length=3)]

BOUNDS_PATTERN = r"^-?[0-9.e+]+--?[0-9.e+]+_-?[0-9.e+]+--?[0-9.e+]+_-?[0-9.e+]+--?[0-9.e+]+$"


def _bounds(value: Any) -> np.ndarray | None:
    if value is None or value == "" or value == "None":
        return None
    text = str(value)
    message = f"bounds must look like x0-x1_y0-y1_z0-z1 (voxels) with each minimum ≤ its maximum; got {text[:80]!r}."
    axes = text.split("_")
    if len(axes) != 3:
        raise invalid("bad_bounds", message)
    rows = []
    for axis in axes:
        match = re.fullmatch(r"(-?[0-9.eE+]+)-(-?[0-9.eE+]+)", axis)
        if not match:
            raise invalid("bad_bounds", message)
        try:
            low, high = (float(v) for v in match.groups())
        except ValueError:
            raise invalid("bad_bounds", message) from None
        if not (math.isfinite(low) and math.isfinite(high)) or max(abs(low), abs(high)) > MAX_COORDINATE or low > high:
            raise invalid("bad_bounds", message + f" Values are finite and at most {MAX_COORDINATE} in magnitude.")
        rows.append((int(low), int(high)))
    return np.array(rows, dtype=np.int64)


Bounds = Annotated[
    Any,
    BeforeValidator(_bounds),
    _schema({"type": "string", "pattern": BOUNDS_PATTERN, "maxLength": 200, "example": "0-1024_0-1024_0-64"}),
]
"""``x0-x1_y0-y1_z0-z1`` in voxels → a (3, 2) int64 array, or None when absent."""


def _unix_time(value: Any) -> float | None:
    if value is None or value == "" or value == "None":
        return None
    if isinstance(value, bool):
        raise invalid("bad_timestamp", f"timestamp must be a unix time in seconds; got {value!r}.")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise invalid("bad_timestamp", f"timestamp must be a unix time in seconds (e.g. 1700000000.5); got {str(value)[:80]!r}.") from None
    if not (math.isfinite(seconds) and 0 <= seconds <= LATEST_UNIX_TIME):
        raise invalid("bad_timestamp", f"timestamp {value!r} is not a time between 1970 and 9999; give seconds since 1970-01-01 UTC.")
    return seconds


UnixTime = Annotated[
    float | None,
    BeforeValidator(_unix_time),
    _schema({"type": "number", "minimum": 0, "maximum": LATEST_UNIX_TIME, "description": "seconds since 1970-01-01 UTC"}),
]
"""A moment as unix seconds (caveclient's chunkedgraph and state timestamps); absent → None."""


def _moment(value: Any) -> datetime | None:
    """ISO 8601 (naive means UTC), or unix seconds, → an aware UTC datetime."""
    if value is None or value == "" or value == "None":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(_unix_time(value), tz=UTC)
    if not isinstance(value, str):
        raise invalid("bad_timestamp", f"timestamp must be an ISO 8601 time or unix seconds; got {value!r}.")
    text = value.strip()
    try:
        return datetime.fromtimestamp(_unix_time(float(text)), tz=UTC)
    except ValueError:
        pass
    try:
        return parse_timestamp(text)  # the ISO reading the query bodies use too
    except PydanticCustomError:
        raise invalid("bad_timestamp", f"timestamp must be an ISO 8601 time (e.g. 2024-05-01T12:00:00Z) or unix seconds; got {text[:80]!r}.") from None


Moment = Annotated[
    datetime | None,
    BeforeValidator(_moment),
    _schema({"type": "string", "format": "date-time", "description": "ISO 8601 (UTC when no offset is given) or unix seconds"}),
]
"""A moment as ISO 8601 or unix seconds → an aware UTC datetime; absent → None."""


# -- flags and text ----------------------------------------------------------------------------
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off", "", "none"}


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise invalid("bad_flag", f"Expected true or false; got {str(value)[:40]!r}.")


Flag = Annotated[bool, BeforeValidator(_flag), _schema({"type": "boolean"})]
"""A boolean as caveclient sends it (``True``/``False``, ``true``, ``1``, ``0`` …)."""


def _clean_text(value: str) -> str:
    """Text every storage engine can hold: valid UTF-8 (no lone surrogates), no NUL characters."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid("bad_text", "Text must be valid Unicode; it holds a lone surrogate (an unpaired \\ud800-\\udfff escape).") from None
    if "\x00" in value:
        raise invalid("bad_text", "Text must not contain NUL (\\u0000) characters.")
    return value


def text(max_length: int = MAX_TEXT, min_length: int = 0):
    """A string of bounded length that every storage engine can hold."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length), AfterValidator(_clean_text)]


Name = text(MAX_NAME, 1)
"""A table, datastack, aligned volume or namespace name."""

Text = text()


def clean_json_text(value: Any) -> Any:
    """Checks every string inside a decoded JSON document (keys too) with the text rules."""
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dict):
        for key, item in value.items():
            _clean_text(str(key))
            clean_json_text(item)
    elif isinstance(value, list):
        for item in value:
            clean_json_text(item)
    return value


# -- OpenAPI helpers ---------------------------------------------------------------------------
ARROW_STREAM = "application/vnd.apache.arrow.stream"


def binary_body(description: str, media_type: str = "application/octet-stream") -> dict[str, Any]:
    """``openapi_extra`` for an endpoint that reads a raw body (e.g. little-endian uint64 ids)."""
    return {"requestBody": {"required": True, "description": description, "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}}


def json_text_body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for an endpoint that reads a JSON body its callers may send as text/plain
    (as Neuroglancer does, to avoid a CORS preflight)."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}, "text/plain": {"schema": {"type": "string"}}},
        }
    }


def media_answers(*media_types: str, description: str = "Successful answer") -> dict[int | str, dict[str, Any]]:
    """``responses`` for an endpoint that answers other media types than JSON (Arrow, binary, SWC …)."""
    return {200: {"description": description, "content": {media: {} for media in media_types}}}
