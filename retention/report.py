"""What a night produced, for people (plain text) and for programs (``--json``).

The JSON shape is a contract (DESIGN.md, "The command line"); keys are added, never
renamed. ``tests/test_cli.py`` pins it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict

from sqlalchemy import Engine, func, select

from retention import schema
from retention.earnings import earnings
from retention.runlog import stage_counts

__all__ = ["latest_night", "night_report", "quarantine_report", "format_report"]


def latest_night(engine: Engine) -> dt.date | None:
    """The most recent night with a successful extract."""
    log = schema.run_log
    with engine.connect() as conn:
        return conn.execute(
            select(func.max(log.c.night)).where(log.c.stage == "extract", log.c.status == "ok")
        ).scalar()


def _grouped(conn, query) -> dict:
    out: dict = defaultdict(dict)
    for key, sub, n in conn.execute(query):
        out[key][sub] = n
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def night_report(
    engine: Engine, night: dt.date, message_cost: float = 0.01, variant_min_sample: int = 300
) -> dict:
    """The report of one night in the documented JSON shape; ``message_cost`` prices a message
    for the return on it (``earnings``, ``RETENTION_MESSAGE_COST``)."""
    report: dict = {"logical_date": night.isoformat()}
    occ, box, facts = schema.occasions, schema.outbox, schema.customer_facts
    with engine.connect() as conn:
        extracted = stage_counts(conn, night, "extract")
        if extracted is not None:
            report["extract"] = {
                "rows": extracted["rows"],
                "quarantined": extracted["quarantined"],
                # rows of forgotten people the extract read and left out (retention.erasure)
                "skipped_erased": extracted.get("skipped_erased", {}),
            }
        segmented = stage_counts(conn, night, "segments")
        if segmented is not None:
            from retention.segments import segment_summary

            report["segments"] = segment_summary(conn, night)
            report["segments"]["buyers"] = conn.execute(
                select(func.count()).select_from(facts).where(facts.c.orders > 0)
            ).scalar()
            if "fits" not in segmented:  # a re-run that left a superseded night as it was
                segmented = stage_counts(conn, night, "segments", first=True) or {}
            report["segments"]["churn"] = churn_status(segmented.get("fits") or {})
        if stage_counts(conn, night, "occasions") is not None:
            report["occasions"] = _grouped(
                conn,
                select(occ.c.occasion, occ.c.language, func.count())
                .where(occ.c.night == night, occ.c.status == "selected")
                .group_by(occ.c.occasion, occ.c.language),
            )
            report["occasions_skipped"] = _grouped(
                conn,
                select(occ.c.occasion, occ.c.reason, func.count())
                .where(occ.c.night == night, occ.c.status != "selected")
                .group_by(occ.c.occasion, occ.c.reason),
            )
            detected = stage_counts(conn, night, "occasions") or {}
            if detected.get("declaration_problems"):
                report["occasion_declaration_problems"] = detected["declaration_problems"]
            if detected.get("occasion_failures"):
                report["occasion_failures"] = detected["occasion_failures"]
            report["holdout"] = holdout_report(conn, night)
            report["earnings"] = earnings(conn, night, message_cost, min_sample=variant_min_sample)
        rendered = stage_counts(conn, night, "render")
        if rendered is not None:
            report["render"] = {
                "queued": rendered.get("queued", {}),
                "template_failures": rendered.get("template_failures", {}),
                "missing_data": rendered.get("missing_data", {}),
            }
            rows = conn.execute(
                select(box.c.status, func.count()).where(box.c.night == night).group_by(box.c.status)
            )
            report["outbox"] = {status: n for status, n in sorted(rows)}
    return report


#: The churn models and the figure that needs both, in the order the report lists them.
CHURN_MODELS = (("bg_nbd", "BG/NBD"), ("gamma_gamma", "Gamma-Gamma"), ("clv", "CLV"))


def churn_status(fits: dict) -> dict:
    """Per model: ``status`` (fitted, partial, fallback), ``reason`` of empty figures, customers scored.

    Read from the segments stage's run log (``counts["fits"]``); a night logged before the
    outcomes were recorded shows ``unknown``.
    """
    out = {}
    for key, _label in CHURN_MODELS:
        fit = fits.get(key)
        if not isinstance(fit, dict) or "status" not in fit:
            out[key] = {"status": "unknown", "reason": "not recorded for this night"}
            continue
        out[key] = {"status": fit["status"], "reason": fit.get("reason")}
        out[key].update({k: fit[k] for k in ("customers", "scored", "warning") if fit.get(k) is not None})
    return out


def holdout_report(conn, night: dt.date) -> dict:
    """Repeat-purchase rates within 30/60/90 days, messaged versus holdout, per occasion."""
    from retention.sqlmodels import select_model

    report: dict = {}
    for row in select_model(conn, "reports/holdout_uplift", {"night": night}):
        group = "messaged" if row["status"] == "selected" else "holdout"
        figures = {"customers": int(row["customers"])}
        for n in (30, 60, 90):
            eligible, bought = int(row[f"eligible_{n}"] or 0), int(row[f"bought_{n}"] or 0)
            figures[f"eligible_{n}"] = eligible
            figures[f"rate_{n}"] = round(bought / eligible, 4) if eligible else None
        report.setdefault(row["occasion"], {})[group] = figures
    for figures in report.values():
        messaged, holdout = figures.get("messaged", {}), figures.get("holdout", {})
        for n in (30, 60, 90):
            a, b = messaged.get(f"rate_{n}"), holdout.get(f"rate_{n}")
            figures[f"uplift_{n}"] = round(a - b, 4) if a is not None and b is not None else None
    return dict(sorted(report.items()))


def quarantine_report(
    engine: Engine, rule: str | None = None, limit: int = 1000, include_resolved: bool = False
) -> dict:
    """The held-back rows and why, newest night first (rows that loaded later only on request)."""
    q = schema.quarantine
    where = [q.c.rule == rule] if rule else []
    if not include_resolved:
        where.append(q.c.resolved_night.is_(None))
    with engine.connect() as conn:
        by_rule = dict(
            sorted(conn.execute(select(q.c.rule, func.count()).where(*where).group_by(q.c.rule)).all())
        )
        rows = conn.execute(
            select(
                q.c.source_table, q.c.source_key, q.c.rule, q.c.detail, q.c.night, q.c.resolved_night, q.c.raw
            )
            .where(*where)
            .order_by(q.c.night.desc(), q.c.source_table, q.c.rule, q.c.source_key)
            .limit(limit)
        ).mappings()
        listed = [
            {
                **{k: v for k, v in row.items() if k != "raw"},
                "night": row["night"].isoformat(),
                "raw": json.loads(row["raw"]),
            }
            for row in rows
        ]
    return {"total": sum(by_rule.values()), "by_rule": by_rule, "rows": listed}


def format_report(report: dict) -> str:
    """The report for people: one block per stage."""
    lines = [f"Night {report['logical_date']}"]
    if "extract" in report:
        rows = ", ".join(f"{t} {n}" for t, n in report["extract"]["rows"].items())
        bad = ", ".join(f"{r} {n}" for r, n in report["extract"]["quarantined"].items()) or "none"
        lines += [f"  extracted:   {rows}", f"  quarantined: {bad}"]
        if report["extract"].get("skipped_erased"):
            erased = ", ".join(f"{t} {n}" for t, n in report["extract"]["skipped_erased"].items())
            lines.append(f"  skipped (forgotten people): {erased}")
    if "segments" in report:
        seg = report["segments"]
        lines.append(
            f"  customers:   {seg['customers']} ({seg.get('buyers', 0)} have bought, {seg['unprofitable']} unprofitable)"
        )
        for key, label in (("rfm", "RFM"), ("abc", "ABC"), ("lifecycle", "lifecycle")):
            lines.append(f"  {label + ':':12} " + ", ".join(f"{k} {v}" for k, v in seg[key].items()))
        lines += _format_churn(seg.get("churn", {}))
    lines += _format_occasions(report)
    lines += _format_holdout(report)
    lines += _format_earnings(report)
    if "outbox" in report:
        box = ", ".join(f"{s} {n}" for s, n in report["outbox"].items()) or "empty"
        lines.append(f"  outbox:      {box}")
    return "\n".join(lines)


def _format_occasions(report: dict) -> list[str]:
    lines = []
    if "occasions" in report:
        for occasion, langs in report["occasions"].items():
            detail = ", ".join(f"{lang} {n}" for lang, n in langs.items())
            lines.append(f"  occasion {occasion}: {sum(langs.values())} ({detail})")
        if not report["occasions"]:
            lines.append("  occasions:   none")
    for file, problem in report.get("occasion_declaration_problems", {}).items():
        lines.append(f"  OCCASION LEFT OUT {file}: {problem}")
    for occasion, problem in report.get("occasion_failures", {}).items():
        lines.append(f"  OCCASION LEFT OUT {occasion}: {problem}")
    for occasion, problem in report.get("render", {}).get("template_failures", {}).items():
        lines.append(f"  NOT RENDERED {occasion}: {problem}")
    return lines


def _format_holdout(report: dict) -> list[str]:
    lines = []
    for occasion, figures in report.get("holdout", {}).items():
        messaged, holdout = figures.get("messaged", {}), figures.get("holdout", {})
        rates = [
            f"{n}d {messaged[f'rate_{n}']:.0%} vs {holdout[f'rate_{n}']:.0%}"
            for n in (30, 60, 90)
            if messaged.get(f"rate_{n}") is not None and holdout.get(f"rate_{n}") is not None
        ]
        if rates:
            lines.append(f"  uplift {occasion} (bought again, messaged vs holdout): " + ", ".join(rates))
    return lines


def _format_earnings(report: dict) -> list[str]:
    """One line per occasion: its 90-day margin uplift per customer, interval, cost and return."""
    lines = []
    for occasion, block in report.get("earnings", {}).get("occasions", {}).items():
        h = block["total"]["horizons"]["90"]
        if h["margin_per_customer_uplift"] is None or h["margin_per_customer_interval"] is None:
            continue
        low, high = h["margin_per_customer_interval"]
        back = f", return {h['return_on_cost']:+.1f}x the cost" if h["return_on_cost"] is not None else ""
        lines.append(
            f"  earns {occasion} (90 days, {h['messaged']['customers']} messaged vs "
            f"{h['holdout']['customers']} held out): margin {h['margin_per_customer_uplift']:+.2f} per "
            f"customer [{low:+.2f}, {high:+.2f}], messages cost {h['cost']:.2f}{back}"
        )
    for key, v in report.get("earnings", {}).get("variants", {}).items():
        lines.append(
            f"  variants {key}: a {v['a_customers']}, b {v['b_customers']} messaged; "
            f"winner {v['winner'] or 'none yet'} ({v['why']})"
        )
    return lines


def _format_churn(churn: dict) -> list[str]:
    """One line for the models, then one per model whose figures are (partly) empty, with why."""
    if not churn:
        return []
    known = [(key, label) for key, label in CHURN_MODELS if key in churn]
    lines = ["  churn:       " + ", ".join(f"{label} {churn[key]['status']}" for key, label in known)]
    for key, label in known:
        if churn[key]["status"] != "fitted" and churn[key].get("reason"):
            lines.append(f"    {label}: {churn[key]['reason']}")
    return lines
