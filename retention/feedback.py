"""Feedback that comes back: signed rating links, answers, follow-ups of low ratings, and holding
back suggestions to an unhappy customer (issue #17, item 1).

The feedback message (occasion ``feedback``, one per order) carries five one-click rating links
and a link to a short comment form (:func:`feedback_links`), served by the public app
(``retention/web/unsubscribe_app.py``: ``GET``/``POST /feedback``). Each link holds a token

    ``<customer_id>.<order_id>.<base64url HMAC-SHA256(secret, "retention-feedback-v1:<customer_id>:<order_id>")>``

signed with the unsubscribe secret (``RETENTION_UNSUBSCRIBE_SECRET``, at least
``MIN_SECRET_BYTES``). The purpose prefix keeps the two kinds of token apart: an unsubscribe
token signs ``"<customer_id>:<address>"``, which starts with a digit and can never equal a
message that starts with ``retention-feedback-v1:``, so neither kind verifies as the other (and
their shapes differ too: one dot against two). :func:`verify` never raises for what a visitor
can send.

:func:`record_answer` stores an answer: one row per (customer, order) in ``feedback``; a second
click changes the rating, never adds a row. A rating at or below ``RETENTION_FEEDBACK_LOW_RATING``
opens one row in ``feedback_followups`` for the shop:

* the same answer made lower again, or commented on, updates that row (rating, comment);
* a rating raised above the bar *closes* it (kept, with the low rating that opened it, so the
  page can tell it happened; it leaves the open list and is no longer mailed if it was not yet);
* a rating made low again re-opens it; a follow-up is mailed at most once (``mailed_at``).

The public request never talks SMTP: a follow-up waits with ``mailed_at`` NULL until
:func:`mail_followups` (``retention feedback mail-followups``, meant to run with each delivery
run) sends it to ``RETENTION_SERVICE_ADDRESS`` and stamps it. A crash between the server's
acceptance and the stamp sends that one mail again on the next run (its Message-ID is derived
from the follow-up, so a mail client shows it as the same message); nothing is ever lost.

:func:`held_back` names the customers whose current rating is low and was given within
``RETENTION_FEEDBACK_HOLD_DAYS`` before a night: detection skips their product suggestions.

Nothing here imports Airflow or FastAPI.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import TYPE_CHECKING
from urllib.parse import quote

from sqlalchemy import Connection, Engine, and_, func, select, update

from retention import schema
from retention.db import insert_ignore
from retention.night import as_utc, local_moment, utcnow
from retention.settings import Settings

if TYPE_CHECKING:  # the mailer imports yagmail: only the function that sends needs it
    from retention.mailer import SmtpConfig

__all__ = [
    "COMMENT_MAX_CHARS",
    "FOLLOWUP_COLUMNS",
    "PURPOSE",
    "RATINGS",
    "Answer",
    "ForgedToken",
    "InvalidAnswer",
    "UnknownOrder",
    "current_answer",
    "feedback_links",
    "feedback_url",
    "held_back",
    "mail_followups",
    "parse_rating",
    "pending_followups",
    "clean_comment",
    "record_answer",
    "sign",
    "verify",
]

log = logging.getLogger(__name__)

#: What a feedback token's MAC signs before the ids: never the start of an unsubscribe token's
#: message (which is a customer id, a digit).
PURPOSE = "retention-feedback-v1"
#: The ratings a customer can give: 1 (bad) to 5 (very good).
RATINGS = (1, 2, 3, 4, 5)
#: The longest comment kept, in characters: a few paragraphs; the form says so (``maxlength``).
COMMENT_MAX_CHARS = 2000

#: An id as :func:`sign` writes it: decimal ASCII digits, no sign, no leading zero, within BIGINT.
_CANONICAL_ID = re.compile(r"0|[1-9][0-9]{0,18}")
_MAX_ID = 2**63 - 1
_MAC_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
#: Characters that cannot be stored as text (PostgreSQL refuses NUL) or are no text at all.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


class ForgedToken(ValueError):
    """A feedback token that was not issued by us (forged, altered, or of another purpose)."""


class UnknownOrder(ForgedToken):
    """A genuine token for an order the warehouse no longer holds (the person was forgotten)."""


class InvalidAnswer(ValueError):
    """An answer that cannot be stored: a rating outside 1..5, a comment too long, or nothing at all."""


# --- tokens and links -----------------------------------------------------------------------------


def _mac(secret: bytes, customer_id: int, order_id: int) -> str:
    message = f"{PURPOSE}:{customer_id}:{order_id}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(secret: bytes, customer_id: int, order_id: int) -> str:
    """The feedback token of one customer's order."""
    return f"{customer_id}.{order_id}.{_mac(secret, customer_id, order_id)}"


def _id(text: str) -> int | None:
    if not _CANONICAL_ID.fullmatch(text):
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def verify(secret: bytes, token: object) -> tuple[int, int] | None:
    """``(customer_id, order_id)`` the token was issued for, or ``None`` if it is not genuine.

    Never raises for what a visitor can send (any object, any text).
    """
    if not isinstance(token, str):
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    customer_id, order_id = _id(parts[0]), _id(parts[1])
    if customer_id is None or order_id is None or not _MAC_SHAPE.fullmatch(parts[2]):
        return None
    expected = _mac(secret, customer_id, order_id)
    if not hmac.compare_digest(expected.encode(), parts[2].encode()):
        return None
    return customer_id, order_id


def feedback_url(settings: Settings) -> str:
    """The public feedback endpoint (before ``?token=``): beside the unsubscribe endpoint."""
    return f"{settings.unsubscribe_base}/feedback"


def feedback_links(settings: Settings, secret: bytes, customer_id: int, order_id: int) -> dict:
    """The links of one feedback message: five one-click ratings and the comment form.

    ``{"ratings": [{"value": 1, "url": ...}, ..., {"value": 5, "url": ...}], "comment_url": ...}``;
    the templates get it as ``feedback`` (``feedback.ratings``, ``feedback.comment_url``).
    """
    base = f"{feedback_url(settings)}?token={quote(sign(secret, customer_id, order_id), safe='.')}"
    return {
        "ratings": [{"value": value, "url": f"{base}&rating={value}"} for value in RATINGS],
        "comment_url": base,
    }


def parse_rating(value: object) -> int | None:
    """A rating as a visitor sends it ("1".."5", exactly), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value in RATINGS else None
    if isinstance(value, str) and len(value) == 1 and value in "12345":
        return int(value)
    return None


def clean_comment(value: str | None) -> str | None:
    """A comment as stored: what was typed, trimmed, with what text cannot hold removed; ``None`` if empty.

    Raises :class:`InvalidAnswer` past :data:`COMMENT_MAX_CHARS`.
    """
    if value is None:
        return None
    text = _UNSTORABLE.sub("", str(value)).replace("\r\n", "\n").strip()
    if len(text) > COMMENT_MAX_CHARS:
        raise InvalidAnswer(f"the comment is {len(text)} characters long; at most {COMMENT_MAX_CHARS}")
    return text or None


# --- answers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One customer's answer about one order, as stored after a request."""

    customer_id: int
    order_id: int
    rating: int | None
    comment: str | None
    #: What happened to the follow-up: "opened", "updated", "reopened", "closed", or None (nothing).
    followup: str | None = None


def current_answer(conn: Connection, customer_id: int, order_id: int) -> Answer | None:
    """The stored answer of a customer's order, if any."""
    f = schema.feedback
    row = conn.execute(
        select(f.c.rating, f.c.comment).where(f.c.customer_id == customer_id, f.c.order_id == order_id)
    ).first()
    return Answer(customer_id, order_id, row.rating, row.comment) if row else None


def _order_exists(conn: Connection, customer_id: int, order_id: int) -> bool:
    o = schema.stg_orders
    query = select(o.c.order_id).where(o.c.order_id == order_id, o.c.customer_id == customer_id)
    return conn.execute(query).first() is not None


def record_answer(
    conn: Connection,
    secret: bytes,
    token: str,
    rating: int | None,
    comment: str | None,
    now: dt.datetime,
    low_rating: int,
) -> Answer:
    """Verify ``token`` and store the answer; returns it as stored.

    ``rating`` None keeps the stored rating (a comment alone); ``comment`` None keeps the stored
    comment (a rating click), an empty one removes it. ``now`` (naive or aware UTC) is the moment
    of the request, kept as ``updated_at`` and, when the rating changes, ``answered_at``.
    Raises :class:`ForgedToken` (also :class:`UnknownOrder`: a genuine token for an order the
    warehouse does not hold, e.g. after an erasure) and :class:`InvalidAnswer`; either way
    nothing is written. Call it inside a transaction (``engine.begin()``).
    """
    ids = verify(secret, token)
    if ids is None:
        raise ForgedToken("feedback token is not valid (forged, altered, or not a feedback link)")
    if rating is not None and rating not in RATINGS:
        raise InvalidAnswer(f"rating {rating!r} is not one of 1..5")
    if rating is None and not comment:
        raise InvalidAnswer("an answer needs a rating (1..5) or a comment")
    customer_id, order_id = ids
    if not _order_exists(conn, customer_id, order_id):
        raise UnknownOrder(f"order {order_id} of customer {customer_id} is not in the warehouse")
    moment = as_utc(now).replace(tzinfo=None)
    f = schema.feedback
    row = {
        "customer_id": customer_id,
        "order_id": order_id,
        "rating": rating,
        "comment": comment or None,
        "answered_at": moment,
        "updated_at": moment,
    }
    # The key decides: of two clicks at once, one inserts and the other updates.
    if not insert_ignore(conn, f, [row], ("customer_id", "order_id")):
        key = and_(f.c.customer_id == customer_id, f.c.order_id == order_id)
        query = select(f.c.rating, f.c.comment).where(key)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        before = conn.execute(query).one()
        changes: dict = {"updated_at": moment}
        if rating is not None and rating != before.rating:
            changes.update(rating=rating, answered_at=moment)
        if comment is not None:
            changes["comment"] = comment or None
        conn.execute(update(f).where(key).values(**changes))
    stored = current_answer(conn, customer_id, order_id)
    assert stored is not None
    outcome = _follow_up(conn, stored, moment, low_rating)
    return Answer(customer_id, order_id, stored.rating, stored.comment, outcome)


def _follow_up(conn: Connection, answer: Answer, now: dt.datetime, low_rating: int) -> str | None:
    """Open, update, re-open or close the answer's follow-up (see the module docs)."""
    fu = schema.feedback_followups
    key = and_(fu.c.customer_id == answer.customer_id, fu.c.order_id == answer.order_id)
    existing = conn.execute(select(fu.c.status, fu.c.rating, fu.c.comment).where(key)).first()
    low = answer.rating is not None and answer.rating <= low_rating
    if low and existing is None:
        row = {
            "customer_id": answer.customer_id,
            "order_id": answer.order_id,
            "rating": answer.rating,
            "comment": answer.comment,
            "created_at": now,
            "mailed_at": None,
            "status": "open",
        }
        if insert_ignore(conn, fu, [row], ("customer_id", "order_id")):
            return "opened"
        existing = conn.execute(select(fu.c.status, fu.c.rating, fu.c.comment).where(key)).first()
    if existing is None:
        return None
    if low:
        conn.execute(
            update(fu).where(key).values(rating=answer.rating, comment=answer.comment, status="open")
        )
        return "reopened" if existing.status == "closed" else "updated"
    if answer.rating is None:  # a comment alone: the follow-up shows it
        conn.execute(update(fu).where(key).values(comment=answer.comment))
        return "updated"
    if existing.status == "open":  # raised above the bar
        conn.execute(update(fu).where(key).values(status="closed", comment=answer.comment))
        return "closed"
    return None


# --- holding back suggestions ---------------------------------------------------------------------


def held_back(conn: Connection, night_date: dt.date, settings: Settings) -> set[int]:
    """Customers whose product suggestions night ``night_date`` holds back after a low rating.

    A customer is held back when their current rating of some order is at or below
    ``settings.feedback_low_rating`` and was given (``answered_at``) within the
    ``settings.feedback_hold_days`` local days before the night, in the shop's time zone:
    ``[D - hold_days 00:00, D 00:00)`` local, the days whose changes nights up to D took in.
    An answer on local day D-1 holds back nights D to D + hold_days - 1. A rating raised
    above the bar since holds nothing. ``hold_days`` 0: nobody. Reads the index on ``answered_at``.
    """
    if settings.feedback_hold_days <= 0:
        return set()
    start = local_moment(
        night_date - dt.timedelta(days=settings.feedback_hold_days), dt.time(0), settings.time_zone
    )
    end = local_moment(night_date, dt.time(0), settings.time_zone)
    f = schema.feedback
    query = (
        select(f.c.customer_id)
        .where(
            f.c.answered_at >= start,
            f.c.answered_at < end,
            f.c.rating <= settings.feedback_low_rating,
        )
        .distinct()
    )
    return set(conn.execute(query).scalars())


# --- mailing follow-ups ---------------------------------------------------------------------------


def _followup_message(row: dict, settings: Settings, sent_at: dt.datetime) -> EmailMessage:
    """The mail to the service address about one low rating (plain text; no customer wording)."""
    from retention.mailer import MAIL_POLICY

    domain = parseaddr(settings.sender)[1].rpartition("@")[2] or "localhost"
    msg = EmailMessage(policy=MAIL_POLICY)
    msg["From"] = settings.sender
    msg["To"] = settings.service_address
    msg["Subject"] = (
        f"Low rating {row['rating']}/5 for order {row['order_id']} (customer {row['customer_id']})"
    )
    # Derived from the follow-up: a mail sent again after a crash is the same message.
    msg["Message-ID"] = f"<feedback-followup-{row['followup_id']}@{domain}>"
    msg["Date"] = format_datetime(sent_at.replace(tzinfo=dt.UTC))
    msg["X-Retention-Followup"] = str(row["followup_id"])
    name = " ".join(part for part in (row.get("first_name"), row.get("last_name")) if part) or "(unknown)"
    if row.get("email"):
        msg["Reply-To"] = row["email"]  # the service answers the customer directly
    lines = [
        f"A customer gave order {row['order_id']} a rating of {row['rating']} of 5.",
        "",
        f"Customer:  {row['customer_id']}, {name} <{row.get('email') or 'no address'}>",
        f"Language:  {row.get('language') or '-'}",
        f"Order:     {row['order_id']}",
        f"Rating:    {row['rating']} of 5 (low: {settings.feedback_low_rating} or less)",
        f"Answered:  {as_utc(row['created_at']):%Y-%m-%d %H:%M} UTC",
        "",
        "Comment:",
        row.get("comment") or "(no comment)",
        "",
        "Reply to this mail to write to the customer. The Retention page's Feedback tab lists every open",
        "follow-up; it closes by itself when the customer raises the rating.",
    ]
    msg.set_content("\n".join(lines))
    return msg


#: What a follow-up says about the answer behind it (the service mail, the Retention page).
FOLLOWUP_COLUMNS = tuple(
    schema.feedback_followups.c[name]
    for name in ("followup_id", "customer_id", "order_id", "rating", "comment", "created_at")
)


def _pending(conn: Connection, limit: int) -> list[dict]:
    fu, c = schema.feedback_followups, schema.stg_customers
    query = (
        select(
            *FOLLOWUP_COLUMNS,
            c.c.first_name,
            c.c.last_name,
            c.c.email,
            c.c.language,
        )
        .select_from(fu.outerjoin(c, c.c.customer_id == fu.c.customer_id))
        .where(fu.c.status == "open", fu.c.mailed_at.is_(None))
        .order_by(fu.c.followup_id)
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def mail_followups(engine: Engine, settings: Settings, smtp: SmtpConfig, *, limit: int = 500) -> dict:
    """Mail every open follow-up not mailed yet to ``settings.service_address``; returns counts.

    ``smtp`` is a :class:`retention.mailer.SmtpConfig` (the delivery's own: the Airflow connection
    ``smtp_default``, or ``RETENTION_SMTP_URL``). Each follow-up is stamped (``mailed_at``) as soon
    as the server accepted it; one the server refused stays pending for the next run. Without a
    service address nothing is sent and ``{"service_address": None, "pending": n}`` says how many
    wait. Raises :class:`retention.mailer.SmtpUnavailable` when no SMTP session can be had.
    Counts: ``pending`` (before), ``mailed``, ``refused``, ``service_address`` (set or not).
    """
    from retention.mailer import SmtpSession

    fu = schema.feedback_followups
    with engine.connect() as conn:
        rows = _pending(conn, limit)
    counts = {
        "pending": len(rows),
        "mailed": 0,
        "refused": 0,
        "service_address": bool(settings.service_address),
    }
    if not settings.service_address:
        if rows:
            log.warning(
                "%d low-rating follow-up(s) not mailed: RETENTION_SERVICE_ADDRESS is not set "
                "(they are listed on the Retention page's Feedback tab)",
                len(rows),
            )
        return counts
    if not rows:
        return counts
    with SmtpSession(smtp) as session:
        for row in rows:
            sent_at = utcnow()
            reply = session.send(_followup_message(row, settings, sent_at))
            if not reply.accepted:
                counts["refused"] += 1
                log.warning("follow-up %s not mailed to the service address: %s", row["followup_id"], reply)
                continue
            with engine.begin() as conn:
                conn.execute(
                    update(fu)
                    .where(fu.c.followup_id == row["followup_id"], fu.c.mailed_at.is_(None))
                    .values(mailed_at=sent_at)
                )
            counts["mailed"] += 1
    return counts


def pending_followups(conn: Connection) -> int:
    """Open follow-ups not mailed yet (the Retention page says so when no service address is set)."""
    fu = schema.feedback_followups
    return conn.execute(
        select(func.count()).where(fu.c.status == "open", fu.c.mailed_at.is_(None))
    ).scalar_one()
