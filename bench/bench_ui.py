"""How fast the Retention page answers: each panel's queries, and whole pages through the app.

    python -m bench.bench_ui --customers 100000 [--warehouse-url URL] [--keep]
    python -m bench.bench_ui --existing URL      # a warehouse that already has nights
    python -m bench.bench_ui --synthetic 1000000 --warehouse-url URL   # an empty database: filled by SQL

Without ``--existing`` it writes a demo shop and runs nights 2026-11-21 and 2026-11-22 (as
``bench.run`` does), then times, on the latest night: every query the page runs, and the page
itself (the night, a customer search by id and by address, a message) requested through the
app in process (an ASGI client, no network; the api-server's authentication is replaced by a
dependency that lets the request in), and the template editor's page. Each figure is the median
of ``--repeat`` runs after one warm-up. The issue's bound: every page under a second on 1M customers.

Running real nights takes too long at a million customers: ``--synthetic N`` instead fills an
empty warehouse with what the page reads, written directly by set-based SQL
(``bench/synthetic_ui.py``: customers, orders, two nights of snapshots and their report,
``--history`` nights of occasions and messages, quarantine, run log), then times the same.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select

from retention import schema
from retention.db import engine_for
from retention.settings import Settings
from retention.web import queries
from retention.web.retention_app import create_retention_app


def _median_seconds(func: Callable[[], object], repeat: int) -> float:
    func()  # warm-up: first connection, caches
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _build(settings: Settings, customers: int, seed: int) -> None:
    from retention.demo import DEMO_AS_OF, generate
    from retention.night import night_for_date
    from retention.pipeline import NIGHT_STAGES, stage_migrate

    print(f"Writing a demo shop of {customers} customers and running two nights ...", flush=True)
    generate(settings.source, customers, seed)
    stage_migrate(settings)
    for day in (DEMO_AS_OF - dt.timedelta(days=1), DEMO_AS_OF):
        night = night_for_date(day, settings.time_zone)
        for stage in NIGHT_STAGES:
            stage(settings, night, f"bench-ui-{night}")


def _panels(engine: Engine, night: dt.date, customer_id: int, email: str, outbox_id: int) -> dict:
    def run(query: Callable) -> Callable[[], object]:
        def call() -> object:
            with engine.connect() as conn:
                return query(conn)

        return call

    return {
        "nights": run(queries.nights),
        "segment counts": run(lambda c: queries.segment_counts(c, night)),
        "lifecycle flows": run(lambda c: queries.lifecycle_flows(c, night)),
        "occasion outcomes": run(lambda c: queries.occasion_outcomes(c, night)),
        "find customer by id": run(lambda c: queries.find_customer(c, str(customer_id))),
        "find customer by address": run(lambda c: queries.find_customer(c, email)),
        "customer view": run(lambda c: queries.customer_view(c, customer_id, night)),
        "message": run(lambda c: queries.message(c, outbox_id)),
        "holdout uplift (uncached)": run(lambda c: queries.holdout_uplift(c, night)),
        "quarantine by rule": run(lambda c: queries.quarantine_by_rule(c, night)),
    }


def _pages(settings: Settings, engine: Engine, customer_id: int, email: str, outbox_id: int) -> dict:
    app = create_retention_app(lambda: None, settings, engine)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
    loop = asyncio.new_event_loop()

    def get(path: str, **params: object) -> Callable[[], object]:
        def call() -> object:
            reply = loop.run_until_complete(client.get(path, params=params))
            assert reply.status_code == 200, (path, reply.status_code)
            return reply

        return call

    return {
        "page: latest night": get("/"),
        "page: search by id": get("/", q=customer_id),
        "page: search by address": get("/", q=email.upper()),
        "page: search, unknown address": get("/", q="nobody.at.all@example.invalid"),
        "page: message": get(f"/message/{outbox_id}"),
        "page: templates": get("/templates", occasion="thank_you", language="de"),
    }


def _first_view(engine: Engine, night: dt.date, page: Callable[[], object]) -> float:
    """The night's page as its first viewer sees it, before the holdout uplift is computed (once,
    in the background: ``queries.cached_uplift``); then how long that computation took."""
    queries._UPLIFT_CACHE = queries._UpliftCache()  # as a freshly started api-server
    started = time.perf_counter()
    reply = page()
    first = time.perf_counter() - started
    pending = 'id="uplift-pending"' in reply.text
    queries.cached_uplift(engine, night, patience=3600)
    computed = time.perf_counter() - started
    print(
        f"  {'page: first view of the night':32} {first * 1000:9.1f} ms (uplift {'pending' if pending else 'shown'})"
    )
    print(
        f"  {'  uplift computed in background':32} {computed * 1000:9.1f} ms (after the first view)",
        flush=True,
    )
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--warehouse-url", help="where to build (default: a SQLite file in a temporary folder)"
    )
    parser.add_argument("--existing", help="time this warehouse as it is; build nothing")
    parser.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help="fill an empty warehouse with N customers by SQL (bench/synthetic_ui.py) instead of running nights",
    )
    parser.add_argument(
        "--history", type=int, default=120, help="--synthetic: nights of occasions and messages"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    home = Path(tempfile.mkdtemp(prefix="retention-bench-ui-"))
    os.environ.setdefault("RETENTION_UNSUBSCRIBE_SECRET", "bench-only-unsubscribe-secret-0123456789")
    settings = Settings(home=home, warehouse_url=args.existing or args.warehouse_url)
    if args.synthetic:
        from bench.synthetic_ui import fill

        fill(engine_for(settings.warehouse), args.synthetic, args.history)
    elif not args.existing:
        _build(settings, args.customers, args.seed)
    engine = engine_for(settings.warehouse)
    box, snap = schema.outbox, schema.segment_snapshots
    with engine.connect() as conn:
        night = queries.nights(conn)[0]
        customers = conn.execute(select(func.count()).where(snap.c.night == night)).scalar()
        outbox_id, customer_id, email = conn.execute(
            select(box.c.outbox_id, box.c.customer_id, box.c.email).order_by(box.c.outbox_id.desc()).limit(1)
        ).one()
    print(
        f"Retention page on night {night}: {customers} customers, warehouse {settings.warehouse.split('@')[-1]}"
    )
    pages = _pages(settings, engine, customer_id, email, outbox_id)
    slowest = _first_view(engine, night, pages["page: latest night"])
    for name, call in {**_panels(engine, night, customer_id, email, outbox_id), **pages}.items():
        seconds = _median_seconds(call, args.repeat)
        slowest = max(slowest, seconds) if name.startswith("page") else slowest
        print(f"  {name:32} {seconds * 1000:9.1f} ms", flush=True)
    print(f"Slowest page: {slowest * 1000:.0f} ms (bound: 1000 ms on 1M customers)")
    engine.dispose()
    if args.keep or args.existing:
        print(f"Kept {home}" if not args.existing else "")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
