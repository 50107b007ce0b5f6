"""Detect the night's occasions: who gets written to, for what, on which local date.

Each occasion is a SQL model in ``sql/occasions/occ_<name>.sql`` returning one row per
candidate customer with the details a message may quote. Then the people rules apply,
in this order, and every candidate is recorded in ``occasions`` with its status:

1. no marketing consent, a suppressed address, or a kind of message the customer stopped on
   the unsubscribe page (``unsubscribe_preferences``, e.g. product suggestions): ``skipped``;
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
order of an anniversary), that moment is converted to the customer's time zone first. A thank-you follows the night an order *arrived* (was extracted), not the
night it was placed, and is decided once per order (``RETENTION_THANK_YOU_MAX_AGE_DAYS``
bounds how late). A re-run of a night replaces that night's rows and nothing else.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable

from sqlalchemy import Connection, Engine, select

from retention import schema
from retention.night import Night, days_ahead, local_date, night_for_date
from retention.runlog import stage_counts
from retention.settings import OCCASIONS, Settings
from retention.sqlmodels import select_model
from retention.unsubscribe import email_hash, kind_of

__all__ = ["OCCASIONS", "decide", "detect", "in_holdout", "anniversary_date"]

log = logging.getLogger(__name__)

#: Runs an occasion model: (connection, model, params, **flags) -> rows.
ModelRunner = Callable[..., list[dict]]


def _md(day: dt.date) -> str:
    return f"{day:%m-%d}"


def anniversary_date(first: dt.date, year: int) -> dt.date:
    """The anniversary of ``first`` in ``year``; 29 February falls on 28 February in non-leap years."""
    if first.month == 2 and first.day == 29 and not calendar.isleap(year):
        return dt.date(year, 2, 28)
    return first.replace(year=year)


def _anniversary_month_days(day: dt.date) -> list[str]:
    """Every UTC month-day a first order can have if its local anniversary is ``day`` (at most 4).

    A local date is at most one day from the UTC date, and the first order's year need not be
    the night's: so a day either side, in a leap and in a non-leap calendar (2000 and 2001),
    of every local month-day whose anniversary falls on ``day``.
    """
    local = {(day.month, day.day)}
    if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
        local.add((2, 29))
    found = set()
    for month, dom in local:
        for year in (2000, 2001):
            if (month, dom) == (2, 29) and year == 2001:
                continue
            first = dt.date(year, month, dom)
            found.update(_md(first + dt.timedelta(days=k)) for k in (-1, 0, 1))
    return sorted(found)


def _feedback_orders_window(targets: set[dt.date], days: int) -> dict:
    """UTC bounds holding every moment of the local dates ``days`` before the targets, in any zone."""
    first = dt.datetime.combine(min(targets) - dt.timedelta(days=days), dt.time())
    last = dt.datetime.combine(max(targets) - dt.timedelta(days=days), dt.time())
    return {"orders_from": first - dt.timedelta(days=1), "orders_to": last + dt.timedelta(days=2)}


def _birthday_month_days(day: dt.date) -> list[str]:
    """Birthdays greeted on ``day``: its own month-day, and 29 February on a non-leap 28 February."""
    if day.month == 2 and day.day == 28 and not calendar.isleap(day.year):
        return [_md(day), "02-29"]
    return [_md(day)]


def _bound_list(name: str, values: list[str]) -> tuple[dict, dict]:
    """Params ``name_0 .. name_k`` and the flag ``name_count`` for ``bound_list`` in a model."""
    return {f"{name}_{i}": value for i, value in enumerate(values)}, {f"{name}_count": len(values)}


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


# --- parameters and post-filters per occasion ------------------------------------------------


def _window(night: Night) -> dict:
    return {
        "night": night.date,
        "window_start": night.window_start_naive,
        "window_end": night.window_end_naive,
    }


def _delayed(night: Night, days: int) -> dict:
    shift = dt.timedelta(days=days)
    return {"delayed_start": night.window_start_naive - shift, "delayed_end": night.window_end_naive - shift}


def _params(occasion: str, night: Night, settings: Settings, targets: set[dt.date]) -> tuple[dict, dict]:
    """The bound parameters of an occasion's model, and its Jinja flags (list lengths)."""
    day = night.date
    params, flags = _window(night), {}
    if occasion == "thank_you":
        params["thank_every_order_for_a"] = int(settings.thank_every_order_for_a)
        oldest = night_for_date(day - dt.timedelta(days=settings.thank_you_max_age_days), night.time_zone)
        params["thank_from"] = oldest.window_start_naive
    elif occasion in ("birthday", "anniversary"):
        month_days = _birthday_month_days if occasion == "birthday" else _anniversary_month_days
        values, flags = _bound_list("md", sorted({md for target in targets for md in month_days(target)}))
        params.update(values)
    elif occasion in ("next_purchase", "accessory"):
        delay = (
            settings.next_purchase_delay_days
            if occasion == "next_purchase"
            else settings.accessory_delay_days
        )
        params.update(_delayed(night, delay))
        arrival = day - dt.timedelta(days=delay)
        late_limit = night_for_date(
            arrival - dt.timedelta(days=settings.thank_you_max_age_days), night.time_zone
        )
        params.update(arrival_night=arrival, late_from=late_limit.window_start_naive)
        params.update(
            kind=occasion, period_start=day - dt.timedelta(days=settings.recommendation_period_days)
        )
        classes = {c.strip().upper() for c in settings.offer_classes.split(",")}
        params.update({f"offer_{c.lower()}": int(c in classes) for c in "ABC"})
    elif occasion == "feedback":
        params.update(_feedback_orders_window(targets, settings.feedback_delay_days))
    return params, flags


def _as_date(value: dt.date | str) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _keep_birthdays(
    candidates: list[dict], zones: dict[int, str], targets: dict[int, dt.date], settings: Settings
) -> list[dict]:
    """The birthday must fall on the customer's own target date."""
    kept = []
    for row in candidates:
        birthday = _as_date(row.pop("birthday"))
        if _md(birthday) in _birthday_month_days(targets[row["customer_id"]]):
            kept.append(row)
    return kept


def _keep_local_anniversaries(
    candidates: list[dict], zones: dict[int, str], targets: dict[int, dt.date], settings: Settings
) -> list[dict]:
    """The first order's date in the customer's own zone must have its anniversary on their target date."""
    kept = []
    for row in candidates:
        target = targets[row["customer_id"]]
        local = local_date(row.pop("first_order_at"), zones[row["customer_id"]])
        years = target.year - local.year
        if years >= 1 and anniversary_date(local, target.year) == target:
            kept.append({**row, "years": years, "first_order_date": local.isoformat()})
    return kept


def _keep_local_feedback(
    candidates: list[dict], zones: dict[int, str], targets: dict[int, dt.date], settings: Settings
) -> list[dict]:
    """Per customer, the latest order placed ``feedback_delay_days`` local days before their target date."""
    delay = dt.timedelta(days=settings.feedback_delay_days)
    latest: dict[int, dict] = {}
    for row in candidates:
        day = targets[row["customer_id"]] - delay
        if local_date(row.pop("ordered_at"), zones[row["customer_id"]]) != day:
            continue
        if row["customer_id"] not in latest or row["order_id"] > latest[row["customer_id"]]["order_id"]:
            latest[row["customer_id"]] = row
    return [latest[customer_id] for customer_id in sorted(latest)]


def _arrived_from(conn: Connection, night: Night) -> dt.datetime:
    """Where the night's (first) extract of orders began: rows updated since then arrived tonight.

    The first run's bound, so that a re-run of the night sees the same arrivals. Without one
    (a full refresh, the very first night, or no extract recorded), the night's own window.
    """
    counts = stage_counts(conn, night.date, "extract", first=True) or {}
    lower = (counts.get("lower_bounds") or {}).get("orders")
    if lower is None:
        return night.window_start_naive
    return min(dt.datetime.fromisoformat(lower), night.window_start_naive)


def _thanked_orders(conn: Connection, night: Night, ids: set[int]) -> tuple[set[tuple[int, int]], set[int]]:
    """(customer, order) pairs a thank_you was decided for on an earlier night, in any status;
    and the customers whose first order was among them."""
    occ = schema.occasions
    found, first_thanked = set(), set()
    ordered = sorted(ids)
    for start in range(0, len(ordered), 5000):
        rows = conn.execute(
            select(occ.c.customer_id, occ.c.details).where(
                occ.c.occasion == "thank_you",
                occ.c.night < night.date,
                occ.c.customer_id.in_(ordered[start : start + 5000]),
            )
        )
        for row in rows:
            details = json.loads(row.details)
            found.add((row.customer_id, details.get("order_id")))
            if details.get("first_order"):
                first_thanked.add(row.customer_id)
    return found, first_thanked


def _nights_late(ordered_at: dt.datetime | str, night: Night) -> int:
    """How many nights after its own night (the one whose window holds ordered_at) this one is."""
    own_night = local_date(ordered_at, night.time_zone) + dt.timedelta(days=1)
    return (night.date - own_night).days


def _keep_thanks(conn: Connection, candidates: list[dict], night: Night, settings: Settings) -> list[dict]:
    """One thank_you per customer for an order that arrived tonight and was never decided before.

    A first order within the age limit wins, then the latest other order of an A customer;
    a first order more than ``thank_you_max_age_days`` nights late is kept as a skip with
    its reason, so that it is recorded, never silently dropped.
    """
    decided, first_thanked = _thanked_orders(conn, night, {row["customer_id"] for row in candidates})
    by_customer: dict[int, list[dict]] = defaultdict(list)
    for row in candidates:
        if (row["customer_id"], row["order_id"]) in decided:
            continue
        if row["first_order"] and row["customer_id"] in first_thanked:
            # An order placed earlier arrived after the first one was thanked: it is now the
            # first order, but the customer has had their welcome; never a second one.
            continue
        by_customer[row["customer_id"]].append(row)
    limit = settings.thank_you_max_age_days
    kept = []
    for customer_id in sorted(by_customer):
        rows = sorted(by_customer[customer_id], key=lambda r: (-r["first_order"], -r["order_id"]))
        first = rows[0] if rows[0]["first_order"] else None
        late = _nights_late(first["ordered_at"], night) if first else 0
        others = [row for row in rows if not row["first_order"]]
        if first and late > limit and not others:
            first = {**first, "skip_reason": f"order arrived {late} days after it was placed; limit {limit}"}
        chosen = first if first and (late <= limit or not others) else others[0]
        kept.append({key: value for key, value in chosen.items() if key != "ordered_at"})
    return kept


_POST_FILTERS: dict[str, Callable[[list[dict], dict[int, str], dict[int, dt.date], Settings], list[dict]]] = {
    "birthday": _keep_birthdays,
    "anniversary": _keep_local_anniversaries,
    "feedback": _keep_local_feedback,
}


# --- detection ----------------------------------------------------------------------------------


def _model(occasion: str) -> str:
    return "occasions/occ_next_purchase" if occasion == "accessory" else f"occasions/occ_{occasion}"


def _candidates(
    conn: Connection, night: Night, settings: Settings, run_model: ModelRunner = select_model
) -> tuple[list[dict], dict]:
    """Every occasion model's rows, and the people they concern (only those: never the whole table).

    ``run_model`` runs a model (:func:`retention.sqlmodels.select_model`; the forecast passes
    one that reads a projected snapshot for a night whose segments have not run yet).
    """
    by_occasion = {}
    targets = _targets(conn, night, settings)
    for occasion in settings.priorities:
        if occasion not in OCCASIONS:
            raise ValueError(
                f"RETENTION_OCCASION_PRIORITY names unknown occasion {occasion!r}; known: {', '.join(OCCASIONS)}"
            )
        params, flags = _params(occasion, night, settings, targets)
        if occasion == "thank_you":
            params["arrived_from"] = _arrived_from(conn, night)
        by_occasion[occasion] = run_model(conn, _model(occasion), params, **flags)
    people = _people(conn, {row["customer_id"] for rows in by_occasion.values() for row in rows})
    zones = {cid: person.time_zone for cid, person in people.items()}
    target_of = {cid: target_date(night, zone, settings) for cid, zone in zones.items()}
    found = []
    for occasion, rows in by_occasion.items():
        rows = [row for row in rows if row["customer_id"] in people]
        if occasion == "thank_you":
            rows = _keep_thanks(conn, rows, night, settings)
        if occasion in _POST_FILTERS:
            rows = _POST_FILTERS[occasion](rows, zones, target_of, settings)
        log.info("occasion %s: %d candidates", occasion, len(rows))
        found.extend({**row, "occasion_date": target_of[row["customer_id"]]} for row in rows)
    return found, people


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
    """Find and record the night's occasions; returns selected counts by occasion and language."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with warehouse.begin() as conn:
        conn.execute(schema.occasions.delete().where(schema.occasions.c.night == night.date))
        rows = decide(conn, night, settings)
        for start in range(0, len(rows), 5000):
            conn.execute(schema.occasions.insert(), rows[start : start + 5000])
    for row in rows:
        if row["status"] == "selected":
            counts[row["occasion"]][row["language"]] += 1
    statuses = defaultdict(int)
    for row in rows:
        statuses[row["status"]] += 1
    log.info("occasions for %s: %d candidates, %s", night, len(rows), dict(statuses))
    return {occasion: dict(sorted(by_language.items())) for occasion, by_language in counts.items()}


def decide(conn: Connection, night: Night, settings: Settings, run_model: ModelRunner = select_model) -> list[dict]:
    """The night's ``occasions`` rows (candidates and the people rules), without writing them.

    Reads only rows of earlier nights (and other nights' target dates), never the night's
    own, so it decides the same before and after those are replaced: :func:`detect` writes
    what it returns, :mod:`retention.forecast` shows it for a night still to come.
    """
    candidates, people = _candidates(conn, night, settings, run_model)
    candidates, taken = _without_decided(candidates, _decided_elsewhere(conn, night, candidates))
    return _decide(
        candidates, people, _suppressed(conn, people), _recent_counts(conn, night), taken, night, settings
    )


def _decide(
    candidates: list[dict],
    people: dict,
    suppressed: set[str],
    recent: dict[int, int],
    taken: dict[int, str],
    night: Night,
    settings: Settings,
) -> list[dict]:
    """Apply consent, the daily and weekly caps and the holdout, in that order.

    ``taken``: customers whose target date already has a message from another night (and which).
    """
    rank = {occasion: i for i, occasion in enumerate(settings.priorities)}
    candidates = sorted(candidates, key=lambda c: (c["customer_id"], rank[c["occasion"]]))
    rows, winner_of = [], dict(taken)
    for candidate in candidates:
        person = people[candidate["customer_id"]]
        status, reason = _status(candidate, person, suppressed, recent, winner_of, settings)
        if status in ("selected", "holdout"):
            winner_of[candidate["customer_id"]] = candidate["occasion"]
        rows.append(_occasion_row(candidate, person, night, status, reason))
    return rows


def _status(
    candidate: dict, person, suppressed: set[str], recent: dict[int, int], winner_of: dict, settings: Settings
) -> tuple[str, str | None]:
    customer_id = candidate["customer_id"]
    if candidate.get("skip_reason"):
        return "skipped", candidate["skip_reason"]
    if not person.marketing_consent:
        return "skipped", "no marketing consent"
    if email_hash(person.email) in suppressed:
        return "skipped", "address is suppressed"
    if (email_hash(person.email), kind_of(candidate["occasion"])) in suppressed:
        return "skipped", f"unsubscribed from {kind_of(candidate['occasion'])}"
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
