"""The occasion oracle: hand-built customers across time zones and calendars, caps and the holdout.

Night D is the shop's local date (Europe/Berlin); every occasion is for local date D in the
customer's own calendar, and moments (orders) are converted to the customer's zone first.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from retention import schema
from retention.night import night_for_date
from retention.occasions import anniversary_date, in_holdout
from retention.pipeline import (
    stage_extract,
    stage_facts,
    stage_migrate,
    stage_occasions,
    stage_segments,
    warehouse_engine,
)
from tests.shop import Shop


def _through_occasions(settings, night: str, run_id: str = "t") -> None:
    n = night_for_date(night, settings.time_zone)
    stage_migrate(settings)
    for stage in (stage_extract, stage_facts, stage_segments, stage_occasions):
        stage(settings, n, run_id)


def _occasions(settings, night: str) -> dict[tuple[int, str], tuple[str, str | None]]:
    occ = schema.occasions
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(
            select(occ.c.customer_id, occ.c.occasion, occ.c.status, occ.c.reason).where(
                occ.c.night == dt.date.fromisoformat(night)
            )
        )
        return {(r.customer_id, r.occasion): (r.status, r.reason) for r in rows}


@pytest.fixture
def settings(settings):
    # No holdout unless a test asks for it: expectations stay exact.
    return settings.with_overrides(holdout_share=0.0)


def _order(shop: Shop, order_id: int, customer_id: int, at: dt.datetime) -> None:
    shop.order(order_id, customer_id, at)
    shop.item(order_id, order_id, 1, updated_at=at)


def test_birthday_is_greeted_on_the_day(settings, shop) -> None:
    shop.customer(1, birthday=dt.date(1990, 11, 20))
    shop.customer(2, birthday=dt.date(1990, 11, 21))
    shop.customer(3, birthday=None)
    _through_occasions(settings, "2026-11-20")
    found = _occasions(settings, "2026-11-20")
    assert set(found) == {(1, "birthday")}


@pytest.mark.parametrize(
    ("night", "greeted"),
    [("2027-02-28", True), ("2027-03-01", False), ("2028-02-28", False), ("2028-02-29", True)],
)
def test_29_february_birthday_falls_on_28_february_in_non_leap_years(settings, shop, night, greeted) -> None:
    shop.customer(1, birthday=dt.date(1992, 2, 29))
    _through_occasions(settings, night)
    assert ((1, "birthday") in _occasions(settings, night)) is greeted


def test_anniversary_counts_the_first_order_in_the_customers_own_zone(settings, shop) -> None:
    # 2025-11-19 22:30 UTC is 2025-11-20 00:30 in Tallinn but still 2025-11-19 in London.
    moment = dt.datetime(2025, 11, 19, 22, 30)
    shop.customer(1, time_zone="Europe/Tallinn", language="et")
    shop.customer(2, time_zone="Europe/London")
    _order(shop, 10, 1, moment)
    _order(shop, 11, 2, moment)
    _through_occasions(settings, "2026-11-19")
    assert (2, "anniversary") in _occasions(settings, "2026-11-19")
    assert (1, "anniversary") not in _occasions(settings, "2026-11-19")
    _through_occasions(settings, "2026-11-20")
    assert (1, "anniversary") in _occasions(settings, "2026-11-20")


def test_anniversary_of_a_leap_day_first_order(settings, shop) -> None:
    shop.customer(1, updated_at=dt.datetime(2024, 1, 1))
    _order(shop, 10, 1, dt.datetime(2024, 2, 29, 12, 0))
    _through_occasions(settings, "2025-02-28")
    assert (1, "anniversary") in _occasions(settings, "2025-02-28")
    assert anniversary_date(dt.date(2024, 2, 29), 2028) == dt.date(2028, 2, 29)


def test_first_order_on_a_daylight_saving_day_is_thanked_once(settings, shop) -> None:
    # Berlin falls back on 2026-10-25: that local day has 25 hours, 2026-10-24 22:00 to 10-25 23:00 UTC.
    shop.customer(1)
    shop.customer(2)
    _order(shop, 10, 1, dt.datetime(2026, 10, 24, 22, 30))  # 00:30 local on the 25th
    _order(shop, 11, 2, dt.datetime(2026, 10, 25, 22, 30))  # 23:30 local on the 25th
    _through_occasions(settings, "2026-10-26")
    found = _occasions(settings, "2026-10-26")
    assert {key for key in found if key[1] == "thank_you"} == {(1, "thank_you"), (2, "thank_you")}


def test_one_message_a_day_the_first_priority_wins(settings, shop) -> None:
    shop.customer(1, birthday=dt.date(1980, 11, 20))
    _order(shop, 10, 1, dt.datetime(2026, 11, 19, 10, 0))  # first order in the window: thank_you
    _through_occasions(settings, "2026-11-20")
    found = _occasions(settings, "2026-11-20")
    assert found[(1, "thank_you")] == ("selected", None)
    assert found[(1, "birthday")] == ("skipped", "daily cap: thank_you goes out today")


def test_weekly_cap_counts_the_six_nights_before(settings, shop) -> None:
    settings = settings.with_overrides(weekly_cap=1)
    shop.customer(1, birthday=dt.date(1980, 11, 20))
    _order(shop, 10, 1, dt.datetime(2026, 11, 14, 10, 0))  # thank_you on night 11-15
    _through_occasions(settings, "2026-11-15")
    assert _occasions(settings, "2026-11-15")[(1, "thank_you")][0] == "selected"
    _through_occasions(settings, "2026-11-20")
    assert _occasions(settings, "2026-11-20")[(1, "birthday")] == (
        "skipped",
        "weekly cap: 1 messages in the last 6 nights",
    )


def test_consent_is_required(settings, shop) -> None:
    shop.customer(1, birthday=dt.date(1980, 11, 20), marketing_consent=False)
    _through_occasions(settings, "2026-11-20")
    assert _occasions(settings, "2026-11-20")[(1, "birthday")] == ("skipped", "no marketing consent")


def test_holdout_is_stable_and_close_to_its_share() -> None:
    members = [cid for cid in range(1, 20001) if in_holdout(cid, 0.05, "salt")]
    assert members == [cid for cid in range(1, 20001) if in_holdout(cid, 0.05, "salt")]
    assert 0.045 < len(members) / 20000 < 0.055
    assert members != [cid for cid in range(1, 20001) if in_holdout(cid, 0.05, "other salt")]


def test_holdout_customers_are_recorded_not_messaged_across_reruns(settings, shop) -> None:
    settings = settings.with_overrides(holdout_share=0.5)
    for cid in range(1, 21):
        shop.customer(cid, birthday=dt.date(1980, 11, 20))
    _through_occasions(settings, "2026-11-20", "a")
    first = _occasions(settings, "2026-11-20")
    _through_occasions(settings, "2026-11-20", "b")
    assert _occasions(settings, "2026-11-20") == first
    holdout = {cid for (cid, _), (status, _) in first.items() if status == "holdout"}
    assert holdout == {cid for cid in range(1, 21) if in_holdout(cid, 0.5, settings.holdout_salt)}
    assert 0 < len(holdout) < 20


def test_win_back_once_per_entry_into_dissolution(settings, shop) -> None:
    shop.customer(1)
    _order(shop, 10, 1, dt.datetime(2026, 3, 1, 10, 0))
    _order(shop, 11, 1, dt.datetime(2026, 4, 1, 10, 0))  # gap 31 days: dissolution after 93 silent days
    _through_occasions(settings, "2026-07-03")  # 92 days silent: exploration
    _through_occasions(settings, "2026-07-04")  # 93 days: not more than 3 gaps yet
    _through_occasions(settings, "2026-07-05")  # 94 days: enters dissolution
    _through_occasions(settings, "2026-07-06")
    assert (1, "win_back") not in _occasions(settings, "2026-07-04")
    assert _occasions(settings, "2026-07-05")[(1, "win_back")] == ("selected", None)
    assert (1, "win_back") not in _occasions(settings, "2026-07-06")


def test_feedback_is_asked_days_after_an_order(settings, shop) -> None:
    shop.customer(1)
    _order(shop, 10, 1, dt.datetime(2026, 1, 5, 10, 0))  # an earlier order: no thank_you tonight
    _order(shop, 11, 1, dt.datetime(2026, 11, 10, 10, 0))  # local date 10 days before night 11-20
    _through_occasions(settings, "2026-11-20")
    assert _occasions(settings, "2026-11-20")[(1, "feedback")] == ("selected", None)
