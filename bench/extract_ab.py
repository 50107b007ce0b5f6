"""The extract into PostgreSQL before and after COPY, on the same demo shop (issue 15).

    python -m bench.extract_ab --customers 100000 --warehouse-url postgresql+psycopg2://postgres@127.0.0.1/test

Writes one demo shop, then for each path (``execute_values``, the upsert before issue 15, and
``copy``) extracts the first night into a fresh scratch database ``bench_extract_<path>_<pid>``
on that server and, after writing an ordinary night's changes (``bench.changes``) into a copy of
the shop, the next night: seconds and rows per second per night and path, and the ratio.
``--profile`` prints the ten most expensive functions of the copy path's first night.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.changes import write_night_changes
from retention import extract as extract_module
from retention.demo import DEMO_AS_OF, generate
from retention.night import night_for_date
from retention.pipeline import stage_extract, stage_migrate, warehouse_engine
from retention.settings import Settings
from retention.source import source_engine

PATHS = {"execute_values": False, "copy": True}


def _database(admin_url: str, name: str) -> str:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _drop(admin_url: str, name: str) -> None:
    warehouse_engine.cache_clear()
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _timed_extract(settings: Settings, day: dt.date, profile: bool) -> tuple[float, int]:
    night = night_for_date(day, settings.time_zone)
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    counts = stage_extract(settings, night, f"ab-{day}")
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    return seconds, sum(counts["read"].values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warehouse-url", required=True, help="a PostgreSQL server (any database on it)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    admin_url = make_url(args.warehouse_url)
    if admin_url.drivername == "postgresql":
        admin_url = admin_url.set(drivername="postgresql+psycopg2")
    admin_url = admin_url.render_as_string(hide_password=False)
    os.environ.setdefault("RETENTION_UNSUBSCRIBE_SECRET", "bench-only-unsubscribe-secret-0123456789")
    home = Path(tempfile.mkdtemp(prefix="retention-extract-ab-"))
    results: dict[str, dict[str, tuple[float, int]]] = {}
    try:
        pristine = home / "shop.db"
        generate(f"sqlite:///{pristine}", args.customers, args.seed)
        for path, copy in PATHS.items():
            shop = home / f"shop-{path}.db"
            shutil.copy(pristine, shop)
            name = f"bench_extract_{path}_{os.getpid()}"
            settings = Settings(
                home=home, warehouse_url=_database(admin_url, name), source_url=f"sqlite:///{shop}"
            )
            extract_module.COPY_ON_POSTGRESQL = copy
            try:
                stage_migrate(settings)
                first = _timed_extract(settings, DEMO_AS_OF, args.profile and copy)
                day = DEMO_AS_OF + dt.timedelta(days=1)
                engine = source_engine(settings.source)
                write_night_changes(engine, night_for_date(day, settings.time_zone), args.seed + 1)
                engine.dispose()
                results[path] = {"first night": first, "ordinary night": _timed_extract(settings, day, False)}
            finally:
                _drop(admin_url, name)
    finally:
        extract_module.COPY_ON_POSTGRESQL = True
        shutil.rmtree(home, ignore_errors=True)
    print(f"\nExtract into PostgreSQL, {args.customers:,} customers:")
    print(f"  {'night':16} {'path':16} {'seconds':>9} {'rows':>10} {'rows/s':>10}")
    for night in ("first night", "ordinary night"):
        for path in PATHS:
            seconds, rows = results[path][night]
            print(f"  {night:16} {path:16} {seconds:9.2f} {rows:10,} {rows / seconds:10,.0f}")
        before, after = results["execute_values"][night][0], results["copy"][night][0]
        print(f"  {night:16} {'copy speed-up':16} {before / after:9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
