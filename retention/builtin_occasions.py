"""The eight shipped occasions, each declared once (:class:`retention.registry.Occasion`).

Per occasion, in one place: the parameters of its model (``sql/occasions/occ_<name>.sql``),
the post-filter its rows pass in Python, its template context (the contract written in
``templates/README.md``) and its lint samples. The people rules that apply to every occasion
(consent, caps, holdout) are :mod:`retention.occasions`'; the context every message shares
(customer, shop, unsubscribe link) is :mod:`retention.contexts`'.

Sample values are fixed (around the demo shop's 2026-11-22), never today's, so that previews
and golden files do not change from one day to the next.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
from collections import defaultdict

from sqlalchemy import Connection, select

from retention import schema
from retention.night import Night, local_date, night_for_date
from retention.registry import Detection, Occasion, night_window
from retention.render import Formatter
from retention.runlog import stage_counts

__all__ = ["BUILTINS", "anniversary_date", "birthday_month_days", "anniversary_month_days"]


# --- calendar -------------------------------------------------------------------------------------


def _md(day: dt.date) -> str:
    return f"{day:%m-%d}"


def _as_date(value: dt.date | str) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def anniversary_date(first: dt.date, year: int) -> dt.date:
    """The anniversary of ``first`` in ``year``; 29 February falls on 28 February in non-leap years."""
    if first.month == 2 and first.day == 29 and not calendar.isleap(year):
        return dt.date(year, 2, 28)
    return first.replace(year=year)


def anniversary_month_days(day: dt.date) -> list[str]:
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


def birthday_month_days(day: dt.date) -> list[str]:
    """Birthdays greeted on ``day``: its own month-day, and 29 February on a non-leap 28 February."""
    if day.month == 2 and day.day == 28 and not calendar.isleap(day.year):
        return [_md(day), "02-29"]
    return [_md(day)]


def _bound_list(name: str, values: list[str]) -> tuple[dict, dict]:
    """Params ``name_0 .. name_k`` and the flag ``name_count`` for ``bound_list`` in a model."""
    return {f"{name}_{i}": value for i, value in enumerate(values)}, {f"{name}_count": len(values)}


def _months_between(earlier: dt.date, later: dt.date) -> int:
    months = (later.year - earlier.year) * 12 + later.month - earlier.month
    return months - 1 if later.day < earlier.day else months


# --- thank_you --------------------------------------------------------------------------------------


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


def _thank_you_params(detection: Detection) -> tuple[dict, dict]:
    night, settings = detection.night, detection.settings
    params, flags = night_window(detection)
    params["thank_every_order_for_a"] = int(settings.thank_every_order_for_a)
    oldest = night_for_date(night.date - dt.timedelta(days=settings.thank_you_max_age_days), night.time_zone)
    params["thank_from"] = oldest.window_start_naive
    params["arrived_from"] = _arrived_from(detection.conn, night)
    return params, flags


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


def _keep_thanks(candidates: list[dict], detection: Detection) -> list[dict]:
    """One thank_you per customer for an order that arrived tonight and was never decided before.

    A first order within the age limit wins, then the latest other order of an A customer;
    a first order more than ``thank_you_max_age_days`` nights late is kept as a skip with
    its reason, so that it is recorded, never silently dropped.
    """
    night = detection.night
    decided, first_thanked = _thanked_orders(
        detection.conn, night, {row["customer_id"] for row in candidates}
    )
    by_customer: dict[int, list[dict]] = defaultdict(list)
    for row in candidates:
        if (row["customer_id"], row["order_id"]) in decided:
            continue
        if row["first_order"] and row["customer_id"] in first_thanked:
            # An order placed earlier arrived after the first one was thanked: it is now the
            # first order, but the customer has had their welcome; never a second one.
            continue
        by_customer[row["customer_id"]].append(row)
    limit = detection.settings.thank_you_max_age_days
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


def _thank_you_context(item: dict, lookups, fmt: Formatter, occasion_date: dt.date) -> dict:
    order = lookups.orders.get(item.get("order_id"))
    return {"order": {**fmt.order(order), "first": bool(int(item.get("first_order", 1)))}}


def _thank_you_samples(fmt: Formatter) -> list[dict]:
    order = {
        "id": 100482,
        "date": fmt.day(dt.date(2026, 11, 20)),
        "total": fmt.money("249.90"),
        "first": True,
    }
    # A customers are thanked for later orders too; the wording then leaves out "first".
    later = {
        "id": 100517,
        "date": fmt.day(dt.date(2026, 11, 21)),
        "total": fmt.money("1299.00"),
        "first": False,
    }
    return [{"order": order}, {"order": later}]


# --- birthday and anniversary -----------------------------------------------------------------------


def _birthday_params(detection: Detection) -> tuple[dict, dict]:
    params, _ = night_window(detection)
    values, flags = _bound_list(
        "md", sorted({md for t in detection.targets for md in birthday_month_days(t)})
    )
    return {**params, **values}, flags


def _keep_birthdays(candidates: list[dict], detection: Detection) -> list[dict]:
    """The birthday must fall on the customer's own target date."""
    kept = []
    for row in candidates:
        birthday = _as_date(row.pop("birthday"))
        if _md(birthday) in birthday_month_days(detection.target_of[row["customer_id"]]):
            kept.append(row)
    return kept


def _anniversary_params(detection: Detection) -> tuple[dict, dict]:
    params, _ = night_window(detection)
    values, flags = _bound_list(
        "md", sorted({md for t in detection.targets for md in anniversary_month_days(t)})
    )
    return {**params, **values}, flags


def _keep_local_anniversaries(candidates: list[dict], detection: Detection) -> list[dict]:
    """The first order's date in the customer's own zone must have its anniversary on their target date."""
    kept = []
    for row in candidates:
        target = detection.target_of[row["customer_id"]]
        local = local_date(row.pop("first_order_at"), detection.zones[row["customer_id"]])
        years = target.year - local.year
        if years >= 1 and anniversary_date(local, target.year) == target:
            kept.append({**row, "years": years, "first_order_date": local.isoformat()})
    return kept


def _anniversary_context(item: dict, lookups, fmt: Formatter, occasion_date: dt.date) -> dict:
    return {
        "years": int(item["years"]),
        "first_order": {"date": fmt.day(dt.date.fromisoformat(item["first_order_date"]))},
    }


def _anniversary_samples(fmt: Formatter) -> list[dict]:
    return [
        {"years": 3, "first_order": {"date": fmt.day(dt.date(2023, 11, 23))}},
        {"years": 1, "first_order": {"date": fmt.day(dt.date(2025, 11, 23))}},
    ]


# --- win_back ---------------------------------------------------------------------------------------


def _win_back_context(item: dict, lookups, fmt: Formatter, occasion_date: dt.date) -> dict:
    last = local_date(lookups.last_orders[item["customer_id"]], fmt.zone)
    return {"last_order": {"date": fmt.day(last)}, "months": max(_months_between(last, occasion_date), 1)}


def _win_back_samples(fmt: Formatter) -> list[dict]:
    return [
        {"last_order": {"date": fmt.day(dt.date(2026, 5, 14))}, "months": 6},
        {"last_order": {"date": fmt.day(dt.date(2026, 10, 19))}, "months": 1},
    ]


# --- feedback ---------------------------------------------------------------------------------------


def _feedback_params(detection: Detection) -> tuple[dict, dict]:
    """UTC bounds holding every moment of the local dates ``feedback_delay_days`` before the targets, in any zone."""
    params, flags = night_window(detection)
    days = detection.settings.feedback_delay_days
    first = dt.datetime.combine(min(detection.targets) - dt.timedelta(days=days), dt.time())
    last = dt.datetime.combine(max(detection.targets) - dt.timedelta(days=days), dt.time())
    return {
        **params,
        "orders_from": first - dt.timedelta(days=1),
        "orders_to": last + dt.timedelta(days=2),
    }, flags


def _keep_local_feedback(candidates: list[dict], detection: Detection) -> list[dict]:
    """Per customer, the latest order placed ``feedback_delay_days`` local days before their target date."""
    delay = dt.timedelta(days=detection.settings.feedback_delay_days)
    latest: dict[int, dict] = {}
    for row in candidates:
        day = detection.target_of[row["customer_id"]] - delay
        if local_date(row.pop("ordered_at"), detection.zones[row["customer_id"]]) != day:
            continue
        if row["customer_id"] not in latest or row["order_id"] > latest[row["customer_id"]]["order_id"]:
            latest[row["customer_id"]] = row
    return [latest[customer_id] for customer_id in sorted(latest)]


def _feedback_context(item: dict, lookups, fmt: Formatter, occasion_date: dt.date) -> dict:
    """The order asked about, five signed one-click rating links and the comment form's link
    (:func:`retention.feedback.feedback_links`); ``feedback_url`` is the form, for older templates."""
    from retention.feedback import feedback_links

    order = lookups.orders.get(item.get("order_id"))
    links = feedback_links(lookups.settings, lookups.secret, int(item["customer_id"]), int(order["order_id"]))
    return {
        "order": {"id": order["order_id"], "date": fmt.day(local_date(order["ordered_at"], fmt.zone))},
        "feedback": links,
        "feedback_url": links["comment_url"],
    }


def _feedback_samples(fmt: Formatter) -> list[dict]:
    # A placeholder token, as for the unsubscribe link: a preview never carries a working one.
    base = f"{fmt.shop_url}/feedback?token=SAMPLE-TOKEN"
    links = {"ratings": [{"value": v, "url": f"{base}&rating={v}"} for v in range(1, 6)], "comment_url": base}
    return [
        {"order": {"id": 100482, "date": fmt.day(dt.date(2026, 11, 13))}, "feedback": links, "feedback_url": base}
    ]


# --- suggestions: next_purchase, accessory, new_stock -----------------------------------------------


def _follow_up_params(kind: str):
    """The parameters of a follow-up of an order (``next_purchase``, ``accessory``): the order's
    night ``delay`` nights back, counted from the night it arrived; none for orders too late."""

    def params(detection: Detection) -> tuple[dict, dict]:
        night, settings = detection.night, detection.settings
        out, flags = night_window(detection)
        delay = (
            settings.next_purchase_delay_days if kind == "next_purchase" else settings.accessory_delay_days
        )
        shift = dt.timedelta(days=delay)
        out.update(delayed_start=night.window_start_naive - shift, delayed_end=night.window_end_naive - shift)
        arrival = night.date - shift
        late_limit = night_for_date(
            arrival - dt.timedelta(days=settings.thank_you_max_age_days), night.time_zone
        )
        out.update(arrival_night=arrival, late_from=late_limit.window_start_naive)
        out.update(
            kind=kind, period_start=night.date - dt.timedelta(days=settings.recommendation_period_days)
        )
        classes = {c.strip().upper() for c in settings.offer_classes.split(",")}
        out.update({f"offer_{c.lower()}": int(c in classes) for c in "ABC"})
        return out, flags

    return params


def _suggestion_context(item: dict, lookups, fmt: Formatter, occasion_date: dt.date) -> dict:
    """``product``, ``because`` and the figures a suggestion is explained with (issue #12).

    The occasion row names the rule behind the suggestion (``rule_kind``, ``share``,
    ``made_for``, see ``sql/occasions/occ_next_purchase.sql``); rows recorded before it did
    (or whose rule no longer holds: ``share`` is None) fall back to tonight's product-level
    rule, and to 0 (no number quoted) without one.
    """
    occasion = item["occasion"]
    product = lookups.products[int(item["product_id"])]
    because = lookups.products[int(item["because_product_id"])]
    if item.get("share") is not None:
        share = int(item["share"])
    else:
        share = round(lookups.rules.get((occasion, because["product_id"], product["product_id"]), 0.0) * 100)
    fields = {"product": fmt.product(product), "because": {"name": because["name"]}, "share": share}
    if occasion == "next_purchase":
        # the share counts customers who bought in because's category and then in product's
        fields["similar"] = item.get("rule_kind") == "next_category"
    else:
        made_for = item.get("made_for")
        if made_for is None:
            made_for = product.get("accessory_for") == because["product_id"]
        fields["made_for"] = bool(int(made_for))
    return fields


def _new_stock_context(item: dict, lookups, fmt: Formatter, occasion_date: dt.date) -> dict:
    ids = [item.get(k) for k in ("product_1", "product_2", "product_3")]
    return {
        "category": item["category"],
        "products": [
            fmt.product(lookups.products[int(i)]) for i in ids if i is not None and int(i) in lookups.products
        ],
    }


def _product(fmt: Formatter, sku: str, name: str, price: str) -> dict:
    return fmt.product({"sku": sku, "name": name, "price": price})


# Product names as the demo shop writes them (brand, tier, model, kind).
_ESPRESSO = ("KIT-00041", "Caffora Plus 2 Espresso Machine", "649.00")
_GRINDER = ("KIT-00047", "Caffora Compact 1 Coffee Grinder", "179.00")
_LAPTOP = ("COM-00012", "Voltra Pro 4 Laptop", "1499.00")
_DOCK = ("COM-00031", "Kestrel Classic 1 Docking Station", "149.00")
_MOWER = ("GAR-00003", "Greenvale Plus 470 Lawn Mower", "599.00")
_CHAINSAW = ("GAR-00008", "Hortex Compact 260 Chainsaw", "299.00")
_BIKE = ("CYC-00101", "Velomark Pro 870 City Bike", "1299.00")
_LOCK = ("CYC-00115", "Ridgeway Classic 40 Bike Lock", "39.00")
_NEW_GARDEN = (
    ("GAR-00118", "Greenvale Eco 2 Hedge Trimmer", "129.00"),
    ("GAR-00121", "Hortex Sport 1 Garden Hose 25 m", "39.90"),
    ("GAR-00124", "Fieldmaster Classic 3 Pruning Shears", "24.50"),
)


def _next_purchase_samples(fmt: Formatter) -> list[dict]:
    fields = {"product": _product(fmt, *_GRINDER), "because": {"name": _ESPRESSO[1]}}
    garden = {"product": _product(fmt, *_CHAINSAW), "because": {"name": _MOWER[1]}}
    return [
        {**fields, "share": 38, "similar": False},
        # Without a known share (no rule, or a weak one) templates leave the number out.
        {**fields, "share": 0, "similar": False},
        # A category-level rule: 29 % of lawn-mower buyers chose a chainsaw next.
        {**garden, "share": 29, "similar": True},
    ]


def _accessory_samples(fmt: Formatter) -> list[dict]:
    fields = {"product": _product(fmt, *_DOCK), "because": {"name": _LAPTOP[1]}}
    return [
        {**fields, "share": 64, "made_for": True},
        # Made for it, but new: never bought together yet, so no share to quote.
        {**fields, "share": 0, "made_for": True},
        # A basket rule, no catalogue relation: a bike lock with a city bike.
        {"product": _product(fmt, *_LOCK), "because": {"name": _BIKE[1]}, "share": 23, "made_for": False},
    ]


def _new_stock_samples(fmt: Formatter) -> list[dict]:
    products = [_product(fmt, *p) for p in _NEW_GARDEN]
    return [
        {"category": "garden", "products": products},
        {"category": "garden", "products": products[:1]},
        # A category with no translation yet: templates show its raw name.
        {"category": "gadgets", "products": products[:2]},
    ]


_SUGGESTION_NOTE = (
    "exact but for customers who order today, and suggestions the night recomputes "
    "(changed customers; everyone on the weekly full rebuild)"
)


def _nothing(*_: object) -> dict:
    return {}


#: The shipped occasions, in their default priority order (``RETENTION_OCCASION_PRIORITY``).
BUILTINS = (
    Occasion(
        "thank_you",
        "thank_you",
        10,
        _thank_you_context,
        _thank_you_samples,
        params=_thank_you_params,
        post_filter=_keep_thanks,
        description="after an order arrived: the first order, and every order of an A customer",
        forecast_note="follows the orders that arrive today, which are not in the warehouse yet "
        "(expect about as many as on a usual night)",
    ),
    Occasion(
        "birthday",
        "greetings",
        20,
        _nothing,
        lambda fmt: [{}],
        params=_birthday_params,
        post_filter=_keep_birthdays,
        description="on the customer's birthday (29 February: on 28 February in other years)",
        forecast_note="exact for the customers known now (today's sign-ups and profile changes are not in yet)",
        forecast_exact=True,
    ),
    Occasion(
        "anniversary",
        "greetings",
        30,
        _anniversary_context,
        _anniversary_samples,
        params=_anniversary_params,
        post_filter=_keep_local_anniversaries,
        description="on the anniversary of the first order, in the customer's own zone",
        forecast_note="exact for the customers known now",
        forecast_exact=True,
    ),
    Occasion(
        "win_back",
        "win_back",
        40,
        _win_back_context,
        _win_back_samples,
        needs=frozenset({"last_orders"}),
        description="when an at-risk customer's gap since the last order passes the win-back threshold",
        forecast_note="exact but for customers who order today: recency and lifecycle phase are projected "
        "to the night",
        forecast_exact=True,
    ),
    Occasion(
        "feedback",
        "feedback",
        50,
        _feedback_context,
        _feedback_samples,
        params=_feedback_params,
        post_filter=_keep_local_feedback,
        description="asking about an order placed RETENTION_FEEDBACK_DELAY_DAYS local days before",
        forecast_note="exact for orders already in (one arriving late today is not)",
        forecast_exact=True,
    ),
    Occasion(
        "next_purchase",
        "suggestions",
        60,
        _suggestion_context,
        _next_purchase_samples,
        params=_follow_up_params("next_purchase"),
        description="what customers who bought the same went on to buy, RETENTION_NEXT_PURCHASE_DELAY_DAYS later",
        forecast_note=_SUGGESTION_NOTE,
        forecast_exact=True,
    ),
    Occasion(
        "accessory",
        "suggestions",
        70,
        _suggestion_context,
        _accessory_samples,
        params=_follow_up_params("accessory"),
        model="occasions/occ_next_purchase",
        description="an accessory for what was bought, RETENTION_ACCESSORY_DELAY_DAYS later",
        forecast_note=_SUGGESTION_NOTE,
        forecast_exact=True,
    ),
    Occasion(
        "new_stock",
        "suggestions",
        80,
        _new_stock_context,
        _new_stock_samples,
        description="new products in a category the customer buys in",
        forecast_note="follows products created today, which are not in the warehouse yet",
    ),
)
