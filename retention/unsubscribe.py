"""Signed per-recipient unsubscribe tokens (RFC 8058 one-click links).

A token is ``<customer_id>.<base64url HMAC-SHA256(secret, customer_id:email)>``: it
names the customer and cannot be forged without the secret, which comes from the
environment (``RETENTION_UNSUBSCRIBE_SECRET``) or an Airflow connection, and must be
at least :data:`MIN_SECRET_BYTES` long (checked before a night or a delivery starts).

:func:`record_unsubscribe` is what the one-click endpoint (RFC 8058 ``POST``) and the
mailto handler call: it verifies the token and puts the address on the suppression
list, idempotently. Delivery checks that list right before each message goes out.
:func:`record_preference` is what the page's "stop only this kind" choice calls: it stops
one kind of message (:data:`MESSAGE_KINDS`) for the address and keeps the others; detection
skips the occasions of a stopped kind (``retention.occasions``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import re

from sqlalchemy import Connection

__all__ = [
    "ForgedToken",
    "WeakSecret",
    "MIN_SECRET_BYTES",
    "check_secret",
    "secret_from_env",
    "sign",
    "verify",
    "email_hash",
    "record_unsubscribe",
    "MESSAGE_KINDS",
    "UnknownKind",
    "kind_of",
    "record_preference",
]

ENV_SECRET = "RETENTION_UNSUBSCRIBE_SECRET"

#: The kinds of message a customer can stop one by one on the unsubscribe page. Each
#: occasion declares its kind (``Occasion.kind``, :mod:`retention.registry`).
#: Thank-yous after an order are marketing here too (they carry offers), so they can be stopped.
MESSAGE_KINDS: tuple[str, ...] = ("suggestions", "greetings", "feedback", "win_back", "thank_you")


def kind_of(occasion: str, settings: object | None = None) -> str:
    """The kind of message (one of :data:`MESSAGE_KINDS`) an occasion belongs to (``KeyError``:
    no such occasion)."""
    from retention.registry import occasion as declared  # the registry checks kinds against this module

    return declared(occasion, settings).kind


#: The shortest signing secret accepted, in bytes (UTF-8). HMAC-SHA256's key should be at
#: least as long as the hash's output (RFC 2104, section 3: "less than L bytes is strongly
#: discouraged"; NIST SP 800-107 bounds HMAC's strength by the key's): 32 bytes of randomness
#: give the full 256 bits, and a short phrase is open to an offline guess from any one link
#: that a customer forwards. ``python -c "import secrets; print(secrets.token_urlsafe(32))"``
#: makes a good one (43 characters).
MIN_SECRET_BYTES = 32

#: A customer id as :func:`sign` writes it: decimal ASCII digits, no sign, no leading zero.
_CANONICAL_ID = re.compile(r"0|[1-9][0-9]{0,18}")
#: The largest id a warehouse BIGINT holds; anything above it was never issued.
_MAX_ID = 2**63 - 1
#: A MAC as :func:`_mac` writes it: 32 bytes, base64url without padding.
_MAC_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")


class WeakSecret(ValueError):
    """The unsubscribe signing secret is missing or too short to sign links safely."""


def check_secret(secret: bytes | None, source: str) -> bytes:
    """``secret`` if it is long enough to sign with; otherwise a :class:`WeakSecret` naming ``source``.

    ``source`` says where the secret came from (the environment variable or the Airflow
    connection), so that the error tells an operator what to change.
    """
    if not secret:
        raise WeakSecret(f"{source} is empty: unsubscribe links must be signed with a secret")
    if len(secret) < MIN_SECRET_BYTES:
        raise WeakSecret(
            f"{source} is {len(secret)} bytes long; the unsubscribe signing secret needs at least "
            f"{MIN_SECRET_BYTES} (HMAC-SHA256 key), e.g. the output of "
            "`python -c \"import secrets; print(secrets.token_urlsafe(32))\"`"
        )
    return secret


def secret_from_env() -> bytes:
    """The signing secret from ``RETENTION_UNSUBSCRIBE_SECRET``; a clear error when unset or too short."""
    value = os.environ.get(ENV_SECRET)
    if not value:
        raise WeakSecret(
            f"{ENV_SECRET} is not set: unsubscribe links must be signed with a secret "
            "(set it in the environment, or in the 'retention_unsubscribe' Airflow connection's password)"
        )
    return check_secret(value.encode(), ENV_SECRET)


def email_hash(email: str) -> str:
    """The stable, non-reversible identity of an address (suppression list, tombstones)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def _mac(secret: bytes, customer_id: int, email: str) -> str:
    digest = hmac.new(secret, f"{customer_id}:{email.strip().lower()}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(secret: bytes, customer_id: int, email: str) -> str:
    return f"{customer_id}.{_mac(secret, customer_id, email)}"


def _token_customer(customer: str) -> int | None:
    """The id of a token's customer part if it is written exactly as :func:`sign` writes ids."""
    # fullmatch on [0-9]: "007", "+7", " 7", "7\n", "٣" and "²" are not how we write an id, and
    # the length bound keeps int() away from numbers of thousands of digits.
    if not _CANONICAL_ID.fullmatch(customer):
        return None
    value = int(customer)
    return value if value <= _MAX_ID else None


def verify(secret: bytes, token: str, email: str) -> int | None:
    """The customer id the token was issued for, or ``None`` if it is not genuine.

    Never raises for what a visitor can send: any token (also not a ``str``), any address.
    """
    if not isinstance(token, str) or not isinstance(email, str):
        return None
    customer, _, mac = token.partition(".")
    customer_id = _token_customer(customer)
    if customer_id is None or not _MAC_SHAPE.fullmatch(mac):
        return None
    try:
        expected = _mac(secret, customer_id, email)
    except UnicodeError:  # an address with lone surrogates cannot have been signed
        return None
    return customer_id if hmac.compare_digest(expected.encode(), mac.encode()) else None


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


class UnknownKind(ValueError):
    """A kind of message that :data:`MESSAGE_KINDS` does not have."""


def record_preference(
    conn: Connection, token: str, email: str, secret: bytes, kind: str, night_or_date: dt.date | dt.datetime
) -> int:
    """Verify ``token`` for ``email`` and stop one kind of message for the address; returns the customer id.

    Idempotent: stopping a kind twice keeps the first date. The address's other kinds go on,
    and a full unsubscribe (:func:`record_unsubscribe`) still stops everything. Raises
    :class:`ForgedToken` when the token does not verify and :class:`UnknownKind` for a kind
    that is not one of :data:`MESSAGE_KINDS`; either way nothing is written.
    """
    from retention import schema
    from retention.db import insert_ignore

    if kind not in MESSAGE_KINDS:
        raise UnknownKind(f"unknown kind of message {kind!r}; one of: {', '.join(MESSAGE_KINDS)}")
    customer_id = verify(secret, token or "", email or "")
    if customer_id is None:
        raise ForgedToken(
            "unsubscribe token is not valid for this address (forged, altered or for another one)"
        )
    day = night_or_date.date() if isinstance(night_or_date, dt.datetime) else night_or_date
    row = {"email_hash": email_hash(email), "kind": kind, "night": day}
    insert_ignore(conn, schema.unsubscribe_preferences, [row], ("email_hash", "kind"))
    return customer_id
