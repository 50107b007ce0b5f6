"""In a real browser: Debian's headless Chromium (``/usr/bin/chromium``, installed by
``scripts/install-browser.sh``; Playwright never downloads a browser here) driven by Playwright
against a real Airflow api-server with the Retention plugin. A person logs in, opens the
Retention page from the nav bar, switches the night, finds a customer and opens a message; a
customer unsubscribes through the link of a real .eml that the pipeline delivered.

Screenshots go to ``docs/`` (the README shows them) with ``RETENTION_UPDATE_SCREENSHOTS=1``,
to a temporary folder otherwise."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from retention import schema
from retention.unsubscribe import email_hash
from tests.airflow_env import ROOT
from tests.ui_env import NIGHTS, USERS, AirflowUI, chromium, running_airflow_ui

pytestmark = pytest.mark.airflow

# The README's screenshots are refreshed on request only (RETENTION_UPDATE_SCREENSHOTS=1), so
# that a test run leaves the tree as it found it; otherwise they go to a temporary folder.
DOCS = (
    ROOT / "docs"
    if os.environ.get("RETENTION_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="retention-screenshots-"))
)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowUI]:
    with running_airflow_ui(tmp_path_factory.mktemp("browser-ui")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def _log_in(page: Page, ui: AirflowUI, user: str = "viewer") -> None:
    login, password = USERS[user]
    page.goto(f"{ui.base}/")
    page.get_by_label("Username").fill(login)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{ui.base}/")


def test_a_user_logs_in_and_reads_the_nights_from_the_nav_bar(ui: AirflowUI, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _log_in(page, ui)
    page.get_by_role("link", name="Retention").click()
    frame = page.frame_locator("iframe").first
    expect(frame.locator("#segments h2")).to_have_text(f"Customers on {NIGHTS[-1]}", timeout=30_000)
    expect(frame.locator("#occasions-table tbody tr").first).to_be_visible()
    page.screenshot(path=str(DOCS / "retention-page.png"))

    # The night picker submits itself (the page's script): the older night is shown.
    frame.locator("#night").select_option(NIGHTS[0])
    expect(frame.locator("#segments h2")).to_have_text(f"Customers on {NIGHTS[0]}")
    expect(frame.locator("#quarantine h3").first).to_be_visible()  # the first night held rows back
    page.close()


def test_a_user_finds_a_customer_and_opens_the_message_as_sent(ui: AirflowUI, browser: Browser) -> None:
    box = schema.outbox
    with ui.engine.connect() as conn:
        row = (
            conn.execute(select(box).where(box.c.status == "sent").order_by(box.c.outbox_id).limit(1))
            .mappings()
            .one()
        )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _log_in(page, ui)
    page.goto(f"{ui.base}/retention/")
    page.locator("#q").fill(row["email"])
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#outbox h3")).to_contain_text(f"Customer {row['customer_id']}")
    page.locator(f'#messages a[href="./message/{row["outbox_id"]}"]').click()
    expect(page.locator("#subject")).to_have_text(row["subject"])
    expect(page.frame_locator("iframe").locator("body")).to_contain_text(row["text_body"].split("\n")[0][:20])
    page.screenshot(path=str(DOCS / "retention-message.png"), full_page=True)
    page.close()


def test_a_customer_unsubscribes_through_the_link_of_a_delivered_message(
    ui: AirflowUI, browser: Browser
) -> None:
    email, link = ui.links[-1]
    assert email_hash(email) not in ui.suppressed()
    context = browser.new_context()  # a customer: no Airflow login, no cookies
    page = context.new_page()
    page.goto(link)
    expect(page.locator("#confirm")).to_be_visible()
    assert email_hash(email) not in ui.suppressed()  # opening the link changes nothing
    page.locator("#confirm").click()
    expect(page.locator("#done")).to_contain_text(email)
    page.screenshot(path=str(DOCS / "unsubscribe.png"))
    assert email_hash(email) in ui.suppressed()
    context.close()


def test_marketing_switches_language_edits_and_sees_preview_and_lint_at_the_line(
    ui: AirflowUI, browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    _log_in(page, ui, "admin")  # RETENTION_TEMPLATE_EDITORS=role:admin (tests/ui_env.py)
    page.goto(f"{ui.base}/retention/templates?occasion=birthday&language=en")
    expect(page.locator("#preview-subject")).to_contain_text("Happy birthday, ")

    page.locator("#language").select_option("de")  # the picker submits itself
    expect(page.locator("#source")).to_have_attribute("data-language", "de")
    expect(page.locator("#preview-subject")).to_have_text("Herzlichen Glückwunsch zum Geburtstag!")

    lines = page.locator("#source").input_value().split("\n")
    assert lines[1].startswith("{% block subject %}")
    lines[1] = "{% block subject %}Alles Gute, {{ customer.first_name }}!{% endblock %}"
    page.locator("#source").fill("\n".join(lines))
    expect(page.locator("#preview-subject")).to_contain_text("Alles Gute, ")
    expect(page.locator("#status")).to_have_text("no problems")

    lines[3] += " {{ gift_voucher }}"  # line 4 of the file: a variable the occasion does not have
    page.locator("#source").fill("\n".join(lines))
    problem = page.locator("#problems li.error").first
    expect(problem).to_contain_text("birthday/de.jinja:4: error: undefined variable 'gift_voucher'")
    expect(page.locator("#gutter .bad")).to_have_text("4")
    page.screenshot(path=str(DOCS / "retention-templates.png"))
    page.locator("#save").click()  # refused: the error stays at its line, nothing is saved
    expect(page.locator("#status")).to_contain_text("not saved")
    expect(page.locator("#gutter .bad")).to_have_text("4")
    assert _versions(ui, "birthday", "de") == []

    lines[3] = lines[3].removesuffix(" {{ gift_voucher }}")
    page.locator("#source").fill("\n".join(lines))
    expect(page.locator("#status")).to_have_text("no problems")
    page.locator("#save").click()  # the page reloads with the saved version live
    expect(page.locator("#live-version")).to_have_text("version 1")
    expect(page.locator("#history tbody tr").first).to_contain_text("admin")
    expect(page.locator("#preview-subject")).to_contain_text("Alles Gute, ")
    assert [(v.saved_by, "Alles Gute" in v.source) for v in _versions(ui, "birthday", "de")] == [
        ("admin", True)
    ]
    page.screenshot(path=str(DOCS / "retention-template-saved.png"))

    page.locator("#history button.restore[data-version='0']").click()  # back to the shipped file
    expect(page.locator("#history tbody tr").first).to_contain_text("restored the shipped file")
    expect(page.locator("#preview-subject")).to_have_text("Herzlichen Glückwunsch zum Geburtstag!")
    # The shipped file itself was never written: edits live in the warehouse.
    assert "Alles Gute" not in (ROOT / "templates" / "birthday" / "de.jinja").read_text()
    page.close()


def _versions(ui: AirflowUI, occasion: str, language: str) -> list:
    tv = schema.template_versions
    with ui.engine.connect() as conn:
        return list(
            conn.execute(
                select(tv)
                .where(tv.c.occasion == occasion, tv.c.language == language)
                .order_by(tv.c.version_id)
            )
        )
