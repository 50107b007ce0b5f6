"""
### retention_erasure

Forget a person (GDPR article 17), on request: trigger a run with the `person` param, their
customer id in the shop or their email address. The same as `retention forget`.

```
migrate ──► forget
```

* **What goes:** every warehouse row about the person: staging (customers, orders, order
  lines), the marts and segment snapshots, recommendations, occasions, the outbox and its
  delivery attempts, changed customers, and the quarantine's raw rows that name their id,
  address or orders. Other accounts in the shop with the same address are the same person.
* **What stays:** a tombstone, salted hashes of their ids and addresses (`erasures`), and the
  address's hash on the suppression list: nothing can be read back from either, and with them
  the nightly extract skips the person's rows in the shop (counted as `skipped_erased`), so no
  later night brings them back into any message.
* **Manual only:** no schedule. Idempotent: forgetting someone twice reports *nothing to
  forget*. The task's summary (rows removed per table) is its XCom; no personal data is logged.
* **Fails at once** (no retry can mend it) when `person` is neither an id nor an address, or
  when nobody by it is in the warehouse and nobody by it was forgotten before.
* **Airflow keeps the param:** the run's conf, with the id or address, stays in Airflow's
  metadata database; delete the run afterwards (the UI's delete, or the REST API's
  `DELETE /api/v2/dags/retention_erasure/dagRuns/{dag_run_id}`), or purge old runs with
  `airflow db clean --tables dag_run`.
* **Alerts:** a task that fails for good mails `RETENTION_ALERT_EMAIL` through `smtp_default`.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import Param, dag, task

from retention_airflow import task_defaults

#: Each task's execution_timeout: far above what one person's rows take, even in a large warehouse.
TIMEOUTS = {"migrate": dt.timedelta(minutes=15), "forget": dt.timedelta(minutes=30)}


@dag(
    dag_id="retention_erasure",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["retention", "gdpr"],
    default_args=task_defaults(
        retries=2, retry_delay=dt.timedelta(minutes=2), execution_timeout=max(TIMEOUTS.values())
    ),
    params={
        "person": Param(
            "",
            type="string",
            minLength=1,
            description="The person to forget: their customer id in the shop, or their email address.",
        )
    },
)
def retention_erasure():
    @task(execution_timeout=TIMEOUTS["migrate"])
    def migrate() -> None:
        from retention.pipeline import stage_migrate
        from retention.settings import Settings

        stage_migrate(Settings())  # the tombstone tables come with a migration

    @task(execution_timeout=TIMEOUTS["forget"])
    def forget(**context) -> dict:
        from retention.db import engine_for
        from retention.erasure import NotAPerson, UnknownPerson
        from retention.erasure import forget as forget_person
        from retention.settings import Settings
        from retention_airflow import fail_without_retry

        settings = Settings()
        # The day of the request, kept with the tombstone for the record: the run's own date.
        when = context.get("logical_date") or context["dag_run"].run_after
        with fail_without_retry(NotAPerson, UnknownPerson):
            erasure = forget_person(engine_for(settings.warehouse), context["params"]["person"], when.date())
        print(erasure.describe())  # counts only: the person is not named in the log
        return erasure.as_counts()

    migrate() >> forget()


retention_erasure()
