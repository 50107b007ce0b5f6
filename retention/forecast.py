"""What the next night will decide: its occasions, computed now, writing nothing.

:func:`forecast` runs the night's real decision (:func:`retention.occasions.decide`: the
occasion models, then consent, suppression, "already decided elsewhere", the daily and
weekly caps and the holdout) on the warehouse as it is, inside a read-only transaction
(PostgreSQL ``READ ONLY``, SQLite ``query_only``), and returns every candidate with the
status and reason the night would record. Nothing is written: not even a temporary table.

A night that has not run yet has no segment snapshot, and its facts stage has not
recomputed the customers whose orders leave the trailing year tonight. The models then read,
under a common table expression that hides the table of the same name, the snapshot the night
will write: ``sql/marts/segment_snapshots.sql`` evaluated for the night (recency one day older
per night ahead, lifecycle phases and ABC classes moved as they will), over the facts as the
night leaves them (those customers recomputed by ``sql/marts/customer_facts.sql`` for the
night's trailing year). The occasion SQL itself runs once per occasion, with the night's
own parameters.

What a forecast cannot know (each occasion's declaration says it: ``Occasion.forecast_note``):

* rows that reach the shop database before the night runs: today's orders (so tomorrow's
  thank-yous), today's new products (new_stock), sign-ups, profile, consent and address
  changes, unsubscribes;
* suggestions the night recomputes (``recommendations``): for customers whose facts change
  tonight, and for everyone on the weekly full rebuild; the forecast reads today's.

So birthday, anniversary and feedback are exact for the customers already known; win_back,
next_purchase and accessory are exact but for customers who order today (and suggestions the
night recomputes); thank_you and new_stock are estimates (what is in now: usually nothing).
Run right after a night, the forecast of the next one matches it row for row when no new
source data arrives, and so does the projected snapshot, column for column but the churn
figures (tests/test_forecast.py checks both, ten nights on SQLite and five on PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from sqlalchemy import Connection, Engine, func, select, text

from retention import schema
from retention.night import Night, night_for_date
from retention.occasions import decide
from retention.registry import occasions
from retention.settings import Settings
from retention.sqlmodels import bind_dates, render

__all__ = [
    "COMMON_NOTE",
    "Forecast",
    "ForecastRow",
    "forecast",
    "format_forecast",
    "latest_night",
    "next_night",
    "projected_snapshot",
]

COMMON_NOTE = (
    "Consent, suppression and caps as of now: unsubscribes and consent changes arriving before "
    "the night are not in yet."
)

#: The trailing year of the facts' ``*_12m`` figures (as ``retention.pipeline.TRAILING_YEAR``).
TRAILING_YEAR = dt.timedelta(days=365)

#: The snapshot columns the projection supplies (the table's, in its order).
_SNAPSHOT_COLUMNS = tuple(c.name for c in schema.segment_snapshots.columns)


@dataclass(frozen=True)
class ForecastRow:
    """One candidate as the night would record it."""

    customer_id: int
    occasion: str
    language: str
    occasion_date: dt.date
    status: str  # selected, skipped, holdout
    reason: str | None


@dataclass
class Forecast:
    """The occasions a night would produce, and how far to trust them."""

    night: dt.date
    based_on: dt.date | None  # the latest night whose occasions were recorded
    projected_snapshot: bool  # True: the night had no snapshot yet; its facts and segments were projected
    rows: list[ForecastRow]
    seconds: float
    #: Per occasion, in priority order: how far the forecast can be trusted, and why
    #: (``Occasion.forecast_note``), and the occasions it knows exactly.
    notes: dict[str, str] = field(default_factory=dict)
    exact: frozenset[str] = frozenset()

    def counts(self) -> list[tuple[str, str, str, int]]:
        """(occasion, language, status, count), in the priority order of the rows' occasions."""
        order = {occasion: i for i, occasion in enumerate(self.notes)}
        tally = Counter((r.occasion, r.language, r.status) for r in self.rows)
        return sorted(
            ((*key, n) for key, n in tally.items()), key=lambda c: (order.get(c[0], 99), c[1], c[2])
        )

    def totals(self) -> dict[str, int]:
        """Rows per status."""
        return dict(sorted(Counter(r.status for r in self.rows).items()))

    def as_dict(self, limit: int | None = None) -> dict:
        """A JSON-ready view; ``limit`` caps the listed rows (the counts always cover all)."""
        rows = self.rows if limit is None else self.rows[:limit]
        return {
            "night": self.night.isoformat(),
            "based_on": self.based_on.isoformat() if self.based_on else None,
            "projected_snapshot": self.projected_snapshot,
            "seconds": round(self.seconds, 3),
            "totals": self.totals(),
            "counts": [
                {"occasion": o, "language": lang, "status": s, "count": n} for o, lang, s, n in self.counts()
            ],
            "notes": {o: {"exact": o in self.exact, "note": note} for o, note in self.notes.items()},
            "note": COMMON_NOTE,
            "rows_total": len(self.rows),
            "rows": [{**asdict(r), "occasion_date": r.occasion_date.isoformat()} for r in rows],
        }


def latest_night(conn: Connection) -> dt.date | None:
    """The latest night whose occasions stage completed (run log), else the latest in ``occasions``."""
    log = schema.run_log
    found = conn.execute(
        select(func.max(log.c.night)).where(log.c.stage == "occasions", log.c.status == "ok")
    ).scalar()
    if found is None:
        found = conn.execute(select(func.max(schema.occasions.c.night))).scalar()
    return dt.date.fromisoformat(found) if isinstance(found, str) else found


def next_night(engine: Engine, settings: Settings) -> Night:
    """The night after :func:`latest_night`; fails, saying what to do, when no night has run."""
    with engine.connect() as conn:
        latest = latest_night(conn)
    if latest is None:
        raise ValueError("no night has recorded occasions yet, so there is no next night: pass a night")
    return night_for_date(latest + dt.timedelta(days=1), settings.time_zone)


@contextmanager
def _read_only(engine: Engine) -> Iterator[Connection]:
    """A connection that cannot write: a read-only PostgreSQL transaction, or SQLite's query_only."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")
            conn.commit()
            try:
                with conn.begin() as tx:
                    yield conn
                    tx.rollback()
            finally:
                conn.rollback()
                conn.exec_driver_sql("PRAGMA query_only = OFF")
                conn.commit()
        else:
            with conn.begin() as tx:
                # one consistent view for every query of the forecast, and no write possible
                conn.execute(text("set transaction isolation level repeatable read read only"))
                yield conn
                tx.rollback()


def _snapshot_params(night: Night, settings: Settings) -> dict:
    """The bound parameters of ``marts/segment_snapshots``, as the segments stage binds them.

    Churn figures are not projected (no fit runs): the Gamma-Gamma parameters are NULL, and no
    occasion reads those columns.
    """
    from retention.segments import snapshot_params

    return snapshot_params(night, settings)


def _qualified(conn: Connection, table: str) -> str:
    """The table's schema-qualified name: a CTE of the same name cannot hide it."""
    if conn.dialect.name == "sqlite":
        return f"main.{table}"
    schema_name = conn.execute(
        text(
            "select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where c.oid = to_regclass(:table)"
        ),
        {"table": table},
    ).scalar()
    if schema_name is None:
        raise RuntimeError(f"table {table!r} not found in the warehouse; run `retention migrate`")
    return f'"{schema_name}".{table}'


def _projecting_runner(conn: Connection, night: Night, settings: Settings):
    """A model runner that sees the night's segment snapshot as the night will make it.

    The model runs unchanged as a subquery under a common table expression that hides the
    table of the same name (only selects, nothing is written): ``segment_snapshots`` is the
    table plus ``marts/segment_snapshots`` evaluated for the night. That projection reads the
    facts as the night's facts stage will leave them: the customers whose orders leave the
    trailing year tonight (which ``retention.pipeline`` adds to ``changed_customers``) are
    recomputed by ``marts/customer_facts`` for the night's trailing year; both names are
    hidden inside the projection only. The models themselves read today's facts: the night
    changes those customers' trailing-year figures only, and no occasion model reads them.
    """
    dialect = conn.dialect.name
    facts_columns = ", ".join(c.name for c in schema.customer_facts.columns)
    snapshot_columns = ", ".join(_SNAPSHOT_COLUMNS)
    night_date = _as_date(dialect, "night")
    facts_of_the_night = (
        "with changed_customers as (\n"
        f" select night, customer_id from {_qualified(conn, 'changed_customers')} where night = {night_date}\n"
        " union\n"
        f" select distinct {night_date} as night, customer_id from {_qualified(conn, 'stg_orders')}\n"
        f" where ordered_at >= {_ts(dialect, 'roll_from')} and ordered_at < {_ts(dialect, 'roll_to')}\n"
        "),\n"
        "customer_facts as (\n"
        f" select {facts_columns} from {_qualified(conn, 'customer_facts')}\n"
        " where customer_id not in (select customer_id from changed_customers)\n"
        " union all\n"
        f" select {facts_columns} from (\n{render('marts/customer_facts', dialect, incremental=True)}\n) as refreshed\n"
        ")\n"
        f"select {snapshot_columns} from (\n{render('marts/segment_snapshots', dialect)}\n) as snapshot"
    )
    shadow = (
        "with segment_snapshots as (\n"
        f" select {snapshot_columns} from {_qualified(conn, 'segment_snapshots')}\n"
        " union all\n"
        f" select * from (\n{facts_of_the_night}\n) as projected\n"
        ")\n"
    )
    projection_params = {
        **_snapshot_params(night, settings),
        "year_start": night.window_end_naive - TRAILING_YEAR,
        "roll_from": night.window_start_naive - TRAILING_YEAR,
        "roll_to": night.window_end_naive - TRAILING_YEAR,
    }

    def run(conn: Connection, model: str | None, params: dict, **flags: object) -> list[dict]:
        """The model's rows (``model`` None: the night's projected snapshot itself)."""
        clash = {k for k in projection_params if k in params and params[k] != projection_params[k]}
        if clash:
            raise RuntimeError(f"model {model}: parameters {sorted(clash)} clash with the projection's")
        if model is None:
            sql = f"{shadow}select * from segment_snapshots where night = {night_date}"
        else:
            sql = f"{shadow}select * from (\n{render(model, dialect, **flags)}\n) as model"
        bound = bind_dates(conn, {**projection_params, **params})
        return [dict(row) for row in conn.execute(text(sql), bound).mappings()]

    return run


def _ts(dialect: str, param: str) -> str:
    """A bound timestamp, typed as ``sql/macros.sql``'s ``ts`` types it."""
    return f"cast(:{param} as timestamp)" if dialect == "postgresql" else f":{param}"


def _as_date(dialect: str, param: str) -> str:
    """A bound date, typed as ``sql/macros.sql``'s ``as_date`` types it."""
    return f"cast(:{param} as date)" if dialect == "postgresql" else f":{param}"


def projected_snapshot(engine: Engine, night: Night, settings: Settings) -> list[dict]:
    """The segment snapshot the night will write, computed now (see :func:`_projecting_runner`).

    Its churn figures (p_alive, expected purchases and order value, CLV) are NULL: no churn model
    is fitted for a forecast, and no occasion reads them. Writes nothing.
    """
    with _read_only(engine) as conn:
        run = _projecting_runner(conn, night, settings)
        return run(conn, None, {})


def _has_snapshot(conn: Connection, night: Night) -> bool:
    snap = schema.segment_snapshots
    return (
        conn.execute(select(snap.c.customer_id).where(snap.c.night == night.date).limit(1)).first()
        is not None
    )


def forecast(engine: Engine, night: Night | None, settings: Settings) -> Forecast:
    """The occasions ``night`` (default: the night after the latest one) would record; writes nothing.

    Rows are ordered as the night decides them (customer, then occasion priority). The
    returned :class:`Forecast` carries per-occasion notes on what is exact and what is an
    estimate (see the module docs).
    """
    night = night or next_night(engine, settings)
    started = time.perf_counter()
    with _read_only(engine) as conn:
        based_on = latest_night(conn)
        projected = not _has_snapshot(conn, night)
        if projected:
            rows = decide(conn, night, settings, _projecting_runner(conn, night, settings))
        else:
            rows = decide(conn, night, settings)
    found = [
        ForecastRow(
            customer_id=int(r["customer_id"]),
            occasion=r["occasion"],
            language=r["language"],
            occasion_date=r["occasion_date"],
            status=r["status"],
            reason=r["reason"],
        )
        for r in rows
    ]
    known = occasions(settings)
    return Forecast(
        night=night.date,
        based_on=based_on,
        projected_snapshot=projected,
        rows=found,
        seconds=time.perf_counter() - started,
        notes={name: declared.forecast_note for name, declared in known.items()},
        exact=frozenset(name for name, declared in known.items() if declared.forecast_exact),
    )


def format_forecast(result: Forecast, limit: int = 20) -> str:
    """The forecast for people: counts by occasion, language and status, notes, the first rows."""
    totals = ", ".join(f"{status} {n}" for status, n in result.totals().items()) or "no candidates"
    snapshot = "projected to the night" if result.projected_snapshot else "the night's own"
    lines = [
        f"forecast of night {result.night} (latest recorded night: {result.based_on or 'none'}); "
        f"nothing was written",
        f"{len(result.rows)} candidates: {totals}; segment snapshot: {snapshot}; {result.seconds:.2f}s",
        "",
        f"{'occasion':14} {'language':8} {'status':9} {'count':>6}",
    ]
    lines += [f"{o:14} {lang:8} {s:9} {n:>6}" for o, lang, s, n in result.counts()]
    lines += ["", "how exact:"]
    lines += [
        f"  {o:14} {'exact' if o in result.exact else 'estimate':9} {note}"
        for o, note in result.notes.items()
    ]
    lines += [f"  {COMMON_NOTE}"]
    if limit and result.rows:
        lines += ["", f"first {min(limit, len(result.rows))} of {len(result.rows)} candidates:"]
        lines += [
            f"  {r.customer_id:>10} {r.occasion:14} {r.language:3} {r.occasion_date} {r.status:9} {r.reason or ''}"
            for r in result.rows[:limit]
        ]
    return "\n".join(lines)
