"""Engine factory and schema migrations for the live store.

``sqlite:///path`` (the embedded default, WAL mode) and ``postgresql://…`` (psycopg 3) are both
supported; everything dialect-specific stays in this module.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x6F70656E63617665  # "opencave"


def normalise_database_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain ``postgresql://`` URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def create_store_engine(url: str) -> Engine:
    """An engine for the live store, tuned for its dialect."""
    url = normalise_database_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=20,
            max_overflow=20,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it would add a round trip to every request; recycling handles stale connections.
    return create_engine(url, pool_size=10, max_overflow=20, pool_recycle=1800)


def reader(engine: Engine) -> Engine:
    """The same pool in autocommit mode, for single-statement reads on the request path.

    Without it each read costs three round trips on PostgreSQL (BEGIN, the query, ROLLBACK).
    SQLite's driver begins no transaction for a SELECT, so there the engine itself reads in
    autocommit; switching the isolation level on every checkout would cost more than the read
    (~35 µs: a PRAGMA each way). The view is made once per engine and kept on it (making one
    costs ~0.2 ms, and a request reads several times).
    """
    view = engine.__dict__.get("_opencave_reader")
    if view is None:
        view = engine if engine.dialect.name == "sqlite" else engine.execution_options(isolation_level="AUTOCOMMIT")
        engine.__dict__["_opencave_reader"] = view
    return view


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest schema (alembic migrations, idempotent)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # several servers may start at once
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def insert_ignoring_duplicates(connection: Connection, table: Table, rows: list[dict]) -> None:
    """Insert rows, skipping those whose primary key exists (another process got there first)."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    connection.execute(insert(table).on_conflict_do_nothing(), rows)
