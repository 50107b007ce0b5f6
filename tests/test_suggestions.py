"""Suggestions that make sense (issue #12): direction of accessories, category-level
sequences, and follow-up messages that follow from the order that triggered them.

The shops are built like the demo's catalogue (a city bike and its kickstand, a laptop and
its docking station) and like the issue's garden shop (mower buyers later buying one of
five chainsaw models, then a brush cutter), small enough to reason about by hand.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import select

from retention import schema
from retention.night import night_for_date
from retention.pipeline import (
    stage_extract,
    stage_facts,
    stage_migrate,
    stage_occasions,
    stage_recommendations,
    stage_segments,
    warehouse_engine,
)
from retention.recommend import build_recommendations
from retention.sqlmodels import materialize
from tests.shop import Shop

T = dt.datetime(2026, 1, 5, 10, 0)  # the test shop's customers exist from 2026-01-01


def _order(shop: Shop, order_id: int, customer_id: int, day: int | dt.datetime, products) -> None:
    at = day if isinstance(day, dt.datetime) else T + dt.timedelta(days=day)
    shop.order(order_id, customer_id, at)
    for n, product in enumerate(products):
        shop.item(order_id * 10 + n, order_id, product, updated_at=at)


def _night(settings, night: str):
    the_night = night_for_date(night, settings.time_zone)
    stage_migrate(settings)
    stage_extract(settings, the_night, "t")
    stage_facts(settings, the_night, "t")
    return the_night


def _recommendations(settings, kind: str) -> dict[int, list[tuple[int, int]]]:
    """customer -> [(product, because)] in rank order."""
    recs = schema.recommendations
    query = (
        select(recs.c.customer_id, recs.c.product_id, recs.c.because_product_id)
        .where(recs.c.kind == kind)
        .order_by(recs.c.customer_id, recs.c.rank)
    )
    out: dict[int, list[tuple[int, int]]] = {}
    with warehouse_engine(settings.warehouse).connect() as conn:
        for row in conn.execute(query):
            out.setdefault(row.customer_id, []).append((row.product_id, row.because_product_id))
    return out


# --- accessories point from the main product to what goes with it -------------------------

BIKE, KICKSTAND, LOCK, LAPTOP, DOCK = 1, 2, 3, 4, 5


def _bike_shop(shop: Shop) -> None:
    shop.product(BIKE, name="Velomark Pro 870 City Bike", category="cycling", price="899.00")
    shop.product(
        KICKSTAND,
        name="Kickstand for Velomark Pro 870",
        category="cycling",
        price="25.00",
        accessory_for=BIKE,
    )
    shop.product(LOCK, name="Ridgeway Classic 40 Bike Lock", category="cycling", price="49.00")
    shop.product(LAPTOP, name="Voltra Pro 4 Laptop", category="computing", price="1499.00")
    shop.product(
        DOCK,
        name="Kestrel Classic 1 Docking Station",
        category="computing",
        price="149.00",
        accessory_for=LAPTOP,
    )
    for customer in range(1, 10):
        shop.customer(customer)
    for customer in range(1, 5):
        _order(shop, customer, customer, 0, [BIKE, KICKSTAND, LOCK])
    _order(shop, 5, 5, 0, [BIKE, LOCK])
    _order(shop, 6, 6, 0, [KICKSTAND])  # an accessory alone, e.g. a replacement
    _order(shop, 7, 7, 0, [LOCK])
    _order(shop, 8, 8, 0, [LAPTOP])  # the laptop and the dock were never bought together
    _order(shop, 9, 9, 0, [BIKE])


def test_accessories_follow_the_catalogue_first_and_never_point_back(settings) -> None:
    _bike_shop(Shop(settings.source))
    night = _night(settings, "2026-02-01")
    with warehouse_engine(settings.warehouse).begin() as conn:
        build_recommendations(conn, night, full_rebuild=True, min_pairs=2)
    accessories = _recommendations(settings, "accessory")
    # bike -> lock has the higher score (5 of 6 bike baskets, lift 1.25 > kickstand's 1.2),
    # but the kickstand is made for the bike: the catalogue ranks first
    assert accessories[9] == [(KICKSTAND, BIKE), (LOCK, BIKE)]
    assert accessories[5] == [(KICKSTAND, BIKE)]
    # the laptop's dock comes from the catalogue alone, never bought together yet
    assert accessories[8] == [(DOCK, LAPTOP)]
    # a kickstand or a lock never leads to the bike (more expensive, and what the kickstand
    # is made for); the lock is no accessory of the kickstand's bike-less owner either
    assert 6 not in accessories and 7 not in accessories
    # nobody is offered what they own
    assert all(product != BIKE for recs in accessories.values() for product, _ in recs)
    assert 1 not in accessories  # owns bike, kickstand and lock


# --- category-level sequences: lawn mower -> chainsaw -> brush cutter ----------------------

MOWERS = (11, 12)
CHAINSAWS = (21, 22, 23, 24, 25)
CUTTERS = (31, 32, 33, 34)
EXTRAS = (41, 42, 43, 44)  # garden extras, popular with everyone
NOTEBOOK, DOCKING = 51, 61


def _garden_shop(shop: Shop) -> None:
    """40 mower buyers; 30 of them later buy one of five chainsaws (6 each), 15 of those a
    brush cutter; everyone buys garden extras; 10 laptop buyers, 6 with the dock; then
    recent buyers: 4 of a mower only (customers 201-204), 4 of a chainsaw only (301-304),
    2 of a laptop only (401, 402)."""
    _garden_catalogue(shop)
    _garden_orders(shop)


def _garden_catalogue(shop: Shop) -> None:
    for product in MOWERS:
        shop.product(
            product, name=f"Greenvale Plus {product} Lawn Mower", category="lawn mowers", price="599.00"
        )
    for product in CHAINSAWS:
        shop.product(product, name=f"Hortex Compact {product} Chainsaw", category="chainsaws", price="299.00")
    for product in CUTTERS:
        shop.product(
            product, name=f"Fieldmaster Pro {product} Brush Cutter", category="brush cutters", price="249.00"
        )
    for product in EXTRAS:
        shop.product(product, name=f"Garden extra {product}", category="garden extras", price="29.00")
    shop.product(NOTEBOOK, name="Voltra Pro 4 Laptop", category="laptops", price="1499.00")
    shop.product(
        DOCKING,
        name="Kestrel Docking Station",
        category="docking stations",
        price="149.00",
        accessory_for=NOTEBOOK,
    )


def _garden_orders(shop: Shop) -> None:
    order = 1000
    for c in range(1, 41):
        shop.customer(c)
        order += 1
        _order(shop, order, c, c % 5, [MOWERS[c % 2]])
        order += 1
        _order(shop, order, c, 10 + c % 5, [EXTRAS[c % 4], EXTRAS[(c + 1) % 4]])
        if c <= 30:
            order += 1
            _order(shop, order, c, 30 + c % 5, [CHAINSAWS[c % 5]])
        if c <= 15:
            order += 1
            _order(shop, order, c, 60 + c % 5, [CUTTERS[c % 4]])
    for c in range(41, 101):  # extras buyers without a mower
        shop.customer(c)
        order += 1
        _order(shop, order, c, c % 7, [EXTRAS[c % 4], EXTRAS[(c + 2) % 4]])
    for c in range(101, 111):
        shop.customer(c)
        order += 1
        _order(shop, order, c, c % 3, [NOTEBOOK, DOCKING] if c <= 106 else [NOTEBOOK])
    for n, c in enumerate(range(201, 205)):
        shop.customer(c)
        order += 1
        _order(shop, order, c, 90, [MOWERS[n % 2]])
    for n, c in enumerate(range(301, 305)):
        shop.customer(c)
        order += 1
        _order(shop, order, c, 90, [CHAINSAWS[n % 5]])
    for c in (401, 402):
        shop.customer(c)
        order += 1
        _order(shop, order, c, 90, [NOTEBOOK])


def test_category_sequences_reach_mower_chainsaw_and_laptop_buyers(settings) -> None:
    _garden_shop(Shop(settings.source))
    night = _night(settings, "2026-04-15")
    with warehouse_engine(settings.warehouse).begin() as conn:
        counts = build_recommendations(conn, night, full_rebuild=True)  # default thresholds
    assert counts["rules"]["next_category"] > 0
    nexts = _recommendations(settings, "next_purchase")
    for customer in range(201, 205):  # recent mower buyers: a chainsaw, because of the mower
        assert any(p in CHAINSAWS and b in MOWERS for p, b in nexts[customer]), nexts[customer]
    for customer in range(301, 305):  # recent chainsaw buyers: a brush cutter
        assert any(p in CUTTERS and b in CHAINSAWS for p, b in nexts[customer]), nexts[customer]
    accessories = _recommendations(settings, "accessory")
    for customer in (401, 402):
        assert accessories[customer][0] == (DOCKING, NOTEBOOK)


def test_product_level_rules_alone_miss_the_split_chainsaw_demand(settings) -> None:
    """The reason for category rules: per model, mower -> chainsaw is too weak to reach the top 3."""
    _garden_shop(Shop(settings.source))
    night = _night(settings, "2026-04-15")
    with warehouse_engine(settings.warehouse).begin() as conn:
        build_recommendations(conn, night, full_rebuild=True)
        conn.execute(schema.product_rules.delete().where(schema.product_rules.c.kind == "next_category"))
        conn.execute(schema.recommendations.delete())
    # rebuild the recommendations from the product-level rules only (rules stay as they are)
    with warehouse_engine(settings.warehouse).begin() as conn:
        materialize(
            conn,
            "marts/recommendations",
            schema.recommendations,
            {"night": night.date, "top_n": 3},
            None,
            incremental=False,
        )
    nexts = _recommendations(settings, "next_purchase")
    assert not any(p in CHAINSAWS for customer in range(201, 205) for p, _ in nexts.get(customer, [])), nexts


def test_a_customer_with_a_chainsaw_gets_no_second_chainsaw_from_the_category_rule(settings) -> None:
    _garden_shop(Shop(settings.source))
    night = _night(settings, "2026-04-15")
    with warehouse_engine(settings.warehouse).begin() as conn:
        build_recommendations(conn, night, full_rebuild=True)
    nexts = _recommendations(settings, "next_purchase")
    for customer in range(16, 31):  # mower, extras and a chainsaw, no cutter yet
        assert not any(p in CHAINSAWS for p, _ in nexts.get(customer, [])), nexts[customer]


# --- the follow-up message follows from the order that triggered it ------------------------


def test_next_purchase_message_follows_from_the_last_order(settings) -> None:
    """Customer 500 bought a laptop long ago and a mower 14 nights ago: the message is about
    the mower (a chainsaw), whatever the laptop's rules score, and carries the share."""
    settings = settings.with_overrides(holdout_share=0.0, offer_classes="A,B,C")
    shop = Shop(settings.source)
    _garden_shop(shop)
    shop.customer(500)
    _order(shop, 5001, 500, 20, [NOTEBOOK])
    the_night = night_for_date("2026-04-25", settings.time_zone)
    last = dt.datetime.combine(the_night.date - dt.timedelta(days=15), dt.time(10, 0))
    _order(shop, 5002, 500, last, [MOWERS[0]])
    # the mower order arrives on its own night, 14 nights before
    arrival = night_for_date(the_night.date - dt.timedelta(days=14), settings.time_zone)
    stage_migrate(settings)
    for stage in (stage_extract, stage_facts, stage_recommendations):
        stage(settings, arrival, "t")
    for stage in (stage_extract, stage_facts, stage_segments, stage_recommendations, stage_occasions):
        stage(settings, the_night, "t")
    occ = schema.occasions
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(
            select(occ.c.occasion, occ.c.details).where(
                occ.c.customer_id == 500, occ.c.night == the_night.date
            )
        ).all()
    details = {row.occasion: json.loads(row.details) for row in rows}
    assert "next_purchase" in details, rows
    suggestion = details["next_purchase"]
    assert suggestion["because_product_id"] == MOWERS[0]
    assert suggestion["product_id"] in CHAINSAWS
    assert suggestion["rule_kind"] == "next_category"
    # 30 of the 45 mower buyers (40, 4 recent ones and customer 500) later bought a chainsaw
    assert suggestion["share"] == round(100 * 30 / 45)
