"""Issue #11, item 3, through real Airflow: `airflow dags test retention_nightly D` is night D west of UTC.

A bare date is 00:00 UTC, which in Los Angeles is the evening of D-1; read as a moment it
would be night D-1 and take in the wrong day. The shop here runs on America/Los_Angeles;
its customer's first order was placed at noon on D-1 Los Angeles time, inside night D's
window only, so a thank-you on night D proves the window, and the run log proves the night.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.airflow_env import BIN, airflow_env, run
from tests.shop import Shop

pytestmark = pytest.mark.airflow


def test_item_3_dags_test_with_a_bare_date_is_that_night_in_los_angeles(tmp_path: Path) -> None:
    source_url = f"sqlite:///{tmp_path / 'shop.db'}"
    warehouse_url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    shop = Shop(source_url)
    shop.product(1)
    shop.customer(1, time_zone="America/Los_Angeles", updated_at=dt.datetime(2026, 1, 1))
    placed = dt.datetime(2026, 11, 21, 20, 0)  # 12:00 on 21 November in Los Angeles (PST, UTC-8)
    shop.order(10, 1, placed)
    shop.item(10, 10, 1, updated_at=placed)
    shop.engine.dispose()

    env = airflow_env(tmp_path, warehouse_url=warehouse_url, source_url=source_url)
    env["RETENTION_TIME_ZONE"] = "America/Los_Angeles"
    env["RETENTION_HOLDOUT_SHARE"] = "0"
    run([str(BIN / "airflow"), "db", "migrate"], env)
    run([str(BIN / "airflow"), "dags", "test", "retention_nightly", "2026-11-22"], env)

    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        nights = set(conn.execute(text("select distinct night from run_log")).scalars())
        extract = conn.execute(
            text("select counts from run_log where stage = 'extract' and status = 'ok'")
        ).scalar_one()
        thanks = conn.execute(
            text("select customer_id, night, status from occasions where occasion = 'thank_you'")
        ).all()
    engine.dispose()
    assert nights == {"2026-11-22"}
    assert json.loads(extract)["read"]["orders"] == 1
    assert thanks == [(1, "2026-11-22", "selected")]

    # Lineage (issue #14, item 6): each written asset got an event carrying the stage's counts.
    metadata = create_engine(f"sqlite:///{tmp_path / 'airflow' / 'airflow.db'}")
    with metadata.connect() as conn:
        events = dict(
            conn.execute(
                text(
                    "select asset.uri, asset_event.extra from asset_event join asset on asset.id = asset_event.asset_id"
                )
            ).all()
        )
    metadata.dispose()
    staging = json.loads(events["warehouse://retention/staging"])
    assert staging["rows"]["orders"] == 1 and staging["read"]["customers"] == 1
    assert json.loads(events["warehouse://retention/outbox"])["queued"] == {"thank_you": 1}
