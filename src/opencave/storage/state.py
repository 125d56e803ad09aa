"""Small key/value server state kept in the live store: the server secret and generation counters.

Generation counters let every server process over one database notice that cached data went
stale: a writer bumps the counter in the same transaction as its change, readers compare.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Generic, TypeVar

from sqlalchemy import BigInteger, Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from opencave.storage.tables import server_state

AUTH_GENERATION = "auth_generation"
INFO_GENERATION = "info_generation"
GRAPH_GENERATION = "graph_generation"  # bumped by every chunkedgraph edit
CATALOG_GENERATION = "catalog_generation"  # annotation tables' metadata and the versions' states
GENERATION_KEYS = (AUTH_GENERATION, INFO_GENERATION, GRAPH_GENERATION, CATALOG_GENERATION)
SECRET_KEY = "secret_key"


@dataclass(frozen=True)
class Generations:
    """A snapshot of the generation counters, read once per request."""

    auth: str = "0"
    info: str = "0"
    graph: str = "0"
    catalog: str = "0"

    @classmethod
    def from_pairs(cls, pairs) -> "Generations":
        values = {key: value for key, value in pairs if key is not None}
        return cls(
            auth=values.get(AUTH_GENERATION, "0"),
            info=values.get(INFO_GENERATION, "0"),
            graph=values.get(GRAPH_GENERATION, "0"),
            catalog=values.get(CATALOG_GENERATION, "0"),
        )


T = TypeVar("T")


class GenerationCache(Generic[T]):
    """Per-process values valid for one generation of a counter: a request passes the
    generation it read with its token, and any write that could change a value bumps the
    counter in its own transaction, so no process answers from a stale value. Values are
    shared between requests: callers must not change them."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._values: dict[tuple, T] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, generation: str | None, compute: Callable[[], T]) -> T:
        """``compute()``'s value for ``key`` at ``generation`` (always computed when None)."""
        if generation is None:
            return compute()
        full = (key, generation)
        try:
            return self._values[full]
        except KeyError:
            pass
        value = compute()  # errors are not kept
        with self._lock:
            if len(self._values) >= self.limit:
                self._values.clear()
            self._values[full] = value
        return value


GENERATIONS_QUERY = select(server_state.c.key, server_state.c.value).where(server_state.c.key.in_(GENERATION_KEYS))


def read_generations(connection: Connection) -> Generations:
    return Generations.from_pairs(connection.execute(GENERATIONS_QUERY).all())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """Stored timestamps are UTC; SQLite hands them back naive."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def get_value(connection: Connection, key: str) -> str | None:
    return connection.execute(select(server_state.c.value).where(server_state.c.key == key)).scalar()


def set_default(connection: Connection, key: str, value: str) -> str:
    """Store ``value`` under ``key`` unless a value exists; return the stored value."""
    dialect = connection.dialect.name
    insert = (postgresql if dialect == "postgresql" else sqlite).insert
    connection.execute(insert(server_state).values(key=key, value=value).on_conflict_do_nothing())
    return get_value(connection, key)  # type: ignore[return-value]


def bump_generation(connection: Connection, key: str = AUTH_GENERATION) -> None:
    """Mark cached data of ``key``'s kind stale for every server process."""
    set_default(connection, key, "0")
    connection.execute(
        update(server_state)
        .where(server_state.c.key == key)
        .values(value=(server_state.c.value.cast(BigInteger()) + 1).cast(server_state.c.value.type))
    )


def ensure_secret_key(connection: Connection) -> str:
    return set_default(connection, SECRET_KEY, secrets.token_hex(32))
