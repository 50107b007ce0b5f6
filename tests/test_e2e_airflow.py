"""End to end through real Airflow (`airflow dags test`) and a real SMTP server on loopback:
two consecutive nights, then a re-run of the first; exact message counts, no duplicates."""

from __future__ import annotations

import datetime as dt
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from retention.occasions import in_holdout
from tests.airflow_env import BIN, ROOT, airflow_env, run

pytestmark = pytest.mark.airflow

NIGHTS = ("2026-11-21", "2026-11-22")  # the demo shop's data ends on 2026-11-21 (Berlin)


def _expected_thank_yous(warehouse_url: str, night: str) -> set[int]:
    """An oracle independent of the SQL models: pandas over the staging tables."""
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        customers = pd.read_sql("select customer_id, marketing_consent from stg_customers", conn)
        orders = pd.read_sql("select customer_id, ordered_at, status from stg_orders", conn)
    engine.dispose()
    placed = orders[orders.status == "placed"]
    first = pd.to_datetime(placed.groupby("customer_id").ordered_at.min())
    day = dt.date.fromisoformat(night)
    zone = "Europe/Berlin"
    start = pd.Timestamp(day - dt.timedelta(days=1), tz=zone).tz_convert("UTC").tz_localize(None)
    end = pd.Timestamp(day, tz=zone).tz_convert("UTC").tz_localize(None)
    firsts = set(first[(first >= start) & (first < end)].index)
    consenting = set(customers[customers.marketing_consent.astype(bool)].customer_id)
    return {c for c in firsts & consenting if not in_holdout(c, 0.05, "retention-holdout-v1")}


def _selected(warehouse_url: str, night: str) -> set[tuple[int, str]]:
    """Selected occasions of the night whose templates exist (the others are blocked, by design)."""
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        frame = pd.read_sql(
            text("select customer_id, occasion from occasions where status = 'selected' and night = :night"),
            conn,
            params={"night": night},
        )
    engine.dispose()
    shipped = {p.parent.name for p in (ROOT / "templates").glob("*/en.jinja")}
    return {(int(c), o) for c, o in zip(frame.customer_id, frame.occasion, strict=True) if o in shipped}


def _outbox(warehouse_url: str) -> pd.DataFrame:
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        frame = pd.read_sql("select customer_id, occasion, occasion_date, status, language from outbox", conn)
    engine.dispose()
    return frame


def test_two_nights_and_a_rerun_send_each_message_exactly_once(
    tmp_path: Path, warehouse_url: str, mail_sink
) -> None:
    env = airflow_env(
        tmp_path,
        warehouse_url=warehouse_url,
        source_url=f"sqlite:///{tmp_path / 'shop.db'}",
        smtp_port=mail_sink.port,
    )
    run([sys.executable, "-m", "retention.cli", "demo-data", "--customers", "300", "--seed", "7"], env)
    run([str(BIN / "airflow"), "db", "migrate"], env)

    sent_per_night = []
    for night in NIGHTS:
        run([str(BIN / "airflow"), "dags", "test", "retention_nightly", night], env)
        expected = _expected_thank_yous(warehouse_url, night)
        run([str(BIN / "airflow"), "dags", "test", "retention_delivery", f"{night}T15:00:00+00:00"], env)
        due = len(_selected(warehouse_url, night))
        received = mail_sink.wait_for(sum(sent_per_night) + due)
        sent_per_night.append(len(received) - sum(sent_per_night))
        outbox = _outbox(warehouse_url)
        tonight = outbox[outbox.occasion_date.astype(str) == night]
        keys = {(int(c), o) for c, o in zip(tonight.customer_id, tonight.occasion, strict=True)}
        assert expected <= {c for c, o in keys if o == "thank_you"}
        assert keys == _selected(warehouse_url, night)
        assert sent_per_night[-1] == len(tonight)

    # Re-run the first night and its delivery: nothing new may arrive.
    run([str(BIN / "airflow"), "dags", "test", "retention_nightly", NIGHTS[0]], env)
    run([str(BIN / "airflow"), "dags", "test", "retention_delivery", f"{NIGHTS[0]}T15:00:00+00:00"], env)

    received = mail_sink.received
    message_ids = Counter(m.message["Message-ID"] for m in received)
    assert len(received) == sum(sent_per_night)
    assert max(message_ids.values()) == 1
    assert sent_per_night[1] > 0, "the demo shop's last day must bring first orders"
    outbox = _outbox(warehouse_url)
    assert set(outbox.status) == {"sent"}
    assert len(outbox) == len(received)
    assert set(outbox.language) == {"en", "de", "nb", "et"}
