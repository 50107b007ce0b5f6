"""Issue #11, items 1 and 4: calendar edges where the UTC date is not the customer's date.

The shop runs on Europe/Berlin. Item 1: a first order whose local date differs from its UTC
date around the end of February must still have its anniversary on its local date, in leap
years (where 29 February shifts day counts) and in non-leap years (where 29 February first
orders are celebrated on 28 February, as ``anniversary_date`` and the README say). Item 4:
feedback is asked on the night whose date is the order's local date plus
``feedback_delay_days``, counted in calendar days, across the spring and autumn clock changes
of Europe and the US alike.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from retention import schema
from retention.pipeline import warehouse_engine
from tests.shop import Shop
from tests.test_occasions import _occasions, _order, _through_occasions

UTC = dt.UTC


@pytest.fixture
def settings(settings):
    # No holdout: every candidate is recorded as selected or skipped, never hidden by chance.
    return settings.with_overrides(holdout_share=0.0)


def _utc(zone: str, *args: int) -> dt.datetime:
    """A local wall-clock time in ``zone`` as the naive UTC the shop database stores."""
    return dt.datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC).replace(tzinfo=None)


def _nights(first: str, last: str) -> list[str]:
    day, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(day + dt.timedelta(days=i)).isoformat() for i in range((end - day).days + 1)]


def _celebrated(settings, nights: list[str], occasion: str) -> dict[int, list[str]]:
    """Run the nights in order; the local dates for which each customer had ``occasion`` recorded.

    For a zone far east of the shop (Auckland) the night before prepares that date (README,
    "The night"); elsewhere the night of that date does.
    """
    found: dict[int, list[str]] = {}
    for night in nights:
        _through_occasions(settings, night)
        for customer_id, name, day in _occasion_dates(settings, night):
            if name == occasion:
                found.setdefault(customer_id, []).append(day)
    return found


def _occasion_dates(settings, night: str) -> list[tuple[int, str, str]]:
    occ = schema.occasions
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(
            select(occ.c.customer_id, occ.c.occasion, occ.c.occasion_date).where(
                occ.c.night == dt.date.fromisoformat(night)
            )
        )
        return [(r.customer_id, r.occasion, r.occasion_date.isoformat()) for r in rows]


# --- item 1: anniversaries at the end of February ---------------------------------------------

# (customer, zone, first order in local wall-clock time); the UTC date is the day before or after.
_FIRST_ORDERS_2027 = [
    (1, "Europe/Berlin", (2027, 3, 1, 0, 10)),  # 2027-02-28 23:10 UTC
    (2, "Pacific/Auckland", (2027, 3, 1, 0, 30)),  # 2027-02-28 11:30 UTC
    (3, "America/Los_Angeles", (2027, 2, 28, 20, 0)),  # 2027-03-01 04:00 UTC
    (4, "Europe/London", (2027, 2, 28, 12, 0)),  # same date in UTC: the control
]

_FIRST_ORDERS_LEAP_DAY = [
    (11, "Europe/Berlin", (2024, 2, 29, 0, 10)),  # 2024-02-28 23:10 UTC
    (12, "Pacific/Auckland", (2024, 2, 29, 0, 30)),  # 2024-02-28 11:30 UTC
    (13, "America/Los_Angeles", (2024, 2, 29, 20, 0)),  # 2024-03-01 04:00 UTC
    (14, "Pacific/Auckland", (2024, 3, 1, 0, 30)),  # 2024-02-29 11:30 UTC
    (15, "America/Los_Angeles", (2024, 2, 28, 20, 0)),  # 2024-02-29 04:00 UTC
]


def _plant_first_orders(shop: Shop, first_orders: list) -> None:
    for customer_id, zone, local in first_orders:
        shop.customer(customer_id, time_zone=zone, updated_at=dt.datetime(2023, 1, 1))
        _order(shop, 100 + customer_id, customer_id, _utc(zone, *local))


def test_anniversary_in_a_leap_year_of_first_orders_whose_utc_date_is_another_day(settings, shop) -> None:
    _plant_first_orders(shop, _FIRST_ORDERS_2027 + _FIRST_ORDERS_LEAP_DAY)
    found = _celebrated(settings, _nights("2028-02-26", "2028-03-02"), "anniversary")
    assert found == {
        1: ["2028-03-01"],
        2: ["2028-03-01"],
        3: ["2028-02-28"],
        4: ["2028-02-28"],
        11: ["2028-02-29"],
        12: ["2028-02-29"],
        13: ["2028-02-29"],
        14: ["2028-03-01"],
        15: ["2028-02-28"],
    }


def test_anniversary_of_a_29_february_first_order_is_on_28_february_in_a_non_leap_year(settings, shop) -> None:
    _plant_first_orders(shop, _FIRST_ORDERS_LEAP_DAY)
    found = _celebrated(settings, _nights("2027-02-26", "2027-03-02"), "anniversary")
    assert found == {
        11: ["2027-02-28"],
        12: ["2027-02-28"],
        13: ["2027-02-28"],
        14: ["2027-03-01"],
        15: ["2027-02-28"],
    }


# --- item 4: feedback ten local calendar days after the order, across a clock change ----------


@pytest.mark.parametrize(
    ("zone", "ordered_local", "expected"),
    [
        # Europe falls back on 2026-10-25: 240 hours after 14:00 on 20 October is 13:00 on the 30th,
        # which the old rule found in night 31 October's shifted window.
        ("Europe/Berlin", (2026, 10, 20, 14, 0), "2026-10-30"),
        # Europe springs forward on 2027-03-28: a 00:30 order is 23:30 UTC the day before.
        ("Europe/Berlin", (2027, 3, 20, 0, 30), "2027-03-30"),
        # The US falls back on 2026-11-01 (and Berlin on 2026-10-25).
        ("America/New_York", (2026, 10, 28, 14, 0), "2026-11-07"),
        # The US springs forward on 2027-03-14; a late evening order is the next day in UTC.
        ("America/New_York", (2027, 3, 10, 23, 30), "2027-03-20"),
    ],
)
def test_feedback_is_asked_ten_local_days_after_the_order_across_a_clock_change(
    settings, shop, zone, ordered_local, expected
) -> None:
    shop.customer(1, time_zone=zone)
    _order(shop, 10, 1, _utc(zone, *ordered_local))
    night = dt.date.fromisoformat(expected)
    nights = [(night + dt.timedelta(days=k)).isoformat() for k in (-1, 0, 1)]
    assert _celebrated(settings, nights, "feedback") == {1: [expected]}
    assert _occasions(settings, expected)[(1, "feedback")] == ("selected", None)


def test_feedback_asks_about_the_latest_order_of_that_local_day_only(settings, shop) -> None:
    # Three orders within 24 UTC hours: only the two of local 20 October (Los Angeles) count.
    zone = "America/Los_Angeles"
    shop.customer(1, time_zone=zone)
    _order(shop, 10, 1, _utc(zone, 2026, 10, 20, 0, 30))
    _order(shop, 11, 1, _utc(zone, 2026, 10, 20, 23, 30))
    _order(shop, 12, 1, _utc(zone, 2026, 10, 21, 9, 0))
    _through_occasions(settings, "2026-10-30")
    occ = schema.occasions
    with warehouse_engine(settings.warehouse).connect() as conn:
        details = conn.execute(
            select(occ.c.details).where(occ.c.occasion == "feedback", occ.c.night == dt.date(2026, 10, 30))
        ).scalar_one()
    assert details == '{"order_id": 11}'
