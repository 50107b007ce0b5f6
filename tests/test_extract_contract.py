"""The extract's contract, case by case: any value the source can hold loads or is quarantined with its rule.

Hostile values are planted with raw sqlite3 (tests/shop.py ``Shop.plant``), so that any
storage class lands in any column, as in a shop database nobody validates. Each case
names the rule it expects; every case also checks that the counts balance: per table,
rows read = loaded + quarantined, and the quarantine table holds exactly what the run
log counted (SQLite and PostgreSQL warehouses).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from retention import cli, quality, schema
from retention.mailer import build_message
from retention.night import night_for_date
from retention.pipeline import QualityError, stage_extract, stage_migrate, stage_quality, warehouse_engine
from retention.report import quarantine_report
from tests.airflow_env import ROOT
from tests.shop import DAY1, BadUtf8, Shop

NIGHT = "2026-11-20"


@pytest.fixture
def shop(settings) -> Shop:
    stage_migrate(settings)
    shop = Shop(settings.source)
    shop.customer(1, updated_at=DAY1)
    shop.product(10, updated_at=DAY1)
    shop.order(100, 1, DAY1)
    return shop


def _extract(settings, run_id: str = "t1") -> dict:
    return stage_extract(settings, night_for_date(NIGHT, settings.time_zone), run_id)


def _held(settings) -> dict[tuple[str, str], str]:
    """(table, source key) -> rule of every quarantine row."""
    q = schema.quarantine
    with warehouse_engine(settings.warehouse).connect() as conn:
        return {(r.source_table, r.source_key): r.rule for r in conn.execute(select(q))}


def _assert_balanced(settings, counts: dict) -> None:
    """Per table: read = loaded + quarantined, and the quarantine table agrees with the run log."""
    q = schema.quarantine
    with warehouse_engine(settings.warehouse).connect() as conn:
        stored = dict(
            conn.execute(select(q.c.source_table, func.count()).group_by(q.c.source_table)).all()
        )
    for table, read in counts["read"].items():
        bad = sum(counts["quarantined_by_table"].get(table, {}).values())
        assert read == counts["rows"][table] + bad, table
        assert stored.get(table, 0) == bad, table


# (table, key, {column: planted value}, expected rule); None: the row loads.
CASES = [
    ("customers", 2**40, {}, None),  # 64-bit ids load on PostgreSQL too
    ("customers", 2**63 - 1, {}, None),
    ("customers", 2.0**63, {}, "number_out_of_range"),  # SQLite keeps ints above 2**63 as REAL
    ("customers", 1e300, {}, "number_out_of_range"),
    ("customers", 7.5, {}, "invalid_value"),
    ("customers", "abc", {}, "invalid_value"),
    ("customers", float("inf"), {}, "non_finite_number"),
    ("customers", 3, {"country": "DEU"}, "text_too_long"),
    ("customers", 4, {"first_name": "Ann\x00a"}, "invalid_text"),
    ("customers", 5, {"last_name": BadUtf8(b"M\xfcller")}, "invalid_text"),
    ("customers", 6, {"first_name": "Anna\u202egnp.exe"}, "invalid_text"),
    ("customers", 7, {"last_name": "Smith\u2028Jones"}, "invalid_text"),
    ("customers", 8, {"first_name": b"\x00\x01binary"}, "invalid_value"),
    ("customers", 9, {"birthday": "the 5th of May"}, "invalid_value"),
    ("customers", 11, {"created_at": "yesterday"}, "invalid_value"),
    ("customers", 12, {"created_at": 12345}, "invalid_value"),
    ("customers", 13, {"marketing_consent": 2}, "invalid_value"),
    ("customers", 14, {"marketing_consent": "yes"}, "invalid_value"),
    ("customers", 15, {"email": "user@[127.0.0.1]"}, "malformed_email"),
    ("customers", 16, {"email": "jürgen@example.com"}, "unsupported_email"),
    ("customers", 17, {"email": "anna@münchen.de"}, None),
    ("customers", 18, {"time_zone": "Europe"}, "invalid_time_zone"),  # a folder of the tz database
    ("customers", 19, {"time_zone": "Europe/" + "x" * 60}, "text_too_long"),
    ("customers", 20, {"language": "x" * 300}, None),  # an unknown language becomes the default
    ("customers", 21, {"first_name": "Zoë"}, None),
    ("products", 11, {"price": float("inf")}, "non_finite_number"),
    ("products", 12, {"cost": float("-inf")}, "non_finite_number"),
    ("products", 13, {"price": 1e12}, "number_out_of_range"),
    ("products", 14, {"price": "abc"}, "invalid_value"),
    ("products", 15, {"price": "NaN"}, "non_finite_number"),
    ("products", 16, {"sku": "S" * 33}, "text_too_long"),
    ("products", 17, {"category": "c" * 65}, "text_too_long"),
    ("products", 18, {"currency": "EURO"}, "text_too_long"),
    ("products", 19, {"accessory_for": 2**63 + 10.0}, "number_out_of_range"),
    ("products", 20, {"price": 999_999_999_999.99}, None),
    ("products", 21, {"name": BadUtf8(b"\xc3\x28")}, "invalid_text"),
    ("orders", 2**62, {}, None),
    ("orders", 101, {"status": "placed-and-then-some"}, "text_too_long"),
    ("orders", 102, {"ordered_at": "2026-13-45 10:00:00"}, "invalid_value"),
    ("orders", 103, {"currency": "E\x00R"}, "invalid_text"),
    ("orders", 104, {"customer_id": 1.0}, None),  # a whole REAL is the integer it holds
    ("order_items", 1000, {}, None),
    ("order_items", 1001, {"quantity": 2**31}, "number_out_of_range"),
    ("order_items", 1002, {"unit_price": float("-inf")}, "non_finite_number"),
    ("order_items", 1003, {"quantity": 2**31 - 1, "unit_price": 1000.0}, "number_out_of_range"),
    ("order_items", 1004, {"returned_quantity": "none"}, "invalid_value"),
    ("order_items", 1005, {"order_id": 2.0**64}, "number_out_of_range"),
    ("order_items", 1006, {"unit_cost": BadUtf8(b"\xff")}, "invalid_value"),
]


def test_every_hostile_value_loads_or_is_quarantined_with_its_rule(settings, shop) -> None:
    for table, key, values, _ in CASES:
        shop.plant(table, key, **values)
    counts = _extract(settings)
    held = _held(settings)
    for table, key, values, rule in CASES:
        shown = str(key) if type(key) is int else repr(key)
        assert held.get((table, shown)) == rule, (table, key, values)
    _assert_balanced(settings, counts)
    assert set(counts["quarantined"]) <= set(quality.RULES)


def test_reasons_name_the_column_and_the_value(settings, shop) -> None:
    shop.plant("products", 11, price=float("inf"))
    shop.plant("customers", 5, last_name=BadUtf8(b"M\xfcller"))
    shop.plant("customers", 6, first_name="x" * 5000 + "\x00")
    _extract(settings)
    q = schema.quarantine
    with warehouse_engine(settings.warehouse).connect() as conn:
        details = dict(conn.execute(select(q.c.source_key, q.c.detail)).all())
        raw = json.loads(conn.execute(select(q.c.raw).where(q.c.source_key == "6")).scalar())
    assert details["11"] == "price is inf, not a finite number"
    assert details["5"] == "last_name b'M\\xfcller' is not UTF-8 text"
    assert details["6"].startswith("first_name 'xxxx") and details["6"].endswith("contains a NUL character")
    assert len(details["6"]) < 100  # the value is cut short
    assert raw["first_name"].endswith("... (5001 characters)")


def test_undecodable_text_holds_back_its_row_not_the_chunk(settings, shop) -> None:
    settings = settings.with_overrides(chunk_size=100)
    for cid in range(2, 60):
        shop.customer(cid, updated_at=DAY1)
    shop.plant("customers", 30_000, first_name=BadUtf8(b"\xff\xfe"))
    counts = _extract(settings)
    assert counts["rows"]["customers"] == 59
    assert counts["quarantined"] == {"invalid_text": 1}


def test_money_keeps_cents_and_fits_the_warehouse(settings, shop) -> None:
    shop.plant("products", 20, price=999_999_999_999.99, cost=19.999)
    _extract(settings)
    p = schema.stg_products
    with warehouse_engine(settings.warehouse).connect() as conn:
        price, cost = conn.execute(select(p.c.price, p.c.cost).where(p.c.product_id == 20)).one()
    assert Decimal(price) == Decimal("999999999999.99")
    assert Decimal(cost) == Decimal("20.00")


def test_identical_copies_of_a_bad_row_are_each_recorded_once_per_night(settings, shop, capsys) -> None:
    settings = settings.with_overrides(chunk_size=100)
    for _ in range(150):  # more copies than a chunk holds: one is judged, 149 are duplicates of it
        shop.plant("customers", 7, email="not-an-address")
    for _ in range(3):
        shop.plant("customers", 8)  # three identical good copies: one loads, two are duplicates
    for _ in range(3):
        shop.plant("customers", "abc")  # not an id at all: each copy is judged, and recorded, alone
    counts = _extract(settings)
    expected = {"malformed_email": 1, "duplicate_key": 149 + 2, "invalid_value": 3}
    assert counts["quarantined_by_table"]["customers"] == expected
    _assert_balanced(settings, counts)
    again = _extract(settings, "t2")  # a re-run of the night adds nothing
    assert again["quarantined"] == counts["quarantined"]
    _assert_balanced(settings, again)
    assert cli.main(["quarantine", "--url", settings.warehouse, "--json", "--limit", "1000"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["total"] == 155 == len(listed["rows"])
    assert listed["by_rule"] == dict(sorted(expected.items()))


def test_a_child_still_missing_its_parent_is_not_recorded_again_each_night(settings, shop) -> None:
    shop.item(1000, 100, 77, updated_at=DAY1)  # product 77 never arrives
    _extract(settings)
    second = stage_extract(settings, night_for_date("2026-11-21", settings.time_zone), "t2")
    assert second["quarantined"] == {}
    report = quarantine_report(warehouse_engine(settings.warehouse))
    assert report["by_rule"] == {"unknown_product": 1}


def test_an_internationalised_domain_loads_in_ascii_and_makes_a_valid_to_header(settings, shop) -> None:
    shop.plant("customers", 17, email="Anna@Bücher.example")
    _extract(settings)
    c = schema.stg_customers
    with warehouse_engine(settings.warehouse).connect() as conn:
        email = conn.execute(select(c.c.email).where(c.c.customer_id == 17)).scalar()
    assert email == "Anna@xn--bcher-kva.example"
    row = {
        "email": email,
        "subject": "Danke",
        "message_id": "<thank_you.17.20261120@example.com>",
        "send_at": dt.datetime(2026, 11, 20, 9, 0),
        "occasion": "thank_you",
        "text_body": "Hallo",
        "html_body": "<p>Hallo</p>",
    }
    msg = build_message(row, "Shop <shop@example.com>", "mailto:u@example.com", "https://shop.example.com/u")
    raw = msg.as_bytes()
    to_line = next(line for line in raw.split(b"\r\n") + raw.split(b"\n") if line.startswith(b"To:"))
    assert to_line.strip() == b"To: Anna@xn--bcher-kva.example"
    assert raw.isascii()


def test_hostile_rows_count_toward_the_quality_gate(settings, shop) -> None:
    settings = settings.with_overrides(quarantine_min_rows=1)
    shop.plant("products", 11, price=float("inf"))
    shop.plant("products", 13, price=1e12)
    night = night_for_date(NIGHT, settings.time_zone)
    stage_extract(settings, night, "t1")
    with pytest.raises(QualityError, match=r"products: 2 of 3 rows .*non_finite_number=1, number_out_of_range=1"):
        stage_quality(settings, night, "t1")
    assert stage_quality(settings.with_overrides(quarantine_max_share=1), night, "t2")["products"]["bad"] == 2


def test_every_rule_is_in_the_readmes_extract_and_quality_table() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Extract and quality") : readme.index("## Segments")]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    assert documented == set(quality.RULES)
