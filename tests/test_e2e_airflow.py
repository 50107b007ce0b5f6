"""End to end through real Airflow (`airflow dags test`) and a real SMTP server on loopback:
two consecutive nights, then a re-run of the first; exact message counts, no duplicates; and a
quality-gate failure that fails at once and mails an alert."""

from __future__ import annotations

import datetime as dt
import subprocess
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


def _task_tries(airflow_home: Path, dag_id: str) -> dict[str, tuple[str, int]]:
    """State and try number of every task of the DAG's runs, from Airflow's own metadata."""
    engine = create_engine(f"sqlite:///{airflow_home / 'airflow' / 'airflow.db'}")
    with engine.connect() as conn:
        rows = conn.execute(
            text("select task_id, state, try_number from task_instance where dag_id = :dag"), {"dag": dag_id}
        ).all()
    engine.dispose()
    return {task_id: (state, tries) for task_id, state, tries in rows}


def test_a_quality_gate_failure_is_final_at_once_and_mails_data_engineering(tmp_path: Path, mail_sink) -> None:
    """75 % of the order lines are bad: the run fails after ONE try of `quality` (the DAG's
    default would retry twice, 5 minutes apart) and the alert arrives at the SMTP server."""
    shop = tmp_path / "shop.db"
    env = airflow_env(
        tmp_path,
        warehouse_url=f"sqlite:///{tmp_path / 'warehouse.db'}",
        source_url=f"sqlite:///{shop}",
        smtp_port=mail_sink.port,
    )
    env["RETENTION_ALERT_EMAIL"] = "data-eng@example.com"
    run([sys.executable, "-m", "retention.cli", "demo-data", "--customers", "300", "--seed", "7"], env)
    source = create_engine(f"sqlite:///{shop}")
    with source.begin() as conn:
        broken = conn.execute(text("update order_items set quantity = -1 where order_item_id % 4 != 0")).rowcount
        total = conn.execute(text("select count(*) from order_items")).scalar_one()
    source.dispose()
    assert broken / total > 0.74
    run([str(BIN / "airflow"), "db", "migrate"], env)

    proc = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", "retention_nightly", NIGHTS[0]],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert proc.returncode != 0, proc.stdout[-3000:]
    tries = _task_tries(tmp_path, "retention_nightly")
    assert tries["extract"] == ("success", 1)
    assert tries["quality"] == ("failed", 1)
    assert tries["customer_facts"][0] == "upstream_failed"
    alerts = mail_sink.wait_for(1)
    assert len(alerts) == 1  # only the task that failed for good; the skipped ones send nothing
    alert = alerts[0].message
    assert alerts[0].rcpt_tos == ["data-eng@example.com"]
    assert alert["Subject"] == f"[retention] retention_nightly.quality failed, night {NIGHTS[0]}, try 1"
    body = alert.get_content()
    assert "QualityError" in body and "order_items" in body and "negative_quantity=" in body
