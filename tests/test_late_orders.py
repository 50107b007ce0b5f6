"""Issue #11 item 5: a thank-you follows the night an order ARRIVED, not the night it was placed.

The shop is in Europe/Berlin (UTC+1 in November). Night D reads the rows updated in
[D-1 00:00, D 00:00) local; an order placed at 23:50 on D-1 whose row reaches the shop
database at 00:20 on D is read by night D+1, and must be thanked then. Every timestamp
below is naive UTC, the way the shop stores them.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select, update

from retention import schema, source
from retention.pipeline import warehouse_engine
from tests.shop import Shop
from tests.test_occasions import _through_occasions as _night

BERLIN = dt.timedelta(hours=1)  # Berlin is UTC+1 in November


def _local(*args: int) -> dt.datetime:
    """A Berlin wall-clock time in November as the naive UTC moment the shop stores."""
    return dt.datetime(*args) - BERLIN


@pytest.fixture
def settings(settings):
    # No holdout: expectations stay exact. The age limit is the default, 3 nights.
    return settings.with_overrides(holdout_share=0.0)


def _order(shop: Shop, order_id: int, customer_id: int, placed: dt.datetime, arrived: dt.datetime) -> None:
    """An order placed at ``placed`` whose rows reach the shop database at ``arrived``."""
    shop.order(order_id, customer_id, placed, updated_at=arrived)
    shop.item(order_id, order_id, 1, updated_at=arrived)


def _touch(shop: Shop, order_id: int, at: dt.datetime) -> None:
    """The order's row is updated later (its status is saved again): it is extracted again."""
    with shop.engine.begin() as conn:
        conn.execute(update(source.orders).where(source.orders.c.order_id == order_id).values(updated_at=at))


def _thanks(settings, night: str) -> dict[int, tuple[str, str | None, int]]:
    """customer -> (status, reason, order id) of the night's thank_you occasions."""
    occ = schema.occasions
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(
            select(occ.c.customer_id, occ.c.status, occ.c.reason, occ.c.details).where(
                occ.c.night == dt.date.fromisoformat(night), occ.c.occasion == "thank_you"
            )
        )
        return {r.customer_id: (r.status, r.reason, json.loads(r.details)["order_id"]) for r in rows}


def _all_occasions(settings) -> list[tuple]:
    occ = schema.occasions
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(
            select(
                occ.c.night, occ.c.customer_id, occ.c.occasion, occ.c.status, occ.c.reason, occ.c.details
            ).order_by(occ.c.night, occ.c.customer_id, occ.c.occasion)
        )
        return [tuple(row) for row in rows]


def test_order_placed_before_midnight_arriving_after_is_thanked_the_next_night(settings, shop) -> None:
    shop.customer(1)
    _order(shop, 10, 1, placed=_local(2026, 11, 19, 23, 50), arrived=_local(2026, 11, 20, 0, 20))
    _night(settings, "2026-11-20")
    assert _thanks(settings, "2026-11-20") == {}  # the row is not in the shop database yet
    _night(settings, "2026-11-21")
    assert _thanks(settings, "2026-11-21") == {1: ("selected", None, 10)}


def test_late_orders_are_thanked_up_to_the_limit_and_recorded_as_skipped_beyond(settings, shop) -> None:
    arrived = _local(2026, 11, 20, 12, 0)  # read by night 2026-11-21
    for customer_id, placed_day in ((2, 10), (4, 17), (5, 16)):
        shop.customer(customer_id)
        _order(shop, customer_id * 10, customer_id, _local(2026, 11, placed_day, 12, 0), arrived)
    _night(settings, "2026-11-20")
    _night(settings, "2026-11-21")
    assert _thanks(settings, "2026-11-21") == {
        2: ("skipped", "order arrived 10 days after it was placed; limit 3", 20),
        4: ("selected", None, 40),  # placed on the 17th, its own night the 18th: 3 nights late
        5: ("skipped", "order arrived 4 days after it was placed; limit 3", 50),
    }


def test_the_age_limit_is_a_setting(settings, shop) -> None:
    settings = settings.with_overrides(thank_you_max_age_days=10)
    shop.customer(2)
    _order(shop, 20, 2, _local(2026, 11, 10, 12, 0), _local(2026, 11, 20, 12, 0))
    _night(settings, "2026-11-21")
    assert _thanks(settings, "2026-11-21") == {2: ("selected", None, 20)}


def test_an_order_is_decided_once_even_when_its_row_is_updated_later(settings, shop) -> None:
    shop.customer(1)
    shop.customer(2)
    _order(shop, 10, 1, placed=_local(2026, 11, 19, 23, 50), arrived=_local(2026, 11, 20, 0, 20))
    _order(shop, 20, 2, _local(2026, 11, 10, 12, 0), _local(2026, 11, 20, 12, 0))
    _night(settings, "2026-11-20")
    _night(settings, "2026-11-21")
    assert set(_thanks(settings, "2026-11-21")) == {1, 2}
    # Both rows change again the next day: within the age limit for order 10, beyond for 20.
    _touch(shop, 10, _local(2026, 11, 21, 9, 0))
    _touch(shop, 20, _local(2026, 11, 21, 9, 0))
    _night(settings, "2026-11-22")
    assert _thanks(settings, "2026-11-22") == {}


def test_a_rerun_of_the_night_decides_the_same(settings, shop) -> None:
    shop.customer(1)
    shop.customer(2)
    shop.customer(3)
    _order(shop, 10, 1, placed=_local(2026, 11, 19, 23, 50), arrived=_local(2026, 11, 20, 0, 20))
    _order(shop, 20, 2, _local(2026, 11, 10, 12, 0), _local(2026, 11, 20, 12, 0))
    _order(shop, 30, 3, _local(2026, 11, 20, 8, 0), _local(2026, 11, 20, 8, 0))  # on time
    _night(settings, "2026-11-20")
    _night(settings, "2026-11-21")
    first = _all_occasions(settings)
    assert {row[1] for row in first if row[2] == "thank_you"} == {1, 2, 3}
    _night(settings, "2026-11-21")
    assert _all_occasions(settings) == first


# --- follow-ups of an order (accessory, next purchase) count from the night it arrived -----------


def _suggest(settings, customer_id: int, kind: str, night: dt.date) -> None:
    """A rank-1 suggestion of ``kind`` for the customer (the recommendations stage's output)."""
    with warehouse_engine(settings.warehouse).begin() as conn:
        conn.execute(
            schema.recommendations.insert().values(
                customer_id=customer_id,
                kind=kind,
                rank=1,
                product_id=1,
                because_product_id=1,
                score=1,
                explanation="test",
                night=night,
            )
        )


def _follow_ups(settings, occasion: str) -> dict[int, str]:
    """customer -> the night their ``occasion`` was selected."""
    return {
        customer_id: night.isoformat()
        for night, customer_id, name, status, *_ in _all_occasions(settings)
        if name == occasion and status == "selected"
    }


@pytest.mark.parametrize(("occasion", "delay"), [("accessory", 3), ("next_purchase", 14)])
def test_follow_ups_of_a_late_order_count_from_its_arrival(settings, shop, occasion, delay) -> None:
    """On time: the delay after the order's own night. Late by k <= 3 nights: k nights later. Later: none."""
    settings = settings.with_overrides(occasion_priority=occasion)
    start = dt.date(2026, 11, 5)
    placed = {
        1: (_local(2026, 11, 4, 23, 50), _local(2026, 11, 5, 0, 20)),  # own night 5th, arrives for the 6th
        2: (_local(2026, 11, 4, 12, 0), _local(2026, 11, 4, 12, 0)),  # on time: night the 5th
        3: (_local(2026, 11, 2, 12, 0), _local(2026, 11, 5, 9, 0)),  # own night the 3rd, arrives 3 late
        4: (_local(2026, 10, 30, 12, 0), _local(2026, 11, 5, 9, 0)),  # own night 31 Oct, 6 late: none
    }
    for customer_id, (at, arrived) in placed.items():
        shop.customer(customer_id)
        _order(shop, customer_id * 10, customer_id, at, arrived)
    nights = [start + dt.timedelta(days=k) for k in range(delay + 3)]
    for night in nights:
        _night(settings, night.isoformat())
        if night == start:  # the warehouse exists now; no follow-up is due on the first night
            for customer_id in placed:
                _suggest(settings, customer_id, occasion, night)
    day = dt.timedelta(days=delay)
    assert _follow_ups(settings, occasion) == {
        1: (start + dt.timedelta(days=1) + day).isoformat(),
        2: (start + day).isoformat(),
        3: (start + dt.timedelta(days=1) + day).isoformat(),
    }


@pytest.mark.parametrize(("occasion", "delay"), [("accessory", 3), ("next_purchase", 14)])
def test_a_first_loads_history_gets_its_follow_ups_on_time(settings, shop, occasion, delay) -> None:
    """The very first night reads the whole shop: its older orders are not late arrivals."""
    settings = settings.with_overrides(occasion_priority=occasion)
    first = dt.date(2026, 11, 20)
    shop.customer(1)
    placed = first - dt.timedelta(days=delay + 1)  # own night: first - delay
    at = _local(placed.year, placed.month, placed.day, 12, 0)
    _order(shop, 10, 1, at, at)
    _night(settings, (first - dt.timedelta(days=1)).isoformat())  # the first (full) load
    _suggest(settings, 1, occasion, first - dt.timedelta(days=1))
    _night(settings, first.isoformat())
    assert _follow_ups(settings, occasion) == {1: first.isoformat()}


def test_an_earlier_order_arriving_after_the_first_was_thanked_is_no_second_welcome(settings, shop) -> None:
    """The late order becomes the customer's first, but they have had their first-order thank-you."""
    shop.customer(1)
    _order(shop, 20, 1, _local(2026, 11, 20, 9, 0), _local(2026, 11, 20, 9, 0))  # on time: night 21st
    _order(
        shop, 10, 1, _local(2026, 11, 19, 22, 0), _local(2026, 11, 21, 9, 0)
    )  # placed earlier, arrives late
    _night(settings, "2026-11-21")
    assert _thanks(settings, "2026-11-21") == {1: ("selected", None, 20)}
    _night(settings, "2026-11-22")
    assert _thanks(settings, "2026-11-22") == {}
