"""The product rules' counts, kept between nights and changed only where customers changed.

Issue #15: rebuilding every pair from the whole history cost 19 of an ordinary night's 29.5 s at
100k customers, for the 1 % of customers who changed. The two product-level rule kinds are sums
of independent parts, so a night can update them by what changed:

* ``next_purchase`` (``sql/marts/product_rules_sequence.sql``) counts, per customer, the pairs of
  products whose first purchases came one after the other: the sum over customers of what each
  customer's rows in ``rule_first_purchases`` (first purchase time per product) contribute;
* ``accessory`` (``sql/marts/product_rules_basket.sql``) counts, per basket (placed order), the
  pairs of its kept products: the sum over baskets of their rows in ``rule_basket_items``.

Beside the pair counts (``rule_pair_counts``) the models need, per product, how many customers
or baskets hold it (``rule_item_counts``) and the total of customers or baskets (``rule_totals``).

A night (:func:`refresh`) takes the night's changed customers (``changed_customers``), reads their
rows as counted last time (the ``rule_*`` tables) and as they are now (staging), adds the second
and subtracts the first from every count, and keeps the new rows. That is exact for every change
the extract records (a new, returned or cancelled line changes its order's customer; a basket
moved to another customer is found by its order). An order moved to another customer in the
shop's database records only the new customer: the old one's first purchases keep it until the
next full rebuild (the weekly one, or ``--full-refresh``), as that customer's facts do.
Erasure (:func:`forget`) subtracts a person's rows at once.

The category rules (``sql/marts/product_rules_category.sql``) stay a full rebuild: a category
edit in the catalogue moves every purchase of its products at once.

Plain SQL that runs unchanged on SQLite and PostgreSQL (both know ``ON CONFLICT ... DO UPDATE``
and temporary tables). No library keeps SQL aggregates incrementally on both databases (a
materialised view in PostgreSQL is refreshed whole), so this is written here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Connection, Table, text

from retention import schema
from retention.db import empty_table, planner_settings

__all__ = ["COUNTED_KINDS", "forget", "rebuild", "refresh"]

log = logging.getLogger(__name__)

_KEPT_LINES = """
    from stg_orders as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    where orders.status = 'placed'
      and items.quantity > items.returned_quantity
"""


@dataclass(frozen=True)
class _Counted:
    """One rule kind's counts: what it counts from, and how two of its rows make a pair."""

    kind: str
    table: str  # the rows counted last time
    columns: str
    rows: str  # the same rows from staging; ``{scope}`` narrows them to some customers
    entity: str  # what the total counts: customers or baskets
    pair_on: str  # when rows ``a`` and ``b`` (of one customer or basket) make the pair a -> b
    old_rows: str  # the rows counted last time for the customers in tmp_rule_customers
    new_scope: str  # the rows from staging that replace them


SEQUENCE = _Counted(
    kind="next_purchase",
    table="rule_first_purchases",
    columns="customer_id, product_id, first_at",
    rows="select orders.customer_id, items.product_id, min(orders.ordered_at) as first_at"
    + _KEPT_LINES
    + "{scope} group by orders.customer_id, items.product_id",
    entity="customer_id",
    # a strictly later first purchase is another product: A <> B by construction
    pair_on="b.customer_id = a.customer_id and b.first_at > a.first_at",
    old_rows=(
        "select customer_id, product_id, first_at from rule_first_purchases"
        " where customer_id in (select customer_id from tmp_rule_customers)"
    ),
    new_scope="and orders.customer_id in (select customer_id from tmp_rule_customers)",
)

BASKET = _Counted(
    kind="accessory",
    table="rule_basket_items",
    columns="order_id, product_id, customer_id",
    rows="select distinct items.order_id, items.product_id, orders.customer_id" + _KEPT_LINES + "{scope}",
    entity="order_id",
    pair_on="b.order_id = a.order_id and b.product_id <> a.product_id",
    # also the baskets now of these customers that were counted under another one (moved orders);
    # two index lookups in a union (an OR of the two would scan the whole table)
    old_rows=(
        "select order_id, product_id, customer_id from rule_basket_items"
        " where customer_id in (select customer_id from tmp_rule_customers)"
        " union"
        " select counted.order_id, counted.product_id, counted.customer_id"
        " from stg_orders as orders"
        " inner join rule_basket_items as counted on counted.order_id = orders.order_id"
        " where orders.customer_id in (select customer_id from tmp_rule_customers)"
    ),
    # (the extract records an order's new customer, so a moved basket's new owner is among them)
    new_scope="and orders.customer_id in (select customer_id from tmp_rule_customers)",
)

COUNTED = (SEQUENCE, BASKET)
CATEGORY_KIND = "next_category"
#: The rule kinds whose models read the kept counts (their ``from_counts`` flag).
COUNTED_KINDS = (*(c.kind for c in COUNTED), CATEGORY_KIND)

_TEMPORARY = (
    "tmp_rule_customers",
    "tmp_rule_old",
    "tmp_rule_new",
    "tmp_rule_gone",
    "tmp_rule_added",
    "tmp_cat_customers",
    "tmp_cat_old",
    "tmp_cat_new",
    "tmp_cat_old_firsts",
    "tmp_cat_new_firsts",
    "tmp_rule_pairs",
)

# Products whose category is not the one counted last time: new, re-categorised or gone.
_RECATEGORISED = """
    select products.product_id from stg_products as products
    left join rule_product_categories as counted on counted.product_id = products.product_id
    where counted.product_id is null or counted.category <> products.category
    union
    select counted.product_id from rule_product_categories as counted
    left join stg_products as products on products.product_id = counted.product_id
    where products.product_id is null
"""


def _add(conn: Connection, table: str, keys: str, value: str, old: str, new: str) -> None:
    """Add ``new`` and subtract ``old`` (two selects of ``keys`` and ``n``) per key of ``table``;
    a key whose count reaches 0 is gone, as it would be after a rebuild."""
    conn.execute(
        text(
            f"insert into {table} ({keys}, {value})"
            f" select {keys}, sum(n) from ({old} union all {new}) as delta"
            f" group by {keys} having sum(n) <> 0"
            f" on conflict ({keys}) do update set {value} = {table}.{value} + excluded.{value}"
        )
    )
    conn.execute(text(f"delete from {table} where {value} = 0"))


def _add_total(conn: Connection, kind: str, entity: str, old: str, new: str) -> None:
    conn.execute(
        text(
            "update rule_totals set total = total"
            f" + (select count(distinct {entity}) from {new})"
            f" - (select count(distinct {entity}) from {old})"
            " where kind = :kind"
        ),
        {"kind": kind},
    )


def _drop_temporary(conn: Connection) -> None:
    for name in _TEMPORARY:
        conn.execute(text(f"drop table if exists {name}"))


def _serialise(conn: Connection) -> None:
    """One change of the counts at a time. Two runs adding the same night's delta at once would
    count it twice; on PostgreSQL the second waits here (until the first commits) and then reads
    the rows the first kept, so it finds nothing left to add. SQLite writes one at a time anyway
    (a second writer whose reads went stale fails instead of counting twice)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("lock table rule_totals in share row exclusive mode"))


def is_built(conn: Connection) -> bool:
    """True when every counted kind has its total: the counts were built and can be updated."""
    kinds = set(conn.execute(text("select kind from rule_totals")).scalars())
    return kinds >= set(COUNTED_KINDS)


def _load(conn: Connection, table: Table, columns: str, rows: str) -> None:
    """Replace every row of ``table`` with ``rows``: emptied, filled in the order of its primary
    key, its other indexes built afterwards in one sort each.

    Emptied without dead rows for the insert to wade through (only this module reads the counts,
    under :func:`_serialise`'s lock). Rows in key order append to the primary key's index, and an
    index built once is cheaper than one kept up to date row by row in random order: the 1.0M
    basket rows at 100k customers 5.0-5.4 s -> 2.0-2.4 s (issue 15).
    """
    empty_table(conn, table)
    later = list(table.indexes)
    for index in later:
        index.drop(conn)
    key = ", ".join(column.name for column in table.primary_key.columns)
    conn.execute(text(f"insert into {table.name} ({columns}) select {columns} from ({rows}) as loaded order by {key}"))
    for index in later:
        index.create(conn)


def rebuild(conn: Connection) -> dict[str, int]:
    """Count everything from staging again; return the rows kept per kind."""
    kept = {}
    _drop_temporary(conn)
    conn.execute(text("delete from rule_totals"))
    for counted in COUNTED:
        _load(conn, schema.metadata.tables[counted.table], counted.columns, counted.rows.format(scope=""))
        conn.execute(text(f"analyze {counted.table}"))  # fresh statistics for the self-join below
        kind = f"'{counted.kind}'"
        for table in ("rule_pair_counts", "rule_item_counts"):
            conn.execute(text(f"delete from {table} where kind = {kind}"))
        # Every holder's rows against each other. PostgreSQL chose a nested loop over the primary
        # key for the customers' first purchases, one index scan per row (834k at 100k customers),
        # where joining the whole table to itself at once serves: 14.8 -> 4.1 s (issue 15). Counted
        # into a temporary table first: PostgreSQL runs a CREATE TABLE AS in parallel workers,
        # never an INSERT ... SELECT (54M pairs at 1M customers: 71 -> 37 s on two cores).
        with planner_settings(conn, enable_nestloop="off"):
            conn.execute(
                text(
                    "create temporary table tmp_rule_pairs as"
                    " select a.product_id as antecedent_product_id, b.product_id as consequent_product_id,"
                    " count(*) as pairs"
                    f" from {counted.table} as a inner join {counted.table} as b on {counted.pair_on}"
                    " group by a.product_id, b.product_id"
                )
            )
        conn.execute(
            text(
                "insert into rule_pair_counts (kind, antecedent_product_id, consequent_product_id, pairs)"
                f" select {kind}, antecedent_product_id, consequent_product_id, pairs from tmp_rule_pairs"
            )
        )
        conn.execute(text("drop table tmp_rule_pairs"))
        conn.execute(
            text(
                "insert into rule_item_counts (kind, product_id, holders)"
                f" select {kind}, product_id, count(*) from {counted.table} group by product_id"
            )
        )
        conn.execute(
            text(
                "insert into rule_totals (kind, total)"
                f" select {kind}, count(distinct {counted.entity}) from {counted.table}"
            )
        )
        kept[counted.kind] = conn.execute(text(f"select count(*) from {counted.table}")).scalar_one()
    # The categories from the first purchases just counted, all of them "new".
    for table in ("rule_category_pairs", "rule_category_choices", "rule_category_buyers"):
        conn.execute(text(f"delete from {table}"))
    conn.execute(text("insert into rule_totals (kind, total) values (:kind, 0)"), {"kind": CATEGORY_KIND})
    _drop_temporary(conn)
    _category(conn, "rebuild")
    _drop_temporary(conn)
    _remember_catalogue(conn)
    kept[CATEGORY_KIND] = conn.execute(text("select count(*) from rule_category_pairs")).scalar_one()
    for table in ("rule_pair_counts", "rule_item_counts", "rule_category_pairs", "rule_category_choices"):
        conn.execute(text(f"analyze {table}"))
    return kept


def refresh(conn: Connection, night_date: object, *, full: bool = False) -> dict:
    """Bring the counts up to tonight's staging; return what was done (for the stage's counts).

    ``full`` (or counts never built) counts everything again; otherwise only the customers in
    ``changed_customers`` for ``night_date`` are counted again (for the category rules also the
    buyers of a product whose category changed). Runs in the caller's transaction, so a failed
    night leaves the counts as they were; a re-run finds nothing left to change.
    """
    _serialise(conn)
    if full or not is_built(conn):
        return {"mode": "full", "rows": rebuild(conn)}
    customers = "select customer_id from changed_customers where night = :night"
    changed = _apply(conn, customers, {"night": night_date}, recount=True)
    return {"mode": "incremental", "customers": changed}


def forget(conn: Connection, customer_ids: list[int]) -> None:
    """Take these customers' rows out of the counts (erasure: their staging rows go too)."""
    if not customer_ids:
        return
    _serialise(conn)
    if not is_built(conn):
        return
    values = " union all ".join(f"select {int(i)} as customer_id" for i in customer_ids)
    _apply(conn, values, {}, recount=False)


def _apply(conn: Connection, customers: str, params: dict, *, recount: bool) -> int:
    """Subtract the customers' rows as counted last time; with ``recount``, add them as they are
    in staging now and keep those. Returns how many customers were counted again."""
    _drop_temporary(conn)
    conn.execute(text(f"create temporary table tmp_rule_customers as {customers}"), params)
    conn.execute(text("analyze tmp_rule_customers"))  # the planner's guess for a fresh table is no count
    how_many = conn.execute(text("select count(*) from tmp_rule_customers")).scalar_one()
    # The categories first: their old rows are read from the first purchases as counted last time.
    category_customers = "select customer_id from tmp_rule_customers"
    if recount:
        category_customers += (
            f" union select customer_id from rule_first_purchases where product_id in ({_RECATEGORISED})"
        )
    conn.execute(text(f"create temporary table tmp_cat_customers as {category_customers}"))
    conn.execute(text("analyze tmp_cat_customers"))
    _category(conn, "recount" if recount else "forget")
    for counted in COUNTED:
        conn.execute(text(f"create temporary table tmp_rule_old as {counted.old_rows}"))
        new_rows = counted.rows.format(scope=counted.new_scope if recount else "and 1 = 0")
        conn.execute(text(f"create temporary table tmp_rule_new as {new_rows}"))
        _changed_only(conn, counted.columns, counted.entity)
        # Both tables hold a handful of rows per customer; the sums below touch only their pairs.
        kind = f"'{counted.kind}'"
        _add(
            conn,
            "rule_pair_counts",
            "kind, antecedent_product_id, consequent_product_id",
            "pairs",
            _pairs("tmp_rule_old", counted, -1),
            _pairs("tmp_rule_new", counted, 1),
        )
        _add(
            conn,
            "rule_item_counts",
            "kind, product_id",
            "holders",
            f"select {kind} as kind, product_id, -1 as n from tmp_rule_old",
            f"select {kind} as kind, product_id, 1 as n from tmp_rule_new",
        )
        _add_total(conn, counted.kind, counted.entity, "tmp_rule_old", "tmp_rule_new")
        _replace(conn, counted)
        _drop_differences(conn)
        conn.execute(text("drop table tmp_rule_old"))
        conn.execute(text("drop table tmp_rule_new"))
    if recount:
        _remember_catalogue(conn)
    _drop_temporary(conn)
    return how_many


def _changed_only(
    conn: Connection, columns: str, entity: str, old: str = "tmp_rule_old", new: str = "tmp_rule_new"
) -> None:
    """The rows that differ, once: ``tmp_rule_gone`` (``old`` except ``new``) and ``tmp_rule_added``
    (``new`` except ``old``); then leave in ``old`` and ``new`` only the customers (baskets) that
    have such a row.

    A customer or basket with the same rows before and after adds to every count exactly what it
    subtracts (its pairs, its products, itself in the total), and its kept rows stay as they are.
    Most of a night's changed customers bought nothing that changes their first purchases, and
    most of their baskets are old ones.
    """
    conn.execute(
        text(
            f"create temporary table tmp_rule_gone as select {columns} from {old} except select {columns} from {new}"
        )
    )
    conn.execute(
        text(
            f"create temporary table tmp_rule_added as select {columns} from {new} except select {columns} from {old}"
        )
    )
    changed = f"select {entity} from tmp_rule_gone union select {entity} from tmp_rule_added"
    for table in (old, new):
        conn.execute(text(f"delete from {table} where {entity} not in ({changed})"))


def _replace(conn: Connection, counted: _Counted) -> None:
    """The kept rows of the customers in scope become ``tmp_rule_new``; they were ``tmp_rule_old``,
    every row of the table for those customers and their orders (an order's rows were counted
    under one customer, so a moved order's rows are all there).

    Only the rows that differ (:func:`_changed_only`) are written: most of a changed customer's
    rows are as counted last time. At 1M customers a night's 13.6k changed customers hold 198k
    basket rows, 30k of them new; deleting and inserting all of them again took 4.0-4.2 s, the
    difference 0.46 s (issue 15). Deleted first: a row that moved to another customer keeps its key.
    """
    columns = counted.columns
    conn.execute(
        text(f"delete from {counted.table} where ({columns}) in (select {columns} from tmp_rule_gone)")
    )
    conn.execute(text(f"insert into {counted.table} ({columns}) select {columns} from tmp_rule_added"))


def _drop_differences(conn: Connection) -> None:
    conn.execute(text("drop table tmp_rule_gone"))
    conn.execute(text("drop table tmp_rule_added"))


def _pairs(source: str, counted: _Counted, sign: int) -> str:
    return (
        f"select '{counted.kind}' as kind, a.product_id as antecedent_product_id,"
        f" b.product_id as consequent_product_id, {sign} as n"
        f" from {source} as a inner join {source} as b on {counted.pair_on}"
    )


def _category(conn: Connection, how: str) -> None:
    """The category counts: subtract the first purchases as counted last time (``rule_first_purchases``
    with ``rule_product_categories``) and add them as staging has them now, for the customers in
    ``tmp_cat_customers``; ``how`` is ``recount``, ``forget`` (nothing added) or ``rebuild``
    (nothing subtracted, everyone added from the first purchases just counted).

    Per customer and category the first time bought in it; the pairs of categories first bought
    one after the other; and the products bought at that first time in the later category (what
    ``product_rules_category.sql`` calls the customers' first choices)."""
    mine = "where bought.customer_id in (select customer_id from tmp_cat_customers)"
    conn.execute(
        text(
            "create temporary table tmp_cat_old as"
            " select bought.customer_id, bought.product_id, bought.first_at, counted.category"
            " from rule_first_purchases as bought"
            " inner join rule_product_categories as counted on counted.product_id = bought.product_id"
            f" {'where 1 = 0' if how == 'rebuild' else mine}"
        )
    )
    source = {
        "rebuild": "select customer_id, product_id, first_at from rule_first_purchases",
        "recount": SEQUENCE.rows.format(
            scope="and orders.customer_id in (select customer_id from tmp_cat_customers)"
        ),
        "forget": SEQUENCE.rows.format(scope="and 1 = 0"),
    }[how]
    conn.execute(
        text(
            "create temporary table tmp_cat_new as"
            " select bought.customer_id, bought.product_id, bought.first_at, products.category"
            f" from ({source}) as bought"
            " inner join stg_products as products on products.product_id = bought.product_id"
        )
    )
    if how != "rebuild":  # (a rebuild has nothing old: everyone is new)
        _changed_only(
            conn, "customer_id, product_id, first_at, category", "customer_id", "tmp_cat_old", "tmp_cat_new"
        )
        _drop_differences(conn)
    for side in ("old", "new"):
        conn.execute(
            text(
                f"create temporary table tmp_cat_{side}_firsts as"
                f" select customer_id, category, min(first_at) as first_at from tmp_cat_{side}"
                " group by customer_id, category"
            )
        )
        conn.execute(text(f"analyze tmp_cat_{side}_firsts"))

    def pairs(side: str, sign: int) -> str:
        return (
            "select earlier.category as antecedent_category, later.category as consequent_category,"
            f" {sign} as n from tmp_cat_{side}_firsts as earlier"
            f" inner join tmp_cat_{side}_firsts as later"
            " on later.customer_id = earlier.customer_id and later.first_at > earlier.first_at"
        )

    def choices(side: str, sign: int) -> str:
        return (
            "select earlier.category as antecedent_category, later.category as consequent_category,"
            f" bought.product_id, {sign} as n from tmp_cat_{side}_firsts as earlier"
            f" inner join tmp_cat_{side}_firsts as later"
            " on later.customer_id = earlier.customer_id and later.first_at > earlier.first_at"
            f" inner join tmp_cat_{side} as bought"
            " on bought.customer_id = later.customer_id and bought.category = later.category"
            " and bought.first_at = later.first_at"
        )

    def buyers(side: str, sign: int) -> str:
        return f"select category, {sign} as n from tmp_cat_{side}_firsts"

    _add(
        conn,
        "rule_category_pairs",
        "antecedent_category, consequent_category",
        "pairs",
        pairs("old", -1),
        pairs("new", 1),
    )
    _add(
        conn,
        "rule_category_choices",
        "antecedent_category, consequent_category, product_id",
        "choosers",
        choices("old", -1),
        choices("new", 1),
    )
    _add(conn, "rule_category_buyers", "category", "buyers", buyers("old", -1), buyers("new", 1))
    _add_total(conn, CATEGORY_KIND, "customer_id", "tmp_cat_old_firsts", "tmp_cat_new_firsts")


def _remember_catalogue(conn: Connection) -> None:
    """Each product's category as counted tonight (a few thousand rows: replaced whole)."""
    conn.execute(text("delete from rule_product_categories"))
    conn.execute(
        text(
            "insert into rule_product_categories (product_id, category) select product_id, category from stg_products"
        )
    )
