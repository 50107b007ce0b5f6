"""A manual delivery run can send a subset: some occasions only, and at most N messages (issue #14, item 6)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from retention import schema
from retention.delivery import DeliveryPolicy, plan
from retention.night import night_for_date
from retention.pipeline import run_night, warehouse_engine
from tests.shop import Shop

UNTIL = dt.datetime(2026, 11, 20, 12, 0)  # noon UTC: inside every Berlin customer's window


def _night(settings) -> dict[int, str]:
    shop = Shop(settings.source)
    shop.product(1)
    for customer_id in (1, 2, 3):  # first orders: thank-yous
        shop.customer(customer_id)
        shop.order(customer_id * 10, customer_id, dt.datetime(2026, 11, 19, 10, customer_id))
        shop.item(
            customer_id * 10, customer_id * 10, 1, updated_at=dt.datetime(2026, 11, 19, 10, customer_id)
        )
    for customer_id in (4, 5):  # birthdays
        shop.customer(customer_id, birthday=dt.date(1990, 11, 20), updated_at=dt.datetime(2026, 1, 1))
    run_night(settings, night_for_date("2026-11-20", settings.time_zone), "t")
    with warehouse_engine(settings.warehouse).connect() as conn:
        box = schema.outbox
        return dict(conn.execute(select(box.c.outbox_id, box.c.occasion)).all())


def _planned(settings, **kwargs) -> list[int]:
    batches = plan(
        warehouse_engine(settings.warehouse), UNTIL, DeliveryPolicy.from_settings(settings), **kwargs
    )
    return [outbox_id for batch in batches for outbox_id in batch["ids"]]


def test_only_the_chosen_occasions_and_at_most_the_limit(settings) -> None:
    settings = settings.with_overrides(holdout_share=0.0)
    occasions = _night(settings)
    assert sorted(occasions.values()) == ["birthday", "birthday", "thank_you", "thank_you", "thank_you"]
    assert sorted(_planned(settings)) == sorted(occasions)
    assert {occasions[i] for i in _planned(settings, occasions=["birthday"])} == {"birthday"}
    assert len(_planned(settings, occasions=["birthday"])) == 2
    assert len(_planned(settings, limit=2)) == 2
    assert _planned(settings, limit=0) == []
    assert len(_planned(settings, occasions=["thank_you"], limit=10)) == 3
