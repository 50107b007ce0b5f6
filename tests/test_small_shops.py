"""Churn and value on any shop: demo shops of 50, 300 and 2,000 customers, seeds 1 to 10.

Small shops are where the churn models fail: too few repeat customers, a likelihood too flat to
identify the model, predictions that overflow. Whatever happens, the night must complete, the
snapshot must hold one row per customer, and every churn figure must be either empty (NULL) with
the reason recorded for its model, or finite and in range (README, "Churn and value").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from retention import schema, segments
from retention.demo import DEMO_AS_OF, generate
from retention.night import night_for_date
from retention.pipeline import run_night, warehouse_engine
from retention.report import night_report
from retention.settings import Settings

SHOPS = [(size, seed) for size in (50, 300, 2000) for seed in range(1, 11)]

#: Which model's outcome explains an empty figure.
EXPLAINED_BY = {
    "p_alive": "bg_nbd",
    "expected_purchases_90d": "bg_nbd",
    "expected_order_value": "gamma_gamma",
    "clv_12m": "clv",
}
IN_RANGE = {
    "p_alive": lambda v: 0.0 <= v <= 1.0,
    "expected_purchases_90d": lambda v: v >= 0.0,
    "expected_order_value": lambda v: v >= 0.0,
    "clv_12m": lambda v: v >= 0.0,
}


@pytest.fixture(autouse=True)
def _no_chart(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The segment chart (matplotlib, half a second a night) is not what these 30 nights test."""
    monkeypatch.setattr(segments, "draw_chart", lambda night, summary, path: path)
    yield
    warehouse_engine.cache_clear()


def _night(tmp_path: Path, size: int, seed: int) -> tuple[Settings, dict]:
    settings = Settings(
        home=tmp_path,
        warehouse_url=f"sqlite:///{tmp_path / 'warehouse.db'}",
        source_url=f"sqlite:///{tmp_path / 'shop.db'}",
        time_zone="Europe/Berlin",
    )
    generate(settings.source, size, seed)
    night = night_for_date(DEMO_AS_OF, settings.time_zone)
    # The whole night with the default settings (quality gate included): it must complete.
    results = run_night(settings, night, "small")
    assert results["render"]["template_failures"] == {}
    return settings, results["segments"]


@pytest.mark.parametrize(("size", "seed"), SHOPS, ids=[f"{size}-seed{seed}" for size, seed in SHOPS])
def test_churn_figures_are_in_range_or_empty_with_a_reason(tmp_path: Path, size: int, seed: int) -> None:
    settings, counts = _night(tmp_path, size, seed)
    night = DEMO_AS_OF
    engine = warehouse_engine(settings.warehouse)
    s = schema.segment_snapshots
    with engine.connect() as conn:
        customers = conn.execute(select(func.count()).select_from(schema.stg_customers)).scalar()
        rows = conn.execute(select(s).where(s.c.night == night)).mappings().all()
    report = night_report(engine, night)["segments"]["churn"]

    assert len(rows) == customers == len({row["customer_id"] for row in rows})
    fits = counts["fits"]
    for key in ("bg_nbd", "gamma_gamma", "clv"):
        assert fits[key]["status"] in ("fitted", "partial", "fallback"), key
        assert (fits[key]["status"] == "fitted") == (fits[key]["reason"] is None), fits[key]
        assert (report[key]["status"], report[key]["reason"]) == (fits[key]["status"], fits[key]["reason"])
    empty = {figure: 0 for figure in EXPLAINED_BY}
    for row in rows:
        for figure, model in EXPLAINED_BY.items():
            value = row[figure]
            if row["frequency"] == 0:
                assert value is None, (row["customer_id"], figure)  # never bought: nothing to predict
            elif value is None:
                empty[figure] += 1
                assert fits[model]["status"] != "fitted" and fits[model]["reason"], (figure, fits[model])
            else:
                assert math.isfinite(float(value)) and IN_RANGE[figure](float(value)), (figure, value)
    assert fits["clv"]["customers"] - fits["clv"]["scored"] == empty["clv_12m"]
    if fits["bg_nbd"]["status"] == "fallback":
        assert empty["p_alive"] == fits["bg_nbd"]["customers"]
