"""Signed per-recipient unsubscribe tokens (RFC 8058 one-click links).

A token is ``<customer_id>.<base64url HMAC-SHA256(secret, customer_id:email)>``: it
names the customer and cannot be forged without the secret, which comes from the
environment (``RETENTION_UNSUBSCRIBE_SECRET``) or an Airflow connection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = ["secret_from_env", "sign", "verify", "email_hash"]

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
    if not customer.isdigit() or not mac:
        return None
    expected = _mac(secret, int(customer), email)
    return int(customer) if hmac.compare_digest(expected, mac) else None
