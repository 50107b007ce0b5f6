"""Issue #16 item 2: each setting's default lives in the settings only, and every entry point
builds its delivery from them the same way."""

from __future__ import annotations

import dataclasses
import datetime as dt

from retention.delivery import DeliveryPolicy, DeliveryRun
from retention.settings import Settings


def test_the_delivery_policy_defaults_are_the_settings_defaults() -> None:
    settings = Settings()
    for field in dataclasses.fields(DeliveryPolicy):
        assert getattr(DeliveryPolicy(), field.name) == getattr(settings, f"delivery_{field.name}"), (
            field.name
        )


def test_a_delivery_run_takes_policy_identity_and_window_from_the_settings() -> None:
    settings = Settings(
        delivery_batch_size=7,
        send_window_start=dt.time(8, 30),
        send_window_end=dt.time(19, 0),
        delivery_max_delay_days=3,
        unsubscribe_base_url="https://example.org/u/",
        sender="Shop <hello@example.org>",
    )
    run = DeliveryRun.from_settings(settings, b"s" * 32, rate_per_second=0)
    assert (run.policy.batch_size, run.policy.rate_per_second) == (7, 0)
    assert run.window == (dt.time(8, 30), dt.time(19, 0)) and run.max_delay_days == 3
    assert run.identity.sender == "Shop <hello@example.org>"
    assert "https://example.org/u/unsubscribe" in repr(run.identity.unsubscribe)
    assert "s" * 32 not in repr(run)  # the secret stays out of logs
