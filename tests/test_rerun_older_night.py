"""Issue #11 items 2 and 8: re-running an older night after later ones.

A re-run of night N after later nights ran reproduces N's snapshot, occasions and outbox
exactly and leaves the current facts as they were; when N's records are missing it fails
with the reason. Checked by comparing whole warehouses: one with the re-run, one without.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from retention import schema
from retention.night import night_for_date
from retention.pipeline import NightNotReproducible, run_night, warehouse_engine
from retention.settings import Settings
from tests.shop import Shop

D = dt.date(2026, 11, 20)  # night D takes in 2026-11-19 (Berlin)

#: Columns that record when or by which run something happened, not what: left out of the comparison.
AUDIT_COLUMNS = {"run_id", "started_at", "finished_at", "lease_owner", "lease_expires_at", "sent_at"}


def _day(n: int, hour: int = 10) -> dt.datetime:
    """A moment (naive UTC) inside night D+n's window: the local day D+n-1."""
    return dt.datetime.combine(D + dt.timedelta(days=n - 1), dt.time(hour, 0))


def _year_before(n: int) -> dt.datetime:
    """A moment that is inside the trailing year of night D+n-1 and has left it at night D+n."""
    return _day(n) - dt.timedelta(days=365)


@pytest.fixture
def shop(settings) -> Shop:
    """A few customers whose trailing year changes during nights D..D+5, with occasions on the way."""
    shop = Shop(settings.source)
    shop.product(10, price="100.00", cost="60.00")
    # 1: the only order leaves the trailing year at night D+1; the profile changes on night D,
    # so that night D recomputes this customer (item 2's case).
    shop.customer(1, updated_at=_day(0, 12))
    shop.order(100, 1, _year_before(1))
    shop.item(1000, 100, 10, updated_at=_year_before(1))
    # 2: orders on night D+2, and an old order that leaves the trailing year at night D+4.
    shop.customer(2)
    shop.order(200, 2, _year_before(4))
    shop.item(2000, 200, 10, updated_at=_year_before(4))
    shop.order(201, 2, _day(2))
    shop.item(2010, 201, 10, quantity=2, updated_at=_day(2))
    # 3 and 4: big recent buyers, so that ABC classes move when 1 and 2 lose their old revenue.
    for customer, order in ((3, 300), (4, 400)):
        shop.customer(customer, language="de")
        shop.order(order, customer, _day(-30))
        shop.item(order * 10, order, 10, quantity=8, updated_at=_day(-30))
    # 5: a first order on night D+2 (a thank-you); 6: a birthday on D+3.
    shop.customer(5, time_zone="Europe/London", country="GB")
    shop.order(500, 5, _day(2, 14))
    shop.item(5000, 500, 10, updated_at=_day(2, 14))
    shop.customer(6, birthday=dt.date(1980, 11, 23))
    shop.order(600, 6, _day(-100))
    shop.item(6000, 600, 10, updated_at=_day(-100))
    return shop


def _run(settings: Settings, *offsets: int) -> None:
    for n in offsets:
        day = D + dt.timedelta(days=n)
        run_night(settings, night_for_date(day, settings.time_zone), f"run__{day}__{n}")


def _warehouse(settings: Settings) -> dict[str, list[tuple]]:
    """Every table but the run log, row by row without audit columns, in a stable order."""
    tables = {}
    with warehouse_engine(settings.warehouse).connect() as conn:
        for table in schema.metadata.sorted_tables:
            if table.name == "run_log":
                continue
            columns = [c for c in table.columns if c.name not in AUDIT_COLUMNS]
            rows = conn.execute(select(*columns)).all()
            tables[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return tables


def _assert_same(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for name in left:
        assert left[name] == right[name], f"table {name} differs"


@pytest.fixture
def second_settings(settings, tmp_path) -> Iterator[Settings]:
    """A second warehouse of the same kind (SQLite file or fresh PostgreSQL database), same shop."""
    if settings.warehouse.startswith("sqlite"):
        yield settings.with_overrides(warehouse_url=f"sqlite:///{tmp_path / 'undisturbed.db'}")
        return
    from tests.conftest import _drop_pg_database, _fresh_pg_database

    name, url = _fresh_pg_database()
    try:
        yield settings.with_overrides(warehouse_url=url)
    finally:
        warehouse_engine.cache_clear()
        _drop_pg_database(name)


def test_rerun_of_an_older_night_reproduces_it_and_keeps_the_current_facts(
    settings, second_settings, shop
) -> None:
    _run(second_settings, 0, 1, 2, 3, 4, 5)
    undisturbed = _warehouse(second_settings)
    _run(settings, 0, 1, 2, 3, 4, 5)
    results = run_night(settings, night_for_date(D + dt.timedelta(days=2), settings.time_zone), "rerun")
    _assert_same(_warehouse(settings), undisturbed)
    # The re-run says what it did: each stage reproduced night D+2's records, with their counts.
    for stage, counts in results.items():
        assert counts["reproduced"] == (
            "night 2026-11-22's rows kept as recorded (a later night 2026-11-25 has run)"
        ), stage
    box = schema.outbox
    with warehouse_engine(second_settings.warehouse).connect() as conn:
        queued = conn.execute(select(box.c.customer_id).where(box.c.night == D + dt.timedelta(days=2))).all()
    assert len(queued) >= 1  # customer 5's thank-you at least: the night has something to reproduce
    records = results["render"]["records"]
    assert records["outbox"] == {"queued": len(queued)} and records["snapshot_rows"] == 6


def test_item_2_rerun_of_d_after_d1_leaves_the_rolled_off_year_out(settings, second_settings, shop) -> None:
    """Run D, D+1, D again, D+2: customer 1's order stays out of the trailing year (item 2)."""
    _run(second_settings, 0, 1, 2)
    _run(settings, 0, 1, 0, 2)
    _assert_same(_warehouse(settings), _warehouse(second_settings))
    facts = schema.customer_facts
    with warehouse_engine(settings.warehouse).connect() as conn:
        row = conn.execute(
            select(facts.c.orders_12m, facts.c.revenue_12m).where(facts.c.customer_id == 1)
        ).one()
    assert (row.orders_12m, row.revenue_12m) == (0, 0)


def test_rerun_of_a_night_that_never_ran_fails_naming_it(settings, shop) -> None:
    _run(settings, 0, 2)
    with pytest.raises(NightNotReproducible, match=r"night 2026-11-21 cannot be reproduced.*2026-11-22"):
        _run(settings, 1)
    log_ = schema.run_log
    with warehouse_engine(settings.warehouse).connect() as conn:
        failed = conn.execute(
            select(log_.c.stage, log_.c.message).where(log_.c.night == D + dt.timedelta(days=1))
        ).all()
    assert [stage for stage, _ in failed] == ["extract"]  # the first stage stops the night
    assert "stages extract, quality, facts, segments" in failed[0].message


def test_rerun_of_a_night_whose_snapshot_was_pruned_fails_naming_it(settings, shop) -> None:
    settings = settings.with_overrides(snapshot_days=2)
    _run(settings, 0, 1, 2, 3)
    with pytest.raises(NightNotReproducible, match=r"night 2026-11-20 cannot be reproduced.*pruned"):
        _run(settings, 0)


AIRFLOW_PROBE = r"""
import datetime as dt
import json
import sys
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import AirflowFailException
from retention import schema
from retention.pipeline import stage_migrate, warehouse_engine
from retention.settings import Settings

settings = Settings()
stage_migrate(settings)
with warehouse_engine(settings.warehouse).begin() as conn:  # night 2026-11-22 has run; 2026-11-21 never did
    conn.execute(schema.run_log.insert().values(
        run_id="earlier", night=dt.date(2026, 11, 22), stage="extract", status="ok", counts="{}",
        started_at=dt.datetime(2026, 11, 22, 1, 0)))
extract = DagBag(dag_folder=sys.argv[1]).dags["retention_nightly"].task_dict["extract"]
logical = dt.datetime(2026, 11, 23, 1, 0, tzinfo=dt.UTC)  # 02:00 Berlin: the run's own night is 2026-11-23
for night in ("2026-11-21", "2026-11-24"):
    context = {"params": {"night": night, "full_refresh": False}, "run_id": "probe", "logical_date": logical}
    try:
        extract.python_callable(**context)
    except AirflowFailException as exc:
        print(json.dumps(["final", str(exc)]))
    except Exception as exc:
        print(json.dumps(["retryable", f"{type(exc).__name__}: {exc}"]))
    else:
        print(json.dumps(["passed", ""]))
"""


def test_item_8_airflow_fails_for_good_on_an_unreproducible_or_future_night(tmp_path) -> None:
    """The `night` param: an older night that cannot be reproduced, or a later night, fails at once."""
    import json
    import subprocess
    import sys

    from tests.airflow_env import ROOT, airflow_env

    env = airflow_env(tmp_path, warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}", source_url="sqlite://")
    proc = subprocess.run(
        [sys.executable, "-c", AIRFLOW_PROBE, str(ROOT / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    older, future = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert older[0] == "final", older
    assert older[1].startswith("NightNotReproducible: night 2026-11-21 cannot be reproduced"), older
    assert future[0] == "final", future
    assert future[1].startswith("FutureNight: night 2026-11-24 (the 'night' param) is after"), future
    assert "own night 2026-11-23" in future[1]
