"""The Retention plugin inside a real Airflow api-server (``airflow api-server`` on a loopback port,
simple auth manager, the repo's plugins folder), over real HTTP: the page refuses anonymous
requests and serves a logged-in user; the unsubscribe path answers without a login."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from retention import schema
from retention.unsubscribe import email_hash
from tests.ui_env import NIGHTS, PUBLIC_PREFIX, AirflowUI, running_airflow_ui

pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowUI]:
    with running_airflow_ui(tmp_path_factory.mktemp("airflow-ui")) as running:
        yield running


PAGE_PATHS = (
    "/retention/",
    f"/retention/?night={NIGHTS[0]}",
    "/retention/message/1",
    "/retention/message/1/html",
    "/retention/templates",
)


def test_anonymous_requests_to_the_page_are_refused(ui: AirflowUI) -> None:
    for path in (*PAGE_PATHS, "/retention/app.js"):
        assert httpx.get(f"{ui.base}{path}").status_code == 401, path
        forged = httpx.get(f"{ui.base}{path}", headers={"Authorization": "Bearer not-a-jwt"})
        assert forged.status_code == 403, path
        assert "Retention" not in forged.text
    # A person's browser (Accept: text/html) is sent to Airflow's login, which brings it back.
    browser = httpx.get(f"{ui.base}/retention/?night={NIGHTS[0]}", headers={"Accept": "text/html"})
    assert browser.status_code == 303
    assert browser.headers["location"] == f"/auth/login?next=%2Fretention%2F%3Fnight%3D{NIGHTS[0]}"
    draft = {"occasion": "birthday", "language": "en", "source": "{% extends '_layout.jinja' %}"}
    assert httpx.post(f"{ui.base}/retention/templates/preview", json=draft).status_code == 401


def test_a_logged_in_user_sees_the_latest_night_and_its_segments(ui: AirflowUI) -> None:
    page = httpx.get(f"{ui.base}/retention/", cookies={"_token": ui.token()})
    assert page.status_code == 200
    assert f'<option value="{NIGHTS[-1]}" selected>' in page.text
    assert f'<option value="{NIGHTS[0]}" >' in page.text
    s = schema.segment_snapshots
    with ui.engine.connect() as conn:
        phases = conn.execute(
            select(s.c.lifecycle_phase, func.count())
            .where(s.c.night == dt.date.fromisoformat(NIGHTS[-1]))
            .group_by(s.c.lifecycle_phase)
        ).all()
    assert phases
    for phase, n in phases:
        assert f'<td>{phase}</td><td class="n">{n}</td>' in page.text, phase


def test_an_older_night_is_chosen_from_the_list(ui: AirflowUI) -> None:
    bearer = {"Authorization": f"Bearer {ui.token()}"}
    page = httpx.get(f"{ui.base}/retention/", params={"night": NIGHTS[0]}, headers=bearer)
    assert page.status_code == 200
    assert f"Customers on {NIGHTS[0]}" in page.text
    assert f'<option value="{NIGHTS[0]}" selected>' in page.text
    assert (
        httpx.get(f"{ui.base}/retention/", params={"night": "yesterday"}, headers=bearer).status_code == 400
    )


def test_outbox_search_by_address_opens_the_message_as_it_was_sent(ui: AirflowUI) -> None:
    cookies = {"_token": ui.token()}
    box = schema.outbox
    with ui.engine.connect() as conn:
        row = (
            conn.execute(select(box).where(box.c.status == "sent").order_by(box.c.outbox_id).limit(1))
            .mappings()
            .one()
        )
    found = httpx.get(f"{ui.base}/retention/", params={"q": row["email"]}, cookies=cookies)
    assert f"Customer {row['customer_id']}" in found.text
    assert f'href="./message/{row["outbox_id"]}"' in found.text
    shown = httpx.get(f"{ui.base}/retention/message/{row['outbox_id']}", cookies=cookies)
    assert html.escape(row["subject"]) in shown.text and row["message_id"] in html.unescape(shown.text)
    part = httpx.get(f"{ui.base}/retention/message/{row['outbox_id']}/html", cookies=cookies)
    assert part.text == row["html_body"]
    assert part.headers["content-security-policy"].startswith("sandbox")
    assert httpx.get(f"{ui.base}/retention/message/999999", cookies=cookies).status_code == 404


def test_the_plugin_and_its_nav_entry_are_registered(ui: AirflowUI) -> None:
    reply = httpx.get(f"{ui.base}/api/v2/plugins", headers={"Authorization": f"Bearer {ui.token('admin')}"})
    plugin = next(p for p in reply.json()["plugins"] if p["name"] == "retention")
    assert {a["url_prefix"] for a in plugin["fastapi_apps"]} == {"/retention", PUBLIC_PREFIX}
    assert [(v["name"], v["href"], v["destination"]) for v in plugin["external_views"]] == [
        ("Retention", "retention/", "nav")
    ]


def test_the_unsubscribe_path_answers_without_a_login(ui: AirflowUI) -> None:
    email, link = ui.links[0]
    assert link.startswith(f"{ui.base}{PUBLIC_PREFIX}/unsubscribe?token=")
    page = httpx.get(link)
    assert page.status_code == 200 and "id='confirm'" in page.text
    assert email_hash(email) not in ui.suppressed()
    first = httpx.post(link, data={"List-Unsubscribe": "One-Click"})
    after = ui.suppressed()
    again = httpx.post(link, data={"List-Unsubscribe": "One-Click"})
    assert (first.status_code, again.status_code) == (200, 200)
    assert email_hash(email) in after and ui.suppressed() == after
    forged = httpx.post(
        link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB"), data={"List-Unsubscribe": "One-Click"}
    )
    assert forged.status_code == 400 and ui.suppressed() == after


def test_saving_a_template_needs_the_editor_permission(ui: AirflowUI) -> None:
    """Through the api-server's own auth: anonymous 401, the viewer 403, the admin saves; the
    version lands in the warehouse with the admin's name, and a restore makes the file live again."""
    source = (ROOT / "templates" / "birthday" / "en.jinja").read_text(encoding="utf-8")
    edited = source.replace("{% block subject %}", "{% block subject %}Cheers! ", 1)
    draft = {"occasion": "birthday", "language": "en", "source": edited}
    assert httpx.post(f"{ui.base}/retention/templates/save", json=draft).status_code == 401
    viewer = httpx.post(f"{ui.base}/retention/templates/save", json=draft, cookies={"_token": ui.token()})
    assert viewer.status_code == 403, viewer.text
    page = httpx.get(
        f"{ui.base}/retention/templates?occasion=birthday&language=en", cookies={"_token": ui.token()}
    )
    assert 'id="no-save"' in page.text and 'id="save"' not in page.text
    admin = {"_token": ui.token("admin")}
    saved = httpx.post(f"{ui.base}/retention/templates/save", json=draft, cookies=admin)
    assert saved.status_code == 200, saved.text
    tv = schema.template_versions
    with ui.engine.connect() as conn:
        row = conn.execute(select(tv).where(tv.c.version_id == saved.json()["version_id"])).one()
    assert (row.occasion, row.language, row.saved_by, row.source) == ("birthday", "en", "admin", edited)
    back = httpx.post(
        f"{ui.base}/retention/templates/restore",
        json={"occasion": "birthday", "language": "en", "version_id": 0},
        cookies=admin,
    )
    assert back.status_code == 200 and back.json()["label"].startswith("version ")
    page = httpx.get(f"{ui.base}/retention/templates?occasion=birthday&language=en", cookies=admin)
    assert "restored the shipped file" in page.text and 'id="save"' in page.text
