"""Render the night's selected occasions into the outbox, exactly once per key.

The outbox key is (customer, occasion, occasion date); the insert ignores a key that
exists already, so re-runs and racing runs can never create a second message. Each
message gets a ``send_at`` at the start of the send window in the customer's own
time zone on the occasion date.

Messages are rendered per (occasion, language) in a worker process
(:class:`retention.render.RenderPool`) under the template bounds; the contexts are
built and the rows written here, in the caller. Any failure of a template (an error,
recursion, memory, a timeout, a dead worker) blocks its occasion in that language only:
its candidates are marked ``blocked`` in ``occasions`` with the reason, and a later
render of the night (after the template is fixed) picks them up again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter, defaultdict
from email.utils import parseaddr
from pathlib import Path

from sqlalchemy import Connection, Engine, and_, select

from retention import schema
from retention.contexts import Lookups, context_for, gather
from retention.db import insert_ignore
from retention.night import Night, local_moment
from retention.progress import Progress
from retention.render import Message, Renderer, RenderLimits, RenderPool, TemplateProblem
from retention.settings import Settings
from retention.unsubscribe import sign

__all__ = ["fill", "message_id", "send_at"]

log = logging.getLogger(__name__)


def message_id(customer_id: int, occasion: str, occasion_date: dt.date, sender: str) -> str:
    """A Message-ID derived from the outbox key: a resend would carry the same id."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "retention.invalid"
    return f"<{occasion}.{customer_id}.{occasion_date:%Y%m%d}@{domain}>"


def send_at(occasion_date: dt.date, time_zone: str, local_time: dt.time) -> dt.datetime:
    """A local time of the customer's on a date (the send window's start or end), as naive UTC."""
    return local_moment(occasion_date, local_time, time_zone)


def fill(warehouse: Engine, night: Night, settings: Settings, secret: bytes) -> dict:
    """Render every selected occasion of the night that has no outbox row yet.

    A template that cannot render blocks its own occasion in that language only: the
    problem is logged, returned under ``template_failures`` keyed ``occasion/language``
    and written as the reason of the blocked candidates; everything else still goes out.
    """
    counts: Counter = Counter()
    missing: Counter = Counter()  # messages skipped because the data they quote has gone
    failures: dict[str, str] = {}
    try:
        renderer: Renderer | TemplateProblem = Renderer(settings.templates_path, settings.default_language)
    except TemplateProblem as problem:  # e.g. a broken _strings.toml: every template's problem
        renderer = problem
    limits = RenderLimits.from_settings(settings)
    with warehouse.begin() as conn:
        pending = _pending(conn, night)
        lookups = gather(conn, pending)
        groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for item in pending:
            groups[(item["occasion"], item["language"])].append(item)
        blocked = _lint_verdict(settings, limits, renderer, list(groups))
        progress = Progress("render", len(pending), unit="messages", logger=log)
        with RenderPool(settings.templates_path, settings.default_language, limits) as pool:
            for (occasion, language), items in sorted(groups.items()):
                progress.advance(len(items))
                if f"{occasion}/{language}" in blocked:
                    problem = blocked[f"{occasion}/{language}"]
                    failures[f"{occasion}/{language}"] = problem
                    log.error(
                        "%s in %s blocked by lint for %d customers: %s",
                        occasion,
                        language,
                        len(items),
                        problem,
                    )
                    _mark(conn, items, "blocked", f"template: {problem}"[:1000])
                    continue
                try:
                    rows = _render_group(pool, renderer, items, lookups, night, settings, secret, missing)
                except TemplateProblem as problem:
                    failures[f"{occasion}/{language}"] = str(problem)
                    log.error(
                        "%s in %s not rendered for %d customers: %s", occasion, language, len(items), problem
                    )
                    _mark(conn, items, "blocked", f"template: {problem}"[:1000])
                    continue
                _mark(conn, [i for i in items if i["status"] == "blocked"], "selected", None)
                for start in range(0, len(rows), 1000):
                    counts[occasion] += insert_ignore(
                        conn,
                        schema.outbox,
                        rows[start : start + 1000],
                        ("customer_id", "occasion", "occasion_date"),
                    )
    progress.finish()
    log.info("outbox: %d new messages %s", sum(counts.values()), dict(counts))
    return {"queued": dict(counts), "template_failures": failures, "missing_data": dict(missing)}


def _lint_verdict(
    settings: Settings,
    limits: RenderLimits,
    renderer: Renderer | TemplateProblem,
    pairs: list[tuple[str, str]],
) -> dict[str, str]:
    """The linter's verdict on tonight's templates (``retention.lint.verdict``), the same one the
    ``retention_templates`` DAG and ``retention templates lint`` give: a template whose sample
    customers fail is blocked even if tonight's customers happen to render. A language without
    its own template is judged by the file it falls back to."""
    from retention.lint import lint, verdict

    if not pairs or isinstance(renderer, TemplateProblem):
        return {}  # nothing to render, or nothing can render (fill reports that itself)
    problems = lint(
        settings.templates_path, settings.default_language, settings.shop_name, settings.shop_url, limits
    )
    files = {}
    for pair in pairs:
        try:
            files[pair] = tuple(renderer.template_name(*pair).removesuffix(".jinja").split("/"))
        except TemplateProblem:
            continue  # no template at all: the render reports it for this pair
    by_file = verdict(problems, sorted(set(files.values())), Path(settings.templates_path).resolve())
    return {
        f"{o}/{lang}": by_file[f"{fo}/{fl}"]
        for (o, lang), (fo, fl) in files.items()
        if f"{fo}/{fl}" in by_file
    }


def _render_group(
    pool: RenderPool,
    renderer: Renderer | TemplateProblem,
    items: list[dict],
    lookups: Lookups,
    night: Night,
    settings: Settings,
    secret: bytes,
    missing: Counter,
) -> list[dict]:
    """One (occasion, language): contexts here, messages in the worker; raises TemplateProblem."""
    if isinstance(renderer, TemplateProblem):
        raise renderer
    occasion, language = items[0]["occasion"], items[0]["language"]
    name = renderer.template_name(occasion, language)
    ready = [
        (item, context) for item in items if (context := _context(item, lookups, settings, secret, missing))
    ]
    messages = pool.render(name, [context for _, context in ready])
    return [
        _message_row(item, message, night, settings)
        for (item, _), message in zip(ready, messages, strict=True)
    ]


def _mark(conn: Connection, items: list[dict], status: str, reason: str | None) -> None:
    """Record in ``occasions`` that candidates were blocked by their template (or are no longer)."""
    occ = schema.occasions
    ids = [item["occasion_id"] for item in items]
    for start in range(0, len(ids), 5000):
        conn.execute(
            occ.update()
            .where(occ.c.occasion_id.in_(ids[start : start + 5000]))
            .values(status=status, reason=reason)
        )


def _pending(conn: Connection, night: Night) -> list[dict]:
    occ, cust, box = schema.occasions, schema.stg_customers, schema.outbox
    query = (
        select(occ, cust.c.email, cust.c.first_name, cust.c.last_name, cust.c.time_zone, cust.c.country)
        .join(cust, cust.c.customer_id == occ.c.customer_id)
        .outerjoin(
            box,
            and_(
                box.c.customer_id == occ.c.customer_id,
                box.c.occasion == occ.c.occasion,
                box.c.occasion_date == occ.c.occasion_date,
            ),
        )
        .where(
            occ.c.night == night.date,
            # blocked: a template failed on an earlier render of this night; try again
            occ.c.status.in_(("selected", "blocked")),
            box.c.outbox_id.is_(None),
        )
        .order_by(occ.c.occasion, occ.c.customer_id)
    )
    rows = []
    for row in conn.execute(query).mappings():
        item = dict(row)
        item.update(json.loads(item.pop("details")))
        rows.append(item)
    return rows


def _context(
    item: dict, lookups: Lookups, settings: Settings, secret: bytes, missing: Counter
) -> dict | None:
    """One message's context; a message whose data vanished is skipped and counted, not fatal."""
    unsubscribe_url = (
        f"{settings.unsubscribe_url}?token={sign(secret, item['customer_id'], item['email'])}"
    )
    try:
        return context_for(item, lookups, settings, unsubscribe_url)
    except (KeyError, TypeError, ValueError) as exc:
        missing[item["occasion"]] += 1
        log.warning(
            "%s for customer %s not rendered: the data it quotes is missing (%s: %s)",
            item["occasion"],
            item["customer_id"],
            type(exc).__name__,
            exc,
        )
        return None


def _message_row(item: dict, message: Message, night: Night, settings: Settings) -> dict:
    occasion_date = item["occasion_date"]
    return {
        "customer_id": item["customer_id"],
        "occasion": item["occasion"],
        "occasion_date": occasion_date,
        "night": night.date,
        "email": item["email"],
        "language": item["language"],
        "subject": message.subject,
        "text_body": message.text,
        "html_body": message.html,
        "template_hash": message.template_hash,
        "message_id": message_id(item["customer_id"], item["occasion"], occasion_date, settings.sender),
        "send_at": send_at(occasion_date, item["time_zone"], settings.send_window_start),
        "send_before": send_at(occasion_date, item["time_zone"], settings.send_window_end),
        "time_zone": item["time_zone"],
        "status": "queued",
        "attempts": 0,
    }
