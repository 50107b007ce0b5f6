"""Airflow-specific glue for the retention DAGs: Assets, the night of a run, connections.

Airflow puts its plugins folder on ``sys.path`` in every process it starts, so the
DAG files import this module by name. The ``retention`` package itself never
imports Airflow; everything that needs Airflow's context or connections is here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseHook

# The domain is imported inside the functions: DAG files import this module while
# parsing, and parsing must stay fast.
if TYPE_CHECKING:
    from retention.mailer import SmtpConfig
    from retention.night import Night
    from retention.settings import Settings

__all__ = ["ASSETS", "night_of", "smtp_config", "unsubscribe_secret", "UNSUBSCRIBE_CONN_ID"]

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

UNSUBSCRIBE_CONN_ID = "retention_unsubscribe"


def night_of(context: Any, settings: Settings) -> Night:
    """The night a DAG run stands for (see ``retention.night`` for the rules)."""
    from retention.night import night_from_run

    params = context.get("params") or {}
    dag_run = context.get("dag_run")
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
    )


def unsubscribe_secret() -> bytes:
    """The signing secret: the environment first, else the password of ``retention_unsubscribe``."""
    from retention.unsubscribe import ENV_SECRET

    if os.environ.get(ENV_SECRET):
        return os.environ[ENV_SECRET].encode()
    conn = BaseHook.get_connection(UNSUBSCRIBE_CONN_ID)
    if not conn.password:
        raise RuntimeError(
            f"Airflow connection {UNSUBSCRIBE_CONN_ID!r} has no password to sign unsubscribe links"
        )
    return conn.password.encode()
