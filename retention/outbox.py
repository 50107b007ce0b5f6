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
from retention.render import Message, Renderer, RenderLimits, RenderPool, TemplateProblem, variant_of
from retention.settings import Settings
from retention.template_store import effective_templates
from retention.unsubscribe import sign

__all__ = ["fill", "rerender", "message_id", "send_at"]

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
    Templates saved on the Retention page (``retention.template_store``) override the
    shipped files; each message records the saved version it was rendered from.
    """
    with effective_templates(warehouse, settings) as (effective, versions):
        return _fill(warehouse, night, effective, secret, versions)


def _fill(
    warehouse: Engine, night: Night, settings: Settings, secret: bytes, versions: dict[tuple[str, str], int]
) -> dict:
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
        lookups = gather(conn, pending, settings, secret)
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
                    rows = _render_group(
                        pool, renderer, items, lookups, night, settings, secret, missing, versions, blocked
                    )
                except TemplateProblem as problem:
                    failures[f"{occasion}/{language}"] = str(problem)
                    log.error(
                        "%s in %s not rendered for %d customers: %s", occasion, language, len(items), problem
                    )
                    _mark(conn, items, "blocked", f"template: {problem}"[:1000])
                    continue
                b_key = f"{occasion}/{language}.b"
                if b_key in blocked:  # a broken variant b: its customers got a; reported all the same
                    failures[b_key] = blocked[b_key]
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


def rerender(
    warehouse: Engine,
    settings: Settings,
    secret: bytes,
    occasion: str | None = None,
    language: str | None = None,
) -> dict:
    """Render the still-queued messages again with the templates that are live now.

    After a template is saved on the Retention page, messages already in the queue still
    carry the wording they were rendered with. This renders every ``queued`` message of
    ``occasion`` / ``language`` (all when None) whose template version or content hash is
    not the live one, from the same occasion details, and writes subject and bodies back,
    but only while the row is still ``queued``: a message a delivery run has claimed in the
    meantime goes out as it was (counted as ``claimed``). A template that fails lint or
    cannot render keeps its messages as they are (``template_failures``). Idempotent: a
    second call finds nothing to do.
    """
    with effective_templates(warehouse, settings) as (effective, versions):
        return _rerender(warehouse, effective, secret, versions, occasion, language)


def _rerender(
    warehouse: Engine,
    settings: Settings,
    secret: bytes,
    versions: dict[tuple[str, str], int],
    occasion: str | None,
    language: str | None,
) -> dict:
    counts: Counter = Counter()
    failures: dict[str, str] = {}
    missing: Counter = Counter()
    renderer = Renderer(settings.templates_path, settings.default_language)  # a broken _strings.toml raises
    limits = RenderLimits.from_settings(settings)
    box = schema.outbox
    with warehouse.connect() as conn:
        queued = _queued(conn, occasion, language)
        lookups = gather(conn, queued, settings, secret)
    # A message rendered from variant b stays variant b (while the b file exists).
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for item in queued:
        groups[(item["occasion"], item["language"], item["variant"] or "a")].append(item)
    blocked = _lint_verdict(settings, limits, renderer, sorted({(o, lang) for o, lang, _ in groups}))
    with RenderPool(settings.templates_path, settings.default_language, limits) as pool:
        for (occ, lang, variant), items in sorted(groups.items()):
            a_name = renderer.template_name(occ, lang)
            b_name = renderer.variant_name(a_name, "b") if variant == "b" else None
            name, key = (b_name, f"{occ}/{lang}.b") if b_name else (a_name, f"{occ}/{lang}")
            version_id, live_hash = versions.get(_pair(name)), renderer.template_hash(name)
            stale = [
                i for i in items if i["template_hash"] != live_hash or i["template_version_id"] != version_id
            ]
            counts["current"] += len(items) - len(stale)
            if not stale:
                continue
            if key in blocked:
                failures[key] = blocked[key]
                counts["kept"] += len(stale)
                continue
            ready = [(i, c) for i in stale if (c := _context(i, lookups, settings, secret, missing))]
            counts["kept"] += len(stale) - len(ready)
            try:
                messages = pool.render(name, [c for _, c in ready])
            except TemplateProblem as problem:
                failures[key] = str(problem)
                counts["kept"] += len(ready)
                continue
            with warehouse.begin() as conn:
                for (item, _), message in zip(ready, messages, strict=True):
                    updated = conn.execute(
                        box.update()
                        .where(box.c.outbox_id == item["outbox_id"], box.c.status == "queued")
                        .values(
                            subject=message.subject,
                            text_body=message.text,
                            html_body=message.html,
                            template_hash=message.template_hash,
                            template_version_id=version_id,
                        )
                    ).rowcount
                    counts["rerendered" if updated else "claimed"] += updated or 1
    for key, problem in failures.items():
        log.error("queued %s messages kept their wording: %s", key, problem)
    log.info("rerender: %s", dict(counts))
    return {
        **{k: counts[k] for k in ("rerendered", "current", "claimed", "kept")},
        "template_failures": failures,
    }


def _queued(conn: Connection, occasion: str | None, language: str | None) -> list[dict]:
    """Queued messages with what their context needs: the occasion's details, the customer."""
    occ, cust, box = schema.occasions, schema.stg_customers, schema.outbox
    query = (
        select(
            box.c.outbox_id,
            box.c.customer_id,
            box.c.occasion,
            box.c.occasion_date,
            box.c.language,
            box.c.email,
            box.c.template_hash,
            box.c.template_version_id,
            box.c.variant,
            occ.c.details,
            cust.c.first_name,
            cust.c.last_name,
            cust.c.time_zone,
            cust.c.country,
        )
        .join(
            occ,
            and_(
                occ.c.customer_id == box.c.customer_id,
                occ.c.occasion == box.c.occasion,
                occ.c.occasion_date == box.c.occasion_date,
            ),
        )
        .join(cust, cust.c.customer_id == box.c.customer_id)
        .where(box.c.status == "queued")
        .order_by(box.c.outbox_id)
    )
    if occasion:
        query = query.where(box.c.occasion == occasion)
    if language:
        query = query.where(box.c.language == language)
    rows = []
    for row in conn.execute(query).mappings():
        item = dict(row)
        item.update(json.loads(item.pop("details")))
        rows.append(item)
    return rows


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
    from retention.registry import occasions

    if not pairs or isinstance(renderer, TemplateProblem):
        return {}  # nothing to render, or nothing can render (fill reports that itself)
    problems = lint(
        settings.templates_path,
        settings.default_language,
        settings.shop_name,
        settings.shop_url,
        limits,
        occasions=occasions(settings),
    )
    files = {}
    for occasion, language in pairs:
        try:
            name = renderer.template_name(occasion, language)
        except TemplateProblem:
            continue  # no template at all: the render reports it for this pair
        files[(occasion, language)] = _pair(name)
        b_name = renderer.variant_name(name, "b")
        if b_name:
            files[(occasion, f"{language}.b")] = _pair(b_name)
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
    versions: dict[tuple[str, str], int],
    blocked: dict[str, str] | None = None,
) -> list[dict]:
    """One (occasion, language): contexts here, messages in the worker; raises TemplateProblem.

    When the template has a ``b`` variant (``<language>.b.jinja``), each customer gets the
    variant :func:`retention.render.variant_of` gives them, recorded in ``outbox.variant``.
    A ``b`` that lint blocks turns the experiment off for the night (everyone gets ``a``, no
    variant is recorded); one that fails while rendering falls back to ``a`` for its customers
    (recorded as ``a``, the wording they got). Nobody loses a message to an experiment; the
    problem is logged and reported under ``template_failures`` as ``occasion/language.b``.
    """
    if isinstance(renderer, TemplateProblem):
        raise renderer
    occasion, language = items[0]["occasion"], items[0]["language"]
    name = renderer.template_name(occasion, language)
    ready = [
        (item, context) for item in items if (context := _context(item, lookups, settings, secret, missing))
    ]
    b_name = renderer.variant_name(name, "b")
    b_key = f"{occasion}/{language}.b"
    if b_name and blocked is not None and b_key in blocked:
        log.error("variant b of %s in %s blocked by lint, all get a: %s", occasion, language, blocked[b_key])
        b_name = None
    if not b_name:
        return _rows(pool.render(name, [c for _, c in ready]), ready, name, None, night, settings, versions)
    by_variant: dict[str, list[tuple[dict, dict]]] = {"a": [], "b": []}
    for item, context in ready:
        by_variant[variant_of(item["customer_id"], occasion, settings.holdout_salt)].append((item, context))
    rows = _rows(
        pool.render(name, [c for _, c in by_variant["a"]]),
        by_variant["a"],
        name,
        "a",
        night,
        settings,
        versions,
    )
    try:
        messages = pool.render(b_name, [c for _, c in by_variant["b"]])
    except TemplateProblem as problem:
        if blocked is not None:
            blocked[b_key] = str(problem)
        log.error("variant b of %s in %s not rendered, its customers get a: %s", occasion, language, problem)
        messages, b_name = pool.render(name, [c for _, c in by_variant["b"]]), name
    variant = "b" if b_name != name else "a"
    return rows + _rows(messages, by_variant["b"], b_name, variant, night, settings, versions)


def _rows(
    messages: list[Message],
    ready: list[tuple[dict, dict]],
    name: str,
    variant: str | None,
    night: Night,
    settings: Settings,
    versions: dict[tuple[str, str], int],
) -> list[dict]:
    version_id = versions.get(_pair(name))
    return [
        {
            **_message_row(item, message, night, settings),
            "template_version_id": version_id,
            "variant": variant,
        }
        for (item, _), message in zip(ready, messages, strict=True)
    ]


def _pair(name: str) -> tuple[str, str]:
    """``("birthday", "de")`` of the template file ``birthday/de.jinja``."""
    occasion, _, file = name.partition("/")
    return occasion, file.removesuffix(".jinja")


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
    unsubscribe_url = f"{settings.unsubscribe_url}?token={sign(secret, item['customer_id'], item['email'])}"
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
