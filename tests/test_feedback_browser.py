"""In a real browser: a customer rates an order from the links of a feedback message that the
pipeline delivered, changes the rating, writes a comment, and the warehouse holds exactly one
answer (issue #17: "a test clicks them in Chromium").

Two nights of the demo shop run through the ``retention`` command line and their messages are
delivered to a real SMTP sink on loopback, which keeps them as .eml files
(``tests/ui_env.demo_warehouse``); the rating links are read from the HTML part of the feedback
message's .eml. The public app (unsubscribe and feedback) is served alone by uvicorn on a loopback
port, as a deployment may run it, and Debian's headless Chromium (``/usr/bin/chromium``,
``scripts/install-browser.sh``; Playwright never downloads a browser here) clicks.

Screenshots go to ``docs/`` with ``RETENTION_UPDATE_SCREENSHOTS=1``, to a temporary folder otherwise.
"""

from __future__ import annotations

import email
import email.policy
import html
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect
from sqlalchemy import Engine, create_engine, select

from retention import feedback as fb
from retention import schema
from tests.airflow_env import ROOT
from tests.ui_env import SECRET, chromium, demo_warehouse, free_port, public_app

DOCS = (
    ROOT / "docs"
    if os.environ.get("RETENTION_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="retention-screenshots-"))
)


@dataclass
class Shop:
    engine: Engine
    base: str
    eml: Path  # the delivered feedback message

    @property
    def ids(self) -> tuple[int, int]:
        """The (customer, order) the message asks about, from its links' token."""
        token = parse_token(next(iter(self.links().values())))
        ids = fb.verify(SECRET.encode(), token)
        assert ids is not None
        return ids

    def answers(self) -> list[tuple]:
        f = schema.feedback
        with self.engine.connect() as conn:
            return [
                tuple(r) for r in conn.execute(select(f.c.customer_id, f.c.order_id, f.c.rating, f.c.comment))
            ]

    def followups(self) -> list[tuple]:
        fu = schema.feedback_followups
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(fu.c.order_id, fu.c.rating, fu.c.status))]

    def links(self) -> dict[int, str]:
        """Rating -> link, from the HTML part of the delivered .eml."""
        message = email.message_from_bytes(self.eml.read_bytes(), policy=email.policy.default)
        body = message.get_body(preferencelist=("html",)).get_content()
        hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', body)]
        return {int(h.rpartition("rating=")[2]): h for h in hrefs if "/feedback?" in h and "rating=" in h}


def parse_token(link: str) -> str:
    return re.search(r"[?&]token=([^&]+)", link).group(1)


def _feedback_message(mail: Path) -> Path:
    """The .eml of the (first) feedback message among those delivered."""
    for path in sorted(mail.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if message["X-Retention-Occasion"] == "feedback":
            return path
    raise AssertionError(f"no feedback message among the {len(list(mail.glob('*.eml')))} delivered")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    home = tmp_path_factory.mktemp("feedback-browser")
    url = f"sqlite:///{home / 'warehouse.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    mail = demo_warehouse(home, url, base)  # links point at the server below
    engine = create_engine(url)
    with public_app(home, url, port, RETENTION_UNSUBSCRIBE_RATE_PER_MINUTE="1000"):
        yield Shop(engine, base, _feedback_message(mail))
    engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def test_a_customer_rates_changes_the_rating_and_comments_from_the_delivered_links(
    shop: Shop, browser: Browser
) -> None:
    links = shop.links()
    assert sorted(links) == [1, 2, 3, 4, 5]
    assert all(link.startswith(f"{shop.base}/feedback?token=") for link in links.values())
    customer_id, order_id = shop.ids
    assert shop.answers() == []
    context = browser.new_context()  # a customer: no login, no cookies
    page = context.new_page()

    page.goto(links[2])  # one click in the mail client: the page posts the rating itself
    expect(page.locator("#status")).to_have_attribute("data-saved", "2")
    assert shop.answers() == [(customer_id, order_id, 2, None)]
    assert shop.followups() == [(order_id, 2, "open")]  # 2 is low: a follow-up for the shop

    page.goto(links[4])  # changed their mind: the same answer changes, no second row
    expect(page.locator("#status")).to_have_attribute("data-saved", "4")
    assert shop.answers() == [(customer_id, order_id, 4, None)]
    assert shop.followups() == [(order_id, 2, "closed")]

    expect(page.locator("#rating-4")).to_be_checked()
    comment = "Quick delivery, <b>well</b> packed – thank you!"
    page.locator("#comment").fill(comment)
    page.screenshot(path=str(DOCS / "feedback.png"))
    page.locator("#send").click()
    expect(page.locator("#thanks")).to_be_visible()
    expect(page.locator("#comment")).to_have_value(comment)  # shown back as text, not markup
    assert shop.answers() == [(customer_id, order_id, 4, comment)]
    context.close()


def test_without_scripts_the_link_records_nothing_until_the_button(shop: Shop, browser: Browser) -> None:
    """What a link scanner sees: a page that stores nothing; a person without scripts saves by hand."""
    before = shop.answers()
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(shop.links()[5])
    expect(page.locator("#save-rating")).to_be_visible()
    assert shop.answers() == before
    page.locator("#save-rating").click()
    expect(page.locator("#thanks")).to_be_visible()
    assert [(c, o, r) for c, o, r, _ in shop.answers()] == [(*shop.ids, 5)]
    context.close()
