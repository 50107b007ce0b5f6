"""The segment snapshot in steady state: a night written, and one pruned, with weeks of nights kept.

    python -m bench.run --size medium --keep                           # prints "Kept <home> and <url>"
    python -m bench.snapshots_ab measure --home <home> --warehouse-url <url>
    python -m bench.snapshots_ab fill --home <home> --warehouse-url <url>
    python -m bench.snapshots_ab measure --home <home> --warehouse-url <url>

The benchmark's few nights never reach ``snapshot_days`` (default 40): a shop that has run for
weeks keeps that many nights of every customer, and from then on every night writes a million
rows into a table of forty million and prunes a million. ``fill`` writes that history once
(copies of the latest night under the ``snapshot_days`` dates before it, as a night finds them
in steady state).
``measure`` times the segments stage's steps for the night after the latest (the kept facts,
one day older) inside a transaction it rolls back, ``--repeat`` times, so the warehouse is left
as it was. It changes no code path; it only measures.
"""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import func, select, text

from bench import kept
from retention import schema, segments
from retention.night import night_for_date
from retention.pipeline import warehouse_engine
from retention.settings import Settings


def _latest(conn) -> dt.date:
    return conn.execute(select(func.max(schema.segment_snapshots.c.night))).scalar_one()


def fill(settings: Settings) -> None:
    """Copies of the latest night's snapshot under the ``snapshot_days`` dates before it: the
    history a night finds in steady state, whose oldest night the next night prunes."""
    engine = warehouse_engine(settings.warehouse)
    s = schema.segment_snapshots
    columns = [c.name for c in s.columns if c.name != "night"]
    with engine.connect() as conn:
        latest = _latest(conn)
        have = set(conn.execute(select(s.c.night).distinct()).scalars())
    for back in range(settings.snapshot_days, 0, -1):
        day = latest - dt.timedelta(days=back)
        if day in have:
            continue
        started = time.perf_counter()
        with engine.begin() as conn:
            prepare = getattr(segments, "prepare_night", None)  # the partitioned layout's own step
            if prepare is not None:
                prepare(conn, day)
            rows = conn.execute(
                text(
                    f"insert into {s.name} (night, {', '.join(columns)}) "
                    f"select :day, {', '.join(columns)} from {s.name} where night = :latest"
                ),
                {"day": day, "latest": latest},
            ).rowcount
        print(f"  {day}: {rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"vacuum (analyze) {s.name}"))


def measure(settings: Settings, repeat: int) -> None:
    engine = warehouse_engine(settings.warehouse)
    with engine.connect() as conn:
        latest = _latest(conn)
        nights = conn.execute(select(func.count(schema.segment_snapshots.c.night.distinct()))).scalar_one()
        rows = conn.execute(select(func.count()).select_from(schema.segment_snapshots)).scalar_one()
    night = night_for_date(latest + dt.timedelta(days=1), settings.time_zone)
    print(f"night {night.date}: {nights} nights kept, {rows:,} snapshot rows, snapshot_days {settings.snapshot_days}")
    for attempt in range(1, repeat + 1):
        shown = ", ".join(
            f"{name} {seconds:.2f} s" + ("" if name == "fit_churn" else f" ({result:,} rows)")
            for name, seconds, result in _steps_rolled_back(engine, night, settings)
        )
        print(f"  run {attempt}: {shown}", flush=True)


def _steps_rolled_back(engine, night, settings: Settings) -> list[tuple[str, float, object]]:
    """The stage's churn fit, snapshot and pruning for ``night``, each timed, then rolled back."""
    timings = []

    def timed(name, step):
        started = time.perf_counter()
        result = step()
        timings.append((name, time.perf_counter() - started, result))
        return result

    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            fits = timed("fit_churn", lambda: segments.fit_churn(conn, night, settings))
            timed("build_snapshots", lambda: segments.build_snapshots(conn, night, settings, fits))
            timed("prune_snapshots", lambda: segments.prune_snapshots(conn, night, settings.snapshot_days))
        finally:
            transaction.rollback()
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = kept.parser(__doc__)
    parser.add_argument("action", choices=("fill", "measure"))
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    settings, _ = kept.settings_and_night(args)
    if args.action == "fill":
        fill(settings)
    else:
        measure(settings, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
