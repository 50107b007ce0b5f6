"""Issue #14, item 2: the DAGs on Airflow's distributed engine, with a worker lost mid-batch.

Airflow runs as it does in production (and in docker-compose.yml): metadata in PostgreSQL,
the CeleryExecutor with Redis as broker, api-server, scheduler, dag-processor, triggerer
and two Celery workers as separate processes; the warehouse in PostgreSQL. Runs are
triggered through the REST API, with and without a logical date. In the middle of a mapped
delivery batch, the worker sending it is killed (SIGKILL, its whole process tree): Airflow
notices the lost task, retries it on the other worker, and every message ends up at the
SMTP server exactly once; a message whose fate the kill made unknown is flagged, never
resent blindly, and a person's verdict settles it.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from retention import schema
from retention.db import engine_for
from retention.delivery import resolve_unknown
from tests.celery_topology import celery_topology, poll
from tests.conftest import PG_URL, _drop_pg_database, _fresh_pg_database
from tests.shop import Shop
from tests.smtp_faults import FaultySink

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]

PER_NIGHT = 30


def _berlin(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    """A Berlin wall-clock time (UTC+1 in winter, +2 in summer) as naive UTC."""
    from zoneinfo import ZoneInfo

    local = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo("Europe/Berlin"))
    return local.astimezone(dt.UTC).replace(tzinfo=None)


def _shop(url: str, first: dt.date) -> None:
    """PER_NIGHT first-time buyers on the day before each of two nights (thank-yous, by consent)."""
    shop = Shop(url)
    shop.product(1)
    for night_offset in (0, 1):
        day = first + dt.timedelta(days=night_offset - 1)
        for k in range(PER_NIGHT):
            customer_id = 1 + night_offset * 100 + k
            at = _berlin(day, 8 + k % 12, k)
            shop.customer(customer_id, updated_at=at - dt.timedelta(minutes=1))
            shop.order(customer_id * 10, customer_id, at)
            shop.item(customer_id * 10, customer_id * 10, 1, updated_at=at)
    shop.engine.dispose()


def _message_ids(mail_sink) -> Counter:
    return Counter(item.message["Message-ID"] for item in mail_sink.received)


def _outbox(warehouse_url: str, night: dt.date) -> dict[str, str]:
    engine = create_engine(warehouse_url)
    box = schema.outbox
    with engine.connect() as conn:
        rows = conn.execute(select(box.c.message_id, box.c.status).where(box.c.night == night)).all()
    engine.dispose()
    return dict(rows)


def _occasion_dates(warehouse_url: str, night: dt.date) -> list[dt.date]:
    engine = create_engine(warehouse_url)
    box = schema.outbox
    with engine.connect() as conn:
        dates = conn.execute(select(box.c.occasion_date).where(box.c.night == night)).scalars().all()
    engine.dispose()
    return dates


def _unsent(warehouse_url: str) -> list[dict]:
    """The messages not sent, with what the outbox says of them: a failure names its cause."""
    engine = create_engine(warehouse_url)
    box = schema.outbox
    columns = ("night", "status", "attempts", "send_at", "send_before", "next_attempt_at", "smtp_reply")
    with engine.connect() as conn:
        rows = conn.execute(select(*(box.c[c] for c in columns)).where(box.c.status != "sent")).all()
    engine.dispose()
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _sending_pid(warehouse_url: str) -> int | None:
    """The pid of a process holding a claimed message (lease owner ``host:pid:start:boot``)."""
    engine = create_engine(warehouse_url)
    box = schema.outbox
    with engine.connect() as conn:
        owner = conn.execute(
            select(box.c.lease_owner)
            .where(box.c.status == "sending", box.c.lease_owner.is_not(None))
            .limit(1)
        ).scalar()
    engine.dispose()
    return int(owner.split(":")[1]) if owner else None


def _save_thank_you(warehouse_url: str) -> int:
    from retention import template_store
    from retention.migrate import upgrade
    from retention.settings import Settings

    settings = Settings(warehouse_url=warehouse_url)
    engine = create_engine(warehouse_url)
    upgrade(engine)
    source = template_store.shipped_source(settings, "thank_you", "en")
    edited = source.replace("{% block subject %}", "{% block subject %}Thanks a million! ", 1)
    version, _ = template_store.save(
        engine, settings, "thank_you", "en", edited, "marketing", now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    )
    engine.dispose()
    return version.version_id


def _rendered_from(warehouse_url: str, night: dt.date) -> dict[str, set[tuple[str, int | None]]]:
    """Per variant: (the subject's first words, the saved template version) of the night's messages."""
    engine = create_engine(warehouse_url)
    box = schema.outbox
    with engine.connect() as conn:
        rows = conn.execute(
            select(box.c.subject, box.c.template_version_id, box.c.variant).where(box.c.night == night)
        ).all()
    engine.dispose()
    out: dict[str, set[tuple[str, int | None]]] = {"a": set(), "b": set()}
    for subject, version, variant in rows:
        out["b" if variant == "b" else "a"].add((subject.split("!")[0], version))
    return out


@pytest.fixture
def mail_sink():
    """This module's SMTP server keeps each message at once and answers its 250 half a second later.
    A message sent to loopback is otherwise "sending" for about a millisecond (the client writes
    with TCP_NODELAY): too short for the test to find the worker sending it."""
    with FaultySink(reply_delay=0.5) as sink:
        yield sink


@pytest.fixture
def databases():
    if not PG_URL:
        pytest.skip("RETENTION_TEST_PG_URL is not set")
    meta_name, meta_url = _fresh_pg_database()
    warehouse_name, warehouse_url = _fresh_pg_database()
    try:
        yield meta_url, warehouse_url
    finally:
        _drop_pg_database(meta_name)
        _drop_pg_database(warehouse_name)


def test_celery_topology_survives_a_worker_killed_mid_batch(tmp_path: Path, databases, mail_sink) -> None:
    metadata_url, warehouse_url = databases
    # Two nights in the past (a logical date may not lie in the future), the second the day after;
    # the test's own clock picks them, the tasks only ever see the runs' dates.
    first = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=4)
    second = first + dt.timedelta(days=1)
    source_url = f"sqlite:///{tmp_path / 'shop.db'}"
    _shop(source_url, first)
    settings_env = {
        "RETENTION_HOLDOUT_SHARE": "0",
        # Every local hour is a sending hour and a message may go out days late: what is due
        # must not depend on the hour at which the test runs.
        "RETENTION_SEND_WINDOW_START": "00:00",
        "RETENTION_SEND_WINDOW_END": "23:59",
        "RETENTION_DELIVERY_MAX_DELAY_DAYS": "30",
        # Two lanes of small batches, slowly: a worker can be killed in the middle of one.
        "RETENTION_DELIVERY_BATCH_SIZE": "5",
        "RETENTION_DELIVERY_BATCHES": "2",
        "RETENTION_DELIVERY_RATE_PER_SECOND": "2",
        "RETENTION_DELIVERY_RETRY_DELAY_SECONDS": "1",
    }
    with celery_topology(
        tmp_path,
        metadata_url=metadata_url,
        warehouse_url=warehouse_url,
        source_url=source_url,
        smtp_port=mail_sink.port,
        extra_env=settings_env,
    ) as airflow:
        poll(
            lambda: airflow.call("GET", "/dags/retention_delivery").status_code == 200, 240, "the DAGs parsed"
        )
        poll(lambda: airflow.call("GET", "/dags/retention_nightly").status_code == 200, 60, "the DAGs parsed")

        # A template saved where the api-server saves it (the warehouse) before the night: the
        # render task, on whichever worker runs it, uses it (issue #13: an edit reaches every worker).
        version = _save_thank_you(warehouse_url)

        # Night 1 with a logical date (a bare date: that night), then its delivery at noon UTC.
        airflow.trigger("retention_nightly", "night-1", f"{first}T00:00:00Z")
        airflow.wait_for_run("retention_nightly", "night-1")
        outbox = _outbox(warehouse_url, first)
        assert len(outbox) == PER_NIGHT and set(outbox.values()) == {"queued"}
        # thank_you/en has a variant b (templates/thank_you/en.b.jinja): the saved version is a's.
        rendered = _rendered_from(warehouse_url, first)
        assert rendered["a"] == {("Thanks a million", version)}, rendered
        assert {v for _, v in rendered["b"]} <= {None}, rendered

        # With a window opening at midnight, night D prepares the local date D+1 for every zone
        # (README, "The night"): its messages are due from D+1 00:00 local.
        assert set(_occasion_dates(warehouse_url, first)) == {first + dt.timedelta(days=1)}
        airflow.trigger("retention_delivery", "deliver-1", f"{first + dt.timedelta(days=1)}T12:00:00Z")
        mail_sink.wait_for(3, timeout=300)
        pid = poll(lambda: _sending_pid(warehouse_url), 60, "a message being sent", every=0.1)
        victim = airflow.owner_of(pid)
        assert victim in ("worker1", "worker2"), f"pid {pid} belongs to {victim}"
        before_kill = len(mail_sink.received)
        assert before_kill < PER_NIGHT, "the delivery finished before a worker could be killed"
        airflow.kill_tree(victim)
        airflow.wait_for_run("retention_delivery", "deliver-1", timeout=600)
        lanes = [
            t
            for t in airflow.task_instances("retention_delivery", "deliver-1")
            if t["task_id"] == "send_batches"
        ]
        assert len(lanes) == 2 and {t["state"] for t in lanes} == {"success"}
        assert max(t["try_number"] for t in lanes) >= 2, "the lost lane was retried"

        # The next run (no logical date: "now") settles what the dead sender held.
        airflow.trigger("retention_delivery", "deliver-2", None)
        airflow.wait_for_run("retention_delivery", "deliver-2")
        received = _message_ids(mail_sink)
        outbox = _outbox(warehouse_url, first)
        assert set(outbox.values()) <= {"sent", "unknown"}, _unsent(warehouse_url)
        assert all(count == 1 for count in received.values()), "a message arrived twice"
        assert {m for m, s in outbox.items() if s == "sent"} <= set(received), (
            "a message marked sent never arrived"
        )
        assert set(received) <= set(outbox)

        # A person settles the doubts with the provider's log (here: the sink's own record).
        unknown = [m for m, s in outbox.items() if s == "unknown"]
        engine = engine_for(warehouse_url)
        with engine.connect() as conn:
            ids = dict(conn.execute(select(schema.outbox.c.message_id, schema.outbox.c.outbox_id)).all())
        resolve_unknown(engine, [ids[m] for m in unknown if m in received], "sent")
        resolve_unknown(engine, [ids[m] for m in unknown if m not in received], "resend")
        engine.dispose()

        # Night 2 without a logical date (the `night` param names it), and its delivery.
        airflow.trigger("retention_nightly", "night-2", None, conf={"night": second.isoformat()})
        airflow.wait_for_run("retention_nightly", "night-2")
        airflow.trigger("retention_delivery", "deliver-3", None)
        airflow.wait_for_run("retention_delivery", "deliver-3")

    received = _message_ids(mail_sink)
    both = {**_outbox(warehouse_url, first), **_outbox(warehouse_url, second)}
    assert len(both) == 2 * PER_NIGHT
    assert set(both.values()) == {"sent"}, _unsent(warehouse_url)
    assert set(received) == set(both) and set(received.values()) == {1}, "each message exactly once"
    assert all(email.utils.parseaddr(item.message["To"])[1] for item in mail_sink.received)
