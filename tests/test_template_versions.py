"""Issue #13 item 2: templates saved on the Retention page live in the warehouse, every render uses
them, each message records the version it was rendered from, and queued messages can be rendered
again after an edit.

On SQLite and PostgreSQL. The "other machine" is a separate Python process whose own
``templates/`` folder is a copy of the shipped files (what a Celery worker's image holds): it sees
the edit only through the warehouse.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import Header, HTTPException
from sqlalchemy import func, select, update

from retention import schema, template_store
from retention.night import night_for_date
from retention.outbox import rerender
from retention.pipeline import stage_render, warehouse_engine
from retention.template_store import LintFailed, TemplatesFrozen, allowed_editor
from retention.web.retention_app import create_retention_app
from tests.conftest import SECRET
from tests.shop import Shop
from tests.test_occasions import _through_occasions

ROOT = Path(__file__).resolve().parent.parent
NIGHT = "2026-11-22"
NOW = dt.datetime(2026, 11, 21, 15, 0, tzinfo=dt.UTC)
CUSTOMERS = {1: "en", 2: "de", 3: "de", 4: "de", 5: "en"}


@pytest.fixture
def settings(settings):
    return settings.with_overrides(holdout_share=0.0)


@pytest.fixture
def night_shop(settings, shop: Shop):
    """Five customers who placed their first order the day before the night: five thank-yous."""
    for customer_id, language in CUSTOMERS.items():
        shop.customer(customer_id, language=language, first_name=f"Kunde{customer_id}")
        shop.order(customer_id, customer_id, dt.datetime(2026, 11, 21, 10, 0))
        shop.item(customer_id, customer_id, 1, updated_at=dt.datetime(2026, 11, 21, 10, 0))
    _through_occasions(settings, NIGHT)
    return shop


def _edited(settings, marker: str) -> str:
    source = template_store.shipped_source(settings, "thank_you", "de")
    lines = source.split("\n")
    assert lines[2].startswith("{% block subject %}")
    lines[2] = "{% block subject %}" + marker + ", {{ customer.first_name }}!{% endblock %}"
    return "\n".join(lines)


def _outbox(settings) -> dict[int, tuple[str, str, int | None, str]]:
    box = schema.outbox
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(
            select(
                box.c.customer_id, box.c.subject, box.c.status, box.c.template_version_id, box.c.template_hash
            )
        )
        return {r.customer_id: (r.subject, r.status, r.template_version_id, r.template_hash) for r in rows}


def _render_elsewhere(settings, home: Path) -> dict:
    """The render stage in another process whose own templates folder is the shipped copy."""
    folder = home / "worker-image" / "templates"
    shutil.copytree(ROOT / "templates", folder)
    code = (
        "import json, sys\n"
        "from retention.night import night_for_date\n"
        "from retention.pipeline import stage_render\n"
        "from retention.settings import Settings\n"
        "s = Settings()\n"
        f"print(json.dumps(stage_render(s, night_for_date({NIGHT!r}, s.time_zone), 'worker'), default=str))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "RETENTION_HOME": str(home),
        "RETENTION_WAREHOUSE_URL": settings.warehouse,
        "RETENTION_TEMPLATES_DIR": str(folder),
        "RETENTION_TIME_ZONE": settings.time_zone,
        "RETENTION_HOLDOUT_SHARE": "0",
        "RETENTION_UNSUBSCRIBE_SECRET": SECRET.decode(),
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_version_saved_on_one_machine_is_rendered_on_another(settings, night_shop, tmp_path) -> None:
    engine = warehouse_engine(settings.warehouse)
    version, new = template_store.save(
        engine, settings, "thank_you", "de", _edited(settings, "Tausend Dank"), "marketing", now=NOW
    )
    assert new and version.version_id > 0 and version.saved_by == "marketing"
    counts = _render_elsewhere(settings, tmp_path / "worker")
    assert counts["queued"] == {"thank_you": 5}
    box = _outbox(settings)
    for customer_id, language in CUSTOMERS.items():
        subject, status, version_id, _ = box[customer_id]
        if language == "de":
            assert subject == f"Tausend Dank, Kunde{customer_id}!"
            assert version_id == version.version_id
        else:  # English was not edited: a shipped file (variant a or b), no version
            assert "Tausend Dank" not in subject and version_id is None
    # The worker's own files were never touched: the edit lives only in the warehouse.
    assert (
        "Tausend Dank"
        not in (tmp_path / "worker" / "worker-image" / "templates" / "thank_you" / "de.jinja").read_text()
    )


def test_a_draft_with_lint_errors_is_not_saved_and_names_its_line(settings, night_shop) -> None:
    engine = warehouse_engine(settings.warehouse)
    source = _edited(settings, "Hallo {{ gift_voucher }}")
    with pytest.raises(LintFailed) as failed:
        template_store.save(engine, settings, "thank_you", "de", source, "marketing", now=NOW)
    errors = [p for p in failed.value.problems if p["severity"] == "error"]
    assert errors and errors[0]["line"] == 3 and "gift_voucher" in errors[0]["message"]
    assert "thank_you/de.jinja:3" in str(failed.value)
    assert template_store.history(engine, "thank_you", "de") == []


def test_history_restore_and_no_duplicate_versions(settings, night_shop) -> None:
    engine = warehouse_engine(settings.warehouse)
    first, _ = template_store.save(
        engine, settings, "thank_you", "de", _edited(settings, "Eins"), "anna", now=NOW
    )
    again, new = template_store.save(
        engine, settings, "thank_you", "de", _edited(settings, "Eins"), "bob", now=NOW
    )
    assert (again.version_id, new) == (first.version_id, False)  # the live wording: nothing written
    second, _ = template_store.save(
        engine, settings, "thank_you", "de", _edited(settings, "Zwei"), "bob", now=NOW
    )
    restored, new = template_store.restore(
        engine, settings, first.version_id, "carla", occasion="thank_you", language="de", now=NOW
    )
    assert new and restored.source == first.source and restored.note == f"restored version {first.version_id}"
    history = template_store.history(engine, "thank_you", "de")
    assert [v.version_id for v in history] == [restored.version_id, second.version_id, first.version_id]
    assert [v.saved_by for v in history] == ["carla", "bob", "anna"]
    assert template_store.current(engine, settings, "thank_you", "de").version_id == restored.version_id
    shipped, _ = template_store.restore(
        engine, settings, 0, "carla", occasion="thank_you", language="de", now=NOW
    )
    assert shipped.source == template_store.shipped_source(settings, "thank_you", "de")
    with pytest.raises(KeyError, match="not thank_you/en"):
        template_store.restore(
            engine, settings, first.version_id, "x", occasion="thank_you", language="en", now=NOW
        )
    with pytest.raises(KeyError, match="no template"):
        template_store.save(engine, settings, "no_such", "de", "x", "x", now=NOW)


def test_frozen_templates_refuse_saves_and_renders_ignore_saved_versions(settings, night_shop) -> None:
    engine = warehouse_engine(settings.warehouse)
    template_store.save(engine, settings, "thank_you", "de", _edited(settings, "Ungefroren"), "anna", now=NOW)
    frozen = settings.with_overrides(templates_frozen=True)
    with pytest.raises(TemplatesFrozen, match="RETENTION_TEMPLATES_FROZEN"):
        template_store.save(engine, frozen, "thank_you", "de", _edited(frozen, "Neu"), "anna", now=NOW)
    stage_render(frozen, night_for_date(NIGHT, frozen.time_zone), "t", SECRET)
    subjects = {s for s, *_ in _outbox(frozen).values()}
    assert not any("Ungefroren" in s for s in subjects)
    assert all(v is None for _, _, v, _ in _outbox(frozen).values())


def test_rerender_updates_only_messages_still_queued(settings, night_shop) -> None:
    engine = warehouse_engine(settings.warehouse)
    stage_render(settings, night_for_date(NIGHT, settings.time_zone), "t", SECRET)
    box = schema.outbox
    with engine.begin() as conn:  # customer 3's message went out, customer 4's is being sent now
        conn.execute(update(box).where(box.c.customer_id == 3).values(status="sent"))
        conn.execute(update(box).where(box.c.customer_id == 4).values(status="sending", lease_owner="w1"))
    before = _outbox(settings)
    version, _ = template_store.save(
        engine, settings, "thank_you", "de", _edited(settings, "Neu"), "anna", now=NOW
    )
    counts = rerender(engine, settings, SECRET, "thank_you", "de")
    assert counts == {"rerendered": 1, "current": 0, "claimed": 0, "kept": 0, "template_failures": {}}
    after = _outbox(settings)
    assert after[2][0] == "Neu, Kunde2!" and after[2][2] == version.version_id
    assert after[2][3] != before[2][3]  # the content hash follows the wording
    for unchanged in (1, 3, 4, 5):  # English, sent, sending: as they were
        assert after[unchanged] == before[unchanged]
    # The body links still carry a valid unsubscribe token, signed again with the secret.
    with engine.connect() as conn:
        text = conn.execute(select(box.c.text_body).where(box.c.customer_id == 2)).scalar_one()
    assert "token=" in text and "Neu" not in text.split("token=")[1]
    again = rerender(engine, settings, SECRET)
    assert again["rerendered"] == 0 and again["current"] == 3  # customers 1, 2, 5 are queued


def test_the_rerender_command_prints_its_counts(settings, night_shop, monkeypatch) -> None:
    from retention.cli import main

    stage_render(settings, night_for_date(NIGHT, settings.time_zone), "t", SECRET)
    engine = warehouse_engine(settings.warehouse)
    template_store.save(engine, settings, "thank_you", "de", _edited(settings, "Per CLI"), "anna", now=NOW)
    monkeypatch.setenv("RETENTION_HOME", str(settings.home_dir))
    monkeypatch.setenv("RETENTION_HOLDOUT_SHARE", "0")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "retention.cli",
            "rerender",
            "--url",
            settings.warehouse,
            "--occasion",
            "thank_you",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rerendered"] == 3
    with engine.connect() as conn:
        box = schema.outbox
        assert conn.execute(select(func.count()).where(box.c.subject.like("Per CLI%"))).scalar_one() == 3
    assert main(["rerender", "--url", settings.warehouse]) == 0  # nothing left to do


def test_the_template_commands_save_list_and_restore(settings, night_shop, tmp_path, capsys) -> None:
    from retention.cli import main

    draft = tmp_path / "de.jinja"
    draft.write_text(_edited(settings, "Von der Kommandozeile"), encoding="utf-8")
    url = ["--url", settings.warehouse]
    assert main(["templates", "save", "thank_you", "--language", "de", "--file", str(draft), *url]) == 0
    assert "saved as version" in capsys.readouterr().out
    assert main(["templates", "history", "thank_you", "--language", "de", *url]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].startswith("*") and "cli:" in listing[0] and listing[-1].endswith("the shipped file")
    assert main(["templates", "restore", "thank_you", "0", "--language", "de", *url]) == 0
    draft.write_text(_edited(settings, "{{ nope }}"), encoding="utf-8")
    assert main(["templates", "save", "thank_you", "--language", "de", "--file", str(draft), *url]) == 1
    assert "thank_you/de.jinja:3: error" in capsys.readouterr().err


def test_the_editors_setting_lists_names_and_roles() -> None:
    assert allowed_editor("anyone", ["viewer"], "")  # unset: the auth manager alone decides
    assert allowed_editor("Anna", [], "anna, role:marketing")
    assert allowed_editor("bob", ["Marketing"], "anna, role:marketing")
    assert not allowed_editor("bob", ["viewer"], "anna, role:marketing")
    assert not allowed_editor("bob", ["admin"], "anna")


# --- the page's routes, served in process; the user comes from a header (tests only) -------------


def _app(settings, **kwargs):
    def require_user(x_user: str | None = Header(None)) -> str:
        if not x_user:
            raise HTTPException(401, "log in")
        return x_user

    return create_retention_app(
        require_user,
        settings=settings,
        engine=warehouse_engine(settings.warehouse),
        editor_name=lambda user: user if user == "anna" else None,
        secret=lambda: SECRET,
        **kwargs,
    )


async def _post(app, user, path, body, content_type="application/json"):
    headers = {"content-type": content_type, **({"x-user": user} if user else {})}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.post(path, content=json.dumps(body), headers=headers)


async def _get(app, user, path):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.get(path, headers={"x-user": user} if user else {})


def test_the_page_saves_for_editors_only_and_shows_history(settings, night_shop) -> None:
    import asyncio

    app = _app(settings)
    draft = {"occasion": "thank_you", "language": "de", "source": _edited(settings, "Vom Browser")}
    run = asyncio.run
    assert run(_post(app, None, "/templates/save", draft)).status_code == 401
    refused = run(_post(app, "bob", "/templates/save", draft))
    assert refused.status_code == 403 and "may not save" in refused.json()["detail"]
    assert (
        run(_post(app, "anna", "/templates/save", draft, "application/x-www-form-urlencoded")).status_code
        == 415
    )
    bad = run(_post(app, "anna", "/templates/save", {**draft, "source": _edited(settings, "{{ oops }}")}))
    assert bad.status_code == 422 and bad.json()["detail"]["problems"][0]["line"] == 3
    stage_render(settings, night_for_date(NIGHT, settings.time_zone), "t", SECRET)
    saved = run(_post(app, "anna", "/templates/save", draft))
    assert saved.status_code == 200, saved.text
    reply = saved.json()
    assert reply["new"] and reply["stale_queued"] == 3  # the three German messages in the queue
    page = run(_get(app, "anna", "/templates?occasion=thank_you&language=de"))
    assert f"version {reply['version_id']}" in page.text and "Vom Browser" in page.text
    assert 'id="save"' in page.text and 'id="rerender"' in page.text
    assert "saved by anna" in page.text
    viewer = run(_get(app, "bob", "/templates?occasion=thank_you&language=de"))
    assert 'id="save"' not in viewer.text and 'id="no-save"' in viewer.text
    source = run(_get(app, "bob", f"/templates/version/{reply['version_id']}"))
    assert source.text == draft["source"]
    again = run(_post(app, "anna", "/templates/rerender", {"occasion": "thank_you", "language": "de"}))
    assert again.json()["rerendered"] == 3
    assert all(
        s.startswith("Vom Browser")
        for s, _, _, _ in (v for k, v in _outbox(settings).items() if CUSTOMERS[k] == "de")
    )
    back = run(
        _post(app, "anna", "/templates/restore", {"occasion": "thank_you", "language": "de", "version_id": 0})
    )
    assert back.status_code == 200 and back.json()["stale_queued"] == 3


def test_a_frozen_deployment_offers_the_file_instead(settings, night_shop) -> None:
    import asyncio

    app = _app(settings.with_overrides(templates_frozen=True))
    page = asyncio.run(_get(app, "anna", "/templates?occasion=thank_you&language=de"))
    assert 'id="frozen"' in page.text and 'id="download"' in page.text and 'id="save"' not in page.text
    draft = {"occasion": "thank_you", "language": "de", "source": _edited(settings, "Neu")}
    refused = asyncio.run(_post(app, "anna", "/templates/save", draft))
    assert refused.status_code == 409 and "RETENTION_TEMPLATES_FROZEN" in refused.json()["detail"]
