"""The web apps' domain side on SQLite and PostgreSQL, against a warehouse filled by two real nights
and a real delivery: the unsubscribe endpoint served alone by uvicorn on a loopback port, as a
deployment may run it (``uvicorn --factory retention.web.unsubscribe_app:create_unsubscribe_app``),
clicked through the links of the .eml files received; and the Retention page's queries, checked
against independent counts. (The same apps inside Airflow's api-server: tests/test_ui_airflow.py.)"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from retention import schema
from retention.segments import LIFECYCLE_PHASES
from retention.unsubscribe import email_hash
from retention.web import queries
from retention.web.unsubscribe_app import RateLimiter
from tests.conftest import PG_URL, _drop_pg_database, _fresh_pg_database
from tests.ui_env import (
    NIGHTS,
    ServerProcess,
    demo_warehouse,
    free_port,
    public_app,
    unsubscribe_links,
)

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


class Deployment:
    def __init__(self, home: Path, warehouse_url: str, port: int) -> None:
        self.home, self.warehouse_url, self.port = home, warehouse_url, port
        self.base = f"http://127.0.0.1:{port}"
        self.mail = demo_warehouse(home, warehouse_url, self.base)
        self.links = unsubscribe_links(self.mail)
        self.engine = create_engine(warehouse_url)

    def serve(self, **settings: str) -> ServerProcess:
        return public_app(self.home, self.warehouse_url, self.port, **settings)

    def suppressed(self) -> dict[str, str]:
        s = schema.suppression
        with self.engine.connect() as conn:
            return dict(conn.execute(select(s.c.email_hash, s.c.reason)).all())

    def language(self, email: str) -> str:
        c = schema.stg_customers
        with self.engine.connect() as conn:
            return conn.execute(select(c.c.language).where(c.c.email == email)).scalar_one()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp(f"unsubscribe-{request.param}")
    if request.param == "sqlite":
        deployment = Deployment(home, f"sqlite:///{home / 'warehouse.db'}", free_port())
        with deployment.serve(RETENTION_UNSUBSCRIBE_RATE_PER_MINUTE="1000"):
            yield deployment
        deployment.engine.dispose()
        return
    if not PG_URL:
        pytest.skip("RETENTION_TEST_PG_URL is not set")
    name, url = _fresh_pg_database()
    try:
        deployment = Deployment(home, url, free_port())
        with deployment.serve(RETENTION_UNSUBSCRIBE_RATE_PER_MINUTE="1000"):
            yield deployment
        deployment.engine.dispose()
    finally:
        _drop_pg_database(name)


def test_every_message_links_to_the_configured_public_base_url(deployment: Deployment) -> None:
    assert len(deployment.links) >= 10
    assert all(link.startswith(f"{deployment.base}/unsubscribe?token=") for _, link in deployment.links)


def test_one_click_post_from_a_real_message_suppresses_its_address(deployment: Deployment) -> None:
    email, link = deployment.links[0]
    assert email_hash(email) not in deployment.suppressed()
    reply = httpx.post(link, data=ONE_CLICK)
    assert reply.status_code == 200
    assert deployment.suppressed()[email_hash(email)] == "unsubscribed"


def test_a_second_click_is_idempotent(deployment: Deployment) -> None:
    email, link = deployment.links[1]
    first = httpx.post(link, data=ONE_CLICK)
    after_first = deployment.suppressed()
    second = httpx.post(link, data=ONE_CLICK)
    assert (first.status_code, second.status_code) == (200, 200)
    assert 'id="done"' in second.text or "id='done'" in second.text
    assert deployment.suppressed() == after_first
    assert email_hash(email) in after_first


def test_a_forged_token_gets_a_400_and_changes_nothing(deployment: Deployment) -> None:
    email, link = deployment.links[2]
    base, token = link.split("?token=")
    customer, mac = token.split(".")
    forgeries = [
        f"{customer}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",  # altered signature
        f"{int(customer) + 1}.{mac}",  # someone else's id with this signature
        "not-a-token",
        "",
    ]
    before = deployment.suppressed()
    for forged in forgeries:
        posted = httpx.post(base, params={"token": forged}, data=ONE_CLICK)
        shown = httpx.get(base, params={"token": forged})
        assert (posted.status_code, shown.status_code) == (400, 400), forged
        assert "not valid" in posted.text
    assert deployment.suppressed() == before
    assert email_hash(email) not in before


def test_the_confirm_page_speaks_the_customers_language_and_changes_nothing(deployment: Deployment) -> None:
    by_language = {deployment.language(email): (email, link) for email, link in deployment.links[3:]}
    assert {"de", "en"} <= set(by_language)
    before = deployment.suppressed()
    page = httpx.get(by_language["de"][1])
    assert page.status_code == 200
    assert '<html lang="de">' in page.text and "Ja, abmelden" in page.text
    assert by_language["de"][0] in page.text
    assert page.headers["referrer-policy"] == "no-referrer"  # the token must not leak onwards
    assert deployment.suppressed() == before  # a GET (a link scanner) never unsubscribes


def test_a_post_without_the_one_click_body_is_refused(deployment: Deployment) -> None:
    email, link = deployment.links[-1]
    reply = httpx.post(link, data={"List-Unsubscribe": "yes"})
    assert reply.status_code == 400 and "List-Unsubscribe=One-Click" in reply.text
    assert email_hash(email) not in deployment.suppressed()


def test_one_client_is_rate_limited(tmp_path: Path, deployment: Deployment) -> None:
    # A second server on the same warehouse, allowing 3 requests a minute.
    limited = Deployment.__new__(Deployment)
    limited.home, limited.warehouse_url, limited.port = tmp_path, deployment.warehouse_url, free_port()
    url = f"http://127.0.0.1:{limited.port}/unsubscribe"
    with limited.serve(RETENTION_UNSUBSCRIBE_RATE_PER_MINUTE="3"):
        codes = [httpx.get(url, params={"token": "1.x"}).status_code for _ in range(4)]
        refused = httpx.post(url, params={"token": "1.x"}, data=ONE_CLICK)
    assert codes == [400, 400, 400, 429]
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60


def test_the_rate_limiter_opens_again_after_its_window() -> None:
    now = [0.0]
    limiter = RateLimiter(2, window=60, clock=lambda: now[0])
    assert [limiter.allow("a")[0] for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")[0]  # per client
    now[0] = 59.9
    assert not limiter.allow("a")[0]
    now[0] = 60.0
    assert limiter.allow("a")[0]


# --- the Retention page's queries, against counts taken straight from the tables -----------------


def test_segment_counts_equal_the_nights_snapshots(deployment: Deployment) -> None:
    s = schema.segment_snapshots
    night = dt.date.fromisoformat(NIGHTS[-1])
    with deployment.engine.connect() as conn:
        counts = queries.segment_counts(conn, night)
        for key, column in (
            ("rfm", s.c.rfm_segment),
            ("abc", s.c.abc_class),
            ("lifecycle", s.c.lifecycle_phase),
        ):
            oracle = dict(
                conn.execute(select(column, func.count()).where(s.c.night == night).group_by(column)).all()
            )
            assert counts[key] == oracle, key
        assert queries.nights(conn) == [dt.date.fromisoformat(n) for n in reversed(NIGHTS)]


def test_lifecycle_flows_equal_the_moves_between_the_two_snapshots(deployment: Deployment) -> None:
    s = schema.segment_snapshots
    before, after = (dt.date.fromisoformat(n) for n in NIGHTS)
    with deployment.engine.connect() as conn:
        rows = conn.execute(
            select(s.c.night, s.c.customer_id, s.c.lifecycle_phase).where(s.c.night.in_(NIGHTS))
        )
        phases: dict[dt.date, dict[int, str]] = {before: {}, after: {}}
        for night, customer, phase in rows:
            phases[night if isinstance(night, dt.date) else dt.date.fromisoformat(night)][customer] = phase
        flows = queries.lifecycle_flows(conn, after)
    oracle = Counter(
        (phases[before][c], phase)
        for c, phase in phases[after].items()
        if c in phases[before] and phases[before][c] != phase
    )
    assert {(a, b): n for a, b, n in flows} == dict(oracle)
    assert flows, "two nights of the demo shop move someone between phases"


def test_occasion_outcomes_account_for_every_occasion_and_message(deployment: Deployment) -> None:
    occ, box = schema.occasions, schema.outbox
    night = dt.date.fromisoformat(NIGHTS[-1])
    with deployment.engine.connect() as conn:
        outcomes = queries.occasion_outcomes(conn, night)
        occasions = conn.execute(select(func.count()).where(occ.c.night == night)).scalar()
        by_status = dict(
            conn.execute(
                select(box.c.status, func.count()).where(box.c.night == night).group_by(box.c.status)
            ).all()
        )
        skipped = conn.execute(
            select(func.count()).where(occ.c.night == night, occ.c.status != "selected")
        ).scalar()
    totals = Counter()
    for row in outcomes:
        totals[row["outcome"]] += row["count"]
    assert sum(totals.values()) == occasions
    assert totals["skipped"] == skipped
    for status, n in by_status.items():
        assert totals[status] == n, status
    assert by_status.get("sent", 0) > 0
    assert all(row["reason"] for row in outcomes if row["outcome"] == "skipped")


def test_a_customer_is_found_by_id_and_by_address(deployment: Deployment) -> None:
    email, _ = deployment.links[0]
    box = schema.outbox
    with deployment.engine.connect() as conn:
        customer_id, outbox_id = conn.execute(
            select(box.c.customer_id, box.c.outbox_id).where(box.c.email == email)
        ).first()
        assert queries.find_customer(conn, email) == customer_id
        assert queries.find_customer(conn, f"  {customer_id} ") == customer_id
        assert queries.find_customer(conn, "nobody@example.com") is None
        view = queries.customer_view(conn, customer_id, dt.date.fromisoformat(NIGHTS[-1]))
        message = queries.message(conn, outbox_id)
    assert view["person"]["email"] == email
    assert outbox_id in [m["outbox_id"] for m in view["messages"]]
    assert view["segment"]["lifecycle_phase"] in LIFECYCLE_PHASES
    assert message["email"] == email and message["html_body"].startswith("<")


def test_the_quarantine_panel_lists_the_nights_bad_rows_by_rule(deployment: Deployment) -> None:
    q = schema.quarantine
    night = dt.date.fromisoformat(NIGHTS[0])  # the first night loads the demo shop's planted defects
    with deployment.engine.connect() as conn:
        panel = queries.quarantine_by_rule(conn, night)
        oracle = dict(
            conn.execute(select(q.c.rule, func.count()).where(q.c.night == night).group_by(q.c.rule)).all()
        )
    assert {p["rule"]: p["count"] for p in panel} == oracle
    assert oracle, "the demo shop plants bad rows"
    assert all(1 <= len(p["examples"]) <= 3 and p["examples"][0]["detail"] for p in panel)


def test_the_uplift_interval_is_newcombes() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, example (a): 56/70 vs 48/80,
    # method 10 (score interval, no continuity correction): 0.0524 to 0.3339.
    low, high = queries.difference_interval(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    # Example (h), 0/10 vs 0/20: the interval stays inside [-1, 1] where Wald's collapses to a point.
    low, high = queries.difference_interval(0, 10, 0, 20)
    assert -1 < low < 0 < high < 1
