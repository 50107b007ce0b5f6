"""Delivery against a real SMTP server on loopback that misbehaves on request.

Every test asserts the final state of every outbox row and what the server actually
received. Time never passes by sleeping: ``until`` and an injected clock move instead.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, insert, select, update

from retention import schema
from retention.db import engine_for
from retention.delivery import (
    DeliveryPolicy,
    Identity,
    RateLimiter,
    SmtpUnavailable,
    _begin_attempt,
    _claim,
    deliver,
    outbox_status,
    plan,
    resolve_unknown,
    send_batch,
    summarise,
    sweep,
)
from retention.mailer import SmtpConfig, SmtpSession
from retention.outbox import message_id
from retention.unsubscribe import email_hash, verify
from tests.conftest import SECRET
from tests.smtp_faults import FaultySink

SENDER = "Retention Test Shop <shop@example.com>"
SHOP_URL = "https://shop.example.com"
SEND_AT = dt.datetime(2026, 11, 20, 8, 0)  # 09:00 Berlin
UNTIL = dt.datetime(2026, 11, 20, 8, 15)  # the run's logical date
T0 = dt.datetime(2026, 11, 20, 8, 15, 3)  # the real clock, as the tests choose it
FAST = DeliveryPolicy(rate_per_second=0, backoff_seconds=300, max_attempts=3, lease_seconds=60)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


def address(n: int) -> str:
    return f"customer{n}@example.com"


def seed_outbox(url: str, count: int, *, send_at: dt.datetime = SEND_AT, consent: bool = True) -> Engine:
    """A warehouse with ``count`` consenting customers and one queued message each."""
    engine = engine_for(url)
    schema.metadata.create_all(engine)
    day = send_at.date()
    customers, messages = [], []
    for n in range(1, count + 1):
        customers.append(
            {
                "customer_id": n,
                "email": address(n),
                "first_name": f"Name{n}",
                "last_name": "Tester",
                "language": "en",
                "time_zone": "Europe/Berlin",
                "country": "DE",
                "birthday": None,
                "marketing_consent": consent,
                "created_at": dt.datetime(2025, 1, 1),
                "updated_at": dt.datetime(2025, 1, 1),
                "loaded_night": day,
            }
        )
        messages.append(
            {
                "customer_id": n,
                "occasion": "thank_you",
                "occasion_date": day,
                "night": day,
                "email": address(n),
                "language": "en",
                "subject": f"Thank you, Name{n}!",
                "text_body": f"Hello Name{n},\nthank you for your order.\n",
                "html_body": f"<p>Hello Name{n},</p><p>thank you for your order.</p>",
                "template_hash": "0" * 64,
                "message_id": message_id(n, "thank_you", day, SENDER),
                "send_at": send_at,
                # A wide window: these tests are about SMTP fates; test_send_window.py is about windows.
                "send_before": send_at + dt.timedelta(days=30),
                "time_zone": "Europe/Berlin",
                "status": "queued",
                "attempts": 0,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(schema.stg_customers), customers)
        conn.execute(insert(schema.outbox), messages)
    return engine


def rows(engine: Engine) -> dict[int, dict]:
    """Every outbox row by customer id."""
    box = schema.outbox
    with engine.connect() as conn:
        return {r["customer_id"]: dict(r) for r in conn.execute(select(box)).mappings()}


def attempts(engine: Engine, customer_id: int) -> list[tuple]:
    """(attempt, outcome, reply_code) of one customer's message, in order."""
    box, att = schema.outbox, schema.delivery_attempts
    query = (
        select(att.c.attempt, att.c.outcome, att.c.reply_code)
        .join(box, box.c.outbox_id == att.c.outbox_id)
        .where(box.c.customer_id == customer_id)
        .order_by(att.c.attempt_id)
    )
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def statuses(engine: Engine) -> dict[int, str]:
    return {cid: row["status"] for cid, row in rows(engine).items()}


@pytest.fixture
def sink() -> Iterator[FaultySink]:
    with FaultySink() as server:
        yield server


@pytest.fixture
def run(sink: FaultySink):
    """Deliver everything due by ``until`` in this process, with the fast test policy."""

    def _run(engine: Engine, until: dt.datetime = UNTIL, clock: FakeClock | None = None, **policy) -> dict:
        return deliver(
            engine,
            SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5),
            until=until,
            sender=SENDER,
            shop_url=SHOP_URL,
            secret=SECRET,
            policy=DeliveryPolicy(**{**FAST.__dict__, **policy}),
            clock=clock or FakeClock(),
        )

    return _run


# --- the happy path ----------------------------------------------------------------------------


def test_due_messages_go_out_once_through_one_session(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 3)
    counts = run(engine)
    assert counts["sent"] == 3
    assert sink.sessions == 1
    received = sink.wait_for(3)
    assert sorted(m.rcpt_tos[0] for m in received) == [address(1), address(2), address(3)]
    for cid, row in rows(engine).items():
        assert row["status"] == "sent"
        assert row["smtp_reply"].startswith("250 ") and row["smtp_reply"].endswith("[DATA]")
        assert row["sent_at"] == T0  # the real (injected) clock, not the logical date
        assert (row["lease_owner"], row["lease_expires_at"], row["attempts"]) == (None, None, 1)
        assert attempts(engine, cid) == [(1, "sent", 250)]
    assert sink.by_message_id() == {row["message_id"]: 1 for row in rows(engine).values()}
    assert run(engine)["sent"] == 0  # a re-run of the slot sends nothing
    assert len(sink.received) == 3


def test_message_carries_the_outbox_message_id_and_one_click_headers(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 1)
    run(engine)
    raw = sink.wait_for(1)[0].raw
    msg = sink.received[0].message
    # The URIs verbatim (RFC 2369), folded between them, never as RFC 2047 encoded-words.
    assert b"\nList-Unsubscribe: <mailto:unsubscribe@example.com?subject=unsubscribe%201." in raw
    assert b">,\r\n <https://shop.example.com/unsubscribe?token=1." in raw
    assert msg["Message-ID"] == "<thank_you.1.20261120@example.com>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    mailto, https = (part.strip(" <>") for part in msg["List-Unsubscribe"].split(","))
    assert mailto.startswith("mailto:unsubscribe@example.com?subject=unsubscribe%20")
    assert https.startswith(f"{SHOP_URL}/unsubscribe?token=")
    token = https.partition("token=")[2]
    assert verify(SECRET, token, address(1)) == 1
    assert verify(b"another secret", token, address(1)) is None
    assert [p.get_content_type() for p in msg.walk()][1:] == ["text/plain", "text/html"]


def test_nothing_goes_out_before_send_at_or_next_attempt_at(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 2)
    with engine.begin() as conn:
        conn.execute(
            update(schema.outbox).where(schema.outbox.c.customer_id == 2).values(next_attempt_at=UNTIL)
        )
    assert run(engine, until=SEND_AT - dt.timedelta(minutes=1))["sent"] == 0
    assert run(engine, until=SEND_AT)["sent"] == 1
    assert statuses(engine) == {1: "sent", 2: "queued"}
    assert run(engine, until=UNTIL)["sent"] == 1
    assert sink.sessions == 2  # a run with nothing due opens no session


# --- unhappy servers ---------------------------------------------------------------------------


@pytest.mark.parametrize("stage,code", [("RCPT", 451), ("DATA", 451), ("RCPT", 421), ("DATA", 421)])
def test_transient_replies_are_retried_with_backoff(warehouse_url, sink, run, stage, code) -> None:
    engine = seed_outbox(warehouse_url, 3)
    sink.fail(address(2), stage, code, times=1)
    counts = run(engine)
    assert (counts["sent"], counts["retry"]) == (2, 1)
    row = rows(engine)[2]
    assert row["status"] == "queued"
    assert row["next_attempt_at"] == UNTIL + dt.timedelta(seconds=300)  # from the run's time
    assert row["smtp_reply"].startswith(f"{code} ")
    assert attempts(engine, 2) == [(1, "retry", code)]
    assert run(engine, until=UNTIL + dt.timedelta(seconds=299))["sent"] == 0  # backoff holds
    assert run(engine, until=UNTIL + dt.timedelta(seconds=300))["sent"] == 1
    assert statuses(engine) == {1: "sent", 2: "sent", 3: "sent"}
    assert attempts(engine, 2) == [(1, "retry", code), (2, "sent", 250)]
    assert set(sink.by_message_id().values()) == {1} and len(sink.received) == 3
    if code == 421:  # the server closed the session: the batch went on with a new one
        assert sink.sessions == 3


def test_backoff_doubles_and_gives_up_after_max_attempts(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 1)
    sink.fail(address(1), "RCPT", 451)
    until, waits = UNTIL, []
    for _ in range(3):
        run(engine, until=until)
        row = rows(engine)[1]
        if row["status"] != "queued":
            break
        waits.append((row["next_attempt_at"] - until).total_seconds())
        until = row["next_attempt_at"]
    assert waits == [300, 600]
    assert rows(engine)[1]["status"] == "failed"
    assert attempts(engine, 1) == [(1, "retry", 451), (2, "retry", 451), (3, "failed", 451)]
    assert sink.received == []
    assert outbox_status(engine) == {"failed": 1}


def test_dropped_connection_in_data_is_retried_and_nothing_arrived(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 3)
    sink.fail(address(2), "DROP", times=1)
    counts = run(engine)
    assert (counts["sent"], counts["retry"]) == (2, 1)
    assert (address(2), "DROP") in sink.events
    assert attempts(engine, 2) == [(1, "retry", None)]
    assert "connection dropped" in rows(engine)[2]["smtp_reply"]
    assert sorted(m.rcpt_tos[0] for m in sink.received) == [address(1), address(3)]
    run(engine, until=UNTIL + dt.timedelta(hours=1))
    assert statuses(engine) == {1: "sent", 2: "sent", 3: "sent"}
    assert set(sink.by_message_id().values()) == {1} and len(sink.received) == 3


@pytest.mark.parametrize("stage,code", [("RCPT", 550), ("RCPT", 551), ("DATA", 553)])
def test_hard_bounce_fails_at_once_and_suppresses_the_address(warehouse_url, sink, run, stage, code) -> None:
    engine = seed_outbox(warehouse_url, 2)
    sink.fail(address(1), stage, code)
    counts = run(engine)
    assert (counts["sent"], counts["failed"], counts["retry"]) == (1, 1, 0)
    assert statuses(engine) == {1: "failed", 2: "sent"}
    assert attempts(engine, 1) == [(1, "failed", code)]
    with engine.connect() as conn:
        suppressed = conn.execute(select(schema.suppression.c.email_hash, schema.suppression.c.reason)).all()
    assert suppressed == [(email_hash(address(1)), "hard_bounce")]
    assert [m.rcpt_tos for m in sink.received] == [[address(2)]]


def test_other_permanent_replies_fail_without_suppressing(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 1)
    sink.fail(address(1), "DATA", 554)
    run(engine)
    assert statuses(engine) == {1: "failed"}
    assert attempts(engine, 1) == [(1, "failed", 554)]
    with engine.connect() as conn:
        assert conn.execute(select(schema.suppression)).all() == []


def test_server_down_touches_nothing_and_the_next_run_sends(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 2)
    sink.down()
    with pytest.raises(SmtpUnavailable):
        run(engine)
    assert {cid: (r["status"], r["attempts"]) for cid, r in rows(engine).items()} == {
        1: ("queued", 0),
        2: ("queued", 0),
    }
    assert attempts(engine, 1) == attempts(engine, 2) == []
    sink.up()
    assert run(engine)["sent"] == 2
    assert set(sink.by_message_id().values()) == {1} and len(sink.received) == 2


def test_server_going_down_mid_batch_stops_the_batch_cleanly(warehouse_url, sink) -> None:
    engine = seed_outbox(warehouse_url, 3)
    config = SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5)
    identity = Identity.for_shop(SENDER, SHOP_URL, SECRET)
    ids = [r["outbox_id"] for r in sorted(rows(engine).values(), key=lambda r: r["customer_id"])]

    def observe(event: str, outbox_id: int) -> None:
        if event == "sent" and outbox_id == ids[0]:
            sink.fail(address(2), "DROP")  # the server dies during the next message ...
            sink.down()  # ... and stays down

    with pytest.raises(SmtpUnavailable):
        send_batch(
            engine,
            config,
            ids,
            until=UNTIL,
            identity=identity,
            policy=FAST,
            observer=observe,
            clock=FakeClock(),
        )
    assert statuses(engine) == {1: "sent", 2: "queued", 3: "queued"}
    assert [a[1] for a in attempts(engine, 2)] == ["retry"] and attempts(engine, 3) == []


# --- consent and suppression at send time -----------------------------------------------------


def test_opt_out_and_suppression_after_rendering_cancel_the_message(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 4)
    cust = schema.stg_customers
    with engine.begin() as conn:
        conn.execute(update(cust).where(cust.c.customer_id == 1).values(marketing_consent=False))
        conn.execute(update(cust).where(cust.c.customer_id == 3).values(email="new@example.com"))
        conn.execute(
            insert(schema.suppression).values(
                email_hash=email_hash(address(2).upper()), reason="unsubscribed"
            )
        )
    counts = run(engine)
    assert (counts["sent"], counts["cancelled"]) == (1, 3)
    assert statuses(engine) == {1: "cancelled", 2: "cancelled", 3: "cancelled", 4: "sent"}
    assert [m.rcpt_tos for m in sink.wait_for(1)] == [[address(4)]]
    assert attempts(engine, 2) == [(1, "cancelled", None)]
    assert "suppressed (unsubscribed)" in rows(engine)[2]["smtp_reply"]


# --- crash recovery, in-process (the real kills are in test_crash.py) -------------------------


def _die_during_smtp(engine: Engine, customer_id: int, clock: FakeClock, *, began: bool) -> int:
    """Leave a row as a process killed after its claim (and, if ``began``, after its attempt row)."""
    outbox_id = rows(engine)[customer_id]["outbox_id"]
    row = _claim(engine, outbox_id, "dead:1:cafe", UNTIL, clock(), FAST)
    assert row is not None and row["status"] == "sending"
    if began:
        _begin_attempt(engine, row, "dead:1:cafe", clock())
    return outbox_id


def test_expired_lease_after_smtp_began_is_unknown_and_never_resent(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 3)
    clock = FakeClock()
    _die_during_smtp(engine, 1, clock, began=True)
    _die_during_smtp(engine, 2, clock, began=False)
    assert run(engine, clock=clock)["sent"] == 1  # leases still valid: rows 1 and 2 are left alone
    assert statuses(engine) == {1: "sending", 2: "sending", 3: "sent"}
    clock.advance(FAST.lease_seconds + 1)
    counts = run(engine, clock=clock)
    assert (counts["unknown"], counts["requeued"], counts["sent"]) == (1, 1, 1)
    assert statuses(engine) == {1: "unknown", 2: "sent", 3: "sent"}
    assert attempts(engine, 1) == [(1, None, None)]  # the open attempt is the evidence
    assert attempts(engine, 2) == [(1, "sent", 250)]  # the claim that never reached SMTP is not counted
    assert run(engine, until=UNTIL + dt.timedelta(days=1), clock=clock)["sent"] == 0
    assert address(1) not in {m.rcpt_tos[0] for m in sink.received}
    summary = summarise(engine, {"unknown": 1}, [counts])
    assert summary["outbox"] == {"unknown": 1, "sent": 2}


def test_resend_policy_sends_unknown_messages_again(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 1)
    clock = FakeClock()
    _die_during_smtp(engine, 1, clock, began=True)
    clock.advance(FAST.lease_seconds + 1)
    counts = run(engine, clock=clock, unknown_policy="resend")
    assert (counts["resent"], counts["sent"]) == (1, 1)
    assert statuses(engine) == {1: "sent"}
    assert attempts(engine, 1) == [(1, None, None), (2, "sent", 250)]


def test_an_operator_resolves_unknown_messages(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 2)
    clock = FakeClock()
    ids = [_die_during_smtp(engine, n, clock, began=True) for n in (1, 2)]
    sweep(engine, FAST, clock.advance(FAST.lease_seconds + 1))
    assert resolve_unknown(engine, [ids[0]], "sent") == 1
    assert resolve_unknown(engine, [ids[1]], "resend") == 1
    assert resolve_unknown(engine, ids, "failed") == 0  # only unknown rows are touched
    run(engine, clock=clock)
    assert statuses(engine) == {1: "sent", 2: "sent"}
    assert [m.rcpt_tos for m in sink.received] == [[address(2)]]


def test_two_senders_at_once_never_send_the_same_message(warehouse_url, sink) -> None:
    engine = seed_outbox(warehouse_url, 20)
    ids = sorted(r["outbox_id"] for r in rows(engine).values())
    config = SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5)
    identity = Identity.for_shop(SENDER, SHOP_URL, SECRET)
    results: list[dict] = []
    start = threading.Barrier(2)

    def sender(order: list[int]) -> None:
        start.wait()
        results.append(
            send_batch(engine_for(warehouse_url), config, order, until=UNTIL, identity=identity, policy=FAST)
        )

    threads = [threading.Thread(target=sender, args=(o,)) for o in (ids, ids[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.get("sent", 0) for r in results) == 20
    assert sum(r.get("skipped", 0) for r in results) == 20
    assert set(sink.by_message_id().values()) == {1} and len(sink.received) == 20
    assert set(statuses(engine).values()) == {"sent"}


# --- dry run, planning, pacing ------------------------------------------------------------------


def test_dry_run_renders_and_logs_but_sends_and_marks_nothing(warehouse_url, sink, run, caplog) -> None:
    engine = seed_outbox(warehouse_url, 3)
    with engine.begin() as conn:
        conn.execute(
            update(schema.stg_customers)
            .where(schema.stg_customers.c.customer_id == 3)
            .values(marketing_consent=False)
        )
    before = rows(engine)
    with caplog.at_level(logging.INFO, logger="retention.delivery"):
        counts = run(engine, dry_run=True)
    assert (counts["would_send"], counts["would_cancel"], counts["sent"]) == (2, 1, 0)
    assert rows(engine) == before
    assert attempts(engine, 1) == [] and sink.received == [] and sink.sessions == 0
    assert "would send <thank_you.1.20261120@example.com> to customer 1" in caplog.text
    assert address(1) not in caplog.text  # personal data stays out of the logs


def test_plan_splits_due_messages_into_batches_sharing_the_rate(warehouse_url) -> None:
    engine = seed_outbox(warehouse_url, 23)
    policy = DeliveryPolicy(batch_size=5, batches=4, run_cap=100, rate_per_second=8)
    batches = plan(engine, UNTIL, policy)
    assert [len(b["ids"]) for b in batches] == [5, 5, 5, 5]  # 4 x 5: the rest waits for the next run
    assert sum(b["rate"] for b in batches) == 8
    assert len({i for b in batches for i in b["ids"]}) == 20
    assert [
        len(b["ids"]) for b in plan(engine, UNTIL, DeliveryPolicy(batch_size=10, batches=4, run_cap=13))
    ] == [7, 6]
    assert plan(engine, SEND_AT - dt.timedelta(seconds=1), policy) == []


def test_rate_limiter_spaces_messages_without_real_sleeping() -> None:
    now, slept = [100.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.acquire()
    assert slept == [0.25, 0.25, 0.25, 0.25] and now[0] == 101.0
    now[0] += 10  # idle time is not saved up into a burst
    limiter.acquire()
    limiter.acquire()
    assert slept[-1] == 0.25 and len(slept) == 5
    assert RateLimiter(0, clock=lambda: 0.0, sleep=sleep).acquire() == 0.0


def test_a_batch_is_paced_by_its_rate(warehouse_url, sink) -> None:
    engine = seed_outbox(warehouse_url, 4)
    now, slept = [0.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    ids = sorted(r["outbox_id"] for r in rows(engine).values())
    send_batch(
        engine,
        SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5),
        ids,
        until=UNTIL,
        identity=Identity.for_shop(SENDER, SHOP_URL, SECRET),
        policy=FAST,
        limiter=RateLimiter(2, clock=lambda: now[0], sleep=sleep),
    )
    assert slept == [0.5, 0.5, 0.5]
    assert len(sink.wait_for(4)) == 4


def test_policy_reads_settings_with_defaults() -> None:
    class Partial:
        delivery_batch_size = 50
        delivery_unknown_policy = "resend"

    policy = DeliveryPolicy.from_settings(Partial(), lease_seconds=30)
    assert (policy.batch_size, policy.unknown_policy, policy.lease_seconds) == (50, "resend", 30)
    assert policy.batches == DeliveryPolicy().batches
    assert policy.backoff(1) == dt.timedelta(seconds=300) and policy.backoff(3) == dt.timedelta(seconds=1200)
    assert policy.backoff(20) == dt.timedelta(hours=6)
    with pytest.raises(ValueError, match="hold"):
        DeliveryPolicy(unknown_policy="maybe")


def test_a_header_with_a_line_break_fails_the_message_not_the_batch(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 2)
    with engine.begin() as conn:
        conn.execute(
            update(schema.outbox)
            .where(schema.outbox.c.customer_id == 1)
            .values(subject="Hi\r\nBcc: all@example.com")
        )
    counts = run(engine)
    assert (counts["failed"], counts["sent"]) == (1, 1)
    assert statuses(engine) == {1: "failed", 2: "sent"}
    assert [m.rcpt_tos for m in sink.received] == [[address(2)]]


def test_smtp_session_is_reused_until_the_server_drops_it(sink) -> None:
    config = SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5)
    with SmtpSession(config) as session:
        session.open()
        session.open()
        assert session.opened == 1 and session.is_open
    assert not session.is_open
