"""Issue #16 item 4: the behaviours that four mutations of the code got away with.

Each test names the line it guards; ``scripts/mutate.py`` (``make mutants``) applies the
mutation to a copy of the tree and checks that this file then fails.

1. ``retention/delivery.py``, ``_due_clause``: ``send_before > until``. A message whose local
   send window has closed is never sent, also by a run that does not roll missed windows.
2. ``retention/delivery.py``, ``_mark``: ``lease_owner == owner``. A sender whose lease was
   taken over records its late reply on its own attempt only, never on the row the new owner holds.
3. ``retention/quality.py``, ``_order_item``: ``quantity < 1``. An order line of quantity 0
   is quarantined (rule ``negative_quantity``); quantity 1 is loaded.
4. ``retention/extract.py``, ``_lower_bound``: ``min(mark, night.window_start_naive)``. A retried
   extract re-reads the night's window although the failed first attempt advanced some watermarks,
   so that the quality gate judges the night's rows.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from contextlib import closing

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from retention import schema
from retention.delivery import Identity, _begin_attempt, _claim, _mark, deliver, due_ids, send_batch, sweep
from retention.mailer import Reply, SmtpConfig
from retention.night import night_for_date
from retention.pipeline import QualityError, stage_extract, stage_migrate, stage_quality, warehouse_engine
from retention.runlog import stage_counts
from tests.conftest import SECRET
from tests.shop import DAY1, Shop
from tests.test_delivery import FAST, SENDER, SHOP_URL, UNTIL, FakeClock, rows, seed_outbox

NIGHT = "2026-11-20"  # tests.shop.DAY1 lies in its window (Berlin)


# --- 1. the send window's end ------------------------------------------------------------------


def test_a_message_whose_window_closed_is_not_sent_by_a_run_without_the_roll(
    warehouse_url, mail_sink
) -> None:
    """The window is [send_at, send_before): at ``until == send_before`` it has closed. A run
    without ``window`` (no roll, as a batch task of the DAG) must leave the message queued."""
    engine = seed_outbox(warehouse_url, 2)
    closed = rows(engine)[1]["outbox_id"]
    with engine.begin() as conn:
        conn.execute(
            update(schema.outbox).where(schema.outbox.c.outbox_id == closed).values(send_before=UNTIL)
        )
    with engine.connect() as conn:
        assert closed not in due_ids(conn, UNTIL, 10), "due_ids lists a message whose send window has closed"
    counts = deliver(
        engine,
        SmtpConfig(host="127.0.0.1", port=mail_sink.port, timeout=5),
        until=UNTIL,
        sender=SENDER,
        shop_url=SHOP_URL,
        secret=SECRET,
        policy=FAST,
        clock=FakeClock(),
    )
    assert counts["sent"] == 1, counts  # customer 2, whose window is open
    assert [m.rcpt_tos for m in mail_sink.wait_for(1)] == [["customer2@example.com"]]
    assert rows(engine)[1]["status"] == "queued", "a message was sent after its send window closed"
    # Sending its id explicitly (a batch planned earlier) does not send it either.
    identity = Identity.for_shop(SENDER, SHOP_URL, SECRET)
    config = SmtpConfig(host="127.0.0.1", port=mail_sink.port, timeout=5)
    assert send_batch(engine, config, [closed], until=UNTIL, identity=identity, policy=FAST) == {"skipped": 1}
    assert len(mail_sink.received) == 1 and rows(engine)[1]["status"] == "queued"


# --- 2. a late reply after a takeover ----------------------------------------------------------


def test_a_late_reply_does_not_touch_the_row_a_new_owner_holds(warehouse_url, mail_sink) -> None:
    """Sender A's lease expires during SMTP; the sweep queues the row again (policy "resend") and
    sender B claims it. A's reply, arriving now, is recorded on A's attempt; the row stays B's,
    and B's own reply decides its status."""
    engine = seed_outbox(warehouse_url, 1)
    outbox_id = rows(engine)[1]["outbox_id"]
    policy = dataclasses.replace(FAST, unknown_policy="resend")
    clock = FakeClock()
    taken_over: dict = {}

    def takeover(event: str, _outbox_id: int) -> None:
        if event == "attempt":  # A has begun SMTP; it stalls past its lease
            clock.advance(policy.lease_seconds + 1)
            assert sweep(engine, policy, clock()) == {"resent": 1}
            taken_over["row"] = _claim(engine, outbox_id, "sender-b", UNTIL, clock(), policy)

    counts = send_batch(
        engine,
        SmtpConfig(host="127.0.0.1", port=mail_sink.port, timeout=5),
        [outbox_id],
        until=UNTIL,
        identity=Identity.for_shop(SENDER, SHOP_URL, SECRET),
        policy=policy,
        clock=clock,
        observer=takeover,
    )
    assert counts == {"sent": 1}  # A's own view: the server accepted its message
    row_b = taken_over["row"]
    assert row_b is not None and row_b["status"] == "sending"
    row = rows(engine)[1]
    assert (row["status"], row["lease_owner"], row["attempts"]) == ("sending", "sender-b", 2), (
        "sender A's late reply changed the row sender B holds"
    )
    # B's reply decides: a transient failure queues the message for a retry.
    attempt_b = _begin_attempt(engine, row_b, "sender-b", clock())
    fate = _mark(
        engine, row_b, attempt_b, "sender-b", Reply(451, "try later", "RCPT"), UNTIL, policy, clock()
    )
    assert fate == "retry"
    row = rows(engine)[1]
    assert (row["status"], row["lease_owner"]) == ("queued", None)
    att = schema.delivery_attempts
    with engine.connect() as conn:
        outcomes = conn.execute(select(att.c.lease_owner, att.c.outcome).order_by(att.c.attempt_id)).all()
    assert [tuple(o) for o in outcomes][-1] == ("sender-b", "retry")
    assert [tuple(o) for o in outcomes][0][1] == "sent"  # A's reply, on A's attempt


# --- 3. the quantity rule ----------------------------------------------------------------------


def test_an_order_line_of_quantity_zero_is_quarantined_and_one_is_loaded(settings) -> None:
    shop = Shop(settings.source)
    shop.product(1)
    shop.customer(1)
    shop.order(10, 1, DAY1)
    shop.item(100, 10, 1, quantity=0, updated_at=DAY1)
    shop.item(101, 10, 1, quantity=1, updated_at=DAY1)
    stage_migrate(settings)
    counts = stage_extract(settings, night_for_date(NIGHT, settings.time_zone), "q")
    assert counts["quarantined_by_table"]["order_items"] == {"negative_quantity": 1}, counts
    with warehouse_engine(settings.warehouse).connect() as conn:
        staged = conn.execute(select(schema.stg_order_items.c.order_item_id)).scalars().all()
        held = conn.execute(select(schema.quarantine.c.source_key, schema.quarantine.c.rule)).all()
    assert staged == [101]
    assert [tuple(h) for h in held] == [("100", "negative_quantity")]


# --- 4. a retried extract re-reads the night's window ------------------------------------------


def _rename_source_table(settings, old: str, new: str) -> None:
    with closing(sqlite3.connect(make_url(settings.source).database)) as conn, conn:
        conn.execute(f"ALTER TABLE {old} RENAME TO {new}")


def test_a_retried_extract_rereads_the_window_and_the_gate_sees_its_bad_rows(settings) -> None:
    """The first attempt fails at order_items (the table is briefly missing in the shop database),
    after customers, products and orders advanced their watermarks to the window's end. The retry
    reads the night's orders again, so the gate fails the night: 3 of its 4 orders are bad."""
    settings = settings.with_overrides(quarantine_min_rows=1)
    night = night_for_date(NIGHT, settings.time_zone)
    shop = Shop(settings.source)
    shop.product(1)
    shop.customer(1)
    shop.order(10, 1, DAY1)
    shop.item(100, 10, 1, updated_at=DAY1)
    for order_id in (11, 12, 13):
        shop.order(order_id, 1, DAY1, status="lost-in-the-post")  # invalid_status
    stage_migrate(settings)
    mark = schema.extract_watermark
    _rename_source_table(settings, "order_items", "order_items_moved")
    with pytest.raises(Exception, match="order_items"):
        stage_extract(settings, night, "first")
    with warehouse_engine(settings.warehouse).connect() as conn:
        marks = dict(conn.execute(select(mark.c.source_table, mark.c.watermark)).tuples().all())
    assert marks.get("orders") == night.window_end_naive  # the first attempt got this far
    _rename_source_table(settings, "order_items_moved", "order_items")

    counts = stage_extract(settings, night, "retry")
    assert counts["lower_bounds"]["orders"] == night.window_start_naive.isoformat(), counts["lower_bounds"]
    assert counts["read"]["orders"] == 4, "the retry did not re-read the night's orders"
    assert counts["quarantined_by_table"]["orders"] == {"invalid_status": 3}
    with pytest.raises(QualityError, match="orders: 3 of 4 rows quarantined"):
        stage_quality(settings, night, "retry")
    with warehouse_engine(settings.warehouse).connect() as conn:
        assert stage_counts(conn, night.date, "quality") is None  # the night did not pass the gate
