"""Deliver due outbox messages over SMTP with yagmail, recording each fate as it happens.

yagmail owns the SMTP session (connect, SSL or STARTTLS, login, one session per
batch); the message itself is built with the standard library so that the text and
HTML parts, the Message-ID derived from the outbox key and the RFC 8058
List-Unsubscribe headers are exactly what we want.

A message is claimed (``sending``, with a lease) before it goes out and marked
``sent`` right after the server accepted it. A ``sending`` row whose lease expired
belongs to a process that died mid-send: it becomes ``unknown`` and is never resent
silently.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import smtplib
import socket
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import parse_qs, unquote, urlparse

import yagmail
from sqlalchemy import Connection, Engine, and_, select

from retention import schema
from retention.unsubscribe import email_hash, sign

__all__ = ["SmtpConfig", "build_message", "deliver"]

log = logging.getLogger(__name__)

LEASE_SECONDS = 300


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to talk SMTP; the password never appears in ``repr``."""

    host: str
    port: int
    login: str | None = None
    password: str | None = None
    ssl: bool = False
    starttls: bool = False
    timeout: float = 30.0

    def __repr__(self) -> str:
        return f"SmtpConfig(host={self.host!r}, port={self.port}, login={self.login!r}, ssl={self.ssl}, starttls={self.starttls})"

    @classmethod
    def from_url(cls, url: str, timeout: float = 30.0) -> SmtpConfig:
        """``smtp://user:pass@host:port?ssl=true&starttls=true`` (the Airflow connection URI form)."""
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
            raise ValueError("SMTP URL must look like smtp://user:password@host:port (password hidden)")
        query = {k: v[-1].lower() for k, v in parse_qs(parsed.query).items()}
        ssl = parsed.scheme == "smtps" or query.get("ssl") in ("1", "true", "yes")
        return cls(
            host=parsed.hostname,
            port=parsed.port or (465 if ssl else 25),
            login=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            ssl=ssl,
            starttls=query.get("starttls") in ("1", "true", "yes"),
            timeout=timeout,
        )

    @classmethod
    def from_fields(
        cls,
        host: str,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: dict,
        timeout: float = 30.0,
    ) -> SmtpConfig:
        """From an Airflow ``smtp`` connection's fields, with the SMTP provider's extras.

        As in Airflow's SMTP provider, SSL is on unless ``disable_ssl``; STARTTLS is used
        without SSL unless ``disable_tls``. String booleans ("false") are understood.
        """
        ssl = not _flag(extra.get("disable_ssl"))
        starttls = not ssl and not _flag(extra.get("disable_tls"))
        return cls(
            host=host,
            port=int(port or (465 if ssl else 25)),
            login=login or None,
            password=password or None,
            ssl=ssl,
            starttls=starttls,
            timeout=float(extra.get("timeout", timeout)),
        )

    @classmethod
    def from_environment(cls, explicit: str | None, conn_id: str, timeout: float) -> SmtpConfig:
        """Outside Airflow: ``RETENTION_SMTP_URL``, else ``AIRFLOW_CONN_<ID>`` (URI or JSON), else loopback:8025."""
        value = explicit or os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}") or "smtp://127.0.0.1:8025"
        if value.lstrip().startswith("{"):
            fields = json.loads(value)
            extra = fields.get("extra") or {}
            extra = json.loads(extra) if isinstance(extra, str) else extra
            return cls.from_fields(
                fields.get("host", "127.0.0.1"),
                fields.get("port"),
                fields.get("login"),
                fields.get("password"),
                extra,
                timeout,
            )
        return cls.from_url(value, timeout)


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _client(config: SmtpConfig) -> yagmail.SMTP:
    return yagmail.SMTP(
        user=config.login or "",
        password=config.password,
        host=config.host,
        port=config.port,
        smtp_ssl=config.ssl,
        smtp_starttls=config.starttls,
        smtp_skip_login=not config.login,
        soft_email_validation=False,
        timeout=config.timeout,
    )


def build_message(row: dict, sender: str, unsubscribe_mailto: str, unsubscribe_url: str) -> EmailMessage:
    """The MIME message for one outbox row: text and HTML alternatives, RFC 8058 headers."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = row["email"]
    msg["Subject"] = row["subject"]
    msg["Message-ID"] = row["message_id"]
    msg["Date"] = format_datetime(row["send_at"].replace(tzinfo=dt.UTC))
    msg["List-Unsubscribe"] = f"<{unsubscribe_mailto}>, <{unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Retention-Occasion"] = row["occasion"]
    msg.set_content(row["text_body"])
    msg.add_alternative(row["html_body"], subtype="html")
    return msg


def _due(conn: Connection, until: dt.datetime, limit: int) -> list[int]:
    box = schema.outbox
    query = (
        select(box.c.outbox_id)
        .where(box.c.status == "queued", box.c.send_at <= until)
        .order_by(box.c.send_at, box.c.outbox_id)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def expire_leases(warehouse: Engine, now: dt.datetime) -> int:
    """Mark messages whose sender died mid-send as ``unknown`` (never resent silently)."""
    box = schema.outbox
    with warehouse.begin() as conn:
        result = conn.execute(
            box.update()
            .where(box.c.status == "sending", box.c.lease_expires_at < now)
            .values(status="unknown", smtp_reply="lease expired: the sending process died; fate unknown")
        )
    return result.rowcount


def _claim(warehouse: Engine, outbox_id: int, owner: str, now: dt.datetime) -> dict | None:
    box = schema.outbox
    with warehouse.begin() as conn:
        claimed = conn.execute(
            box.update()
            .where(box.c.outbox_id == outbox_id, box.c.status == "queued")
            .values(
                status="sending",
                lease_owner=owner,
                lease_expires_at=now + dt.timedelta(seconds=LEASE_SECONDS),
                attempts=box.c.attempts + 1,
            )
        ).rowcount
        if claimed != 1:
            return None
        return dict(conn.execute(select(box).where(box.c.outbox_id == outbox_id)).mappings().one())


def _still_wanted(warehouse: Engine, row: dict) -> str | None:
    """Consent and suppression, checked again at send time: the reason not to send, if any."""
    cust, supp = schema.stg_customers, schema.suppression
    with warehouse.connect() as conn:
        consent = conn.execute(
            select(cust.c.marketing_consent).where(
                and_(cust.c.customer_id == row["customer_id"], cust.c.email == row["email"])
            )
        ).scalar()
        suppressed = conn.execute(
            select(supp.c.email_hash).where(supp.c.email_hash == email_hash(row["email"]))
        ).scalar()
    if not consent:
        return "no marketing consent at send time (or the address changed)"
    if suppressed:
        return "address suppressed at send time"
    return None


def _finish(warehouse: Engine, outbox_id: int, status: str, reply: str, sent_at: dt.datetime | None) -> None:
    box = schema.outbox
    with warehouse.begin() as conn:
        conn.execute(
            box.update()
            .where(box.c.outbox_id == outbox_id)
            .values(
                status=status,
                smtp_reply=reply[:1000],
                sent_at=sent_at,
                lease_owner=None,
                lease_expires_at=None,
            )
        )


def deliver(
    warehouse: Engine,
    config: SmtpConfig,
    *,
    until: dt.datetime,
    sender: str,
    shop_url: str,
    secret: bytes,
    limit: int = 10_000,
    dry_run: bool = False,
) -> dict[str, int]:
    """Send the queued messages whose ``send_at`` is at or before ``until`` (naive UTC)."""
    owner = f"{socket.gethostname()}:{os.getpid()}"
    counts = {"sent": 0, "failed": 0, "cancelled": 0, "unknown": 0, "would_send": 0}
    counts["unknown"] = expire_leases(warehouse, _now())
    with warehouse.connect() as conn:
        due = _due(conn, until, limit)
    if dry_run:
        counts["would_send"] = len(due)
        log.info("dry run: %d messages due by %s, none sent", len(due), until)
        return counts
    if not due:
        log.info("nothing due by %s UTC", until)
        return counts
    with _client(config) as client:
        client.login()
        for outbox_id in due:
            status = _deliver_one(warehouse, client, outbox_id, owner, sender, shop_url, secret)
            if status:
                counts[status] += 1
    log.info("delivery: %s", counts)
    return counts


def _deliver_one(
    warehouse: Engine,
    client: yagmail.SMTP,
    outbox_id: int,
    owner: str,
    sender: str,
    shop_url: str,
    secret: bytes,
) -> str | None:
    row = _claim(warehouse, outbox_id, owner, _now())
    if row is None:
        return None  # another sender took it
    reason = _still_wanted(warehouse, row)
    if reason:
        _finish(warehouse, outbox_id, "cancelled", reason, None)
        return "cancelled"
    domain = sender.rpartition("@")[2].rstrip(">") or "example.com"
    token_url = f"{shop_url}/unsubscribe?token={sign(secret, row['customer_id'], row['email'])}"
    msg = build_message(row, sender, f"mailto:unsubscribe@{domain}?subject=unsubscribe", token_url)
    try:
        refused = client.smtp.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        _finish(warehouse, outbox_id, "failed", f"{type(exc).__name__}: {exc}", None)
        log.warning("message %s to outbox row %d failed: %s", row["message_id"], outbox_id, exc)
        return "failed"
    reply = "250 accepted" if not refused else f"refused: {refused}"
    _finish(warehouse, outbox_id, "sent", reply, _now())
    return "sent"


def _now() -> dt.datetime:
    # Leases and the record of when a message actually left are real time by nature.
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
