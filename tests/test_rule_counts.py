"""Issue #15: the product rules' counts, kept between nights and changed by the changed customers only.

The oracle counts in Python, from the staging rows as they stand after each night, what the
rules count in SQL (``sql/marts/product_rules_sequence.sql``, ``product_rules_basket.sql``):
per customer the first purchase of each product and the pairs of later first purchases; per
basket (placed order with a kept line) its products and their pairs. The counts kept by
``retention.rule_counts`` must equal it after every night of a random shop's week (new
customers and orders, returns, cancellations, re-runs), after an erasure, and the rules read
from them must equal the rules counted from the whole history.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections import Counter, defaultdict

import pytest
from sqlalchemy import select, text, update

from retention import erasure, rule_counts, schema, source
from retention.night import Night, night_for_date
from retention.pipeline import stage_extract, stage_facts, stage_migrate, warehouse_engine
from retention.recommend import build_recommendations, build_rules
from tests.celery_topology import poll
from tests.conftest import shop_settings
from tests.shop import Shop

START = dt.date(2026, 3, 2)
PRODUCTS = range(1, 9)
CATEGORIES = ("garden", "office", "bikes", "kitchen")


def _stage(settings, day: dt.date, run_id: str) -> Night:
    night = night_for_date(day.isoformat(), settings.time_zone)
    stage_migrate(settings)
    stage_extract(settings, night, run_id)
    stage_facts(settings, night, run_id)
    return night


def _history(conn) -> tuple[dict[int, dict[int, dt.datetime]], dict[int, set[int]]]:
    """Per customer the first purchase time of each product; per basket its kept products."""
    orders = {o.order_id: o for o in conn.execute(select(schema.stg_orders))}
    first: dict[int, dict[int, dt.datetime]] = defaultdict(dict)
    baskets: dict[int, set[int]] = defaultdict(set)
    for line in conn.execute(select(schema.stg_order_items)):
        order = orders.get(line.order_id)
        if order is None or order.status != "placed" or line.quantity <= line.returned_quantity:
            continue
        mine = first[order.customer_id]
        mine[line.product_id] = min(order.ordered_at, mine.get(line.product_id, order.ordered_at))
        baskets[line.order_id].add(line.product_id)
    return first, baskets


def _oracle(conn) -> dict:
    """Every count, from the staging rows, in Python."""
    first, baskets = _history(conn)
    pairs: Counter = Counter()
    items: Counter = Counter()
    for products in first.values():
        items.update(("next_purchase", p) for p in products)
        pairs.update(("next_purchase", a, b) for a in products for b in products if products[b] > products[a])
    for products in baskets.values():
        items.update(("accessory", p) for p in products)
        pairs.update(("accessory", a, b) for a in products for b in products - {a})
    return {
        "pairs": dict(pairs),
        "items": dict(items),
        "totals": {"next_purchase": len(first), "accessory": len(baskets), "next_category": 0},
        **_category_oracle(conn, first),
    }


def _category_oracle(conn, first: dict[int, dict[int, dt.datetime]]) -> dict:
    """Per customer the first time in each category (products missing from the catalogue left
    out), the category pairs, the products bought at the first time in the later category."""
    category = dict(
        conn.execute(select(schema.stg_products.c.product_id, schema.stg_products.c.category)).all()
    )
    pairs: Counter = Counter()
    choices: Counter = Counter()
    buyers: Counter = Counter()
    customers = 0
    for products in first.values():
        firsts: dict[str, dt.datetime] = {}
        for product, at in products.items():
            if product in category:
                firsts[category[product]] = min(at, firsts.get(category[product], at))
        customers += bool(firsts)
        buyers.update(firsts.keys())
        for a, at_a in firsts.items():
            for b, at_b in firsts.items():
                if at_b > at_a:
                    pairs[a, b] += 1
                    chosen = (p for p, at in products.items() if category.get(p) == b and at == at_b)
                    choices.update((a, b, p) for p in chosen)
    return {
        "category_pairs": dict(pairs),
        "choices": dict(choices),
        "buyers": dict(buyers),
        "customers": customers,
    }


def _kept(conn) -> dict:
    return {
        "pairs": {
            (k, a, b): n
            for k, a, b, n in conn.execute(
                text("select kind, antecedent_product_id, consequent_product_id, pairs from rule_pair_counts")
            )
        },
        "items": {
            (k, p): n
            for k, p, n in conn.execute(text("select kind, product_id, holders from rule_item_counts"))
        },
        "totals": {
            **dict(conn.execute(text("select kind, total from rule_totals")).all()),
            "next_category": 0,
        },
        "category_pairs": {
            (a, b): n
            for a, b, n in conn.execute(
                text("select antecedent_category, consequent_category, pairs from rule_category_pairs")
            )
        },
        "choices": {
            (a, b, p): n
            for a, b, p, n in conn.execute(
                text(
                    "select antecedent_category, consequent_category, product_id, choosers from rule_category_choices"
                )
            )
        },
        "buyers": dict(conn.execute(text("select category, buyers from rule_category_buyers")).all()),
        "customers": conn.execute(
            text("select total from rule_totals where kind = 'next_category'")
        ).scalar(),
    }


def _kept_rows(conn, *, from_staging: bool = False) -> dict[str, list[tuple]]:
    """What the counts were counted from (first purchases, basket items), as kept or as staging
    has them now: the same after every night (this shop never moves an order to another customer)."""
    return {
        counted.table: sorted(
            tuple(row)
            for row in conn.execute(
                text(counted.rows.format(scope="") if from_staging else f"select {counted.columns} from {counted.table}")
            )
        )
        for counted in rule_counts.COUNTED
    }


def _rules(conn) -> list[tuple]:
    rules = schema.product_rules
    return [tuple(r) for r in conn.execute(select(rules).order_by(rules.c.rule_id))]


def _rules_from_history(conn, night: Night) -> list[tuple]:
    """The rules counted from the whole history, in a transaction that is rolled back."""
    nested = conn.begin_nested()
    build_rules(conn, night, min_pairs=1, min_confidence=0.0)
    rules = _rules(conn)
    nested.rollback()
    return rules


class _RandomShop:
    """A shop that changes a little every day: new customers, orders, returns, cancellations."""

    def __init__(self, settings, seed: int) -> None:
        self.random = random.Random(seed)
        self.shop = Shop(settings.source)
        self.category = {p: CATEGORIES[p % 3] for p in PRODUCTS}
        for p in PRODUCTS:
            # falling prices, and product 8 the catalogue accessory of product 7
            self.shop.product(
                p,
                price=f"{900 - 100 * p}.00",
                accessory_for=7 if p == 8 else None,
                category=self.category[p],
            )
        self.customers: list[int] = []
        self.orders: list[int] = []
        self.lines: list[int] = []

    def day(self, day: dt.date, new_customers: int, new_orders: int) -> None:
        """Changes stamped inside ``day``'s window (Berlin's previous day, 09:00-18:00 UTC)."""
        r = self.random
        window = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(9))

        def at() -> dt.datetime:
            return window + dt.timedelta(minutes=r.randrange(540))

        for _ in range(new_customers):
            cid = len(self.customers) + 1
            self.shop.customer(cid, updated_at=window)
            self.customers.append(cid)
        for _ in range(new_orders):
            oid = len(self.orders) + 1
            when = at()
            # Some orders back-dated (late arrivals): a first purchase can move earlier.
            ordered = when - dt.timedelta(days=r.choice([0, 0, 0, 3, 40]))
            self.shop.order(oid, r.choice(self.customers), ordered, updated_at=when)
            self.orders.append(oid)
            for product in r.sample(list(PRODUCTS), r.randint(1, 3)):
                lid = len(self.lines) + 1
                self.shop.item(lid, oid, product, quantity=r.randint(1, 2), updated_at=when)
                self.lines.append(lid)
        with self.shop.engine.begin() as conn:
            # Every day the catalogue moves a product to another category.
            moved = r.choice(list(PRODUCTS))
            conn.execute(
                update(source.products)
                .where(source.products.c.product_id == moved)
                .values(
                    category=r.choice([c for c in CATEGORIES if c != self.category[moved]]), updated_at=at()
                )
            )
            self.category[moved] = conn.execute(
                select(source.products.c.category).where(source.products.c.product_id == moved)
            ).scalar_one()
            for oid in r.sample(self.orders, min(2, len(self.orders))):
                status = r.choice(["cancelled", "placed"])
                conn.execute(
                    update(source.orders)
                    .where(source.orders.c.order_id == oid)
                    .values(status=status, updated_at=at())
                )
            for lid in r.sample(self.lines, min(3, len(self.lines))):
                line = source.order_items
                quantity = conn.execute(
                    select(line.c.quantity).where(line.c.order_item_id == lid)
                ).scalar_one()
                conn.execute(
                    update(line)
                    .where(line.c.order_item_id == lid)
                    .values(returned_quantity=r.randint(0, quantity), updated_at=at())
                )


def _night(settings, day: dt.date, run_id: str, **options) -> Night:
    night = _stage(settings, day, run_id)
    with warehouse_engine(settings.warehouse).begin() as conn:
        build_recommendations(conn, night, min_pairs=1, min_confidence=0.0, **options)
    return night


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kept_counts_equal_a_count_of_the_history_after_every_night(settings, seed) -> None:
    shop = _RandomShop(settings, seed)
    engine = warehouse_engine(settings.warehouse)
    incremental_nights = 0
    for k in range(7):
        day = START + dt.timedelta(days=k)
        shop.day(day, new_customers=12 if k == 0 else 3, new_orders=40 if k == 0 else 8)
        night = _night(settings, day, f"n{k}")
        with engine.begin() as conn:
            assert _kept(conn) == _oracle(conn), f"night {day}"
            assert _kept_rows(conn) == _kept_rows(conn, from_staging=True), f"night {day}"
            assert _rules(conn) == _rules_from_history(conn, night), f"night {day}"
            incremental_nights += (
                conn.execute(
                    select(schema.changed_customers.c.customer_id).where(
                        schema.changed_customers.c.night == night.date
                    )
                ).first()
                is not None
            )
        # A re-run of the night changes nothing.
        with engine.begin() as conn:
            before = _kept(conn), _rules(conn)
        _night(settings, day, f"n{k}-again")
        with engine.begin() as conn:
            assert (_kept(conn), _rules(conn)) == before
    assert incremental_nights == 7  # every night had changed customers to count again


def test_a_night_counts_only_its_changed_customers(settings) -> None:
    """Counts that were wrong for an unchanged customer stay wrong on an ordinary night (nothing
    outside the changed customers is read) and are set right by a full rebuild."""
    shop = _RandomShop(settings, 7)
    engine = warehouse_engine(settings.warehouse)
    shop.day(START, new_customers=10, new_orders=30)
    _night(settings, START, "n0")
    with engine.begin() as conn:
        conn.execute(text("update rule_totals set total = total + 1000 where kind = 'next_purchase'"))
    shop.day(START + dt.timedelta(days=1), new_customers=1, new_orders=3)
    _night(settings, START + dt.timedelta(days=1), "n1")
    with engine.begin() as conn:
        kept, truth = _kept(conn), _oracle(conn)
        assert kept["totals"]["next_purchase"] == truth["totals"]["next_purchase"] + 1000
        assert kept["pairs"] == truth["pairs"]
    _night(settings, START + dt.timedelta(days=1), "n1-full", full_rebuild=True)
    with engine.begin() as conn:
        assert _kept(conn) == _oracle(conn)


def test_counts_are_built_once_when_missing(settings) -> None:
    """A warehouse migrated from before the counts existed (empty tables) counts everything once."""
    shop = _RandomShop(settings, 11)
    engine = warehouse_engine(settings.warehouse)
    shop.day(START, new_customers=8, new_orders=20)
    _night(settings, START, "n0")
    with engine.begin() as conn:
        for table in ("rule_totals", "rule_item_counts", "rule_pair_counts", "rule_first_purchases"):
            conn.execute(text(f"delete from {table}"))
        assert not rule_counts.is_built(conn)
    shop.day(START + dt.timedelta(days=1), new_customers=1, new_orders=2)
    _night(settings, START + dt.timedelta(days=1), "n1")
    with engine.begin() as conn:
        assert rule_counts.is_built(conn)
        assert _kept(conn) == _oracle(conn)


def test_a_basket_moved_to_another_customer_is_counted_once(settings) -> None:
    """An order given to another customer in the shop: the extract records the new customer; the
    basket is counted under them, not twice (its old rows are found by the order)."""
    shop = _RandomShop(settings, 5)
    engine = warehouse_engine(settings.warehouse)
    shop.day(START, new_customers=6, new_orders=20)
    _night(settings, START, "n0")
    moved = shop.orders[0]
    with shop.shop.engine.begin() as conn:
        owner = conn.execute(
            select(source.orders.c.customer_id).where(source.orders.c.order_id == moved)
        ).scalar_one()
        other = next(c for c in shop.customers if c != owner)
        conn.execute(
            update(source.orders)
            .where(source.orders.c.order_id == moved)
            .values(customer_id=other, updated_at=dt.datetime.combine(START, dt.time(10)))
        )
    _night(settings, START + dt.timedelta(days=1), "n1")
    with engine.begin() as conn:
        kept, truth = _kept(conn), _oracle(conn)
        assert {k: v for k, v in kept["pairs"].items() if k[0] == "accessory"} == {
            k: v for k, v in truth["pairs"].items() if k[0] == "accessory"
        }
        assert kept["totals"]["accessory"] == truth["totals"]["accessory"]
        basket_owner = (
            conn.execute(
                text("select distinct customer_id from rule_basket_items where order_id = :o"), {"o": moved}
            )
            .scalars()
            .all()
        )
        assert basket_owner in ([other], [])  # [] when none of its lines is kept


def test_erasure_takes_the_person_out_of_the_counts(settings) -> None:
    shop = _RandomShop(settings, 3)
    engine = warehouse_engine(settings.warehouse)
    shop.day(START, new_customers=10, new_orders=40)
    _night(settings, START, "n0")
    with engine.begin() as conn:
        buyer = conn.execute(text("select customer_id from rule_first_purchases limit 1")).scalar_one()
        before = _kept(conn)
    erasure.forget(engine, str(buyer), erased_on=START)
    with engine.begin() as conn:
        after = _kept(conn)
        assert after == _oracle(conn)
        assert after != before
        for table in ("rule_first_purchases", "rule_basket_items"):
            left = conn.execute(text(f"select count(*) from {table} where customer_id = :c"), {"c": buyer})
            assert left.scalar_one() == 0


@pytest.mark.postgres
def test_two_runs_of_a_night_at_once_count_it_once(tmp_path, pg_database) -> None:
    """A second run of the same night (a manual CLI run beside Airflow's) waits for the first's
    counts, then finds nothing left to add: PostgreSQL serialises the two on rule_totals."""
    settings = shop_settings(tmp_path, pg_database)
    shop = _RandomShop(settings, 13)
    engine = warehouse_engine(settings.warehouse)
    shop.day(START, new_customers=10, new_orders=30)
    _night(settings, START, "n0")
    day = START + dt.timedelta(days=1)
    shop.day(day, new_customers=2, new_orders=6)
    night = _stage(settings, day, "n1")
    first = engine.connect()
    first_transaction = first.begin()
    rule_counts.refresh(first, night.date)  # holds the lock until it commits
    second_done = threading.Event()

    failures: list[BaseException] = []

    def second_run() -> None:
        try:
            with engine.begin() as conn:
                rule_counts.refresh(conn, night.date)
        except BaseException as exc:  # reported by the assertions below
            failures.append(exc)
            raise
        second_done.set()

    second = threading.Thread(target=second_run)
    second.start()
    # The second run is waiting for the lock: PostgreSQL shows it blocked by the first.
    waiting = text(
        "select count(*) from pg_stat_activity where datname = current_database()"
        " and wait_event_type = 'Lock' and query like 'lock table rule_totals%'"
    )

    def now_waiting() -> int:
        # A transaction of its own each time: PostgreSQL keeps one pg_stat_activity snapshot per transaction.
        with engine.connect() as probe:
            return probe.execute(waiting).scalar_one()

    blocked = poll(lambda: failures or now_waiting(), 30, "the second run waiting for the lock")
    assert blocked == 1 and not second_done.is_set(), (blocked, second_done.is_set())
    first_transaction.commit()
    first.close()
    second.join(timeout=60)
    assert second_done.is_set()
    with engine.begin() as conn:
        assert _kept(conn) == _oracle(conn)
