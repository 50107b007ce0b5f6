"""Delivery against a real SMTP server on loopback that misbehaves on request.

Every test asserts the final state of every outbox row and what the server actually
received. Time never passes by sleeping: ``until`` and an injected clock move instead.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, event, insert, select, update

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
    in_lanes,
    outbox_status,
    plan,
    resolve_unknown,
    send_batch,
    send_lane,
    summarise,
    sweep,
)
from retention.mailer import SmtpConfig, SmtpConfigError, SmtpLoginRefused, SmtpSession
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
def sqlite_url(tmp_path) -> str:
    """For tests about SMTP, not the database: SQLite only, to keep the suite quick."""
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture
def sink() -> Iterator[FaultySink]:
    with FaultySink() as server:
        yield server


@pytest.fixture
def run(sink: FaultySink):
    """Deliver everything due by ``until`` in this process, with the fast test policy."""

    def _run(
        engine: Engine,
        until: dt.datetime = UNTIL,
        clock: FakeClock | None = None,
        smtp: SmtpConfig | None = None,
        **policy,
    ) -> dict:
        return deliver(
            engine,
            smtp or SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5),
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
        assert row["smtp_reply"].startswith("250 ") and row["smtp_reply"].endswith("[DATA-END]")
        assert row["sent_at"] == T0  # the real (injected) clock, not the logical date
        assert (row["lease_owner"], row["lease_expires_at"], row["attempts"]) == (None, None, 1)
        assert attempts(engine, cid) == [(1, "sent", 250)]
    assert sink.by_message_id() == {row["message_id"]: 1 for row in rows(engine).values()}
    assert run(engine)["sent"] == 0  # a re-run of the slot sends nothing
    assert len(sink.received) == 3


@pytest.mark.parametrize("chunk", [50, 4])
def test_a_batch_claims_in_chunks_and_costs_three_statements_per_message(
    warehouse_url, sink, monkeypatch, chunk
) -> None:
    """The exactly-once bookkeeping in as few round trips as it needs (issue 15): a chunk of
    rows claimed in one transaction (UPDATE ... RETURNING, then one query each for consent and
    suppression); per message the attempt (one guarded INSERT) and the mark (attempt and row),
    two commits; the batch keeps one pooled connection, so no ``pool_pre_ping`` per step.
    Counted with SQLAlchemy's events, not timed."""
    monkeypatch.setattr("retention.delivery.CLAIM_CHUNK", chunk)
    engine = seed_outbox(warehouse_url, 6)
    ids = [row["outbox_id"] for row in rows(engine).values()]
    statements, checkouts, commits = [], [], []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    event.listen(engine, "commit", lambda *args: commits.append(1))
    event.listen(engine.pool, "checkout", lambda *args: checkouts.append(1))
    identity = Identity.for_shop(SENDER, SHOP_URL, SECRET)
    counts = send_batch(
        engine,
        SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5),
        ids,
        until=UNTIL,
        identity=identity,
        policy=FAST,
    )
    assert counts == {"sent": 6}
    assert len(checkouts) == 1
    chunks = -(-6 // chunk)
    writes = [s.split()[0].upper() for s in statements]
    assert len(statements) == 3 * chunks + 3 * 6, writes
    assert writes.count("SELECT") == 2 * chunks and writes.count("INSERT") == 6, writes
    assert writes.count("UPDATE") == chunks + 2 * 6, writes
    assert len(commits) == chunks + 2 * 6
    assert sink.by_message_id() == {row["message_id"]: 1 for row in rows(engine).values()}


def test_a_stopped_batch_gives_back_the_claims_it_did_not_attempt(warehouse_url, sink) -> None:
    """The server goes away after the first message of a chunk: the rest of the chunk, claimed
    but never attempted, is queued again at once with its claim uncounted, not left to a lease."""
    engine = seed_outbox(warehouse_url, 4)
    _send_until_the_server_dies(engine, sink)
    after = rows(engine)
    assert {cid: r["status"] for cid, r in after.items()} == {
        1: "sent",
        2: "queued",
        3: "queued",
        4: "queued",
    }
    assert [a[1] for a in attempts(engine, 2)] == ["retry"] and after[2]["attempts"] == 1
    assert [
        (after[cid]["attempts"], after[cid]["lease_owner"], after[cid]["lease_expires_at"]) for cid in (3, 4)
    ] == [(0, None, None)] * 2
    assert attempts(engine, 3) == attempts(engine, 4) == []


def test_a_claim_that_lapsed_in_its_chunk_is_not_attempted(warehouse_url, sink) -> None:
    """A row waits in its chunk while its lease runs out, the sweep queues it again and another
    sender claims it: this sender must not begin an attempt on it (the attempt is guarded by
    the lease owner, the claim count and the status)."""
    engine = seed_outbox(warehouse_url, 2)
    ids = [r["outbox_id"] for r in sorted(rows(engine).values(), key=lambda r: r["customer_id"])]
    clock = FakeClock()
    identity = Identity.for_shop(SENDER, SHOP_URL, SECRET)

    def observe(event: str, outbox_id: int) -> None:
        if event == "sent" and outbox_id == ids[0]:  # the second row still waits in the chunk
            clock.advance(FAST.lease_seconds + 1)
            assert sweep(engine, FAST, clock()) == {"requeued": 1}
            assert _claim(engine, ids[1], "sender-b", UNTIL, clock(), FAST) is not None

    counts = send_batch(
        engine,
        SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5),
        ids,
        until=UNTIL,
        identity=identity,
        policy=FAST,
        clock=clock,
        observer=observe,
    )
    assert counts == {"sent": 1, "skipped": 1}
    row = rows(engine)[2]
    assert (row["status"], row["lease_owner"], row["attempts"]) == ("sending", "sender-b", 1)
    assert attempts(engine, 2) == [] and len(sink.received) == 1


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


@pytest.mark.parametrize("fault,stage", [("DATA-DROP", "DATA"), ("RCPT-DROP", "RCPT")])
def test_dropped_connection_before_end_of_data_is_retried_and_nothing_arrived(
    warehouse_url, sink, run, fault, stage
) -> None:
    engine = seed_outbox(warehouse_url, 3)
    sink.fail(address(2), fault, times=1)
    counts = run(engine)
    assert (counts["sent"], counts["retry"]) == (2, 1)
    assert (address(2), fault) in sink.events
    assert attempts(engine, 2) == [(1, "retry", None)]
    reply = rows(engine)[2]["smtp_reply"]
    assert "connection dropped" in reply and reply.endswith(f"[{stage}]")  # the stage it really died in
    assert sorted(m.rcpt_tos[0] for m in sink.received) == [address(1), address(3)]
    run(engine, until=UNTIL + dt.timedelta(hours=1))
    assert statuses(engine) == {1: "sent", 2: "sent", 3: "sent"}
    assert set(sink.by_message_id().values()) == {1} and len(sink.received) == 3


def test_a_drop_in_the_middle_of_the_content_is_never_sent_twice(warehouse_url, sink, run) -> None:
    """The server hangs up after the first line of content and keeps nothing. A small message
    is written whole before that shows; if the client sees the hang-up before its final ".",
    it retries (the normal case), otherwise the message is in doubt: never a silent resend."""
    engine = seed_outbox(warehouse_url, 2)
    sink.fail(address(1), "DROP", times=1)
    counts = run(engine)
    assert counts["sent"] == 1 and counts["retry"] + counts["unknown"] == 1
    assert (address(1), "DROP") in sink.events
    run(engine, until=UNTIL + dt.timedelta(hours=1))
    assert statuses(engine)[1] in ("sent", "unknown") and statuses(engine)[2] == "sent"
    arrived = 1 + (statuses(engine)[1] == "sent")
    assert set(sink.by_message_id().values()) == {1} and len(sink.received) == arrived


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


def _send_until_the_server_dies(engine: Engine, sink: FaultySink) -> None:
    """Send every outbox row in one batch; the server dies during the second message (after the
    end of DATA was never reached) and stays down, so the batch stops with SmtpUnavailable."""
    ids = [r["outbox_id"] for r in sorted(rows(engine).values(), key=lambda r: r["customer_id"])]

    def observe(event: str, outbox_id: int) -> None:
        if event == "sent" and outbox_id == ids[0]:
            sink.fail(address(2), "DATA-DROP")  # the server dies during the next message ...
            sink.down()  # ... and stays down

    with pytest.raises(SmtpUnavailable):
        send_batch(
            engine,
            SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5),
            ids,
            until=UNTIL,
            identity=Identity.for_shop(SENDER, SHOP_URL, SECRET),
            policy=FAST,
            observer=observe,
            clock=FakeClock(),
        )


def test_server_going_down_mid_batch_stops_the_batch_cleanly(warehouse_url, sink) -> None:
    engine = seed_outbox(warehouse_url, 3)
    _send_until_the_server_dies(engine, sink)
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
    # Every due message, in 5 batches (not batches x batch_size = 20): 4 run at once, each at 8/4.
    assert [len(b["ids"]) for b in batches] == [5, 5, 5, 5, 3]
    assert {b["rate"] for b in batches} == {2}
    assert len({i for b in batches for i in b["ids"]}) == 23
    assert [
        len(b["ids"]) for b in plan(engine, UNTIL, DeliveryPolicy(batch_size=10, batches=4, run_cap=13))
    ] == [7, 6]
    capped = plan(engine, UNTIL, DeliveryPolicy(batch_size=5, batches=2, run_cap=17, rate_per_second=8))
    assert [len(b["ids"]) for b in capped] == [5, 5, 5, 2] and {b["rate"] for b in capped} == {4}
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


def test_the_session_sends_each_line_at_once_without_nagle(sink) -> None:
    """The end of DATA is a small write of its own: with Nagle's algorithm on, it waits for the
    server's delayed ACK (about 40 ms a message; ``make bench`` measured 20 msg/s, 374 without)."""
    import socket

    with SmtpSession(SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5)) as session:
        session.open()
        sock = session._client.smtp.sock  # noqa: SLF001 - the socket is what this test is about
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_lanes_bound_the_parallel_sessions_and_cover_every_batch() -> None:
    batches = [{"ids": [n], "rate": 1.0} for n in range(7)]
    lanes = in_lanes(batches, 3)
    assert [[b["ids"][0] for b in lane["batches"]] for lane in lanes] == [[0, 3, 6], [1, 4], [2, 5]]
    assert len(in_lanes(batches[:2], 4)) == 2 and in_lanes([], 4) == []


# --- the run cap (issue 10, item 11) -----------------------------------------------------------


def test_one_run_sends_up_to_the_run_cap_not_batches_times_batch_size(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 30)
    counts = run(engine, batch_size=4, batches=2, run_cap=25)
    assert counts["sent"] == 25  # ceil(25 / 4) = 7 batches, not 2 x 4 = 8 messages
    assert sink.sessions == 7  # one SMTP session per batch
    assert list(statuses(engine).values()).count("queued") == 5
    assert set(sink.by_message_id().values()) == {1} and len(sink.received) == 25


def test_a_lane_sends_its_batches_in_turn(sqlite_url, sink) -> None:
    engine = seed_outbox(sqlite_url, 9)
    policy = DeliveryPolicy(batch_size=2, batches=2, run_cap=100, rate_per_second=0)
    lanes = in_lanes(plan(engine, UNTIL, policy), policy.batches)
    assert [len(lane["batches"]) for lane in lanes] == [3, 2]
    identity = Identity.for_shop(SENDER, SHOP_URL, SECRET)
    config = SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5)
    totals = [
        send_lane(engine, config, lane, until=UNTIL, identity=identity, policy=policy, clock=FakeClock())
        for lane in lanes
    ]
    assert [t["sent"] for t in totals] == [5, 4]
    assert set(statuses(engine).values()) == {"sent"} and len(sink.received) == 9


# --- SMTP authentication (issue 10, item 6) ----------------------------------------------------


@pytest.mark.parametrize("login", ["apikey", "user@example.com", "relay-user.42"])
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_any_login_authenticates_as_given(sqlite_url, login) -> None:
    engine = seed_outbox(sqlite_url, 2)
    with FaultySink(logins={login: "s3cret pass"}) as server:
        url = f"smtp://{quote(login, safe='')}:{quote('s3cret pass')}@127.0.0.1:{server.port}"
        config = SmtpConfig.from_url(url, timeout=5)
        assert config.login == login  # never "apikey@gmail.com"
        counts = _deliver(engine, config)
        assert counts["sent"] == 2
        assert sorted(m.rcpt_tos[0] for m in server.received) == [address(1), address(2)]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_the_loopback_server_really_requires_auth(sqlite_url) -> None:
    engine = seed_outbox(sqlite_url, 1)
    with FaultySink(logins={"apikey": "s3cret"}) as server:
        counts = _deliver(engine, SmtpConfig(host="127.0.0.1", port=server.port, timeout=5))
        assert counts["failed"] == 1 and server.received == []
    assert rows(engine)[1]["smtp_reply"].startswith("530 ")  # "authentication required", at MAIL


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_wrong_password_is_a_clear_failure_and_claims_nothing(sqlite_url) -> None:
    engine = seed_outbox(sqlite_url, 2)
    with FaultySink(logins={"apikey": "s3cret"}) as server:
        config = SmtpConfig.from_url(f"smtp://apikey:wrong@127.0.0.1:{server.port}", timeout=5)
        with pytest.raises(SmtpLoginRefused) as refused:
            _deliver(engine, config)
        assert server.received == []
    message = str(refused.value)
    assert "refused login 'apikey'" in message and f"127.0.0.1:{server.port}" in message
    assert "RETENTION_SMTP_URL" in message and "535" in message and "wrong" not in message
    assert {cid: (r["status"], r["attempts"]) for cid, r in rows(engine).items()} == {
        1: ("queued", 0),
        2: ("queued", 0),
    }


def test_a_login_without_a_password_names_the_connection(monkeypatch) -> None:
    with pytest.raises(SmtpConfigError, match=r"RETENTION_SMTP_URL: SMTP login 'apikey' has no password"):
        SmtpConfig.from_environment("smtp://apikey@127.0.0.1:2525", "smtp_default", 5)
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_RELAY", '{"host": "127.0.0.1", "login": "relay-user.42"}')
    with pytest.raises(SmtpConfigError, match=r"connection 'smtp_relay' \(AIRFLOW_CONN_SMTP_RELAY\)"):
        SmtpConfig.from_environment(None, "smtp_relay", 5)
    with pytest.raises(SmtpConfigError, match="'smtp_default'"):
        SmtpConfig.from_fields("h", 25, "apikey", None, {}, source="Airflow connection 'smtp_default'")
    assert SmtpConfig.from_environment(None, "smtp_none", 5).login is None  # no login: no AUTH


def test_retention_send_refuses_a_login_without_password_before_claiming(
    sqlite_url, monkeypatch, capsys
) -> None:
    from retention.cli import main

    engine = seed_outbox(sqlite_url, 1)
    monkeypatch.setenv("RETENTION_SMTP_URL", "smtp://apikey@127.0.0.1:2525")
    assert main(["send", f"--url={sqlite_url}", f"--until={UNTIL.isoformat()}"]) != 0
    err = capsys.readouterr().err
    assert "RETENTION_SMTP_URL: SMTP login 'apikey' has no password" in err and len(err.splitlines()) == 1
    assert (rows(engine)[1]["status"], rows(engine)[1]["attempts"]) == ("queued", 0)


def _deliver(
    engine: Engine, config: SmtpConfig, until: dt.datetime = UNTIL, clock: FakeClock | None = None
) -> dict:
    return deliver(
        engine,
        config,
        until=until,
        sender=SENDER,
        shop_url=SHOP_URL,
        secret=SECRET,
        policy=FAST,
        clock=clock or FakeClock(),
    )


# --- after the end of DATA: fate unknown (issue 10, item 10) -----------------------------------


@pytest.mark.parametrize("fault", ["STORE-DROP", "STORE-HANG"])
def test_no_reply_after_end_of_data_is_unknown_and_never_sent_twice(warehouse_url, sink, fault) -> None:
    engine = seed_outbox(warehouse_url, 3)
    sink.fail(address(2), fault, times=1)
    # A short timeout: STORE-HANG keeps the message and never answers; the client must give up.
    config = SmtpConfig(host="127.0.0.1", port=sink.port, timeout=1)
    counts = _deliver(engine, config)
    assert (counts["sent"], counts["unknown"], counts["retry"]) == (2, 1, 0)
    assert (address(2), fault) in sink.events
    row = rows(engine)[2]
    assert row["status"] == "unknown" and row["lease_owner"]  # the owner names the sender
    assert "connection dropped" in row["smtp_reply"] and row["smtp_reply"].endswith("[DATA-END]")
    assert attempts(engine, 2) == [(1, "unknown", None)]
    for later in (UNTIL + dt.timedelta(hours=1), UNTIL + dt.timedelta(days=1)):
        assert _deliver(engine, config, until=later, clock=FakeClock(T0 + dt.timedelta(days=2)))["sent"] == 0
    assert statuses(engine) == {1: "sent", 2: "unknown", 3: "sent"}
    assert set(sink.by_message_id().values()) == {1} and len(sink.received) == 3  # it did arrive, once


def test_no_reply_after_end_of_data_is_requeued_under_resend(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 2)
    sink.fail(address(1), "STORE-DROP", times=1)
    counts = run(engine, unknown_policy="resend")
    assert (counts["sent"], counts["resent"], counts["unknown"]) == (1, 1, 0)
    row = rows(engine)[1]
    assert (row["status"], row["next_attempt_at"]) == ("queued", UNTIL + dt.timedelta(seconds=300))
    assert attempts(engine, 1) == [(1, "resent", None)]
    assert run(engine, until=UNTIL + dt.timedelta(seconds=300), unknown_policy="resend")["sent"] == 1
    assert statuses(engine) == {1: "sent", 2: "sent"}
    # The price the policy names: the copy the server had kept, and the resend, same Message-ID.
    assert sink.by_message_id()[row["message_id"]] == 2


def test_in_doubt_to_the_last_attempt_stays_unknown_under_resend(warehouse_url, sink, run) -> None:
    engine = seed_outbox(warehouse_url, 1)
    sink.fail(address(1), "STORE-DROP")
    until = UNTIL
    for _ in range(FAST.max_attempts):
        run(engine, until=until, unknown_policy="resend")
        until += dt.timedelta(hours=6)
    assert statuses(engine) == {1: "unknown"}  # never "failed": the server may well have it
    assert [a[1] for a in attempts(engine, 1)] == ["resent", "resent", "unknown"]


# --- a dead sender on this host is settled without waiting for its lease (item 11) ------------


def _gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sweep_settles_claims_of_gone_processes_of_this_host_at_once(warehouse_url, sink, run) -> None:
    from retention.delivery import _owner, owner_is_dead

    engine = seed_outbox(warehouse_url, 4)
    clock = FakeClock()
    me = _owner()
    host, _pid, nonce, start, machine = me.split(":")
    dead = f"{host}:{_gone_pid()}:{nonce}:{start}:{machine}"
    reused = f"{host}:{os.getpid()}:{nonce}:{int(start) - 1}:{machine}"  # our pid, another start time
    elsewhere = f"other-host:{_gone_pid()}:{nonce}:{start}:{machine}"
    assert owner_is_dead(dead) and owner_is_dead(reused)
    assert not owner_is_dead(me) and not owner_is_dead(elsewhere) and not owner_is_dead("old:1:cafe")
    for cid, owner, began in [(1, dead, True), (2, reused, False), (3, elsewhere, True), (4, me, True)]:
        row = _claim(engine, rows(engine)[cid]["outbox_id"], owner, UNTIL, clock(), FAST)
        assert row is not None
        if began:
            _begin_attempt(engine, row, owner, clock())
    counts = sweep(engine, FAST, clock())  # the leases are all still valid
    assert counts == {"unknown": 1, "requeued": 1}
    assert statuses(engine) == {1: "unknown", 2: "queued", 3: "sending", 4: "sending"}
    assert "sender process gone during SMTP" in rows(engine)[1]["smtp_reply"]
    assert sweep(engine, FAST, clock.advance(FAST.lease_seconds + 1)) == {"unknown": 2}


def test_retention_send_honours_the_run_cap_past_batches_times_batch_size(
    warehouse_url, sink, monkeypatch, capsys
) -> None:
    """The CLI (and so stage_deliver) plans from the settings like the DAG does."""
    from retention.cli import main

    engine = seed_outbox(warehouse_url, 7)
    for name, value in [("BATCH_SIZE", "2"), ("BATCHES", "1"), ("RUN_CAP", "5"), ("RATE_PER_SECOND", "0")]:
        monkeypatch.setenv(f"RETENTION_DELIVERY_{name}", value)
    monkeypatch.setenv("RETENTION_SMTP_URL", f"smtp://127.0.0.1:{sink.port}")
    monkeypatch.setenv("RETENTION_SENDER", SENDER)
    assert main(["send", f"--url={warehouse_url}", f"--until={UNTIL.isoformat()}"]) == 0
    assert '"sent": 5' in capsys.readouterr().out
    assert sink.sessions == 3 and len(sink.received) == 5  # batches of 2, 2, 1
    assert list(statuses(engine).values()).count("queued") == 2


def test_a_message_is_byte_for_byte_what_the_stock_header_registry_builds(monkeypatch) -> None:
    """The mailer makes each header class once (issue 15) and sets Date from a datetime: the
    bytes must equal those of the email package's own registry with a Date set as text, for
    non-ASCII names and subjects too (the MIME boundary seeded alike)."""
    import random
    from email import headerregistry
    from email.utils import format_datetime

    from retention import mailer

    row = {
        "email": "Zoë Ünal <zoe@example.com>",
        "subject": "Danke für Ihre erste Bestellung, Zoë – bis bald! " * 2,
        "message_id": "<thank_you.1.20261120@example.com>",
        "send_at": dt.datetime(2026, 11, 20, 8, 0),
        "occasion": "thank_you",
        "text_body": "Hallo Zoë,\n\nvielen Dank.\n" + "Eine lange Zeile " * 20 + "\n.\n",
        "html_body": "<p>Hallo Zoë,</p>" + "<p>" + "lang " * 60 + "</p>",
    }
    when = dt.datetime(2026, 11, 20, 8, 3, 7, tzinfo=dt.UTC)
    args = (
        row,
        "Bäckerei Müller <shop@example.com>",
        "mailto:unsubscribe@example.com",
        "https://x.example/u",
    )
    random.seed(11)
    ours = mailer.build_message(*args, date=when).as_bytes()
    stock = mailer.MAIL_POLICY.clone(header_factory=headerregistry.HeaderRegistry())
    monkeypatch.setattr(mailer, "MAIL_POLICY", stock)
    random.seed(11)
    msg = mailer.build_message(*args, date=when)
    del msg["Date"]
    msg["Date"] = format_datetime(when)
    theirs = msg.as_bytes()
    # The Date moved to the end in the stock message; compare the headers as sets, the rest as is.
    head, _, body = ours.partition(b"\r\n\r\n")
    stock_head, _, stock_body = theirs.partition(b"\r\n\r\n")
    assert body == stock_body
    assert sorted(head.split(b"\r\n")) == sorted(stock_head.split(b"\r\n"))
    assert b"Date: Fri, 20 Nov 2026 08:03:07 +0000" in head
