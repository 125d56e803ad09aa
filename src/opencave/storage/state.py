"""Small key/value server state kept in the live store: the server secret and generation counters.

Generation counters let every server process over one database notice that cached data went
stale: a writer bumps the counter in the same transaction as its change, readers compare.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import BigInteger, Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from opencave.storage.tables import server_state

AUTH_GENERATION = "auth_generation"
INFO_GENERATION = "info_generation"
GRAPH_GENERATION = "graph_generation"  # bumped by every chunkedgraph edit
GENERATION_KEYS = (AUTH_GENERATION, INFO_GENERATION, GRAPH_GENERATION)
SECRET_KEY = "secret_key"


@dataclass(frozen=True)
class Generations:
    """A snapshot of the generation counters, read once per request."""

    auth: str = "0"
    info: str = "0"
    graph: str = "0"

    @classmethod
    def from_pairs(cls, pairs) -> "Generations":
        values = {key: value for key, value in pairs if key is not None}
        return cls(
            auth=values.get(AUTH_GENERATION, "0"), info=values.get(INFO_GENERATION, "0"), graph=values.get(GRAPH_GENERATION, "0")
        )


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
