"""
### retention_delivery

Every 15 minutes: send the outbox messages whose `send_at` has come, through the
Airflow connection `smtp_default`, each at most once, and record every fate as it happens.

```
sweep ──► plan ──► send_batch (mapped: one SMTP session per batch, in parallel) ──► summarise
```

* **sweep** settles messages whose sender died (expired lease): `unknown`, or queued again
  if no SMTP command had begun (or if `RETENTION_DELIVERY_UNKNOWN_POLICY=resend`).
* **plan** splits what is due into batches of outbox ids (at most `delivery_batches` of
  `delivery_batch_size`, and `delivery_run_cap` in all).
* **send_batch** claims each message (`sending`, with a lease), checks consent and
  suppression again, sends it and marks it `sent`, `queued` for a retry with backoff
  (4xx, dropped connection), or `failed` (5xx; 550/551/553 also suppress the address).
  The global rate limit is shared out between the batches.
* **summarise** totals the run and the outbox by status, and warns about `unknown` messages:
  a person decides about those (see `docs/delivery.md`).
* **Time:** "now" is the run's logical date (or `run_after` for a manual run), never the
  worker's clock, so a re-run of a slot sends only what was due in that slot. Leases and
  `sent_at` are real time.
* **Params:** `dry_run` renders and logs what would be sent; sends and marks nothing.
* **Settings:** `RETENTION_DELIVERY_*` (batch size, batches, rate, run cap, attempts,
  backoff, lease, unknown policy, dry run).
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, task

from retention_airflow import ASSETS


def _until(context) -> dt.datetime:
    """The run's "now": its logical date, or ``run_after`` for a manual run without one."""
    return context.get("logical_date") or context["dag_run"].run_after


def _dry_run(context, settings) -> bool:
    return bool(context["params"]["dry_run"]) or settings.delivery_dry_run


@dag(
    dag_id="retention_delivery",
    schedule=CronTriggerTimetable("*/15 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["retention"],
    default_args={"owner": "data-eng", "retries": 3, "retry_delay": dt.timedelta(minutes=2)},
    params={
        "dry_run": Param(
            False, type="boolean", description="Render and log what is due; send and mark nothing."
        )
    },
)
def retention_delivery():
    @task
    def sweep(**context) -> dict:
        from retention.db import engine_for
        from retention.delivery import DeliveryPolicy, as_naive_utc, roll_missed_windows, sweep, utcnow
        from retention.settings import Settings

        settings = Settings()
        if _dry_run(context, settings):
            return {}
        engine = engine_for(settings.warehouse)
        # Real time on purpose: a lease is about the sending process, not the business day.
        counts = sweep(engine, DeliveryPolicy.from_settings(settings), utcnow())
        window = (settings.send_window_start, settings.send_window_end)
        until = as_naive_utc(_until(context))
        counts.update(roll_missed_windows(engine, until, window, settings.delivery_max_delay_days))
        return counts

    @task
    def plan(**context) -> list[dict]:
        from retention.db import engine_for
        from retention.delivery import DeliveryPolicy, as_naive_utc
        from retention.delivery import plan as plan_batches
        from retention.settings import Settings

        settings = Settings()
        until = as_naive_utc(_until(context))
        return plan_batches(engine_for(settings.warehouse), until, DeliveryPolicy.from_settings(settings))

    @task(inlets=[ASSETS["outbox"]])
    def send_batch(batch: dict, **context) -> dict:
        from retention.db import engine_for
        from retention.delivery import DeliveryPolicy, Identity, preview_batch
        from retention.delivery import send_batch as send
        from retention.settings import Settings
        from retention_airflow import smtp_config, unsubscribe_secret

        settings = Settings()
        engine = engine_for(settings.warehouse)
        identity = Identity.from_settings(settings, unsubscribe_secret())
        until = _until(context)
        if _dry_run(context, settings):
            return preview_batch(engine, batch["ids"], until=until, identity=identity)
        return send(
            engine,
            smtp_config(settings),
            batch["ids"],
            until=until,
            identity=identity,
            policy=DeliveryPolicy.from_settings(settings),
            rate=batch["rate"],
        )

    @task(trigger_rule="none_failed")
    def summarise(swept: dict, results) -> dict:
        from retention.db import engine_for
        from retention.delivery import summarise as summary_of
        from retention.settings import Settings

        # One slice fetches every batch's counts; iterating would probe past the end (and log it).
        counts = list(results[:]) if results else []
        return summary_of(engine_for(Settings().warehouse), swept, counts)

    swept = sweep()
    batches = plan()
    swept >> batches  # settle the dead senders' messages before deciding what is due
    summarise(swept, send_batch.expand(batch=batches))


retention_delivery()
