"""Issue #11: 420 consecutive nights of a hand-made shop, every night's occasions against an oracle.

The shop (Europe/Berlin) has customers in ten zones: both hemispheres, both daylight-saving
conventions (Berlin, London, Los Angeles from March to October/November; Sydney, Auckland from
October/September to April), none at all (Kolkata +05:30, Kiritimati +14, Pago Pago -11),
Sao Paulo (summer time until 2019) and Moscow (+04:00 in 2011-2014). Its source is written once,
up front; night D sees the rows updated before its window's end, as the extract does.

The nights run from 2027-02-01 to 2028-03-26: February of a common year, 29 February 2028,
both hemispheres' clock changes. After each night the warehouse's ``occasions`` rows of that
night are compared with :class:`tests.calendar_oracle.Oracle`, written in plain Python from the
rules alone (no code shared with ``retention.occasions``): customer, occasion, local date and
status, and for a thank-you or a feedback the order it is about. Settings: no holdout, no
thank-you after every order for A customers, priority thank_you, birthday, anniversary, feedback
(win-back and the product suggestions are out of scope), defaults otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select

from retention import schema, segments, source
from retention.night import night_for_date
from retention.pipeline import (
    stage_extract,
    stage_facts,
    stage_migrate,
    stage_occasions,
    stage_segments,
    warehouse_engine,
)
from tests.calendar_oracle import OFFSET_RANGE, Customer, Expected, Oracle, Order, target_shift_days
from tests.shop import Shop

FIRST_NIGHT = dt.date(2027, 2, 1)
NIGHTS = 420  # to 2028-03-26
KNOWN = dt.datetime(2026, 12, 1)  # customer rows loaded long before the first night
UTC = dt.UTC
ROOT = Path(__file__).resolve().parent.parent
REPORTED_MISMATCHES = 5
ORDER_OCCASIONS = ("thank_you", "feedback")  # their details name the order they are about


def at(zone: str, *args: int, fold: int = 0) -> dt.datetime:
    """A wall-clock time in ``zone`` as the naive UTC moment the shop stores."""
    return dt.datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC).replace(tzinfo=None)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args)


class Book:
    """The hand-made shop: customers and orders, kept for both the source and the oracle."""

    def __init__(self) -> None:
        self.customers: list[Customer] = []
        self.orders: list[Order] = []

    def customer(
        self,
        customer_id: int,
        zone: str,
        birthday: dt.date | None = None,
        *,
        consent: bool = True,
        known: dt.datetime = KNOWN,
    ) -> int:
        self.customers.append(Customer(customer_id, zone, birthday, consent, known))
        return customer_id

    def order(
        self,
        order_id: int,
        customer_id: int,
        placed: dt.datetime,
        arrived: dt.datetime | None = None,
        status: str = "placed",
    ) -> None:
        """An order placed at ``placed`` whose row reaches the shop database at ``arrived``."""
        self.orders.append(Order(order_id, customer_id, placed, arrived or placed, status))

    def every(
        self, customer_id: int, first_id: int, start: dt.datetime, days: int, until: dt.datetime
    ) -> None:
        """A regular buyer: an order every ``days`` days; every 7th one is cancelled."""
        n = 0
        while start + dt.timedelta(days=days * n) < until:
            status = "cancelled" if n % 7 == 6 else "placed"
            self.order(first_id + n, customer_id, start + dt.timedelta(days=days * n), status=status)
            n += 1


def build() -> Book:  # noqa: PLR0915 - one line per hand-made customer reads best
    """The customers, each with the hard case it is there for."""
    b = Book()
    d = dt.date
    # --- birthdays on and around 29 February, in every kind of zone ------------------------------
    b.customer(1, "Europe/Berlin", d(1996, 2, 29))
    b.customer(2, "Pacific/Auckland", d(1988, 2, 29))  # prepared the night before (n = 1)
    b.customer(3, "America/Los_Angeles", d(1985, 2, 28))
    b.customer(4, "Pacific/Kiritimati", d(1992, 3, 1))
    b.customer(5, "Pacific/Pago_Pago", d(1972, 2, 29))
    b.customer(6, "Australia/Sydney", d(2000, 2, 28))
    b.customer(7, "Asia/Kolkata", d(1995, 3, 1))
    b.customer(8, "America/Sao_Paulo", d(1980, 2, 29), consent=False)
    b.customer(9, "Europe/Moscow", d(1999, 12, 31))  # +04:00 at most: exactly at the cut-off, n = 0
    b.customer(10, "Europe/London", d(2001, 1, 1))
    b.customer(11, "Europe/Berlin")  # a prospect: never anything
    b.customer(12, "Pacific/Kiritimati", d(1990, 2, 1))  # 2027-02-01 needed night 01-31 (never ran)

    # --- first orders a year or more before the nights, near midnight, near 29 February -----------
    b.customer(13, "Europe/Berlin", d(1977, 3, 1))  # birthday and anniversary on the same day
    b.order(1301, 13, at("Europe/Berlin", 2026, 3, 1, 0, 10))  # UTC date 2026-02-28
    b.customer(15, "Pacific/Auckland")
    b.order(1501, 15, at("Pacific/Auckland", 2026, 3, 1, 0, 30))  # UTC 2026-02-28 11:30
    b.customer(16, "America/Los_Angeles")
    b.order(1601, 16, at("America/Los_Angeles", 2026, 2, 28, 20, 0))  # UTC 2026-03-01 04:00
    b.customer(17, "Pacific/Kiritimati")
    b.order(1701, 17, at("Pacific/Kiritimati", 2024, 2, 29, 0, 30))  # UTC 2024-02-28
    b.customer(18, "Pacific/Pago_Pago")
    b.order(1801, 18, at("Pacific/Pago_Pago", 2024, 2, 29, 23, 30))  # UTC 2024-03-01
    b.customer(19, "Australia/Sydney")
    b.order(1901, 19, at("Australia/Sydney", 2024, 2, 28, 23, 30))
    b.customer(20, "Asia/Kolkata")
    b.order(2001, 20, at("Asia/Kolkata", 2025, 2, 28, 23, 45))
    b.customer(21, "America/Sao_Paulo")
    b.order(2101, 21, at("America/Sao_Paulo", 2019, 2, 16, 23, 30))  # the last summer time's end hour
    b.customer(22, "Europe/London")
    b.order(2201, 22, utc(2026, 3, 29, 0, 30))  # 30 minutes before London springs forward
    b.order(2202, 22, utc(2027, 3, 28, 1, 30))  # 30 minutes after, a year later

    # --- first orders during the nights -----------------------------------------------------------
    b.customer(14, "Europe/Berlin")
    b.order(1401, 14, at("Europe/Berlin", 2027, 3, 1, 0, 10))  # UTC 2027-02-28; anniversary 2028-03-01
    b.customer(23, "Europe/Berlin")
    b.order(2301, 23, utc(2027, 3, 28, 0, 59))  # 01:59 CET, a minute before the spring gap
    b.order(2302, 23, utc(2027, 3, 28, 1, 0))  # 03:00 CEST
    b.customer(24, "Europe/Berlin")
    b.order(2401, 24, utc(2026, 6, 1, 10, 0))
    b.order(2402, 24, at("Europe/Berlin", 2027, 3, 20, 23, 30))  # feedback 03-30, not 240 h later
    b.order(2403, 24, at("Europe/Berlin", 2027, 10, 22, 0, 30))  # feedback 11-01 across the fall back
    b.customer(25, "Australia/Sydney")
    b.order(2501, 25, utc(2026, 5, 5, 2, 0))
    b.order(2502, 25, at("Australia/Sydney", 2027, 3, 30, 0, 30))  # feedback 04-09 across DST's end
    b.order(2503, 25, utc(2027, 4, 3, 15, 30))  # 02:30 AEDT, the hour Sydney turns back
    b.order(2504, 25, utc(2027, 4, 3, 16, 30))  # 02:30 AEST, the same wall-clock time again
    b.customer(26, "Pacific/Auckland")
    b.order(2601, 26, utc(2025, 9, 1, 1, 0))
    b.order(2602, 26, at("Pacific/Auckland", 2027, 9, 20, 23, 30))  # feedback 09-30 across DST's start
    b.customer(27, "America/Los_Angeles")
    b.order(2701, 27, utc(2026, 8, 8, 20, 0))
    b.order(2702, 27, at("America/Los_Angeles", 2027, 3, 10, 23, 30))  # feedback 03-20 across DST
    b.order(2703, 27, at("America/Los_Angeles", 2027, 11, 6, 23, 30))  # feedback 11-16 across DST's end

    # --- late arrivals (the shop's clock decides the lateness) ------------------------------------
    b.customer(28, "Europe/Berlin")
    b.order(2801, 28, at("Europe/Berlin", 2027, 5, 10, 23, 50), at("Europe/Berlin", 2027, 5, 11, 0, 20))
    b.customer(29, "Pacific/Auckland")  # placed 00:00 Berlin on 06-15, arrives 4 nights late: skipped
    b.order(2901, 29, at("Pacific/Auckland", 2027, 6, 15, 10, 0), utc(2027, 6, 19, 12, 0))
    b.customer(30, "Asia/Kolkata")  # 3 nights late: still thanked
    b.order(3001, 30, utc(2027, 7, 1, 12, 0), utc(2027, 7, 4, 12, 0))
    b.customer(31, "America/Los_Angeles")  # very late: skipped, and never any feedback for it
    b.order(3101, 31, at("America/Los_Angeles", 2027, 8, 1, 23, 30), utc(2027, 8, 20, 9, 0))
    b.order(3102, 31, utc(2027, 9, 3, 9, 0))
    b.customer(32, "Europe/Berlin", d(1960, 4, 10), consent=False)
    b.order(3201, 32, utc(2027, 4, 10, 12, 0))
    b.customer(33, "Pacific/Kiritimati", consent=False)  # late beats consent: skipped for lateness
    b.order(3301, 33, utc(2027, 10, 1, 12, 0), utc(2027, 10, 7, 12, 0))
    b.customer(34, "Pacific/Pago_Pago", d(1980, 1, 1))
    b.order(3401, 34, at("Pacific/Pago_Pago", 2027, 12, 31, 23, 30))  # UTC 2028-01-01
    b.customer(46, "Europe/Berlin")
    b.order(4601, 46, utc(2027, 11, 1, 12, 0))
    b.order(4602, 46, utc(2027, 11, 5, 12, 0), utc(2027, 11, 16, 10, 0))  # arrives after its feedback day
    b.order(4603, 46, utc(2027, 11, 6, 12, 0), utc(2027, 11, 15, 22, 59))  # a minute before the window ends

    # --- the first night: the window's arrivals are thanked, the initial load is not ---------------
    b.customer(35, "Europe/Berlin")
    b.order(3501, 35, utc(2027, 1, 28, 10, 0), utc(2027, 1, 31, 10, 0))  # 3 nights late
    b.customer(36, "Europe/Berlin")
    b.order(3601, 36, utc(2027, 1, 26, 10, 0), utc(2027, 1, 31, 10, 0))  # 5 nights late
    b.customer(37, "Europe/Berlin")
    b.order(3701, 37, utc(2027, 1, 30, 12, 0))  # initial load; feedback on 02-09
    b.customer(48, "Pacific/Kiritimati")
    b.order(4801, 48, utc(2027, 1, 31, 9, 0))  # arrives in the first window, for local date 02-02

    # --- caps ---------------------------------------------------------------------------------------
    b.customer(43, "Europe/Berlin", d(1970, 5, 12))
    for n, day in enumerate((1, 2, 3)):  # feedback 05-11, 05-12 (birthday wins), 05-13 (weekly cap)
        b.order(4301 + n, 43, at("Europe/Berlin", 2027, 5, day, 12, 0))
    b.customer(44, "Europe/Berlin")
    b.order(4401, 44, utc(2027, 6, 1, 12, 0), status="cancelled")  # not the first order, no feedback
    b.order(4402, 44, utc(2027, 6, 5, 12, 0))
    b.customer(47, "Australia/Sydney")
    b.order(4701, 47, at("Australia/Sydney", 2027, 8, 8, 20, 0))
    b.order(4702, 47, at("Australia/Sydney", 2027, 8, 8, 9, 0))  # same day: one feedback
    b.customer(49, "Asia/Kolkata")
    b.order(4901, 49, utc(2027, 9, 9, 9, 9))
    b.order(4902, 49, utc(2027, 9, 9, 9, 9))  # the same moment: one thank-you

    b.customer(51, "Pacific/Auckland", d(1985, 6, 16))  # thank-you and birthday for 06-16: thanks win
    b.order(5101, 51, at("Pacific/Auckland", 2027, 6, 15, 8, 0))
    b.customer(52, "Europe/Berlin", d(1990, 7, 20))  # a late skip leaves the day's slot to the birthday
    b.order(5201, 52, utc(2027, 7, 10, 12, 0), utc(2027, 7, 19, 12, 0))

    # --- the shop's own clock changes and window edges ----------------------------------------------
    b.customer(53, "Europe/Berlin")  # 02:30 CET, the repeated hour; the 25-hour night of 11-01
    b.order(5301, 53, utc(2027, 10, 31, 1, 30), utc(2027, 10, 31, 22, 30))
    b.customer(54, "Europe/Berlin")  # updated exactly at night 07-01's window end: night 07-02's
    b.order(5401, 54, utc(2027, 6, 30, 22, 0))
    b.customer(55, "Asia/Kolkata")  # 00:00 IST: the half-hour zone's midnight
    b.order(5501, 55, utc(2027, 4, 30, 18, 30))

    # --- customers who join during the nights -------------------------------------------------
    b.customer(45, "Europe/Moscow", d(1991, 9, 20), known=utc(2027, 9, 10, 12, 0))
    b.order(4501, 45, at("Europe/Moscow", 2027, 9, 16, 0, 30))  # Berlin's 09-15
    b.customer(56, "Europe/Berlin", d(1980, 5, 1), known=utc(2027, 5, 5, 12, 0))  # birthday before
    b.customer(57, "Pacific/Kiritimati", d(1980, 6, 12), known=utc(2027, 6, 10, 9, 0))  # greeted at once

    # --- regular buyers: feedback most weeks, daily and weekly caps, DST in every direction -------
    until = utc(2028, 3, 27)
    b.customer(38, "Europe/Berlin", d(1975, 7, 15))
    b.every(38, 380000, utc(2026, 12, 1, 10, 0), 2, until)
    b.customer(39, "Pacific/Auckland", d(1980, 9, 26))
    b.every(39, 390000, utc(2026, 12, 2, 11, 30), 3, until)  # 00:30 NZDT / 23:30 NZST
    b.customer(40, "Australia/Sydney", d(1966, 10, 3))
    b.every(40, 400000, utc(2027, 1, 3, 13, 30), 5, until)
    b.customer(41, "Pacific/Kiritimati", d(2002, 2, 28))
    b.every(41, 410000, utc(2026, 12, 1, 10, 0), 2, until)  # local midnight exactly
    b.customer(42, "America/Los_Angeles", d(1999, 11, 7))
    b.every(42, 420000, utc(2026, 12, 1, 7, 30), 3, until)  # 23:30 PST / 00:30 PDT
    b.customer(50, "America/Sao_Paulo", d(1993, 6, 6))
    b.every(50, 500000, utc(2027, 2, 2, 2, 30), 4, until)  # 23:30 local the day before
    return b


def _write(shop: Shop, book: Book) -> None:
    shop.product(1)
    for c in book.customers:
        shop.customer(
            c.customer_id,
            time_zone=c.time_zone,
            birthday=c.birthday,
            marketing_consent=c.marketing_consent,
            updated_at=c.updated_at,
            created_at=min(c.updated_at, KNOWN),
        )
    orders = [
        {
            "order_id": o.order_id,
            "customer_id": o.customer_id,
            "ordered_at": o.ordered_at,
            "status": o.status,
            "currency": "EUR",
            "updated_at": o.updated_at,
        }
        for o in book.orders
    ]
    items = [
        {
            "order_item_id": o.order_id,
            "order_id": o.order_id,
            "product_id": 1,
            "quantity": 1,
            "unit_price": 100,
            "unit_cost": 60,
            "returned_quantity": 0,
            "updated_at": o.updated_at,
        }
        for o in book.orders
    ]
    with shop.engine.begin() as conn:
        conn.execute(insert(source.orders), orders)
        conn.execute(insert(source.order_items), items)


Row = tuple[int, str, dt.date, str, int | None]  # customer, occasion, date, status, order


def _run_night(settings, night: dt.date) -> dict[Row, str | None]:
    """Night D through the occasions stage; its occasions rows (with the order a thank-you or
    feedback is about, from ``details``) and their reasons."""
    n = night_for_date(night, settings.time_zone)
    for stage in (stage_extract, stage_facts, stage_segments, stage_occasions):
        stage(settings, n, "oracle")
    occ = schema.occasions
    columns = (
        occ.c.customer_id,
        occ.c.occasion,
        occ.c.occasion_date,
        occ.c.status,
        occ.c.details,
        occ.c.reason,
    )
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(select(*columns).where(occ.c.night == night)).all()
    found = {}
    for r in rows:
        order = json.loads(r.details).get("order_id") if r.occasion in ORDER_OCCASIONS else None
        found[(r.customer_id, r.occasion, r.occasion_date, r.status, order)] = r.reason
    return found


def _row(e: Expected) -> Row:
    return (*e.key, e.order_id if e.occasion in ORDER_OCCASIONS else None)


def _diff(night: dt.date, expected: list[Expected], found: dict[Row, str | None]) -> str:
    want = {_row(e): e for e in expected}

    def show(row: Row) -> str:
        customer_id, occasion, day, status, order = row
        about = f" (order {order})" if order is not None else ""
        return f"customer {customer_id} {occasion}{about} for {day}: {status}"

    lines = [f"night {night}:"]
    lines += [f"  oracle only:   {show(k)} [{want[k].why}]" for k in sorted(set(want) - set(found), key=str)]
    lines += [f"  pipeline only: {show(k)} [{found[k]!r}]" for k in sorted(set(found) - set(want), key=str)]
    return "\n".join(lines)


def test_offset_table_matches_tzdata() -> None:
    """The oracle's hand-written offsets agree with zoneinfo, sampled every 3 hours of 2000..2040."""
    moment = dt.datetime(2000, 1, 1, tzinfo=UTC)
    end = dt.datetime(2041, 1, 1, tzinfo=UTC)
    seen: dict[str, set[dt.timedelta]] = {zone: set() for zone in OFFSET_RANGE}
    zones = {zone: ZoneInfo(zone) for zone in OFFSET_RANGE}
    while moment < end:
        for zone, info in zones.items():
            seen[zone].add(moment.astimezone(info).utcoffset())
        moment += dt.timedelta(hours=3)
    assert {zone: (min(s), max(s)) for zone, s in seen.items()} == OFFSET_RANGE


@pytest.mark.parametrize(
    ("zone", "shift"),
    [
        ("Pacific/Kiritimati", 1),
        ("Pacific/Auckland", 1),
        ("Australia/Sydney", 1),
        ("Asia/Kolkata", 1),  # +05:30: its 09:00 is 04:30 in Berlin in winter, before 06:00
        ("Europe/Moscow", 0),  # +04:00 at most: its 09:00 is 06:00 in Berlin, just in time
        ("Europe/Berlin", 0),
        ("Europe/London", 0),
        ("America/Sao_Paulo", 0),
        ("America/Los_Angeles", 0),
        ("Pacific/Pago_Pago", 0),
    ],
)
def test_target_date_shift_by_hand(zone: str, shift: int) -> None:
    assert target_shift_days(zone, "Europe/Berlin", dt.time(6, 0), dt.time(9, 0)) == shift


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)
def test_420_nights_match_the_independent_oracle(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # The segment chart (a PNG for people, half a second a night with matplotlib) says nothing
    # about occasions; without it the 420 nights take seconds instead of minutes.
    monkeypatch.setattr(segments, "draw_chart", lambda night, summary, path: path)
    settings = settings.with_overrides(
        holdout_share=0.0,
        thank_every_order_for_a=False,
        occasion_priority="thank_you,birthday,anniversary,feedback",
    )
    book = build()
    _write(Shop(settings.source), book)
    oracle = Oracle(
        book.customers,
        book.orders,
        shop_zone=settings.time_zone,
        ready_by=settings.messages_ready_by,
        send_start=settings.send_window_start,
        max_age_days=settings.thank_you_max_age_days,
        weekly_cap=settings.weekly_cap,
        feedback_delay_days=settings.feedback_delay_days,
    )
    stage_migrate(settings)
    exercised: Counter = Counter()
    mismatches: list[str] = []
    for offset in range(NIGHTS):
        night = FIRST_NIGHT + dt.timedelta(days=offset)
        expected = oracle.night(night)
        found = _run_night(settings, night)
        if {_row(e) for e in expected} != set(found):
            mismatches.append(_diff(night, expected, found))
            if len(mismatches) == REPORTED_MISMATCHES:
                break  # enough to see the pattern; the rest would take minutes
        _check_reasons(night, expected, found)
        exercised.update((e.occasion, e.why) for e in expected)
    assert not mismatches, f"nights differ (night {night} was the last one run):\n" + "\n".join(mismatches)
    _assert_exercised(exercised)


def _check_reasons(night: dt.date, expected: list[Expected], found: dict[Row, str | None]) -> None:
    """Every skipped row says why; a late thank-you says how late (in nights)."""
    for row, reason in found.items():
        assert row[3] != "skipped" or reason, f"night {night}: {row} is skipped without a reason"
    for e in expected:
        reason = found.get(_row(e))
        if e.why == "late" and reason is not None:
            assert str(e.lateness) in reason, f"night {night}: {e} has reason {reason!r}"


def _assert_exercised(exercised: Counter) -> None:
    """The run is not vacuous: every rule was met often enough to have been tested.

    The counts are the oracle's for this shop (birthday 35, anniversary 32, feedback 796,
    thank_you 24; late 5, consent 6, daily 9, weekly 244); the bounds leave room for edits.
    """
    by_occasion: Counter = Counter()
    by_why: Counter = Counter()
    for (occasion, why), count in exercised.items():
        by_occasion[occasion] += count
        by_why[why] += count
    assert by_occasion["birthday"] >= 30, by_occasion
    assert by_occasion["anniversary"] >= 25, by_occasion
    assert by_occasion["feedback"] >= 500, by_occasion
    assert by_occasion["thank_you"] >= 20, by_occasion
    assert exercised[("thank_you", "late")] >= 5, exercised
    assert by_why["consent"] >= 5, by_why
    assert by_why["daily"] >= 8, by_why
    assert by_why["weekly"] >= 200, by_why
    # Each kind of conflict at least once: thanks beat a birthday, a birthday an anniversary and
    # a feedback; the weekly cap holds back a birthday, an anniversary and a feedback.
    for occasion in ("birthday", "anniversary", "feedback"):
        assert exercised[(occasion, "daily")] >= 1, exercised
        assert exercised[(occasion, "weekly")] >= 1, exercised


def test_oracle_shares_no_code_with_the_pipeline() -> None:
    """Importing the oracle loads no module of the ``retention`` package."""
    code = "import sys, tests.calendar_oracle; print(sorted(m for m in sys.modules if m.startswith('retention')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"
