"""Issue #11, item 7: a customer far east of the shop gets their greeting on their own date, in time.

Night D runs at 02:00 in the shop's zone (Berlin); in Auckland it is already the afternoon of
D then, so a message for Auckland's D prepared by night D could only go out late, or, with a
slow night, roll to D+1. The rule (README, "The night"): night D prepares, for every
customer, the first local date whose send window opens no earlier than
``RETENTION_MESSAGES_READY_BY`` on D in the shop's zone, in the worst case over the year's
clock changes. Far-east zones are thus prepared a day ahead; each local date exactly once.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, available_timezones

import pytest
from sqlalchemy import select

from retention import schema
from retention.mailer import SmtpConfig
from retention.night import days_ahead, night_for_date
from retention.occasions import target_date
from retention.pipeline import run_night, stage_deliver, warehouse_engine
from retention.settings import Settings
from tests.conftest import SECRET
from tests.shop import Shop

UTC = dt.UTC
NINE, SIX = dt.time(9, 0), dt.time(6, 0)


def _moment(day: dt.date, at: dt.time, zone: str) -> dt.datetime:
    return dt.datetime.combine(day, at, tzinfo=ZoneInfo(zone)).astimezone(UTC)


@pytest.mark.parametrize(
    ("zone", "ahead"),
    [
        ("Europe/Berlin", 0),
        ("Europe/London", 0),
        ("Europe/Tallinn", 0),  # 09:00 EET(S) is 07:00/06:00 UTC, after 06:00 Berlin (05:00/04:00 UTC)
        ("Europe/Moscow", 0),  # +04:00 in 2011-2014: 09:00 is 05:00 UTC, exactly 06:00 Berlin in winter
        ("America/Los_Angeles", 0),
        ("America/Sao_Paulo", 0),
        ("Pacific/Pago_Pago", 0),
        ("Asia/Kolkata", 1),  # 09:00 IST is 03:30 UTC, before 06:00 Berlin
        ("Asia/Tokyo", 1),
        ("Australia/Sydney", 1),
        ("Australia/Lord_Howe", 1),  # half-hour clock change
        ("Pacific/Auckland", 1),
        ("Pacific/Kiritimati", 1),
    ],
)
def test_item_7_zones_far_east_of_a_berlin_shop_are_prepared_a_day_ahead(zone, ahead) -> None:
    assert days_ahead(zone, "Europe/Berlin", NINE, SIX) == ahead


def test_item_7_a_shop_far_east_prepares_the_west_coast_the_day_before() -> None:
    # Night D of a Kiritimati shop starts at 02:00 on D, which is 04:00 on D-1 in Los Angeles.
    assert days_ahead("America/Los_Angeles", "Pacific/Kiritimati", NINE, SIX) == -1
    assert days_ahead("Pacific/Kiritimati", "Pacific/Kiritimati", NINE, SIX) == 0


def test_item_7_the_ready_time_decides_who_is_prepared_ahead() -> None:
    # later: Tallinn's 09:00 (06:00 or 07:00 UTC) comes before 08:00 Berlin (07:00 UTC in winter)
    assert days_ahead("Europe/Tallinn", "Europe/Berlin", NINE, dt.time(8, 0)) == 1
    # earlier: Kolkata's 09:00 (03:30 UTC) comes after 02:00 Berlin (01:00 UTC), Tokyo's (00:00 UTC) before
    assert days_ahead("Asia/Kolkata", "Europe/Berlin", NINE, dt.time(2, 0)) == 0
    assert days_ahead("Asia/Tokyo", "Europe/Berlin", NINE, dt.time(2, 0)) == 1


@pytest.mark.parametrize("shop_zone", ["Europe/Berlin", "America/Los_Angeles", "Pacific/Auckland"])
def test_item_7_every_zone_every_night_of_a_year_gets_its_date_in_time_and_exactly_once(shop_zone) -> None:
    """For every IANA zone and every night of 2027 (both clock changes in both hemispheres):

    - the send window of the prepared date opens at or after the night's ready moment, with the
      real offsets of that day (the guarantee, whatever the season);
    - the prepared dates of consecutive nights follow each other day by day (each local date
      prepared once, none skipped);
    - and never more than a day too early: the window of the date before the prepared one
      opens less than 2 hours after the ready moment (2 hours: both zones' clock changes).
    """
    settings = Settings(time_zone=shop_zone)
    zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))
    problems = []
    for zone in zones:
        previous = None
        for k in range(365):
            night = night_for_date(dt.date(2027, 1, 1) + dt.timedelta(days=k), shop_zone)
            ready = _moment(night.date, settings.messages_ready_by, shop_zone)
            day = target_date(night, zone, settings)
            opens = _moment(day, settings.send_window_start, zone)
            opens_before = _moment(day - dt.timedelta(days=1), settings.send_window_start, zone)
            if opens < ready:
                problems.append(f"{zone} night {night}: window of {day} opens {opens} before ready {ready}")
            if opens_before - ready >= dt.timedelta(hours=2):
                problems.append(f"{zone} night {night}: {day - dt.timedelta(days=1)} was still in time")
            if previous is not None and (day - previous).days != 1:
                problems.append(f"{zone} night {night}: prepared {day} after {previous}")
            previous = day
    assert not problems, f"{len(problems)} problems, e.g. {problems[:5]}"
    assert len(zones) > 300


# --- end to end: Auckland's birthday goes out on Auckland's birthday morning ----------------------


@pytest.fixture
def settings(settings):
    return settings.with_overrides(holdout_share=0.0)


@pytest.fixture
def shop(settings) -> Shop:
    shop = Shop(settings.source)
    shop.product(1)
    birthday = dt.date(1990, 11, 22)
    shop.customer(1, time_zone="Pacific/Auckland", birthday=birthday, updated_at=dt.datetime(2026, 1, 1))
    shop.customer(2, time_zone="Europe/Berlin", birthday=birthday, updated_at=dt.datetime(2026, 1, 1))
    return shop


def _outbox(settings) -> dict[int, dict]:
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(select(schema.outbox)).mappings()
        return {row["customer_id"]: dict(row) for row in rows}


def _deliver(settings, sink, until: dt.datetime) -> dict:
    return stage_deliver(settings, SmtpConfig(host="127.0.0.1", port=sink.port), until, secret=SECRET)


def test_item_7_auckland_birthday_is_sent_on_the_auckland_morning_before_the_berlin_night(
    settings, shop, mail_sink
) -> None:
    run_night(settings, night_for_date("2026-11-21", settings.time_zone), "t")
    box = _outbox(settings)
    assert set(box) == {1}, "night 2026-11-21 prepares Auckland's 22 November, not Berlin's"
    auckland = box[1]
    assert (auckland["occasion"], auckland["occasion_date"]) == ("birthday", dt.date(2026, 11, 22))
    # 09:00-18:00 on 22 November in Auckland (NZDT, UTC+13)
    assert (auckland["send_at"], auckland["send_before"]) == (
        dt.datetime(2026, 11, 21, 20, 0),
        dt.datetime(2026, 11, 22, 5, 0),
    )
    # The delivery run of 20:00 UTC sends it: 09:00 on the birthday in Auckland, hours before
    # night 2026-11-22 even starts in Berlin (01:00 UTC).
    assert _deliver(settings, mail_sink, dt.datetime(2026, 11, 21, 19, 45))["sent"] == 0
    assert _deliver(settings, mail_sink, dt.datetime(2026, 11, 21, 20, 0))["sent"] == 1
    assert len(mail_sink.wait_for(1)) == 1

    run_night(settings, night_for_date("2026-11-22", settings.time_zone), "t")
    box = _outbox(settings)
    assert (box[2]["occasion"], box[2]["occasion_date"]) == ("birthday", dt.date(2026, 11, 22))
    with warehouse_engine(settings.warehouse).connect() as conn:
        occ = schema.occasions
        recorded = conn.execute(select(occ.c.customer_id, occ.c.night, occ.c.occasion_date)).all()
    # one birthday each, Auckland's from the night before, Berlin's from its own night
    assert sorted(recorded) == [
        (1, dt.date(2026, 11, 21), dt.date(2026, 11, 22)),
        (2, dt.date(2026, 11, 22), dt.date(2026, 11, 22)),
    ]


def test_item_7_a_customer_who_moves_west_is_not_greeted_twice_for_one_date(settings, shop) -> None:
    """Moving from Auckland to Berlin makes two nights prepare the same local date: the first decision holds.

    Night 22 November prepares Auckland's 23rd (a birthday); the customer then moves to Berlin,
    so night 23 November prepares Berlin's 23rd as well. The birthday is not decided again
    (the occasion key would clash and stop the night), and a first order's thank-you on that
    same date yields to it: one message a day, whichever night decided it.
    """
    shop.customer(
        4, time_zone="Pacific/Auckland", birthday=dt.date(1990, 11, 23), updated_at=dt.datetime(2026, 1, 1)
    )
    run_night(settings, night_for_date("2026-11-22", settings.time_zone), "t")
    shop.customer(
        4, time_zone="Europe/Berlin", birthday=dt.date(1990, 11, 23), updated_at=dt.datetime(2026, 11, 22, 12)
    )
    shop.order(40, 4, dt.datetime(2026, 11, 22, 13, 0))
    shop.item(40, 40, 1, updated_at=dt.datetime(2026, 11, 22, 13, 0))
    run_night(settings, night_for_date("2026-11-23", settings.time_zone), "t")
    with warehouse_engine(settings.warehouse).connect() as conn:
        occ = schema.occasions
        rows = conn.execute(
            select(occ.c.night, occ.c.occasion, occ.c.occasion_date, occ.c.status, occ.c.reason).where(
                occ.c.customer_id == 4
            )
        ).all()
    assert sorted(rows) == [
        (dt.date(2026, 11, 22), "birthday", dt.date(2026, 11, 23), "selected", None),
        (
            dt.date(2026, 11, 23),
            "thank_you",
            dt.date(2026, 11, 23),
            "skipped",
            "daily cap: birthday goes out today",
        ),
    ]
    assert [row["occasion"] for row in _outbox(settings).values() if row["customer_id"] == 4] == ["birthday"]
