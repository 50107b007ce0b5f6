"""Messages go out only inside the customer's local send window; a missed window rolls to the next day."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from retention import schema
from retention.mailer import SmtpConfig
from retention.night import night_for_date
from retention.pipeline import run_night, stage_deliver, warehouse_engine
from tests.conftest import SECRET
from tests.shop import Shop


@pytest.fixture
def tallinn(settings) -> Shop:
    shop = Shop(settings.source)
    shop.product(1)
    shop.customer(1, language="et", time_zone="Europe/Tallinn", country="EE")
    shop.order(10, 1, dt.datetime(2026, 11, 19, 10, 0))
    shop.item(10, 10, 1, updated_at=dt.datetime(2026, 11, 19, 10, 0))
    run_night(settings, night_for_date("2026-11-20", settings.time_zone), "t")
    return shop


def _row(settings) -> dict:
    with warehouse_engine(settings.warehouse).connect() as conn:
        return dict(conn.execute(select(schema.outbox)).mappings().one())


def _deliver(settings, sink, until: dt.datetime) -> dict:
    return stage_deliver(settings, SmtpConfig(host="127.0.0.1", port=sink.port), until, secret=SECRET)


def test_the_window_is_local_to_the_customer(settings, tallinn) -> None:
    row = _row(settings)
    # 09:00-18:00 in Tallinn (UTC+2 in November)
    assert (row["send_at"], row["send_before"]) == (
        dt.datetime(2026, 11, 20, 7, 0),
        dt.datetime(2026, 11, 20, 16, 0),
    )


def test_after_the_window_closes_the_message_waits_for_the_next_morning(settings, tallinn, mail_sink) -> None:
    counts = _deliver(settings, mail_sink, dt.datetime(2026, 11, 20, 16, 30))  # 18:30 in Tallinn
    assert counts["sent"] == 0 and counts["rolled"] == 1
    row = _row(settings)
    assert (row["status"], row["send_at"]) == ("queued", dt.datetime(2026, 11, 21, 7, 0))
    assert _deliver(settings, mail_sink, dt.datetime(2026, 11, 21, 6, 59))["sent"] == 0  # 08:59 local
    assert _deliver(settings, mail_sink, dt.datetime(2026, 11, 21, 7, 0))["sent"] == 1
    assert len(mail_sink.wait_for(1)) == 1


def test_a_message_later_than_the_allowed_delay_expires_unsent(settings, tallinn, mail_sink) -> None:
    settings = settings.with_overrides(delivery_max_delay_days=0)
    counts = _deliver(settings, mail_sink, dt.datetime(2026, 11, 20, 16, 30))
    assert counts["expired"] == 1 and counts["sent"] == 0
    assert _row(settings)["status"] == "expired"
    assert mail_sink.received == []
