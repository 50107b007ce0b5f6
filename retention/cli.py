"""The ``retention`` command line: the same functions as the DAGs, without Airflow.

Every command reads the settings (``RETENTION_*`` environment variables); ``--url``
overrides the warehouse URL. On failure a command exits non-zero with a one-line
reason on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path

from retention.settings import Settings

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    return Settings().with_overrides(warehouse_url=getattr(args, "url", None))


def cmd_demo_data(args: argparse.Namespace) -> int:
    from retention.demo import DEMO_AS_OF, generate

    settings = _settings(args)
    url = args.source_url or settings.source
    as_of = dt.date.fromisoformat(args.as_of) if args.as_of else DEMO_AS_OF
    summary = generate(
        url, args.customers, args.seed, as_of, progress=lambda msg: print(f"  {msg}", flush=True)
    )
    rows = ", ".join(f"{t} {n}" for t, n in summary.rows.items())
    print(f"demo shop written to {url} in {summary.seconds:.1f}s: {rows}")
    print("planted bad rows: " + ", ".join(f"{r} {n}" for r, n in sorted(summary.defects.items())))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from retention.pipeline import stage_migrate

    settings = _settings(args)
    stage_migrate(settings)
    print(f"warehouse schema up to date: {_safe_url(settings.warehouse)}")
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from retention.night import night_for_date
    from retention.pipeline import run_night

    settings = _settings(args)
    night = night_for_date(args.date, settings.time_zone)
    results = run_night(settings, night, run_id=f"cli__{night}")
    for stage, counts in results.items():
        print(f"{stage:10} {json.dumps(counts, default=str, sort_keys=True)}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from retention.mailer import SmtpConfig
    from retention.pipeline import stage_deliver

    settings = _settings(args)
    until = dt.datetime.fromisoformat(args.until) if args.until else dt.datetime.now(dt.UTC)
    if until.tzinfo is None:
        until = until.replace(tzinfo=dt.UTC)
    smtp = SmtpConfig.from_environment(settings.smtp_url, settings.smtp_conn_id, settings.smtp_timeout)
    counts = stage_deliver(settings, smtp, until, dry_run=args.dry_run)
    print(json.dumps(counts, sort_keys=True))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from retention.pipeline import warehouse_engine
    from retention.report import format_report, latest_night, night_report

    engine = warehouse_engine(_settings(args).warehouse)
    night = dt.date.fromisoformat(args.date) if args.date else latest_night(engine)
    if night is None:
        raise SystemExit("retention: no night has run yet; run `retention nightly --date YYYY-MM-DD` first")
    report = night_report(engine, night)
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_report(report))
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from retention.pipeline import warehouse_engine
    from retention.report import quarantine_report

    report = quarantine_report(warehouse_engine(_settings(args).warehouse), args.rule, args.limit)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False))
        return 0
    print(f"{report['total']} rows held back: " + ", ".join(f"{r} {n}" for r, n in report["by_rule"].items()))
    for row in report["rows"]:
        print(
            f"  {row['night']}  {row['source_table']:<12} {row['source_key']:>8}  {row['rule']:<18} {row['detail']}"
        )
    return 0


def cmd_smtp_sink(args: argparse.Namespace) -> int:
    from retention import smtp_sink

    settings = _settings(args)
    folder = Path(args.dir) if args.dir else settings.mail_dir
    pid_file = settings.home_dir / "smtp-sink.pid"
    if args.action == "start":
        pid = smtp_sink.start_background(args.port, folder, pid_file)
        print(f"SMTP sink listening on 127.0.0.1:{args.port} (pid {pid}), saving to {folder}")
    elif args.action == "stop":
        print("SMTP sink stopped" if smtp_sink.stop_background(pid_file) else "no SMTP sink was running")
    else:
        smtp_sink.serve(args.port, folder)
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retention", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "--url", help="warehouse SQLAlchemy URL (default: RETENTION_WAREHOUSE_URL or var/warehouse.db)"
        )
        p.set_defaults(func=func)
        return p

    p = command("demo-data", cmd_demo_data, "write the demo shop (the source database)")
    p.add_argument("--customers", type=int, default=2000, help="number of customers (default 2000)")
    p.add_argument("--seed", type=int, default=42, help="random seed; the same seed gives the same shop")
    p.add_argument(
        "--as-of", help="the shop's 'today' (YYYY-MM-DD, default 2026-11-22); data ends the day before"
    )
    p.add_argument("--source-url", help="where to write (default: RETENTION_SOURCE_URL or var/shop.db)")

    command("migrate", cmd_migrate, "bring the warehouse schema up to date")

    p = command("nightly", cmd_nightly, "run the whole nightly chain for a night, up to a filled outbox")
    p.add_argument("--date", required=True, help="the night, YYYY-MM-DD: takes in the local day before it")

    p = command("send", cmd_send, "deliver what is due in the outbox")
    p.add_argument("--until", help="send messages due at or before this ISO timestamp (default: now)")
    p.add_argument("--dry-run", action="store_true", help="count what would be sent; send and mark nothing")

    p = command("report", cmd_report, "what a night produced")
    p.add_argument("--date", help="the night (default: the latest)")
    p.add_argument("--json", action="store_true", help="machine-readable output (a stable contract)")

    p = command("quarantine", cmd_quarantine, "the bad rows and why they were held back")
    p.add_argument("--rule", help="only this rule (e.g. malformed_email)")
    p.add_argument("--limit", type=int, default=1000, help="list at most this many rows (default 1000)")
    p.add_argument("--json", action="store_true", help="machine-readable output (a stable contract)")

    p = command("smtp-sink", cmd_smtp_sink, "a local SMTP server that saves every message as an .eml file")
    p.add_argument(
        "action", choices=["start", "stop", "serve"], help="start/stop in the background, or serve here"
    )
    p.add_argument("--port", type=int, default=8025, help="port on 127.0.0.1 (default 8025)")
    p.add_argument("--dir", help="folder for .eml files (default: $RETENTION_HOME/mail)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except SystemExit:
        raise
    except Exception as exc:  # one line for people; -v shows the traceback through logging
        logging.getLogger("retention").debug("failed", exc_info=True)
        print(f"retention {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
