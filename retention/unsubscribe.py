"""Signed per-recipient unsubscribe tokens (RFC 8058 one-click links).

A token is ``<customer_id>.<base64url HMAC-SHA256(secret, customer_id:email)>``: it
names the customer and cannot be forged without the secret, which comes from the
environment (``RETENTION_UNSUBSCRIBE_SECRET``) or an Airflow connection.

:func:`record_unsubscribe` is what the one-click endpoint (RFC 8058 ``POST``) and the
mailto handler call: it verifies the token and puts the address on the suppression
list, idempotently. Delivery checks that list right before each message goes out.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os

from sqlalchemy import Connection

__all__ = ["ForgedToken", "secret_from_env", "sign", "verify", "email_hash", "record_unsubscribe"]

ENV_SECRET = "RETENTION_UNSUBSCRIBE_SECRET"


def secret_from_env() -> bytes:
    """The signing secret; a clear error when it is not configured."""
    value = os.environ.get(ENV_SECRET)
    if not value:
        raise RuntimeError(
            f"{ENV_SECRET} is not set: unsubscribe links must be signed with a secret "
            "(set it in the environment, or in the 'retention_unsubscribe' Airflow connection's password)"
        )
    return value.encode()


def email_hash(email: str) -> str:
    """The stable, non-reversible identity of an address (suppression list, tombstones)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def _mac(secret: bytes, customer_id: int, email: str) -> str:
    digest = hmac.new(secret, f"{customer_id}:{email.strip().lower()}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(secret: bytes, customer_id: int, email: str) -> str:
    return f"{customer_id}.{_mac(secret, customer_id, email)}"


def verify(secret: bytes, token: str, email: str) -> int | None:
    """The customer id the token was issued for, or ``None`` if it is not genuine."""
    customer, _, mac = token.partition(".")
    # ASCII only: str.isdigit() accepts "²", and compare_digest() raises on non-ASCII str.
    if not (customer.isascii() and customer.isdigit() and mac.isascii() and mac):
        return None
    expected = _mac(secret, int(customer), email)
    return int(customer) if hmac.compare_digest(expected.encode(), mac.encode()) else None


class ForgedToken(ValueError):
    """An unsubscribe token that was not issued by us for this address."""


def record_unsubscribe(
    conn: Connection, token: str, email: str, secret: bytes, night_or_date: dt.date | dt.datetime
) -> int:
    """Verify ``token`` for ``email`` and suppress the address; returns the customer id.

    Idempotent: a second click, or an address already suppressed for another reason
    (a hard bounce), changes nothing. Nothing else is touched: consent in the shop is the
    shop's to change, and the suppression list alone already stops every message.
    Raises :class:`ForgedToken` when the token does not verify.
    """
    # Imported here: the outbox and the mailer import this module for ``sign`` alone.
    from retention import schema
    from retention.db import insert_ignore

    customer_id = verify(secret, token or "", email or "")
    if customer_id is None:
        raise ForgedToken(
            "unsubscribe token is not valid for this address (forged, altered or for another one)"
        )
    day = night_or_date.date() if isinstance(night_or_date, dt.datetime) else night_or_date
    row = {"email_hash": email_hash(email), "reason": "unsubscribed", "night": day}
    insert_ignore(conn, schema.suppression, [row], ("email_hash",))
    return customer_id
