"""
### retention_nightly

Every night, for the night of the run (see `retention.night`): take in the shop's
changes of the previous local day, hold back bad rows, recompute the facts of the
customers who changed, score every customer (RFM, ABC, lifecycle, churn, value), learn
what customers buy next and together, find the day's occasions and render their messages into the
outbox, each with a `send_at` inside the customer's own send window.
`retention_delivery` sends them.

* **Reads as the data flow:** task groups `load` (migrate, extract, quality), `model`
  (customer_facts, segments, recommendations) and `messages` (occasions, render); each task
  declares the assets it reads (inlets) and writes (outlets), starting from the shop's
  database, and puts its row counts on the asset events it emits; it logs its summary and
  returns it as its XCom. The extract and the render log their progress (done / total,
  rate, time left) every 30 seconds.
* **Idempotent:** re-running a night leaves the warehouse as it was and never adds
  a second message for the same customer, occasion and date.
* **Schedule:** 02:00 in the shop's time zone (`RETENTION_TIME_ZONE`; another cron string in
  `RETENTION_NIGHTLY_SCHEDULE`, or `none` to trigger runs only by hand or the API). `catchup` is
  off on purpose: the extract's watermark takes in the changes of nights that did not
  run, and greetings for days long gone should not go out late.
* **Params:** `night` (YYYY-MM-DD) re-runs a given night (not one after the run's own:
  refused at once); `full_refresh` re-reads the whole shop and rebuilds every customer's facts.
  An older night, after later nights ran, is reproduced from its records (every stage
  reports `reproduced` and the counts of the night's snapshot, occasions and outbox) and
  changes nothing; if its records are missing (it never completed, or its snapshot was
  pruned) the run fails at once, naming the night and what is missing.
* **Fails** when more than `RETENTION_QUARANTINE_MAX_SHARE` of a table's rows in the
  night are bad (`retention quarantine` lists them), naming table, rule and counts.
  That failure, and a missing or too short unsubscribe signing secret (checked by
  `migrate`, before any stage runs), are final at once: no retry can mend them.
* **Retries and timeouts:** other failures are retried twice, 5 minutes apart. Every task
  has an `execution_timeout` (below), so a hung stage fails instead of blocking the next
  night; its retry is safe because every stage is idempotent by night (it rewrites the
  night's rows, and the outbox key keeps a message from being added twice).

  | task | timeout | | task | timeout |
  | --- | --- | --- | --- | --- |
  | migrate | 15 min | | segments | 2 h |
  | extract | 3 h | | recommendations | 2 h |
  | quality | 15 min | | occasions | 1 h |
  | customer_facts | 2 h | | render | 3 h |

  Sized for a million customers with room to spare; a task past its timeout has hung.
* **Alerts:** a task that fails for good mails `RETENTION_ALERT_EMAIL` through
  `smtp_default` (DAG, task, night, try, error); unset, only a log line.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import Param, TaskGroup, dag, task

from retention.stages import NIGHT_STAGES, Stage
from retention_airflow import ASSETS, SOURCE, schedule, summarise, task_defaults

TIME_ZONE = os.environ.get("RETENTION_TIME_ZONE", "Europe/Berlin")

#: Each task's execution_timeout (the table in the docstring): far above a normal night.
TIMEOUTS = {"migrate": dt.timedelta(minutes=15), **{s.task_id: s.timeout for s in NIGHT_STAGES}}
GROUP_TOOLTIPS = {
    "load": "shop -> staging, bad rows held back",
    "model": "customer facts, segments, suggestions",
    "messages": "occasions -> rendered outbox",
}


def _night(context):
    from retention.settings import Settings
    from retention_airflow import night_of

    settings = Settings()
    return settings, night_of(context, settings)


def _final(*errors):
    """Fail for good, without retries, on ``errors`` and on an older night that cannot be reproduced."""
    from retention.pipeline import NightNotReproducible
    from retention_airflow import fail_without_retry

    return fail_without_retry(NightNotReproducible, *errors)


def _asset(name: str):
    return SOURCE if name == "source" else ASSETS[name]


def _stage_task(stage: Stage):
    """The task of one stage of ``retention.stages.NIGHT_STAGES``: run it for the run's night and
    put its counts on the asset events of what it writes."""

    @task(
        task_id=stage.task_id,
        inlets=[_asset(name) for name in stage.inlets],
        outlets=[_asset(name) for name in stage.outlets],
        execution_timeout=stage.timeout,
    )
    def run_stage(**context) -> dict:
        secret = None
        if stage.signs:
            from retention.unsubscribe import WeakSecret
            from retention_airflow import fail_without_retry, unsubscribe_secret

            with fail_without_retry(WeakSecret):
                secret = unsubscribe_secret()
        settings, night = _night(context)
        full_refresh = bool(context["params"]["full_refresh"])
        with _final(*stage.final_errors()):
            counts = stage(settings, night, context["run_id"], full_refresh=full_refresh, secret=secret)
        return summarise(context, counts, *stage.outlets)

    run_stage.__doc__ = f"The {stage.name} stage ({stage.function})."
    return run_stage


@dag(
    dag_id="retention_nightly",
    schedule=schedule("RETENTION_NIGHTLY_SCHEDULE", "0 2 * * *", TIME_ZONE),
    start_date=pendulum.datetime(2026, 11, 1, tz=TIME_ZONE),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["retention"],
    default_args=task_defaults(
        retries=2, retry_delay=dt.timedelta(minutes=5), execution_timeout=max(TIMEOUTS.values())
    ),
    params={
        "night": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Re-run this night (YYYY-MM-DD) instead of the run's own.",
        ),
        "full_refresh": Param(
            False, type="boolean", description="Re-read the whole shop and rebuild all customer facts."
        ),
    },
)
def retention_nightly():
    @task(execution_timeout=TIMEOUTS["migrate"])
    def migrate() -> None:
        from retention.pipeline import stage_migrate
        from retention.settings import Settings
        from retention.unsubscribe import WeakSecret
        from retention_airflow import fail_without_retry, unsubscribe_secret

        with fail_without_retry(WeakSecret):
            unsubscribe_secret()  # render needs it: refuse a missing or weak one before any stage runs
        stage_migrate(Settings())

    # One chain, in the order of NIGHT_STAGES, in task groups that read as the data flow: load
    # the shop, model the customers, write the messages. Task ids stay short (no group prefix):
    # logs, tests and runbooks name them.
    groups: dict[str, TaskGroup] = {}
    previous = None
    for stage in NIGHT_STAGES:
        if stage.group not in groups:
            groups[stage.group] = TaskGroup(
                stage.group, prefix_group_id=False, tooltip=GROUP_TOOLTIPS.get(stage.group)
            )
        with groups[stage.group]:
            if previous is None:
                previous = migrate()
            current = _stage_task(stage)()
        previous >> current
        previous = current


retention_nightly()
