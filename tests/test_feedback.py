"""Feedback that comes back (issue #17, item 1): signed rating links that nobody can forge or borrow
from an unsubscribe link, one answer per order that a second click changes, follow-ups of low
ratings mailed to a real SMTP sink on loopback, suggestions held back for exactly the hold days,
erasure, and the Retention page's Feedback tab, on SQLite and PostgreSQL.

The public app runs in-process (FastAPI's TestClient: the real ASGI app, real database); the
browser test (``tests/test_feedback_browser.py``) drives the same pages in Chromium."""

from __future__ import annotations

import datetime as dt
import html
import re
from decimal import Decimal
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from retention import feedback as fb
from retention import schema, unsubscribe
from retention.cli import main
from retention.db import engine_for
from retention.erasure import forget
from retention.mailer import SmtpConfig
from retention.migrate import upgrade
from retention.render import Renderer
from retention.samples import sample_context
from retention.web.retention_app import create_retention_app
from retention.web.unsubscribe_app import RateLimiter, create_unsubscribe_app
from tests.conftest import SECRET

EMAIL = "kadri.tamm@example.ee"
BASE = "https://shop.example.com/public"
T = dt.datetime(2026, 11, 19, 10, 0)  # naive UTC, as the warehouse stores moments


# --- tokens and links (no database) ---------------------------------------------------------------


def test_a_feedback_token_names_the_customer_and_the_order() -> None:
    token = fb.sign(SECRET, 42, 100482)
    assert token.startswith("42.100482.")
    assert fb.verify(SECRET, token) == (42, 100482)
    assert fb.verify(SECRET, fb.sign(SECRET, 2**63 - 1, 2**63 - 1)) == (2**63 - 1, 2**63 - 1)


def _mac(customer_id: int, order_id: int) -> str:
    return fb.sign(SECRET, customer_id, order_id).rpartition(".")[2]


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(fb.sign(b"not the secret at all, but 32 bytes", 42, 7), id="other-secret"),
        pytest.param(f"42.8.{_mac(42, 7)}", id="other-order"),
        pytest.param(f"43.7.{_mac(42, 7)}", id="other-customer"),
        pytest.param(f"7.42.{_mac(42, 7)}", id="ids-swapped"),
        pytest.param(fb.sign(SECRET, 42, 7)[:-1] + "A", id="altered-mac"),
        pytest.param(fb.sign(SECRET, 42, 7)[:-2], id="truncated-mac"),
        pytest.param(f"042.7.{_mac(42, 7)}", id="leading-zero"),
        pytest.param(f"+42.7.{_mac(42, 7)}", id="plus-sign"),
        pytest.param(f"42.7.{_mac(42, 7)}.x", id="four-parts"),
        pytest.param(f"{2**63}.7.{_mac(2**63, 7)}", id="past-bigint"),
        pytest.param("42.7.", id="no-mac"),
        pytest.param("", id="empty"),
        pytest.param("\u0664\u0662.7." + _mac(42, 7), id="arabic-indic-digits"),
    ],
)
def test_a_forged_feedback_token_does_not_verify(token: str) -> None:
    assert fb.verify(SECRET, token) is None


@hypothesis_settings(max_examples=200, deadline=None)
@given(token=st.one_of(st.text(max_size=120), st.binary(max_size=40), st.integers(), st.none()))
def test_verify_never_raises(token) -> None:
    assert fb.verify(SECRET, token) is None


def test_an_unsubscribe_token_is_no_feedback_token_and_back() -> None:
    unsub = unsubscribe.sign(SECRET, 42, EMAIL)
    feedback = fb.sign(SECRET, 42, 7)
    assert fb.verify(SECRET, unsub) is None
    # Its signature under a feedback token's ids: the purposes sign different messages.
    assert fb.verify(SECRET, f"42.7.{unsub.partition('.')[2]}") is None
    assert unsubscribe.verify(SECRET, feedback, EMAIL) is None
    assert unsubscribe.verify(SECRET, f"42.{feedback.rpartition('.')[2]}", EMAIL) is None
    # Even for an "address" made to look like the ids: the purpose prefix keeps them apart.
    assert unsubscribe.verify(SECRET, f"42.{feedback.rpartition('.')[2]}", "7") is None


def test_the_links_are_five_ratings_and_the_comment_form_on_the_public_base(settings) -> None:
    links = fb.feedback_links(settings.with_overrides(unsubscribe_base_url=BASE + "/"), SECRET, 42, 7)
    assert [r["value"] for r in links["ratings"]] == [1, 2, 3, 4, 5]
    assert links["comment_url"] == f"{BASE}/feedback?token={fb.sign(SECRET, 42, 7)}"
    for rating in links["ratings"]:
        url = urlparse(rating["url"])
        query = parse_qs(url.query)
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"{BASE}/feedback"
        assert fb.verify(SECRET, query["token"][0]) == (42, 7)
        assert query["rating"] == [str(rating["value"])]
    # Without a public base URL the shop's URL is the base, as for unsubscribe links.
    default = fb.feedback_links(settings, SECRET, 42, 7)["comment_url"]
    assert default.startswith(f"{settings.shop_url}/feedback?token=")


@pytest.mark.parametrize("language", ["en", "de", "nb", "et"])
def test_the_feedback_templates_carry_five_rating_links_and_the_comment_link(settings, language) -> None:
    links = fb.feedback_links(settings, SECRET, 42, 100482)
    context = {
        **sample_context("feedback", language),
        "feedback": links,
        "feedback_url": links["comment_url"],
    }
    message = Renderer(settings.templates_path).render("feedback", language, context)
    hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', message.html)]
    for rating in links["ratings"]:
        assert message.text.count(rating["url"]) == 1, rating
        assert hrefs.count(rating["url"]) == 1, rating
    assert f"{links['comment_url']}\n" in message.text
    assert links["comment_url"] in hrefs
    assert len(message.subject) <= 78


# --- a warehouse with a customer and an order -----------------------------------------------------


@pytest.fixture
def warehouse(warehouse_url):
    engine = engine_for(warehouse_url)
    upgrade(engine)  # the migrations, 0009 included, build the tables
    yield engine
    engine.dispose()


def _customer(engine, customer_id: int, language: str = "de", email: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.stg_customers).values(
                customer_id=customer_id,
                email=email or f"c{customer_id}@example.com",
                first_name="Kadri",
                last_name="Tamm",
                language=language,
                time_zone="Europe/Berlin",
                country="DE",
                marketing_consent=True,
                created_at=T,
                updated_at=T,
                loaded_night=T.date(),
            )
        )


def _product(engine, product_id: int, category: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.stg_products).values(
                product_id=product_id,
                name=f"product {product_id}",
                category=category,
                price=Decimal("10.00"),
                cost=Decimal("4.00"),
                currency="EUR",
                created_at=T,
                updated_at=T,
                loaded_night=T.date(),
            )
        )


def _order(engine, order_id: int, customer_id: int, *product_ids: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.stg_orders).values(
                order_id=order_id,
                customer_id=customer_id,
                ordered_at=T,
                status="placed",
                currency="EUR",
                updated_at=T,
                loaded_night=T.date(),
            )
        )
        for n, product_id in enumerate(product_ids):
            conn.execute(
                insert(schema.stg_order_items).values(
                    order_item_id=order_id * 10 + n,
                    order_id=order_id,
                    product_id=product_id,
                    quantity=1,
                    unit_price=Decimal("10.00"),
                    unit_cost=Decimal("4.00"),
                    returned_quantity=0,
                    updated_at=T,
                    loaded_night=T.date(),
                )
            )


@pytest.fixture
def shop_settings(settings):
    return settings.with_overrides(unsubscribe_base_url="http://testserver")


@pytest.fixture
def app(warehouse, shop_settings) -> TestClient:
    _customer(warehouse, 7, "de", EMAIL)
    _order(warehouse, 70, 7)
    _order(warehouse, 71, 7)
    return TestClient(create_unsubscribe_app(shop_settings, lambda: SECRET, warehouse, RateLimiter(10_000)))


def _answers(engine) -> list[tuple]:
    f = schema.feedback
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(f.c.customer_id, f.c.order_id, f.c.rating, f.c.comment).order_by(f.c.order_id)
            )
        ]


def _followups(engine) -> list[dict]:
    fu = schema.feedback_followups
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(fu).order_by(fu.c.followup_id)).mappings()]


def _rate(app: TestClient, order_id: int, rating: object, **form: str):
    return app.post("/feedback", data={"token": fb.sign(SECRET, 7, order_id), "rating": str(rating), **form})


# --- the public pages -----------------------------------------------------------------------------


def test_opening_a_rating_link_records_nothing_and_offers_the_rating(app, warehouse) -> None:
    page = app.get("/feedback", params={"token": fb.sign(SECRET, 7, 70), "rating": "4"})
    assert page.status_code == 200
    assert _answers(warehouse) == []  # a link scanner's GET changes nothing
    assert "Wie war Ihre Bestellung?" in page.text  # customer 7 reads German
    assert "<input type='hidden' name='rating' value='4'>" in page.text
    assert "id='save-rating'" in page.text  # the fallback without scripts
    # Only this page's own script may run, and it may only post back to this app.
    nonce = re.search(r"<script nonce='([^']+)'>", page.text).group(1)
    policy = page.headers["content-security-policy"]
    assert f"script-src 'nonce-{nonce}'" in policy and "connect-src 'self'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"


def test_the_comment_link_offers_five_ratings_and_records_nothing(app, warehouse) -> None:
    page = app.get("/feedback", params={"token": fb.sign(SECRET, 7, 70)})
    assert page.status_code == 200
    assert all(f"id='rating-{n}'" in page.text for n in range(1, 6))
    assert "<script" not in page.text and "script-src" not in page.headers["content-security-policy"]
    assert _answers(warehouse) == []


@pytest.mark.parametrize(
    ("language", "title"),
    [
        ("en", "How was your order?"),
        ("de", "Wie war Ihre Bestellung?"),
        ("nb", "Hvordan var bestillingen?"),
        ("et", "Kuidas tellimusega läks?"),
    ],
)
def test_the_pages_speak_the_customers_language(warehouse, shop_settings, language, title) -> None:
    _customer(warehouse, 9, language)
    _order(warehouse, 90, 9)
    client = TestClient(create_unsubscribe_app(shop_settings, lambda: SECRET, warehouse, RateLimiter(100)))
    token = fb.sign(SECRET, 9, 90)
    assert title in client.get("/feedback", params={"token": token, "rating": "5"}).text
    answered = client.post("/feedback", data={"token": token, "rating": "5"})
    assert f'<html lang="{language}">' in answered.text and title in answered.text


def test_a_second_click_changes_the_rating_and_adds_no_row(app, warehouse) -> None:
    assert _rate(app, 70, 4).status_code == 200
    f = schema.feedback
    with warehouse.connect() as conn:
        first = conn.execute(select(f.c.answered_at)).scalar_one()
    assert _rate(app, 70, 4).status_code == 200  # the same again: nothing changes
    assert _rate(app, 70, 3).status_code == 200
    assert _answers(warehouse) == [(7, 70, 3, None)]
    with warehouse.connect() as conn:
        assert conn.execute(select(f.c.answered_at)).scalar_one() >= first
    _rate(app, 71, 5)  # another order of the same customer is another answer
    assert _answers(warehouse) == [(7, 70, 3, None), (7, 71, 5, None)]


def test_a_comment_is_kept_as_typed_and_shown_escaped(app, warehouse) -> None:
    typed = "  <script>alert('x')</script> & the box was\r\nwet  "
    answered = _rate(app, 70, 3, comment=typed)
    assert answered.status_code == 200
    stored = "<script>alert('x')</script> & the box was\nwet"
    assert _answers(warehouse) == [(7, 70, 3, stored)]
    assert "<script>alert" not in answered.text
    assert html.escape(stored) in answered.text  # back in the form, as text
    _rate(app, 70, 4)  # a rating click keeps the comment
    assert _answers(warehouse) == [(7, 70, 4, stored)]
    app.post("/feedback", data={"token": fb.sign(SECRET, 7, 70), "comment": "only words"})
    assert _answers(warehouse) == [(7, 70, 4, "only words")]  # a comment alone keeps the rating


def test_a_comment_of_the_longest_length_is_kept_and_one_more_is_refused(app, warehouse) -> None:
    longest = "é" * fb.COMMENT_MAX_CHARS
    refused = _rate(app, 70, 2, comment=longest + "x")
    assert refused.status_code == 400 and "id='error'" in refused.text
    assert _answers(warehouse) == [] and _followups(warehouse) == []
    assert _rate(app, 70, 2, comment=longest).status_code == 200
    assert _answers(warehouse) == [(7, 70, 2, longest)]


@pytest.mark.parametrize("rating", ["0", "6", "1.0", " 1", "\u0661", "five", "-1"])
def test_a_rating_outside_one_to_five_is_refused(app, warehouse, rating) -> None:
    assert _rate(app, 70, rating).status_code == 400
    assert _answers(warehouse) == []


def test_an_answer_without_rating_or_comment_is_refused(app, warehouse) -> None:
    assert app.post("/feedback", data={"token": fb.sign(SECRET, 7, 70)}).status_code == 400
    assert app.post("/feedback", data={"token": fb.sign(SECRET, 7, 70), "comment": "   "}).status_code == 400
    assert _answers(warehouse) == []


def test_a_forged_or_borrowed_token_gets_a_400_and_writes_nothing(app, warehouse) -> None:
    genuine = fb.sign(SECRET, 7, 70)
    forgeries = [
        genuine[:-1] + ("A" if genuine[-1] != "A" else "B"),  # altered signature
        f"7.72.{genuine.rpartition('.')[2]}",  # another order with this signature
        f"8.70.{genuine.rpartition('.')[2]}",  # another customer
        fb.sign(SECRET, 7, 999),  # genuine, but no such order of customer 7 in the warehouse
        unsubscribe.sign(SECRET, 7, EMAIL),  # the same customer's unsubscribe token
        "not-a-token",
        "",
    ]
    for forged in forgeries:
        shown = app.get("/feedback", params={"token": forged, "rating": "1"})
        posted = app.post("/feedback", data={"token": forged, "rating": "1", "comment": "x"})
        assert (shown.status_code, posted.status_code) == (400, 400), forged
        assert "id='invalid'" in posted.text
    # ... and a feedback token unsubscribes nobody.
    refused = app.post("/unsubscribe", params={"token": genuine}, data={"List-Unsubscribe": "One-Click"})
    assert refused.status_code == 400
    assert _answers(warehouse) == [] and _followups(warehouse) == []
    with warehouse.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.suppression)).scalar() == 0


def test_the_feedback_routes_are_rate_limited_like_unsubscribe(warehouse, shop_settings) -> None:
    _customer(warehouse, 7)
    _order(warehouse, 70, 7)
    client = TestClient(create_unsubscribe_app(shop_settings, lambda: SECRET, warehouse, RateLimiter(3)))
    token = fb.sign(SECRET, 7, 70)
    codes = [client.post("/feedback", data={"token": token, "rating": "5"}).status_code for _ in range(3)]
    limited = client.get("/feedback", params={"token": token, "rating": "4"})
    assert codes == [200, 200, 200]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert _answers(warehouse) == [(7, 70, 5, None)]


def test_unsubscribing_still_works_beside_feedback(app, warehouse) -> None:
    token = unsubscribe.sign(SECRET, 7, EMAIL)
    assert app.get("/unsubscribe", params={"token": token}).status_code == 200
    done = app.post("/unsubscribe", params={"token": token}, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    with warehouse.connect() as conn:
        assert conn.execute(select(schema.suppression.c.email_hash)).scalars().all() == [
            unsubscribe.email_hash(EMAIL)
        ]


# --- follow-ups of low ratings --------------------------------------------------------------------


def test_a_low_rating_opens_one_followup_that_follows_the_answer(app, warehouse) -> None:
    def state() -> list[tuple]:
        return [(f["order_id"], f["rating"], f["comment"], f["status"]) for f in _followups(warehouse)]

    _rate(app, 70, 1)
    assert state() == [(70, 1, None, "open")]
    _rate(app, 70, 2, comment="late and broken")  # still low (the bar is 2): the same row
    assert state() == [(70, 2, "late and broken", "open")]
    _rate(app, 70, 4)  # raised above the bar: closed, with the low rating that opened it
    assert state() == [(70, 2, "late and broken", "closed")]
    _rate(app, 70, 1)  # low again: re-opened, still one row
    assert state() == [(70, 1, "late and broken", "open")]
    _rate(app, 71, 3)  # above the bar: no follow-up
    assert len(_followups(warehouse)) == 1


def test_the_low_rating_bar_is_a_setting(warehouse, shop_settings) -> None:
    _customer(warehouse, 7)
    _order(warehouse, 70, 7)
    strict = shop_settings.with_overrides(feedback_low_rating=3)
    client = TestClient(create_unsubscribe_app(strict, lambda: SECRET, warehouse, RateLimiter(100)))
    answered = client.post("/feedback", data={"token": fb.sign(SECRET, 7, 70), "rating": "3"})
    assert "id='sorry'" in answered.text
    assert [f["rating"] for f in _followups(warehouse)] == [3]


def _sink_config(mail_sink) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=mail_sink.port)


def test_followups_are_mailed_once_to_the_service_address(app, warehouse, shop_settings, mail_sink) -> None:
    _rate(app, 70, 1, comment="The mug arrived in pieces.")
    _rate(app, 71, 5)
    settings = shop_settings.with_overrides(service_address="service@example.com")
    counts = fb.mail_followups(warehouse, settings, _sink_config(mail_sink))
    assert counts == {"pending": 1, "mailed": 1, "refused": 0, "service_address": True}
    [received] = mail_sink.wait_for(1)
    message = received.message
    assert received.rcpt_tos == ["service@example.com"]
    assert message["Subject"] == "Low rating 1/5 for order 70 (customer 7)"
    assert message["Reply-To"] == EMAIL
    assert "The mug arrived in pieces." in message.get_content()
    [followup] = _followups(warehouse)
    assert followup["mailed_at"] is not None and followup["status"] == "open"
    # The next run has nothing to send; a changed low rating does not mail again.
    _rate(app, 70, 2)
    assert fb.mail_followups(warehouse, settings, _sink_config(mail_sink))["mailed"] == 0
    assert len(mail_sink.received) == 1


def test_a_followup_closed_before_its_mail_is_not_mailed(app, warehouse, shop_settings, mail_sink) -> None:
    _rate(app, 70, 1)
    _rate(app, 70, 5)
    settings = shop_settings.with_overrides(service_address="service@example.com")
    assert fb.mail_followups(warehouse, settings, _sink_config(mail_sink))["mailed"] == 0
    assert mail_sink.received == []


def test_without_a_service_address_nothing_is_mailed_and_the_log_says_so(
    app, warehouse, shop_settings, mail_sink, caplog
) -> None:
    _rate(app, 70, 1)
    counts = fb.mail_followups(warehouse, shop_settings, _sink_config(mail_sink))
    assert counts == {"pending": 1, "mailed": 0, "refused": 0, "service_address": False}
    assert "RETENTION_SERVICE_ADDRESS is not set" in caplog.text
    assert mail_sink.received == []
    assert _followups(warehouse)[0]["mailed_at"] is None  # waits for an address


def test_the_command_mails_the_followups(
    app, warehouse, shop_settings, mail_sink, monkeypatch, capsys
) -> None:
    _rate(app, 70, 2)
    monkeypatch.setenv("RETENTION_SERVICE_ADDRESS", "service@example.com")
    monkeypatch.setenv("RETENTION_SMTP_URL", f"smtp://127.0.0.1:{mail_sink.port}")
    assert main(["feedback", "mail-followups", "--url", shop_settings.warehouse]) == 0
    assert '"mailed": 1' in capsys.readouterr().out
    assert [r.rcpt_tos for r in mail_sink.wait_for(1)] == [["service@example.com"]]


# --- holding back suggestions ---------------------------------------------------------------------


def _answer(
    engine, customer_id: int, rating: int, answered_at: dt.datetime, order_id: int | None = None
) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.feedback).values(
                customer_id=customer_id,
                order_id=order_id or customer_id * 10,
                rating=rating,
                answered_at=answered_at,
                updated_at=answered_at,
            )
        )


def test_held_back_takes_the_hold_days_before_the_night_in_the_shops_zone(warehouse, settings) -> None:
    night = dt.date(2026, 11, 22)  # hold 30 days: local [2026-10-23 00:00, 2026-11-22 00:00), Berlin
    _answer(warehouse, 1, 1, dt.datetime(2026, 10, 22, 22, 0))  # 2026-10-23 00:00 CEST: first moment in
    _answer(warehouse, 2, 1, dt.datetime(2026, 10, 22, 21, 59, 59))  # one second before
    _answer(warehouse, 3, 2, dt.datetime(2026, 11, 21, 22, 59, 59))  # 2026-11-21 23:59:59 CET: last moment in
    _answer(warehouse, 4, 1, dt.datetime(2026, 11, 21, 23, 0))  # 2026-11-22 00:00 CET: the night's own day
    _answer(warehouse, 5, 3, dt.datetime(2026, 11, 10, 12, 0))  # above the bar (2)
    _answer(warehouse, 6, 5, dt.datetime(2026, 11, 10, 12, 0))  # one happy order ...
    _answer(warehouse, 6, 1, dt.datetime(2026, 11, 11, 12, 0), order_id=61)  # ... and one unhappy one
    with warehouse.connect() as conn:
        assert fb.held_back(conn, night, settings) == {1, 3, 6}
        assert fb.held_back(conn, night + dt.timedelta(days=1), settings) == {3, 4, 6}
        assert fb.held_back(conn, night, settings.with_overrides(feedback_low_rating=3)) == {1, 3, 5, 6}
        assert fb.held_back(conn, night, settings.with_overrides(feedback_hold_days=0)) == set()
        # An answer on local day D-1 holds nights D .. D + hold_days - 1.
        last = dt.date(2026, 11, 21) + dt.timedelta(days=30)
        assert 3 in fb.held_back(conn, last, settings)
        assert 3 not in fb.held_back(conn, last + dt.timedelta(days=1), settings)


def test_a_rating_raised_above_the_bar_holds_nothing_back(app, warehouse, shop_settings) -> None:
    _rate(app, 70, 1)
    with warehouse.connect() as conn:
        # the night after the answer's local day (held_back counts days in the shop's zone)
        tomorrow = dt.datetime.now(ZoneInfo(shop_settings.time_zone)).date() + dt.timedelta(days=1)
        assert fb.held_back(conn, tomorrow, shop_settings) == {7}
    _rate(app, 70, 4)
    with warehouse.connect() as conn:
        assert fb.held_back(conn, tomorrow, shop_settings) == set()


# --- erasure --------------------------------------------------------------------------------------


def test_forgetting_a_person_removes_their_answers_and_followups(app, warehouse) -> None:
    _customer(warehouse, 8)
    _order(warehouse, 80, 8)
    _rate(app, 70, 1, comment="my words")
    app.post("/feedback", data={"token": fb.sign(SECRET, 8, 80), "rating": "1"})
    erasure = forget(warehouse, EMAIL, dt.date(2026, 11, 24))
    assert erasure.removed["feedback"] == 1 and erasure.removed["feedback_followups"] == 1
    assert _answers(warehouse) == [(8, 80, 1, None)]
    assert [f["customer_id"] for f in _followups(warehouse)] == [8]
    # The old link can no longer write anything about them.
    assert _rate(app, 70, 5).status_code == 400
    assert app.get("/feedback", params={"token": fb.sign(SECRET, 7, 70)}).status_code == 400
    assert _answers(warehouse) == [(8, 80, 1, None)]


# --- the Retention page's Feedback tab ------------------------------------------------------------


def _snapshot(engine, customer_id: int, night: dt.date, phase: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.segment_snapshots).values(
                night=night,
                customer_id=customer_id,
                frequency=1,
                monetary=Decimal("10.00"),
                rfm_segment="new",
                abc_class="C",
                lifecycle_phase=phase,
                service_cost_12m=Decimal("0"),
                profit_12m=Decimal("0"),
                unprofitable=False,
            )
        )


def _record(engine, customer_id: int, order_id: int, rating: int | None, comment: str | None, now) -> None:
    with engine.begin() as conn:
        fb.record_answer(conn, SECRET, fb.sign(SECRET, customer_id, order_id), rating, comment, now, 2)


@pytest.fixture
def answered(warehouse):
    """Three customers, two categories, answers in two weeks, phases that change in between."""
    _product(warehouse, 1, "garden")
    _product(warehouse, 2, "kitchen")
    for customer_id in (1, 2, 3):
        _customer(warehouse, customer_id, "en")
    _order(warehouse, 10, 1, 1, 1, 2)  # garden twice and kitchen: counts once in each
    _order(warehouse, 20, 2, 1)
    _order(warehouse, 30, 3, 2)
    _order(warehouse, 11, 1, 2)
    _snapshot(warehouse, 1, dt.date(2026, 11, 1), "exploration")
    _snapshot(warehouse, 1, dt.date(2026, 11, 12), "expansion")
    _snapshot(warehouse, 2, dt.date(2026, 11, 1), "commitment")
    # Week of Monday 2026-11-02: customer 1 (exploration) rates order 10 a 2, customer 2 a 5.
    _record(warehouse, 1, 10, 2, "<b>too slow</b>", dt.datetime(2026, 11, 3, 9, 0))
    _record(warehouse, 2, 20, 5, None, dt.datetime(2026, 11, 8, 23, 59))  # Sunday: still that week
    # Week of Monday 2026-11-09: customer 1, now in expansion, rates order 11 a 4; customer 3
    # has no snapshot at all.
    _record(warehouse, 1, 11, 4, "better", dt.datetime(2026, 11, 12, 8, 0))
    _record(warehouse, 3, 30, 1, "never again", dt.datetime(2026, 11, 9, 0, 0))
    return warehouse


def test_the_feedback_queries_count_by_week_category_and_phase(answered) -> None:
    from retention.web import queries

    with answered.connect() as conn:
        since = queries.feedback_since(conn, 2)
        assert since == dt.datetime(2026, 11, 2)
        assert queries.feedback_weeks(conn, since) == [
            {"week": dt.date(2026, 11, 2), "answers": 2, "average": 3.5, "ratings": [0, 1, 0, 0, 1]},
            {"week": dt.date(2026, 11, 9), "answers": 2, "average": 2.5, "ratings": [1, 0, 0, 1, 0]},
        ]
        # garden: orders 10 (2) and 20 (5); kitchen: orders 10 (2), 30 (1), 11 (4)
        assert queries.feedback_by_category(conn, since) == [
            {"category": "kitchen", "answers": 3, "average": 2.33},
            {"category": "garden", "answers": 2, "average": 3.5},
        ]
        assert queries.feedback_by_phase(conn, since) == [
            {"phase": "exploration", "answers": 1, "average": 2.0},
            {"phase": "expansion", "answers": 1, "average": 4.0},
            {"phase": "commitment", "answers": 1, "average": 5.0},
            {"phase": "unknown", "answers": 1, "average": 1.0},
        ]
        one_week = queries.feedback_since(conn, 1)
        assert [w["week"] for w in queries.feedback_weeks(conn, one_week)] == [dt.date(2026, 11, 9)]
        comments, more = queries.feedback_comments(conn, 0, per_page=2)
        assert [c["comment"] for c in comments] == ["better", "never again"] and more
        assert [c["comment"] for c in queries.feedback_comments(conn, 1, per_page=2)[0]] == [
            "<b>too slow</b>"
        ]
        assert [(f["customer_id"], f["rating"]) for f in queries.open_followups(conn)] == [(3, 1), (1, 2)]


def test_the_feedback_tab_shows_ratings_comments_escaped_and_open_followups(answered, settings) -> None:
    page = TestClient(create_retention_app(lambda: "tester", settings=settings, engine=answered))
    shown = page.get("/feedback", params={"weeks": 4})
    assert shown.status_code == 200
    text = shown.text
    for table in ("feedback-weeks", "feedback-categories", "feedback-phases", "followups", "comments"):
        assert f'id="{table}"' in text, table
    assert "&lt;b&gt;too slow&lt;/b&gt;" in text and "<b>too slow</b>" not in text
    comments = text[text.index('id="comments"') :]
    assert (
        comments.index("better") < comments.index("never again") < comments.index("too slow")
    )  # newest first
    assert 'id="no-service-address"' in text and "(2 waiting)" in text
    assert '<a href="./feedback">Feedback</a>' in text
    with_address = settings.with_overrides(service_address="service@example.com")
    quiet = TestClient(create_retention_app(lambda: "tester", settings=with_address, engine=answered))
    assert 'id="no-service-address"' not in quiet.get("/feedback").text
    assert page.get("/feedback", params={"weeks": 0}).status_code == 400


def test_the_feedback_tab_pages_through_comments(warehouse, settings) -> None:
    _customer(warehouse, 1, "en")
    for n in range(25):
        _order(warehouse, 100 + n, 1)
        _record(
            warehouse, 1, 100 + n, 5, f"comment {n:02d}", dt.datetime(2026, 11, 1) + dt.timedelta(hours=n)
        )
    page = TestClient(create_retention_app(lambda: "tester", settings=settings, engine=warehouse))
    first, second = page.get("/feedback").text, page.get("/feedback", params={"page": 1}).text
    assert "comment 24" in first and "comment 05" in first and "comment 04" not in first
    assert 'id="older"' in first and 'id="newer"' not in first
    assert "comment 04" in second and "comment 00" in second and "comment 05" not in second
    assert 'id="newer"' in second and 'id="older"' not in second


def test_the_feedback_tab_without_answers_says_so(warehouse, settings) -> None:
    page = TestClient(create_retention_app(lambda: "tester", settings=settings, engine=warehouse))
    shown = page.get("/feedback")
    assert shown.status_code == 200 and 'id="no-feedback"' in shown.text
