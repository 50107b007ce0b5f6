"""Incremental extract from the shop database into the warehouse's staging tables.

For each source table, in parent-before-child order, the rows whose ``updated_at``
falls in ``[lower, night.window_end)`` are streamed in chunks, checked, and upserted
into staging; bad rows go to the quarantine with their rule and reason. ``lower`` is
the earlier of the stored watermark and the night's window start, so that a missed
night is caught up and a re-run re-reads its own window (upserts make that
harmless). With no watermark yet, or in full-refresh mode, everything up to the
window end is read.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from psycopg2.errors import UniqueViolation
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    any_,
    bindparam,
    func,
    select,
    text,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import NullType

from retention import schema, source
from retention.db import copy_in, insert_ignore, refresh_statistics, upsert
from retention.erasure import Tombstones, normal_id
from retention.night import Night
from retention.progress import Progress
from retention.quality import Violation, check_row, prepare_row
from retention.settings import LANGUAGES, Settings

__all__ = ["extract", "ExtractResult", "TableResult"]

log = logging.getLogger(__name__)


@dataclass
class TableResult:
    """What one table's extract did in one night."""

    table: str
    read: int = 0
    loaded: int = 0
    recovered: int = 0  # rows held back on an earlier night for a missing parent, loaded now
    skipped_erased: int = 0  # rows of forgotten people (retention.erasure): read, never loaded or held
    lower: dt.datetime | None = None  # rows updated from here (None: from the beginning)
    quarantined: Counter = field(default_factory=Counter)

    @property
    def bad(self) -> int:
        return sum(self.quarantined.values())


@dataclass
class ExtractResult:
    tables: dict[str, TableResult]

    def as_counts(self) -> dict:
        """The run-log and report shape: rows loaded per table, quarantined per rule and per table."""
        by_rule: Counter = Counter()
        for result in self.tables.values():
            by_rule.update(result.quarantined)
        return {
            "rows": {name: r.loaded for name, r in self.tables.items()},
            "recovered": {name: r.recovered for name, r in self.tables.items() if r.recovered},
            "skipped_erased": {name: r.skipped_erased for name, r in self.tables.items() if r.skipped_erased},
            "read": {name: r.read for name, r in self.tables.items()},
            "lower_bounds": {
                name: r.lower.isoformat() if r.lower else None for name, r in self.tables.items()
            },
            "quarantined": dict(sorted(by_rule.items())),
            "quarantined_by_table": {name: dict(r.quarantined) for name, r in self.tables.items()},
        }


@dataclass
class _Chunk:
    """Rows of one chunk, sorted into good (typed, raw) and bad (raw, violation)."""

    good: list[tuple[dict, dict]] = field(default_factory=list)
    bad: list[tuple[dict, Violation]] = field(default_factory=list)
    #: order lines: each known order's customer, read with the reference check (whose facts change)
    order_customers: dict = field(default_factory=dict)


@dataclass
class _Copies:
    """Numbers identical copies of a bad row within one read of a table: 1, 2, ...

    Rows arrive sorted by key, so copies are neighbours; only the current key's copies
    are remembered from one chunk to the next (see :meth:`keep_only`).
    """

    seen: Counter = field(default_factory=Counter)

    def number(self, source_key: str, rule: str, row_hash: str) -> int:
        self.seen[source_key, rule, row_hash] += 1
        return self.seen[source_key, rule, row_hash]

    def keep_only(self, source_key: str) -> None:
        self.seen = Counter({k: n for k, n in self.seen.items() if k[0] == source_key})


def extract(
    source_engine: Engine,
    warehouse: Engine,
    night: Night,
    run_id: str,
    settings: Settings,
    *,
    full_refresh: bool = False,
    earlier_lower: dict[str, str | None] | None = None,
) -> ExtractResult:
    """Extract every source table for ``night``; see the module docs for the window.

    ``earlier_lower`` holds the lower bounds an earlier run of the same night used (ISO
    text, ``None`` for "from the beginning"): a re-run reads at least that window again,
    so that it sees, and reports, what the night's first run saw.
    """
    results = {}
    tombstones = Tombstones.load(warehouse)  # erasure: the forgotten stay out (retention.erasure)
    for name in source.SOURCE_TABLES:
        lower = _lower_bound(warehouse, name, night, full_refresh)
        if earlier_lower and name in earlier_lower:
            earlier = earlier_lower[name]
            lower = (
                None if earlier is None or lower is None else min(lower, dt.datetime.fromisoformat(earlier))
            )
        results[name] = _extract_table(
            source_engine, warehouse, name, night, run_id, settings, lower, tombstones
        )
    _refresh_statistics(warehouse, results, night)
    return ExtractResult(results)


def _refresh_statistics(warehouse: Engine, results: dict[str, TableResult], night: Night) -> None:
    """PostgreSQL: ``vacuum (analyze)`` a staging table that tonight's load changed by more than a
    tenth; ``analyze`` the changed customers every night that has some.

    Measured at 100k customers, the changed customers' order lines were read by scanning all 1M
    of them (0.57 s) where the index serves them, until autovacuum came by (issue #15); at 1M the
    night after the first load paid for the load's first reads (:func:`retention.db.refresh_statistics`).
    An ordinary night's 1 % leaves the staging tables as they are.

    Every later stage of a night takes its scope from ``changed_customers`` for the night, a value
    the table's statistics have never seen. Unanalysed after the first night at 1M, PostgreSQL
    expected 5,663 of the million and read the facts' 4.2M orders and 10.6M lines one index lookup
    at a time (the facts query 82.5 s; 62.3 s analysed, same warehouse). Analysed only then, the
    next night's value was unknown to the statistics (the first night's was all of them): estimated
    at one row, and the facts of 1,373 customers at 100k took 6.8 s instead of 0.2 s. So every
    night: sampling 30,000 rows, well under a second at any size. Vacuum runs outside a transaction.
    """
    if warehouse.dialect.name != "postgresql":
        return
    with warehouse.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        changed = schema.changed_customers
        tonight = conn.execute(
            select(func.count()).select_from(changed).where(changed.c.night == night.date)
        ).scalar_one()
        if tonight:
            started = time.monotonic()
            conn.execute(text(f"analyze {changed.name}"))
            log.info("%s: analysed (%d tonight) in %.2f s", changed.name, tonight, time.monotonic() - started)
        for name, result in results.items():
            table = schema.STAGING[name].name
            started = time.monotonic()
            if refresh_statistics(conn, table, result.loaded + result.recovered, vacuum=True):
                log.info(
                    "%s: vacuumed and analysed after %d rows in %.1f s",
                    table,
                    result.loaded + result.recovered,
                    time.monotonic() - started,
                )


def _lower_bound(warehouse: Engine, name: str, night: Night, full_refresh: bool) -> dt.datetime | None:
    if full_refresh:
        return None
    with warehouse.connect() as conn:
        mark = conn.execute(
            select(schema.extract_watermark.c.watermark).where(
                schema.extract_watermark.c.source_table == name
            )
        ).scalar()
    if mark is None:
        return None
    return min(mark, night.window_start_naive)


def _raw_select(table: Table) -> Select:
    """Every column as the source database holds it: no type conversion while fetching.

    SQLAlchemy's SQLite ``DateTime`` and ``Numeric`` processors raise (or round) on a
    value they do not expect, failing the whole fetch; ``quality.prepare_row`` converts
    each row instead, and quarantines the one that does not convert.
    """
    return select(*(type_coerce(c, NullType()).label(c.name) for c in table.columns))


def _source_rows(
    source_engine: Engine, name: str, lower: dt.datetime | None, upper: dt.datetime, size: int
) -> Iterator[list[dict]]:
    table: Table = source.metadata.tables[name]
    key = table.c[schema.STAGING_KEYS[name]]
    query = _raw_select(table).where(table.c.updated_at < upper)
    if lower is not None:
        query = query.where(table.c.updated_at >= lower)
    # Newest copy first within a key: duplicates are adjacent and the first one wins.
    query = query.order_by(key, table.c.updated_at.desc())
    with source_engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=size).execute(query)
        names = tuple(result.keys())
        # Plain tuples zipped with the names: a RowMapping per row and dict() of it cost twice as
        # much (1.06 s against 0.62 s for 219k order lines).
        for partition in result.partitions(size):
            yield [dict(zip(names, row, strict=True)) for row in partition]


def _count_source_rows(
    source_engine: Engine, name: str, lower: dt.datetime | None, upper: dt.datetime
) -> int:
    """How many rows the window holds (for the progress lines; the read itself streams)."""
    table: Table = source.metadata.tables[name]
    query = select(func.count()).select_from(table).where(table.c.updated_at < upper)
    if lower is not None:
        query = query.where(table.c.updated_at >= lower)
    with source_engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _extract_table(
    source_engine: Engine,
    warehouse: Engine,
    name: str,
    night: Night,
    run_id: str,
    settings: Settings,
    lower: dt.datetime | None,
    tombstones: Tombstones,
) -> TableResult:
    result = TableResult(name, lower=lower)
    upper = night.window_end_naive
    log.info("extract %s: rows updated in [%s, %s) UTC", name, lower or "the beginning", upper)
    key = schema.STAGING_KEYS[name]
    previous_key: object = None
    copies = _Copies()
    progress = Progress(f"extract {name}", _count_source_rows(source_engine, name, lower, upper), logger=log)
    # Only the COPY path can use it (see _copy_into_empty); elsewhere a first load upserts.
    copying = warehouse.dialect.name == "postgresql" and COPY_ON_POSTGRESQL
    into_empty = lower is None and copying and _is_empty(warehouse, name)
    for rows in _source_rows(source_engine, name, lower, upper, settings.chunk_size):
        chunk = _Chunk()
        for row in _without_erased(name, rows, tombstones, result):
            previous_key = _sort_row(name, key, row, previous_key, upper, chunk)
        with warehouse.begin() as conn:
            _check_references(conn, name, chunk)
            result.skipped_erased += _drop_erased_lines(source_engine, name, chunk, tombstones)
            _write(conn, name, chunk, night, run_id, settings, copies, lower is None, into_empty)
        copies.keep_only(_key_text(rows[-1].get(key)))
        result.read += len(rows)
        result.loaded += len(chunk.good)
        result.quarantined.update(v.rule for _, v in chunk.bad)
        progress.advance(len(rows))
    progress.finish()
    log.info(
        "extract %s: %d rows read, %d loaded, %d quarantined", name, result.read, result.loaded, result.bad
    )
    result.recovered = _retry_orphans(source_engine, warehouse, name, night, run_id, settings, tombstones)
    _advance_watermark(warehouse, name, night)
    return result


# --- erasure: rows of forgotten people are skipped, never loaded nor quarantined ----------------------


def _without_erased(name: str, rows: list[dict], tombstones: Tombstones, result: TableResult) -> list[dict]:
    """The rows that are not a forgotten person's (a customer by id or address, their orders)."""
    if not tombstones:
        return rows
    kept = [row for row in rows if not tombstones.erased_row(name, row)]
    result.skipped_erased += len(rows) - len(kept)
    return kept


def _drop_erased_lines(source_engine: Engine, name: str, chunk: _Chunk, tombstones: Tombstones) -> int:
    """Drop the held-back order lines whose order is a forgotten person's.

    An order line names no customer, so the orders of the lines held back (whatever the rule:
    a forgotten person's order is not in staging, and a bad line of it must not reach the
    quarantine either) are looked up in the shop. Good lines have their order in staging, so
    none of them can be a forgotten person's; a night without bad lines looks up nothing.
    """
    if name != "order_items" or not tombstones or not chunk.bad:
        return 0
    with source_engine.connect() as conn:
        erased = tombstones.erased_orders(source.orders, conn, [raw.get("order_id") for raw, _ in chunk.bad])
    before = len(chunk.bad)
    chunk.bad = [(raw, v) for raw, v in chunk.bad if normal_id(raw.get("order_id")) not in erased]
    return before - len(chunk.bad)


def _retry_orphans(
    source_engine: Engine,
    warehouse: Engine,
    name: str,
    night: Night,
    run_id: str,
    settings: Settings,
    tombstones: Tombstones,
) -> int:
    """Load rows held back earlier because their parent was missing, if the parent has arrived.

    A parent can arrive after its child (a product edited today, ordered yesterday): the
    child was quarantined as ``unknown_product`` and its ``updated_at`` will not bring it
    back. So every night re-reads those children from the source, checks them again, and
    marks their quarantine rows resolved when they load.
    """
    rules = [rule for _, _, rule in _REFERENCES.get(name, [])]
    if not rules:
        return 0
    q = schema.quarantine
    with warehouse.connect() as conn:
        keys = (
            conn.execute(
                select(q.c.source_key)
                .where(q.c.source_table == name, q.c.rule.in_(rules), q.c.resolved_night.is_(None))
                .distinct()
            )
            .scalars()
            .all()
        )
    table: Table = source.metadata.tables[name]
    key = schema.STAGING_KEYS[name]
    recovered = 0
    ids = [int(k) for k in keys if k.lstrip("-").isdigit() and -(2**63) <= int(k) < 2**63]
    for start in range(0, len(ids), settings.chunk_size):
        with source_engine.connect() as conn:
            rows = (
                conn.execute(
                    _raw_select(table)
                    .where(
                        table.c[key].in_(ids[start : start + settings.chunk_size]),
                        table.c.updated_at < night.window_end_naive,
                    )
                    .order_by(table.c[key], table.c.updated_at.desc())
                )
                .mappings()
                .all()
            )
        chunk, previous = _Chunk(), None
        for row in rows:
            if tombstones.erased_row(name, dict(row)):  # erasure: a forgotten person's row stays out
                continue
            previous = _sort_row(name, key, dict(row), previous, night.window_end_naive, chunk)
        with warehouse.begin() as conn:
            _check_references(conn, name, chunk)
            # Rows still held back are in the quarantine already, from the night that first read them.
            chunk.bad = []
            _write(conn, name, chunk, night, run_id, settings, _Copies())
            loaded = [str(typed[key]) for typed, _ in chunk.good]
            if loaded:
                conn.execute(
                    q.update()
                    .where(q.c.source_table == name, q.c.source_key.in_(loaded), q.c.rule.in_(rules))
                    .values(resolved_night=night.date)
                )
        recovered += len(chunk.good)
    if recovered:
        log.info("extract %s: %d rows held back for a missing parent loaded now", name, recovered)
    return recovered


def _sort_row(
    name: str, key: str, raw: dict, previous_key: object, upper: dt.datetime, chunk: _Chunk
) -> object:
    """Put one row in the good or bad pile; returns its key for the duplicate check.

    A row whose values do not convert to the warehouse's types is bad whatever its key;
    among the others, the first copy of a key (the newest) is the one that counts.
    """
    try:
        row = prepare_row(name, raw)
    except Violation as violation:
        chunk.bad.append((raw, violation))
        return previous_key
    if row[key] is not None and row[key] == previous_key:
        violation = Violation(
            "duplicate_key", f"{key} {row[key]} appears more than once in {name}; a newer copy was kept"
        )
        chunk.bad.append((raw, violation))
        return previous_key
    violation = check_row(name, row, upper)
    if violation is None and row[key] is None:
        violation = Violation("missing_value", f"{key} is empty")
    if violation is None:
        chunk.good.append((row, raw))
    else:
        chunk.bad.append((raw, violation))
    return row[key]


_REFERENCES = {
    "orders": [("customer_id", "customers", "unknown_customer")],
    "order_items": [("order_id", "orders", "unknown_order"), ("product_id", "products", "unknown_product")],
}


def _check_references(conn: Connection, name: str, chunk: _Chunk) -> None:
    """Move rows whose parent is not in staging to the bad pile (one query per reference)."""
    for column, parent, rule in _REFERENCES.get(name, []):
        ids = {row[column] for row, _ in chunk.good}
        if not ids:
            continue
        parent_table = schema.STAGING[parent]
        parent_key = parent_table.c[schema.STAGING_KEYS[parent]]
        if parent == "orders":  # the lines' customers too, for _record_changed_customers
            rows = conn.execute(
                select(parent_key, parent_table.c.customer_id).where(_among(conn, parent_key, ids))
            )
            chunk.order_customers = dict(rows.all())
            known = set(chunk.order_customers)
        else:
            known = set(conn.execute(select(parent_key).where(_among(conn, parent_key, ids))).scalars())
        keep = []
        for row, raw in chunk.good:
            if row[column] in known:
                keep.append((row, raw))
            else:
                detail = f"{column} {row[column]} is not in {parent} (unknown or quarantined)"
                chunk.bad.append((raw, Violation(rule, detail)))
        chunk.good = keep


def _among(conn: Connection, column: ColumnElement, ids: set) -> ColumnElement:
    """``column IN ids``; on PostgreSQL as ``= ANY(array)``: one parameter instead of thousands."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam("ids", list(ids), type_=ARRAY(BigInteger)))
    return column.in_(ids)


def _write(
    conn: Connection,
    name: str,
    chunk: _Chunk,
    night: Night,
    run_id: str,
    settings: Settings,
    copies: _Copies,
    initial: bool = False,
    into_empty: bool = False,
) -> None:
    """Stage the good rows, quarantine the bad; ``initial``: a read from the beginning (full load);
    ``into_empty``: the staging table was empty when this read began (see :func:`_copy_into_empty`)."""
    table = schema.STAGING[name]
    key = schema.STAGING_KEYS[name]
    staged = [_clean(name, row, night, settings, initial) for row, _ in chunk.good]
    insert_only = ("arrived_night",) if name == "orders" else ()
    if conn.dialect.name == "postgresql" and staged and COPY_ON_POSTGRESQL:
        if not (into_empty and _copy_into_empty(conn, name, staged)):
            _copy_upsert(conn, name, staged, insert_only)
    else:
        upsert(conn, table, staged, key, insert_only=insert_only)
    _record_changed_customers(conn, name, staged, night, chunk.order_customers)
    insert_ignore(
        conn,
        schema.quarantine,
        [_quarantine_row(name, key, raw, v, night, run_id, copies) for raw, v in chunk.bad],
        ("night", "source_table", "source_key", "rule", "row_hash", "occurrence"),
    )


# --- PostgreSQL: COPY into a landing table, then one set-based upsert --------------------------------

#: Stage PostgreSQL rows through COPY (True) or ``retention.db.upsert``'s ``execute_values`` (False,
#: the path before issue 15, kept for ``python -m bench.extract_ab`` to measure against).
COPY_ON_POSTGRESQL = True


def _csv_field(value: object) -> str:
    """One value in PostgreSQL's CSV: NULL is an unquoted empty field, every text is quoted.

    Quoting all text keeps an empty string apart from NULL and carries commas, quotes and
    line breaks as they are; the values come from ``quality.prepare_row`` (no NUL, no bytes).
    """
    if value is None:
        return ""
    if type(value) is str:
        return '"' + value.replace('"', '""') + '"' if value else '""'
    if value is True or value is False:
        return "t" if value else "f"
    return str(value)  # int, Decimal, naive datetime and date: text PostgreSQL reads back exactly


def _csv(rows: list[dict], names: list[str]) -> io.StringIO:
    """The rows as CSV for COPY. The csv module writes None and "" alike (an unquoted empty
    field, NULL to COPY), so a chunk holding an empty text goes through :func:`_csv_field`."""
    values = [tuple(map(row.__getitem__, names)) for row in rows]
    buffer = io.StringIO()
    if any("" in row for row in values):
        buffer.writelines(",".join(map(_csv_field, row)) + "\n" for row in values)
    else:  # True/False as "True"/"False", which PostgreSQL's boolean input takes
        csv.writer(buffer, lineterminator="\n").writerows(values)
    buffer.seek(0)
    return buffer


def _is_empty(warehouse: Engine, name: str) -> bool:
    """Whether the staging table holds no row (a first load: nothing to upsert against)."""
    table = schema.STAGING[name]
    with warehouse.connect() as conn:
        return conn.execute(select(table.c[schema.STAGING_KEYS[name]]).limit(1)).first() is None


def _copy_into_empty(conn: Connection, name: str, rows: list[dict]) -> bool:
    """A first load: ``COPY`` the rows straight into the staging table; False if a key was taken.

    The rows arrive sorted by key and every older copy of a key is quarantined (``_sort_row``,
    across chunks too), so a read that began on an empty table meets no staged key and needs
    neither the landing table nor ``ON CONFLICT``: with the plain-tuple fetch of
    :func:`_source_rows`, a first extract of 20k customers (327k rows) took 8.4-8.7 s instead of
    10.0-10.5 s. Should a key be there after all, the savepoint undoes the COPY and the caller
    upserts the chunk as on any other night.
    """
    table = schema.STAGING[name]
    savepoint = conn.begin_nested()
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        _copy_csv(cursor, table.name, _staged_names(table, rows), rows)
    except UniqueViolation:
        savepoint.rollback()
        log.warning("extract %s: a key of a first load was staged already; upserting this chunk", name)
        return False
    finally:
        cursor.close()
    savepoint.commit()
    return True


def _staged_names(table: Table, rows: list[dict]) -> list[str]:
    """The staging columns the rows carry, in the table's order."""
    return [c.name for c in table.columns if c.name in rows[0]]


def _copy_csv(cursor: Any, target: str, names: list[str], rows: list[dict]) -> None:
    """``COPY`` the rows' ``names`` columns into ``target`` as CSV (:func:`_csv`)."""
    columns = ", ".join(f'"{n}"' for n in names)
    copy_in(cursor, f'COPY "{target}" ({columns}) FROM STDIN WITH (FORMAT csv)', _csv(rows, names))


def _landing(cursor: Any, table: Table) -> str:
    """This session's landing table for ``table`` (created once; emptied at every commit)."""
    landing = f"landing_{table.name}"
    cursor.execute(
        f'CREATE TEMPORARY TABLE IF NOT EXISTS "{landing}" (LIKE "{table.name}") ON COMMIT DELETE ROWS'
    )
    return landing


def _copy_upsert(conn: Connection, name: str, rows: list[dict], insert_only: tuple) -> None:
    """Stage ``rows`` through ``COPY ... FROM STDIN`` and one ``INSERT ... SELECT ... ON CONFLICT``.

    Same outcome as :func:`retention.db.upsert` (a newer staging row is never replaced by an
    older one; ``insert_only`` columns keep their first value). The rows of one
    chunk have distinct keys (``_sort_row`` quarantines the older copies of a key), which
    ``ON CONFLICT DO UPDATE`` requires. ``execute_values`` sent every row as literals of an
    ``INSERT ... VALUES`` statement; with COPY and the reference checks' ``= ANY(array)`` the
    first night's extract at 100k customers took 104.6 s before, 65.7 s after (see the README).
    """
    table, key = schema.STAGING[name], schema.STAGING_KEYS[name]
    names = _staged_names(table, rows)
    columns = ", ".join(f'"{n}"' for n in names)
    updates = ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in names if n != key and n not in insert_only)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        landing = _landing(cursor, table)
        _copy_csv(cursor, landing, names, rows)
        cursor.execute(
            f'INSERT INTO "{table.name}" ({columns}) SELECT {columns} FROM "{landing}" '
            f'ON CONFLICT ("{key}") DO UPDATE SET {updates} '
            f'WHERE EXCLUDED."updated_at" >= "{table.name}"."updated_at"'
        )
        cursor.execute(f'TRUNCATE "{landing}"')  # a second chunk in the same transaction starts empty
    finally:
        cursor.close()


def _clean(name: str, row: dict, night: Night, settings: Settings, initial: bool = False) -> dict:
    """Staging only tidies: trims text, fills safe defaults. Business logic starts in the marts."""
    out = dict(row)  # prepare_row made it: exactly the staging columns
    out["loaded_night"] = night.date
    if name == "customers":
        out["email"] = row["email"].strip()
        out["first_name"] = row["first_name"].strip()
        out["last_name"] = (row.get("last_name") or "").strip() or None
        language = (row.get("language") or "").strip().lower()
        out["language"] = language if language in LANGUAGES else settings.default_language
        out["time_zone"] = row.get("time_zone") or settings.time_zone
        out["marketing_consent"] = bool(row.get("marketing_consent"))
    elif name == "products":
        out["name"] = row["name"].strip()
        out["currency"] = row.get("currency") or settings.currency
    elif name == "orders":
        out["currency"] = row.get("currency") or settings.currency
        # The night the order arrived, kept from its first extract on (upsert's insert_only).
        # A full load's history (rows changed before tonight's window) was there all along:
        # unknown (NULL), which the follow-ups read as "arrived in time".
        history = initial and row["updated_at"] < night.window_start_naive
        out["arrived_night"] = None if history else night.date
    elif name == "order_items":
        out["returned_quantity"] = row.get("returned_quantity") or 0
    return out


#: Longest text of a raw value kept in the quarantine (the row hash covers all of it).
RAW_TEXT_LIMIT = 2000


def _key_text(value: object) -> str:
    """The quarantine's ``source_key`` (64 characters): the id, or the repr of a value that is none."""
    if type(value) is int or value is None:
        return str(value)
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def _json_value(value: object) -> object:
    """A raw source value as JSON can hold it, readable: bytes as their repr, infinity as text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate cannot be stored as UTF-8
            return value.encode("utf-8", "backslashreplace").decode()
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return repr(value)


def _shortened(value: object) -> object:
    if isinstance(value, str) and len(value) > RAW_TEXT_LIMIT:
        return f"{value[:RAW_TEXT_LIMIT]}... ({len(value)} characters)"
    return value


def _quarantine_row(
    name: str, key: str, raw: dict, violation: Violation, night: Night, run_id: str, copies: _Copies
) -> dict:
    values = {column: _json_value(value) for column, value in raw.items()}
    text = json.dumps(values, sort_keys=True, ensure_ascii=False, allow_nan=False)
    row_hash = hashlib.sha256(text.encode()).hexdigest()
    if any(isinstance(v, str) and len(v) > RAW_TEXT_LIMIT for v in values.values()):
        shortened = {column: _shortened(value) for column, value in values.items()}
        text = json.dumps(shortened, sort_keys=True, ensure_ascii=False)
    source_key = _key_text(raw.get(key))
    return {
        "source_table": name,
        "source_key": source_key,
        "rule": violation.rule,
        "detail": violation.detail,
        "row_hash": row_hash,
        "raw": text,
        "night": night.date,
        "run_id": run_id,
        "occurrence": copies.number(source_key, violation.rule, row_hash),
    }


def _record_changed_customers(
    conn: Connection, name: str, staged: list[dict], night: Night, order_customers: dict | None = None
) -> None:
    """Remember whose facts this night must recompute.

    An order line's customer is its order's: ``order_customers`` holds those the reference
    check read (every staged line's order is among them); any other is looked up.
    """
    if name in ("customers", "orders"):
        ids = {row["customer_id"] for row in staged}
    elif name == "order_items" and staged:
        order_customers = order_customers or {}
        order_ids = {row["order_id"] for row in staged}
        ids = {order_customers[o] for o in order_ids if o in order_customers}
        missing = order_ids - order_customers.keys()
        if missing:
            orders = schema.stg_orders
            ids |= set(
                conn.execute(
                    select(orders.c.customer_id).where(_among(conn, orders.c.order_id, missing))
                ).scalars()
            )
    else:
        return
    if not ids:
        return
    if conn.dialect.name == "postgresql":  # one array parameter, not a row literal per customer
        conn.execute(
            text(
                "INSERT INTO changed_customers (night, customer_id) SELECT :night, unnest(:ids) "
                "ON CONFLICT (night, customer_id) DO NOTHING"
            ).bindparams(bindparam("ids", type_=ARRAY(BigInteger))),
            {"night": night.date, "ids": sorted(ids)},
        )
        return
    rows = [{"night": night.date, "customer_id": cid} for cid in sorted(ids)]
    insert_ignore(conn, schema.changed_customers, rows, ("night", "customer_id"))


def _advance_watermark(warehouse: Engine, name: str, night: Night) -> None:
    table = schema.extract_watermark
    with warehouse.begin() as conn:
        current = conn.execute(select(table.c.watermark).where(table.c.source_table == name)).scalar()
        if current is None:
            conn.execute(
                table.insert().values(source_table=name, watermark=night.window_end_naive, night=night.date)
            )
        elif current < night.window_end_naive:
            conn.execute(
                table.update()
                .where(table.c.source_table == name)
                .values(watermark=night.window_end_naive, night=night.date)
            )
