"""Offline evaluation of the suggestions: ``retention evaluate-suggestions`` (issue #12).

Train on the history before a cut-off, suggest the top 3 products for every customer who
buys something new after it, and measure against what they actually bought in the
following ``horizon_days``:

* hit rate@3: the share of those customers with at least one of their 3 suggestions
  among the products they bought (products they did not have before the cut-off);
* precision@3: the mean share of the 3 suggestions that were bought (a customer with
  fewer than 3 suggestions still counts 3 slots).

Next to the engine (the ``next_purchase`` recommendations: product and category
sequences) two baselines are measured in the same run, on the same customers, also
skipping what each customer has: the most popular products (most buyers in the 90 days
before the cut-off), and the most popular products of the customer's last category (the
category of the largest line of their last order before the cut-off).

The engine runs its own SQL models (rules and recommendations, restricted to orders
before the cut-off) inside a transaction that is rolled back: the warehouse's rules and
recommendations are left as they were. Evaluated customers and their purchases are read
per customer into Python (a few numbers each); popularity is counted in SQL.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from sqlalchemy import Connection, Engine, text

from retention import schema
from retention.night import night_for_date
from retention.recommend import build_rules
from retention.sqlmodels import materialize

__all__ = ["Measure", "evaluate_suggestions", "default_cutoff"]

TOP = 3
POPULAR_WINDOW_DAYS = 90


@dataclass(frozen=True)
class Measure:
    method: str
    customers: int
    hits: int
    hit_rate: float
    precision: float


def default_cutoff(conn: Connection, horizon_days: int = 90) -> dt.date:
    """``horizon_days`` before the day of the last placed order in the warehouse."""
    last = conn.execute(text("select max(ordered_at) from stg_orders where status = 'placed'")).scalar()
    if last is None:
        raise ValueError("the warehouse has no placed orders to evaluate on")
    if isinstance(last, str):
        last = dt.datetime.fromisoformat(last)
    return last.date() - dt.timedelta(days=horizon_days)


def _ts(conn: Connection, moment: dt.datetime) -> object:
    # SQLite compares the stored text; bind it the way SQLAlchemy stores datetimes there
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if conn.dialect.name == "sqlite" else moment


def _pairs(conn: Connection, sql: str, params: dict) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for customer_id, product_id in conn.execute(text(sql), params):
        out.setdefault(int(customer_id), set()).add(int(product_id))
    return out


_BOUGHT = """
    select distinct orders.customer_id, items.product_id
    from stg_orders as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    where orders.status = 'placed' and items.quantity > items.returned_quantity
      and orders.ordered_at >= :start and orders.ordered_at < :end
"""

_OWNED = """
    select distinct orders.customer_id, items.product_id
    from stg_orders as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    where orders.status = 'placed' and orders.ordered_at < :cutoff
"""

_POPULAR = """
    select items.product_id, products.category, count(distinct orders.customer_id) as buyers
    from stg_orders as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    inner join stg_products as products on products.product_id = items.product_id
    where orders.status = 'placed' and items.quantity > items.returned_quantity
      and orders.ordered_at >= :start and orders.ordered_at < :cutoff
    group by items.product_id, products.category
    order by buyers desc, items.product_id
"""

_LAST_CATEGORY = """
    with last_orders as (
        select customer_id, max(ordered_at) as last_at
        from stg_orders
        where status = 'placed' and ordered_at < :cutoff
        group by customer_id
    ),
    lines as (
        select
            orders.customer_id,
            products.category,
            row_number() over (
                partition by orders.customer_id
                order by items.quantity * items.unit_price desc, items.product_id
            ) as position
        from stg_orders as orders
        inner join last_orders
            on last_orders.customer_id = orders.customer_id and last_orders.last_at = orders.ordered_at
        inner join stg_order_items as items on items.order_id = orders.order_id
        inner join stg_products as products on products.product_id = items.product_id
        where orders.status = 'placed'
    )
    select customer_id, category from lines where position = 1
"""


def _top(ranked: list[int], owned: set[int]) -> list[int]:
    return [p for p in ranked if p not in owned][:TOP]


def _measure(method: str, suggestions: dict[int, list[int]], targets: dict[int, set[int]]) -> Measure:
    hits = sum(1 for c, bought in targets.items() if bought & set(suggestions.get(c, [])))
    right = sum(len(bought & set(suggestions.get(c, []))) for c, bought in targets.items())
    n = len(targets)
    return Measure(
        method, n, hits, round(hits / n, 4) if n else 0.0, round(right / (TOP * n), 4) if n else 0.0
    )


def evaluate_suggestions(
    engine: Engine,
    *,
    cutoff: dt.date | None = None,
    horizon_days: int = 90,
    time_zone: str = "UTC",
    min_pairs: int = 3,
    min_confidence: float = 0.05,
) -> dict:
    """Hit rate@3 and precision@3 of the engine and both baselines; see the module docstring."""
    with engine.connect() as conn:
        cutoff = cutoff or default_cutoff(conn, horizon_days)
        start = dt.datetime.combine(cutoff, dt.time())
        end = start + dt.timedelta(days=horizon_days)
        bought_after = _pairs(conn, _BOUGHT, {"start": _ts(conn, start), "end": _ts(conn, end)})
        owned = _pairs(conn, _OWNED, {"cutoff": _ts(conn, start)})
        # customers with a history before the cut-off who then bought something new
        targets = {
            c: products - owned[c]
            for c, products in bought_after.items()
            if c in owned and products - owned[c]
        }
        popular_rows = conn.execute(
            text(_POPULAR),
            {"start": _ts(conn, start - dt.timedelta(days=POPULAR_WINDOW_DAYS)), "cutoff": _ts(conn, start)},
        ).all()
        last_category = dict(conn.execute(text(_LAST_CATEGORY), {"cutoff": _ts(conn, start)}).all())
        conn.rollback()  # end the reads' implicit transaction; the engine runs in its own
        engine_recs = _engine_suggestions(conn, start, time_zone, min_pairs, min_confidence)

    popular = [int(row.product_id) for row in popular_rows]
    by_category: dict[str, list[int]] = {}
    for row in popular_rows:
        by_category.setdefault(row.category, []).append(int(row.product_id))
    measures = [
        _measure("engine", {c: engine_recs.get(c, []) for c in targets}, targets),
        _measure("popular", {c: _top(popular, owned[c]) for c in targets}, targets),
        _measure(
            "popular_in_last_category",
            {c: _top(by_category.get(last_category.get(c), []), owned[c]) for c in targets},
            targets,
        ),
    ]
    return {
        "cutoff": cutoff.isoformat(),
        "horizon_days": horizon_days,
        "top": TOP,
        "customers": len(targets),
        "methods": {m.method: asdict(m) for m in measures},
    }


def _engine_suggestions(
    conn: Connection, start: dt.datetime, time_zone: str, min_pairs: int, min_confidence: float
) -> dict[int, list[int]]:
    """The next_purchase top 3 per customer, learnt before ``start``; nothing is kept."""
    night = night_for_date(start.date(), time_zone)
    recs = schema.recommendations
    transaction = conn.begin()
    try:
        build_rules(conn, night, min_pairs=min_pairs, min_confidence=min_confidence, cutoff=start)
        materialize(
            conn,
            "marts/recommendations",
            recs,
            {"night": night.date, "top_n": TOP, "cutoff": _ts(conn, start)},
            None,
            incremental=False,
            before_cutoff=True,
        )
        rows = conn.execute(
            text(
                "select customer_id, product_id from recommendations"
                " where kind = 'next_purchase' order by customer_id, rank"
            )
        ).all()
    finally:
        transaction.rollback()
    out: dict[int, list[int]] = {}
    for customer_id, product_id in rows:
        out.setdefault(int(customer_id), []).append(int(product_id))
    return out


def format_table(result: dict) -> str:
    """The result as a small table for people."""
    lines = [
        f"cut-off {result['cutoff']}, next {result['horizon_days']} days, "
        f"{result['customers']:,} customers who bought something new",
        f"{'method':<26} {'hit rate@3':>10} {'precision@3':>12} {'hits':>7}",
    ]
    for m in result["methods"].values():
        lines.append(f"{m['method']:<26} {m['hit_rate']:>10.1%} {m['precision']:>12.1%} {m['hits']:>7,}")
    return "\n".join(lines)
