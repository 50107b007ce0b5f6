"""Issue #17 item 3: which wording works. A template may have a variant ``<language>.b.jinja``;
each customer gets one variant by a stable hash, the outbox records which, a broken variant costs
nobody their message, and the report compares the variants with a minimum sample before it names
a winner. The shipped ``templates/thank_you/en.b.jinja`` is the demo's experiment."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import shutil
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert, select

from retention import schema, template_store
from retention.earnings import variant_report
from retention.night import night_for_date
from retention.outbox import rerender
from retention.pipeline import stage_migrate, stage_render, warehouse_engine
from retention.web.retention_app import create_retention_app
from tests.conftest import SECRET
from tests.shop import Shop
from tests.test_occasions import _through_occasions

ROOT = Path(__file__).resolve().parent.parent
NIGHT = "2026-11-22"
ENGLISH, GERMAN = range(1, 41), range(41, 46)


def _expected_variant(customer_id: int, occasion: str, salt: str) -> str:
    """Independently of retention.render: the first byte of the salted hash, even a, odd b."""
    return "ab"[hashlib.sha256(f"{salt}:variant:{occasion}:{customer_id}".encode()).digest()[0] % 2]


@pytest.fixture
def settings(settings):
    return settings.with_overrides(holdout_share=0.0)


@pytest.fixture
def first_orders(settings, shop: Shop):
    at = dt.datetime(2026, 11, 21, 10, 0)
    for customer_id in [*ENGLISH, *GERMAN]:
        shop.customer(
            customer_id, language="en" if customer_id in ENGLISH else "de", first_name=f"N{customer_id}"
        )
        shop.order(customer_id, customer_id, at)
        shop.item(customer_id, customer_id, 1, updated_at=at)
    _through_occasions(settings, NIGHT)
    return shop


def _outbox(settings) -> dict[int, tuple[str, str | None, str]]:
    box = schema.outbox
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(select(box.c.customer_id, box.c.subject, box.c.variant, box.c.template_hash))
        return {r.customer_id: (r.subject, r.variant, r.template_hash) for r in rows}


def test_each_customer_gets_the_variant_of_their_hash(settings, first_orders) -> None:
    stage_render(settings, night_for_date(NIGHT, settings.time_zone), "t", SECRET)
    box = _outbox(settings)
    seen = Counter()
    for customer_id in ENGLISH:
        subject, variant, _ = box[customer_id]
        assert variant == _expected_variant(customer_id, "thank_you", settings.holdout_salt), customer_id
        seen[variant] += 1
        if variant == "b":
            assert subject == f"N{customer_id}, your order is on its way to the packing table"
        else:
            assert subject == f"Thank you for your first order, N{customer_id}!"
    assert seen["a"] >= 10 and seen["b"] >= 10, seen  # about half and half
    for customer_id in GERMAN:  # no de.b.jinja: no experiment, no variant recorded
        assert box[customer_id][1] is None


def test_a_rerender_keeps_each_message_in_its_variant(settings, first_orders) -> None:
    stage_render(settings, night_for_date(NIGHT, settings.time_zone), "t", SECRET)
    before = _outbox(settings)
    engine = warehouse_engine(settings.warehouse)
    counts = rerender(engine, settings, SECRET, "thank_you", "en")
    assert counts["rerendered"] == 0 and counts["current"] == len(ENGLISH)
    source = template_store.shipped_source(settings, "thank_you", "en").replace(
        "Thank you for your", "Thanks for your"
    )
    template_store.save(
        engine, settings, "thank_you", "en", source, "anna", now=dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    )
    counts = rerender(engine, settings, SECRET, "thank_you", "en")
    after = _outbox(settings)
    a_customers = [c for c in ENGLISH if before[c][1] == "a"]
    assert counts["rerendered"] == len(a_customers)  # the saved version is variant a's
    for customer_id in ENGLISH:
        assert after[customer_id][1] == before[customer_id][1]
        if before[customer_id][1] == "a":
            assert after[customer_id][0].startswith("Thanks for your")
        else:
            assert after[customer_id][0] == before[customer_id][0]


def test_a_broken_variant_costs_nobody_their_message(settings, first_orders, tmp_path) -> None:
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    b = folder / "thank_you" / "en.b.jinja"
    b.write_text(b.read_text().replace("{{ order.id }}", "{{ order.id }}{{ no_such_value }}", 1))
    broken = settings.with_overrides(templates_dir=folder)
    counts = stage_render(broken, night_for_date(NIGHT, broken.time_zone), "t", SECRET)
    assert "thank_you/en.b" in counts["template_failures"]
    assert "no_such_value" in counts["template_failures"]["thank_you/en.b"]
    box = _outbox(broken)
    assert len(box) == len(ENGLISH) + len(GERMAN)  # everyone got a message
    assert {box[c][1] for c in ENGLISH} == {None}  # lint blocked b: no experiment tonight
    assert all(box[c][0].startswith("Thank you for your first order") for c in ENGLISH)


def test_the_editor_shows_variant_b_next_to_a(settings, first_orders) -> None:
    app = create_retention_app(lambda: "tester", settings=settings)

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get(path)

    page = asyncio.run(get("/templates?occasion=thank_you&language=en"))
    assert page.status_code == 200
    assert 'id="variant-b"' in page.text and "thank_you/en.b.jinja" in page.text
    assert "your order is on its way to the packing table" in page.text  # its rendered subject
    german = asyncio.run(get("/templates?occasion=thank_you&language=de"))
    assert 'id="variant-b"' not in german.text


# --- the comparison, on a simulated shop where variant b earns more ---------------------------


def _simulated_variants(settings, per_variant: int, p_a: float, p_b: float, seed: int) -> None:
    import random

    rng = random.Random(seed)
    day, night = dt.date(2026, 3, 2), dt.date(2026, 6, 1)
    occasions, outbox, orders, items = [], [], [], []
    for customer_id in range(1, 2 * per_variant + 1):
        variant = "a" if customer_id <= per_variant else "b"
        key = {"customer_id": customer_id, "occasion": "thank_you", "occasion_date": day}
        occasions.append(
            {**key, "night": day, "language": "en", "details": "{}", "status": "selected", "reason": None}
        )
        outbox.append(
            {
                **key,
                "night": day,
                "email": f"c{customer_id}@example.com",
                "language": "en",
                "subject": "s",
                "text_body": "t",
                "html_body": "h",
                "template_hash": "x",
                "message_id": f"<{customer_id}@example.com>",
                "send_at": dt.datetime(2026, 3, 2, 9),
                "send_before": dt.datetime(2026, 3, 2, 20),
                "time_zone": "Europe/Berlin",
                "status": "sent",
                "attempts": 1,
                "variant": variant,
            }
        )
        if rng.random() < (p_b if variant == "b" else p_a):
            at = dt.datetime(2026, 3, 2 + rng.randint(0, 25), 12)
            orders.append(
                {
                    "order_id": customer_id,
                    "customer_id": customer_id,
                    "ordered_at": at,
                    "status": "placed",
                    "currency": "EUR",
                    "updated_at": at,
                    "loaded_night": night,
                }
            )
            items.append(
                {
                    "order_item_id": customer_id,
                    "order_id": customer_id,
                    "product_id": 1,
                    "quantity": 1,
                    "unit_price": Decimal("100"),
                    "unit_cost": Decimal("60"),
                    "returned_quantity": 0,
                    "updated_at": at,
                    "loaded_night": night,
                }
            )
    stage_migrate(settings)
    with warehouse_engine(settings.warehouse).begin() as conn:
        for table, rows in (
            (schema.occasions, occasions),
            (schema.outbox, outbox),
            (schema.stg_orders, orders),
            (schema.stg_order_items, items),
        ):
            conn.execute(insert(table), rows)


def test_the_report_names_a_winner_only_with_enough_customers_and_a_clear_difference(settings) -> None:
    _simulated_variants(settings, per_variant=600, p_a=0.10, p_b=0.25, seed=7)
    with warehouse_engine(settings.warehouse).connect() as conn:
        clear = variant_report(conn, dt.date(2026, 6, 1), min_sample=300)["thank_you/en"]
        too_few = variant_report(conn, dt.date(2026, 6, 1), min_sample=1000)["thank_you/en"]
    assert (clear["a_customers"], clear["b_customers"]) == (600, 600)
    h = clear["horizons"]["30"]
    assert h["b"]["customers"] == h["a"]["customers"] == 600
    # margin per customer: 40 per order, so the planted difference is 0.15 * 40 = 6.00
    low, high = h["margin_per_customer_interval"]
    assert low > 0 and low <= 6.0 <= high
    assert h["repeat_rate_uplift"] == pytest.approx(h["b"]["repeat_rate"] - h["a"]["repeat_rate"], abs=1e-4)
    assert clear["winner"] == "b" and "b - a" in clear["why"]
    assert too_few["winner"] is None and "not enough customers yet" in too_few["why"]


def test_no_winner_without_a_difference(settings) -> None:
    _simulated_variants(settings, per_variant=600, p_a=0.15, p_b=0.15, seed=11)
    with warehouse_engine(settings.warehouse).connect() as conn:
        report = variant_report(conn, dt.date(2026, 6, 1), min_sample=300)["thank_you/en"]
    low, high = report["horizons"]["30"]["margin_per_customer_interval"]
    assert low <= 0 <= high
    assert report["winner"] is None and "no clear difference" in report["why"]


def test_a_variant_that_fails_on_real_data_falls_back_to_a(settings, first_orders, tmp_path) -> None:
    """Lint passes (its samples never take the branch); a real customer's data does: that
    variant's customers get wording a, recorded as a, and the failure is reported."""
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    b = folder / "thank_you" / "en.b.jinja"
    b.write_text(
        b.read_text().replace(
            "{{ order.id }}",
            "{{ order.id }}{% if customer.first_name.startswith('N') %}{{ 1 // 0 }}{% endif %}",
            1,
        )
    )
    broken = settings.with_overrides(templates_dir=folder)
    counts = stage_render(broken, night_for_date(NIGHT, broken.time_zone), "t", SECRET)
    assert (
        "ZeroDivisionError" in counts["template_failures"]["thank_you/en.b"]
        or "division" in counts["template_failures"]["thank_you/en.b"]
    )
    box = _outbox(broken)
    assert len(box) == len(ENGLISH) + len(GERMAN)
    assert {box[c][1] for c in ENGLISH} == {"a"}
    assert all(box[c][0].startswith("Thank you for your first order") for c in ENGLISH)
