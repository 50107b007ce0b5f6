"""The nightly benchmark: time, rows per second and peak memory of every stage, with peers beside it.

    make bench SIZE=small|medium|large [BENCH_CUSTOMERS=N] [BENCH_WAREHOUSE=postgresql://...]
    python -m bench.run --size medium [--customers N] [--warehouse-url URL] [--keep]

Sequence, on a demo shop whose data ends on 2026-11-22 (``retention.demo``):

1. the first night (2026-11-22: the whole history);
2. five ordinary nights (2026-11-23 .. 27), each after about 1 % of the customers changed in the
   shop (new orders, returns, cancellations, new customers, edited products: ``bench.changes``);
3. a full rebuild of the existing warehouse (the last night again, every stage with
   ``full_refresh``);
4. the baselines: DuckDB's and pymc-marketing's RFM over the same staging rows;
5. the delivery of the last night's outbox to a loopback SMTP server in another process
   (``bench.sink``, rate limit off), next to the renderer alone, plain jinja2 and yagmail.

With a PostgreSQL URL the benchmark creates a scratch database ``bench_<size>_<pid>`` on that
server (connecting to the URL's database to do so) and drops it at the end, unless ``--keep``.
The table goes to stdout, the numbers to ``bench/results/<size>-<warehouse>-<timestamp>.json``.

Peak memory is the resident set's high-water mark of this process during each stage
(reset between stages through /proc/self/clear_refs where Linux allows it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from bench import baselines
from bench.changes import write_night_changes
from retention import schema
from retention.demo import DEMO_AS_OF, generate
from retention.night import night_for_date
from retention.pipeline import NIGHT_STAGES, stage_migrate, warehouse_engine
from retention.settings import Settings
from retention.source import source_engine

SIZES = {"small": 10_000, "medium": 100_000, "large": 1_000_000}
FIRST_NIGHT = DEMO_AS_OF
ORDINARY_NIGHTS = 5
RESULTS = Path(__file__).resolve().parent / "results"
#: The stages whose cost an ordinary night should keep proportional to its increment.
INCREMENTAL = ("facts", "segments", "recommendations")
YAGMAIL_MESSAGES = 500
#: Messages the SMTP ceiling sends (twice: over one connection, then split over the lanes).
CEILING_MESSAGES = 2000
log = logging.getLogger("bench")


# --------------------------------------------------------------------------- measuring


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rows_of(stage: str, counts: dict) -> tuple[int, str]:
    """The rows a stage worked through, and what they are."""
    if stage == "extract":
        return sum(counts.get("read", {}).values()), "source rows read"
    if stage == "quality":
        return 0, "reads the extract's counts, no rows"
    if stage == "facts":
        return int(counts.get("customers", 0)), "customers recomputed"
    if stage == "segments":
        return int(counts.get("snapshot_rows", 0)), "customers scored"
    if stage == "recommendations":
        return int(counts.get("customers", 0)), "customers scored"
    if stage == "occasions":
        return sum(n for by_language in counts.values() for n in by_language.values()), "occasions"
    if stage == "render":
        return sum(counts.get("queued", {}).values()), "messages rendered"
    return 0, ""


class Recorder:
    """Measures each step and keeps the rows of the table."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def measure(self, phase: str, stage: str, func: Callable[[], object], rows_of=None) -> object:
        _reset_peak()
        started = time.perf_counter()
        result = func()
        seconds = time.perf_counter() - started
        rows, what = rows_of(result) if rows_of else (0, "")
        record = {
            "phase": phase,
            "stage": stage,
            "seconds": round(seconds, 3),
            "rows": rows,
            "rows_are": what,
            "rows_per_s": round(rows / seconds, 1) if rows and seconds > 0 else None,
            "peak_mib": round(_peak_mib(), 1),
        }
        self.rows.append(record)
        rate = f"{record['rows_per_s']:>12,.0f}/s" if record["rows_per_s"] else " " * 14
        print(
            f"  {phase:16} {stage:16} {seconds:8.2f} s {rows:>10,} {rate}  {record['peak_mib']:6.0f} MiB  {what}",
            flush=True,
        )
        return result

    def select(self, phase: str) -> list[dict]:
        return [row for row in self.rows if row["phase"] == phase]


def _run_night(rec: Recorder, settings: Settings, day: dt.date, phase: str, full: bool = False) -> dict:
    night = night_for_date(day, settings.time_zone)
    results = {}
    for stage in NIGHT_STAGES:
        results[stage.name] = rec.measure(
            phase,
            stage.name,
            lambda s=stage: s(settings, night, f"bench-{phase}-{night}", full_refresh=full),
            lambda counts, name=stage.name: _rows_of(name, counts),
        )
    return results


# --------------------------------------------------------------------------- warehouse


def _warehouse_kind(url: str | None) -> str:
    return "sqlite" if url is None else make_url(url).get_backend_name()


def _scratch_database(url: str, size: str) -> tuple[str, Callable[[], None]]:
    """A fresh database ``bench_<size>_<pid>`` on the server of ``url``, and how to drop it."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url, lambda: None
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the pipeline's bulk paths
        # (retention.db.execute_values) are psycopg2's, as in CI and production.
        parsed = parsed.set(drivername="postgresql+psycopg2")
    name = f"bench_{size}_{os.getpid()}"
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        warehouse_engine.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return parsed.set(database=name).render_as_string(hide_password=False), drop


# --------------------------------------------------------------------------- delivery


def _start_sink() -> tuple[subprocess.Popen, int]:
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.sink"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    line = sink.stdout.readline().split()
    if not line or line[0] != "ready":
        sink.kill()
        raise RuntimeError(f"the SMTP sink did not start: {line}")
    return sink, int(line[1])


def _stop_sink(sink: subprocess.Popen) -> int:
    out, _ = sink.communicate("", timeout=60)
    for line in out.splitlines():
        if line.startswith("received"):
            return int(line.split()[1])
    return -1


def _sample_messages(settings: Settings, n: int) -> list[tuple[str, str, str, str]]:
    o = schema.outbox
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(select(o.c.subject, o.c.text_body, o.c.html_body, o.c.email).limit(n)).all()
    return [tuple(row) for row in rows] * (n // max(len(rows), 1) + 1)


def _prebuilt_messages(settings: Settings, n: int, identity) -> list[tuple[str, bytes]]:
    """``n`` of the outbox's messages as our mailer builds them (recipient, bytes), for the
    SMTP ceiling, which sends them without building."""
    from retention.mailer import build_message, unsubscribe_links

    o = schema.outbox
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = [dict(row) for row in conn.execute(select(o).limit(n)).mappings()]
    built = []
    for row in rows:
        mailto, url = unsubscribe_links(
            identity.unsubscribe, identity.secret, row["customer_id"], row["email"]
        )
        built.append((row["email"], build_message(row, identity.sender, mailto, url).as_bytes()))
    return (built * (n // max(len(built), 1) + 1))[:n]


def _lane_process(
    home: str, url: str | None, port: int, lane: dict, until: dt.datetime
) -> tuple[dict, float, float]:
    """One lane of the delivery DAG in its own process (as a Celery worker runs it): its counts,
    and when its sending began and ended (wall clock, so that the lanes' times compare)."""
    from retention.delivery import DeliveryRun, send_lane
    from retention.mailer import SmtpConfig
    from retention.unsubscribe import secret_from_env

    settings = _settings(Path(home), url)
    run = DeliveryRun.from_settings(settings, secret_from_env())
    engine = warehouse_engine(settings.warehouse)
    try:
        began = time.time()
        counts = send_lane(
            engine,
            SmtpConfig("127.0.0.1", port, source="bench sink"),
            lane,
            until=until,
            identity=run.identity,
            policy=run.policy,
        )
        return counts, began, time.time()
    finally:
        engine.dispose()


def _send_in_lanes(settings: Settings, port: int, until: dt.datetime, lanes: int) -> dict:
    """What the delivery DAG does: plan the due messages, deal them into lanes, send the lanes
    in parallel, one process each; the summed counts and ``seconds``, from the first lane's
    first message to the last lane's end (a Celery worker is up before its task arrives, so
    starting the processes is not counted)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from retention.delivery import DeliveryPolicy, in_lanes, plan

    policy = DeliveryPolicy.from_settings(settings)
    dealt = in_lanes(plan(warehouse_engine(settings.warehouse), until, policy), lanes)
    counts: dict = {}
    spans = []
    with ProcessPoolExecutor(max_workers=len(dealt) or 1, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(_lane_process, str(settings.home), settings.warehouse_url, port, lane, until)
            for lane in dealt
        ]
        for future in futures:
            lane_counts, began, ended = future.result()
            spans.append((began, ended))
            for key, n in lane_counts.items():
                counts[key] = counts.get(key, 0) + n
    counts["lanes"] = len(dealt)
    counts["seconds"] = round(max(e for _, e in spans) - min(b for b, _ in spans), 3) if spans else 0
    return counts


def _deliver(rec: Recorder, settings: Settings, night_day: dt.date, lanes: int) -> dict:
    """Send the night's outbox to the sink; messages per second end to end (claim, build, SMTP, mark).

    Half of the messages go out from one process (``retention send``), the other half as the
    delivery DAG sends them on a Celery executor: dealt into ``lanes`` lanes, one process each.
    ``until`` is the latest send time of the queued messages: the earlier nights' messages, whose
    send windows closed before it, are not due any more, so one night's messages go out.
    """
    from retention.delivery import DeliveryRun
    from retention.mailer import SmtpConfig
    from retention.unsubscribe import secret_from_env

    engine = warehouse_engine(settings.warehouse)
    o = schema.outbox
    with engine.connect() as conn:
        until = conn.execute(select(func.max(o.c.send_at)).where(o.c.status == "queued")).scalar()
        queued = conn.execute(
            select(func.count()).where(o.c.status == "queued", o.c.night == night_day)
        ).scalar()
    if until is None:
        return {"skipped": "the outbox holds no queued message"}
    run = DeliveryRun.from_settings(settings, secret_from_env())
    sink, port = _start_sink()
    config = SmtpConfig("127.0.0.1", port, source="bench sink")
    try:
        # No send window (customers in many zones would otherwise be rolled to the next day), no
        # rate limit; the exactly-once bookkeeping stays on.
        counts = rec.measure(
            "delivery",
            "send",
            lambda: run.deliver(engine, config, until=until, limit=max(1, queued // 2)),
            lambda c: (int(c.get("sent", 0)), "messages sent, one process"),
        )
        one_seconds = rec.rows[-1]["seconds"]
        laned = rec.measure(
            "delivery",
            f"send {lanes} lanes",
            lambda: _send_in_lanes(settings, port, until, lanes),
            lambda c: (int(c.get("sent", 0)), f"messages sent, {lanes} processes (their start included)"),
        )
        lanes_seconds = laned["seconds"]
        yag = rec.measure(
            "delivery",
            "yagmail baseline",
            lambda: baselines.yagmail_rate(
                "127.0.0.1", port, _sample_messages(settings, YAGMAIL_MESSAGES)[:YAGMAIL_MESSAGES]
            ),
            lambda r: (int(r.get("messages", 0)), "messages, a connection each"),
        )
        ceiling = rec.measure(
            "delivery",
            "smtplib ceiling",
            lambda: baselines.smtp_ceiling(
                "127.0.0.1",
                port,
                _prebuilt_messages(settings, CEILING_MESSAGES, run.identity),
                max(1, int(laned.get("lanes") or lanes)),  # as many processes as lanes sent
                server_pid=sink.pid,
            ),
            lambda r: (
                int(r.get("messages", 0)) * 2,
                f"prebuilt messages, one connection, then {lanes} at once",
            ),
        )
    finally:
        received = _stop_sink(sink)
    return {
        "queued": queued,
        "counts": counts,
        "received_by_sink": received,
        "per_second": round(counts.get("sent", 0) / one_seconds, 1) if one_seconds else None,
        "lanes": {
            "lanes": laned.get("lanes"),
            "counts": laned,
            "per_second": round(laned.get("sent", 0) / lanes_seconds, 1) if lanes_seconds else None,
        },
        "yagmail": yag,
        "smtp_ceiling": ceiling,
    }


# --------------------------------------------------------------------------- summary


def _mean_by_stage(rows: list[dict]) -> dict[str, float]:
    by_stage: dict[str, list[float]] = {}
    for row in rows:
        by_stage.setdefault(row["stage"], []).append(row["seconds"])
    return {stage: round(statistics.mean(values), 3) for stage, values in by_stage.items()}


def _summary(rec: Recorder) -> dict:
    first = {row["stage"]: row["seconds"] for row in rec.select("first night")}
    ordinary = _mean_by_stage([r for r in rec.rows if r["phase"].startswith("night ")])
    rebuild = {row["stage"]: row["seconds"] for row in rec.select("full rebuild")}
    # Without a rebuild (--no-rebuild) the first night, which also computes everything, is the
    # full cost an ordinary night is compared with.
    full_reference = "full rebuild" if rebuild else "first night"
    full_costs = rebuild or first
    inc = sum(ordinary.get(s, 0) for s in INCREMENTAL)
    full = sum(full_costs.get(s, 0) for s in INCREMENTAL)
    return {
        "first_night": first,
        "ordinary_night_mean": ordinary,
        "full_rebuild": rebuild,
        "first_night_total_s": round(sum(first.values()), 2),
        "ordinary_night_total_s": round(sum(ordinary.values()), 2),
        "full_rebuild_total_s": round(sum(rebuild.values()), 2),
        "full_reference": full_reference,
        "incremental_share": round(inc / full, 3) if full else None,
        "incremental_share_by_stage": {
            s: round(ordinary[s] / full_costs[s], 3)
            for s in INCREMENTAL
            if full_costs.get(s) and s in ordinary
        },
        "peak_mib_max": max(row["peak_mib"] for row in rec.rows),
    }


def _print_summary(summary: dict) -> None:
    print("\nPer stage, seconds (ordinary night: mean of the nights run):")
    print(f"  {'stage':16} {'first night':>12} {'ordinary':>10} {'rebuild':>10} {'ord/rebuild':>12}")
    for stage in summary["first_night"]:
        first = summary["first_night"][stage]
        ordinary = summary["ordinary_night_mean"].get(stage, 0)
        rebuild = summary["full_rebuild"].get(stage, 0)
        ratio = f"{ordinary / rebuild:12.3f}" if rebuild else " " * 12
        print(f"  {stage:16} {first:12.2f} {ordinary:10.2f} {rebuild:10.2f} {ratio}")
    print(
        f"  {'total':16} {summary['first_night_total_s']:12.2f} {summary['ordinary_night_total_s']:10.2f} "
        f"{summary['full_rebuild_total_s']:10.2f}"
    )
    print(
        f"\nIncremental share (ordinary night's facts+segments+recommendations / {summary['full_reference']}'s): "
        f"{summary['incremental_share']}  by stage: {summary['incremental_share_by_stage']}"
    )


def _ratio(ours: float | None, theirs: dict) -> str:
    if not ours or "seconds" not in theirs or not theirs["seconds"]:
        return theirs.get("skipped", "n/a")
    return f"{ours / theirs['seconds']:.1f}x their time ({ours:.2f} s against {theirs['seconds']:.2f} s)"


def _print_baselines(summary: dict, peers: dict, delivery: dict) -> None:
    seg_ord = summary["ordinary_night_mean"].get("segments")
    seg_full = (summary["full_rebuild"] or summary["first_night"]).get("segments")
    print("\nBaselines (ratio = our seconds / theirs; below 1 we are faster):")
    print(
        f"  read staging lines into pandas: {peers.get('read_lines_seconds')} s ({peers.get('lines')} lines)"
    )
    print(f"  segments (ordinary night) vs DuckDB RFM+quintiles: {_ratio(seg_ord, peers['duckdb'])}")
    full = f"({summary['full_reference']})"
    print(f"  segments {full:16} vs DuckDB RFM+quintiles: {_ratio(seg_full, peers['duckdb'])}")
    print(
        f"  segments {full:16} vs pymc-marketing rfm_summary+rfm_segments: {_ratio(seg_full, peers['pymc'])}"
    )
    render = peers["render"]
    ours = render["ours"]["per_second"]
    for label in ("jinja2_compile_per_message", "jinja2_cached"):
        print(
            f"  rendering: ours {ours:,.0f} msg/s vs {label} {render[label]['per_second']:,.0f} msg/s "
            f"(ours / theirs = {ours / render[label]['per_second']:.2f})"
        )
    alone = render.get("jinja2_cached_without_inlining", {}).get("per_second")
    css = render.get("css_inline_alone", {}).get("per_second")
    if alone and css:
        print(
            f"  rendering's floor in its two libraries: jinja2 alone (three parts, cached) {alone:,.0f} msg/s, "
            f"css-inline alone {css:,.0f} msg/s: at most {1 / (1 / alone + 1 / css):,.0f} msg/s together"
        )
    if "per_second" in delivery:
        yag = delivery["yagmail"].get("per_second")
        print(
            f"  delivery: retention send {delivery['per_second']:,.0f} msg/s end to end "
            f"(claim, build, SMTP, mark) vs yagmail a connection per message {yag:,.0f} msg/s "
            f"(ours / theirs = {delivery['per_second'] / yag:.2f}); rendering alone {ours:,.0f} msg/s"
        )
        lanes = delivery["lanes"]
        print(
            f"  delivery in {lanes['lanes']} lanes (the delivery DAG's mapped tasks, one process each): "
            f"{lanes['per_second'] or 0:,.0f} msg/s end to end"
        )
        ceiling = delivery.get("smtp_ceiling") or {}
        if "parallel_per_second" in ceiling:
            print(
                f"  the SMTP server's ceiling (plain smtplib, prebuilt messages, no bookkeeping): "
                f"{ceiling['one_connection_per_second']:,.0f} msg/s over one connection "
                f"(retention send reaches {delivery['per_second'] / ceiling['one_connection_per_second']:.2f} of it), "
                f"{ceiling['parallel_per_second']:,.0f} msg/s from {ceiling['processes']} processes "
                f"(the lanes reach {(lanes['per_second'] or 0) / ceiling['parallel_per_second']:.2f} of it); "
                f"the server's own CPU: {ceiling.get('server_cpu_ms_per_message')} ms a message"
            )
    else:
        print(f"  delivery: {delivery}")


def _linearity(kind: str) -> dict | None:
    """1M / 100k per stage, from the newest large and medium results of this warehouse kind."""
    latest = {}
    for size in ("medium", "large"):
        files = sorted(RESULTS.glob(f"{size}-{kind}-*.json"))
        if not files:
            return None
        latest[size] = json.loads(files[-1].read_text())["summary"]
    out = {}
    for phase in ("first_night", "ordinary_night_mean", "full_rebuild"):
        big, small = latest["large"][phase], latest["medium"][phase]
        out[phase] = {s: round(big[s] / small[s], 1) for s in big if small.get(s)}
    return out


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="medium")
    parser.add_argument("--customers", type=int, help="override the size's customer count")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warehouse-url", help="default: a SQLite file in a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and scratch database")
    parser.add_argument("--skip-peers", action="store_true", help="no DuckDB / pymc-marketing baselines")
    parser.add_argument("--json", help="write the JSON here instead of bench/results/")
    parser.add_argument(
        "--nights",
        type=int,
        default=ORDINARY_NIGHTS,
        help=f"ordinary nights after the first (default {ORDINARY_NIGHTS}; fewer shortens a large run)",
    )
    parser.add_argument(
        "--lanes", type=int, default=2, help="delivery lanes sent in parallel, one process each (default 2)"
    )
    parser.add_argument(
        "--no-rebuild", action="store_true", help="skip the full rebuild of the existing warehouse"
    )
    return parser


def _settings(home: Path, url: str | None) -> Settings:
    os.environ.setdefault("RETENTION_UNSUBSCRIBE_SECRET", "bench-only-unsubscribe-secret-0123456789")
    return Settings(home=home, warehouse_url=url, delivery_rate_per_second=0)


def _peers(rec: Recorder, settings: Settings, customers: int, skip: bool, last: dt.date) -> dict:
    peers: dict = {
        "render": rec.measure(
            "baselines", "render ours/jinja2", lambda: baselines.render_rates(settings.templates_path)
        )
    }
    if skip:
        peers["duckdb"] = peers["pymc"] = {"skipped": "--skip-peers"}
        return peers
    end = night_for_date(last, settings.time_zone).window_end_naive
    lines = rec.measure(
        "baselines",
        "read lines",
        lambda: baselines.read_lines(warehouse_engine(settings.warehouse), end),
        lambda frame: (len(frame), "order lines into pandas"),
    )
    peers["read_lines_seconds"], peers["lines"] = rec.rows[-1]["seconds"], len(lines)
    peers["duckdb"] = rec.measure(
        "baselines",
        "duckdb rfm",
        lambda: baselines.duckdb_rfm(lines, end),
        lambda r: (r.get("lines", 0), "order lines"),
    )
    peers["pymc"] = rec.measure(
        "baselines",
        "pymc rfm",
        lambda: baselines.pymc_rfm(lines, end, customers),
        lambda r: (r.get("customers", 0), "customers"),
    )
    return peers


def _benchmark(args: argparse.Namespace, customers: int, url: str | None, home: Path) -> dict:
    settings = _settings(home, url)
    rec = Recorder()
    print(f"Benchmark: {customers:,} customers, warehouse {settings.warehouse.split('@')[-1]}", flush=True)
    print(f"  {'phase':16} {'stage':16} {'seconds':>10} {'rows':>10} {'rows/s':>14}  {'peak':>10}")
    shop = rec.measure(
        "setup",
        "demo shop",
        lambda: generate(settings.source, customers, args.seed),
        lambda s: (sum(s.rows.values()), "source rows written"),
    )
    rec.measure("setup", "migrate", lambda: stage_migrate(settings))
    _run_night(rec, settings, FIRST_NIGHT, "first night")
    shop_engine = source_engine(settings.source)
    changes = []
    for n in range(1, args.nights + 1):
        day = FIRST_NIGHT + dt.timedelta(days=n)
        night = night_for_date(day, settings.time_zone)
        changes.append(
            rec.measure(
                f"changes {n}",
                "shop changes",
                lambda night=night, n=n: write_night_changes(shop_engine, night, args.seed + n),
                lambda c: (c.customers_changed, "customers changed"),
            ).__dict__
        )
        _run_night(rec, settings, day, f"night {day:%m-%d}")
    shop_engine.dispose()
    last = FIRST_NIGHT + dt.timedelta(days=args.nights)
    if not args.no_rebuild:
        _run_night(rec, settings, last, "full rebuild", full=True)
    peers = _peers(rec, settings, customers, args.skip_peers, last)
    delivery = _deliver(rec, settings, last, args.lanes)
    summary = _summary(rec)
    _print_summary(summary)
    _print_baselines(summary, peers, delivery)
    return {
        "shop_rows": shop.rows,
        "changes": changes,
        "stages": rec.rows,
        "summary": summary,
        "baselines": peers,
        "delivery": delivery,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    customers = args.customers or SIZES[args.size]
    kind = _warehouse_kind(args.warehouse_url)
    url, drop = (
        (args.warehouse_url, lambda: None)
        if kind == "sqlite"
        else _scratch_database(args.warehouse_url, args.size)
    )
    home = Path(tempfile.mkdtemp(prefix="retention-bench-"))
    started = dt.datetime.now(dt.UTC)
    try:
        document = _benchmark(args, customers, url, home)
    finally:
        warehouse_engine.cache_clear()
        if not args.keep:
            drop()
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"Kept {home} and {url or 'the SQLite warehouse in it'}")
    document = {
        "size": args.size if not args.customers else f"{args.size}-custom",
        "customers": customers,
        "warehouse": kind,
        "started": started.isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        **document,
    }
    target = (
        Path(args.json)
        if args.json
        else RESULTS / (f"{document['size']}-{kind}-{started:%Y%m%dT%H%M%SZ}.json")
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2, default=str))
    print(f"\nResults: {target}")
    linear = _linearity(kind)
    if linear:
        print(f"Linearity 1M / 100k ({kind}, newest results; target at most 12x, * above it):")
        for phase, ratios in linear.items():
            shown = ", ".join(f"{s} {r}x{'*' if r > 12 else ''}" for s, r in ratios.items())
            print(f"  {phase}: {shown}")
    print(f"Process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
