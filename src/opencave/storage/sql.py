"""Engine factory and schema migrations for the live store.

``sqlite:///path`` (the embedded default, WAL mode) and ``postgresql://…`` (psycopg 3) are both
supported; everything dialect-specific stays in this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sqlalchemy import Connection, Engine, Select, Table, create_engine, event, text
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
        view = engine if is_sqlite(engine) else engine.execution_options(isolation_level="AUTOCOMMIT")
        engine.__dict__["_opencave_reader"] = view
    return view


class QuickRead:
    """One SELECT run often on the request path (a token's lookup), compiled once for the
    engine's dialect and run on a pooled driver connection, rows as tuples.

    SQLAlchemy's per-execution work is several times the query's own on SQLite, and a request
    runs with the processor's caches cold, where that work costs ~0.2 ms. Values are converted
    as SQLAlchemy converts them (its result processors: SQLite's timestamps are text). On
    PostgreSQL the connection reads in autocommit, as ``reader`` does, so the read is one
    round trip.
    """

    def __init__(self, engine: Engine, statement: Select) -> None:
        self.engine = engine
        self._compiled = statement.compile(dialect=engine.dialect)
        self._sql = str(self._compiled)
        self._positions = self._compiled.positiontup if self._compiled.positional else None
        self._autocommit = not is_sqlite(engine)
        processors: list[Callable[[Any], Any] | None] = [
            column.type.dialect_impl(engine.dialect).result_processor(engine.dialect, None) for column in statement.selected_columns
        ]
        self._processors = processors if any(processors) else None

    def rows(self, **values: Any) -> list[tuple]:
        params = self._compiled.construct_params(values)
        arguments: Any = tuple(params[name] for name in self._positions) if self._positions is not None else params
        connection = self.engine.raw_connection()
        try:
            driver, cursor = connection.driver_connection, None
            try:
                if self._autocommit:
                    driver.autocommit = True
                try:
                    cursor = connection.cursor()
                    cursor.execute(self._sql, arguments)
                    found = cursor.fetchall()
                    cursor.close()
                finally:
                    if self._autocommit:
                        driver.autocommit = False  # the pool's other users expect transactions
            except Exception as error:
                # a dead connection, or one left in autocommit, must not go back to the pool
                if self.engine.dialect.is_disconnect(error, driver, cursor) or (self._autocommit and driver.autocommit):
                    connection.invalidate(error)
                raise
        finally:
            connection.close()
        if self._processors is None:
            return [tuple(row) for row in found]
        return [tuple(value if convert is None else convert(value) for value, convert in zip(row, self._processors)) for row in found]


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
