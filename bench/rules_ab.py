"""The product rules of an ordinary night: counted from the whole history, or from kept counts (issue 15).

    python -m bench.run --size medium --keep [--warehouse-url URL]   # prints "Kept <home> ..."
    python -m bench.rules_ab --home <home> [--warehouse-url URL] [--night 2026-11-27] [--repeat 3]

On one warehouse, in the same command, each in a transaction that is rolled back:

* ``history``: the rules as every night built them before ``retention.rule_counts`` (every pair
  counted from all of staging: ``build_rules`` without ``from_counts``);
* ``counts``: what a night does now: ``rule_counts.refresh`` for the night's changed customers,
  then the rules read from the counts;
* ``rebuild``: ``rule_counts.rebuild`` (the weekly full rebuild's counting) then the rules.

Prints the median seconds of each over ``--repeat`` runs and the ratios. It measures only; the
warehouse is left as it was.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from sqlalchemy import Connection, func, select

from bench import kept
from retention import rule_counts, schema
from retention.night import Night
from retention.pipeline import warehouse_engine
from retention.recommend import build_rules
from retention.settings import Settings


def _timed(settings: Settings, work: Callable[[Connection], object]) -> float:
    engine = warehouse_engine(settings.warehouse)
    with engine.connect() as conn:
        transaction = conn.begin()
        started = time.perf_counter()
        work(conn)
        seconds = time.perf_counter() - started
        transaction.rollback()
    return seconds


def _ways(settings: Settings, night: Night) -> dict[str, Callable[[Connection], object]]:
    options = {"min_pairs": settings.rules_min_pairs, "min_confidence": settings.rules_min_confidence}

    def history(conn: Connection) -> None:
        build_rules(conn, night, **options)

    def counts(conn: Connection) -> None:
        rule_counts.refresh(conn, night.date)
        build_rules(conn, night, **options, from_counts=True)

    def rebuild(conn: Connection) -> None:
        rule_counts.refresh(conn, night.date, full=True)
        build_rules(conn, night, **options, from_counts=True)

    return {"history": history, "counts": counts, "rebuild": rebuild}


def main(argv: list[str] | None = None) -> int:
    parser = kept.parser(__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    settings, night = kept.settings_and_night(args)
    with warehouse_engine(settings.warehouse).connect() as conn:
        changed = conn.execute(
            select(func.count()).where(schema.changed_customers.c.night == night.date)
        ).scalar_one()
        customers = conn.execute(select(func.count()).select_from(schema.stg_customers)).scalar_one()
    print(
        f"rules of night {night.date} on {settings.warehouse.split('@')[-1]}: {changed:,} of {customers:,} changed"
    )
    medians = {}
    for name, work in _ways(settings, night).items():
        runs = [_timed(settings, work) for _ in range(args.repeat)]
        medians[name] = statistics.median(runs)
        print(f"  {name:8} {medians[name]:8.2f} s  (runs: {', '.join(f'{r:.2f}' for r in runs)})")
    print(f"  history / counts: {medians['history'] / medians['counts']:.1f}x faster")
    print(f"  counts / rebuild: {medians['counts'] / medians['rebuild']:.3f} (incremental share)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
