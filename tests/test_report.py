"""`retention report --json` and `retention quarantine --json` are contracts; the uplift numbers are counted by hand."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from retention import cli
from retention.night import night_for_date
from retention.occasions import in_holdout
from retention.pipeline import run_night, stage_extract, warehouse_engine
from retention.report import holdout_report
from tests.shop import Shop


@pytest.fixture
def shop(settings) -> Shop:
    shop = Shop(settings.source)
    shop.product(1)
    shop.customer(1, language="de")
    shop.customer(2, email="broken")
    shop.order(10, 1, dt.datetime(2026, 11, 19, 10, 0))
    shop.item(10, 10, 1, updated_at=dt.datetime(2026, 11, 19, 10, 0))
    return shop


def _cli_json(capsys, settings, *args: str) -> dict:
    assert cli.main([*args, "--url", settings.warehouse, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_json_has_the_documented_shape(settings, shop, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RETENTION_SOURCE_URL", settings.source)
    monkeypatch.setenv("RETENTION_HOME", str(settings.home))
    run_night(settings, night_for_date("2026-11-20", settings.time_zone), "t")
    report = _cli_json(capsys, settings, "report")
    assert report["logical_date"] == "2026-11-20"
    assert report["extract"]["rows"] == {"customers": 1, "products": 1, "orders": 1, "order_items": 1}
    assert report["extract"]["quarantined"] == {"malformed_email": 1}
    segments = report["segments"]
    assert segments["customers"] == 1
    for key in ("rfm", "abc", "lifecycle"):
        assert sum(segments[key].values()) == segments["customers"], key
    assert set(segments["abc"]) == {"A", "B", "C"}
    assert isinstance(segments["unprofitable"], int)
    assert report["occasions"] == {"thank_you": {"de": 1}}
    assert report["outbox"] == {"queued": 1}
    assert "holdout" in report


def test_quarantine_json_lists_every_row_with_rule_and_raw_row(settings, shop, capsys) -> None:
    run_night(settings, night_for_date("2026-11-20", settings.time_zone), "t")
    result = _cli_json(capsys, settings, "quarantine")
    assert result["total"] == 1
    assert result["by_rule"] == {"malformed_email": 1}
    (row,) = result["rows"]
    assert (row["source_table"], row["source_key"], row["rule"]) == ("customers", "2", "malformed_email")
    assert row["raw"]["email"] == "broken"
    assert "broken" in row["detail"]


def test_report_before_any_night_fails_with_a_reason(settings, capsys) -> None:
    from retention.pipeline import stage_migrate

    stage_migrate(settings)
    with pytest.raises(SystemExit, match="no night has run yet"):
        cli.main(["report", "--url", settings.warehouse])


def test_uplift_compares_repeat_purchases_of_messaged_and_holdout(settings) -> None:
    settings = settings.with_overrides(holdout_share=0.5)
    shop = Shop(settings.source)
    shop.product(1)
    for cid in range(1, 21):
        shop.customer(cid, birthday=dt.date(1980, 9, 1))
    holdout = [c for c in range(1, 21) if in_holdout(c, 0.5, settings.holdout_salt)]
    messaged = [c for c in range(1, 21) if c not in holdout]
    purchases = {messaged[0]: 5, messaged[1]: 40, holdout[0]: 70}  # days after the birthday
    for n, (cid, days) in enumerate(purchases.items(), start=100):
        at = dt.datetime(2026, 9, 1, 12, 0) + dt.timedelta(days=days)
        shop.order(n, cid, at, updated_at=dt.datetime(2026, 12, 1, 12, 0))
        shop.item(n, n, 1, updated_at=dt.datetime(2026, 12, 1, 12, 0))
    run_night(settings, night_for_date("2026-09-01", settings.time_zone), "t")
    stage_extract(settings, night_for_date("2026-12-15", settings.time_zone), "later")
    with warehouse_engine(settings.warehouse).connect() as conn:
        uplift = holdout_report(conn, dt.date(2026, 12, 15))["birthday"]
    m, h = len(messaged), len(holdout)
    assert uplift["messaged"]["customers"] == m and uplift["holdout"]["customers"] == h
    assert uplift["messaged"]["rate_30"] == round(1 / m, 4)  # the day-5 buyer
    assert uplift["messaged"]["rate_60"] == round(2 / m, 4)  # and the day-40 buyer
    assert uplift["holdout"]["rate_30"] == 0.0
    assert uplift["holdout"]["rate_90"] == round(1 / h, 4)  # the day-70 buyer
    assert uplift["uplift_60"] == round(round(2 / m, 4) - 0.0, 4)


def test_plain_report_shows_the_uplift_where_it_can_be_measured() -> None:
    from retention.report import format_report

    report = {
        "logical_date": "2026-12-15",
        "holdout": {
            "birthday": {
                "messaged": {"rate_30": 0.1, "rate_60": 0.2, "rate_90": None},
                "holdout": {"rate_30": 0.0, "rate_60": 0.05, "rate_90": None},
            },
            "win_back": {"messaged": {"rate_30": None}, "holdout": {}},
        },
    }
    text = format_report(report)
    assert "uplift birthday (bought again, messaged vs holdout): 30d 10% vs 0%, 60d 20% vs 5%" in text
    assert "win_back" not in text


def test_report_names_each_churn_model_with_its_status_and_reason(settings, shop, capsys, monkeypatch) -> None:
    from retention.report import churn_status, format_report

    monkeypatch.setenv("RETENTION_SOURCE_URL", settings.source)
    run_night(settings, night_for_date("2026-11-20", settings.time_zone), "t")
    churn = _cli_json(capsys, settings, "report")["segments"]["churn"]
    assert set(churn) == {"bg_nbd", "gamma_gamma", "clv"}
    assert churn["bg_nbd"]["status"] == "fallback"  # one buyer: far below the minimum
    assert churn["bg_nbd"]["reason"].startswith("too few buyers to fit BG/NBD: 0 repeat customers (minimum 20)")
    assert churn["clv"] == {
        "status": "fallback",
        "reason": "CLV of 1 of 1 buyers left empty: BG/NBD fallback; Gamma-Gamma fallback",
        "customers": 1,
        "scored": 0,
    }
    plain = format_report({"logical_date": "2026-11-20", "segments": {
        "customers": 1, "buyers": 1, "unprofitable": 0, "rfm": {}, "abc": {}, "lifecycle": {}, "churn": churn
    }})
    assert "  churn:       BG/NBD fallback, Gamma-Gamma fallback, CLV fallback" in plain
    assert f"    BG/NBD: {churn['bg_nbd']['reason']}" in plain
    # Nights logged before outcomes were recorded read as unknown, never as an error.
    assert churn_status({"bg_nbd": {"r": 1.0}})["bg_nbd"] == {
        "status": "unknown",
        "reason": "not recorded for this night",
    }
