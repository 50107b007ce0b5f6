"""
### retention_delivery

Every 15 minutes (`RETENTION_DELIVERY_SCHEDULE`, a cron string in UTC or `none`): send the
outbox messages whose `send_at` has come, through the
Airflow connection `smtp_default`, each at most once, and record every fate as it happens.

```
sweep ──► plan ──► send_batches (mapped: one task per lane, the lanes in parallel) ──► summarise
mail_followups (beside them)
```

* **sweep** settles messages whose sender died (expired lease, or a sender process of this
  host that is gone): `unknown`, or queued again if no SMTP command had begun (or if
  `RETENTION_DELIVERY_UNKNOWN_POLICY=resend`).
* **plan** checks the SMTP connection's settings (a login without a password fails here,
  before anything is claimed), takes up to `delivery_run_cap` due messages, splits them into
  batches of `delivery_batch_size` and deals the batches into at most `delivery_batches`
  lanes.
* **send_batches** (one mapped task per lane; the lanes run in parallel) sends its lane's
  batches one after another, one SMTP session each. It claims each message (`sending`, with
  a lease), checks consent and suppression again, sends it and marks it `sent`, `queued` for
  a retry with backoff (4xx, or a drop before the end of DATA), `unknown` (a drop or timeout
  after the end of DATA: the server may have it), or `failed` (5xx; 550/551/553 also
  suppress the address). The global rate limit is shared out between the lanes, so a run
  takes about `delivery_run_cap / delivery_rate_per_second` seconds when that much is due.
* **summarise** totals the run and the outbox by status, and warns about `unknown` messages:
  a person decides about those (see `docs/delivery.md`).
* **mail_followups** mails each new follow-up of a low feedback rating (`feedback_followups`,
  `retention.feedback.mail_followups`) to `RETENTION_SERVICE_ADDRESS`, at most once each; on
  its own, so that a failing service mail never holds up the customers' messages.
* **Time:** "now" is the run's logical date (or `run_after` for a manual run), never the
  worker's clock, so a re-run of a slot sends only what was due in that slot. Leases and
  `sent_at` are real time.
* **Params** (for manual runs): `dry_run` renders and logs what would be sent, sends and
  marks nothing; `occasions` sends only those occasions (an unknown name fails at once);
  `limit` sends at most that many messages.
* **Lineage and summaries:** `send_batches` reads and writes the outbox asset, its event
  carrying the lane's counts; every task logs its summary and returns it as its XCom; a
  lane logs its progress (sent / total, rate, time left) every 30 seconds.
* **Retries:** 3, `RETENTION_DELIVERY_RETRY_DELAY_SECONDS` (120) apart; a retried lane
  skips what its first try sent (a message is claimed once).
* **Timeouts and alerts:** every task has a 30-minute `execution_timeout` (a hung SMTP
  session fails; the next run's sweep settles what it had claimed); a task that fails for
  good mails `RETENTION_ALERT_EMAIL` through `smtp_default`.
* **Settings:** `RETENTION_DELIVERY_*` (batch size, batches, rate, run cap, attempts,
  backoff, lease, unknown policy, dry run).
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import Param, dag, task

from retention_airflow import ASSETS, schedule, seconds, task_defaults
from retention_airflow import summarise as log_summary


def _until(context) -> dt.datetime:
    """The run's "now": its logical date, or ``run_after`` for a manual run without one."""
    return context.get("logical_date") or context["dag_run"].run_after


def _occasions(context) -> list[str]:
    """The ``occasions`` param, checked: an unknown name fails at once (a typo would send nothing)."""
    from retention.registry import names
    from retention_airflow import fail_without_retry

    wanted = list(context["params"].get("occasions") or [])
    known = names()
    unknown = sorted(set(wanted) - set(known))
    with fail_without_retry(ValueError):
        if unknown:
            raise ValueError(f"unknown occasion(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return wanted


def _dry_run(context, settings) -> bool:
    return bool(context["params"]["dry_run"]) or settings.delivery_dry_run


def _run(settings, signing: bool = False):
    """The delivery run from the settings (``retention.delivery.DeliveryRun``), as every entry
    point builds it; the signing secret is read only by the task that signs links."""
    from retention.delivery import DeliveryRun
    from retention_airflow import unsubscribe_secret

    return DeliveryRun.from_settings(settings, unsubscribe_secret() if signing else b"")


@task(retries=3)
def mail_followups(**context) -> dict:
    """Low feedback ratings to the service address (``RETENTION_SERVICE_ADDRESS``): a task of
    its own, so that a failing service mail never holds up the customers' messages."""
    from retention.db import engine_for
    from retention.feedback import mail_followups as send_followups
    from retention.settings import Settings
    from retention_airflow import smtp_config

    settings = Settings()
    if _dry_run(context, settings):
        return {}
    counts = send_followups(engine_for(settings.warehouse), settings, smtp_config(settings))
    return log_summary(context, counts)


@dag(
    dag_id="retention_delivery",
    schedule=schedule("RETENTION_DELIVERY_SCHEDULE", "*/15 * * * *", "UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["retention"],
    default_args=task_defaults(
        retries=3,
        retry_delay=seconds("RETENTION_DELIVERY_RETRY_DELAY_SECONDS", 120),
        # A hung SMTP session fails the task; its claimed messages are settled by the next sweep.
        execution_timeout=dt.timedelta(minutes=30),
    ),
    params={
        "dry_run": Param(
            False, type="boolean", description="Render and log what is due; send and mark nothing."
        ),
        "occasions": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Send only these occasions (e.g. birthday, thank_you); empty: all that are due.",
        ),
        "limit": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Send at most this many messages in this run (below RETENTION_DELIVERY_RUN_CAP).",
        ),
    },
)
def retention_delivery():
    @task
    def sweep(**context) -> dict:
        from retention.db import engine_for
        from retention.delivery import as_naive_utc, roll_missed_windows, sweep, utcnow
        from retention.settings import Settings

        settings = Settings()
        if _dry_run(context, settings):
            return {}
        run = _run(settings)
        engine = engine_for(settings.warehouse)
        # Real time on purpose: a lease is about the sending process, not the business day.
        counts = sweep(engine, run.policy, utcnow())
        until = as_naive_utc(_until(context))
        counts.update(roll_missed_windows(engine, until, run.window, run.max_delay_days))
        return log_summary(context, counts)

    @task
    def plan(**context) -> list[dict]:
        from retention.db import engine_for
        from retention.delivery import as_naive_utc, in_lanes
        from retention.delivery import plan as plan_batches
        from retention.settings import Settings
        from retention_airflow import smtp_config

        settings = Settings()
        occasions = _occasions(context)  # a misspelt param fails first, before anything else
        if not _dry_run(context, settings):
            smtp_config(settings)  # a connection that cannot work fails here, before any claim
        until = as_naive_utc(_until(context))
        policy = _run(settings).policy
        batches = plan_batches(
            engine_for(settings.warehouse),
            until,
            policy,
            occasions=occasions,
            limit=context["params"]["limit"],
        )
        lanes = in_lanes(batches, policy.batches)
        log_summary(
            context,
            {"due": sum(len(b["ids"]) for b in batches), "batches": len(batches), "lanes": len(lanes)},
        )
        return lanes

    @task(inlets=[ASSETS["outbox"]], outlets=[ASSETS["outbox"]])
    def send_batches(lane: dict, **context) -> dict:
        from collections import Counter

        from retention.db import engine_for
        from retention.delivery import preview_batch, send_lane
        from retention.settings import Settings
        from retention_airflow import smtp_config

        settings = Settings()
        engine = engine_for(settings.warehouse)
        run = _run(settings, signing=True)
        identity = run.identity
        until = _until(context)
        if _dry_run(context, settings):
            counts: Counter = Counter()
            for batch in lane["batches"]:
                counts.update(preview_batch(engine, batch["ids"], until=until, identity=identity))
            return dict(counts)
        counts = send_lane(
            engine,
            smtp_config(settings),
            lane,
            until=until,
            identity=identity,
            policy=run.policy,
        )
        return log_summary(context, counts, "outbox")

    @task(trigger_rule="none_failed")
    def summarise(swept: dict, results) -> dict:
        from retention.db import engine_for
        from retention.delivery import summarise as summary_of
        from retention.settings import Settings

        # One slice fetches every batch's counts; iterating would probe past the end (and log it).
        counts = list(results[:]) if results else []
        return log_summary(None, summary_of(engine_for(Settings().warehouse), swept, counts))

    swept = sweep()
    lanes = plan()
    swept >> lanes  # settle the dead senders' messages before deciding what is due
    summarise(swept, send_batches.expand(lane=lanes))
    mail_followups()


retention_delivery()
