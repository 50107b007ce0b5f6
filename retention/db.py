"""Engines and the few dialect-aware statements the pipeline needs.

SQLite and PostgreSQL both support ``INSERT ... ON CONFLICT``; the helpers here pick
the dialect's insert construct so that callers write one statement for both.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url

__all__ = [
    "empty_table",
    "engine_for",
    "insert_ignore",
    "upsert",
    "dialect_insert",
    "copy_in",
    "insert_rows",
    "planner_settings",
    "refresh_statistics",
]


def engine_for(url: str) -> Engine:
    """An engine for a warehouse or source URL.

    SQLite files get WAL and a busy timeout, so that parallel Airflow tasks and the
    delivery DAG can read while a night writes; their folder is created if missing. A bare
    ``postgresql://`` URL is driven by psycopg2, as ``postgresql+psycopg2://``.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        # A bare postgresql:// means psycopg 3 to SQLAlchemy 2.1; the bulk writes here use
        # psycopg2's execute_values and copy_expert, so the URL names psycopg2 (issue #15).
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            parsed, pool_pre_ping=True, future=True, connect_args=_postgresql_options(parsed)
        )
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, future=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True, connect_args={"timeout": 60})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


#: PostgreSQL settings of the pipeline's sessions, unless the URL's ``options`` or ``PGOPTIONS`` set
#: their own. JIT compiling paid off for none of the night's statements: the segment snapshot at
#: 100k customers spent 0.85 of its 2.05 s compiling (1.19 s without), and an ordinary night's
#: stages after the extract took 8.5-8.7 s without JIT, 9.8-10.7 s with it (issue 15). The
#: planner turns JIT on by cost, and these statements' costs are inflated by row estimates.
#: ``work_mem`` (the default is 4MB) lets a sort of a million customers' rows stay in memory: the
#: snapshot's SELECT at 1M took 15.1 s with its five sorts on disk, 12.3 s in memory. It is
#: what one sort or hash may use; the night runs its statements one at a time.
POSTGRESQL_OPTIONS = "-c jit=off -c work_mem=256MB"


def _postgresql_options(url: URL) -> dict:
    """``connect_args`` with :data:`POSTGRESQL_OPTIONS`, or none where the operator set options."""
    if "options" in url.query or os.environ.get("PGOPTIONS"):
        return {}
    return {"options": POSTGRESQL_OPTIONS}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def dialect_insert(conn: Connection, table: Table) -> Any:
    """The dialect's ``insert`` construct, which knows ``on_conflict_*``."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"warehouse dialect {name!r} is not supported (use SQLite or PostgreSQL)")


def _execute_values(conn: Connection, sql: str, table: Table, rows: Sequence[dict]) -> int:
    """PostgreSQL: psycopg2's ``execute_values``, one round trip per page of rows.

    SQLAlchemy hands ``INSERT ... ON CONFLICT`` batches to psycopg2's plain executemany,
    one round trip per row, which made a million-row load crawl (266 s against 40 s on
    SQLite at 100k customers).
    """
    from psycopg2.extras import execute_values

    names = _names(table, rows)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        execute_values(cursor, sql, [tuple(row.get(n) for n in names) for row in rows], page_size=1000)
        return max(cursor.rowcount, 0)
    finally:
        cursor.close()


def _names(table: Table, rows: Sequence[dict]) -> list[str]:
    """The table's columns the rows carry (an omitted column takes its database default)."""
    return [c.name for c in table.columns if c.name in rows[0]]


def _pg_insert_sql(table: Table, rows: Sequence[dict], tail: str) -> str:
    columns = ", ".join(f'"{name}"' for name in _names(table, rows))
    return f'INSERT INTO "{table.name}" ({columns}) VALUES %s {tail}'


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict], conflict: Iterable[str]) -> int:
    """Insert rows, silently keeping the existing row on a key conflict.

    Returns the number of rows actually inserted. This is what makes the outbox and
    the quarantine safe against re-runs and racing runs: the database decides.
    """
    if not rows:
        return 0
    conflict = list(conflict)
    if conn.dialect.name == "postgresql":
        keys = ", ".join(f'"{k}"' for k in conflict)
        return _execute_values(
            conn, _pg_insert_sql(table, rows, f"ON CONFLICT ({keys}) DO NOTHING"), table, rows
        )
    stmt = dialect_insert(conn, table).on_conflict_do_nothing(index_elements=conflict)
    return max(conn.execute(stmt, list(rows)).rowcount, 0)


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[dict],
    key: str,
    version: str = "updated_at",
    insert_only: Sequence[str] = (),
) -> None:
    """Insert or update rows by ``key``, never replacing a newer version with an older one.

    ``insert_only`` columns are written when a row is inserted and kept as they are on updates.
    """
    if not rows:
        return
    columns = [c.name for c in table.columns if c.name != key and c.name not in insert_only]
    if conn.dialect.name == "postgresql":
        updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns)
        tail = (
            f'ON CONFLICT ("{key}") DO UPDATE SET {updates} '
            f'WHERE EXCLUDED."{version}" >= "{table.name}"."{version}"'
        )
        _execute_values(conn, _pg_insert_sql(table, rows, tail), table, rows)
        return
    stmt = dialect_insert(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[key],
        set_={name: stmt.excluded[name] for name in columns},
        where=stmt.excluded[version] >= table.c[version],
    )
    conn.execute(stmt, list(rows))


def copy_in(cursor: Any, sql: str, buffer: io.StringIO) -> None:
    """``COPY ... FROM STDIN`` through psycopg2 (``copy_expert``) or psycopg 3 (``copy``), whichever
    the URL chose (SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3)."""
    if hasattr(cursor, "copy_expert"):
        cursor.copy_expert(sql, buffer)
        return
    with cursor.copy(sql) as copy:
        copy.write(buffer.getvalue())


def empty_table(conn: Connection, table: Table) -> None:
    """Every row of ``table`` gone, in the caller's transaction (a rollback brings them back).

    PostgreSQL: ``TRUNCATE``, transactional there, which leaves no dead rows for the next insert
    to wade through and vacuum to clean up: the 505k churn scores of a night at 1M customers,
    emptied and written again, 2.7 s with ``DELETE`` against 1.6 s (issue 15). It locks the table
    against readers until the commit: only for a table that no one else reads meanwhile.
    Elsewhere ``DELETE`` (SQLite empties a table without a WHERE in one step anyway).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text(f'truncate table "{table.name}"'))
    else:
        conn.execute(table.delete())


@contextmanager
def planner_settings(conn: Connection, **settings: str) -> Iterator[None]:
    """PostgreSQL: planner settings (``enable_mergejoin="off"``) for the statements inside only,
    as ``SET LOCAL``; afterwards the transaction's earlier values again. Elsewhere nothing.

    For a statement whose row estimates PostgreSQL cannot make (the rows of a CTE joined to
    another CTE's) and where a measurement showed the plan it then picks to be the slow one; the
    caller says which measurement. When the statement fails, the values are left to the rollback
    that follows (a failed transaction takes no more statements).
    """
    if conn.dialect.name != "postgresql" or not settings:
        yield
        return
    earlier = {name: conn.execute(text("select current_setting(:name)"), {"name": name}).scalar_one() for name in settings}

    def apply(values: dict[str, str]) -> None:
        for name, value in values.items():
            conn.execute(text("select set_config(:name, :value, true)"), {"name": name, "value": value})

    apply(settings)
    yield
    apply(earlier)


def insert_rows(conn: Connection, table: Table, names: Sequence[str], rows: Sequence[tuple]) -> int:
    """Insert plain rows of numbers and NULLs (``None``), fast: ``COPY`` on PostgreSQL, one
    ``executemany`` elsewhere. No text values: the CSV here does not quote (see the extract's
    ``_csv`` for rows with text)."""
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)  # None is an empty field: NULL
        buffer.seek(0)
        columns = ", ".join(f'"{name}"' for name in names)
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            copy_in(cursor, f'COPY "{table.name}" ({columns}) FROM STDIN WITH (FORMAT csv)', buffer)
        finally:
            cursor.close()
        return len(rows)
    conn.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in rows])
    return len(rows)


def refresh_statistics(conn: Connection, table: str, written: int, *, vacuum: bool = False) -> bool:
    """PostgreSQL: ``analyze`` a table that just took more than a tenth of its rows (or was never
    analysed); True when it did. Elsewhere nothing. ``vacuum`` (on a connection in autocommit
    mode, outside any transaction): ``vacuum (analyze)`` instead, see below.

    Autovacuum analyses a table some time after a bulk write, often after the night's later
    stages planned their queries with the old statistics (issue 15). At a million customers,
    the first night's thank-you query expected ten A customers in a snapshot it had never seen
    analysed and ran a subquery once per row for hours. ``analyze`` samples 30,000 rows: about
    half a second on a million-row table, within the caller's transaction (which it sees).

    After the first night's bulk load, the next night's readers found 11M order lines whose
    pages nobody had visited since they were written: each first read set their hint bits
    (writing the pages again), no index-only scan was possible, and autovacuum started on them
    in the middle of that night, on the same two cores. At a million customers that first
    ordinary night took 227 s where the one after took 115 s. ``vacuum (analyze)`` does that
    work once, in the night that wrote the rows.
    """
    if conn.dialect.name != "postgresql" or written <= 0:
        return False
    counted = conn.execute(
        text("select reltuples from pg_class where relname = :table"), {"table": table}
    ).scalar()
    if counted is not None and 0 <= written <= 0.1 * counted:
        return False
    conn.execute(text(f'{"vacuum (analyze)" if vacuum else "analyze"} "{table}"'))
    return True
