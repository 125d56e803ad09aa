"""Physical SQL tables holding the rows of annotation tables: one SQL table per annotation table.

The annotation service decides which columns a table has (from its schema); this module only
knows column specs, so it stays schema-agnostic. Rows are never removed: deletes and updates
set ``deleted``/``superceded_id``, which is what makes reads at a past time possible.

Everything dialect-specific about moving many rows lives here: bulk inserts use ``executemany``
on SQLite and ``COPY`` on PostgreSQL, and large reads stream from the raw DBAPI cursor (a
server-side cursor on PostgreSQL) instead of building SQLAlchemy row objects.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    func,
    or_,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

SQL_TYPES = {"BIGINT": BigInteger, "INTEGER": Integer, "FLOAT": Float, "BOOLEAN": Boolean, "VARCHAR": Text}
ROW_TABLE_PREFIX = "anno_"
ID_BATCH = 900  # ids per IN (...) list: below SQLite's oldest variable limit (999)

# Row tables are created at run time, so they get their own MetaData, never seen by migrations.
_row_metadata = MetaData()
_tables_lock = threading.Lock()


@dataclass(frozen=True)
class ColumnSpec:
    """One physical column of a row table; ``type`` is a key of ``SQL_TYPES``."""

    name: str
    type: str
    nullable: bool = True
    index: bool = False
    primary_key: bool = False


def new_row_table_name() -> str:
    """A fresh physical table name: unrelated to the annotation table's name, so names never clash."""
    return ROW_TABLE_PREFIX + uuid.uuid4().hex


def row_table(name: str, columns: Sequence[ColumnSpec]) -> Table:
    """The SQLAlchemy ``Table`` of a row table (built once per process; the layout never changes)."""
    with _tables_lock:
        existing = _row_metadata.tables.get(name)
        if existing is not None:
            return existing
        sql_columns = [
            Column(
                c.name,
                SQL_TYPES[c.type],
                primary_key=c.primary_key,
                autoincrement=False,
                nullable=c.nullable and not c.primary_key,
            )
            for c in columns
        ]
        table = Table(name, _row_metadata, *sql_columns)
        for c in columns:
            if c.index:
                Index(f"ix_{name}_{c.name}", table.c[c.name])
        return table


def create_row_table(conn: Connection, table: Table) -> None:
    """Create the table and its indexes (inside the caller's transaction)."""
    table.create(conn)


def drop_indexes(conn: Connection, table: Table) -> None:
    """Drop the secondary indexes (a bulk load into an empty table is several times faster without)."""
    for index in table.indexes:
        index.drop(conn, checkfirst=True)


def create_indexes(conn: Connection, table: Table) -> None:
    for index in table.indexes:
        index.create(conn, checkfirst=True)


def count_rows(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def alive_at(table: Table, t: float) -> ColumnElement[bool]:
    """Rows that existed at ``t``: created by then and not deleted by then."""
    return and_(table.c.created <= t, or_(table.c.deleted.is_(None), table.c.deleted > t))


def changed_between(table: Table, a: float, b: float) -> ColumnElement[bool]:
    """Rows created or deleted in the half-open interval (a, b]."""
    return or_(and_(table.c.created > a, table.c.created <= b), and_(table.c.deleted > a, table.c.deleted <= b))


def id_batches(ids: Sequence[int], size: int = ID_BATCH) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield [int(i) for i in ids[start : start + size]]


def existing_ids(conn: Connection, table: Table, ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for batch in id_batches(sorted(set(int(i) for i in ids))):
        found.update(int(v) for v in conn.execute(select(table.c.id).where(table.c.id.in_(batch))).scalars())
    return found


def rows_by_id(conn: Connection, table: Table, ids: Sequence[int]) -> list[dict]:
    """Rows with the given ids as dicts, ascending by id; unknown ids are skipped."""
    out: list[dict] = []
    for batch in id_batches(sorted(set(int(i) for i in ids))):
        out.extend(dict(r._mapping) for r in conn.execute(select(table).where(table.c.id.in_(batch))))
    out.sort(key=lambda r: r["id"])
    return out


def _placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def bulk_insert(conn: Connection, table: Table, names: Sequence[str], rows: Iterable[tuple]) -> None:
    """Insert many rows given as tuples in ``names`` order, in the caller's transaction.

    The raw DBAPI path: SQLAlchemy's per-row processing would dominate for millions of rows.
    """
    quote = conn.dialect.identifier_preparer.quote
    columns = ", ".join(quote(n) for n in names)
    target = quote(table.name)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn.dialect.name == "postgresql":
            with cursor.copy(f"COPY {target} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(_placeholder(conn) for _ in names)
            cursor.executemany(f"INSERT INTO {target} ({columns}) VALUES ({marks})", rows)
    finally:
        cursor.close()


def insert_arrow(conn: Connection, table: Table, batch: pa.RecordBatch) -> None:
    """Insert an Arrow batch whose columns are named as the table's, in the caller's transaction:
    as CSV text through ``COPY`` on PostgreSQL (no Python object per value), ``executemany``
    elsewhere. Arrow writes NULL as an empty unquoted field and every string quoted, as COPY's CSV
    format reads them, and doubles in their shortest exact form."""
    if conn.dialect.name != "postgresql":
        bulk_insert(conn, table, batch.schema.names, zip(*(column.to_pylist() for column in batch.columns)))
        return
    quote = conn.dialect.identifier_preparer.quote
    text = io.BytesIO()
    pa_csv.write_csv(batch, text, pa_csv.WriteOptions(include_header=False))
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(f"COPY {quote(table.name)} ({', '.join(quote(n) for n in batch.schema.names)}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(text.getbuffer())
    finally:
        cursor.close()


def stream_rows(
    engine: Engine,
    table: Table,
    where: ColumnElement[bool] | None,
    chunk_rows: int,
    columns: Sequence[str] | None = None,
) -> Iterator[list[tuple]]:
    """The matching rows (every column, or ``columns``), ascending by id, in lists of ``chunk_rows``
    tuples. Uses the raw DBAPI cursor (server-side on PostgreSQL, so memory stays bounded).
    """
    query = select(*(table.c[name] for name in columns)) if columns else select(table)
    if where is not None:
        query = query.where(where)
    query = query.order_by(table.c.id)
    with engine.connect() as conn:
        sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        raw = conn.connection.dbapi_connection
        if conn.dialect.name == "postgresql":
            cursor = raw.cursor(name=f"rows_{uuid.uuid4().hex[:12]}", binary=True)  # type: ignore[union-attr]
            cursor.itersize = chunk_rows
        else:
            cursor = raw.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql)
            while True:
                rows = cursor.fetchmany(chunk_rows)
                if not rows:
                    break
                yield rows
        finally:
            cursor.close()
