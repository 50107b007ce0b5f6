"""Issue #16 item 1: an occasion is one SQL model, one declaration and its templates.

The test follows README's "Adding an occasion" word for word: it takes the model, the
declaration and the English template from that section, writes them (and three more languages)
into a temporary folder, points ``RETENTION_OCCASION_DIRS`` at it, and runs a night that
detects, decides and sends the new occasion, without touching any file of the repository.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from retention import schema
from retention.cli import main
from retention.forecast import forecast
from retention.mailer import SmtpConfig
from retention.night import night_for_date
from retention.pipeline import run_night, stage_deliver, stage_migrate, warehouse_engine
from retention.registry import OccasionError, check, occasions
from retention.settings import Settings
from retention.unsubscribe import record_preference, sign
from tests.airflow_env import ROOT
from tests.conftest import SECRET
from tests.shop import Shop

NIGHT = night_for_date("2026-11-20", "Europe/Berlin")  # window: 19 Nov, Berlin time
THIRTY_DAYS_BEFORE = dt.datetime(2026, 10, 20, 9, 0)  # 19 Nov - 30 days, 10:00 Berlin (UTC here)
EVENING = dt.datetime(2026, 11, 20, 15, 0)

# The three languages the README leaves to the reader, written as a native marketer would.
OTHER_LANGUAGES = {
    "de": (
        "Ein Monat mit uns, {{ customer.first_name }}",
        "seit Ihrer Bestellung Nr. {{ order.id }} vom {{ order.date }} sind {{ days }} Tage vergangen. "
        "Wir hoffen, Sie haben viel Freude daran!",
        "Entdecken Sie unsere Neuheiten",
    ),
    "nb": (
        "En måned med oss, {{ customer.first_name }}",
        "det er {{ days }} dager siden bestillingen din nr. {{ order.id }} fra {{ order.date }}. "
        "Vi håper du er fornøyd!",
        "Se hva som er nytt",
    ),
    "et": (
        "Kuu aega koos, {{ customer.first_name }}",
        "teie tellimusest nr {{ order.id }} ({{ order.date }}) on möödas {{ days }} päeva. "
        "Loodame, et olete rahul!",
        "Vaadake uudiseid",
    ),
}


def _recipe() -> dict[str, str]:
    """The files of README's "Adding an occasion", by their path in the recipe."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Adding an occasion", 1)[1].split("\n## ", 1)[0]
    files, start = {}, 0
    for match in re.finditer(r"```[a-z]+\n(.*?)\n\s*```", section, re.S):
        # each block is the file the prose before it names last (`second_order/<file>`)
        path = re.findall(r"`(second_order/[a-z_.]+)`", section[start : match.start()])[-1]
        block, start = match.group(1), match.end()
        indent = min(len(line) - len(line.lstrip()) for line in block.splitlines() if line.strip())
        files[path] = "\n".join(line[indent:] for line in block.splitlines()) + "\n"
    return files


def _write_occasion(root: Path) -> Path:
    files = _recipe()
    assert set(files) == {"second_order/occasion.sql", "second_order/occasion.py", "second_order/en.jinja"}
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    english = files["second_order/en.jinja"]
    for language, (subject, line, button) in OTHER_LANGUAGES.items():
        text = re.sub(r"(?<=block subject %\}).*?(?=\{% endblock)", subject, english)
        text = re.sub(r"it has been .*? enjoying it!", line, text)
        text = text.replace("Have a look at what is new: ", f"{button}: ").replace("See what is new", button)
        (root / "second_order" / f"{language}.jinja").write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def added(tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch):
    root = _write_occasion(tmp_path / "occasions")
    monkeypatch.setenv("RETENTION_OCCASION_DIRS", str(root))  # the CLI and the render workers read it
    return settings.with_overrides(occasion_dirs=str(root))


@pytest.fixture
def second_order_shop(added) -> Shop:
    shop = Shop(added.source)
    shop.product(1, price="249.90")
    people = {1: "en", 2: "de", 3: "nb", 4: "et", 5: "en", 6: "de", 7: "en"}
    for customer_id, language in people.items():
        shop.customer(
            customer_id,
            language=language,
            first_name=f"Name{customer_id}",
            marketing_consent=customer_id != 5,
        )
    single = {1: THIRTY_DAYS_BEFORE, 2: THIRTY_DAYS_BEFORE, 4: THIRTY_DAYS_BEFORE + dt.timedelta(days=1)}
    single |= {5: THIRTY_DAYS_BEFORE, 6: THIRTY_DAYS_BEFORE}
    for customer_id, moment in single.items():
        shop.order(100 + customer_id, customer_id, moment)
        shop.item(1000 + customer_id, 100 + customer_id, 1, updated_at=moment)
    # customer 3 ordered twice: no longer a single order; customer 7 never ordered
    shop.order(103, 3, THIRTY_DAYS_BEFORE)
    shop.item(1003, 103, 1, updated_at=THIRTY_DAYS_BEFORE)
    shop.order(203, 3, THIRTY_DAYS_BEFORE + dt.timedelta(days=5))
    shop.item(2003, 203, 1, updated_at=THIRTY_DAYS_BEFORE + dt.timedelta(days=5))
    return shop


def test_the_recipe_declares_an_occasion_the_registry_lists_after_the_shipped_ones(added) -> None:
    found = occasions(added)
    assert list(found)[-1] != "second_order"  # priority 65: between next_purchase and accessory
    assert list(found).index("second_order") == list(found).index("next_purchase") + 1
    assert found["second_order"].kind == "suggestions"
    assert added.priorities == tuple(found)
    assert "second_order" not in occasions(added.with_overrides(occasion_dirs=""))


def test_a_night_detects_decides_and_sends_the_added_occasion(added, second_order_shop, mail_sink) -> None:
    engine = warehouse_engine(added.warehouse)
    stage_migrate(added)
    with engine.begin() as conn:  # customer 6 stopped product suggestions on the unsubscribe page
        token = sign(SECRET, 6, "customer6@example.com")
        record_preference(conn, token, "customer6@example.com", SECRET, "suggestions", NIGHT.date)
    run_night(added, NIGHT, "t1")
    occ = schema.occasions
    with engine.connect() as conn:
        rows = conn.execute(
            select(occ.c.customer_id, occ.c.status, occ.c.reason, occ.c.details)
            .where(occ.c.occasion == "second_order")
            .order_by(occ.c.customer_id)
        ).all()
    decided = {row.customer_id: (row.status, row.reason) for row in rows}
    assert decided == {
        1: ("selected", None),
        2: ("selected", None),
        5: ("skipped", "no marketing consent"),
        6: ("skipped", "unsubscribed from suggestions"),
    }
    assert '"order_id": 101' in rows[0].details

    counts = stage_deliver(added, SmtpConfig(host="127.0.0.1", port=mail_sink.port), EVENING, secret=SECRET)
    assert counts["sent"] == 2
    received = {m.rcpt_tos[0]: m.message for m in mail_sink.wait_for(2)}
    english, german = received["customer1@example.com"], received["customer2@example.com"]
    assert english["Subject"] == "A month with us, Name1"
    assert german["Subject"] == "Ein Monat mit uns, Name2"
    text = german.get_body(("plain",)).get_content()
    assert "seit Ihrer Bestellung Nr. 102 vom 20. Oktober 2026 sind 30 Tage vergangen" in text
    assert "249,90" not in text  # the template quotes no total; the context still had it
    assert "List-Unsubscribe" in german


def test_lint_forecast_and_editor_know_the_added_occasion(added, second_order_shop, capsys) -> None:
    assert main(["templates", "lint"]) == 0
    assert capsys.readouterr().out.strip() == f"{9 * 4 + 1} templates OK"  # 9 occasions, 4 languages, en.b
    run_night(added, night_for_date("2026-11-19", "Europe/Berlin"), "t0")
    tomorrow = forecast(warehouse_engine(added.warehouse), NIGHT, added)
    assert {(r.customer_id, r.status) for r in tomorrow.rows if r.occasion == "second_order"} == {
        (1, "selected"),
        (2, "selected"),
        (5, "skipped"),
        (6, "selected"),
    }
    assert tomorrow.notes["second_order"] == "exact for the orders already in"
    from retention.web.editor import available_templates, preview_draft, template_source

    assert {lang for o, lang in available_templates(added) if o == "second_order"} == {"en", "de", "nb", "et"}
    source = template_source(added, "second_order", "nb")
    shown = preview_draft(added, "second_order", "nb", source)
    assert shown.ok and shown.subject == "En måned med oss, Ingrid"


def test_a_broken_added_template_blocks_only_its_own_language(added, second_order_shop, tmp_path) -> None:
    folder = Path(added.occasion_dirs) / "second_order"
    (folder / "de.jinja").write_text(
        (folder / "de.jinja").read_text().replace("{{ days }}", "{{ days.nope }}")
    )
    results = run_night(added, NIGHT, "t1")
    assert set(results["render"]["template_failures"]) == {"second_order/de"}
    box, occ = schema.outbox, schema.occasions
    with warehouse_engine(added.warehouse).connect() as conn:
        queued = set(
            conn.execute(select(box.c.customer_id).where(box.c.occasion == "second_order")).scalars()
        )
        statuses = dict(
            conn.execute(
                select(occ.c.customer_id, occ.c.status).where(occ.c.occasion == "second_order")
            ).all()
        )
    assert queued == {1}  # customers 2 and 6 speak German
    assert statuses == {1: "selected", 2: "blocked", 5: "skipped", 6: "blocked"}


@pytest.mark.parametrize(
    ("declaration", "complaint"),
    [
        (
            'OCCASION = Occasion(name="thank_you", kind="thank_you", priority=1, context=f, samples=f)',
            "already declared",
        ),
        ('OCCASION = Occasion(name="x", kind="coupons", priority=1, context=f, samples=f)', "kind 'coupons'"),
        (
            'OCCASION = Occasion(name="Bad Name", kind="feedback", priority=1, context=f, samples=f)',
            "must match",
        ),
        (
            'OCCASION = Occasion(name="x", kind="feedback", priority="1", context=f, samples=f)',
            "integer priority",
        ),
        ("OCCASION = 42", "must be a retention.registry.Occasion"),
        ("raise RuntimeError('oops')", "RuntimeError: oops"),
        ("", "defines no OCCASION"),
    ],
)
def test_a_bad_declaration_is_refused_naming_its_file(
    tmp_path: Path, settings, declaration, complaint
) -> None:
    folder = tmp_path / "bad" / "x"
    folder.mkdir(parents=True)
    (folder / "occasion.sql").write_text("select 1 as customer_id\n")
    (folder / "occasion.py").write_text(
        f"from retention.registry import Occasion\n\ndef f(*args):\n    return {{}}\n\n{declaration}\n"
    )
    with pytest.raises(OccasionError) as raised:
        check(Settings(occasion_dirs=str(tmp_path / "bad")))
    assert str(folder / "occasion.py") in str(raised.value) and complaint in str(raised.value)
    assert "x" not in occasions(Settings(occasion_dirs=str(tmp_path / "bad")))  # left out, alone


def test_an_added_occasion_without_its_model_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "nomodel" / "y"
    folder.mkdir(parents=True)
    (folder / "occasion.py").write_text(
        "from retention.registry import Occasion\n"
        "OCCASION = Occasion(name='y', kind='feedback', priority=1, context=dict, samples=list)\n"
    )
    with pytest.raises(OccasionError, match="has no model"):
        check(Settings(occasion_dirs=str(tmp_path / "nomodel")))


def test_an_unhappy_customer_gets_no_suggestion_of_the_added_kind(added, second_order_shop) -> None:
    """The added occasion is a product suggestion: a low feedback rating lately holds it back."""
    from retention import feedback

    engine = warehouse_engine(added.warehouse)
    run_night(added, night_for_date("2026-11-19", "Europe/Berlin"), "t0")  # the orders are in
    with engine.begin() as conn:  # customer 1 rated order 101 with 1 of 5 two days before the night
        token = feedback.sign(SECRET, 1, 101)
        feedback.record_answer(conn, SECRET, token, 1, None, dt.datetime(2026, 11, 18, 12, 0), 2)
        token = feedback.sign(SECRET, 2, 102)  # customer 2 was happy
        feedback.record_answer(conn, SECRET, token, 5, None, dt.datetime(2026, 11, 18, 12, 0), 2)
    run_night(added, NIGHT, "t1")
    occ = schema.occasions
    with engine.connect() as conn:
        decided = dict(
            conn.execute(
                select(occ.c.customer_id, occ.c.reason).where(
                    occ.c.occasion == "second_order", occ.c.customer_id.in_((1, 2))
                )
            ).all()
        )
    assert decided == {1: "held back: low feedback rating", 2: None}


def test_a_broken_declaration_leaves_out_its_own_occasion_and_the_report_says_why(
    added, second_order_shop, tmp_path: Path
) -> None:
    from retention.report import format_report, night_report

    broken = Path(added.occasion_dirs) / "price_drop"
    broken.mkdir()
    (broken / "occasion.sql").write_text("select customer_id from stg_customers\n")
    (broken / "occasion.py").write_text("from retention.registry import Occasion\nOCCASION = Occasion(name=)\n")
    results = run_night(added, NIGHT, "t1")
    declaration = str(broken / "occasion.py")
    assert "SyntaxError" in results["occasions"]["declaration_problems"][declaration]
    assert results["occasions"]["second_order"] == {"de": 2, "en": 1}  # the good one still ran
    report = night_report(warehouse_engine(added.warehouse), NIGHT.date)
    assert f"OCCASION LEFT OUT {declaration}: {declaration}: SyntaxError" in format_report(report)


@pytest.mark.parametrize(
    ("sql", "complaint"),
    [
        ("select customer_id, nope from stg_customers\n", "nope"),  # an SQL error (PostgreSQL: a savepoint)
        ("select email from stg_customers\n", "no customer_id column"),
    ],
)
def test_an_added_occasion_whose_model_fails_is_left_out_alone(
    added, second_order_shop, tmp_path: Path, sql: str, complaint: str
) -> None:
    from retention.report import format_report, night_report

    broken = tmp_path / "more" / "broken_model"
    broken.mkdir(parents=True)
    (broken / "occasion.sql").write_text(sql)
    declaration = (Path(added.occasion_dirs) / "second_order" / "occasion.py").read_text()
    (broken / "occasion.py").write_text(declaration.replace('name="second_order"', 'name="broken_model"'))
    settings = added.with_overrides(occasion_dirs=f"{added.occasion_dirs}:{broken.parent}")
    results = run_night(settings, NIGHT, "t1")
    assert complaint in results["occasions"]["occasion_failures"]["broken_model"]
    assert results["occasions"]["second_order"] == {"de": 2, "en": 1}  # the others still ran
    assert results["render"]["queued"]["second_order"] == 3
    report = format_report(night_report(warehouse_engine(settings.warehouse), NIGHT.date))
    assert "OCCASION LEFT OUT broken_model:" in report
