"""The demo shop generator: deterministic, realistic, and bad exactly where it says so."""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from retention import source
from retention.demo import DEFECT_RULES, DEMO_AS_OF, DemoSummary, demo_defects, generate

CUSTOMERS = 400
SEED = 7
ZONES = {
    "en": {"Europe/London": "GB", "America/New_York": "US", "Europe/Dublin": "IE"},
    "de": {"Europe/Berlin": "DE", "Europe/Vienna": "AT", "Europe/Zurich": "CH"},
    "nb": {"Europe/Oslo": "NO"},
    "et": {"Europe/Tallinn": "EE"},
}
EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
KEYS = {
    "customers": "customer_id",
    "products": "product_id",
    "orders": "order_id",
    "order_items": "order_item_id",
}


def _utc_midnight(day: dt.date) -> dt.datetime:
    """Local midnight starting ``day`` in Europe/Berlin, as naive UTC (the shop's format)."""
    local = dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo("Europe/Berlin"))
    return local.astimezone(dt.UTC).replace(tzinfo=None)


CUTOFF = _utc_midnight(DEMO_AS_OF)
LAST_DAY_START = _utc_midnight(DEMO_AS_OF - dt.timedelta(days=1))


def _read(url: str) -> dict[str, list[dict]]:
    """Every row of every demo table, in the order the database returns them."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = [*(source.metadata.tables[name] for name in source.SOURCE_TABLES), demo_defects]
            return {t.name: [dict(r) for r in conn.execute(select(t)).mappings()] for t in tables}
    finally:
        engine.dispose()


class Shop:
    """The rows of one generated shop, split into planted and good rows."""

    def __init__(self, rows: dict[str, list[dict]]) -> None:
        self.rows = rows
        self.planted: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for record in rows["_demo_defects"]:
            self.planted[record["rule"]][record["source_table"]].add(record["source_key"])

    def good(self, table: str) -> list[dict]:
        """Rows that are not planted: for a duplicated id, the newest copy is the good one."""
        key = KEYS[table]
        bad = {
            k for rule, by_table in self.planted.items() if rule != "duplicate_key" for k in by_table[table]
        }
        newest: dict[str, dict] = {}
        # Lines of a planted order are fine themselves, but go with their order (a cascade).
        bad_orders = {
            k
            for rule, by_table in self.planted.items()
            if rule != "duplicate_key"
            for k in by_table["orders"]
        }
        for row in self.rows[table]:
            k = str(row[key])
            if table == "order_items" and str(row["order_id"]) in bad_orders:
                continue
            if k not in bad and (k not in newest or row["updated_at"] > newest[k]["updated_at"]):
                newest[k] = row
        return list(newest.values())

    def by_key(self, table: str) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = defaultdict(list)
        for row in self.rows[table]:
            out[str(row[KEYS[table]])].append(row)
        return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, DemoSummary]:
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'shop.db'}"
    return url, generate(url, CUSTOMERS, SEED)


@pytest.fixture(scope="module")
def shop(generated: tuple[str, DemoSummary]) -> Shop:
    return Shop(_read(generated[0]))


def test_same_seed_gives_identical_rows_and_another_seed_does_not(
    generated: tuple[str, DemoSummary], shop: Shop, tmp_path: Path
) -> None:
    again = f"sqlite:///{tmp_path / 'again.db'}"
    generate(again, CUSTOMERS, SEED)
    generate(again, CUSTOMERS, SEED)  # a re-run into the same file starts from empty tables
    assert _read(again) == shop.rows
    other = f"sqlite:///{tmp_path / 'other.db'}"
    generate(other, CUSTOMERS, SEED + 1)
    other_rows = _read(other)
    assert other_rows["customers"] != shop.rows["customers"]
    assert other_rows["orders"] != shop.rows["orders"]


def test_summary_counts_rows_and_defects(generated: tuple[str, DemoSummary], shop: Shop) -> None:
    summary = generated[1]
    assert summary.rows == {name: len(shop.rows[name]) for name in source.SOURCE_TABLES}
    assert summary.defects == dict(Counter(r["rule"] for r in shop.rows["_demo_defects"]))
    assert set(summary.defects) == set(DEFECT_RULES)
    assert all(count >= 1 for count in summary.defects.values()), summary.defects
    assert summary.seconds > 0


def test_every_planted_key_exists(shop: Shop) -> None:
    for record in shop.rows["_demo_defects"]:
        assert record["source_key"] in shop.by_key(record["source_table"]), record
    duplicated_tables = set(shop.planted["duplicate_key"])
    assert duplicated_tables == {"customers", "products", "orders", "order_items"}


def test_duplicates_are_older_and_differ(shop: Shop) -> None:
    for table, keys in shop.planted["duplicate_key"].items():
        rows = shop.by_key(table)
        for key in keys:
            copies = sorted(rows[key], key=lambda r: r["updated_at"])
            assert len(copies) == 2, (table, key)
            older, newer = copies
            assert older["updated_at"] < newer["updated_at"]
            assert older != newer


def test_bad_customers_break_their_rule_and_have_no_orders(shop: Shop) -> None:
    customers = shop.by_key("customers")
    ordering = {str(o["customer_id"]) for o in shop.rows["orders"]}
    checks = {
        "malformed_email": lambda c: not EMAIL.match(c["email"] or ""),
        "missing_name": lambda c: not (c["first_name"] or "").strip(),
        "name_too_long": lambda c: max(len(c["first_name"]), len(c["last_name"])) > 200,
        "control_characters": lambda c: bool(CONTROL.search(c["first_name"] + c["last_name"])),
    }
    for rule, check in checks.items():
        for key in shop.planted[rule]["customers"]:
            (row,) = customers[key]
            assert check(row), (rule, row)
            assert key not in ordering, (rule, key)


def test_bad_orders_and_items_break_their_rule(shop: Shop) -> None:
    customer_ids = {str(c["customer_id"]) for c in shop.rows["customers"]}
    product_ids = {str(p["product_id"]) for p in shop.rows["products"]}
    orders, items = shop.by_key("orders"), shop.by_key("order_items")
    with_items = {str(i["order_id"]) for i in shop.rows["order_items"]}
    for key in shop.planted["unknown_customer"]["orders"]:
        assert str(orders[key][0]["customer_id"]) not in customer_ids
        assert key in with_items  # its lines are fine: the pipeline drops them with the order
    for key in shop.planted["future_date"]["orders"]:
        (row,) = orders[key]
        assert row["ordered_at"] > CUTOFF + dt.timedelta(days=300)
        assert row["updated_at"] < CUTOFF
        assert str(row["customer_id"]) in customer_ids
        assert key not in with_items
    for key in shop.planted["negative_quantity"]["order_items"]:
        assert items[key][0]["quantity"] < 1
    for key in shop.planted["unknown_product"]["order_items"]:
        assert str(items[key][0]["product_id"]) not in product_ids


def test_good_customers_are_clean(shop: Shop) -> None:
    good = shop.good("customers")
    emails = [c["email"] for c in good]
    assert len(set(emails)) == len(emails)
    for c in good:
        assert EMAIL.match(c["email"]), c
        for column in ("first_name", "last_name"):
            assert c[column] and c[column].strip() and len(c[column]) <= 200, c
            assert not CONTROL.search(c[column]), c
        assert ZONES[c["language"]][c["time_zone"]] == c["country"], c
        ZoneInfo(c["time_zone"])
        assert c["created_at"] <= c["updated_at"] < CUTOFF


def test_good_products_are_clean(shop: Shop) -> None:
    good = shop.good("products")
    ids = {p["product_id"] for p in good}
    assert 100 <= len(good) <= 400
    assert len({p["category"] for p in good}) >= 6
    for p in good:
        assert p["currency"] == "EUR" and p["name"] and p["sku"]
        assert 0 < p["cost"] < p["price"]
        assert 0.19 <= 1 - p["cost"] / p["price"] <= 0.61, p
        assert p["accessory_for"] is None or p["accessory_for"] in ids
        assert p["created_at"] <= p["updated_at"] < CUTOFF
    laptops = {p["product_id"] for p in good if p["name"].endswith(" Laptop")}
    docks = [p for p in good if p["name"].startswith("Docking Station for")]
    assert docks and all(p["accessory_for"] in laptops for p in docks)


def test_good_orders_and_items_are_clean(shop: Shop) -> None:
    customers = {c["customer_id"]: c for c in shop.good("customers")}
    products = {p["product_id"] for p in shop.good("products")}
    orders = {o["order_id"]: o for o in shop.good("orders")}
    for o in orders.values():
        assert o["status"] in ("placed", "cancelled") and o["currency"] == "EUR"
        assert o["customer_id"] in customers, o
        assert customers[o["customer_id"]]["created_at"] < o["ordered_at"] <= o["updated_at"] < CUTOFF
    for item in shop.good("order_items"):
        assert item["product_id"] in products and item["order_id"] in orders, item
        assert item["quantity"] >= 1 and 0 <= item["returned_quantity"] <= item["quantity"]
        assert item["unit_price"] > 0 and item["unit_cost"] > 0
        order = orders[item["order_id"]]
        assert order["updated_at"] <= item["updated_at"] < CUTOFF


def test_every_timestamp_lies_before_the_night(shop: Shop) -> None:
    for table in source.SOURCE_TABLES:
        assert max(r["updated_at"] for r in shop.rows[table]) < CUTOFF
    assert max(c["created_at"] for c in shop.rows["customers"]) < CUTOFF


def test_shop_looks_real(shop: Shop) -> None:
    customers = shop.good("customers")
    orders = [o for o in shop.good("orders") if o["customer_id"] in {c["customer_id"] for c in customers}]
    per_customer = Counter(o["customer_id"] for o in orders)
    never = sum(1 for c in customers if c["customer_id"] not in per_customer)
    assert 0.05 <= never / len(customers) <= 0.2
    assert Counter(per_customer.values())[1] > 0.15 * len(customers)  # one-off buyers
    assert max(per_customer.values()) >= 10  # loyal regulars
    assert 0.01 <= sum(o["status"] == "cancelled" for o in orders) / len(orders) <= 0.06
    items = shop.good("order_items")
    assert 6 <= len(items) / len(customers) <= 14
    assert 0.02 <= sum(i["returned_quantity"] > 0 for i in items) / len(items) <= 0.08
    assert 0.75 <= sum(c["marketing_consent"] for c in customers) / len(customers) <= 0.95
    assert {c["language"] for c in customers} == set(ZONES)


def test_customers_follow_purchase_sequences(shop: Shop) -> None:
    """Who bought a lawn mower buys a chainsaw later far more often than customers in general."""
    names = {p["product_id"]: p["name"] for p in shop.rows["products"]}
    when = {o["order_id"]: (o["customer_id"], o["ordered_at"]) for o in shop.good("orders")}
    first_buy: dict[str, dict[int, dt.datetime]] = defaultdict(dict)
    for item in shop.good("order_items"):
        customer, at = when[item["order_id"]]
        for kind in ("Lawn Mower", "Chainsaw"):
            if names[item["product_id"]].endswith(kind):
                first_buy[kind][customer] = min(at, first_buy[kind].get(customer, at))
    mowers, saws = first_buy["Lawn Mower"], first_buy["Chainsaw"]
    later = sum(1 for c, at in mowers.items() if c in saws and saws[c] > at)
    buyers = len({c for c, _at in when.values()})
    assert mowers and later / len(mowers) > 2 * len(saws) / buyers


def test_birthdays(shop: Shop) -> None:
    customers = shop.good("customers")
    known = [c for c in customers if c["birthday"] is not None]
    assert 0.8 <= len(known) / len(customers) <= 0.97
    assert any((c["birthday"].month, c["birthday"].day) == (2, 29) for c in known)
    for c in known:
        age = (
            DEMO_AS_OF.year
            - c["birthday"].year
            - ((DEMO_AS_OF.month, DEMO_AS_OF.day) < (c["birthday"].month, c["birthday"].day))
        )
        assert 18 <= age <= 85, c
    today = {
        c["language"]
        for c in known
        if c["marketing_consent"]
        and (c["birthday"].month, c["birthday"].day) == (DEMO_AS_OF.month, DEMO_AS_OF.day)
    }
    assert today == set(ZONES)


def test_last_local_day_is_busy_with_first_orders_in_every_language(shop: Shop) -> None:
    customers = {c["customer_id"]: c for c in shop.good("customers")}
    orders = [o for o in shop.good("orders") if o["customer_id"] in customers]
    first: dict[int, dt.datetime] = {}
    for o in orders:
        first[o["customer_id"]] = min(o["ordered_at"], first.get(o["customer_id"], o["ordered_at"]))
    last_day = [o for o in orders if LAST_DAY_START <= o["ordered_at"] < CUTOFF]
    assert len(last_day) >= max(30, CUSTOMERS // 100)
    thanks = Counter(
        customers[o["customer_id"]]["language"]
        for o in last_day
        if o["status"] == "placed"
        and first[o["customer_id"]] == o["ordered_at"]
        and customers[o["customer_id"]]["marketing_consent"]
    )
    assert set(thanks) == set(ZONES) and min(thanks.values()) >= 2, thanks


def test_as_of_moves_the_whole_shop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'spring.db'}"
    as_of = dt.date(2025, 3, 30)  # the night the clocks change in Europe
    generate(url, 100, SEED, as_of)
    rows = _read(url)
    cutoff = _utc_midnight(as_of)
    assert max(o["updated_at"] for o in rows["orders"]) < cutoff
    assert (
        sum(
            1
            for o in rows["orders"]
            if _utc_midnight(as_of - dt.timedelta(days=1)) <= o["ordered_at"] < cutoff
        )
        >= 30
    )


@pytest.mark.postgres
def test_postgresql_gets_the_same_rows_as_sqlite(shop: Shop) -> None:
    server = os.environ.get("RETENTION_TEST_PG_URL")
    if not server:
        pytest.skip("RETENTION_TEST_PG_URL is not set")
    name = f"demo_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'create database "{name}"'))
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        generate(url, CUSTOMERS, SEED)
        on_postgres = _read(url)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()
    for table, rows in shop.rows.items():
        assert sorted(map(repr, on_postgres[table])) == sorted(map(repr, rows)), table
