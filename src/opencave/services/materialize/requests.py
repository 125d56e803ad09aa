"""What a materialization query asks besides its body: the query-string switches, and times.

Query bodies (table, join, view and live queries) are defined once, for the client and the
server, in ``opencave.wire.materialize_query``; column-level checks (does the column exist, does
the value fit its type) happen against each table's layout (``planner.check_filters``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import PydanticCustomError

from opencave.errors import BadRequest
from opencave.wire import materialize_query


@dataclass(frozen=True)
class QueryOptions:
    """Query-string switches shared by every query endpoint."""

    return_pyarrow: bool = True
    count: bool = False
    random_sample: int | None = None
    ipc_compress: bool = True
    allow_missing_lookups: bool = False
    allow_invalid_root_ids: bool = False


def parse_timestamp(value: Any, name: str = "timestamp") -> datetime:
    """An ISO 8601 time (naive means UTC) or unix seconds, as an aware UTC datetime (BadRequest otherwise)."""
    try:
        return materialize_query.parse_timestamp(value, name)
    except PydanticCustomError as error:
        raise BadRequest(error.message(), code=error.type) from None
