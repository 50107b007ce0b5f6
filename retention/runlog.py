"""Reading the run log: what a stage of a night recorded."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import Connection, select

from retention import schema

__all__ = ["stage_counts"]


def stage_counts(conn: Connection, night: dt.date, stage: str, *, first: bool = False) -> dict | None:
    """The counts of the latest (or ``first``) successful run of ``stage`` for ``night``; None if none ran."""
    log = schema.run_log
    order = log.c.run_log_id if first else log.c.run_log_id.desc()
    text = conn.execute(
        select(log.c.counts)
        .where(log.c.night == night, log.c.stage == stage, log.c.status == "ok")
        .order_by(order)
        .limit(1)
    ).scalar()
    return json.loads(text) if text else None
