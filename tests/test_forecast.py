"""Issue #13, "What will go out tomorrow": the forecast of the next night writes nothing, and is what
the night then records, row for row, on SQLite and PostgreSQL.

The warehouse is the demo shop of `make demo` (2,000 customers, seed 42) after its night D
(2026-11-22). The oracle then forecasts the next night, runs that night for real with no new
source data, and compares; ten nights in a row (five on PostgreSQL), so that the weekly cap, the periods of
next_purchase/accessory and win_back entries (recency grows by a day per night, and customers
cross into the dissolution phase) are exercised against the projected snapshot.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi import Header, HTTPException
from sqlalchemy import Engine, MetaData, select
from sqlalchemy.exc import DBAPIError, SAWarning

from retention import schema
from retention.cli import main
from retention.demo import DEMO_AS_OF, generate
from retention.forecast import _read_only, forecast, next_night, projected_snapshot
from retention.night import night_for_date
from retention.pipeline import run_night, warehouse_engine
from retention.segments import CHURN_FIGURES
from retention.settings import Settings
from retention.web.retention_app import create_retention_app
from tests.conftest import PG_URL, SECRET, _drop_pg_database, _fresh_pg_database

#: Nights the oracle forecasts and then runs (about 30 candidates a night on the 2,000-customer demo),
#: and the fewest candidates it must compare: on PostgreSQL a real night takes about 30 s (its
#: recommendations stage), so fewer nights there; the SQL and the read-only transaction are the same.
ORACLE_NIGHTS = {"sqlite": (10, 300), "postgresql": (5, 120)}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a warehouse holding the demo shop's night D (fresh per dialect and module)."""
    home = tmp_path_factory.mktemp(f"forecast-{request.param}")
    pg_name = None
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'warehouse.db'}"
    elif not PG_URL:
        pytest.skip("RETENTION_TEST_PG_URL is not set")
    else:
        pg_name, url = _fresh_pg_database()
    settings = Settings(
        home=home, warehouse_url=url, source_url=f"sqlite:///{home / 'shop.db'}", time_zone="Europe/Berlin"
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RETENTION_UNSUBSCRIBE_SECRET", SECRET.decode())
        try:
            generate(settings.source, 2_000, 42)
            run_night(settings, night_for_date(DEMO_AS_OF, settings.time_zone), "demo")
            yield settings
        finally:
            warehouse_engine(settings.warehouse).dispose()
            warehouse_engine.cache_clear()
            if pg_name:
                _drop_pg_database(pg_name)


def _checksums(engine: Engine) -> dict[str, tuple[int, str]]:
    """Every warehouse table: (row count, hash of its rows in a total order of all columns)."""
    meta = MetaData()
    with warnings.catch_warnings():  # an expression index is not reflected; the rows are what count
        warnings.simplefilter("ignore", SAWarning)
        meta.reflect(engine)
    found = {}
    with engine.connect() as conn:
        for name, table in sorted(meta.tables.items()):
            digest = hashlib.sha256()
            count = 0
            for row in conn.execute(select(table).order_by(*table.c)):
                digest.update(repr(tuple(row)).encode())
                count += 1
            found[name] = (count, digest.hexdigest())
    return found


def _value(value: object) -> object:
    """One snapshot value, comparable across a stored row and a computed one (Decimal, float, 0/1)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, Decimal)):
        return round(float(value), 4)
    return str(value) if isinstance(value, dt.date) else value


def _snapshot(rows) -> dict[int, tuple]:
    """customer -> the snapshot's columns but the churn figures (a forecast fits no churn model)."""
    kept = [c.name for c in schema.segment_snapshots.columns if c.name not in CHURN_FIGURES]
    return {int(r["customer_id"]): tuple(_value(r[name]) for name in kept) for r in rows}


def _key(row) -> tuple:
    return (
        row.customer_id,
        row.occasion,
        dt.date.fromisoformat(str(row.occasion_date)),
        row.status,
        row.reason,
    )


# --- (a) nothing is written ---------------------------------------------------------------------


def test_a_forecast_writes_nothing_to_any_table(demo: Settings) -> None:
    engine = warehouse_engine(demo.warehouse)
    before = _checksums(engine)
    assert "occasions" in before and before["occasions"][0] > 0
    projected = forecast(engine, None, demo)  # the next night: no snapshot yet, projected
    rerun = forecast(engine, night_for_date(DEMO_AS_OF, demo.time_zone), demo)  # a night that ran
    assert projected.night == DEMO_AS_OF + dt.timedelta(days=1) and projected.projected_snapshot
    assert projected.rows and rerun.rows and not rerun.projected_snapshot
    assert _checksums(engine) == before


def test_the_forecast_reads_through_a_connection_that_cannot_write(demo: Settings) -> None:
    engine = warehouse_engine(demo.warehouse)
    with _read_only(engine) as conn, pytest.raises(DBAPIError, match="read-?only"):
        conn.execute(schema.run_log.delete())
    with engine.begin() as conn:  # the pooled connection writes again afterwards
        conn.execute(schema.changed_customers.insert(), [{"night": dt.date(2000, 1, 1), "customer_id": 1}])
        conn.execute(
            schema.changed_customers.delete().where(schema.changed_customers.c.night == dt.date(2000, 1, 1))
        )


def test_the_forecast_of_a_night_that_ran_is_what_it_recorded(demo: Settings) -> None:
    engine = warehouse_engine(demo.warehouse)
    result = forecast(engine, night_for_date(DEMO_AS_OF, demo.time_zone), demo)
    occ = schema.occasions
    with engine.connect() as conn:
        recorded = sorted(_key(r) for r in conn.execute(select(occ).where(occ.c.night == DEMO_AS_OF)))
    assert sorted(_key(r) for r in result.rows) == recorded and len(recorded) > 100


def test_without_a_recorded_night_the_default_night_is_refused_with_the_way_out(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, warehouse_url=f"sqlite:///{tmp_path / 'w.db'}", time_zone="Europe/Berlin"
    )
    from retention.migrate import upgrade

    engine = warehouse_engine(settings.warehouse)
    upgrade(engine)
    with pytest.raises(ValueError, match="no night has recorded occasions yet.*pass a night"):
        next_night(engine, settings)


# --- (c) the command ----------------------------------------------------------------------------


def test_the_command_prints_every_count_and_its_json_parses(demo: Settings, capsys) -> None:
    expected = forecast(warehouse_engine(demo.warehouse), None, demo)
    assert main(["forecast", "--url", demo.warehouse]) == 0
    out = capsys.readouterr().out
    assert f"forecast of night {expected.night} (latest recorded night: {DEMO_AS_OF})" in out
    for occasion, language, status, n in expected.counts():
        assert f"{occasion:14} {language:8} {status:9} {n:>6}" in out
    assert "thank_you      estimate  follows the orders that arrive today" in out
    assert "win_back       exact     exact but for customers who order today" in out

    assert main(["forecast", "--url", demo.warehouse, "--json", "--limit", "5"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["night"] == expected.night.isoformat() and parsed["based_on"] == DEMO_AS_OF.isoformat()
    assert parsed["rows_total"] == len(expected.rows) and len(parsed["rows"]) == 5
    assert sum(c["count"] for c in parsed["counts"]) == len(expected.rows)
    assert parsed["notes"]["thank_you"]["exact"] is False and parsed["notes"]["birthday"]["exact"] is True
    first = expected.rows[0]
    assert parsed["rows"][0] == {
        "customer_id": first.customer_id,
        "occasion": first.occasion,
        "language": first.language,
        "occasion_date": first.occasion_date.isoformat(),
        "status": first.status,
        "reason": first.reason,
    }


def test_the_command_forecasts_a_given_night(demo: Settings, capsys) -> None:
    later = DEMO_AS_OF + dt.timedelta(days=3)
    assert main(["forecast", "--url", demo.warehouse, "--night", later.isoformat(), "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["night"] == later.isoformat() and parsed["projected_snapshot"] is True
    assert main(["forecast", "--url", demo.warehouse, "--night", "23.11.2026"]) == 1
    assert "night '23.11.2026' is not a date of the form YYYY-MM-DD" in capsys.readouterr().err


# --- (d) the page -------------------------------------------------------------------------------


def _app(settings: Settings):
    def require_user(x_user: str | None = Header(None)) -> str:
        if not x_user:
            raise HTTPException(401, "log in")
        return x_user

    return create_retention_app(require_user, settings=settings, engine=warehouse_engine(settings.warehouse))


async def _get(app, user: str | None, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.get(path, headers={"x-user": user} if user else {})


def test_the_tomorrow_page_shows_the_counts_to_a_logged_in_user_only(demo: Settings) -> None:
    app = _app(demo)
    expected = forecast(warehouse_engine(demo.warehouse), None, demo)
    assert asyncio.run(_get(app, None, "/tomorrow")).status_code == 401
    page = asyncio.run(_get(app, "anna", "/tomorrow"))
    assert page.status_code == 200, page.text
    assert f"What night {expected.night} will decide" in page.text
    for occasion, language, status, n in expected.counts():
        row = f'<tr><td>{occasion}</td><td>{language}</td><td class="o-{status}">{status}</td><td class="n">{n}</td></tr>'
        assert row in page.text
    assert f"{len(expected.rows)} of {len(expected.rows)} matching candidates" in page.text
    assert '<a href="./tomorrow">Tomorrow</a>' in asyncio.run(_get(app, "anna", "/")).text


def test_the_tomorrow_page_searches_all_candidates(demo: Settings) -> None:
    app = _app(demo)
    expected = forecast(warehouse_engine(demo.warehouse), None, demo)
    customer = expected.rows[-1].customer_id
    theirs = [r for r in expected.rows if r.customer_id == customer]
    page = asyncio.run(_get(app, "anna", f"/tomorrow?q={customer}&limit=5"))
    assert f"{len(theirs)} of {len(theirs)} matching candidates (of {len(expected.rows)})" in page.text
    assert page.text.count(f'<a href="./?q={customer}">{customer}</a>') == len(theirs)
    consent = sum(1 for r in expected.rows if r.reason == "no marketing consent")
    page = asyncio.run(_get(app, "anna", "/tomorrow?q=marketing+consent&limit=3"))
    assert f"{min(consent, 3)} of {consent} matching candidates" in page.text
    assert asyncio.run(_get(app, "anna", "/tomorrow?night=tomorrow")).status_code == 400


# --- (b) the oracle: the real next night records what was forecast (runs nights: last) ----------


def test_the_next_night_records_exactly_the_forecast(demo: Settings) -> None:
    engine = warehouse_engine(demo.warehouse)
    occ = schema.occasions
    compared: list[tuple] = []
    moved_abc = 0  # customers whose ABC class changed overnight (orders leaving the trailing year)
    nights, at_least = ORACLE_NIGHTS[engine.dialect.name]
    for i in range(nights):
        predicted = forecast(engine, None, demo)
        assert predicted.night == DEMO_AS_OF + dt.timedelta(days=i + 1) and predicted.projected_snapshot
        night = night_for_date(predicted.night, demo.time_zone)
        projection = _snapshot(projected_snapshot(engine, night, demo))
        run_night(demo, night, f"oracle_{i}")
        with engine.connect() as conn:
            snap = schema.segment_snapshots
            real = _snapshot(conn.execute(select(snap).where(snap.c.night == night.date)).mappings())
            before = _snapshot(
                conn.execute(select(snap).where(snap.c.night == night.date - dt.timedelta(days=1))).mappings()
            )
        # the projected segments are the night's, every customer, every column but the churn figures
        assert projection == real, f"night {night}: {[c for c in real if real[c] != projection.get(c)][:5]}"
        abc = [c.name for c in schema.segment_snapshots.columns if c.name not in CHURN_FIGURES].index(
            "abc_class"
        )
        moved_abc += sum(1 for c in real if c in before and real[c][abc] != before[c][abc])
        with engine.connect() as conn:
            recorded = [
                _key(r)
                for r in conn.execute(
                    select(occ)
                    .where(occ.c.night == predicted.night)
                    .order_by(occ.c.customer_id, occ.c.occasion_id)
                )
            ]
        # the same rows, in the same (decision) order
        assert [_key(r) for r in predicted.rows] == recorded, f"night {predicted.night}"
        compared += recorded
    by_occasion = Counter(row[1] for row in compared)
    reasons = {row[4].split(":")[0] for row in compared if row[4]}
    assert len(compared) >= at_least, len(compared)
    assert moved_abc > 0  # the projection of the facts' trailing year was exercised
    assert sum(1 for n in by_occasion.values() if n >= 20) >= 4, by_occasion
    assert by_occasion["win_back"] >= 1, by_occasion  # entries into dissolution, from the projection
    # the people rules were exercised: consent, the holdout, a cap (daily cap in the first five
    # nights, weekly caps once customers have had two messages in a week)
    assert {"no marketing consent", "control group"} <= reasons, reasons
    assert reasons & {"daily cap", "weekly cap"}, reasons
    if nights >= 10:
        assert "weekly cap" in reasons, reasons


def test_a_date_an_earlier_night_decided_is_forecast_as_the_night_decides_it(settings, shop) -> None:
    """A customer moves from Auckland to Berlin: night 22 November prepared their 23rd (a birthday),
    and night 23 November prepares Berlin's 23rd as well. Forecast once the night's data is in (its
    stages up to recommendations ran), the birthday is not decided again and the first order's
    thank-you yields to it, exactly as the night's occasions stage then records."""
    from retention.pipeline import (
        stage_extract,
        stage_facts,
        stage_migrate,
        stage_occasions,
        stage_quality,
        stage_recommendations,
        stage_segments,
    )

    shop.customer(
        4, time_zone="Pacific/Auckland", birthday=dt.date(1990, 11, 23), updated_at=dt.datetime(2026, 1, 1)
    )
    run_night(settings, night_for_date("2026-11-22", settings.time_zone), "t")
    shop.customer(
        4, time_zone="Europe/Berlin", birthday=dt.date(1990, 11, 23), updated_at=dt.datetime(2026, 11, 22, 12)
    )
    shop.order(40, 4, dt.datetime(2026, 11, 22, 13, 0))
    shop.item(40, 40, 1, updated_at=dt.datetime(2026, 11, 22, 13, 0))
    night = night_for_date("2026-11-23", settings.time_zone)
    stage_migrate(settings)
    for stage in (stage_extract, stage_quality, stage_facts, stage_segments, stage_recommendations):
        stage(settings, night, "t")
    engine = warehouse_engine(settings.warehouse)
    predicted = forecast(engine, night, settings)
    assert not predicted.projected_snapshot
    assert [(r.customer_id, r.occasion, r.status, r.reason) for r in predicted.rows] == [
        (4, "thank_you", "skipped", "daily cap: birthday goes out today")
    ]
    stage_occasions(settings, night, "t")
    occ = schema.occasions
    with engine.connect() as conn:
        recorded = [_key(r) for r in conn.execute(select(occ).where(occ.c.night == night.date))]
    assert [_key(r) for r in predicted.rows] == recorded
