"""Detect the night's occasions: who gets written to, for what, on which local date.

Each occasion (declared once in :mod:`retention.registry`) is a SQL model returning one row
per candidate customer with the details a message may quote, and its own post-filter. Then
the people rules apply to every occasion alike, in this order, and every candidate is
recorded in ``occasions`` with its status:

1. no marketing consent, a suppressed address, or a kind of message the customer stopped on
   the unsubscribe page (``unsubscribe_preferences``, e.g. product suggestions), or a product
   suggestion to a customer who gave a low feedback rating lately
   (:func:`retention.feedback.held_back`): ``skipped``;
2. one message a day: the occasion first in ``occasion_priority`` wins, the others are
   ``skipped`` ("daily cap");
3. at most ``weekly_cap`` messages in any 7 nights (counting the holdout's would-be
   messages too, so that both groups are treated alike): ``skipped`` ("weekly cap");
4. the holdout, a stable share of customers chosen by a salted hash of their id:
   ``holdout`` (recorded, never rendered: the control group of the uplift report).

Night D prepares, for every customer, the messages of one local date in the customer's
own calendar, their *target date*: D, or D+1 for zones so far east of the shop that
their send window on D opens before the night's messages are ready
(``RETENTION_MESSAGES_READY_BY``; :func:`retention.night.days_ahead`). Per zone that
offset never changes, so each local date is prepared by exactly one night. Calendar
occasions (birthday, anniversary, feedback) are found for the target date; the others
follow tonight's events and go out on it. Where an occasion hangs on a moment (the first
order of an anniversary), that moment is converted to the customer's time zone first.
A thank-you follows the night an order *arrived* (was extracted), not the
night it was placed, and is decided once per order (``RETENTION_THANK_YOU_MAX_AGE_DAYS``
bounds how late). A re-run of a night replaces that night's rows and nothing else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from sqlalchemy import Connection, Engine, select

from retention import registry, schema
from retention.builtin_occasions import anniversary_date
from retention.feedback import held_back
from retention.night import Night, days_ahead
from retention.registry import Detection
from retention.settings import Settings
from retention.sqlmodels import select_model
from retention.unsubscribe import email_hash

__all__ = ["decide", "detect", "in_holdout", "anniversary_date"]

log = logging.getLogger(__name__)

#: Runs an occasion model: (connection, model, params, **flags) -> rows.
ModelRunner = Callable[..., list[dict]]


def target_date(night: Night, time_zone: str, settings: Settings) -> dt.date:
    """The local date night D prepares for a customer in ``time_zone`` (D, or D+1 far east)."""
    ahead = days_ahead(time_zone, night.time_zone, settings.send_window_start, settings.messages_ready_by)
    return night.date + dt.timedelta(days=ahead)


def _targets(conn: Connection, night: Night, settings: Settings) -> set[dt.date]:
    """Every target date of the night: one per distinct customer time zone offset (usually 1 or 2)."""
    zones = conn.execute(select(schema.stg_customers.c.time_zone).distinct()).scalars()
    return {target_date(night, zone, settings) for zone in zones if zone} or {night.date}


def in_holdout(customer_id: int, share: float, salt: str) -> bool:
    """Stable membership of the control group: the same customer, salt and share, the same answer."""
    digest = hashlib.sha256(f"{salt}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


# --- detection ----------------------------------------------------------------------------------


def _candidates(
    conn: Connection,
    night: Night,
    settings: Settings,
    run_model: ModelRunner = select_model,
    failures: dict[str, str] | None = None,
) -> tuple[list[dict], dict]:
    """Every occasion model's rows, and the people they concern (only those: never the whole table).

    ``run_model`` runs a model (:func:`retention.sqlmodels.select_model`; the forecast passes
    one that reads a projected snapshot for a night whose segments have not run yet). An added
    occasion (``RETENTION_OCCASION_DIRS``) whose model or post-filter fails is left out, its
    reason in ``failures``; a shipped one failing is a bug and stops the stage.
    """
    known = registry.occasions(settings)
    detection = Detection(conn, night, settings, frozenset(_targets(conn, night, settings)))
    failures = {} if failures is None else failures
    by_occasion = {}
    for name in settings.priorities:
        if name not in known:
            raise ValueError(
                f"RETENTION_OCCASION_PRIORITY names unknown occasion {name!r}; known: {', '.join(known)}"
            )
        with _own_failure(conn, known[name], failures):
            params, flags = known[name].params(detection)
            rows = run_model(conn, known[name].model_name, params, **flags)
            if rows and "customer_id" not in rows[0]:
                raise ValueError(f"its model returns no customer_id column (columns: {', '.join(rows[0])})")
            by_occasion[name] = rows
    people = _people(conn, {row["customer_id"] for rows in by_occasion.values() for row in rows})
    zones = {cid: person.time_zone for cid, person in people.items()}
    target_of = {cid: target_date(night, zone, settings) for cid, zone in zones.items()}
    detection = replace(detection, zones=zones, target_of=target_of)
    found = []
    for name, rows in by_occasion.items():
        rows = [row for row in rows if row["customer_id"] in people]
        if known[name].post_filter is not None:
            with _own_failure(conn, known[name], failures):
                rows = known[name].post_filter(rows, detection)
            if name in failures:
                continue
        log.info("occasion %s: %d candidates", name, len(rows))
        found.extend({**row, "occasion": name, "occasion_date": target_of[row["customer_id"]]} for row in rows)
    return found, people


@contextmanager
def _own_failure(conn: Connection, declared: registry.Occasion, failures: dict[str, str]) -> Iterator[None]:
    """An added occasion's failure leaves out that occasion (PostgreSQL: its savepoint rolls back,
    so the night's transaction goes on); a shipped occasion's failure is raised."""
    if declared.folder is None:
        yield
        return
    savepoint = conn.begin_nested() if conn.dialect.name == "postgresql" else None
    try:
        yield
    except Exception as error:  # noqa: BLE001 - user code and user SQL: any failure is its own
        if savepoint is not None:
            savepoint.rollback()
        failures[declared.name] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        log.error("occasion %s left out tonight: %s", declared.name, failures[declared.name])
    else:
        if savepoint is not None:
            savepoint.commit()


def _people(conn: Connection, ids: set[int]) -> dict:
    c = schema.stg_customers
    people = {}
    ordered = sorted(ids)
    for start in range(0, len(ordered), 5000):
        chunk = ordered[start : start + 5000]
        rows = conn.execute(
            select(c.c.customer_id, c.c.email, c.c.language, c.c.time_zone, c.c.marketing_consent).where(
                c.c.customer_id.in_(chunk)
            )
        )
        people.update({row.customer_id: row for row in rows})
    return people


def _recent_counts(conn: Connection, night: Night) -> dict[int, int]:
    """Messages (and holdout would-be messages) per customer in the 6 nights before this one."""
    occ = schema.occasions
    rows = conn.execute(
        select(occ.c.customer_id, occ.c.night).where(
            occ.c.status.in_(("selected", "holdout")),
            occ.c.night >= night.date - dt.timedelta(days=6),
            occ.c.night < night.date,
        )
    )
    counts: dict[int, int] = defaultdict(int)
    for customer_id, _ in rows:
        counts[customer_id] += 1
    return counts


def _suppressed(conn: Connection, people: dict) -> set[str | tuple[str, str]]:
    """The people's suppressed address hashes, and an ``(address hash, kind)`` pair for each kind
    of message (``retention.unsubscribe.MESSAGE_KINDS``) an address stopped and kept the rest."""
    hashes = sorted({email_hash(person.email) for person in people.values()})
    table, stopped = schema.suppression, schema.unsubscribe_preferences
    found: set[str | tuple[str, str]] = set()
    for start in range(0, len(hashes), 5000):
        chunk = hashes[start : start + 5000]
        found.update(conn.execute(select(table.c.email_hash).where(table.c.email_hash.in_(chunk))).scalars())
        found.update(
            conn.execute(select(stopped.c.email_hash, stopped.c.kind).where(stopped.c.email_hash.in_(chunk))).tuples()
        )
    return found


def _as_date(value: dt.date | str) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _decided_elsewhere(conn: Connection, night: Night, candidates: list[dict]) -> list[tuple]:
    """Occasions another night recorded on the candidates' target dates.

    Only possible when a customer's target date moved (they changed time zone, or the send
    window or ``RETENTION_MESSAGES_READY_BY`` changed): then two nights may prepare the same
    local date, and that date keeps what the first one decided.
    """
    occ = schema.occasions
    dates = sorted({candidate["occasion_date"] for candidate in candidates})
    ids = sorted({candidate["customer_id"] for candidate in candidates})
    found = []
    for start in range(0, len(ids), 5000):
        found.extend(
            conn.execute(
                select(occ.c.customer_id, occ.c.occasion, occ.c.occasion_date, occ.c.status).where(
                    occ.c.night != night.date,
                    occ.c.occasion_date.in_(dates),
                    occ.c.customer_id.in_(ids[start : start + 5000]),
                )
            ).all()
        )
    return found


def _without_decided(candidates: list[dict], elsewhere: list[tuple]) -> tuple[list[dict], dict[int, str]]:
    """Drop candidates whose (customer, occasion, date) another night decided; who has that day taken."""
    decided = {(row.customer_id, row.occasion, _as_date(row.occasion_date)) for row in elsewhere}
    day_taken = {
        (row.customer_id, _as_date(row.occasion_date)): row.occasion
        for row in elsewhere
        if row.status in ("selected", "holdout")
    }
    kept = [c for c in candidates if (c["customer_id"], c["occasion"], c["occasion_date"]) not in decided]
    if len(kept) < len(candidates):
        log.warning(
            "%d candidates dropped: another night already decided that occasion for that local date "
            "(a customer's time zone or the send settings changed)",
            len(candidates) - len(kept),
        )
    taken = {
        c["customer_id"]: day_taken[c["customer_id"], c["occasion_date"]]
        for c in kept
        if (c["customer_id"], c["occasion_date"]) in day_taken
    }
    return kept, taken


def detect(warehouse: Engine, night: Night, settings: Settings) -> dict[str, dict[str, int]]:
    """Find and record the night's occasions; returns selected counts by occasion and language
    (and ``occasion_failures``: added occasions left out tonight, with the reason)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    failures: dict[str, str] = {}
    with warehouse.begin() as conn:
        conn.execute(schema.occasions.delete().where(schema.occasions.c.night == night.date))
        rows = decide(conn, night, settings, failures=failures)
        for start in range(0, len(rows), 5000):
            conn.execute(schema.occasions.insert(), rows[start : start + 5000])
    for row in rows:
        if row["status"] == "selected":
            counts[row["occasion"]][row["language"]] += 1
    statuses = defaultdict(int)
    for row in rows:
        statuses[row["status"]] += 1
    log.info("occasions for %s: %d candidates, %s", night, len(rows), dict(statuses))
    found: dict = {occasion: dict(sorted(by_language.items())) for occasion, by_language in counts.items()}
    if failures:
        found["occasion_failures"] = failures
    return found


def decide(
    conn: Connection,
    night: Night,
    settings: Settings,
    run_model: ModelRunner = select_model,
    failures: dict[str, str] | None = None,
) -> list[dict]:
    """The night's ``occasions`` rows (candidates and the people rules), without writing them.

    Reads only rows of earlier nights (and other nights' target dates), never the night's
    own, so it decides the same before and after those are replaced: :func:`detect` writes
    what it returns, :mod:`retention.forecast` shows it for a night still to come. An added
    occasion that fails is left out, with its reason in ``failures``.
    """
    candidates, people = _candidates(conn, night, settings, run_model, failures)
    candidates, taken = _without_decided(candidates, _decided_elsewhere(conn, night, candidates))
    held = held_back(conn, night.date, settings)
    return _decide(
        candidates, people, _suppressed(conn, people), _recent_counts(conn, night), taken, held, night, settings
    )


def _decide(
    candidates: list[dict],
    people: dict,
    suppressed: set[str],
    recent: dict[int, int],
    taken: dict[int, str],
    held: set[int],
    night: Night,
    settings: Settings,
) -> list[dict]:
    """Apply consent, the daily and weekly caps and the holdout, in that order.

    ``taken``: customers whose target date already has a message from another night (and which).
    ``held``: customers whose product suggestions are held back after a low feedback rating.
    """
    rank = {occasion: i for i, occasion in enumerate(settings.priorities)}
    candidates = sorted(candidates, key=lambda c: (c["customer_id"], rank[c["occasion"]]))
    rows, winner_of = [], dict(taken)
    for candidate in candidates:
        person = people[candidate["customer_id"]]
        status, reason = _status(candidate, person, suppressed, recent, winner_of, held, settings)
        if status in ("selected", "holdout"):
            winner_of[candidate["customer_id"]] = candidate["occasion"]
        rows.append(_occasion_row(candidate, person, night, status, reason))
    return rows


def _status(
    candidate: dict,
    person,
    suppressed: set[str],
    recent: dict[int, int],
    winner_of: dict,
    held: set[int],
    settings: Settings,
) -> tuple[str, str | None]:
    customer_id = candidate["customer_id"]
    if candidate.get("skip_reason"):
        return "skipped", candidate["skip_reason"]
    if not person.marketing_consent:
        return "skipped", "no marketing consent"
    if email_hash(person.email) in suppressed:
        return "skipped", "address is suppressed"
    kind = registry.occasion(candidate["occasion"], settings).kind
    if (email_hash(person.email), kind) in suppressed:
        return "skipped", f"unsubscribed from {kind}"
    if kind == "suggestions" and customer_id in held:
        return "skipped", "held back: low feedback rating"
    if customer_id in winner_of:
        return "skipped", f"daily cap: {winner_of[customer_id]} goes out today"
    if recent.get(customer_id, 0) >= settings.weekly_cap:
        return "skipped", f"weekly cap: {recent[customer_id]} messages in the last 6 nights"
    if in_holdout(customer_id, settings.holdout_share, settings.holdout_salt):
        return "holdout", "control group: measured, not messaged"
    return "selected", None


def _occasion_row(candidate: dict, person, night: Night, status: str, reason: str | None) -> dict:
    details = {
        k: v
        for k, v in candidate.items()
        if k not in ("customer_id", "occasion", "occasion_date", "skip_reason")
    }
    return {
        "customer_id": candidate["customer_id"],
        "occasion": candidate["occasion"],
        "occasion_date": candidate["occasion_date"],
        "night": night.date,
        "language": person.language,
        "details": json.dumps(details, default=str, sort_keys=True),
        "status": status,
        "reason": reason,
    }
