"""The nightly chain without Airflow: a first order in the night becomes one thank-you, sent once."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from retention import schema
from retention.mailer import SmtpConfig
from retention.night import night_for_date
from retention.pipeline import run_night, stage_deliver, stage_facts, warehouse_engine
from tests.airflow_env import ROOT
from tests.conftest import SECRET
from tests.shop import Shop

FIRST_DAY = dt.datetime(2026, 11, 19, 9, 30)  # Thursday, inside night 2026-11-20 (Berlin)
EVENING = dt.datetime(2026, 11, 20, 15, 0)  # inside every send window of that date (Tallinn to London)


@pytest.fixture
def shop(settings) -> Shop:
    shop = Shop(settings.source)
    shop.product(10, price="249.00", cost="150.00")
    shop.customer(1, language="de", first_name="Jörg", last_name="Müller", time_zone="Europe/Berlin")
    shop.customer(2, language="nb", first_name="Ingrid", time_zone="Europe/Oslo", country="NO")
    shop.customer(3, language="et", first_name="Kadri", time_zone="Europe/Tallinn", country="EE")
    shop.customer(4, language="en", first_name="Oliver", time_zone="Europe/London", country="GB")
    shop.customer(5, language="en", first_name="Nope", marketing_consent=False)
    shop.customer(6, language="de", first_name="Alt")  # a returning customer: no thank-you
    shop.order(60, 6, dt.datetime(2025, 3, 1, 10, 0))
    shop.item(600, 60, 10, updated_at=dt.datetime(2025, 3, 1, 10, 0))
    for n, customer in enumerate((1, 2, 3, 4, 5, 6)):
        shop.order(100 + n, customer, FIRST_DAY)
        shop.item(1000 + n, 100 + n, 10, updated_at=FIRST_DAY)
    return shop


def _outbox(settings) -> list[dict]:
    box = schema.outbox
    with warehouse_engine(settings.warehouse).connect() as conn:
        return [dict(r) for r in conn.execute(select(box).order_by(box.c.customer_id)).mappings()]


def test_first_orders_become_thank_yous_in_each_language(settings, shop) -> None:
    results = run_night(settings, night_for_date("2026-11-20", settings.time_zone), "t1")
    assert results["occasions"] == {"thank_you": {"de": 1, "en": 1, "et": 1, "nb": 1}}
    rows = _outbox(settings)
    assert [(r["customer_id"], r["language"]) for r in rows] == [(1, "de"), (2, "nb"), (3, "et"), (4, "en")]
    subjects = {r["language"]: r["subject"] for r in rows}
    assert subjects["de"] == "Danke für Ihre erste Bestellung, Jörg!"
    assert subjects["nb"].startswith("Tusen takk")
    assert "Guten Tag Jörg Müller" in rows[0]["text_body"]
    assert "100,00\xa0€" in rows[0]["text_body"]  # German money format from Babel
    assert "19. November 2026" in rows[0]["text_body"]


def test_customer_without_consent_is_recorded_as_skipped(settings, shop) -> None:
    run_night(settings, night_for_date("2026-11-20", settings.time_zone), "t1")
    occ = schema.occasions
    with warehouse_engine(settings.warehouse).connect() as conn:
        skipped = conn.execute(select(occ.c.customer_id, occ.c.reason).where(occ.c.status == "skipped")).all()
    assert skipped == [(5, "no marketing consent")]


def test_send_at_is_the_window_start_in_the_customers_zone(settings, shop) -> None:
    run_night(settings, night_for_date("2026-11-20", settings.time_zone), "t1")
    send_at = {r["customer_id"]: r["send_at"] for r in _outbox(settings)}
    assert send_at[1] == dt.datetime(2026, 11, 20, 8, 0)  # 09:00 Berlin
    assert send_at[3] == dt.datetime(2026, 11, 20, 7, 0)  # 09:00 Tallinn
    assert send_at[4] == dt.datetime(2026, 11, 20, 9, 0)  # 09:00 London


def test_rerun_and_resend_deliver_each_message_exactly_once(settings, shop, mail_sink) -> None:
    night = night_for_date("2026-11-20", settings.time_zone)
    smtp = SmtpConfig(host="127.0.0.1", port=mail_sink.port)
    run_night(settings, night, "t1")
    first = stage_deliver(settings, smtp, EVENING, secret=SECRET)
    run_night(settings, night, "t2")
    second = stage_deliver(settings, smtp, EVENING, secret=SECRET)
    assert (first["sent"], second["sent"]) == (4, 0)
    received = mail_sink.wait_for(4)
    assert len(received) == 4
    assert len({m.message["Message-ID"] for m in received}) == 4
    assert {r["status"] for r in _outbox(settings)} == {"sent"}


def test_nothing_is_sent_before_its_send_at(settings, shop, mail_sink) -> None:
    run_night(settings, night_for_date("2026-11-20", settings.time_zone), "t1")
    early = dt.datetime(2026, 11, 20, 7, 30)  # 08:30 Berlin, 09:30 Tallinn
    counts = stage_deliver(settings, SmtpConfig(host="127.0.0.1", port=mail_sink.port), early, secret=SECRET)
    assert counts["sent"] == 1
    assert [m.rcpt_tos for m in mail_sink.wait_for(1)] == [["customer3@example.com"]]


def test_sent_message_has_both_parts_and_one_click_unsubscribe(settings, shop, mail_sink) -> None:
    run_night(settings, night_for_date("2026-11-20", settings.time_zone), "t1")
    stage_deliver(settings, SmtpConfig(host="127.0.0.1", port=mail_sink.port), EVENING, secret=SECRET)
    msg = mail_sink.wait_for(4)[0].message
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "https://shop.example.com/unsubscribe?token=" in msg["List-Unsubscribe"]
    types = [part.get_content_type() for part in msg.walk()]
    assert "text/plain" in types and "text/html" in types


def test_full_rebuild_of_facts_equals_the_incremental_result(settings, shop) -> None:
    night = night_for_date("2026-11-20", settings.time_zone)
    run_night(settings, night, "t1")
    facts = schema.customer_facts
    columns = [c for c in facts.columns if c.name != "night"]  # which night computed it differs
    with warehouse_engine(settings.warehouse).connect() as conn:
        incremental = conn.execute(select(*columns).order_by(facts.c.customer_id)).all()
    stage_facts(settings, night, "t2", full_refresh=True)
    with warehouse_engine(settings.warehouse).connect() as conn:
        assert conn.execute(select(*columns).order_by(facts.c.customer_id)).all() == incremental


def test_a_broken_template_blocks_only_its_own_occasion(settings, shop, tmp_path) -> None:
    import shutil

    from retention.report import night_report

    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    (templates / "birthday" / "de.jinja").write_text(
        "{% extends '_layout.jinja' %}{% block subject %}{{ oops }"
    )
    settings = settings.with_overrides(templates_dir=templates, holdout_share=0.0)
    shop.customer(7, language="de", birthday=dt.date(1970, 11, 20))
    results = run_night(settings, night_for_date("2026-11-20", settings.time_zone), "t1")
    assert results["render"]["queued"] == {"thank_you": 4}
    assert set(results["render"]["template_failures"]) == {"birthday/de"}
    assert "birthday/de.jinja" in results["render"]["template_failures"]["birthday/de"]
    report = night_report(warehouse_engine(settings.warehouse), dt.date(2026, 11, 20))
    assert "birthday/de" in report["render"]["template_failures"]


def test_racing_renders_never_create_a_second_message_for_a_key(settings, shop) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from retention.pipeline import stage_occasions, stage_render

    night = night_for_date("2026-11-20", settings.time_zone)
    run_night(settings, night, "t1")
    with warehouse_engine(settings.warehouse).begin() as conn:
        conn.execute(schema.outbox.delete())
    stage_occasions(settings, night, "t2")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: stage_render(settings, night, f"race{i}", secret=SECRET), range(4)))
    assert sum(sum(r["queued"].values()) for r in results) == 4
    assert len(_outbox(settings)) == 4
