"""``QuickRead`` (the token lookup's path to the database), on SQLite and PostgreSQL: its rows equal
SQLAlchemy's, values converted alike; the connections it borrows go back to the pool as they
came (transactions work after it, even after it failed); a connection the server dropped is not
reused."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, bindparam, insert, literal, or_, select, text

from opencave.storage.sql import QuickRead, create_store_engine

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(40), nullable=False),
    Column("seen", DateTime(timezone=True), nullable=True),
)


def _engine(url: str):
    made = create_store_engine(url)
    metadata.create_all(made)
    moment = dt.datetime(2026, 12, 4, 12, 30, 15, 123456, tzinfo=dt.timezone.utc)
    with made.begin() as conn:
        conn.execute(insert(things), [{"id": 1, "name": "a", "seen": moment}, {"id": 2, "name": "b", "seen": None}, {"id": 3, "name": "c", "seen": moment}])
    return made


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path, database_for):
    made = _engine(database_for(request.param) or f"sqlite:///{tmp_path / 'store.db'}")
    yield made
    made.dispose()


@pytest.fixture
def postgres_engine(database_for):
    """Only PostgreSQL: an embedded database has no server to drop a connection."""
    made = _engine(database_for("postgresql"))
    yield made
    made.dispose()


QUERY = select(things.c.id, things.c.name, things.c.seen).where(
    or_(things.c.name == bindparam("wanted"), things.c.name == literal("c"))
).order_by(things.c.id)


def test_rows_equal_sqlalchemys(engine):
    quick = QuickRead(engine, QUERY)
    for wanted in ("a", "b", "zzz"):
        with engine.connect() as conn:
            expected = [tuple(row) for row in conn.execute(QUERY, {"wanted": wanted}).all()]
        assert quick.rows(wanted=wanted) == expected
    seen = quick.rows(wanted="a")[0][2]
    assert isinstance(seen, dt.datetime), "SQLite's text timestamps are converted as SQLAlchemy converts them"


def test_transactions_work_after_it_even_after_a_failure(engine):
    engine.dispose()  # one connection from here on, borrowed by each use in turn
    quick = QuickRead(engine, QUERY)
    broken = QuickRead(engine, select(things.c.id).where(things.c.id == bindparam("n")).where(text("no_such_column = 1")))
    with pytest.raises(Exception):
        broken.rows(n=1)
    assert quick.rows(wanted="a")
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(insert(things).values(id=10, name="rolled back"))
        raise RuntimeError("abandon the transaction")
    assert [row for row in quick.rows(wanted="rolled back") if row[0] == 10] == [], "the write was rolled back, not auto-committed"


def test_a_connection_the_server_dropped_is_not_reused(postgres_engine):
    engine = postgres_engine
    quick = QuickRead(engine, QUERY)
    assert quick.rows(wanted="a")
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    failures = 0
    for _ in range(5):
        try:
            assert [row[1] for row in quick.rows(wanted="a")] == ["a", "c"]
        except Exception:
            failures += 1
    assert failures <= 1, "after the first failure, the dead connection is gone from the pool"
