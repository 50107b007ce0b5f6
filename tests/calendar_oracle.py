"""An independent oracle of the nightly occasions (issue #11), in plain Python over the shop's rows.

It is written from the rules alone (README "The night" and "Occasions", brief D) and shares no
code with ``retention.occasions`` or ``sql/occasions``: it knows the shop's source rows (every
timestamp naive UTC, as the shop stores them) and answers, night by night, which occasions
night D must record, for which local date and with which status. It keeps its own memory of
what it decided (orders already thanked, messages selected), so it must be asked for
consecutive nights, the first one being the warehouse's first night.

The rules, for night D of a shop in zone S:

* window: ``[D-1 00:00, D 00:00)`` local in S; a row is known to night D when its ``updated_at``
  lies before the window's end, and *arrives* in night D when it lies inside the window;
* target date: each customer in zone Z gets the messages of one local date
  ``T = D + n(Z)``, ``n(Z) = ceil((ready_by - send_start + maxoff(Z) - minoff(S)) / 24h)``;
* birthday, anniversary, feedback, thank_you candidates for T, then lateness, consent, the
  daily cap (first in priority wins) and the weekly cap (selected messages in nights D-6..D-1).
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from zoneinfo import ZoneInfo

__all__ = [
    "OFFSET_RANGE",
    "Customer",
    "Expected",
    "Oracle",
    "Order",
    "same_day_in_year",
    "target_shift_days",
    "window",
]

H = dt.timedelta(hours=1)
UTC = dt.UTC

#: (smallest, largest) UTC offset each zone uses in 2000..2040, written down by hand from what is
#: known of tzdata (not computed: ``tests/test_calendar_oracle.py`` checks this table against
#: zoneinfo by sampling, so the oracle's table and the library are two independent sources).
OFFSET_RANGE: dict[str, tuple[dt.timedelta, dt.timedelta]] = {
    "Europe/Berlin": (1 * H, 2 * H),
    "Europe/London": (0 * H, 1 * H),
    "Europe/Moscow": (3 * H, 4 * H),  # +04:00 all year 2011-2014, and as summer time before
    "America/Los_Angeles": (-8 * H, -7 * H),
    "America/Sao_Paulo": (-3 * H, -2 * H),  # summer time until 2019
    "Pacific/Pago_Pago": (-11 * H, -11 * H),
    "Asia/Kolkata": (5.5 * H, 5.5 * H),
    "Australia/Sydney": (10 * H, 11 * H),
    "Pacific/Auckland": (12 * H, 13 * H),
    "Pacific/Kiritimati": (14 * H, 14 * H),
}

OCCASIONS = ("thank_you", "birthday", "anniversary", "feedback")


@dataclass(frozen=True)
class Customer:
    """A source ``customers`` row, as far as occasions care."""

    customer_id: int
    time_zone: str
    birthday: dt.date | None
    marketing_consent: bool
    updated_at: dt.datetime  # naive UTC


@dataclass(frozen=True)
class Order:
    """A source ``orders`` row (timestamps naive UTC)."""

    order_id: int
    customer_id: int
    ordered_at: dt.datetime
    updated_at: dt.datetime
    status: str = "placed"


@dataclass(frozen=True)
class Expected:
    """One occasion row night D must record; ``why`` is the oracle's own label, not compared."""

    customer_id: int
    occasion: str
    occasion_date: dt.date
    status: str
    why: str  # selected, late, consent, daily, weekly
    lateness: int | None = None  # thank_you: nights between the order's own night and this one
    order_id: int | None = None  # thank_you: the first order; feedback: the latest order of the day

    @property
    def key(self) -> tuple[int, str, dt.date, str]:
        return (self.customer_id, self.occasion, self.occasion_date, self.status)


@dataclass(frozen=True)
class _Candidate:
    lateness: int | None = None
    order_id: int | None = None


def window(night: dt.date, shop_zone: str) -> tuple[dt.datetime, dt.datetime]:
    """Night D's window ``[D-1 00:00, D 00:00)`` in the shop's zone, as naive UTC instants."""
    zone = ZoneInfo(shop_zone)

    def midnight(day: dt.date) -> dt.datetime:
        return dt.datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC).replace(tzinfo=None)

    return midnight(night - dt.timedelta(days=1)), midnight(night)


def target_shift_days(zone: str, shop_zone: str, ready_by: dt.time, send_start: dt.time) -> int:
    """n(Z): how many days ahead of night D the customer's prepared local date lies."""

    def since_midnight(t: dt.time) -> dt.timedelta:
        return dt.timedelta(hours=t.hour, minutes=t.minute, seconds=t.second)

    lead = (
        since_midnight(ready_by)
        - since_midnight(send_start)
        + OFFSET_RANGE[zone][1]
        - OFFSET_RANGE[shop_zone][0]
    )
    return math.ceil(lead / dt.timedelta(days=1))


def same_day_in_year(day: dt.date, year: int) -> dt.date:
    """``day``'s month and day in ``year``; 29 February becomes 28 February in a common year."""
    if (day.month, day.day) == (2, 29) and not calendar.isleap(year):
        return dt.date(year, 2, 28)
    return day.replace(year=year)


def local_date(moment: dt.datetime, zone: str) -> dt.date:
    """The calendar date of a naive UTC moment on the wall clocks of ``zone``."""
    return moment.replace(tzinfo=UTC).astimezone(ZoneInfo(zone)).date()


class Oracle:
    """What each consecutive night must record; ask :meth:`night` for D, D+1, D+2, ..."""

    def __init__(
        self,
        customers: list[Customer],
        orders: list[Order],
        *,
        shop_zone: str = "Europe/Berlin",
        ready_by: dt.time = dt.time(6, 0),
        send_start: dt.time = dt.time(9, 0),
        max_age_days: int = 3,
        weekly_cap: int = 2,
        feedback_delay_days: int = 10,
        priority: tuple[str, ...] = OCCASIONS,
    ) -> None:
        self.customers = customers
        self.orders_of: dict[int, list[Order]] = defaultdict(list)
        for order in orders:
            self.orders_of[order.customer_id].append(order)
        self.shop_zone = shop_zone
        self.ready_by = ready_by
        self.send_start = send_start
        self.max_age_days = max_age_days
        self.weekly_cap = weekly_cap
        self.feedback_delay = dt.timedelta(days=feedback_delay_days)
        self.priority = priority
        self.thanked: set[int] = set()  # order ids already decided for a thank-you
        self.selected: dict[dt.date, Counter] = {}  # night -> customer -> selected messages
        self.last_night: dt.date | None = None

    def shift(self, zone: str) -> int:
        return target_shift_days(zone, self.shop_zone, self.ready_by, self.send_start)

    def night(self, night: dt.date) -> list[Expected]:
        """The occasions night D records (every candidate, with its status)."""
        if self.last_night is not None and night != self.last_night + dt.timedelta(days=1):
            raise ValueError(f"the oracle runs consecutive nights: {night} after {self.last_night}")
        self.last_night = night
        start, end = window(night, self.shop_zone)
        found: list[Expected] = []
        for customer in self.customers:
            if customer.updated_at < end:  # customers the warehouse knows tonight
                found += self._customer_night(customer, night, start, end)
        self.selected[night] = Counter(e.customer_id for e in found if e.status == "selected")
        return found

    def _customer_night(
        self, customer: Customer, night: dt.date, start: dt.datetime, end: dt.datetime
    ) -> list[Expected]:
        target = night + dt.timedelta(days=self.shift(customer.time_zone))
        known = [
            o for o in self.orders_of[customer.customer_id] if o.status == "placed" and o.updated_at < end
        ]
        first = min(known, key=lambda o: (o.ordered_at, o.order_id), default=None)
        candidates: dict[str, _Candidate] = {}
        if first is not None and self._arrived(first, start, end):
            self.thanked.add(first.order_id)
            shop_day = local_date(first.ordered_at, self.shop_zone)
            lateness = (night - (shop_day + dt.timedelta(days=1))).days
            candidates["thank_you"] = _Candidate(lateness, first.order_id)
        if customer.birthday is not None and same_day_in_year(customer.birthday, target.year) == target:
            candidates["birthday"] = _Candidate()
        if first is not None:
            first_day = local_date(first.ordered_at, customer.time_zone)
            if target.year - first_day.year >= 1 and same_day_in_year(first_day, target.year) == target:
                candidates["anniversary"] = _Candidate()
        asked = [
            o.order_id
            for o in known
            if local_date(o.ordered_at, customer.time_zone) == target - self.feedback_delay
        ]
        if asked:
            candidates["feedback"] = _Candidate(order_id=max(asked))
        return self._people_rules(customer, night, target, candidates)

    def _arrived(self, order: Order, start: dt.datetime, end: dt.datetime) -> bool:
        return (
            start <= order.updated_at < end and order.ordered_at < end and order.order_id not in self.thanked
        )

    def _people_rules(
        self, customer: Customer, night: dt.date, target: dt.date, candidates: dict[str, _Candidate]
    ) -> list[Expected]:
        """Lateness, consent, the daily cap, the weekly cap, in this order; ``why`` for each."""
        decided: list[tuple[str, str]] = []  # (occasion, why), in priority order
        slot_taken = False
        for occasion in (name for name in self.priority if name in candidates):
            lateness = candidates[occasion].lateness
            if lateness is not None and lateness > self.max_age_days:
                why = "late"  # does not take the day's slot
            elif not customer.marketing_consent:
                why = "consent"
            elif slot_taken:
                why = "daily"
            else:
                slot_taken = True
                why = "weekly" if self._week(customer.customer_id, night) >= self.weekly_cap else "selected"
            decided.append((occasion, why))
        return [
            Expected(
                customer.customer_id,
                occasion,
                target,
                "selected" if why == "selected" else "skipped",
                why,
                candidates[occasion].lateness,
                candidates[occasion].order_id,
            )
            for occasion, why in decided
        ]

    def _week(self, customer_id: int, night: dt.date) -> int:
        """Messages selected for the customer in nights D-6..D-1."""
        nights = (night - dt.timedelta(days=back) for back in range(1, 7))
        return sum(self.selected.get(n, Counter())[customer_id] for n in nights)
