"""Signed unsubscribe tokens cannot be forged, a token in any other shape is refused without
raising, the signing secret must be long enough, and recording an unsubscribe is idempotent."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from retention import schema
from retention.db import engine_for
from retention.unsubscribe import (
    ENV_SECRET,
    MIN_SECRET_BYTES,
    ForgedToken,
    WeakSecret,
    check_secret,
    email_hash,
    record_unsubscribe,
    secret_from_env,
    sign,
    verify,
)
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


def _mac_of(customer_id: int) -> str:
    return sign(SECRET, customer_id, EMAIL).partition(".")[2]


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("007." + _mac_of(7), id="leading-zeros"),
        pytest.param("+7." + _mac_of(7), id="plus-sign"),
        pytest.param(" 7." + _mac_of(7), id="space"),
        pytest.param("7 ." + _mac_of(7), id="trailing-space"),
        pytest.param("7\n." + _mac_of(7), id="newline"),
        pytest.param("\u0663." + _mac_of(3), id="arabic-indic-three"),
        pytest.param("\uff17." + _mac_of(7), id="fullwidth-seven"),
        pytest.param("7_0." + _mac_of(70), id="underscore"),
        pytest.param(f"{10**400}." + _mac_of(10**400), id="10**400"),
        pytest.param("9" * 5000 + "." + _mac_of(7), id="5000-digits"),
        pytest.param(f"{2**63}." + _mac_of(2**63), id="2**63"),
        pytest.param("7." + _mac_of(7) + "=", id="padded-mac"),
        pytest.param("7." + _mac_of(7) + "." + _mac_of(7), id="two-macs"),
        pytest.param("7.\x00", id="nul-mac"),
        pytest.param("7.not a mac at all", id="garbage-mac"),
        pytest.param("7." + "A" * 5000, id="huge-mac"),
        pytest.param("7.\udcff" + _mac_of(7)[1:], id="lone-surrogate"),
        pytest.param(".", id="only-dot"),
    ],
)
def test_a_token_in_any_other_shape_is_refused(token: str) -> None:
    assert verify(SECRET, token, EMAIL) is None


def test_the_largest_id_still_verifies() -> None:
    biggest = 2**63 - 1
    assert verify(SECRET, sign(SECRET, biggest, EMAIL), EMAIL) == biggest


@pytest.mark.parametrize("token", [None, b"7.abc", 7, ["7"]])
def test_a_token_that_is_not_text_is_refused(token) -> None:
    assert verify(SECRET, token, EMAIL) is None  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(token=st.text(max_size=80), email=st.text(max_size=40))
def test_verify_never_raises(token: str, email: str) -> None:
    assert verify(SECRET, token, email) is None  # no made-up text is a genuine token


@settings(max_examples=50, deadline=None)
@given(token=st.text(max_size=80))
def test_recording_a_made_up_token_raises_only_forged_token(token: str) -> None:
    with pytest.raises(ForgedToken):
        record_unsubscribe(None, token, "\udcff" + EMAIL, SECRET, NIGHT)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "x" * (MIN_SECRET_BYTES - 1), "\u00e9" * 15])
def test_a_short_secret_is_refused_naming_its_source(monkeypatch, value: str) -> None:
    monkeypatch.setenv(ENV_SECRET, value)
    with pytest.raises(WeakSecret, match=ENV_SECRET):
        secret_from_env()
    with pytest.raises(WeakSecret, match="connection 'retention_unsubscribe'"):
        check_secret(value.encode(), "the password of connection 'retention_unsubscribe'")


def test_a_secret_of_32_bytes_is_accepted(monkeypatch) -> None:
    monkeypatch.setenv(ENV_SECRET, "\u00e9" * 16)  # 16 characters, 32 bytes in UTF-8
    assert secret_from_env() == ("\u00e9" * 16).encode()
    assert len(SECRET) >= MIN_SECRET_BYTES  # the suite's own secret passes the check it tests


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
