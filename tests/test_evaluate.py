"""`retention evaluate-suggestions` on the issue-shaped garden shop of tests/test_suggestions.py."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

from sqlalchemy import func, select

from retention import schema
from retention.evaluate import evaluate_suggestions
from retention.pipeline import warehouse_engine
from retention.recommend import build_recommendations
from tests.shop import Shop
from tests.test_suggestions import CUTTERS, T, _garden_shop, _night, _order

CUTOFF = (T + dt.timedelta(days=70)).date()


def _shop_with_cutter_buyers_after_the_cutoff(settings):
    shop = Shop(settings.source)
    _garden_shop(shop)
    for c in range(16, 31):  # mower, extras and chainsaw before the cut-off; a cutter after it
        _order(shop, 9000 + c, c, 75, [CUTTERS[c % 4]])
    return _night(settings, "2026-04-15")


def test_engine_finds_the_next_step_the_baselines_miss(settings) -> None:
    night = _shop_with_cutter_buyers_after_the_cutoff(settings)
    engine = warehouse_engine(settings.warehouse)
    with engine.begin() as conn:
        build_recommendations(conn, night, full_rebuild=True)
    rules = select(func.count()).select_from(schema.product_rules)
    with engine.connect() as conn:
        before = conn.execute(rules).scalar_one()
    result = evaluate_suggestions(engine, cutoff=CUTOFF, time_zone=settings.time_zone)
    methods = result["methods"]
    assert result["customers"] == 15  # customers 16-30; later buyers had no history before
    # chainsaws -> brush cutters (category level) reaches every one of them; the cutter is
    # one of four models, so the engine's single suggested model hits a quarter or more
    assert methods["engine"]["hits"] >= 4
    assert methods["popular"]["hits"] == 0  # extras and mowers, which they own or did not buy
    assert methods["engine"]["hit_rate"] > methods["popular_in_last_category"]["hit_rate"]
    # the evaluation's rules and recommendations were rolled back
    with engine.connect() as conn:
        assert conn.execute(rules).scalar_one() == before


def test_cli_prints_json(settings) -> None:
    _shop_with_cutter_buyers_after_the_cutoff(settings)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "retention.cli",
            "evaluate-suggestions",
            "--url",
            settings.warehouse_url,
            "--cutoff",
            CUTOFF.isoformat(),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    assert set(result["methods"]) == {"engine", "popular", "popular_in_last_category"}
    assert result["cutoff"] == CUTOFF.isoformat()
