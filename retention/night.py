"""What "the night of date D" means, defined once.

**Night D** is the run that, early on local date D in the shop's time zone, takes in
the shop's changes of the local day before (``[D-1 00:00, D 00:00)`` local time, as
a half-open UTC window) and prepares the messages for local date D.

Airflow hands a run its time in one of three shapes; :func:`night_from_run` turns
each into a :class:`Night`:

* a data interval that is not empty (``CronDataIntervalTimetable``): the window is
  exactly that interval and D is the local date on which it ends;
* an empty interval (``CronTriggerTimetable``, what a cron string becomes in
  Airflow 3, and ``airflow dags test``): D is the local date of the logical date;
* no logical date at all (a manual run through the API): D is the local date of
  the run's ``run_after``.

A ``night`` run parameter (``YYYY-MM-DD``) overrides all three, for re-running a
given night by hand. Nothing here reads the wall clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

__all__ = ["Night", "night_for_date", "night_from_run"]

UTC = dt.UTC


@dataclass(frozen=True)
class Night:
    """One night's identity and its extract window (UTC, half-open)."""

    date: dt.date
    window_start: dt.datetime
    window_end: dt.datetime
    time_zone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def window_start_naive(self) -> dt.datetime:
        """Window start as naive UTC, the way the shop database stores timestamps."""
        return self.window_start.astimezone(UTC).replace(tzinfo=None)

    @property
    def window_end_naive(self) -> dt.datetime:
        return self.window_end.astimezone(UTC).replace(tzinfo=None)

    def __str__(self) -> str:
        return self.date.isoformat()


def _local_midnight(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0, 0), tzinfo=zone).astimezone(UTC)


def night_for_date(day: dt.date | str, time_zone: str) -> Night:
    """The night D for a calendar date: the previous local day's changes."""
    if isinstance(day, str):
        day = parse_date(day)
    zone = ZoneInfo(time_zone)
    return Night(
        date=day,
        window_start=_local_midnight(day - dt.timedelta(days=1), zone),
        window_end=_local_midnight(day, zone),
        time_zone=time_zone,
    )


def parse_date(text: str) -> dt.date:
    """``YYYY-MM-DD`` to a date, with an error that says what was expected."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"night {text!r} is not a date of the form YYYY-MM-DD") from exc


def night_from_run(
    time_zone: str,
    *,
    data_interval_start: dt.datetime | None = None,
    data_interval_end: dt.datetime | None = None,
    logical_date: dt.datetime | None = None,
    run_after: dt.datetime | None = None,
    night_param: str | None = None,
) -> Night:
    """The night a DAG run stands for, from the run's own times (see the module docs)."""
    if night_param:
        return night_for_date(parse_date(str(night_param)), time_zone)
    zone = ZoneInfo(time_zone)
    if data_interval_start and data_interval_end and data_interval_end > data_interval_start:
        start = data_interval_start.astimezone(UTC)
        end = data_interval_end.astimezone(UTC)
        return Night(
            date=end.astimezone(zone).date(), window_start=start, window_end=end, time_zone=time_zone
        )
    moment = logical_date or run_after
    if moment is None:
        raise ValueError("the run has neither a data interval, a logical date, run_after nor a 'night' param")
    if moment.tzinfo is None:
        raise ValueError(f"run time {moment!r} has no time zone; Airflow passes aware datetimes")
    return night_for_date(moment.astimezone(zone).date(), time_zone)
