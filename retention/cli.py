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


def _require_extra(module: str, extra: str, command: str) -> None:
    """A one-line reason when an optional dependency (a ``pyproject.toml`` extra) is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise SystemExit(
            f"retention {command}: needs {module}, which is not installed: pip install 'retention[{extra}]'"
        )


def cmd_demo_data(args: argparse.Namespace) -> int:
    _require_extra("faker", "demo", "demo-data")
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
    from retention.unsubscribe import secret_from_env

    settings = _settings(args)
    night = night_for_date(args.date, settings.time_zone)
    secret_from_env()  # render signs links with it: refuse a missing or weak secret before any stage
    results = run_night(settings, night, run_id=f"cli__{night}", full_refresh=args.full_refresh)
    for stage, counts in results.items():
        print(f"{stage:10} {json.dumps(counts, default=str, sort_keys=True)}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from retention.mailer import SmtpConfig
    from retention.pipeline import stage_deliver
    from retention.unsubscribe import secret_from_env

    settings = _settings(args)
    secret = secret_from_env()  # before anything is claimed or sent
    until = dt.datetime.fromisoformat(args.until) if args.until else dt.datetime.now(dt.UTC)
    if until.tzinfo is None:
        until = until.replace(tzinfo=dt.UTC)
    smtp = SmtpConfig.from_environment(settings.smtp_url, settings.smtp_conn_id, settings.smtp_timeout)
    counts = stage_deliver(settings, smtp, until, dry_run=args.dry_run, secret=secret)
    print(json.dumps(counts, sort_keys=True))
    return 0


def cmd_rerender(args: argparse.Namespace) -> int:
    from retention.outbox import rerender
    from retention.pipeline import warehouse_engine
    from retention.unsubscribe import secret_from_env

    settings = _settings(args)
    secret = secret_from_env()  # the links are signed again
    counts = rerender(warehouse_engine(settings.warehouse), settings, secret, args.occasion, args.language)
    print(json.dumps(counts, sort_keys=True))
    return 1 if counts["template_failures"] else 0


def cmd_template_versions(args: argparse.Namespace) -> int:
    """``templates save / history / restore``: the versions kept in the warehouse."""
    import getpass

    from retention import template_store
    from retention.pipeline import warehouse_engine

    settings = _settings(args)
    engine = warehouse_engine(settings.warehouse)
    if args.action == "history":
        live = template_store.current(engine, settings, args.occasion, args.language)
        for version in template_store.history(engine, args.occasion, args.language):
            mark = "*" if version.version_id == live.version_id else " "
            note = f"  ({version.note})" if version.note else ""
            print(
                f"{mark} {version.version_id:>5}  {version.saved_at:%Y-%m-%d %H:%M} UTC  {version.saved_by}{note}"
            )
        print(f"{'*' if live.version_id == 0 else ' '}     0  the shipped file")
        return 0
    by = f"cli:{getpass.getuser()}"
    now = dt.datetime.now(dt.UTC)  # the moment of the save, for the history: wall clock by design
    try:
        if args.action == "save":
            source = Path(args.file).read_text(encoding="utf-8")
            version, new = template_store.save(
                engine, settings, args.occasion, args.language, source, by, now=now
            )
        else:
            version, new = template_store.restore(
                engine, settings, args.version, by, occasion=args.occasion, language=args.language, now=now
            )
    except template_store.LintFailed as failed:
        for problem in failed.problems:
            line = f":{problem['line']}" if problem.get("line") else ""
            print(f"{problem['file']}{line}: {problem['severity']}: {problem['message']}", file=sys.stderr)
        print(f"retention templates {args.action}: {failed}", file=sys.stderr)
        return 1
    except template_store.TemplatesFrozen as frozen:
        print(f"retention templates {args.action}: {frozen}", file=sys.stderr)
        return 1
    state = "saved as" if new else "unchanged, live is"
    print(
        f"{args.occasion}/{args.language}: {state} {version.label}; run `retention rerender` to apply it to queued messages"
    )
    return 0


def cmd_evaluate_suggestions(args: argparse.Namespace) -> int:
    from retention.evaluate import evaluate_suggestions, format_table
    from retention.pipeline import warehouse_engine

    settings = _settings(args)
    try:
        result = evaluate_suggestions(
            warehouse_engine(settings.warehouse),
            cutoff=dt.date.fromisoformat(args.cutoff) if args.cutoff else None,
            horizon_days=args.horizon,
            time_zone=settings.time_zone,
            min_pairs=settings.rules_min_pairs,
            min_confidence=settings.rules_min_confidence,
        )
    except ValueError as exc:
        raise SystemExit(f"retention evaluate-suggestions: {exc}") from exc
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else format_table(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from retention.pipeline import warehouse_engine
    from retention.report import format_report, latest_night, night_report

    engine = warehouse_engine(_settings(args).warehouse)
    night = dt.date.fromisoformat(args.date) if args.date else latest_night(engine)
    if night is None:
        raise SystemExit("retention: no night has run yet; run `retention nightly --date YYYY-MM-DD` first")
    if not _night_ran(engine, night):
        raise SystemExit(
            f"retention report: night {night} never ran (not in the run log); "
            f"run `retention nightly --date {night}` first"
        )
    settings = _settings(args)
    report = night_report(engine, night, settings.message_cost, settings.variant_min_sample)
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_report(report))
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    from retention.forecast import forecast, format_forecast
    from retention.night import night_for_date
    from retention.pipeline import warehouse_engine

    settings = _settings(args)
    night = night_for_date(args.night, settings.time_zone) if args.night else None
    result = forecast(warehouse_engine(settings.warehouse), night, settings)
    if args.json:
        print(json.dumps(result.as_dict(args.limit), indent=2, sort_keys=True))
    else:
        print(format_forecast(result, 20 if args.limit is None else args.limit))
    return 0


def _night_ran(engine, night: dt.date) -> bool:
    from sqlalchemy import func, select

    from retention import schema

    log = schema.run_log
    with engine.connect() as conn:
        return bool(conn.execute(select(func.count()).select_from(log).where(log.c.night == night)).scalar())


def cmd_quarantine(args: argparse.Namespace) -> int:
    from retention.pipeline import warehouse_engine
    from retention.report import quarantine_report

    report = quarantine_report(warehouse_engine(_settings(args).warehouse), args.rule, args.limit, args.all)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False))
        return 0
    print(f"{report['total']} rows held back: " + ", ".join(f"{r} {n}" for r, n in report["by_rule"].items()))
    for row in report["rows"]:
        print(
            f"  {row['night']}  {row['source_table']:<12} {row['source_key']:>8}  {row['rule']:<18} {row['detail']}"
        )
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from retention.erasure import NotAPerson, UnknownPerson, forget
    from retention.pipeline import stage_migrate, warehouse_engine

    settings = _settings(args)
    stage_migrate(settings)  # the tombstone tables come with a migration
    try:
        # The day of the request, kept with the tombstone for the record (not a business input).
        erasure = forget(warehouse_engine(settings.warehouse), args.person, dt.datetime.now(dt.UTC).date())
    except (NotAPerson, UnknownPerson) as exc:
        raise SystemExit(f"retention forget: {exc}") from exc
    print(json.dumps(erasure.as_counts(), sort_keys=True) if args.json else erasure.describe())
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from retention.feedback import mail_followups
    from retention.mailer import SmtpConfig
    from retention.pipeline import stage_migrate, warehouse_engine

    settings = _settings(args)
    stage_migrate(settings)  # the feedback tables come with a migration
    smtp = SmtpConfig.from_environment(settings.smtp_url, settings.smtp_conn_id, settings.smtp_timeout)
    counts = mail_followups(warehouse_engine(settings.warehouse), settings, smtp)
    if not settings.service_address and counts["pending"]:
        print(
            f"retention feedback: {counts['pending']} follow-up(s) not mailed: RETENTION_SERVICE_ADDRESS is not set",
            file=sys.stderr,
        )
    print(json.dumps(counts, sort_keys=True))
    return 1 if counts["refused"] else 0


def cmd_smtp_sink(args: argparse.Namespace) -> int:
    _require_extra("aiosmtpd", "sink", "smtp-sink")
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


def cmd_templates(args: argparse.Namespace) -> int:
    from retention.template_store import effective_templates

    settings = _settings(args)
    if args.dir:
        return _templates(args, settings, Path(args.dir))
    # the shipped folder, with the templates of occasions added by RETENTION_OCCASION_DIRS
    with effective_templates(None, settings) as (effective, _):
        return _templates(args, settings, effective.templates_path)


def _templates(args: argparse.Namespace, settings, folder: Path) -> int:
    from retention.lint import lint, preview, template_files
    from retention.registry import occasions
    from retention.render import Renderer, RenderLimits

    if args.action == "lint":
        problems = lint(
            folder,
            settings.default_language,
            settings.shop_name,
            settings.shop_url,
            limits=RenderLimits.from_settings(settings),
            occasions=occasions(settings),
        )
        for problem in problems:
            print(problem)
        errors = sum(problem.is_error for problem in problems)
        warnings = len(problems) - errors
        if errors:
            print(f"{errors} errors, {warnings} warnings in {folder}", file=sys.stderr)
            return 1
        suffix = f" ({warnings} warnings)" if warnings else ""
        print(f"{len(template_files(folder, occasions(settings)))} templates OK{suffix}")
        return 0
    language, context = args.language or settings.default_language, None
    if args.customer is not None:
        language, context = _customer_preview_context(settings, args.customer, args.occasion, args.language)
    out = Path(args.out) if args.out else settings.home_dir / "preview"
    limits = RenderLimits.from_settings(settings)
    subject, html_path, text_path = preview(
        folder, args.occasion, language, out, context, settings.default_language, limits
    )
    print(f"Subject: {subject}")
    print(f"wrote {html_path} and {text_path}")
    used = Renderer(folder, settings.default_language).template_name(args.occasion, language)
    if not used.endswith(f"/{language}.jinja"):
        print(f"note: no {language} template, rendered {used}")
    return 0


def _customer_preview_context(
    settings: Settings, customer_id: int, occasion: str, language: str | None
) -> tuple[str, dict]:
    """A real customer's name, language and country, with sample values for the occasion."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from retention import schema
    from retention.pipeline import warehouse_engine
    from retention.samples import customer_context, sample_context

    customers = schema.stg_customers
    query = select(
        customers.c.first_name, customers.c.last_name, customers.c.language, customers.c.country
    ).where(customers.c.customer_id == customer_id)
    try:
        with warehouse_engine(settings.warehouse).connect() as conn:
            row = conn.execute(query).first()
    except SQLAlchemyError as exc:  # SQLAlchemy's messages span lines; the CLI promises one
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise SystemExit(
            f"retention templates: cannot read stg_customers from {_safe_url(settings.warehouse)}: {reason} "
            "(run `retention nightly` first?)"
        ) from exc
    if row is None:
        raise SystemExit(
            f"retention templates: no customer {customer_id} in stg_customers of {_safe_url(settings.warehouse)}"
        )
    language = language or row.language
    customer = customer_context(row.first_name, row.last_name, language, row.country)
    return language, sample_context(occasion, language, settings.shop_name, settings.shop_url, customer)


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
    p.add_argument(
        "--full-refresh",
        action="store_true",
        help="re-read the whole shop and rebuild every customer's facts and recommendations",
    )

    p = command("send", cmd_send, "deliver what is due in the outbox")
    p.add_argument("--until", help="send messages due at or before this ISO timestamp (default: now)")
    p.add_argument("--dry-run", action="store_true", help="count what would be sent; send and mark nothing")

    p = command(
        "rerender",
        cmd_rerender,
        "render still-queued messages again with the live templates (after a template was saved)",
    )
    p.add_argument("--occasion", help="only this occasion (default: all)")
    p.add_argument("--language", help="only this language (default: all)")

    p = command("report", cmd_report, "what a night produced")
    p.add_argument("--date", help="the night (default: the latest)")
    p.add_argument("--json", action="store_true", help="machine-readable output (a stable contract)")

    p = command(
        "forecast",
        cmd_forecast,
        "the occasions the next night would record (status and reason per customer); writes nothing",
    )
    p.add_argument(
        "--night", help="the night, YYYY-MM-DD (default: the day after the latest night with occasions)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--limit", type=int, help="list at most this many candidates (default 20; --json: all)"
    )

    p = command(
        "evaluate-suggestions",
        cmd_evaluate_suggestions,
        "hit rate@3 and precision@3 of the suggestions on held-out orders, next to two baselines",
    )
    p.add_argument(
        "--cutoff", help="train before this date, YYYY-MM-DD (default: 90 days before the last order)"
    )
    p.add_argument("--horizon", type=int, default=90, help="days after the cut-off to measure (default 90)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("quarantine", cmd_quarantine, "the bad rows and why they were held back")
    p.add_argument("--rule", help="only this rule (e.g. malformed_email)")
    p.add_argument("--limit", type=int, default=1000, help="list at most this many rows (default 1000)")
    p.add_argument(
        "--all", action="store_true", help="also rows that loaded later, once their missing parent arrived"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output (a stable contract)")

    p = command("templates", cmd_templates, "check every template in every language, or render one to files")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    lint_p = actions.add_parser(
        "lint",
        help="render every template against sample customers and report problems as file:line: message",
        description="Render every template of every occasion in every language against sample customers; "
        "print each problem as file:line: message; exit 1 on any error.",
    )
    lint_p.add_argument(
        "--dir", help="templates folder (default: RETENTION_TEMPLATES_DIR or the packaged templates)"
    )
    preview_p = actions.add_parser(
        "preview",
        help="render one occasion to OCCASION-LANG.html and .txt and print the subject",
        description="Render one occasion in one language to OCCASION-LANG.html and OCCASION-LANG.txt "
        "and print the subject. With --customer ID the customer's name, language and country come from "
        "stg_customers in the warehouse (--url); the occasion's own values "
        "(order, products, dates) are still sample values, and the unsubscribe link is a placeholder.",
    )
    preview_p.add_argument("occasion", help="e.g. thank_you, birthday, anniversary, win_back, new_stock")
    preview_p.add_argument(
        "--language",
        help="en, de, nb or et (default: the customer's language, else RETENTION_DEFAULT_LANGUAGE)",
    )
    preview_p.add_argument("--customer", type=int, metavar="ID", help="a customer id from stg_customers")
    preview_p.add_argument("--out", help="folder for the two files (default: $RETENTION_HOME/preview)")
    # SUPPRESS: given here it wins, absent it leaves the --url given before the action alone.
    preview_p.add_argument("--url", default=argparse.SUPPRESS, help="warehouse URL for --customer")
    preview_p.add_argument(
        "--dir", help="templates folder (default: RETENTION_TEMPLATES_DIR or the packaged templates)"
    )

    for action, help_ in (
        ("save", "save a template version in the warehouse (lint must pass); every render uses it"),
        ("history", "list the saved versions of a template; * marks the live one"),
        ("restore", "make an earlier version (0: the shipped file) live again"),
    ):
        version_p = actions.add_parser(action, help=help_, description=help_)
        version_p.add_argument("occasion", help="e.g. birthday")
        version_p.add_argument("--language", required=True, help="en, de, nb or et")
        version_p.add_argument("--url", default=argparse.SUPPRESS, help="warehouse URL")
        version_p.set_defaults(func=cmd_template_versions)
        if action == "save":
            version_p.add_argument("--file", required=True, help="the template source to save")
        if action == "restore":
            version_p.add_argument("version", type=int, help="the version id from `templates history`")

    p = command(
        "forget",
        cmd_forget,
        "erase a person from the warehouse, keeping only a hashed tombstone (GDPR art. 17)",
    )
    p.add_argument(
        "person", metavar="CUSTOMER_ID_OR_EMAIL", help="the customer's id in the shop, or their address"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output: rows removed per table")

    p = command("feedback", cmd_feedback, "answers to the feedback message: mail low-rating follow-ups")
    p.add_argument(
        "action",
        choices=["mail-followups"],
        help="mail-followups: mail every open follow-up not mailed yet to RETENTION_SERVICE_ADDRESS",
    )

    p = command("smtp-sink", cmd_smtp_sink, "a local SMTP server that saves every message as an .eml file")
    p.add_argument(
        "action", choices=["start", "stop", "serve"], help="start/stop in the background, or serve here"
    )
    p.add_argument("--port", type=int, default=8025, help="port on 127.0.0.1 (default 8025)")
    p.add_argument("--dir", help="folder for .eml files (default: $RETENTION_HOME/mail)")
    return parser


def _one_line(exc: BaseException) -> str:
    """The reason of a failure in one line: SQLAlchemy's messages span lines and carry SQL."""
    from sqlalchemy.exc import SQLAlchemyError

    reason = exc.orig if isinstance(exc, SQLAlchemyError) and getattr(exc, "orig", None) else exc
    text = " ".join(str(reason).split()) or type(reason).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _failure(command: str, exc: BaseException, settings_url: str | None) -> str:
    """``retention COMMAND: error: ...``, naming the warehouse when the database is at fault."""
    from sqlalchemy.exc import SQLAlchemyError

    where, reason = "", _one_line(exc)
    if isinstance(exc, SQLAlchemyError) and settings_url:
        where = f" (warehouse {_safe_url(settings_url)})"
        if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
            reason += "; this warehouse has no schema yet: run `retention migrate` or a night first"
    return f"retention {command}: error: {type(exc).__name__}: {reason}{where}"


def _warehouse_of(args: argparse.Namespace) -> str | None:
    try:
        return _settings(args).warehouse
    except Exception:  # the settings themselves are what failed; the message says so
        return None


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
    except KeyboardInterrupt:
        print(f"retention {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for people; -v shows the traceback through logging
        logging.getLogger("retention").debug("failed", exc_info=True)
        print(_failure(args.command, exc, _warehouse_of(args)), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
