"""
### retention_delivery

Every 15 minutes: send the outbox messages whose `send_at` has come, through the
Airflow connection `smtp_default`, exactly once each. Consent and suppression are
checked again right before each message goes out.

* **Time:** "now" is the run's logical date (or `run_after` for a manual run), never
  the worker's clock, so a re-run of a slot sends only what was due in that slot.
* **Params:** `dry_run` counts what would be sent and sends and marks nothing.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, task

from retention_airflow import ASSETS


@dag(
    dag_id="retention_delivery",
    schedule=CronTriggerTimetable("*/15 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["retention"],
    default_args={"owner": "data-eng", "retries": 3, "retry_delay": dt.timedelta(minutes=2)},
    params={"dry_run": Param(False, type="boolean", description="Count what is due; send and mark nothing.")},
)
def retention_delivery():
    @task(inlets=[ASSETS["outbox"]])
    def send(**context) -> dict:
        from retention.pipeline import stage_deliver
        from retention.settings import Settings
        from retention_airflow import smtp_config, unsubscribe_secret

        settings = Settings()
        until = context.get("logical_date") or context["dag_run"].run_after
        return stage_deliver(
            settings,
            smtp_config(settings),
            until,
            dry_run=bool(context["params"]["dry_run"]),
            secret=unsubscribe_secret(),
        )

    send()


retention_delivery()
