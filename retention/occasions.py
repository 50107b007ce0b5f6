"""Detect the night's occasions: who gets written to, for what, on which local date.

Each occasion is a SQL model in ``sql/occasions/occ_<name>.sql`` returning
``customer_id, occasion, occasion_date, order_id``. Detection then applies the
people rules (consent, suppression) and records every candidate in ``occasions``
with its status: ``selected`` or ``skipped`` with the reason. A re-run of a night
replaces that night's rows and nothing else.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict

from sqlalchemy import Connection, Engine, select

from retention import schema
from retention.night import Night
from retention.sqlmodels import select_model
from retention.unsubscribe import email_hash

__all__ = ["OCCASION_MODELS", "detect"]

log = logging.getLogger(__name__)

#: Occasions with a detection model, in priority order (first wins when caps apply).
OCCASION_MODELS = ("thank_you",)


def _params(night: Night) -> dict:
    return {
        "night": night.date,
        "window_start": night.window_start_naive,
        "window_end": night.window_end_naive,
    }


def detect(warehouse: Engine, night: Night) -> dict[str, dict[str, int]]:
    """Find and record the night's occasions; returns selected counts by occasion and language."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with warehouse.begin() as conn:
        conn.execute(schema.occasions.delete().where(schema.occasions.c.night == night.date))
        for occasion in OCCASION_MODELS:
            candidates = select_model(conn, f"occasions/occ_{occasion}", _params(night))
            rows = _decide(conn, candidates, night)
            if rows:
                conn.execute(schema.occasions.insert(), rows)
            for row in rows:
                if row["status"] == "selected":
                    counts[occasion][row["language"]] += 1
            log.info(
                "occasion %s: %d candidates, %d selected", occasion, len(rows), sum(counts[occasion].values())
            )
    return {occasion: dict(by_language) for occasion, by_language in counts.items()}


def _decide(conn: Connection, candidates: list[dict], night: Night) -> list[dict]:
    """Attach language and status to each candidate: consent and suppression first."""
    if not candidates:
        return []
    customers = schema.stg_customers
    ids = [c["customer_id"] for c in candidates]
    people = {
        row.customer_id: row
        for row in conn.execute(
            select(
                customers.c.customer_id,
                customers.c.email,
                customers.c.language,
                customers.c.marketing_consent,
            ).where(customers.c.customer_id.in_(ids))
        )
    }
    suppressed = _suppressed(conn, [p.email for p in people.values()])
    rows = []
    for candidate in candidates:
        person = people[candidate["customer_id"]]
        status, reason = "selected", None
        if not person.marketing_consent:
            status, reason = "skipped", "no marketing consent"
        elif email_hash(person.email) in suppressed:
            status, reason = "skipped", "address is suppressed"
        details = {
            k: v for k, v in candidate.items() if k not in ("customer_id", "occasion", "occasion_date")
        }
        rows.append(
            {
                "customer_id": candidate["customer_id"],
                "occasion": candidate["occasion"],
                "occasion_date": night.date,
                "night": night.date,
                "language": person.language,
                "details": json.dumps(details, default=str, sort_keys=True),
                "status": status,
                "reason": reason,
            }
        )
    return rows


def _suppressed(conn: Connection, emails: list[str]) -> set[str]:
    hashes = [email_hash(e) for e in emails]
    table = schema.suppression
    return set(conn.execute(select(table.c.email_hash).where(table.c.email_hash.in_(hashes))).scalars())
