"""Kill the sender with SIGKILL at random points; nothing may arrive twice or be lost unflagged.

Each trial seeds an outbox, starts ``python -m retention.delivery --trace`` in a child
process against a real SMTP server in this process, reads the child's progress lines
(``claimed``, ``attempt``, ``replied``, ``sent`` per message), and kills it right after a
randomly chosen line plus a random few microseconds (seeded: a failure names its seed).
In half the trials the server also keeps one message and then drops the connection without
replying (``STORE-DROP``: the fate of that message is unknown to the sender). Then this
process plays the next delivery runs (the second an hour later, past any backoff), with its
clock past the dead child's leases, and checks:

* policy ``hold``: every Message-ID arrived at most once; every row is ``sent`` or
  ``unknown`` (never stuck in ``sending``); a ``sent`` row arrived exactly once; every
  ``unknown`` row has an open attempt (outcome NULL) or an attempt whose outcome says it was
  in doubt as its evidence.
* policy ``resend``: every message arrived (none lost), and a message arrived twice only if
  it had been in doubt (an open attempt), which is the price that policy names.

Two more tests run the child to its end against a server that keeps messages and then drops
or never answers (they end ``unknown``, or re-queued under ``resend``), and kill it with the
leases far from expiry, to see the next sweep settle its claims at once (the lease owner names
a process of this host that is gone).

Runs in the normal suite, bounded: 30 + 10 trials on SQLite, 10 + 4 on PostgreSQL (when
configured). ``pytest -m crash`` runs it alone; ``RETENTION_CRASH_TRIALS=200`` (and
``RETENTION_CRASH_PG_TRIALS``) run more, ``RETENTION_CRASH_SEED`` picks other kill points.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine, or_, select

from retention import schema
from retention.delivery import DeliveryPolicy, deliver, sweep, utcnow
from retention.mailer import SmtpConfig
from tests.conftest import SECRET
from tests.smtp_faults import FaultySink
from tests.test_delivery import SENDER, SHOP_URL, UNTIL, address, seed_outbox

pytestmark = pytest.mark.crash

MESSAGES = 6
EVENTS_PER_MESSAGE = 4  # claimed (a chunk's claims come first), attempt, replied, sent
LEASE = 60.0
TRIALS = int(os.environ.get("RETENTION_CRASH_TRIALS", "30"))
# PostgreSQL repeats the trials to prove the claim race-free there too; fewer keep the suite quick.
PG_TRIALS = int(os.environ.get("RETENTION_CRASH_PG_TRIALS", "10"))
SEED = int(os.environ.get("RETENTION_CRASH_SEED", "20261122"))


def _spin(microseconds: float) -> None:
    """Wait a few microseconds by the clock, without sleeping (sleep is far too coarse)."""
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


#: Outcomes of an attempt that was in doubt: open (the sender died) or no reply after the end of DATA.
IN_DOUBT = (None, "unknown", "resent")


def _child(
    url: str, port: int, policy: str, home: Path, lease: float = LEASE, smtp_timeout: float = 5
) -> subprocess.Popen:
    env = {
        **os.environ,
        "RETENTION_HOME": str(home),
        "RETENTION_SENDER": SENDER,
        "RETENTION_SMTP_TIMEOUT": str(smtp_timeout),
    }
    cmd = [
        sys.executable,
        "-m",
        "retention.delivery",
        f"--url={url}",
        f"--smtp-url=smtp://127.0.0.1:{port}",
        f"--until={UNTIL.isoformat()}",
        "--rate=0",
        f"--lease-seconds={lease}",
        f"--unknown-policy={policy}",
        "--trace",
    ]
    log = (home / "child.log").open("ab")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)


def _run_and_kill(proc: subprocess.Popen, kill_after: int, delay_us: float) -> str | None:
    """Kill the child right after its ``kill_after``-th progress line; the line, or None if it finished."""
    assert proc.stdout is not None
    seen, last = 0, "start"
    while seen < kill_after:
        line = proc.stdout.readline()
        if not line or line.startswith("{"):
            proc.wait(timeout=30)
            assert proc.returncode == 0, f"the child failed by itself (exit {proc.returncode})"
            return None
        seen, last = seen + 1, line.split()[0]
    _spin(delay_us)
    proc.kill()  # SIGKILL: no cleanup, no atexit, no rollback courtesy
    proc.wait(timeout=30)
    proc.stdout.close()
    return last


def _recover(engine: Engine, port: int, policy: str, until: dt.datetime = UNTIL) -> dict:
    """The next run: its real clock is past the dead child's leases."""
    return deliver(
        engine,
        SmtpConfig(host="127.0.0.1", port=port, timeout=5),
        until=until,
        sender=SENDER,
        shop_url=SHOP_URL,
        secret=SECRET,
        policy=DeliveryPolicy(rate_per_second=0, lease_seconds=LEASE, unknown_policy=policy),
        clock=lambda: utcnow() + dt.timedelta(seconds=LEASE + 1),
    )


def _final_state(engine: Engine) -> tuple[dict[str, str], set[str]]:
    """Status by Message-ID, and the Message-IDs with an attempt in doubt (open, or no reply after DATA)."""
    box, att = schema.outbox, schema.delivery_attempts
    with engine.connect() as conn:
        status = dict(conn.execute(select(box.c.message_id, box.c.status)).all())
        open_ = set(
            conn.execute(
                select(box.c.message_id)
                .join(att, att.c.outbox_id == box.c.outbox_id)
                .where(or_(att.c.outcome.is_(None), att.c.outcome.in_(IN_DOUBT[1:])))
            ).scalars()
        )
    return status, open_


def _trial(url: str, home: Path, rng: random.Random, policy: str, tally: Counter) -> None:
    engine = seed_outbox(url, MESSAGES)
    try:
        with FaultySink() as sink:
            if rng.random() < 0.5:  # the server keeps one message, then hangs up without a reply
                sink.fail(address(rng.randint(1, MESSAGES)), "STORE-DROP", times=1)
            kill_after = rng.randint(0, MESSAGES * EVENTS_PER_MESSAGE)
            killed_at = _run_and_kill(_child(url, sink.port, policy, home), kill_after, rng.uniform(0, 400))
            tally["kills" if killed_at else "finished"] += 1
            tally[f"killed after {killed_at}"] += bool(killed_at)
            _recover(engine, sink.port, policy)
            if policy == "resend":  # what it queued again after a drop waits for its backoff
                _recover(engine, sink.port, policy, UNTIL + dt.timedelta(hours=1))
            tally["stored, then dropped"] += sum(event[1] == "STORE-DROP" for event in sink.events)
            received = sink.by_message_id()
        status, in_doubt = _final_state(engine)
        _check(policy, status, in_doubt, received, tally)
    finally:
        schema.metadata.drop_all(engine)
        engine.dispose()


def _check(
    policy: str, status: dict[str, str], in_doubt: set[str], received: Counter, tally: Counter
) -> None:
    assert set(received) <= set(status), "the server got a message the outbox does not know"
    assert set(status.values()) <= {"sent", "unknown", "failed", "cancelled"}, status
    if policy == "hold":
        assert max(received.values(), default=1) == 1, f"a message arrived twice: {received}"
        for mid, state in status.items():
            if state == "sent":
                assert received[mid] == 1, f"{mid} marked sent but arrived {received[mid]} times"
            else:
                assert state == "unknown" and mid in in_doubt, (mid, state)
                tally["unknown, server had it" if received[mid] else "unknown, server did not"] += 1
    else:
        assert set(status.values()) == {"sent"}, status
        assert all(received[mid] >= 1 for mid in status), f"a message was lost: {received}"
        twice = {mid for mid, n in received.items() if n > 1}
        assert twice <= in_doubt, f"resent without doubt: {twice - in_doubt}"
        tally["resend: duplicates (were in doubt)"] += len(twice)
        tally["resend: in doubt, arrived once"] += len(in_doubt - twice)
    tally["rows"] += len(status)


def test_sigkill_at_random_points_never_duplicates_or_loses_silently(warehouse_url, tmp_path) -> None:
    backend = warehouse_url.split(":")[0]
    rng = random.Random(f"{SEED}:{backend}")
    hold = TRIALS if backend == "sqlite" else PG_TRIALS
    tally: Counter = Counter()
    started = time.perf_counter()
    for n in range(hold + max(4, hold // 3)):
        policy = "hold" if n < hold else "resend"
        try:
            _trial(warehouse_url, tmp_path, rng, policy, tally)
        except AssertionError as exc:
            raise AssertionError(f"trial {n} ({policy}, seed {SEED}): {exc}") from exc
        tally[f"trials ({policy})"] += 1
    tally["seconds"] = round(time.perf_counter() - started)
    print("\ncrash test:", dict(sorted(tally.items())))
    trials = tally["trials (hold)"] + tally["trials (resend)"]
    assert trials >= (30 if backend == "sqlite" else 10)
    assert tally["kills"] >= trials - 2  # (nearly) every trial really killed the child mid-run


def _statuses(engine: Engine) -> dict[str, tuple[str, str | None]]:
    """(status, smtp_reply) by recipient."""
    box = schema.outbox
    with engine.connect() as conn:
        query = select(box.c.email, box.c.status, box.c.smtp_reply)
        return {r.email: (r.status, r.smtp_reply) for r in conn.execute(query)}


@pytest.mark.parametrize("policy", ["hold", "resend"])
def test_stored_then_dropped_or_unanswered_messages_are_never_sent_twice_silently(
    warehouse_url, tmp_path, policy
) -> None:
    """The sender in its own process, not killed: the server keeps message 2 and hangs up, and
    keeps message 3 and never answers (the child's SMTP timeout is 1 s)."""
    engine = seed_outbox(warehouse_url, 4)
    try:
        with FaultySink() as sink:
            sink.fail(address(2), "STORE-DROP", times=1)
            sink.fail(address(3), "STORE-HANG", times=1)
            child = _child(warehouse_url, sink.port, policy, tmp_path, smtp_timeout=1)
            assert _run_and_kill(child, 10**6, 0) is None  # ran to its end
            after_child = _statuses(engine)
            _recover(engine, sink.port, policy)
            _recover(engine, sink.port, policy, UNTIL + dt.timedelta(days=1))
            received = Counter(m.rcpt_tos[0] for m in sink.received)
        final = {email: status for email, (status, _) in _statuses(engine).items()}
    finally:
        schema.metadata.drop_all(engine)
        engine.dispose()
    in_doubt = (address(2), address(3))
    for email in in_doubt:
        status, reply = after_child[email]
        assert reply.endswith("[DATA-END]"), reply
        assert status == ("unknown" if policy == "hold" else "queued"), (email, status)
    if policy == "hold":
        assert final == {address(1): "sent", address(2): "unknown", address(3): "unknown", address(4): "sent"}
        assert set(received.values()) == {1}  # the two in doubt did arrive, once
    else:
        assert set(final.values()) == {"sent"}
        assert [received[address(n)] for n in (1, 2, 3, 4)] == [1, 2, 2, 1]  # the price of "resend"


def test_a_killed_sender_is_settled_by_the_next_sweep_without_waiting_for_its_lease(
    warehouse_url, tmp_path
) -> None:
    """SIGKILL at a few points with a 10-minute lease; the sweep right after (real time) settles
    every claim of the dead process: unknown if SMTP had begun, queued again if not."""
    tally: Counter = Counter()
    # The child prints "claimed" for its whole chunk (three rows) first, then per message
    # "attempt", "replied", "sent": kill after "claimed 1" (no SMTP begun) and "attempt 2" (it had).
    for kill_after in (1, 7):
        engine = seed_outbox(warehouse_url, 3)
        try:
            with FaultySink() as sink:
                child = _child(warehouse_url, sink.port, "hold", tmp_path, lease=600)
                tally[_run_and_kill(child, kill_after, 0)] += 1
                claimed = {e for e, (status, _) in _statuses(engine).items() if status == "sending"}
                settled = sweep(engine, DeliveryPolicy(lease_seconds=600), utcnow())
                after = _statuses(engine)
                assert "sending" not in {status for status, _ in after.values()}, after
                assert sum(settled.values()) == len(claimed)
                for email in claimed:
                    status, reply = after[email]
                    assert status in ("unknown", "queued") and "sender process gone" in reply, after[email]
                    tally[status] += 1
                _recover(engine, sink.port, "hold")
                received = sink.by_message_id()
            status, in_doubt = _final_state(engine)
            _check("hold", status, in_doubt, received, Counter())
        finally:
            schema.metadata.drop_all(engine)
            engine.dispose()
    assert tally["unknown"] >= 1 and tally["unknown"] + tally["queued"] >= 2, tally
