"""Signed unsubscribe tokens cannot be forged, and recording an unsubscribe is idempotent."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, select

from retention import schema
from retention.db import engine_for
from retention.unsubscribe import ForgedToken, email_hash, record_unsubscribe, sign, verify
from tests.conftest import SECRET

EMAIL = "Kadri.Tamm@Example.EE"
NIGHT = dt.date(2026, 11, 22)


def test_a_token_verifies_for_its_customer_and_address() -> None:
    token = sign(SECRET, 42, EMAIL)
    assert token.startswith("42.")
    assert verify(SECRET, token, EMAIL) == 42
    assert verify(SECRET, token, " kadri.tamm@example.ee ") == 42  # addresses compare case-blind


@pytest.mark.parametrize(
    "token_for",
    [
        pytest.param(lambda: sign(b"not the secret", 42, EMAIL), id="other-secret"),
        pytest.param(lambda: sign(SECRET, 42, "someone@example.ee"), id="other-address"),
        pytest.param(lambda: "43." + sign(SECRET, 42, EMAIL).partition(".")[2], id="other-customer"),
        pytest.param(lambda: sign(SECRET, 42, EMAIL)[:-1] + "A", id="altered-mac"),
        pytest.param(lambda: sign(SECRET, 42, EMAIL)[:-2], id="truncated-mac"),
        pytest.param(lambda: "42.", id="no-mac"),
        pytest.param(lambda: "42", id="no-dot"),
        pytest.param(lambda: "", id="empty"),
        pytest.param(lambda: "-42." + sign(SECRET, 42, EMAIL).partition(".")[2], id="negative"),
        pytest.param(lambda: "²." + sign(SECRET, 2, EMAIL).partition(".")[2], id="unicode-digit"),
        pytest.param(lambda: sign(SECRET, 42, EMAIL) + "é", id="non-ascii-mac"),
    ],
)
def test_a_forged_token_does_not_verify(token_for) -> None:
    assert verify(SECRET, token_for(), EMAIL) is None


@pytest.fixture
def warehouse(warehouse_url):
    engine = engine_for(warehouse_url)
    schema.metadata.create_all(engine)
    return engine


def _suppression(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(schema.suppression))]


def test_recording_an_unsubscribe_suppresses_the_address_once(warehouse) -> None:
    token = sign(SECRET, 42, EMAIL)
    for _ in range(2):  # the second click, or the mailto after the one-click POST
        with warehouse.begin() as conn:
            assert record_unsubscribe(conn, token, EMAIL, SECRET, NIGHT) == 42
    assert _suppression(warehouse) == [(email_hash(EMAIL), "unsubscribed", NIGHT)]


def test_an_unsubscribe_keeps_an_earlier_hard_bounce(warehouse) -> None:
    with warehouse.begin() as conn:
        conn.execute(insert(schema.suppression).values(email_hash=email_hash(EMAIL), reason="hard_bounce"))
        record_unsubscribe(conn, sign(SECRET, 42, EMAIL), EMAIL, SECRET, dt.datetime(2026, 11, 22, 10, 0))
    assert _suppression(warehouse) == [(email_hash(EMAIL), "hard_bounce", None)]


def test_a_forged_unsubscribe_is_refused_and_records_nothing(warehouse) -> None:
    with warehouse.begin() as conn, pytest.raises(ForgedToken, match="not valid"):
        record_unsubscribe(conn, sign(b"guessed", 42, EMAIL), EMAIL, SECRET, NIGHT)
    with warehouse.begin() as conn, pytest.raises(ForgedToken):
        record_unsubscribe(conn, sign(SECRET, 42, EMAIL), "victim@example.com", SECRET, NIGHT)
    assert _suppression(warehouse) == []
