"""The reviewer's check of issue #10, end to end through the command line: a demo shop with every
hostile value the issue names planted in it, and every hostile template it names in the templates
folder. The night must finish; the bad rows must be in `retention quarantine` with their rules;
every other occasion's and language's messages must be in the outbox; each broken template must be
named in `retention report`.

Written independently of the helpers' unit tests: it drives the installed CLI in a subprocess, plants
rows with raw sqlite3 into the generated demo shop (not through the project's code) and checks the
warehouse with plain SQL.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
NIGHT = "2026-11-22"  # the demo shop's last night
WHEN = "2026-11-21 10:00:00.000000"  # inside that night's window (Berlin), as SQLite text
BIG_ID = 2**62  # a valid id beyond 32 bits: must load on PostgreSQL too

#: (table, key as the quarantine shows it, the rules that are right for it), and the raw row.
PLANTED = [
    ("products", "9000001", {"non_finite_number"}, {"product_id": 9000001, "price": math.inf}),
    ("products", "9000002", {"non_finite_number"}, {"product_id": 9000002, "cost": "NaN"}),
    ("products", "9000003", {"number_out_of_range"}, {"product_id": 9000003, "price": 1e12}),
    ("products", "9000004", {"text_too_long"}, {"product_id": 9000004, "sku": "X" * 40}),
    ("products", "9000005", {"invalid_text"}, {"product_id": 9000005, "name": "Saw\x00blade"}),
    ("customers", "9000001", {"text_too_long"}, {"customer_id": 9000001, "country": "DEU"}),
    ("customers", "9000002", {"invalid_text"}, {"customer_id": 9000002, "last_name": b"\xff\xfeB"}),
    ("customers", "9000003", {"invalid_text"}, {"customer_id": 9000003, "first_name": "An\x00na"}),
    ("customers", "9000004", {"malformed_email"}, {"customer_id": 9000004, "email": "anna@[127.0.0.1]"}),
    ("order_items", "9000001", {"number_out_of_range"}, {"order_item_id": 9000001, "quantity": 2**40}),
    # SQLite keeps an integer beyond 64 bits as REAL: that is how such an id reaches the extract.
    ("orders", None, {"number_out_of_range", "invalid_value"}, {"order_id": float(2**64)}),
]

#: Hostile templates of the issue, each in a group of its own (occasion/language).
ATTACKS = {
    "thank_you/de": "{% for i in range(10**9) %}x{% endfor %}",
    "thank_you/en": "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(1) }}",
    "birthday/en": "{% include 'birthday/en.jinja' %}",
    "birthday/de": "{{ 'a' * 10**9 }}",
    "anniversary/en": "{{ '%999999999s'|format(1) }}",
    "next_purchase/en": (
        "{% for a in range(99999) %}{% for b in range(99999) %}{% for c in range(99) %}"
        "{% endfor %}{% endfor %}{% endfor %}"
    ),
}


def _good(table: str, key: object) -> dict:
    """A row that is fine in every column, for a key; the planted values override some."""
    if table == "customers":
        return {
            "customer_id": key, "email": f"planted{key}@example.com", "first_name": "Anna",
            "last_name": "Planted", "language": "en", "time_zone": "Europe/Berlin", "country": "DE",
            "birthday": None, "marketing_consent": 1, "created_at": WHEN, "updated_at": WHEN,
        }  # fmt: skip
    if table == "products":
        return {
            "product_id": key, "sku": f"P{key}", "name": "Planted saw", "category": "garden",
            "accessory_for": None, "price": 10.0, "cost": 5.0, "currency": "EUR",
            "created_at": WHEN, "updated_at": WHEN,
        }  # fmt: skip
    if table == "orders":
        return {
            "order_id": key, "customer_id": 1, "ordered_at": WHEN, "status": "placed",
            "currency": "EUR", "updated_at": WHEN,
        }  # fmt: skip
    return {
        "order_item_id": key, "order_id": 9000001, "product_id": 1, "quantity": 1,
        "unit_price": 10.0, "unit_cost": 5.0, "returned_quantity": 0, "updated_at": WHEN,
    }  # fmt: skip


def _plant(shop_db: Path) -> None:
    with closing(sqlite3.connect(shop_db)) as conn, conn:
        rows = [(table, {**_good(table, next(iter(values.values()))), **values}) for table, _, _, values in PLANTED]
        rows.append(("orders", _good("orders", 9000001)))  # a good order for the planted lines
        rows.append(("order_items", _good("order_items", BIG_ID)))  # a good line with a 62-bit id
        for table, row in rows:
            marks = ", ".join("CAST(? AS TEXT)" if isinstance(v, bytes) else "?" for v in row.values())
            conn.execute(f"insert into {table} ({', '.join(row)}) values ({marks})", list(row.values()))


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "retention.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def hostile_night(tmp_path: Path, warehouse_url: str) -> tuple[dict, str]:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    for group, body in ATTACKS.items():
        (templates / f"{group}.jinja").write_text(
            "{% extends '_layout.jinja' %}{% block subject %}Hello{% endblock %}"
            "{% block text %}" + body + "{% endblock %}{% block html %}<p>Hi</p>{% endblock %}"
        )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")},
        "RETENTION_HOME": str(tmp_path),
        "RETENTION_WAREHOUSE_URL": warehouse_url,
        "RETENTION_TEMPLATES_DIR": str(templates),
        "RETENTION_RENDER_TIMEOUT_SECONDS": "1",
        "RETENTION_UNSUBSCRIBE_SECRET": os.environ["RETENTION_UNSUBSCRIBE_SECRET"],
    }
    made = _cli(env, "demo-data", "--customers", "2000", "--seed", "1")
    assert made.returncode == 0, made.stderr
    _plant(tmp_path / "shop.db")
    night = _cli(env, "nightly", "--date", NIGHT)
    assert night.returncode == 0, night.stderr[-3000:]
    return env, warehouse_url


def test_a_hostile_shop_and_hostile_templates_do_not_stop_the_night(hostile_night) -> None:
    env, url = hostile_night
    quarantine = json.loads(_cli(env, "quarantine", "--json").stdout)
    report = json.loads(_cli(env, "report", "--json").stdout)

    # Every planted value is held back under a rule that names what is wrong with it.
    held = {(row["source_table"], row["source_key"]): row["rule"] for row in quarantine["rows"]}
    for table, key, rules, _ in PLANTED:
        if key is None:  # an id beyond 64 bits: its key shows as whatever the source held
            assert any(t == table and r in rules for (t, _), r in held.items()), (table, rules)
        else:
            assert held.get((table, key)) in rules, (table, key, held.get((table, key)))
    # Nothing lost: the quarantine lists what the run log counted, rule by rule.
    assert quarantine["by_rule"] == report["extract"]["quarantined"]
    assert quarantine["total"] == len(quarantine["rows"]) == sum(report["extract"]["quarantined"].values())

    engine = create_engine(url)
    with engine.connect() as conn:
        big = conn.execute(text("select quantity from stg_order_items where order_item_id = :k"), {"k": BIG_ID})
        assert big.scalar() == 1
        selected = dict(
            conn.execute(
                text(
                    "select occasion || '/' || language, count(*) from occasions "
                    "where night = :n and status in ('selected', 'blocked') group by 1"
                ),
                {"n": NIGHT},
            ).all()
        )
        queued = dict(
            conn.execute(
                text("select occasion || '/' || language, count(*) from outbox where night = :n group by 1"),
                {"n": NIGHT},
            ).all()
        )
    engine.dispose()

    failures = report["render"]["template_failures"]
    attacked = {group for group in ATTACKS if group in selected}
    assert len(attacked) >= 4, selected  # the demo night has candidates for most attacked groups
    assert set(failures) == attacked, failures
    for group in attacked:
        assert group.split("/")[0] in failures[group] and group not in queued, (group, failures[group])
    others = {group: n for group, n in selected.items() if group not in ATTACKS}
    assert len(others) >= 4, selected
    assert {group: queued.get(group, 0) for group in others} == others  # everyone else got theirs
