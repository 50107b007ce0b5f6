"""Product rules and recommendations on a shop small enough to count every figure by hand.

The shop (``_garden_and_office``), days counted from ``T``; every line is kept unless noted:

    customer 1: day 0 {1 mower}          day 10 {2 chainsaw}        day 20 {3 brush cutter}
    customer 2: day 0 {1}                day 10 {2, 3}
    customer 3: day 0 {1, 4 laptop}      day 10 {2}                 day 20 {3} CANCELLED
    customer 4: day 0 {1}                day 10 {2 FULLY RETURNED}
    customer 5: day 0 {4, 5 dock}        day 10 {1}
    customer 6: day 0 {4, 5}

Product 5 (docking station) is the catalogue accessory of product 4 (laptop). Prices fall
from mower (399) to chainsaw (249) to brush cutter (149); laptop 1299, dock 149.

First purchases (cancelled and fully returned lines ignored): 6 customers; buyers of
1: 5 (c1-c5), 2: 3 (c1-c3), 3: 2 (c1, c2), 4: 3 (c3, c5, c6), 5: 2 (c5, c6).
Later-first-purchase pairs: c1 (1,2) (1,3) (2,3); c2 (1,2) (1,3) (2 and 3 share an
order: no pair); c3 (1,2) (4,2); c5 (4,1) (5,1).

Baskets (placed orders with a kept line): 11; with 1: 5, 2: 3, 3: 2, 4: 3, 5: 2.
Together: {4,5} in 2 baskets, {2,3} in 1, {1,4} in 1.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from sqlalchemy import func, inspect, select

from retention import schema
from retention.night import Night, night_for_date
from retention.pipeline import stage_extract, stage_facts, stage_migrate, warehouse_engine
from retention.recommend import build_recommendations
from tests.shop import Shop

T = dt.datetime(2026, 1, 5, 10, 0)
NIGHT = "2026-02-01"
NEXT_NIGHT = "2026-02-02"  # its window is 2026-02-01 in Berlin
IN_NEXT_WINDOW = dt.datetime(2026, 2, 1, 10, 0)

MOWER, CHAINSAW, CUTTER, LAPTOP, DOCK = 1, 2, 3, 4, 5


def _order(shop: Shop, order_id: int, customer_id: int, day: int | dt.datetime, lines, **values) -> None:
    """One order with ``lines`` as product ids or (product id, quantity, returned) triples."""
    at = day if isinstance(day, dt.datetime) else T + dt.timedelta(days=day)
    shop.order(order_id, customer_id, at, **values)
    for n, line in enumerate(lines):
        product, quantity, returned = line if isinstance(line, tuple) else (line, 1, 0)
        shop.item(
            order_id * 10 + n, order_id, product, quantity=quantity, returned_quantity=returned, updated_at=at
        )


def _garden_and_office(shop: Shop, *, noise: bool = True) -> None:
    """The shop of the module docstring; without ``noise``, no cancelled or returned order."""
    shop.product(MOWER, name="Lawn mower X200", price="399.00")
    shop.product(CHAINSAW, name="Chainsaw CS-40", price="249.00")
    shop.product(CUTTER, name="Brush cutter BC-2", price="149.00")
    shop.product(LAPTOP, name="Laptop L14", category="office", price="1299.00")
    shop.product(DOCK, name="Docking station D2", category="office", accessory_for=LAPTOP, price="149.00")
    for customer in range(1, 7):
        shop.customer(customer)
    _order(shop, 11, 1, 0, [MOWER])
    _order(shop, 12, 1, 10, [CHAINSAW])
    _order(shop, 13, 1, 20, [CUTTER])
    _order(shop, 21, 2, 0, [MOWER])
    _order(shop, 22, 2, 10, [CHAINSAW, CUTTER])
    _order(shop, 31, 3, 0, [MOWER, LAPTOP])
    _order(shop, 32, 3, 10, [CHAINSAW])
    _order(shop, 41, 4, 0, [MOWER])
    _order(shop, 51, 5, 0, [LAPTOP, DOCK])
    _order(shop, 52, 5, 10, [MOWER])
    _order(shop, 61, 6, 0, [LAPTOP, DOCK])
    if noise:
        _order(shop, 33, 3, 20, [CUTTER], status="cancelled")
        _order(shop, 42, 4, 10, [(CHAINSAW, 2, 2)])  # both units sent back


def _stage(settings, night: str, run_id: str = "t") -> Night:
    """Extract the shop into staging for a night and build the facts, as the nightly chain does."""
    the_night = night_for_date(night, settings.time_zone)
    stage_migrate(settings)
    stage_extract(settings, the_night, run_id)
    stage_facts(settings, the_night, run_id)
    return the_night


def _build(settings, night: Night, **options) -> dict:
    with warehouse_engine(settings.warehouse).begin() as conn:
        return build_recommendations(conn, night, **options)


def _rules(settings) -> dict[tuple[str, int, int], dict]:
    rules = schema.product_rules
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(select(rules).order_by(rules.c.rule_id)).mappings()
        return {(r["kind"], r["antecedent_product_id"], r["consequent_product_id"]): dict(r) for r in rows}


def _recommendations(settings) -> list[tuple]:
    recs = schema.recommendations
    query = select(
        recs.c.customer_id,
        recs.c.kind,
        recs.c.rank,
        recs.c.product_id,
        recs.c.because_product_id,
        recs.c.score,
    ).order_by(recs.c.customer_id, recs.c.kind, recs.c.rank)
    with warehouse_engine(settings.warehouse).connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def _figures(rule: dict) -> tuple[Fraction, Fraction, Fraction, int]:
    return (Fraction(rule["support"]), Fraction(rule["confidence"]), Fraction(rule["lift"]), rule["pairs"])


def _expected(support: Fraction, confidence: Fraction, lift: Fraction, pairs: int) -> tuple:
    """The figures as stored: support and confidence to 6 decimals, lift to 4."""
    return (round(support, 6), round(confidence, 6), round(lift, 4), pairs)


def _score(confidence: Fraction, lift: Fraction) -> Decimal:
    """confidence x lift of the stored (rounded) figures, to 6 decimals."""
    score = round(round(confidence, 6) * round(lift, 4), 6)
    return Decimal(score.numerator) / Decimal(score.denominator)  # exact: the denominator divides 10**6


@pytest.fixture
def garden(settings) -> Night:
    _garden_and_office(Shop(settings.source))
    return _stage(settings, NIGHT)


def test_sequence_rules_count_first_purchases_per_customer(settings, garden) -> None:
    counts = _build(settings, garden, min_pairs=2)
    rules = {key: rule for key, rule in _rules(settings).items() if key[0] == "next_purchase"}
    assert set(rules) == {("next_purchase", MOWER, CHAINSAW), ("next_purchase", MOWER, CUTTER)}
    assert counts["rules"]["next_purchase"] == 2
    # mower -> chainsaw: c1, c2, c3 of 6 customers; 5 bought a mower; 3 of 6 bought a chainsaw
    assert _figures(rules["next_purchase", MOWER, CHAINSAW]) == _expected(
        Fraction(3, 6), Fraction(3, 5), Fraction(3, 5) / Fraction(3, 6), 3
    )
    # mower -> brush cutter: c1, c2 (c3's cutter was cancelled); 2 of 6 bought a cutter
    assert _figures(rules["next_purchase", MOWER, CUTTER]) == _expected(
        Fraction(2, 6), Fraction(2, 5), Fraction(2, 5) / Fraction(2, 6), 2
    )
    assert rules["next_purchase", MOWER, CHAINSAW]["night"] == garden.date


def test_rules_need_a_lift_above_one(settings, garden) -> None:
    _build(settings, garden, min_pairs=1)
    sequences = {key[1:] for key in _rules(settings) if key[0] == "next_purchase"}
    # chainsaw -> cutter: 1 pair, confidence 1/3, lift (1/3) / (2/6) = 1 exactly: not above one.
    # laptop -> chainsaw 2/3, laptop -> mower 2/5, dock -> mower 3/5: below one.
    assert sequences == {(MOWER, CHAINSAW), (MOWER, CUTTER)}


def test_basket_rules_count_orders_in_the_accessory_direction_only(settings, garden) -> None:
    _build(settings, garden, min_pairs=1)
    rules = {key[1:]: rule for key, rule in _rules(settings).items() if key[0] == "accessory"}
    # {1,4} together once: lift (1/5) / (3/11) = 11/15 and (1/3) / (5/11) = 11/15, both below one.
    # dock -> laptop and cutter -> chainsaw pass the figures but point from the cheaper product
    # (and from the dock to the product it is made for): never kept.
    assert set(rules) == {(LAPTOP, DOCK), (CHAINSAW, CUTTER)}
    # laptop -> dock: 2 of 11 baskets; 3 baskets with a laptop; 2 of 11 with a dock
    assert _figures(rules[LAPTOP, DOCK]) == _expected(
        Fraction(2, 11), Fraction(2, 3), Fraction(2, 3) / Fraction(2, 11), 2
    )
    # chainsaw -> cutter: order 22 only; 3 baskets with a chainsaw, 2 with a cutter
    assert _figures(rules[CHAINSAW, CUTTER]) == _expected(
        Fraction(1, 11), Fraction(1, 3), Fraction(1, 3) / Fraction(2, 11), 1
    )


def test_thresholds_keep_catalogue_accessories_bought_together(settings, garden) -> None:
    counts = _build(settings, garden)  # defaults: min_pairs 3, min_confidence 0.05
    # mower -> chainsaw has 3 pairs; mower -> cutter (2) and dock -> laptop (2) fall short;
    # laptop -> dock (2 pairs) stays: the dock is the laptop's accessory in the catalogue.
    assert set(_rules(settings)) == {("next_purchase", MOWER, CHAINSAW), ("accessory", LAPTOP, DOCK)}
    assert counts["rules"] == {"next_purchase": 1, "accessory": 1, "next_category": 0}
    _build(settings, garden, min_pairs=2, min_confidence=0.5)
    # confidence: mower -> cutter 2/5 < 0.5 goes; mower -> chainsaw 3/5 stays; dock -> laptop
    # (confidence 1) points the wrong way and never counts
    assert set(_rules(settings)) == {("next_purchase", MOWER, CHAINSAW), ("accessory", LAPTOP, DOCK)}


def test_rule_ids_are_unique_and_dense_across_kinds(settings, garden) -> None:
    _build(settings, garden, min_pairs=1)
    _build(settings, garden, min_pairs=1)  # a re-run replaces, never adds
    ids = [rule["rule_id"] for rule in _rules(settings).values()]
    assert ids == list(range(1, 5))  # 2 sequence rules, 2 accessory rules


def test_cancelled_orders_and_fully_returned_lines_are_ignored(settings, tmp_path) -> None:
    """The rules are exactly those of the same shop without the cancelled and the returned order."""
    clean = settings.model_copy(
        update={
            "warehouse_url": f"sqlite:///{tmp_path / 'clean.db'}",
            "source_url": f"sqlite:///{tmp_path / 'clean-shop.db'}",
        }
    )
    _garden_and_office(Shop(settings.source), noise=True)
    _garden_and_office(Shop(clean.source), noise=False)
    noisy_night, clean_night = _stage(settings, NIGHT), _stage(clean, NIGHT)
    _build(settings, noisy_night, min_pairs=1)
    _build(clean, clean_night, min_pairs=1)

    def as_numbers(rules: dict) -> dict:
        return {key: _figures(rule) for key, rule in rules.items()}

    assert as_numbers(_rules(settings)) == as_numbers(_rules(clean))


def test_recommendations_skip_owned_products(settings, garden) -> None:
    counts = _build(settings, garden, min_pairs=2)
    chainsaw = _score(Fraction(3, 5), Fraction(6, 5))  # 0.72
    cutter = _score(Fraction(2, 5), Fraction(6, 5))  # 0.48
    dock = _score(Fraction(2, 3), Fraction(11, 3))  # 0.666667 x 3.6667
    assert _recommendations(settings) == [
        # c1, c2 own all three garden products. c3's cancelled cutter is not owned; the
        # chainsaw is. The laptop -> dock rule reaches c3 through the laptop.
        (3, "accessory", 1, DOCK, LAPTOP, dock),
        (3, "next_purchase", 1, CUTTER, MOWER, cutter),
        # c4 sent the chainsaw back: not a purchase for the rules, but not suggested again
        (4, "next_purchase", 1, CUTTER, MOWER, cutter),
        # c5 bought the mower after the laptop and dock, which they own: no accessory
        (5, "next_purchase", 1, CHAINSAW, MOWER, chainsaw),
        (5, "next_purchase", 2, CUTTER, MOWER, cutter),
        # c6 owns laptop and dock, and no sequence rule starts from them
    ]
    assert counts["customers"] == 3
    assert counts["rows"] == 5
    assert counts["rows_by_kind"] == {"next_purchase": 4, "accessory": 1}


def test_explanations_quote_names_and_share(settings, garden) -> None:
    _build(settings, garden, min_pairs=2)
    recs = schema.recommendations
    with warehouse_engine(settings.warehouse).connect() as conn:
        texts = dict(
            conn.execute(
                select(recs.c.kind, recs.c.explanation).where(recs.c.customer_id == 5, recs.c.rank == 1)
            ).all()
        )
        dock = conn.execute(
            select(recs.c.explanation).where(recs.c.customer_id == 3, recs.c.kind == "accessory")
        ).scalar_one()
    assert texts == {
        "next_purchase": "Customers who bought Lawn mower X200 often buy Chainsaw CS-40 next (60 % of them)."
    }
    assert dock == "Docking station D2 is made for Laptop L14; 67 % of orders with Laptop L14 include it."


def test_equal_scores_rank_by_product_id(settings) -> None:
    """Tent -> stove and tent -> sleeping bag have the same figures; the lower product id ranks first."""
    shop = Shop(settings.source)
    tent, sleeping_bag, stove, umbrella = 1, 2, 3, 9
    for product, name in (
        (stove, "Camping stove"),
        (sleeping_bag, "Sleeping bag"),
        (tent, "Tent"),
        (umbrella, "Umbrella"),
    ):
        shop.product(product, name=name)
    for customer in range(1, 7):
        shop.customer(customer)
    # stove buyers come first, so insertion order would put the stove first
    _order(shop, 11, 1, 0, [tent])
    _order(shop, 12, 1, 5, [stove])
    _order(shop, 21, 2, 0, [tent])
    _order(shop, 22, 2, 5, [stove])
    _order(shop, 31, 3, 0, [tent])
    _order(shop, 32, 3, 5, [sleeping_bag])
    _order(shop, 41, 4, 0, [tent])
    _order(shop, 42, 4, 5, [sleeping_bag])
    _order(shop, 51, 5, 0, [tent])
    _order(shop, 61, 6, 0, [umbrella])
    night = _stage(settings, NIGHT)
    # each: 2 pairs of 6 customers, confidence 2/5, lift (2/5) / (2/6) = 6/5, score 0.48
    _build(settings, night, min_pairs=2)
    tie = _score(Fraction(2, 5), Fraction(6, 5))
    expected = [
        (1, "next_purchase", 1, sleeping_bag, tent, tie),
        (2, "next_purchase", 1, sleeping_bag, tent, tie),
        (3, "next_purchase", 1, stove, tent, tie),
        (4, "next_purchase", 1, stove, tent, tie),
        (5, "next_purchase", 1, sleeping_bag, tent, tie),  # c5 has only the tent: a tie
        (5, "next_purchase", 2, stove, tent, tie),
    ]
    assert _recommendations(settings) == expected
    _build(settings, night, min_pairs=2, top_n=1)
    assert _recommendations(settings) == expected[:5]


def test_full_rebuild_leaves_the_counted_rows_indexed(settings, garden) -> None:
    """A full rebuild loads the counted rows with their secondary indexes dropped and built again
    afterwards (issue 15): the indexes are there, as the migrations made them, and serve."""
    _build(settings, garden, min_pairs=2, full_rebuild=True)
    engine = warehouse_engine(settings.warehouse)
    for table in ("rule_first_purchases", "rule_basket_items"):
        made = {index.name for index in schema.metadata.tables[table].indexes}
        assert made and made <= {ix["name"] for ix in inspect(engine).get_indexes(table)}, table
    with engine.connect() as conn:
        baskets = conn.execute(select(func.count()).select_from(schema.rule_basket_items)).scalar_one()
    assert baskets > 0


def test_incremental_night_recomputes_changed_customers_like_a_full_rebuild(settings) -> None:
    shop = Shop(settings.source)
    _garden_and_office(shop)
    first = _stage(settings, NIGHT, "n1")
    _build(settings, first, min_pairs=2)
    before = _recommendations(settings)
    # next night: c4 buys the brush cutter (was their suggestion); c7 is new and buys a mower
    shop.customer(7, updated_at=IN_NEXT_WINDOW)
    _order(shop, 71, 7, IN_NEXT_WINDOW, [MOWER])
    _order(shop, 43, 4, IN_NEXT_WINDOW, [CUTTER])
    second = _stage(settings, NEXT_NIGHT, "n2")

    counts = _build(settings, second, min_pairs=2)
    incremental = _recommendations(settings)
    assert counts["mode"] == "incremental"
    _build(settings, second, min_pairs=2, full_rebuild=True)
    full = _recommendations(settings)

    changed = {4, 7}
    assert [r for r in incremental if r[0] in changed] == [r for r in full if r[0] in changed]
    # c4 owns everything now; c7 gets the rules of a mower buyer
    assert [r[:5] for r in full if r[0] in changed] == [
        (7, "next_purchase", 1, CHAINSAW, MOWER),
        (7, "next_purchase", 2, CUTTER, MOWER),
    ]
    # unchanged customers keep last night's rows until they change or a full rebuild runs
    assert [r for r in incremental if r[0] not in changed] == [r for r in before if r[0] not in changed]
    # an incremental re-run after the full rebuild leaves it as it is
    _build(settings, second, min_pairs=2)
    assert _recommendations(settings) == full
