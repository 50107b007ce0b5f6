"""Time, defined once: what "the night of date D" means, customers' local dates, UTC and local
conversions, and send windows. Every other module imports its time rules from here.

The warehouse stores moments as naive UTC (:func:`as_naive_utc`); a customer's calendar is their
own zone's (:func:`local_date`, :func:`local_moment`).

**Night D** is the run that, early on local date D in the shop's time zone, takes in
the shop's changes of the local day before (``[D-1 00:00, D 00:00)`` local time, as
a half-open UTC window) and prepares the messages for local date D.

Airflow hands a run its time in one of three shapes; :func:`night_from_run` turns
each into a :class:`Night`:

* a data interval that is not empty (``CronDataIntervalTimetable``): the window is
  exactly that interval and D is the local date on which it ends;
* an empty interval (``CronTriggerTimetable``, what a cron string becomes in
  Airflow 3): D is the local date of the logical date (the schedule fires at 02:00
  local on D, which is night D in every zone, whatever its UTC date);
* an empty interval at exactly 00:00 UTC (``airflow dags test DAG D`` and any other
  bare date): D is that UTC date, in every zone. Read as a moment, a bare date is the
  evening of D-1 in a zone west of UTC; but the person who typed D meant night D.
  A scheduled run cannot collide with this reading: 00:00 UTC is 02:00 local only in
  a zone at UTC+2, where the local date is the UTC date anyway;
* no logical date at all (a manual run through the API): D is the local date of
  the run's ``run_after``.

A ``night`` run parameter (``YYYY-MM-DD``) overrides all three, for re-running a
given night by hand; a night after the run's own night is refused (:class:`FutureNight`):
its window would reach past the run's time and take in rows from the future. Nothing
here reads the wall clock.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import cache
from zoneinfo import ZoneInfo

__all__ = [
    "DAYS_PER_MONTH",
    "FutureNight",
    "Night",
    "as_naive_utc",
    "as_utc",
    "days_ahead",
    "local_date",
    "local_moment",
    "night_for_date",
    "night_from_run",
    "send_window",
    "utcnow",
]

UTC = dt.UTC


#: The mean month in days (a Julian year over twelve): churn's time unit and its 90-day horizons.
DAYS_PER_MONTH = 365.25 / 12


def utcnow() -> dt.datetime:
    """The real clock as naive UTC: for leases and audit stamps only, never a business input
    (a night's time comes from its :class:`Night`)."""
    return dt.datetime.now(UTC).replace(tzinfo=None)


def as_naive_utc(moment: dt.datetime) -> dt.datetime:
    """An aware moment as naive UTC, the warehouse's form; a naive one is taken to be UTC already."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def as_utc(moment: dt.datetime | str) -> dt.datetime:
    """A warehouse moment (naive UTC, or its ISO text from SQLite) as an aware UTC datetime."""
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_date(moment: dt.datetime | str, time_zone: str) -> dt.date:
    """The local date in ``time_zone`` of a warehouse moment (naive UTC)."""
    return as_utc(moment).astimezone(_zone(time_zone)).date()


def local_moment(day: dt.date, at: dt.time, time_zone: str) -> dt.datetime:
    """Wall-clock time ``at`` on ``day`` in ``time_zone``, as naive UTC."""
    return dt.datetime.combine(day, at, tzinfo=_zone(time_zone)).astimezone(UTC).replace(tzinfo=None)


def send_window(
    day: dt.date, window: tuple[dt.time, dt.time], time_zone: str
) -> tuple[dt.datetime, dt.datetime]:
    """When a customer's send window opens and closes on their local ``day``, as naive UTC."""
    return local_moment(day, window[0], time_zone), local_moment(day, window[1], time_zone)


class FutureNight(ValueError):
    """A ``night`` param later than the run's own night: refused, it would extract the future."""


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
    times = (data_interval_start, data_interval_end, logical_date, run_after)
    if not night_param:
        return _night_of_times(time_zone, *times)
    night = night_for_date(parse_date(str(night_param)), time_zone)
    if any(times):
        own = _night_of_times(time_zone, *times)
        if night.date > own.date:
            raise FutureNight(
                f"night {night} (the 'night' param) is after this run's own night {own}: its window "
                f"would take in rows from the future; a run may re-run its own night or an earlier one"
            )
    return night


def _night_of_times(
    time_zone: str,
    data_interval_start: dt.datetime | None,
    data_interval_end: dt.datetime | None,
    logical_date: dt.datetime | None,
    run_after: dt.datetime | None,
) -> Night:
    """The night of a run from its own times alone (no ``night`` param)."""
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
    if logical_date is not None and _is_bare_date(logical_date):
        return night_for_date(logical_date.astimezone(UTC).date(), time_zone)
    return night_for_date(moment.astimezone(zone).date(), time_zone)


def _is_bare_date(moment: dt.datetime) -> bool:
    """A logical date at exactly 00:00 UTC: a date typed without a time (``dags test DAG D``).

    Only called once a non-empty data interval has been ruled out, so this is the
    empty-interval (or interval-less) shape that ``dags test`` gives.
    """
    utc = moment.astimezone(UTC)
    return utc.time() == dt.time(0, 0)


# --- whose date does night D prepare? ------------------------------------------------------------

#: Years whose clock offsets decide :func:`days_ahead` (tzdata knows past and announced rules).
OFFSET_YEARS = (2000, 2040)


@cache
def offset_range(time_zone: str) -> tuple[int, int]:
    """The smallest and largest UTC offset (minutes) ``time_zone`` uses in :data:`OFFSET_YEARS`.

    Sampled every 7 days at 00:00 and 12:00 UTC: clock-change periods last months, and a
    zone's offsets are the same few values year after year. (zoneinfo has no public list
    of a zone's transitions, so this is the way to ask it.)
    """
    zone = ZoneInfo(time_zone)
    moment = dt.datetime(OFFSET_YEARS[0], 1, 1, tzinfo=UTC)
    end = dt.datetime(OFFSET_YEARS[1] + 1, 1, 1, tzinfo=UTC)
    offsets = set()
    while moment < end:
        for hours in (0, 12):
            offset = (moment + dt.timedelta(hours=hours)).astimezone(zone).utcoffset()
            offsets.add(int(offset.total_seconds() // 60))
        moment += dt.timedelta(days=7)
    return min(offsets), max(offsets)


def _minutes(clock: dt.time) -> int:
    return clock.hour * 60 + clock.minute


@cache
def days_ahead(customer_zone: str, shop_zone: str, window_opens: dt.time, ready_by: dt.time) -> int:
    """How many days after D the local date lies that night D prepares for a customer's zone.

    Night D prepares, for every customer, the first local date whose send window
    (opening at ``window_opens`` local time) opens no earlier than the moment the night's
    messages are ready (``ready_by`` on D in the shop's zone), taking the worst case over
    the year: the customer's largest UTC offset and the shop's smallest. 0 for the shop's
    own zone and its neighbours, 1 for zones far east of the shop (Auckland, Tokyo for a
    Berlin shop): their date D's window has opened before the night is ready, so night D
    prepares their D+1, and night D-1 prepared their D. Per zone, this never changes from
    one night to the next, so every local date of every customer is prepared by exactly one
    night. (Negative for a zone far west of a far-east shop: Los Angeles customers of a
    Kiritimati shop get their D-1 from night D, which runs before that day's window opens.)
    """
    _, customer_max = offset_range(customer_zone)
    shop_min, _ = offset_range(shop_zone)
    lead = _minutes(ready_by) - _minutes(window_opens) + customer_max - shop_min
    return math.ceil(lead / (24 * 60))
