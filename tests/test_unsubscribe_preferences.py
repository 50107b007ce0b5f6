"""Stopping one kind of message on the unsubscribe page, on SQLite and PostgreSQL.

A hand-built shop goes through a real night up to detection; the unsubscribe app runs under
uvicorn on a loopback port (as a deployment may run it) and is clicked over real HTTP; then the
night's detection runs again and must skip exactly the kinds that were stopped.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select

from retention import erasure, schema
from retention.night import night_for_date
from retention.pipeline import (
    stage_extract,
    stage_facts,
    stage_migrate,
    stage_occasions,
    stage_segments,
    warehouse_engine,
)
from retention.registry import OCCASIONS
from retention.settings import LANGUAGES
from retention.unsubscribe import MESSAGE_KINDS, email_hash, kind_of, sign
from retention.web import queries
from retention.web.retention_app import create_retention_app
from retention.web.unsubscribe_app import KIND_TEXTS, TEXTS
from tests.shop import DAY1, Shop
from tests.ui_env import SECRET, ServerProcess, free_port, public_app

NIGHT = "2026-11-20"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
LANGUAGE_OF = {1: "en", 2: "de", 3: "nb", 4: "et"}


@pytest.fixture
def settings(settings):
    # No holdout: every expectation below is exact.
    return settings.with_overrides(holdout_share=0.0)


class World:
    """The shop after night 2026-11-20's detection, and its unsubscribe app on a loopback port."""

    def __init__(self, settings, shop: Shop, home: Path) -> None:
        self.settings, self.home = settings, home
        # Everyone has their birthday tonight; 1 and 2 also ordered: a thank-you goes out and
        # the birthday loses to it (one message a day).
        for customer_id, language in LANGUAGE_OF.items():
            shop.customer(customer_id, language=language, birthday=dt.date(1990, 11, 20))
        for customer_id in (1, 2):
            shop.order(100 + customer_id, customer_id, DAY1)
            shop.item(100 + customer_id, 100 + customer_id, 1, updated_at=DAY1)
        self.night = night_for_date(NIGHT, settings.time_zone)
        stage_migrate(settings)
        for stage in (stage_extract, stage_facts, stage_segments, stage_occasions):
            stage(settings, self.night, "t")
        self.engine = warehouse_engine(settings.warehouse)
        self.base = ""

    def serve(self) -> ServerProcess:
        self.base = f"http://127.0.0.1:{free_port()}"  # taken right before the server binds it
        port = int(self.base.rsplit(":", 1)[1])
        return public_app(self.home, self.settings.warehouse, port, RETENTION_UNSUBSCRIBE_RATE_PER_MINUTE="1000")

    @staticmethod
    def email(customer_id: int) -> str:
        return f"customer{customer_id}@example.com"

    def link(self, customer_id: int) -> str:
        return f"{self.base}/unsubscribe?token={sign(SECRET.encode(), customer_id, self.email(customer_id))}"

    def detect_again(self) -> dict[tuple[int, str], tuple[str, str | None]]:
        """Run the night's detection again (a re-run replaces the night's rows) and read them."""
        stage_occasions(self.settings, self.night, "t-again")
        return self.occasions()

    def occasions(self) -> dict[tuple[int, str], tuple[str, str | None]]:
        occ = schema.occasions
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(occ.c.customer_id, occ.c.occasion, occ.c.status, occ.c.reason).where(
                    occ.c.night == self.night.date
                )
            )
            return {(r.customer_id, r.occasion): (r.status, r.reason) for r in rows}

    def preferences(self) -> set[tuple[str, str, dt.date]]:
        p = schema.unsubscribe_preferences
        with self.engine.connect() as conn:
            return {(r.email_hash, r.kind, r.night) for r in conn.execute(select(p))}

    def suppressed(self) -> dict[str, str]:
        s = schema.suppression
        with self.engine.connect() as conn:
            return dict(conn.execute(select(s.c.email_hash, s.c.reason)).all())


@pytest.fixture
def world(settings, shop, tmp_path: Path) -> Iterator[World]:
    world = World(settings, shop, tmp_path)
    with world.serve():
        yield world


def _stop(world: World, customer_id: int, kind: str) -> httpx.Response:
    return httpx.post(world.link(customer_id), data={"kind": kind})


def test_every_occasion_belongs_to_exactly_one_kind_and_every_kind_has_words() -> None:
    kinds = {o: kind_of(o) for o in OCCASIONS}
    assert set(kinds.values()) == set(MESSAGE_KINDS)  # every kind has occasions; none outside the list
    assert kinds["next_purchase"] == kinds["accessory"] == kinds["new_stock"] == "suggestions"
    assert kinds["birthday"] == kinds["anniversary"] == "greetings"
    for language in LANGUAGES:
        assert set(KIND_TEXTS[language]) == set(MESSAGE_KINDS), language
        assert {"only", "only_button", "already", "kind_done"} <= set(TEXTS[language]), language


def test_the_page_offers_every_kind_in_the_customers_language(world: World) -> None:
    before = (world.preferences(), world.suppressed())
    for customer_id, language in LANGUAGE_OF.items():
        page = httpx.get(world.link(customer_id))
        assert page.status_code == 200, (language, page.text)
        assert f'<html lang="{language}">' in page.text
        assert "id='confirm'" in page.text  # the full unsubscribe is still the first choice
        assert TEXTS[language]["only_button"] in page.text
        offered = re.findall(r"name='kind' value='([a-z_]+)'", page.text)
        assert offered == list(MESSAGE_KINDS), language
        for kind, words in KIND_TEXTS[language].items():
            assert words in page.text.replace("&#x27;", "'"), (language, kind)
    assert (world.preferences(), world.suppressed()) == before  # showing the page changes nothing


def test_stopping_one_kind_skips_only_that_kind_on_the_next_detection(world: World) -> None:
    assert world.occasions() == {
        (1, "thank_you"): ("selected", None),
        (1, "birthday"): ("skipped", "daily cap: thank_you goes out today"),
        (2, "thank_you"): ("selected", None),
        (2, "birthday"): ("skipped", "daily cap: thank_you goes out today"),
        (3, "birthday"): ("selected", None),
        (4, "birthday"): ("selected", None),
    }
    # 1 stops thank-yous, 3 stops product suggestions (it has none tonight), 4 stops greetings.
    for customer_id, kind in ((1, "thank_you"), (3, "suggestions"), (4, "greetings")):
        reply = _stop(world, customer_id, kind)
        assert reply.status_code == 200, reply.text
        assert "id='done'" in reply.text and world.email(customer_id) in reply.text
        assert KIND_TEXTS[LANGUAGE_OF[customer_id]][kind] in reply.text
    assert world.occasions()[(1, "thank_you")] == ("selected", None)  # decided nights stay as they were

    assert world.detect_again() == {
        (1, "thank_you"): ("skipped", "unsubscribed from thank_you"),
        (1, "birthday"): ("selected", None),  # the other kind goes out now that the day is free
        (2, "thank_you"): ("selected", None),  # the same situation without a preference
        (2, "birthday"): ("skipped", "daily cap: thank_you goes out today"),
        (3, "birthday"): ("selected", None),
        (4, "birthday"): ("skipped", "unsubscribed from greetings"),
    }
    assert world.suppressed() == {}  # nobody is unsubscribed from everything


def test_stopping_a_kind_twice_is_idempotent(world: World) -> None:
    first = _stop(world, 2, "suggestions")
    after_first = world.preferences()
    second = _stop(world, 2, "suggestions")
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.text == second.text
    assert after_first == world.preferences()
    assert {(h, k) for h, k, _ in after_first} == {(email_hash(world.email(2)), "suggestions")}
    page = httpx.get(world.link(2))  # the page now shows it stopped and no longer offers it
    assert "value='suggestions'" not in page.text
    assert TEXTS["de"]["already"] in page.text
    assert re.findall(r"name='kind' value='([a-z_]+)'", page.text) == [
        k for k in MESSAGE_KINDS if k != "suggestions"
    ]


def test_a_forged_token_or_an_unknown_kind_gets_a_400_and_changes_nothing(world: World) -> None:
    link = world.link(1)
    base, token = link.split("?token=")
    customer, mac = token.split(".")
    forgeries = [
        f"{customer}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",  # altered signature
        f"2.{mac}",  # someone else's id with this signature
        "not-a-token",
        "",
    ]
    for forged in forgeries:
        reply = httpx.post(base, params={"token": forged}, data={"kind": "suggestions"})
        assert reply.status_code == 400, forged
        assert "not valid" in reply.text
    for kind in ("everything", "", "suggestions "):
        reply = httpx.post(link, data={"kind": kind})
        assert reply.status_code == 400, kind
        assert "unknown kind of message" in reply.text
    assert world.preferences() == set()
    assert world.suppressed() == {}
    assert world.detect_again()[(1, "thank_you")] == ("selected", None)


def test_the_one_click_post_still_stops_everything(world: World) -> None:
    assert _stop(world, 1, "suggestions").status_code == 200
    reply = httpx.post(world.link(1), data=ONE_CLICK)  # RFC 8058, what a mail client sends
    assert reply.status_code == 200
    assert world.suppressed() == {email_hash(world.email(1)): "unsubscribed"}
    found = world.detect_again()
    assert found[(1, "thank_you")] == ("skipped", "address is suppressed")
    assert found[(1, "birthday")] == ("skipped", "address is suppressed")
    assert found[(2, "thank_you")] == ("selected", None)


def test_the_retention_page_shows_a_customers_stopped_kinds_and_finds_any_case(world: World) -> None:
    _stop(world, 3, "win_back")
    _stop(world, 3, "suggestions")
    with world.engine.connect() as conn:
        assert queries.find_customer(conn, "CUSTOMER3@Example.COM") == 3
        view = queries.customer_view(conn, 3, world.night.date)
        other = queries.customer_view(conn, 4, world.night.date)
    assert [k["kind"] for k in view["stopped_kinds"]] == ["suggestions", "win_back"]  # MESSAGE_KINDS order
    assert view["suppressed"] is None
    assert other["stopped_kinds"] == [] and other["suppressed"] is None
    # The page itself (its app in process; the api-server's login is tests/test_ui_airflow.py's).
    client = TestClient(create_retention_app(lambda: None, world.settings, world.engine))
    shown = client.get("/", params={"q": "Customer3@example.com"})
    assert shown.status_code == 200
    assert re.search(
        r'id="unsubscribed">.*Stopped on the unsubscribe page: <b>suggestions</b> \(since [0-9-]{10}\), '
        r"<b>win_back</b>",
        shown.text,
        re.S,
    ), shown.text
    assert "Receives every kind of message" in client.get("/", params={"q": "4"}).text


def test_a_preference_outlives_the_erasure_of_the_person(world: World) -> None:
    _stop(world, 4, "greetings")
    kept = world.preferences()
    erasure.forget(world.engine, "customer4@example.com", dt.date(2026, 11, 21))
    assert world.preferences() == kept  # a hash, kept on purpose like the suppression list
    assert schema.unsubscribe_preferences in erasure.TOMBSTONES


def test_the_address_search_has_an_index_on_lower_email(world: World) -> None:
    if world.engine.dialect.name == "postgresql":
        indexes = inspect(world.engine).get_indexes("stg_customers")
        assert any(
            i["name"] == "ix_stg_customers_email_lower" and "lower(email)" in str(i.get("expressions"))
            for i in indexes
        ), indexes
    else:  # SQLite's inspector skips expression indexes: ask the catalogue
        with world.engine.connect() as conn:
            sql = conn.exec_driver_sql(
                "select sql from sqlite_master where name = 'ix_stg_customers_email_lower'"
            ).scalar()
        assert sql is not None and "lower(email)" in sql
    # The query of queries.find_customer can use it (at 4 rows a planner would rather scan: forbid that).
    query = "select min(customer_id + 0) from stg_customers where lower(email) = 'customer3@example.com'"
    with world.engine.connect() as conn:
        if world.engine.dialect.name == "postgresql":
            conn.exec_driver_sql("set enable_seqscan = off")
            plan = "\n".join(conn.exec_driver_sql(f"explain {query}").scalars())
        else:
            plan = "\n".join(str(row[-1]) for row in conn.exec_driver_sql(f"explain query plan {query}"))
    assert "ix_stg_customers_email_lower" in plan, plan
