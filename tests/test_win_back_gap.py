"""Issue #11, item 6: win-back once per entry into dissolution, whatever the gap between runs.

The snapshot that proved an earlier entry is pruned after ``snapshot_days`` nights; the
latest snapshot left may be a first-of-month one from before that entry. The customer must
not be welcomed back a second time for the same silent stretch, and must be after a new order
and a new lapse.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from retention import schema
from retention.pipeline import warehouse_engine
from tests.shop import Shop
from tests.test_occasions import _through_occasions as _night


@pytest.fixture
def settings(settings):
    # Small numbers keep the story short: dissolution after more than 5 silent days (and more than
    # twice the usual gap), daily snapshots kept 2 nights (first-of-month ones for good).
    return settings.with_overrides(
        holdout_share=0.0,
        snapshot_days=2,
        dissolution_min_days=5,
        dissolution_factor=2.0,
        default_gap_days=2.0,
    )


@pytest.fixture
def shop(settings) -> Shop:
    shop = Shop(settings.source)
    shop.product(1)
    shop.customer(1)
    return shop


def _order(shop: Shop, order_id: int, at: dt.datetime) -> None:
    shop.order(order_id, 1, at)
    shop.item(order_id, order_id, 1, updated_at=at)


def _win_backs(settings) -> list[tuple[str, str]]:
    occ = schema.occasions
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(
            select(occ.c.night, occ.c.status).where(occ.c.occasion == "win_back").order_by(occ.c.night)
        )
        return [(str(r.night), r.status) for r in rows]


def _snapshot_nights(settings) -> list[str]:
    s = schema.segment_snapshots
    with warehouse_engine(settings.warehouse).connect() as conn:
        return [str(d) for d in conn.execute(select(s.c.night).distinct().order_by(s.c.night)).scalars()]


def test_win_back_once_per_entry_across_a_gap_longer_than_snapshot_days(settings, shop) -> None:
    _order(shop, 10, dt.datetime(2026, 6, 25, 10, 0))
    _night(settings, "2026-06-26")  # takes in the order
    _night(settings, "2026-07-01")  # 5 silent days: not yet dissolution; a first-of-month snapshot
    _night(settings, "2026-07-02")  # 6 silent days: enters dissolution
    assert _win_backs(settings) == [("2026-07-02", "selected")]

    _night(settings, "2026-07-06")  # 4 nights later: 07-02's snapshot is pruned, 07-01's is kept
    assert _snapshot_nights(settings) == ["2026-07-01", "2026-07-06"]  # the story really happened
    assert _win_backs(settings) == [("2026-07-02", "selected")]  # same entry: not again

    _order(shop, 11, dt.datetime(2026, 7, 7, 10, 0))  # back: usual gap 12 days, dissolution after 24
    _night(settings, "2026-07-08")
    _night(settings, "2026-08-01")  # 24 silent days: not yet
    _night(settings, "2026-08-02")  # 25 silent days: a new entry into dissolution
    assert _win_backs(settings) == [("2026-07-02", "selected"), ("2026-08-02", "selected")]

