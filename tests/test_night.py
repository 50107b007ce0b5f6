"""The one definition of "the night of date D" (retention.night), for every way Airflow passes time."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from retention.night import night_for_date, night_from_run

UTC = dt.UTC


def test_night_window_is_the_previous_local_day_in_utc() -> None:
    night = night_for_date("2026-11-20", "Europe/Berlin")
    assert night.date == dt.date(2026, 11, 20)
    assert night.window_start == dt.datetime(2026, 11, 18, 23, 0, tzinfo=UTC)
    assert night.window_end == dt.datetime(2026, 11, 19, 23, 0, tzinfo=UTC)


def test_night_on_a_daylight_saving_change_has_23_hours() -> None:
    # Europe/Berlin springs forward on 2026-03-29: that local day is 23 hours long.
    night = night_for_date("2026-03-30", "Europe/Berlin")
    assert night.window_end - night.window_start == dt.timedelta(hours=23)


def test_cron_trigger_schedule_takes_the_local_date_of_the_logical_date() -> None:
    # CronTriggerTimetable("0 2 * * *", timezone="Europe/Berlin"): empty interval at 01:00Z.
    moment = dt.datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    night = night_from_run(
        "Europe/Berlin", data_interval_start=moment, data_interval_end=moment, logical_date=moment
    )
    assert night == night_for_date("2026-11-20", "Europe/Berlin")


def test_dags_test_with_a_bare_date_means_that_date() -> None:
    # `airflow dags test DAG 2026-11-20` passes 2026-11-20T00:00Z, which is 01:00 in Berlin.
    midnight = dt.datetime(2026, 11, 20, tzinfo=UTC)
    night = night_from_run(
        "Europe/Berlin", data_interval_start=midnight, data_interval_end=midnight, logical_date=midnight
    )
    assert night.date == dt.date(2026, 11, 20)


def test_cron_data_interval_schedule_uses_the_interval_itself() -> None:
    # Measured in DESIGN.md: CronDataIntervalTimetable("0 2 * * *", Europe/Berlin) under dags test.
    start = dt.datetime(2026, 11, 18, 1, 0, tzinfo=UTC)
    end = dt.datetime(2026, 11, 19, 1, 0, tzinfo=UTC)
    night = night_from_run(
        "Europe/Berlin",
        data_interval_start=start,
        data_interval_end=end,
        logical_date=dt.datetime(2026, 11, 20, tzinfo=UTC),
    )
    assert (night.date, night.window_start, night.window_end) == (dt.date(2026, 11, 19), start, end)


def test_manual_run_without_logical_date_uses_run_after() -> None:
    run_after = dt.datetime(2026, 11, 20, 22, 30, tzinfo=UTC)  # already the 21st in Tallinn
    night = night_from_run("Europe/Tallinn", logical_date=None, run_after=run_after)
    assert night.date == dt.date(2026, 11, 21)


def test_night_param_overrides_the_schedule() -> None:
    moment = dt.datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    night = night_from_run("Europe/Oslo", logical_date=moment, night_param="2026-01-05")
    assert night == night_for_date("2026-01-05", "Europe/Oslo")


def test_a_malformed_night_param_names_the_value() -> None:
    with pytest.raises(ValueError, match="'5 January'"):
        night_from_run("Europe/Oslo", night_param="5 January")


def test_a_run_with_no_time_at_all_is_refused() -> None:
    with pytest.raises(ValueError, match="neither"):
        night_from_run("Europe/Oslo")


# Issue #11, item 3: `airflow dags test retention_nightly D` is night D in every zone, and the
# scheduled run at 02:00 local on D stays night D even where that instant has another UTC date.
ZONES_WEST_TO_EAST = [
    "Pacific/Honolulu",  # UTC-10: a bare date is 14:00 of D-1 there
    "America/Los_Angeles",  # UTC-8/-7
    "Europe/Berlin",
    "Pacific/Auckland",  # UTC+12/+13: 02:00 local on D is still D-1 in UTC
    "Pacific/Kiritimati",  # UTC+14
]
DAYS = ["2026-11-20", "2026-07-04", "2028-02-29"]


@pytest.mark.parametrize("day", DAYS)
@pytest.mark.parametrize("zone", ZONES_WEST_TO_EAST)
def test_dags_test_bare_date_is_night_d_in_every_zone(zone: str, day: str) -> None:
    midnight = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(0, 0), tzinfo=UTC)
    empty = night_from_run(zone, data_interval_start=midnight, data_interval_end=midnight, logical_date=midnight)
    no_interval = night_from_run(zone, logical_date=midnight)
    assert empty == no_interval == night_for_date(day, zone)


@pytest.mark.parametrize("day", DAYS)
@pytest.mark.parametrize("zone", ZONES_WEST_TO_EAST)
def test_scheduled_run_at_two_local_is_night_d_in_every_zone(zone: str, day: str) -> None:
    # CronTriggerTimetable("0 2 * * *", timezone=zone): logical date 02:00 local on D, empty interval.
    local = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(2, 0), tzinfo=ZoneInfo(zone))
    moment = local.astimezone(UTC)
    night = night_from_run(zone, data_interval_start=moment, data_interval_end=moment, logical_date=moment)
    assert night == night_for_date(day, zone)


def test_a_run_at_midnight_utc_that_is_not_midnight_local_still_reads_the_utc_date() -> None:
    # 00:00 UTC is 02:00 local in Europe/Berlin in summer (a scheduled run): the same date either way.
    moment = dt.datetime(2026, 7, 4, 0, 0, tzinfo=UTC)
    night = night_from_run("Europe/Berlin", data_interval_start=moment, data_interval_end=moment, logical_date=moment)
    assert night.date == dt.date(2026, 7, 4)


def test_a_manual_run_after_just_past_midnight_utc_keeps_its_local_date() -> None:
    # run_after is a real moment, never a typed date: 00:00 UTC is 16:00 of the day before in Los Angeles.
    run_after = dt.datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
    night = night_from_run("America/Los_Angeles", logical_date=None, run_after=run_after)
    assert night.date == dt.date(2026, 11, 19)
