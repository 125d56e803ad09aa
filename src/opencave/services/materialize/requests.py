"""Parsing and checking materialization query bodies (table, join, view and live queries).

Bodies are what caveclient sends (reference: cave-server-spec §5.4); anything malformed is a
``BadRequest`` whose message says what to fix. Column-level checks (does the column exist, does
the value fit its type) happen later against each table's layout (``planner.check_filters``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from opencave.errors import BadRequest

FILTER_KINDS: dict[str, str] = {
    "filter_in_dict": "in",
    "filter_notin_dict": "notin",
    "filter_out_dict": "notin",  # the name older clients used for the same filter
    "filter_equal_dict": "equal",
    "filter_greater_dict": "greater",
    "filter_less_dict": "less",
    "filter_greater_equal_dict": "greater_equal",
    "filter_less_equal_dict": "less_equal",
    "filter_spatial_dict": "spatial",
    "filter_regex_dict": "regex",
}
LIST_KINDS = {"in", "notin"}
MAX_ROWS = 2**63 - 1  # limit and offset are 64-bit integers
SCALAR_KINDS = {"equal", "greater", "less", "greater_equal", "less_equal"}


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


@dataclass(frozen=True)
class QueryOptions:
    """Query-string switches shared by every query endpoint."""

    return_pyarrow: bool = True
    count: bool = False
    random_sample: int | None = None
    ipc_compress: bool = True
    allow_missing_lookups: bool = False
    allow_invalid_root_ids: bool = False


def _bool(value: str | None, default: bool, name: str) -> bool:
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", "none"):
        return False
    raise BadRequest(f"Query parameter {name}={value!r} must be true or false.", code="bad_parameter")


def parse_options(params: dict[str, str]) -> QueryOptions:
    sample = params.get("random_sample")
    random_sample = None
    if sample not in (None, "", "None"):
        try:
            random_sample = int(sample)
        except ValueError:
            raise BadRequest(f"random_sample={sample!r} must be a positive integer.", code="bad_parameter") from None
        if random_sample <= 0:
            raise BadRequest(f"random_sample={sample!r} must be a positive integer.", code="bad_parameter")
    return QueryOptions(
        return_pyarrow=_bool(params.get("return_pyarrow"), True, "return_pyarrow"),
        count=_bool(params.get("count"), False, "count"),
        random_sample=random_sample,
        ipc_compress=_bool(params.get("ipc_compress"), True, "ipc_compress"),
        allow_missing_lookups=_bool(params.get("allow_missing_lookups"), False, "allow_missing_lookups"),
        allow_invalid_root_ids=_bool(params.get("allow_invalid_root_ids"), False, "allow_invalid_root_ids"),
    )


def _check_keys(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("The query body must be a JSON object.", code="bad_body")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(
            f"Unknown key(s) in the query body: {unknown}; allowed keys are {sorted(allowed)}.",
            code="unknown_body_key",
            data={"unknown": unknown},
        )
    return body


def _filters(body: dict[str, Any]) -> list[Filter]:
    out: list[Filter] = []
    for key, kind in FILTER_KINDS.items():
        per_table = body.get(key)
        if per_table is None:
            continue
        if not isinstance(per_table, dict):
            raise BadRequest(f"{key} must map table names to {{column: value}} objects.", code="bad_filter")
        for table, columns in per_table.items():
            if columns is None:
                continue
            if not isinstance(columns, dict):
                raise BadRequest(f"{key}[{table!r}] must be an object of {{column: value}}.", code="bad_filter")
            for column, value in columns.items():
                out.append(Filter(str(table), str(column), kind, _filter_value(key, table, column, kind, value)))
    return out


def _filter_value(key: str, table: str, column: str, kind: str, value: Any) -> Any:
    where = f"{key}[{table!r}][{column!r}]"
    if kind in LIST_KINDS:
        if not isinstance(value, list):
            raise BadRequest(f"{where} must be a list of values.", code="bad_filter")
        if any(isinstance(v, (list, dict)) or v is None for v in value):
            raise BadRequest(f"{where} must be a list of plain values (numbers, strings or booleans).", code="bad_filter")
        return value
    if kind == "spatial":
        try:
            lo, hi = ([float(v) for v in corner] for corner in value)
            if len(lo) != 3 or len(hi) != 3 or not all(math.isfinite(v) for v in lo + hi):
                raise ValueError
        except (TypeError, ValueError):
            raise BadRequest(f"{where} must be [[min_x, min_y, min_z], [max_x, max_y, max_z]] (finite numbers).", code="bad_filter") from None
        if any(a > b for a, b in zip(lo, hi)):
            raise BadRequest(
                f"{where}: min bounds {lo} must be less than max bounds {hi} on every axis.", code="bad_bounding_box"
            )
        return (tuple(lo), tuple(hi))
    if kind == "regex":
        if not isinstance(value, str):
            raise BadRequest(f"{where} must be a regular expression string.", code="bad_filter")
        return value
    if isinstance(value, (list, dict)) or value is None:
        raise BadRequest(f"{where} must be a single value (use filter_in_dict for lists).", code="bad_filter")
    return value


def _paging(body: dict[str, Any]) -> Paging:
    paging = Paging()
    for name in ("offset", "limit"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ROWS or (name == "limit" and value == 0):
            what = f"a {'positive' if name == 'limit' else 'non-negative'} integer of at most {MAX_ROWS}"
            raise BadRequest(f"{name} must be {what}, not {value!r}.", code="bad_paging")
        setattr(paging, name, value)
    return paging


def _resolution(body: dict[str, Any]) -> tuple[float, float, float] | None:
    value = body.get("desired_resolution")
    if value is None:
        return None
    try:
        res = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        res = ()
    if len(res) != 3 or any(not (r > 0 and math.isfinite(r)) for r in res):
        raise BadRequest(f"desired_resolution must be three positive finite numbers [x, y, z], not {value!r}.", code="bad_resolution")
    return res  # type: ignore[return-value]


def _names(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{what} must be a list of column names.", code="bad_select")
    return list(dict.fromkeys(value))


_COMMON = set(FILTER_KINDS) | {"offset", "limit", "desired_resolution"}


def parse_table_query(body: Any) -> TableQuery:
    body = _check_keys(body or {}, _COMMON | {"select_columns"})
    select = body.get("select_columns")
    return TableQuery(
        filters=_filters(body),
        select_columns=_names(select, "select_columns") if select is not None else None,
        paging=_paging(body),
        desired_resolution=_resolution(body),
    )


def parse_join_query(body: Any) -> JoinQuery:
    body = _check_keys(body, _COMMON | {"tables", "select_columns", "select_column_map", "suffixes", "suffix_map"})
    tables = body.get("tables")
    if (
        not isinstance(tables, list)
        or len(tables) < 2
        or not all(isinstance(t, list) and len(t) == 2 and all(isinstance(v, str) for v in t) for t in tables)
    ):
        raise BadRequest('tables must be [["table1", "join_column1"], ["table2", "join_column2"]].', code="bad_join")
    warnings: list[str] = []
    if len(tables) > 2:
        raise BadRequest("Join queries join exactly two tables; send two [table, column] pairs.", code="bad_join")
    select_map = body.get("select_column_map")
    if select_map is not None:
        if not isinstance(select_map, dict):
            raise BadRequest("select_column_map must map table names to lists of columns.", code="bad_select")
        select_map = {str(t): _names(cols, f"select_column_map[{t!r}]") for t, cols in select_map.items()}
    legacy_select = body.get("select_columns")
    if legacy_select is not None:
        legacy_select = _names(legacy_select, "select_columns")
        warnings.append("select_columns is deprecated for join queries; send select_column_map {table: [columns]}.")
    suffixes = body.get("suffix_map")
    if suffixes is not None and not (isinstance(suffixes, dict) and all(isinstance(v, str) for v in suffixes.values())):
        raise BadRequest("suffix_map must map table names to suffix strings.", code="bad_suffixes")
    if suffixes is None and body.get("suffixes") is not None:
        legacy = body["suffixes"]
        if not isinstance(legacy, list) or not all(isinstance(v, str) for v in legacy):
            raise BadRequest("suffixes must be a list of strings, one per table.", code="bad_suffixes")
        suffixes = {t[0]: s for t, s in zip(tables, legacy)}
        warnings.append("suffixes is deprecated for join queries; send suffix_map {table: suffix}.")
    if suffixes is not None and len(set(suffixes.values())) != len(suffixes):
        raise BadRequest(f"Suffixes must differ between tables, got {suffixes}.", code="bad_suffixes")
    return JoinQuery(
        tables=[(t[0], t[1]) for t in tables],
        filters=_filters(body),
        select_column_map=select_map,
        select_columns=legacy_select,
        suffixes=suffixes,
        paging=_paging(body),
        desired_resolution=_resolution(body),
        warnings=warnings,
    )


def parse_timestamp(value: Any, name: str = "timestamp") -> datetime:
    """An ISO 8601 time (naive means UTC) or posix seconds, as an aware UTC datetime."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"{name} {value!r} is not an ISO 8601 time such as 2025-01-07T10:00:00.000000+00:00.", code="bad_timestamp") from None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def parse_live_query(body: Any) -> LiveQuery:
    body = _check_keys(body, _COMMON | {"table", "timestamp", "join_tables", "select_columns", "suffixes"})
    table = body.get("table")
    if not isinstance(table, str) or not table:
        raise BadRequest("table is required: the name of the table to query.", code="bad_body")
    if body.get("timestamp") is None:
        raise BadRequest("timestamp is required: the time the answer should hold for.", code="bad_body")
    joins = body.get("join_tables") or []
    if not isinstance(joins, list) or not all(
        isinstance(j, list) and len(j) == 4 and all(isinstance(v, str) for v in j) for j in joins
    ):
        raise BadRequest('join_tables must be [["table1", "column1", "table2", "column2"], ...].', code="bad_join")
    select = body.get("select_columns")
    if select is not None:
        if not isinstance(select, dict):
            raise BadRequest("select_columns must map table names to lists of columns.", code="bad_select")
        select = {str(t): _names(cols, f"select_columns[{t!r}]") for t, cols in select.items()}
    suffixes = body.get("suffixes")
    if suffixes is not None and not (isinstance(suffixes, dict) and all(isinstance(v, str) for v in suffixes.values())):
        raise BadRequest("suffixes must map table names to suffix strings.", code="bad_suffixes")
    return LiveQuery(
        table=table,
        timestamp=parse_timestamp(body["timestamp"]),
        joins=[tuple(j) for j in joins],  # type: ignore[misc]
        filters=_filters(body),
        select_columns=select,
        suffixes=suffixes,
        paging=_paging(body),
        desired_resolution=_resolution(body),
    )
