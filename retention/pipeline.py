"""The nightly chain as plain functions: what the DAG tasks and the CLI both call.

Each stage takes the settings, the night and a run id, records itself in the run
log (stage, status, counts) and returns its counts, small enough for an XCom.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from sqlalchemy import Engine, func, select

from retention import registry, schema
from retention.db import engine_for, insert_ignore, refresh_statistics
from retention.delivery import DeliveryRun
from retention.extract import extract
from retention.mailer import SmtpConfig
from retention.migrate import upgrade
from retention.night import Night, utcnow
from retention.occasions import detect
from retention.outbox import fill
from retention.runlog import stage_counts
from retention.settings import Settings
from retention.source import source_engine
from retention.sqlmodels import materialize
from retention.stages import NIGHT_STAGES, Stage
from retention.unsubscribe import secret_from_env

__all__ = [
    "NightNotReproducible",
    "QualityError",
    "stage_migrate",
    "stage_extract",
    "stage_quality",
    "stage_facts",
    "stage_segments",
    "stage_recommendations",
    "stage_occasions",
    "stage_render",
    "stage_deliver",
    "run_night",
    "NIGHT_STAGES",
    "Stage",
]

log = logging.getLogger(__name__)


class QualityError(RuntimeError):
    """Too many bad rows in a night: the message names table, rule and counts."""


@cache
def warehouse_engine(url: str) -> Engine:
    return engine_for(url)


@contextmanager
def _stage(settings: Settings, night: Night, run_id: str, stage: str) -> Iterator[dict]:
    """Record a stage in the run log; the body fills the yielded counts dict."""
    engine = warehouse_engine(settings.warehouse)
    counts: dict = {}
    started = utcnow()  # audit only, never a business input
    status, message = "ok", None
    try:
        yield counts
    except Exception as exc:
        status, message = "failed", str(exc)[:2000]
        raise
    finally:
        with engine.begin() as conn:
            conn.execute(
                schema.run_log.insert().values(
                    run_id=run_id,
                    night=night.date,
                    stage=stage,
                    status=status,
                    counts=json.dumps(counts, default=str, sort_keys=True),
                    message=message,
                    started_at=started,
                    finished_at=utcnow(),
                )
            )


def stage_migrate(settings: Settings) -> None:
    """Bring the warehouse schema up to date (safe to call every night)."""
    upgrade(warehouse_engine(settings.warehouse))


def stage_extract(settings: Settings, night: Night, run_id: str, full_refresh: bool = False) -> dict:
    """Take in the night's changes; a re-run reads at least the window the night's first run read."""
    with _stage(settings, night, run_id, "extract") as counts:
        engine = warehouse_engine(settings.warehouse)
        if _reproduce_if_superseded(engine, night, "extract", counts):
            return counts  # later nights' watermarks and staging rows stay as they are
        with engine.connect() as conn:
            first = stage_counts(conn, night.date, "extract", first=True) or {}
        result = extract(
            source_engine(settings.source),
            engine,
            night,
            run_id,
            settings,
            full_refresh=full_refresh,
            earlier_lower=first.get("lower_bounds"),
        )
        counts.update(result.as_counts())
    return counts


def stage_quality(settings: Settings, night: Night, run_id: str) -> dict:
    """Fail when a table's share of bad rows passes the threshold; otherwise report the shares."""
    with _stage(settings, night, run_id, "quality") as counts:
        if _reproduce_if_superseded(warehouse_engine(settings.warehouse), night, "quality", counts):
            return counts
        with warehouse_engine(settings.warehouse).connect() as conn:
            extracted = stage_counts(conn, night.date, "extract")
        if not extracted:
            raise QualityError(f"night {night}: no successful extract to check; run the extract first")
        problems = []
        for table, read in extracted["read"].items():
            by_rule = extracted["quarantined_by_table"].get(table, {})
            bad = sum(by_rule.values())
            share = bad / max(read, settings.quarantine_min_rows)
            counts[table] = {"read": read, "bad": bad, "share": round(share, 4)}
            if share > settings.quarantine_max_share:
                rules = ", ".join(f"{rule}={n}" for rule, n in sorted(by_rule.items()))
                problems.append(
                    f"{table}: {bad} of {read} rows quarantined ({share:.1%} > {settings.quarantine_max_share:.1%}): {rules}"
                )
        if problems:
            raise QualityError(
                f"night {night}: too many bad rows; see `retention quarantine`. " + "; ".join(problems)
            )
    return counts


#: The trailing year of the facts' ``*_12m`` figures.
TRAILING_YEAR = dt.timedelta(days=365)


def _mark_rolled_off(conn, night: Night) -> int:
    """Customers whose orders left the trailing year tonight need their facts recomputed too."""
    orders = schema.stg_orders
    ids = conn.execute(
        select(orders.c.customer_id)
        .where(
            orders.c.ordered_at >= night.window_start_naive - TRAILING_YEAR,
            orders.c.ordered_at < night.window_end_naive - TRAILING_YEAR,
        )
        .distinct()
    ).scalars()
    rows = [{"night": night.date, "customer_id": cid} for cid in ids]
    return insert_ignore(conn, schema.changed_customers, rows, ("night", "customer_id"))


def stage_facts(settings: Settings, night: Night, run_id: str, full_refresh: bool = False) -> dict:
    """Recompute customer facts for the customers changed in the night (all of them on a full refresh)."""
    full_rebuild = full_refresh
    with _stage(settings, night, run_id, "facts") as counts:
        facts = schema.customer_facts
        engine = warehouse_engine(settings.warehouse)
        if _reproduce_if_superseded(engine, night, "facts", counts):
            return counts  # the current facts are a later night's: an old window must not touch them
        params = {
            "night": night.date,
            "year_start": night.window_end_naive - TRAILING_YEAR,
            "window_end": night.window_end_naive,
        }
        with engine.begin() as conn:
            counts["rolled_off"] = 0 if full_rebuild else _mark_rolled_off(conn, night)
            changed = select(schema.changed_customers.c.customer_id).where(
                schema.changed_customers.c.night == night.date
            )
            scope = None if full_rebuild else facts.c.customer_id.in_(changed)
            counts["customers"] = materialize(
                conn, "marts/customer_facts", facts, params, scope, incremental=not full_rebuild
            )
            counts["mode"] = "full" if full_rebuild else "incremental"
            refresh_statistics(conn, facts.name, counts["customers"])
        log.info("customer facts: %d customers recomputed (%s)", counts["customers"], counts["mode"])
    return counts


class NightNotReproducible(RuntimeError):
    """A re-run of an older night whose records cannot be reproduced: names the night and what is missing."""


def _later_night(engine: Engine, night: Night) -> dt.date | None:
    """The latest night after this one whose extract completed: from then on, facts are that night's."""
    log_ = schema.run_log
    with engine.connect() as conn:
        return conn.execute(
            select(func.max(log_.c.night)).where(
                log_.c.stage == "extract", log_.c.status == "ok", log_.c.night > night.date
            )
        ).scalar()


def _night_records(conn, night: Night) -> dict:
    """What night ``night`` recorded: snapshot rows, occasions and outbox rows by status."""
    snap, occ, box = schema.segment_snapshots, schema.occasions, schema.outbox
    by_status = {}
    for name, table in (("occasions", occ), ("outbox", box)):
        rows = conn.execute(
            select(table.c.status, func.count()).where(table.c.night == night.date).group_by(table.c.status)
        )
        by_status[name] = {status: n for status, n in sorted(rows)}
    snapshot = conn.execute(select(func.count()).select_from(snap).where(snap.c.night == night.date)).scalar()
    return {"snapshot_rows": snapshot, **by_status}


def _reproduce_if_superseded(engine: Engine, night: Night, stage: str, counts: dict) -> bool:
    """Re-running a night after later nights ran reproduces it from its records, or fails.

    Facts are the current state of each customer: recomputing an old night from them
    (or recomputing them with the old night's trailing year) would rewrite history with
    later knowledge, or the present with an old view. So a re-run of a superseded night
    changes nothing: each stage checks that the night's first run completed it and that
    the night's snapshot is still there, and reports the counts of what the night
    recorded. When they are missing the night cannot be reproduced, and the stage fails
    (:class:`NightNotReproducible`) instead of succeeding doing nothing.
    """
    later = _later_night(engine, night)
    if later is None:
        return False
    with engine.connect() as conn:
        recorded = {
            stage.name: stage_counts(conn, night.date, stage.name, first=True) for stage in NIGHT_STAGES
        }
        records = _night_records(conn, night)
    _check_reproducible(night, later, recorded, records)
    counts.update(recorded[stage] or {})
    counts["reproduced"] = f"night {night}'s rows kept as recorded (a later night {later} has run)"
    counts["records"] = records
    log.info("%s: %s: %s", stage, counts["reproduced"], records)
    return True


def _check_reproducible(night: Night, later: dt.date, recorded: dict, records: dict) -> None:
    """Every stage of the night completed once, and its snapshot is still kept; else fail saying which."""
    cannot = f"night {night} cannot be reproduced (a later night {later} has run)"
    missing = [name for name, counts in recorded.items() if counts is None]
    if missing:
        raise NightNotReproducible(
            f"{cannot}: its stages {', '.join(missing)} never completed, so there is no record of the "
            "night to keep, and running them now would rewrite the current facts with that night's view"
        )
    kept = recorded["segments"].get("snapshot_rows")
    if kept and not records["snapshot_rows"]:
        raise NightNotReproducible(
            f"{cannot}: its segment snapshot ({kept} rows) has been pruned "
            "(daily snapshots are kept RETENTION_SNAPSHOT_DAYS nights, those of the 1st of a month for good)"
        )


def stage_segments(settings: Settings, night: Night, run_id: str) -> dict:
    """Churn fit, tonight's segment snapshot, the segment report and its chart."""
    from retention import segments

    with _stage(settings, night, run_id, "segments") as counts:
        engine = warehouse_engine(settings.warehouse)
        if _reproduce_if_superseded(engine, night, "segments", counts):
            return counts
        with engine.begin() as conn:
            fits = segments.fit_churn(conn, night, settings)
            counts["snapshot_rows"] = segments.build_snapshots(conn, night, settings, fits)
            # Churn figures a fit could not give are NULL; the outcomes say for whom and why.
            segments.snapshot_outcomes(conn, night.date, fits)
            counts["pruned_rows"] = segments.prune_snapshots(conn, night, settings.snapshot_days)
            summary = segments.segment_summary(conn, night.date)
            segments.write_report(conn, night.date, summary)
        chart = segments.draw_chart(
            night.date, summary, settings.home_dir / "reports" / f"segments-{night}.png"
        )
        log.info("%s\nChart: %s", segments.format_summary(night.date, summary), chart)
        counts.update({"fits": fits, "summary": summary, "chart": str(chart) if chart else None})
    return counts


def stage_recommendations(settings: Settings, night: Night, run_id: str, full_refresh: bool = False) -> dict:
    """Tonight's product rules and the changed customers' next purchases and accessories."""
    from retention.recommend import build_recommendations

    # Unchanged customers keep the scores of the night that last computed them; once a week
    # (and on a full refresh) everyone is recomputed against the current rules.
    full_rebuild = full_refresh or night.date.weekday() == settings.recommendations_full_weekday
    with _stage(settings, night, run_id, "recommendations") as counts:
        if _reproduce_if_superseded(warehouse_engine(settings.warehouse), night, "recommendations", counts):
            return counts
        with warehouse_engine(settings.warehouse).begin() as conn:
            counts.update(
                build_recommendations(
                    conn,
                    night,
                    full_rebuild=full_rebuild,
                    min_pairs=settings.rules_min_pairs,
                    min_confidence=settings.rules_min_confidence,
                    top_n=settings.recommendations_top_n,
                )
            )
        log.info("recommendations: %s", counts)
    return counts


def stage_occasions(settings: Settings, night: Night, run_id: str) -> dict:
    with _stage(settings, night, run_id, "occasions") as counts:
        if _reproduce_if_superseded(warehouse_engine(settings.warehouse), night, "occasions", counts):
            return counts
        counts.update(detect(warehouse_engine(settings.warehouse), night, settings))
        left_out = registry.problems(settings)
        if left_out:  # a declaration that cannot be used leaves out its own occasion, not the night
            counts["declaration_problems"] = left_out
    return counts


def stage_render(settings: Settings, night: Night, run_id: str, secret: bytes | None = None) -> dict:
    with _stage(settings, night, run_id, "render") as counts:
        if _reproduce_if_superseded(warehouse_engine(settings.warehouse), night, "render", counts):
            return counts  # the outbox key would keep messages from doubling; this keeps them as recorded
        counts.update(
            fill(warehouse_engine(settings.warehouse), night, settings, secret or secret_from_env())
        )
    return counts


def stage_deliver(
    settings: Settings,
    smtp: SmtpConfig,
    until: dt.datetime,
    *,
    dry_run: bool = False,
    secret: bytes | None = None,
) -> dict:
    """Send what is due by ``until`` (aware or naive UTC)."""
    run = DeliveryRun.from_settings(settings, secret or secret_from_env())
    return run.deliver(
        warehouse_engine(settings.warehouse), smtp, until, dry_run=dry_run or settings.delivery_dry_run
    )


def run_night(
    settings: Settings, night: Night, run_id: str, *, full_refresh: bool = False
) -> dict[str, dict]:
    """The whole nightly chain for one night, up to a filled outbox."""
    secret = secret_from_env()  # render signs links with it: a missing or weak secret fails before any stage
    stage_migrate(settings)
    results = {}
    for stage in NIGHT_STAGES:
        log.info("night %s: %s", night, stage.name)
        results[stage.name] = stage(settings, night, run_id, full_refresh=full_refresh, secret=secret)
    return results
