"""Deliver the outbox: each message at most once, every fate recorded as it happens.

The life of an outbox row::

    queued ──claim──► sending ──2xx───────────────► sent
      ▲  │              ├──4xx, or dropped before the end of DATA─► queued again,
      │  │              │                 next_attempt_at = until + backoff (failed after ``max_attempts``)
      │  │              ├──5xx──────────────────────► failed  (550/551/553 also suppress the address)
      │  │              ├──dropped or timed out after the end of DATA──► unknown (policy "hold")
      │  └──opted out or suppressed since rendering──► cancelled
      │                 └──the sender died (lease expired, or its process is gone)──► unknown ("hold")
      └───────────── the sender died before any SMTP command, or policy "resend"

Exactly once is built from three records, each committed before the next step:

1. the *claim*: ``queued`` → ``sending`` by a conditional UPDATE (a row it returns is won, so
   two senders never both get a row), with a lease owner and expiry; a chunk of rows at a time;
2. the *attempt*: a ``delivery_attempts`` row with outcome NULL, committed before the first
   SMTP command of the message, and inserted only while the row is still this sender's claim;
3. the *mark*: the attempt's outcome and the row's new status, with the server's reply,
   in one transaction right after the reply.

A crash between 2 and 3 leaves ``sending`` plus an open attempt: the server may or may not
have accepted the message, and only the server knows. When the lease expires, or earlier when
the sweep runs on the same host and sees that the owner process is gone (the lease owner names
host, pid and process start time), :func:`sweep` makes such a row ``unknown`` (reported, never
resent unless the policy says ``resend``). A crash between 1 and 2 leaves ``sending`` without
an open attempt: nothing reached the server, so the sweep simply queues it again. The same
doubt arises without a crash when the connection drops, or the reply times out, after the
final "." of DATA was sent: the server may have stored the message, so it is ``unknown`` too
(:attr:`retention.mailer.Reply.in_doubt`), never retried silently.

Two clocks, on purpose: ``until`` (the DAG run's logical date) decides what is due and when a
retry is due, so a re-run of a slot behaves the same; the real clock (injectable as
``clock``) stamps leases, attempts and ``sent_at``, which are about the process, not the
business day.

Run ``python -m retention.delivery --help`` for the stand-alone entry point (the crash test
runs it in a child process and kills it).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import os
import socket
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    and_,
    bindparam,
    func,
    inspect,
    literal,
    or_,
    select,
)

from retention import schema
from retention.db import engine_for, insert_ignore
from retention.mailer import (
    Reply,
    SmtpConfig,
    SmtpSession,
    SmtpUnavailable,
    Unsubscribe,
    build_message,
    unsubscribe_links,
)
from retention.night import as_naive_utc, local_date, send_window, utcnow
from retention.progress import Progress
from retention.unsubscribe import email_hash

__all__ = [
    "DeliveryPolicy",
    "DeliveryRun",
    "Identity",
    "RateLimiter",
    "SmtpUnavailable",
    "as_naive_utc",
    "deliver",
    "due_ids",
    "in_lanes",
    "outbox_status",
    "owner_is_dead",
    "plan",
    "preview_batch",
    "resolve_unknown",
    "send_batch",
    "send_lane",
    "summarise",
    "sweep",
    "utcnow",
]

log = logging.getLogger(__name__)

#: Returns naive UTC "now"; tests pass their own to move time without sleeping.
Clock = Callable[[], dt.datetime]
#: Called with (event, outbox_id) at each step of a message: claimed, attempt, replied, and its fate.
Observer = Callable[[str, int], None]

#: Every key a delivery summary may carry, so that callers can index without ``.get``.
COUNT_KEYS = (
    "sent",
    "retry",
    "failed",
    "cancelled",
    "skipped",
    "unknown",
    "requeued",
    "resent",
    "would_send",
    "would_cancel",
)
FINAL_STATES = ("sent", "failed", "cancelled", "unknown")


def _default(name: str) -> object:
    """The default of setting ``delivery_<name>``: the settings hold each default once."""
    from retention.settings import Settings

    return Settings.model_fields[f"delivery_{name}"].default


@dataclass(frozen=True)
class DeliveryPolicy:
    """The delivery settings (``RETENTION_DELIVERY_*``); each default is the setting's own."""

    batch_size: int = _default("batch_size")  # messages per SMTP session
    batches: int = _default("batches")  # batches sent in parallel at most (each lane sends several in turn)
    rate_per_second: float = _default("rate_per_second")  # all batches together; 0 = unlimited
    run_cap: int = _default(
        "run_cap"
    )  # messages per run at most: ceil(min(due, run_cap) / batch_size) batches
    max_attempts: int = _default("max_attempts")  # SMTP attempts before a transient failure becomes final
    backoff_seconds: float = _default("backoff_seconds")  # wait after the first transient failure; doubles
    backoff_max_seconds: float = _default("backoff_max_seconds")
    lease_seconds: float = _default("lease_seconds")  # must outlast one SMTP conversation by far
    unknown_policy: str = _default("unknown_policy")  # hold: report and wait for a person; resend: send again
    dry_run: bool = _default("dry_run")

    def __post_init__(self) -> None:
        if self.unknown_policy not in ("hold", "resend"):
            raise ValueError(f"delivery_unknown_policy={self.unknown_policy!r}: choose 'hold' or 'resend'")
        if min(self.batch_size, self.batches, self.run_cap, self.max_attempts) < 1:
            raise ValueError("delivery batch size, batches, run cap and max attempts must be at least 1")
        if self.lease_seconds <= 0 or self.rate_per_second < 0 or self.backoff_seconds < 0:
            raise ValueError("delivery lease must be positive; rate and backoff not negative")

    @classmethod
    def from_settings(cls, settings: object, **overrides: object) -> DeliveryPolicy:
        """From ``settings.delivery_<field>``, each falling back to the default above."""
        values = {f.name: getattr(settings, f"delivery_{f.name}", f.default) for f in dataclasses.fields(cls)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def backoff(self, attempts: int) -> dt.timedelta:
        """Exponential: ``backoff_seconds`` after the first failure, doubling, capped."""
        seconds = self.backoff_seconds * 2 ** max(attempts - 1, 0)
        return dt.timedelta(seconds=min(seconds, self.backoff_max_seconds))


@dataclass(frozen=True)
class Identity:
    """Who the messages come from and where recipients unsubscribe; the secret stays out of repr."""

    sender: str
    unsubscribe: Unsubscribe
    secret: bytes = field(repr=False)

    @classmethod
    def for_shop(cls, sender: str, shop_url: str, secret: bytes, mailto: str | None = None) -> Identity:
        return cls(sender, Unsubscribe.for_shop(sender, shop_url, mailto), secret)

    @classmethod
    def from_settings(cls, settings: object, secret: bytes) -> Identity:
        return cls.for_shop(
            settings.sender,  # type: ignore[attr-defined]
            settings.unsubscribe_base,  # type: ignore[attr-defined]
            secret,
            settings.unsubscribe_mailto,
        )


@dataclass(frozen=True)
class DeliveryRun:
    """Everything a delivery needs from the settings, built in one place: the DAG's tasks,
    ``retention send`` (``stage_deliver``) and ``python -m retention.delivery`` all use
    :meth:`from_settings`."""

    policy: DeliveryPolicy
    identity: Identity
    window: tuple[dt.time, dt.time]  # the customers' local send window
    max_delay_days: int  # a missed window moves to the next day's at most this often

    @classmethod
    def from_settings(cls, settings: object, secret: bytes, **policy_overrides: object) -> DeliveryRun:
        return cls(
            policy=DeliveryPolicy.from_settings(settings, **policy_overrides),
            identity=Identity.from_settings(settings, secret),
            window=(settings.send_window_start, settings.send_window_end),  # type: ignore[attr-defined]
            max_delay_days=settings.delivery_max_delay_days,  # type: ignore[attr-defined]
        )

    def deliver(
        self,
        warehouse: Engine,
        config: SmtpConfig,
        until: dt.datetime,
        *,
        limit: int | None = None,
        dry_run: bool = False,
        clock: Clock = utcnow,
        observer: Observer | None = None,
    ) -> dict[str, int]:
        """:func:`deliver` with this run's policy, identity and window."""
        return deliver(
            warehouse,
            config,
            until=until,
            sender=self.identity.sender,
            shop_url="",
            secret=self.identity.secret,
            identity=self.identity,
            limit=limit,
            dry_run=dry_run,
            policy=self.policy,
            clock=clock,
            observer=observer,
            window=self.window,
            max_delay_days=self.max_delay_days,
        )


class RateLimiter:
    """At most ``rate`` messages per second, evenly spaced (a token bucket of one token).

    ``clock`` and ``sleep`` are injectable so that a test can check the pacing on a fake
    clock whose ``sleep`` only moves time forward.
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock = clock
        self.sleep = sleep
        self._next: float | None = None

    def acquire(self) -> float:
        """Wait for the next slot; returns the seconds waited."""
        if not self.interval:
            return 0.0
        now = self.clock()
        slot = now if self._next is None else max(now, self._next)
        waited = slot - now
        if waited > 0:
            self.sleep(waited)
        self._next = slot + self.interval
        return waited


# --- what is due -------------------------------------------------------------------------------


def _due_clause(until: dt.datetime) -> ColumnElement[bool]:
    box = schema.outbox
    return and_(
        box.c.status == "queued",
        box.c.send_at <= until,
        box.c.send_before > until,  # never outside the customer's local send window
        or_(box.c.next_attempt_at.is_(None), box.c.next_attempt_at <= until),
    )


def roll_missed_windows(
    warehouse: Engine, until: dt.datetime, window: tuple[dt.time, dt.time], max_delay_days: int
) -> dict[str, int]:
    """Queued messages whose local send window closed before ``until`` move to the next day's
    window, in the customer's own zone; past ``max_delay_days`` after their occasion they expire.

    A birthday greeting two days late is worse than none, and a 3 a.m. email worse still.
    """
    box = schema.outbox
    counts: Counter[str] = Counter()
    with warehouse.begin() as conn:
        missed = conn.execute(
            select(box.c.outbox_id, box.c.occasion_date, box.c.time_zone).where(
                box.c.status == "queued", box.c.send_before <= until
            )
        ).all()
        for outbox_id, occasion_date, zone in missed:
            day = max(occasion_date, local_date(until, zone))
            opens, closes = send_window(day, window, zone)
            if closes <= until:
                day += dt.timedelta(days=1)
                opens, closes = send_window(day, window, zone)
            if (day - occasion_date).days > max_delay_days:
                values = {
                    "status": "expired",
                    "smtp_reply": f"send window missed until {day}: expired unsent",
                }
                counts["expired"] += 1
            else:
                values = {"send_at": opens, "send_before": closes}
                counts["rolled"] += 1
            conn.execute(
                box.update().where(box.c.outbox_id == outbox_id, box.c.status == "queued").values(**values)
            )
    if counts:
        log.info("send windows: %s", dict(counts))
    return dict(counts)


def due_ids(
    conn: Connection, until: dt.datetime, limit: int, occasions: Sequence[str] | None = None
) -> list[int]:
    """Queued messages due by ``until`` (naive UTC): first the oldest ``send_at``; only
    ``occasions`` when given (a manual run that sends, say, only the birthdays)."""
    box = schema.outbox
    query = select(box.c.outbox_id).where(_due_clause(until))
    if occasions:
        query = query.where(box.c.occasion.in_(list(occasions)))
    query = query.order_by(box.c.send_at, box.c.outbox_id).limit(limit)
    return list(conn.execute(query).scalars())


def plan(
    warehouse: Engine,
    until: dt.datetime,
    policy: DeliveryPolicy,
    *,
    occasions: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Split what is due, up to ``policy.run_cap`` messages (or ``limit``, if smaller), into
    batches of outbox ids; only ``occasions`` when given.

    ``ceil(min(due, run_cap) / batch_size)`` batches of even size, oldest ``send_at`` first.
    At most ``policy.batches`` of them run at once (:func:`in_lanes`), so each carries that
    share of the global rate. Planning reads only; the claim at send time decides who sends what.
    """
    if not inspect(warehouse).has_table(schema.outbox.name):
        log.warning("the warehouse has no outbox yet (no night has run): nothing to deliver")
        return []
    cap = policy.run_cap if limit is None else max(0, min(limit, policy.run_cap))
    with warehouse.connect() as conn:
        ids = due_ids(conn, until, cap, occasions) if cap else []
    if not ids:
        return []
    count = math.ceil(len(ids) / policy.batch_size)
    size = math.ceil(len(ids) / count)
    rate = policy.rate_per_second / min(count, policy.batches)
    return [{"ids": ids[i : i + size], "rate": rate} for i in range(0, len(ids), size)]


def in_lanes(batches: Sequence[dict], lanes: int) -> list[dict]:
    """The batches dealt round-robin into at most ``lanes`` lanes, ``{"batches": [...]}`` each.

    A lane sends its batches one after another (:func:`send_lane`) and the lanes run in
    parallel (the DAG's mapped task), so at most ``lanes`` SMTP sessions are open at once,
    each at the rate its batches carry, however many batches the run cap allows.
    """
    count = min(lanes, len(batches))
    return [{"batches": list(batches[i::count])} for i in range(count)]


# --- crash recovery ----------------------------------------------------------------------------


def sweep(warehouse: Engine, policy: DeliveryPolicy, now: dt.datetime) -> dict[str, int]:
    """Settle the messages whose sender died: their lease expired before ``now`` (real time),
    or their lease owner is a process of this host that no longer exists (:func:`owner_is_dead`).

    ``requeued``: no SMTP attempt had begun, nothing left the building. ``unknown``: an
    attempt had begun (policy "hold"). ``resent``: the same, queued again (policy "resend").
    A claim of another host (or of an unknown process) waits for its lease to expire.
    """
    box = schema.outbox
    with warehouse.connect() as conn:
        claims = conn.execute(
            select(box.c.outbox_id, box.c.attempts, box.c.lease_owner, box.c.lease_expires_at).where(
                box.c.status == "sending"
            )
        ).all()
    counts: Counter[str] = Counter()
    for outbox_id, attempts, owner, expires in claims:
        if expires is None or expires < now:
            why = "lease expired"
            guard = or_(box.c.lease_expires_at.is_(None), box.c.lease_expires_at < now)
        elif owner and owner_is_dead(owner):
            why = "sender process gone"
            guard = box.c.lease_owner == owner
        else:
            continue  # a live sender, or one we cannot judge: its lease decides
        counts[_settle(warehouse, outbox_id, attempts, policy, guard, why)] += 1
    counts.pop("raced", None)
    if counts["unknown"]:
        log.warning("%d messages are now 'unknown': see docs/delivery.md, 'unknown'", counts["unknown"])
    return dict(counts)


def _settle(
    warehouse: Engine | Connection,
    outbox_id: int,
    attempts: int,
    policy: DeliveryPolicy,
    guard: ColumnElement[bool],
    why: str,
) -> str:
    box, att = schema.outbox, schema.delivery_attempts
    with _transaction(warehouse) as conn:
        began = conn.execute(
            select(att.c.attempt_id).where(
                att.c.outbox_id == outbox_id, att.c.attempt == attempts, att.c.outcome.is_(None)
            )
        ).first()
        if began is None:
            fate = "requeued"
            values = {"status": "queued", "attempts": attempts - 1, "lease_owner": None}
            reply = f"{why} before any SMTP command: nothing was sent; queued again"
        elif policy.unknown_policy == "resend":
            fate = "resent"
            values = {"status": "queued", "next_attempt_at": None, "lease_owner": None}
            reply = f"{why} during SMTP: fate unknown; queued again by policy 'resend'"
        else:
            # The lease owner stays: it names the process, and a late mark by it still wins.
            fate, values = "unknown", {"status": "unknown"}
            reply = f"{why} during SMTP: the server may or may not have the message"
        settled = conn.execute(
            box.update()
            .where(box.c.outbox_id == outbox_id, box.c.status == "sending", box.c.attempts == attempts, guard)
            .values(lease_expires_at=None, smtp_reply=reply, **values)
        ).rowcount
    return fate if settled == 1 else "raced"


def resolve_unknown(warehouse: Engine, outbox_ids: Iterable[int], resolution: str) -> int:
    """A person's verdict on ``unknown`` messages: ``sent`` (the server has it), ``failed``, or ``resend``."""
    values = {
        "sent": {"status": "sent", "smtp_reply": "confirmed sent by an operator"},
        "failed": {"status": "failed", "smtp_reply": "given up by an operator"},
        "resend": {"status": "queued", "next_attempt_at": None, "smtp_reply": "resent by an operator"},
    }[resolution]
    box = schema.outbox
    with warehouse.begin() as conn:
        return conn.execute(
            box.update()
            .where(box.c.outbox_id.in_(list(outbox_ids)), box.c.status == "unknown")
            .values(lease_owner=None, lease_expires_at=None, **values)
        ).rowcount


# --- sending -----------------------------------------------------------------------------------


def _owner() -> str:
    """The lease owner: ``host:pid:nonce:start:machine``.

    The per-batch nonce makes a retried task a new owner. ``start`` (the process start time,
    in clock ticks since boot) guards against a reused pid, and ``machine`` (a digest of the
    kernel's boot id and the pid namespace) against two containers that share a host name:
    together they let :func:`owner_is_dead` tell for sure that the owner is gone. Both are
    empty where ``/proc`` is missing; such an owner is never judged dead, only its lease expires.
    """
    pid = os.getpid()
    start = _process_start(pid) or ""
    start = start if start.isdigit() else ""
    return f"{socket.gethostname()[:64]}:{pid}:{uuid.uuid4().hex[:8]}:{start}:{_machine() if start else ''}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` names a process of this host (and pid namespace) that is gone.

    Gone: no such pid, a zombie, or a pid now used by a process that started at another
    time. Anything else (another host, an old-style owner, no ``/proc``) is False: its
    lease must expire first.
    """
    parts = owner.split(":")
    if len(parts) != 5:
        return False
    host, pid, _nonce, start, machine = parts
    if not (start.isdigit() and machine and pid.isdigit()) or machine != _machine():
        return False
    if host != socket.gethostname()[:64]:
        return False
    now = _process_start(int(pid))
    return now is None or (now != "?" and now != start)


def _process_start(pid: int) -> str | None:
    """The start time of a living process from ``/proc``; None if there is none (or a zombie),
    ``"?"`` if it exists but cannot be read, or when ``/proc`` is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            return "?"  # it exists (another user's process)
        return "?"
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    if len(fields) < 20:
        return "?"
    return None if fields[0] in ("Z", "X", "x") else fields[19]


@functools.cache
def _machine() -> str:
    """This kernel boot and pid namespace, as 12 hex digits; empty without ``/proc``."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return hashlib.sha256(f"{boot}|{namespace}".encode()).hexdigest()[:12]


def _unwanted(conn: Connection, rows: Sequence[dict]) -> dict[int, str]:
    """Consent and suppression, checked again at send time: the reason not to send each row
    that should not go out (by outbox id). Two queries for a whole chunk of rows (issue 15)."""
    if not rows:
        return {}
    cust, supp = schema.stg_customers, schema.suppression
    customers = {
        customer_id: (address, consent)
        for customer_id, address, consent in conn.execute(
            select(cust.c.customer_id, cust.c.email, cust.c.marketing_consent).where(
                cust.c.customer_id.in_(sorted({row["customer_id"] for row in rows}))
            )
        )
    }
    hashes = {row["outbox_id"]: email_hash(row["email"]) for row in rows}
    suppressed = dict(
        conn.execute(
            select(supp.c.email_hash, supp.c.reason).where(
                supp.c.email_hash.in_(sorted(set(hashes.values())))
            )
        ).all()
    )
    reasons: dict[int, str] = {}
    for row in rows:
        customer = customers.get(row["customer_id"])
        reason = None
        if customer is None:
            reason = "customer no longer known (erased?)"
        elif customer[0].strip().lower() != row["email"].strip().lower():
            reason = "address changed since rendering"
        elif not customer[1]:
            reason = "marketing consent withdrawn since rendering"
        elif hashes[row["outbox_id"]] in suppressed:
            reason = f"address suppressed ({suppressed[hashes[row['outbox_id']]]})"
        if reason:
            reasons[row["outbox_id"]] = reason
    return reasons


@contextmanager
def _transaction(bind: Engine | Connection) -> Iterator[Connection]:
    """A transaction on a connection of its own (an engine) or on the batch's connection.

    A batch keeps one connection for all its messages: taking one from the pool per step
    cost a ``pool_pre_ping`` round trip each, three per message (issue 15). A connection that
    drops is invalidated by SQLAlchemy and reconnects on its next use.
    """
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            yield conn
    else:
        with bind.begin():
            yield bind


def _claim_many(
    warehouse: Engine | Connection,
    outbox_ids: Sequence[int],
    owner: str,
    until: dt.datetime,
    now: dt.datetime,
    policy: DeliveryPolicy,
) -> list[dict]:
    """Take the rows that are still queued and due, in one transaction, in the order asked;
    cancel the unwanted ones in the same breath (their ``status`` is then ``cancelled``).

    A chunk of rows per transaction, not one (issue 15): a claimed row on which no attempt
    has begun is harmless if this process dies, as the sweep queues it again, and
    :func:`send_batch` gives back the rows it did not get to.
    """
    box, att = schema.outbox, schema.delivery_attempts
    with _transaction(warehouse) as conn:
        claimed = (
            conn.execute(
                box.update()
                .where(box.c.outbox_id.in_(list(outbox_ids)), _due_clause(until))
                .values(
                    status="sending",
                    lease_owner=owner,
                    lease_expires_at=now + dt.timedelta(seconds=policy.lease_seconds),
                    attempts=box.c.attempts + 1,
                )
                .returning(*box.c)
            )
            .mappings()
            .all()
        )
        rows = {row["outbox_id"]: dict(row) for row in claimed}
        reasons = _unwanted(conn, list(rows.values()))
        if reasons:
            conn.execute(
                att.insert(),
                [
                    {
                        "outbox_id": outbox_id,
                        "attempt": rows[outbox_id]["attempts"],
                        "lease_owner": owner,
                        "started_at": now,
                        "finished_at": now,
                        "outcome": "cancelled",
                        "reply": reason,
                    }
                    for outbox_id, reason in reasons.items()
                ],
            )
            conn.execute(
                box.update()
                .where(box.c.outbox_id == bindparam("cancel_id"))
                .values(
                    status="cancelled", smtp_reply=bindparam("why"), lease_owner=None, lease_expires_at=None
                ),
                [{"cancel_id": outbox_id, "why": reason} for outbox_id, reason in reasons.items()],
            )
            for outbox_id in reasons:
                rows[outbox_id]["status"] = "cancelled"
    return [rows[outbox_id] for outbox_id in outbox_ids if outbox_id in rows]


def _claim(
    warehouse: Engine | Connection,
    outbox_id: int,
    owner: str,
    until: dt.datetime,
    now: dt.datetime,
    policy: DeliveryPolicy,
) -> dict | None:
    """:func:`_claim_many` for one row: the row, or None if another sender has it or it is not due."""
    rows = _claim_many(warehouse, [outbox_id], owner, until, now, policy)
    return rows[0] if rows else None


def _begin_attempt(warehouse: Engine | Connection, row: dict, owner: str, now: dt.datetime) -> int | None:
    """The evidence that SMTP is about to begin, committed before the first command; None if the
    row is no longer this sender's claim (its lease expired while it waited in its chunk and the
    sweep or another sender took it): then nothing may be sent."""
    att, box = schema.delivery_attempts, schema.outbox
    still_ours = select(
        literal(row["outbox_id"], Integer),
        literal(row["attempts"], Integer),
        literal(owner, String),
        literal(now, DateTime),
    ).where(
        box.c.outbox_id == row["outbox_id"],
        box.c.attempts == row["attempts"],
        box.c.lease_owner == owner,
        box.c.status == "sending",
    )
    with _transaction(warehouse) as conn:
        attempt_id = conn.execute(
            att.insert()
            .from_select(["outbox_id", "attempt", "lease_owner", "started_at"], still_ours)
            .returning(att.c.attempt_id)
        ).scalar()
    return None if attempt_id is None else int(attempt_id)


def _fate(reply: Reply, attempts: int, policy: DeliveryPolicy) -> str:
    if reply.accepted:
        return "sent"
    if reply.in_doubt:
        # The server may have the message: never retried silently. Policy "resend" queues
        # it again (a duplicate is possible, and accepted by that policy) while attempts last.
        return "resent" if policy.unknown_policy == "resend" and attempts < policy.max_attempts else "unknown"
    if reply.transient and attempts < policy.max_attempts:
        return "retry"
    return "failed"


def _mark(
    warehouse: Engine | Connection,
    row: dict,
    attempt_id: int,
    owner: str,
    reply: Reply,
    until: dt.datetime,
    policy: DeliveryPolicy,
    now: dt.datetime,
) -> str:
    """Record the reply on the attempt and the row, in one transaction."""
    box, att = schema.outbox, schema.delivery_attempts
    fate = _fate(reply, row["attempts"], policy)
    retry_at = until + policy.backoff(row["attempts"])
    values: dict = {
        "sent": {"status": "sent", "sent_at": now, "lease_owner": None},
        "retry": {"status": "queued", "next_attempt_at": retry_at, "lease_owner": None},
        "resent": {"status": "queued", "next_attempt_at": retry_at, "lease_owner": None},
        "failed": {"status": "failed", "lease_owner": None},
        # As for a crash: the lease owner stays on the row to name the process that sent it.
        "unknown": {"status": "unknown"},
    }[fate]
    with _transaction(warehouse) as conn:
        conn.execute(
            att.update()
            .where(att.c.attempt_id == attempt_id)
            .values(finished_at=now, outcome=fate, reply_code=reply.code, reply=str(reply))
        )
        marked = conn.execute(
            box.update()
            .where(
                box.c.outbox_id == row["outbox_id"],
                box.c.lease_owner == owner,
                box.c.status.in_(("sending", "unknown")),  # a late mark still tells the truth
            )
            .values(smtp_reply=str(reply), lease_expires_at=None, **values)
        ).rowcount
        if fate == "failed" and reply.hard_bounce:
            insert_ignore(
                conn,
                schema.suppression,
                [{"email_hash": email_hash(row["email"]), "reason": "hard_bounce", "night": until.date()}],
                ("email_hash",),
            )
    if marked != 1:
        log.error(
            "outbox row %d: reply %s recorded on its attempt, but another process took the row over "
            "after its lease expired (is delivery_lease_seconds shorter than an SMTP conversation?)",
            row["outbox_id"],
            reply,
        )
    return fate


@dataclass
class _Batch:
    """What every message of one batch shares."""

    warehouse: Engine | Connection  # the batch's own connection while it sends
    session: SmtpSession
    until: dt.datetime
    identity: Identity
    policy: DeliveryPolicy
    clock: Clock
    observe: Observer
    owner: str = field(default_factory=_owner)


def _message_for(batch: _Batch, row: dict) -> EmailMessage:
    mailto, url = unsubscribe_links(
        batch.identity.unsubscribe, batch.identity.secret, row["customer_id"], row["email"]
    )
    return build_message(row, batch.identity.sender, mailto, url, date=batch.clock())


#: Rows claimed per transaction (fewer under a rate limit: :func:`_chunk_size`).
CLAIM_CHUNK = 50


def _chunk_size(policy: DeliveryPolicy, limiter: RateLimiter) -> int:
    """Rows per claim: :data:`CLAIM_CHUNK`, or fewer when the rate limit would keep the last
    of them waiting for more than a quarter of the lease."""
    if not limiter.interval:
        return CLAIM_CHUNK
    return max(1, min(CLAIM_CHUNK, int(policy.lease_seconds / 4 / limiter.interval)))


def _send_one(batch: _Batch, row: dict) -> str:
    """Attempt, send, mark: one claimed message, each step committed before the next."""
    outbox_id = row["outbox_id"]
    attempt_id = _begin_attempt(batch.warehouse, row, batch.owner, batch.clock())
    if attempt_id is None:
        log.warning(
            "outbox row %d: its claim lapsed before its turn; nothing sent, left to the sweep", outbox_id
        )
        return "skipped"
    batch.observe("attempt", outbox_id)
    try:
        reply = batch.session.send(_message_for(batch, row))
    except ValueError as exc:  # a header the email package refuses (CR/LF, bad address): permanent
        reply = Reply(554, f"message cannot be built: {exc}", "BUILD")
    batch.observe("replied", outbox_id)
    fate = _mark(
        batch.warehouse, row, attempt_id, batch.owner, reply, batch.until, batch.policy, batch.clock()
    )
    batch.observe(fate, outbox_id)
    if fate != "sent":
        log.warning("outbox row %d: %s (%s)", outbox_id, fate, reply)
    return fate


def _give_back(batch: _Batch, rows: Sequence[dict]) -> None:
    """The claimed rows a stopped batch did not get to, queued again at once (if the database
    cannot be reached, the sweep does it when their lease ends)."""
    ours = schema.outbox.c.lease_owner == batch.owner
    try:
        # As the sweep settles a dead sender's claim that no attempt began: queued, claim uncounted.
        fates = Counter(
            _settle(batch.warehouse, row["outbox_id"], row["attempts"], batch.policy, ours, "batch stopped")
            for row in rows
        )
    except Exception:  # noqa: BLE001 - the batch is already failing; its own error matters
        log.exception("could not give back %d claimed messages; the sweep will queue them again", len(rows))
    else:
        log.info("gave back %d claimed messages that were not attempted", fates["requeued"])


def send_batch(
    warehouse: Engine,
    config: SmtpConfig,
    ids: Sequence[int],
    *,
    until: dt.datetime,
    identity: Identity,
    policy: DeliveryPolicy,
    rate: float | None = None,
    clock: Clock = utcnow,
    limiter: RateLimiter | None = None,
    observer: Observer | None = None,
    session: SmtpSession | None = None,
) -> dict[str, int]:
    """Send one batch through one SMTP session (reopened only if the server drops it).

    Rows are claimed a chunk at a time (:func:`_chunk_size`), then each is attempted, sent
    and marked in turn. Raises :class:`SmtpUnavailable` when no session can be opened;
    messages not yet attempted are queued again, untouched, for the next run (or the
    task's retry).
    """
    batch = _Batch(
        warehouse,
        session or SmtpSession(config),
        as_naive_utc(until),
        identity,
        policy,
        clock,
        observer or _quiet,
    )
    limiter = limiter or RateLimiter(policy.rate_per_second if rate is None else rate)
    size = _chunk_size(policy, limiter)
    counts: Counter[str] = Counter()
    with warehouse.connect() as conn, batch.session:
        batch.warehouse = conn
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            waiting: deque[dict] = deque()
            try:
                batch.session.open()  # before the claim: with the server down, nothing is touched
                claimed = _claim_many(conn, chunk, batch.owner, batch.until, clock(), policy)
                counts["skipped"] += len(chunk) - len(claimed)
                for row in claimed:
                    batch.observe("claimed", row["outbox_id"])
                    if row["status"] == "cancelled":
                        batch.observe("cancelled", row["outbox_id"])
                        counts["cancelled"] += 1
                    else:
                        waiting.append(row)
                while waiting:
                    batch.session.open()
                    limiter.acquire()
                    counts[_send_one(batch, waiting.popleft())] += 1
            except SmtpUnavailable:
                log.error(
                    "SMTP unavailable after %d of %d messages: %s", counts.total(), len(ids), dict(counts)
                )
                raise
            finally:
                if waiting:
                    _give_back(batch, list(waiting))
    counts = +counts  # no zero counts
    log.info("batch of %d: %s (%d SMTP sessions)", len(ids), dict(counts), batch.session.opened)
    return dict(counts)


def send_lane(warehouse: Engine, config: SmtpConfig, lane: dict, **options: object) -> dict[str, int]:
    """Send a lane's batches (:func:`in_lanes`) one after another, each as :func:`send_batch`
    with its own rate; the summed counts. Options are :func:`send_batch`'s keywords."""
    counts: Counter[str] = Counter()
    total = sum(len(batch["ids"]) for batch in lane["batches"])
    progress = Progress("send", total, unit="messages", logger=log)
    for batch in lane["batches"]:
        counts.update(send_batch(warehouse, config, batch["ids"], rate=batch["rate"], **options))
        progress.advance(len(batch["ids"]))
    progress.finish()
    return dict(counts)


def _quiet(_event: str, _outbox_id: int) -> None:
    """The default observer."""


def preview_batch(
    warehouse: Engine, ids: Sequence[int], *, until: dt.datetime, identity: Identity, clock: Clock = utcnow
) -> dict[str, int]:
    """Dry run: render and log what would be sent now; send nothing, mark nothing."""
    box = schema.outbox
    counts: Counter[str] = Counter()
    with warehouse.connect() as conn:
        rows = conn.execute(
            select(box)
            .where(box.c.outbox_id.in_(list(ids)), _due_clause(as_naive_utc(until)))
            .order_by(box.c.outbox_id)
        ).mappings()
        rows = list(map(dict, rows))
        reasons = _unwanted(conn, rows)
        for row in rows:
            reason = reasons.get(row["outbox_id"])
            if reason:
                counts["would_cancel"] += 1
                log.info("dry run: would cancel %s: %s", row["message_id"], reason)
                continue
            mailto, url = unsubscribe_links(
                identity.unsubscribe, identity.secret, row["customer_id"], row["email"]
            )
            msg = build_message(row, identity.sender, mailto, url, date=clock())
            counts["would_send"] += 1
            # The customer id, not the address: logs are no place for personal data.
            log.info(
                "dry run: would send %s to customer %d (%s, %d bytes): %s",
                row["message_id"],
                row["customer_id"],
                row["language"],
                len(msg.as_bytes()),
                row["subject"],
            )
    return dict(counts)


# --- one process, every step (the CLI, make demo's pipeline, the tests) ----------------------


def deliver(
    warehouse: Engine,
    config: SmtpConfig,
    *,
    until: dt.datetime,
    sender: str,
    shop_url: str,
    secret: bytes,
    limit: int | None = None,
    dry_run: bool = False,
    policy: DeliveryPolicy | None = None,
    clock: Clock = utcnow,
    observer: Observer | None = None,
    mailto: str | None = None,
    window: tuple[dt.time, dt.time] | None = None,
    max_delay_days: int = 1,
    identity: Identity | None = None,
) -> dict[str, int]:
    """Sweep, plan and send every batch in turn, in this process; the summed counts.

    With ``window`` (the local send window), messages whose window closed before
    ``until`` first move to the next day's window or expire (:func:`roll_missed_windows`).
    ``identity`` replaces ``sender``, ``shop_url``, ``secret`` and ``mailto`` when given
    (:meth:`DeliveryRun.deliver` passes it).
    """
    policy = policy or DeliveryPolicy()
    if limit is not None:
        policy = dataclasses.replace(policy, run_cap=limit)
    dry_run = dry_run or policy.dry_run
    until = as_naive_utc(until)
    identity = identity or Identity.for_shop(sender, shop_url, secret, mailto)
    counts: Counter[str] = Counter(dict.fromkeys(COUNT_KEYS, 0))
    if not dry_run:
        counts.update(sweep(warehouse, policy, clock()))
        if window is not None:
            counts.update(roll_missed_windows(warehouse, until, window, max_delay_days))
    limiter = RateLimiter(policy.rate_per_second)  # one process: the whole rate, shared by its batches
    for batch in plan(warehouse, until, policy):
        if dry_run:
            counts.update(preview_batch(warehouse, batch["ids"], until=until, identity=identity, clock=clock))
            continue
        counts.update(
            send_batch(
                warehouse,
                config,
                batch["ids"],
                until=until,
                identity=identity,
                policy=policy,
                clock=clock,
                limiter=limiter,
                observer=observer,
            )
        )
    log.info("delivery until %s UTC: %s", until, dict(counts))
    return dict(counts)


def outbox_status(warehouse: Engine) -> dict[str, int]:
    """Messages per status, the whole outbox."""
    box = schema.outbox
    with warehouse.connect() as conn:
        rows = conn.execute(select(box.c.status, func.count()).group_by(box.c.status)).all()
    return {status: count for status, count in rows}


def summarise(warehouse: Engine, swept: dict[str, int], batches: Iterable[dict[str, int]]) -> dict:
    """One run's totals, and the outbox as it stands; ``unknown`` messages are called out."""
    totals: Counter[str] = Counter(dict.fromkeys(COUNT_KEYS, 0))
    totals.update(swept or {})
    for counts in batches:
        totals.update(counts or {})
    status = outbox_status(warehouse)
    summary = {"run": dict(totals), "outbox": status}
    if status.get("unknown"):
        log.warning(
            "%d messages in the outbox are 'unknown' (the sender died during SMTP); a person must "
            "decide: see docs/delivery.md, section 'unknown'",
            status["unknown"],
        )
    log.info("delivery summary: %s", json.dumps(summary, sort_keys=True))
    return summary


# --- python -m retention.delivery ----------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retention.delivery", description="Deliver what is due in the outbox, in this process."
    )
    parser.add_argument("--url", help="warehouse SQLAlchemy URL (default: the settings')")
    parser.add_argument("--smtp-url", help="smtp://user:pass@host:port (default: the settings')")
    parser.add_argument("--until", required=True, help="send what is due at or before this ISO timestamp")
    parser.add_argument("--dry-run", action="store_true", help="render and log; send and mark nothing")
    parser.add_argument("--lease-seconds", type=float, help="override delivery_lease_seconds")
    parser.add_argument(
        "--unknown-policy", choices=["hold", "resend"], help="override delivery_unknown_policy"
    )
    parser.add_argument("--rate", type=float, help="override delivery_rate_per_second (0 = unlimited)")
    parser.add_argument("--trace", action="store_true", help="print '<event> <outbox_id>' per step, flushed")
    return parser


def _trace(event: str, outbox_id: int) -> None:
    # Unbuffered progress for a watching parent (the crash test kills us between these lines).
    sys.stdout.write(f"{event} {outbox_id}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    from retention.settings import Settings
    from retention.unsubscribe import secret_from_env

    args = _parser().parse_args(argv)
    settings = Settings().with_overrides(warehouse_url=args.url, smtp_url=args.smtp_url)
    run = DeliveryRun.from_settings(
        settings,
        secret_from_env(),
        lease_seconds=args.lease_seconds,
        unknown_policy=args.unknown_policy,
        rate_per_second=args.rate,
    )
    config = SmtpConfig.from_environment(settings.smtp_url, settings.smtp_conn_id, settings.smtp_timeout)
    counts = run.deliver(
        engine_for(settings.warehouse),
        config,
        dt.datetime.fromisoformat(args.until),
        dry_run=args.dry_run,
        observer=_trace if args.trace else None,
    )
    print(json.dumps({"done": counts}, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
