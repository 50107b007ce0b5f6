"""Product rules and per-customer recommendations, set-based inside the warehouse.

Three kinds of rules are learnt from all customers' histories every night and replace
``product_rules`` as a whole (the two product-level kinds from pair counts that
:mod:`retention.rule_counts` updates by the night's changed customers only):

* ``next_purchase`` (``sql/marts/product_rules_sequence.sql``): customers who first
  bought A and later, in another order, first bought B;
* ``next_category`` (``sql/marts/product_rules_category.sql``): customers who first bought
  in category CA and later first bought in CB, as rules from every product of CA to the
  product of CB most chosen after CA (feeds next-purchase suggestions too);
* ``accessory`` (``sql/marts/product_rules_basket.sql``): from a main product to what goes
  with it: the catalogue's ``accessory_for`` pairs, and basket rules in that direction only.

``recommendations`` (``sql/marts/recommendations.sql``) then holds, per customer and
kind (``next_purchase``, ``accessory``), the ``top_n`` best products the customer does
not have yet, those following from their last order first, each with the rule's
antecedent as the reason and an English explanation sentence. They are recomputed for
the customers changed in the night, or for everyone in a full rebuild. Every figure
comes from SQL; no table is loaded into Python.

Measured on PostgreSQL with ``make bench SIZE=medium`` (100k customers, 1.06M order lines,
2 shared CPU cores): an ordinary night (about 1 % of the customers changed) 3.65 s, of which the
rules from the kept counts about 2.4 s (19.3 s when they were counted from the whole history);
the first night and a full rebuild about 75 s (they also write what the counts are counted from);
a full rebuild on the kept 100k warehouse 108 -> 60 s with the rule counts' rebuild of 2026-11-25,
of which scoring every customer's candidates 35 s (README, "Performance").
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from sqlalchemy import Connection, func, select, text

from retention import rule_counts, schema
from retention.db import planner_settings, refresh_statistics
from retention.night import Night
from retention.rule_counts import COUNTED_KINDS
from retention.sqlmodels import materialize

__all__ = ["KINDS", "RULE_KIND_FOR", "build_rules", "build_recommendations"]

log = logging.getLogger(__name__)

#: Rule kinds and the model that learns each, in rule-id order.
KINDS: dict[str, str] = {
    "next_purchase": "marts/product_rules_sequence",
    "accessory": "marts/product_rules_basket",
    "next_category": "marts/product_rules_category",
}

#: The recommendation (and occasion) kind each rule kind feeds.
RULE_KIND_FOR: dict[str, str] = {
    "next_purchase": "next_purchase",
    "next_category": "next_purchase",
    "accessory": "accessory",
}


def build_rules(
    conn: Connection,
    night: Night,
    *,
    min_pairs: int = 3,
    min_confidence: float = 0.05,
    cutoff: dt.datetime | None = None,
    from_counts: bool = False,
) -> dict[str, int]:
    """Replace all of ``product_rules`` with tonight's rules; return the count per kind.

    The first kind's materialisation deletes the whole table, so ids never collide with
    stale rows; each later kind numbers its rules after the ones already written. With
    ``cutoff`` (naive UTC) only orders before it are learnt from (offline evaluation). With
    ``from_counts`` the product-level kinds read the counts that :mod:`retention.rule_counts`
    keeps (call its ``refresh`` first) instead of counting the whole history.
    """
    if from_counts and cutoff is not None:
        raise ValueError("the kept counts are tonight's: a cutoff needs counting from the history")
    rules = schema.product_rules
    counts: dict[str, int] = {}
    offset = 0
    for position, (kind, model) in enumerate(KINDS.items()):
        started = time.monotonic()
        params = {
            "night": night.date,
            "min_pairs": int(min_pairs),
            "min_confidence": float(min_confidence),
            "rule_id_offset": offset,
            "cutoff": cutoff,
        }
        scope = None if position == 0 else rules.c.kind == kind
        counts[kind] = materialize(
            conn,
            model,
            rules,
            params,
            scope,
            before_cutoff=cutoff is not None,
            from_counts=from_counts and kind in COUNTED_KINDS,
        )
        offset += counts[kind]
        log.info("rules %s: %d in %.1f s", kind, counts[kind], time.monotonic() - started)
    return counts


def build_recommendations(
    conn: Connection,
    night: Night,
    *,
    full_rebuild: bool = False,
    min_pairs: int = 3,
    min_confidence: float = 0.05,
    top_n: int = 3,
) -> dict:
    """Rebuild the product rules, then the recommendations of the night's changed customers.

    With ``full_rebuild`` every customer's recommendations are recomputed; otherwise only
    those listed in ``changed_customers`` for the night (their rows are replaced, also
    when they no longer get any). Unchanged customers keep the rows of the night that
    last computed them, i.e. scores from that night's rules, until they change or a
    full rebuild runs. Runs in the caller's transaction.

    Returns counts: ``rules`` per kind, ``customers`` and ``rows`` written (per kind in
    ``rows_by_kind``), and ``mode``.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, not {top_n}")
    # The pair counts first: tonight's changed customers only, or everyone with a full rebuild.
    # Each step's seconds go to the task log (the monotonic clock measures work, decides nothing).
    started = time.monotonic()
    counted = rule_counts.refresh(conn, night.date, full=full_rebuild)
    log.info("rule counts (%s) in %.1f s: %s", counted["mode"], time.monotonic() - started, counted)
    rules = build_rules(conn, night, min_pairs=min_pairs, min_confidence=min_confidence, from_counts=True)
    # The rules were just replaced; fresh statistics keep the planner from taking the new
    # table for empty and nesting loops over the candidates (valid SQL in both databases).
    conn.execute(text("analyze product_rules"))
    started = time.monotonic()

    recs = schema.recommendations
    changed = select(schema.changed_customers.c.customer_id).where(
        schema.changed_customers.c.night == night.date
    )
    scope = None if full_rebuild else recs.c.customer_id.in_(changed)
    # The changed customers' candidates (at 1M customers, 2.65M rows for 13.6k customers, where
    # PostgreSQL expects 724k) minus what each owns: PostgreSQL sorted all of them twice, once to
    # disk, to merge the two anti-joins, where hashing the owned products (163k rows) serves:
    # 8.15 -> 5.9 s (issue 15, same warehouse). A full rebuild keeps PostgreSQL's own plan.
    with planner_settings(conn, **({} if full_rebuild else {"enable_mergejoin": "off"})):
        rows = materialize(
            conn,
            "marts/recommendations",
            recs,
            {"night": night.date, "top_n": int(top_n)},
            scope,
            incremental=not full_rebuild,
        )
    refresh_statistics(conn, recs.name, rows)  # the next-purchase occasion reads them next

    log.info(
        "recommendations (%s) in %.1f s",
        "full" if full_rebuild else "incremental",
        time.monotonic() - started,
    )
    # Count what was just written (the scope's rows) rather than trusting driver rowcounts.
    written = select(recs.c.kind, func.count()).group_by(recs.c.kind)
    if scope is not None:
        written = written.where(scope)
    by_kind = {kind: int(count) for kind, count in conn.execute(written)}
    customers_query = select(func.count(func.distinct(recs.c.customer_id)))
    if scope is not None:
        customers_query = customers_query.where(scope)
    return {
        "rules": rules,
        "customers": int(conn.execute(customers_query).scalar_one()),
        "rows": rows,
        "rows_by_kind": by_kind,
        "mode": "full" if full_rebuild else "incremental",
    }
