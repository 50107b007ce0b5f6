"""Airflow-specific glue for the retention DAGs: Assets, the night of a run, connections,
failures that no retry can mend, and the alert mail to data engineering.

Airflow puts its plugins folder on ``sys.path`` in every process it starts, so the
DAG files import this module by name. The ``retention`` package itself never
imports Airflow; everything that needs Airflow's context or connections is here.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseHook, CronTriggerTimetable
from airflow.sdk.exceptions import AirflowFailException

# The domain is imported inside the functions: DAG files import this module while
# parsing, and parsing must stay fast.
if TYPE_CHECKING:
    from retention.mailer import SmtpConfig
    from retention.night import Night
    from retention.settings import Settings

__all__ = [
    "ASSETS",
    "SOURCE",
    "UNSUBSCRIBE_CONN_ID",
    "alert_on_failure",
    "fail_without_retry",
    "night_of",
    "schedule",
    "seconds",
    "smtp_config",
    "summarise",
    "task_defaults",
    "unsubscribe_secret",
]

log = logging.getLogger(__name__)

#: Lineage shown in the Airflow UI: each warehouse layer the nightly run writes.
ASSETS = {
    "staging": Asset("warehouse://retention/staging"),
    "quarantine": Asset("warehouse://retention/quarantine"),
    "customer_facts": Asset("warehouse://retention/customer_facts"),
    "segments": Asset("warehouse://retention/segment_snapshots"),
    "recommendations": Asset("warehouse://retention/recommendations"),
    "occasions": Asset("warehouse://retention/occasions"),
    "outbox": Asset("warehouse://retention/outbox"),
}

#: The shop's own database, read by the extract (lineage starts here).
SOURCE = Asset("shop://retention/source")

UNSUBSCRIBE_CONN_ID = "retention_unsubscribe"


def _compact(value: Any, depth: int = 0) -> Any:
    """Numbers, short texts and small dicts of them: what an asset event's extra can carry."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return value[:200]
    if isinstance(value, dict) and depth < 2:
        return {str(k): _compact(v, depth + 1) for k, v in list(value.items())[:50]}
    return None


def task_defaults(*, retries: int, retry_delay: dt.timedelta, execution_timeout: dt.timedelta) -> dict:
    """Every retention DAG's ``default_args``: owned by data engineering, alerting on final failure."""
    return {
        "owner": "data-eng",
        "retries": retries,
        "retry_delay": retry_delay,
        "execution_timeout": execution_timeout,
        "on_failure_callback": alert_on_failure,
    }


def summarise(context: Any, counts: dict | None, *written: str) -> dict:
    """Log a task's summary (also its XCom, as the return value) and put its counts on the
    asset events of what it ``written`` (ASSETS keys), so that lineage carries row counts."""
    counts = counts or {}
    extra = {k: v for k, v in ((k, _compact(v)) for k, v in counts.items()) if v is not None}
    log.info("summary: %s", json.dumps(extra, sort_keys=True, default=str))
    events = context.get("outlet_events") if context else None
    if events is not None:
        for name in written:
            events[ASSETS[name]].extra = extra
    return counts


#: Values of a schedule setting that mean "no schedule: runs are triggered by hand or the API".
MANUAL = ("", "none", "manual")


def schedule(variable: str, default: str, time_zone: str) -> CronTriggerTimetable | None:
    """The cron schedule in environment ``variable`` (or ``default``), in ``time_zone``; None if manual.

    Read from the environment at parse time (the DAG files stay cheap to parse): a deployment
    that triggers the nights from elsewhere, or a test that must see only its own runs, sets
    it to ``none``.
    """
    value = os.environ.get(variable, default).strip()
    if value.lower() in MANUAL:
        return None
    return CronTriggerTimetable(value, timezone=time_zone)


def seconds(variable: str, default: int) -> dt.timedelta:
    """A whole number of seconds from the environment, with the variable named if it is not one."""
    text = os.environ.get(variable, str(default)).strip()
    if not text.isdigit():
        raise ValueError(f"{variable}={text!r} is not a whole number of seconds")
    return dt.timedelta(seconds=int(text))


def night_of(context: Any, settings: Settings) -> Night:
    """The night a DAG run stands for (see ``retention.night`` for the rules).

    A ``night`` param after the run's own night fails the task at once, without retries
    (a retry cannot make the future arrive sooner).
    """
    from retention.night import FutureNight, night_from_run

    params = context.get("params") or {}
    dag_run = context.get("dag_run")
    with fail_without_retry(FutureNight):
        return night_from_run(
            settings.time_zone,
            data_interval_start=context.get("data_interval_start"),
            data_interval_end=context.get("data_interval_end"),
            logical_date=context.get("logical_date"),
            run_after=getattr(dag_run, "run_after", None),
            night_param=params.get("night"),
        )


def smtp_config(settings: Settings) -> SmtpConfig:
    """The SMTP server from the Airflow connection ``settings.smtp_conn_id`` (``smtp_default``)."""
    from retention.mailer import SmtpConfig

    conn = BaseHook.get_connection(settings.smtp_conn_id)
    return SmtpConfig.from_fields(
        conn.host or "127.0.0.1",
        conn.port,
        conn.login,
        conn.password,
        conn.extra_dejson,
        settings.smtp_timeout,
        source=f"Airflow connection {settings.smtp_conn_id!r}",
    )


def unsubscribe_secret() -> bytes:
    """The signing secret: the environment first, else the password of ``retention_unsubscribe``.

    Refused (:class:`retention.unsubscribe.WeakSecret`, naming the variable or the connection)
    when missing or shorter than ``MIN_SECRET_BYTES``.
    """
    from retention.unsubscribe import ENV_SECRET, WeakSecret, check_secret

    if os.environ.get(ENV_SECRET):
        return check_secret(os.environ[ENV_SECRET].encode(), ENV_SECRET)
    where = f"the password of Airflow connection {UNSUBSCRIBE_CONN_ID!r}"
    try:
        conn = BaseHook.get_connection(UNSUBSCRIBE_CONN_ID)
    except Exception as exc:  # the SDK raises its own "not found" error; name what is missing
        raise WeakSecret(
            f"no unsubscribe signing secret: {ENV_SECRET} is not set and Airflow connection "
            f"{UNSUBSCRIBE_CONN_ID!r} cannot be read ({type(exc).__name__}: {exc})"
        ) from exc
    return check_secret(conn.password.encode() if conn.password else None, where)


@contextmanager
def fail_without_retry(*errors: type[BaseException]) -> Iterator[None]:
    """Turn ``errors`` into Airflow's non-retryable failure (``AirflowFailException``).

    For failures that a retry cannot mend (the quality gate, a missing or weak signing
    secret): retrying them only delays the alert by the retry delays. Anything else is
    left alone and retried as usual (a dropped database connection, a timeout).
    """
    try:
        yield
    except errors as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def _alert_night(context: Any) -> str:
    """The night a failed run stands for, as text; never raises (an alert must go out)."""
    try:
        from retention.settings import Settings

        return str(night_of(context, Settings()))
    except Exception as exc:  # a run without a usable date still gets its alert
        return f"unknown ({type(exc).__name__}: {exc})"


def _alert_text(context: Any) -> tuple[str, str]:
    """Subject and body of the alert for a failed task: DAG, task, night, try and the error."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    map_index = getattr(ti, "map_index", -1)
    task = task_id if map_index in (None, -1) else f"{task_id}[{map_index}]"
    try_number = getattr(ti, "try_number", "?")
    night = _alert_night(context)
    error = context.get("exception")
    reason = f"{type(error).__name__}: {error}" if error is not None else "(no exception recorded)"
    # One line: a header may not contain CR or LF, whatever the night's text holds.
    subject = " ".join(f"[retention] {dag_id}.{task} failed, night {night}, try {try_number}".split())
    body = "\n".join(
        [
            f"DAG:    {dag_id}",
            f"Task:   {task}",
            f"Night:  {night}",
            f"Try:    {try_number}",
            f"Run:    {context.get('run_id', '?')}",
            f"Error:  {reason}",
            "",
            "No further retries: the task has failed for good. See the task log in Airflow;",
            "for a quality-gate failure, `retention quarantine` lists the rows held back.",
        ]
    )
    return subject, body


def alert_on_failure(context: Any) -> None:
    """``on_failure_callback``: mail ``RETENTION_ALERT_EMAIL`` that a task failed for good.

    Sent through the same Airflow SMTP connection as the messages (``smtp_default``). With
    no address configured it only logs. It never raises: a broken alert must not hide the
    failure it reports (Airflow would only log it anyway).
    """
    subject, body = _alert_text(context)
    try:
        from retention.settings import Settings

        settings = Settings()
    except Exception:
        log.exception("%s; no alert mail: the settings cannot be read", subject)
        return
    if not settings.alert_email:
        log.error("%s; no alert mail: RETENTION_ALERT_EMAIL is not set\n%s", subject, body)
        return
    try:
        reply = _send_alert(settings, subject, body)
    except Exception:
        log.exception("%s; the alert mail to %s could not be sent", subject, settings.alert_email)
        return
    if reply.accepted:
        log.info("alert mailed to %s: %s", settings.alert_email, subject)
    else:
        log.error("%s; the SMTP server refused the alert to %s: %s", subject, settings.alert_email, reply)


def _send_alert(settings: Settings, subject: str, body: str) -> Any:
    """One plain-text message through ``smtp_default``; returns the server's reply."""
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    from retention.mailer import MAIL_POLICY, SmtpSession

    msg = EmailMessage(policy=MAIL_POLICY)
    msg["From"] = settings.sender
    msg["To"] = settings.alert_email
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="retention.alert")
    msg["X-Retention-Alert"] = "task-failed"
    msg.set_content(body)
    with SmtpSession(smtp_config(settings)) as session:
        return session.send(msg)
