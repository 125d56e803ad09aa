"""Materialization query bodies (table, view, join and live queries): one definition for both ends.

The client builds bodies with :func:`query_body` and :func:`live_query_body`; the server declares
and checks them with the pydantic models :class:`TableQueryBody` (tables and views),
:class:`JoinQueryBody` and :class:`LiveQueryBody`, whose limits are in the OpenAPI document, and
decodes them into :class:`TableQuery`, :class:`JoinQuery` and :class:`LiveQuery`. Bodies are the
ones caveclient sends (reference: cave-server-spec §5.4). A body that does not fit fails with a
``PydanticCustomError`` whose type is one of :data:`ERROR_CODES` and whose message says what to
fix; column-level checks (does the column exist, does the value fit its type) need the table's
layout and happen later, on the server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from opencave.wire.json_encoding import dumps

# (client keyword, body key, key in a client answer's ``attrs["filters"]``, filter kind)
FILTERS: tuple[tuple[str, str, str, str], ...] = (
    ("filter_in_dict", "filter_in_dict", "inclusive", "in"),
    ("filter_out_dict", "filter_notin_dict", "exclusive", "notin"),
    ("filter_equal_dict", "filter_equal_dict", "equal", "equal"),
    ("filter_greater_dict", "filter_greater_dict", "greater", "greater"),
    ("filter_less_dict", "filter_less_dict", "less", "less"),
    ("filter_greater_equal_dict", "filter_greater_equal_dict", "greater_equal", "greater_equal"),
    ("filter_less_equal_dict", "filter_less_equal_dict", "less_equal", "less_equal"),
    ("filter_spatial_dict", "filter_spatial_dict", "spatial", "spatial"),
    ("filter_regex_dict", "filter_regex_dict", "regex", "regex"),
)
# body key -> kind; ``filter_out_dict`` is the name older clients send for ``filter_notin_dict``
FILTER_KINDS: dict[str, str] = {body: kind for _, body, _, kind in FILTERS} | {"filter_out_dict": "notin"}
LIST_KINDS = {"in", "notin"}
SCALAR_KINDS = {"equal", "greater", "less", "greater_equal", "less_equal"}

MAX_ROWS = 2**63 - 1  # limit and offset are 64-bit integers
MAX_NAME = 255  # table, view and column names
MAX_COLUMNS = 1_000  # names in one selection
MAX_FILTER_VALUES = 1_000_000  # values of one in/notin filter (the body-size limit comes first)
MAX_TEXT = 65_536  # one string value or regular expression
LATEST_UNIX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z
RESOLUTION_RANGE = (1e-6, 1e9)  # nm per voxel; rescaling factors between any two stay finite

ERROR_CODES = frozenset(
    {"bad_body", "unknown_body_key", "bad_filter", "bad_bounding_box", "bad_paging", "bad_resolution", "bad_select", "bad_join", "bad_suffixes", "bad_timestamp", "bad_text"}
)


def _invalid(code: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(code, "{message}", {"message": message})


# -- decoded queries ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Filter:
    table: str
    column: str
    kind: str  # in, notin, equal, greater, less, greater_equal, less_equal, spatial, regex
    value: Any


@dataclass
class Paging:
    offset: int | None = None
    limit: int | None = None


@dataclass
class TableQuery:
    filters: list[Filter]
    select_columns: list[str] | None
    paging: Paging
    desired_resolution: tuple[float, float, float] | None


@dataclass
class JoinQuery:
    tables: list[tuple[str, str]]
    filters: list[Filter]
    select_column_map: dict[str, list[str]] | None
    select_columns: list[str] | None  # legacy: each name from the first table that has it
    suffixes: dict[str, str] | None
    paging: Paging
    desired_resolution: tuple[float, float, float] | None
    warnings: list[str] = field(default_factory=list)


@dataclass
class LiveQuery:
    table: str
    timestamp: datetime
    joins: list[tuple[str, str, str, str]]
    filters: list[Filter]
    select_columns: dict[str, list[str]] | None
    suffixes: dict[str, str] | None
    paging: Paging
    desired_resolution: tuple[float, float, float] | None


# -- values ------------------------------------------------------------------------------------
def _text(value: Any, what: str, code: str, limit: int = MAX_TEXT) -> str:
    """A string every layer can hold: bounded, valid Unicode (no lone surrogates), no NUL."""
    if not isinstance(value, str):
        raise _invalid(code, f"{what} must be a string; got {value!r:.80}.")
    if len(value) > limit:
        raise _invalid(code, f"{what} is longer than {limit:,} characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("bad_text", f"{what} must be valid Unicode; it holds a lone surrogate (an unpaired \\ud800-\\udfff escape).") from None
    if "\x00" in value:
        raise _invalid("bad_text", f"{what} must not contain NUL (\\u0000) characters.")
    return value


def _name(value: Any, what: str, code: str) -> str:
    return _text(value, what, code, MAX_NAME)


def parse_timestamp(value: Any, name: str = "timestamp") -> datetime:
    """An ISO 8601 time (naive means UTC) or unix seconds, as an aware UTC datetime."""
    message = f"{name} {value!r:.80} is not a time; send ISO 8601 such as 2025-01-07T10:00:00.000000+00:00 (or unix seconds)."
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not (math.isfinite(value) and 0 <= value <= LATEST_UNIX_TIME):
                raise ValueError
            return datetime.fromtimestamp(float(value), tz=UTC)
        if not isinstance(value, str) or len(value) > 64:
            raise ValueError
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except (TypeError, ValueError, OverflowError):
        raise _invalid("bad_timestamp", message) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _filter_value(where: str, kind: str, value: Any) -> Any:
    if kind in LIST_KINDS:
        if not isinstance(value, list):
            raise _invalid("bad_filter", f"{where} must be a list of values.")
        if len(value) > MAX_FILTER_VALUES:
            raise _invalid("bad_filter", f"{where} holds {len(value):,} values; send at most {MAX_FILTER_VALUES:,}.")
        if any(isinstance(v, (list, dict)) or v is None for v in value):
            raise _invalid("bad_filter", f"{where} must be a list of plain values (numbers, strings or booleans).")
        for v in value:
            if isinstance(v, str):
                _text(v, f"{where} value", "bad_filter")
        return value
    if kind == "spatial":
        try:
            lo, hi = ([float(v) for v in corner] for corner in value)
            if len(lo) != 3 or len(hi) != 3 or not all(math.isfinite(v) for v in lo + hi):
                raise ValueError
        except (TypeError, ValueError):
            raise _invalid("bad_filter", f"{where} must be [[min_x, min_y, min_z], [max_x, max_y, max_z]] (finite numbers).") from None
        if any(a > b for a, b in zip(lo, hi)):
            raise _invalid("bad_bounding_box", f"{where}: min bounds {lo} must be less than max bounds {hi} on every axis.")
        return (tuple(lo), tuple(hi))
    if kind == "regex":
        if not isinstance(value, str):
            raise _invalid("bad_filter", f"{where} must be a regular expression string.")
        return _text(value, where, "bad_filter")
    if isinstance(value, (list, dict)) or value is None:
        raise _invalid("bad_filter", f"{where} must be a single value (use filter_in_dict for lists).")
    if isinstance(value, str):
        _text(value, where, "bad_filter")
    return value


def _filter_map(key: str):
    """The check of one ``filter_*_dict``: ``{table: {column: value}}`` → ``{table: {column: checked value}}``."""
    kind = FILTER_KINDS[key]

    def check(per_table: Any) -> dict[str, dict[str, Any]] | None:
        if per_table is None:
            return None
        if not isinstance(per_table, dict):
            raise _invalid("bad_filter", f"{key} must map table names to {{column: value}} objects.")
        out: dict[str, dict[str, Any]] = {}
        for table, columns in per_table.items():
            _name(table, f"{key}: table name", "bad_filter")
            if columns is None:
                continue
            if not isinstance(columns, dict):
                raise _invalid("bad_filter", f"{key}[{table!r}] must be an object of {{column: value}}.")
            out[table] = {}
            for column, value in columns.items():
                _name(column, f"{key}[{table!r}]: column name", "bad_filter")
                out[table][column] = _filter_value(f"{key}[{table!r}][{column!r}]", kind, value)
        return out

    return check


_SCALAR = {"anyOf": [{"type": "number"}, {"type": "string", "maxLength": MAX_TEXT}, {"type": "boolean"}]}
_VALUE_SCHEMAS: dict[str, dict[str, Any]] = {
    "in": {"type": "array", "items": _SCALAR, "maxItems": MAX_FILTER_VALUES},
    "spatial": {
        "type": "array",
        "items": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
        "minItems": 2,
        "maxItems": 2,
        "description": "[[min_x, min_y, min_z], [max_x, max_y, max_z]] in the table's voxels",
    },
    "regex": {"type": "string", "maxLength": MAX_TEXT, "description": "an RE2 regular expression"},
}


def _filter_field(key: str):
    kind = FILTER_KINDS[key]
    value = _VALUE_SCHEMAS.get("in" if kind in LIST_KINDS else kind, _SCALAR)
    schema = {
        "type": "object",
        "additionalProperties": {"type": "object", "additionalProperties": value},
        "description": f"{kind} filter: {{table: {{column: value}}}}",
    }
    return Annotated[dict[str, dict[str, Any]] | None, BeforeValidator(_filter_map(key)), WithJsonSchema(schema)]


def _paging_value(name: str, low: int):
    def check(value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_ROWS:
            what = f"a {'positive' if low else 'non-negative'} integer of at most {MAX_ROWS}"
            raise _invalid("bad_paging", f"{name} must be {what}, not {value!r:.80}.")
        return value

    schema = {"type": "integer", "format": "int64", "minimum": low, "maximum": MAX_ROWS}
    return Annotated[int | None, BeforeValidator(check), WithJsonSchema(schema)]


def _resolution(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        res = tuple(float(v) for v in value) if isinstance(value, list) else ()
    except (TypeError, ValueError):
        res = ()
    low, high = RESOLUTION_RANGE
    if len(res) != 3 or any(not (low <= r <= high) for r in res):
        raise _invalid("bad_resolution", f"desired_resolution must be three numbers [x, y, z] of nm per voxel between {low:g} and {high:g}, not {value!r:.80}.")
    return res  # type: ignore[return-value]


def _columns(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid("bad_select", f"{what} must be a list of column names.")
    if len(value) > MAX_COLUMNS:
        raise _invalid("bad_select", f"{what} names {len(value):,} columns; name at most {MAX_COLUMNS:,}.")
    return list(dict.fromkeys(_name(v, what, "bad_select") for v in value))


def _column_map(value: Any, what: str) -> dict[str, list[str]] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid("bad_select", f"{what} must map table names to lists of columns.")
    return {_name(t, what, "bad_select"): _columns(cols, f"{what}[{t!r}]") for t, cols in value.items()}


def _suffix_map(value: Any, what: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
        raise _invalid("bad_suffixes", f"{what} must map table names to suffix strings.")
    return {_name(t, what, "bad_suffixes"): _name(s, what, "bad_suffixes") for t, s in value.items()}


_NAMES = {"type": "array", "items": {"type": "string", "maxLength": MAX_NAME}, "maxItems": MAX_COLUMNS}
_NAME_MAP = {"type": "object", "additionalProperties": _NAMES}
_SUFFIX_MAP = {"type": "object", "additionalProperties": {"type": "string", "maxLength": MAX_NAME}}
_RESOLUTION = {
    "type": "array",
    "items": {"type": "number", "minimum": RESOLUTION_RANGE[0], "maximum": RESOLUTION_RANGE[1]},
    "minItems": 3,
    "maxItems": 3,
    "description": "nm per voxel [x, y, z]",
}

Resolution = Annotated[tuple[float, float, float] | None, BeforeValidator(_resolution), WithJsonSchema(_RESOLUTION)]
Columns = Annotated[list[str] | None, BeforeValidator(lambda v: None if v is None else _columns(v, "select_columns")), WithJsonSchema(_NAMES)]
ColumnMap = Annotated[dict[str, list[str]] | None, BeforeValidator(lambda v: _column_map(v, "select_columns")), WithJsonSchema(_NAME_MAP)]


# -- bodies ------------------------------------------------------------------------------------
class _Body(BaseModel):
    """Filters, paging and resolution common to every query body; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    filter_in_dict: _filter_field("filter_in_dict") = None
    filter_notin_dict: _filter_field("filter_notin_dict") = None
    filter_out_dict: _filter_field("filter_out_dict") = None
    filter_equal_dict: _filter_field("filter_equal_dict") = None
    filter_greater_dict: _filter_field("filter_greater_dict") = None
    filter_less_dict: _filter_field("filter_less_dict") = None
    filter_greater_equal_dict: _filter_field("filter_greater_equal_dict") = None
    filter_less_equal_dict: _filter_field("filter_less_equal_dict") = None
    filter_spatial_dict: _filter_field("filter_spatial_dict") = None
    filter_regex_dict: _filter_field("filter_regex_dict") = None
    offset: _paging_value("offset", 0) = None
    limit: _paging_value("limit", 1) = None
    desired_resolution: Resolution = None

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, body: Any) -> Any:
        """Say which keys are wrong (and which are allowed), and name missing required keys."""
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise _invalid("bad_body", "The query body must be a JSON object (send Content-Type: application/json).")
        allowed = set(cls.model_fields)
        unknown = sorted(map(str, set(body) - allowed))
        if unknown:
            raise _invalid("unknown_body_key", f"Unknown key(s) in the query body: {unknown}; allowed keys are {sorted(allowed)}.")
        for name, message in cls.required_keys.items():
            if body.get(name) is None:
                raise _invalid("bad_body", message)
        return body

    required_keys: ClassVar[dict[str, str]] = {}  # key -> message when it is missing

    def filters(self) -> list[Filter]:
        """Every filter, in the order of :data:`FILTER_KINDS`."""
        out = []
        for key, kind in FILTER_KINDS.items():
            for table, columns in (getattr(self, key) or {}).items():
                out.extend(Filter(table, column, kind, value) for column, value in columns.items())
        return out

    def paging(self) -> Paging:
        return Paging(self.offset, self.limit)


class TableQueryBody(_Body):
    """The body of a table or view query: filters keyed by the table's (or view's) name."""

    select_columns: Columns = None

    def decode(self) -> TableQuery:
        return TableQuery(self.filters(), self.select_columns, self.paging(), self.desired_resolution)


JOIN_TABLES = 'tables must be [["table1", "join_column1"], ["table2", "join_column2"]].'


def _join_tables(value: Any) -> list[tuple[str, str]]:
    message = JOIN_TABLES
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(t, list) and len(t) == 2 and all(isinstance(v, str) for v in t) for t in value):
        raise _invalid("bad_join", message)
    if len(value) > 2:
        raise _invalid("bad_join", "Join queries join exactly two tables; send two [table, column] pairs.")
    return [(_name(t, "tables", "bad_join"), _name(c, "tables", "bad_join")) for t, c in value]


_PAIR = {"type": "array", "items": {"type": "string", "maxLength": MAX_NAME}, "minItems": 2, "maxItems": 2}


class JoinQueryBody(_Body):
    """The body of a join of two tables of a version: ``tables`` = [[table, column], [table, column]]."""

    required_keys: ClassVar[dict[str, str]] = {"tables": JOIN_TABLES}

    tables: Annotated[list[tuple[str, str]], BeforeValidator(_join_tables), WithJsonSchema({"type": "array", "items": _PAIR, "minItems": 2, "maxItems": 2})]
    select_column_map: Annotated[dict[str, list[str]] | None, BeforeValidator(lambda v: _column_map(v, "select_column_map")), WithJsonSchema(_NAME_MAP)] = None
    select_columns: Columns = None
    suffix_map: Annotated[dict[str, str] | None, BeforeValidator(lambda v: _suffix_map(v, "suffix_map")), WithJsonSchema(_SUFFIX_MAP)] = None
    suffixes: Annotated[
        list[str] | None,
        BeforeValidator(lambda v: None if v is None else _suffix_list(v)),
        WithJsonSchema({"type": "array", "items": {"type": "string", "maxLength": MAX_NAME}, "maxItems": 2}),
    ] = None

    def suffixes_of_tables(self) -> dict[str, str] | None:
        """``suffix_map``, or the legacy ``suffixes`` list paired with the tables."""
        if self.suffix_map is None and self.suffixes is not None:
            return {table: suffix for (table, _), suffix in zip(self.tables, self.suffixes)}
        return self.suffix_map

    @model_validator(mode="after")
    def _distinct_suffixes(self) -> JoinQueryBody:
        suffixes = self.suffixes_of_tables()
        if suffixes is not None and len(set(suffixes.values())) != len(suffixes):
            raise _invalid("bad_suffixes", f"Suffixes must differ between tables, got {suffixes}.")
        return self

    def decode(self) -> JoinQuery:
        warnings: list[str] = []
        if self.select_columns is not None:
            warnings.append("select_columns is deprecated for join queries; send select_column_map {table: [columns]}.")
        if self.suffix_map is None and self.suffixes is not None:
            warnings.append("suffixes is deprecated for join queries; send suffix_map {table: suffix}.")
        return JoinQuery(
            tables=list(self.tables),
            filters=self.filters(),
            select_column_map=self.select_column_map,
            select_columns=self.select_columns,
            suffixes=self.suffixes_of_tables(),
            paging=self.paging(),
            desired_resolution=self.desired_resolution,
            warnings=warnings,
        )


def _suffix_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 2:
        raise _invalid("bad_suffixes", "suffixes must be a list of strings, one per table.")
    return [_name(v, "suffixes", "bad_suffixes") for v in value]


LIVE_TABLE = "table is required: the name of the table to query."


def _live_table(value: Any) -> str:
    if not value:
        raise _invalid("bad_body", LIVE_TABLE)
    return _name(value, "table", "bad_body")


def _live_joins(value: Any) -> list[tuple[str, str, str, str]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 16 or not all(isinstance(j, list) and len(j) == 4 and all(isinstance(v, str) for v in j) for j in value):
        raise _invalid("bad_join", 'join_tables must be [["table1", "column1", "table2", "column2"], ...].')
    return [tuple(_name(v, "join_tables", "bad_join") for v in join) for join in value]  # type: ignore[misc]


class LiveQueryBody(_Body):
    """The body of a live query (``/api/v3/datastack/{ds}/query``): a table, optionally joined, at ``timestamp``."""

    required_keys: ClassVar[dict[str, str]] = {
        "table": LIVE_TABLE,
        "timestamp": "timestamp is required: the time the answer should hold for.",
    }

    table: Annotated[str, BeforeValidator(_live_table), WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_NAME})]
    timestamp: Annotated[
        datetime,
        BeforeValidator(parse_timestamp),
        WithJsonSchema({"type": "string", "format": "date-time", "description": "ISO 8601 (UTC when no offset is given) or unix seconds"}),
    ]
    join_tables: Annotated[
        list[tuple[str, str, str, str]],
        BeforeValidator(_live_joins),
        WithJsonSchema({"type": "array", "items": {"type": "array", "items": {"type": "string", "maxLength": MAX_NAME}, "minItems": 4, "maxItems": 4}, "maxItems": 1}),
    ] = []
    select_columns: ColumnMap = None
    suffixes: Annotated[dict[str, str] | None, BeforeValidator(lambda v: _suffix_map(v, "suffixes")), WithJsonSchema(_SUFFIX_MAP)] = None

    def decode(self) -> LiveQuery:
        return LiveQuery(
            table=self.table,
            timestamp=self.timestamp,
            joins=list(self.join_tables),
            filters=self.filters(),
            select_columns=self.select_columns,
            suffixes=self.suffixes,
            paging=self.paging(),
            desired_resolution=self.desired_resolution,
        )


# -- building bodies (client) ------------------------------------------------------------------
def _common(filters: dict[str, Any], offset: int | None, limit: int | None, desired_resolution: Any) -> dict[str, Any]:
    """Filters (keyed by client keyword) under their body keys, then paging and resolution."""
    body: dict[str, Any] = {}
    for keyword, key, _, _ in FILTERS:
        if filters.get(keyword) is not None:
            body[key] = filters[keyword]
    if offset is not None:
        body["offset"] = offset
    if limit is not None:
        if limit <= 0:
            raise ValueError(f"limit must be a positive number of rows, got {limit}")
        body["limit"] = limit
    if desired_resolution is not None:
        body["desired_resolution"] = desired_resolution
    return body


def query_body(
    tables: list[Any] | None,
    filters: dict[str, Any],
    select_columns: Any = None,
    suffixes: Any = None,
    offset: int | None = None,
    limit: int | None = None,
    desired_resolution: Any = None,
) -> dict[str, Any]:
    """The body of a table/view query (``tables`` None) or a join (``tables`` = [[table, column], ...]).

    ``filters`` maps client keywords (``filter_out_dict`` …) to ``{table: {column: value}}``;
    a list of columns or suffixes is sent under the legacy keys, a dict under the map keys."""
    body: dict[str, Any] = {} if tables is None else {"tables": tables}
    body.update(_common(filters, offset, limit, desired_resolution))
    if select_columns is not None:
        if isinstance(select_columns, (list, tuple)):
            body["select_columns"] = list(select_columns)
        elif isinstance(select_columns, dict):
            body["select_column_map"] = select_columns
        else:
            raise ValueError("select columns should be a dictionary with tables as keys and values of column names in table (no suffixes)")
    if suffixes is not None:
        if isinstance(suffixes, (list, tuple)):
            body["suffixes"] = list(suffixes)
        elif isinstance(suffixes, dict):
            body["suffix_map"] = suffixes
        else:
            raise ValueError("suffixes should be a dictionary with tables as keys and values as suffixes")
    return body


def live_query_body(
    table: str,
    timestamp: datetime,
    filters: dict[str, Any],
    joins: list[list[str]] | None = None,
    select_columns: dict[str, list[str]] | None = None,
    suffixes: dict[str, str] | None = None,
    offset: int | None = None,
    limit: int | None = None,
    desired_resolution: Any = None,
) -> dict[str, Any]:
    """The body of a server-side live query (``live_live_query``)."""
    body: dict[str, Any] = {"table": table, "timestamp": timestamp}
    if joins is not None:
        body["join_tables"] = joins
    body.update(_common(filters, offset, limit, None))
    if select_columns is not None:
        body["select_columns"] = select_columns
    if suffixes is not None:
        body["suffixes"] = suffixes
    if desired_resolution is not None:
        body["desired_resolution"] = desired_resolution
    return body


def encode(body: dict[str, Any]) -> str:
    """A body as JSON text: numpy ids and arrays as exact integers, datetimes as ISO 8601."""
    return dumps(body)
