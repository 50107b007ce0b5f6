"""Templates: the shipped ones lint clean, the linter finds each kind of defect, the sandbox holds.

Golden files (``tests/golden/<occasion>-<language>.txt``) hold the subject and text part of
every occasion in every language, rendered from the sample context. After changing wording
on purpose, regenerate them with ``UPDATE_GOLDEN=1 pytest tests/test_templates.py`` and read
the diff; they are never rewritten otherwise.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from retention.cli import main
from retention.lint import Problem, lint, preview, template_files
from retention.registry import OCCASIONS
from retention.render import Renderer, TemplateProblem
from retention.samples import SAMPLE_CUSTOMERS, sample_context, sample_contexts
from retention.settings import LANGUAGES

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A private copy of the shipped templates, to break on purpose."""
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copy)
    return copy


def _write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    return path


def _errors(problems: list[Problem], name: str) -> list[Problem]:
    return [p for p in problems if p.is_error and p.file.endswith(name)]


GOOD_TEXT = "{% block text %}Hello {{ customer.first_name }}{% endblock %}\n"
GOOD_HTML = "{% block html %}<p>Hello {{ customer.first_name }}</p>{% endblock %}\n"


def _template(
    subject: str = "Hello {{ customer.first_name }}", text: str = GOOD_TEXT, html: str = GOOD_HTML
) -> str:
    return (
        '{% extends "_layout.jinja" %}\n' + "{% block subject %}" + subject + "{% endblock %}\n" + text + html
    )


# --------------------------------------------------------------------------- shipped templates


def test_shipped_templates_lint_without_errors_or_warnings() -> None:
    assert [str(p) for p in lint(TEMPLATES)] == []


def test_every_occasion_has_a_template_in_every_language() -> None:
    missing = [
        f"{o}/{lang}"
        for o in OCCASIONS
        for lang in LANGUAGES
        if not (TEMPLATES / o / f"{lang}.jinja").is_file()
    ]
    assert missing == []


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("occasion", OCCASIONS)
def test_golden_subject_and_text(occasion: str, language: str) -> None:
    message = Renderer(TEMPLATES).render(occasion, language, sample_context(occasion, language))
    rendered = f"Subject: {message.subject}\n\n{message.text}"
    golden = GOLDEN / f"{occasion}-{language}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(rendered, encoding="utf-8")
    assert golden.is_file(), f"{golden} is missing: run UPDATE_GOLDEN=1 pytest tests/test_templates.py"
    assert rendered == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("language", "one", "many"),
    [
        ("en", "one year ago today", "3 years ago today"),
        ("de", "Seit einem Jahr", "Seit 3 Jahren"),
        ("nb", "det ett år siden", "det 3 år siden"),
        ("et", "möödub 1 aasta", "möödub 3 aastat"),
    ],
)
def test_anniversary_says_one_year_and_many_years_correctly(language: str, one: str, many: str) -> None:
    renderer = Renderer(TEMPLATES)
    three, first = sample_contexts("anniversary", language)
    assert (three["years"], first["years"]) == (3, 1)
    assert many in renderer.render("anniversary", language, three).text
    assert one in renderer.render("anniversary", language, first).text


@pytest.mark.parametrize(
    ("language", "one", "many"),
    [
        ("en", "a month", "6 months"),
        ("de", "einen Monat", "6 Monate"),
        ("nb", "én måned", "6 måneder"),
        ("et", "kuu aega", "6 kuud"),
    ],
)
def test_win_back_says_one_month_and_many_months_correctly(language: str, one: str, many: str) -> None:
    renderer = Renderer(TEMPLATES)
    six, single = sample_contexts("win_back", language)
    assert many in renderer.render("win_back", language, six).text
    assert one in renderer.render("win_back", language, single).text


def test_german_messages_use_the_polite_salutation() -> None:
    text = Renderer(TEMPLATES).render("birthday", "de", sample_context("birthday", "de")).text
    assert text.startswith("Guten Tag Jörg Müller,\n")
    assert " Sie " in text and " du " not in text


def test_category_is_named_in_the_customers_language_or_left_raw() -> None:
    renderer = Renderer(TEMPLATES)
    garden, _, unknown = sample_contexts("new_stock", "de")
    assert "Bereich Garten" in renderer.render("new_stock", "de", garden).subject
    assert "Bereich gadgets" in renderer.render("new_stock", "de", unknown).subject


def test_sample_customers_have_local_names() -> None:
    assert {lang: c.first_name for lang, c in SAMPLE_CUSTOMERS.items()} == {
        "en": "Oliver",
        "de": "Jörg",
        "nb": "Ingrid",
        "et": "Kadri",
    }


# --------------------------------------------------------------------------- HTML part


def test_html_part_has_inlined_styles_and_no_style_block() -> None:
    html = Renderer(TEMPLATES).render("thank_you", "en", sample_context("thank_you", "en")).html
    assert '<body style="' in html
    assert '<p style="' in html
    assert 'class="button" href="https://shop.example.com" style="' in html
    assert "<style>" not in html


def test_html_part_is_autoescaped_and_text_part_is_not() -> None:
    context = sample_context("birthday", "en")
    context["customer"] = {**context["customer"], "first_name": "<script>alert(1)</script>"}
    context["customer"]["salutation"] = "Hi <script>alert(1)</script>"
    message = Renderer(TEMPLATES).render("birthday", "en", context)
    assert "<script>" not in message.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in message.html
    assert "Hi <script>alert(1)</script>," in message.text


def test_stylesheets_are_never_loaded_from_files(templates: Path, tmp_path: Path) -> None:
    _write(tmp_path, "evil.css", "p { color: red; }")
    html = (
        '{% block html %}<link rel="stylesheet" href="'
        + str(tmp_path / "evil.css")
        + '"><p>x</p>{% endblock %}'
    )
    _write(templates, "birthday/en.jinja", _template(html=html))
    message = Renderer(templates).render("birthday", "en", sample_context("birthday", "en"))
    assert "color: red" not in message.html
    assert "evil.css" not in message.html


# --------------------------------------------------------------------------- subject and fallback


def test_crlf_in_a_rendered_subject_never_reaches_the_message() -> None:
    context = sample_context("birthday", "en")
    context["customer"] = {**context["customer"], "first_name": "Eve\r\nBcc: all@example.com"}
    subject = Renderer(TEMPLATES).render("birthday", "en", context).subject
    assert "\r" not in subject and "\n" not in subject
    assert subject == "Happy birthday, Eve Bcc: all@example.com!"


def test_missing_language_falls_back_to_the_default_language(templates: Path) -> None:
    (templates / "birthday" / "et.jinja").unlink()
    context = sample_context("birthday", "et")
    assert Renderer(templates, "en").render("birthday", "et", context).subject.startswith("Happy birthday")
    german = Renderer(templates, "de").render("birthday", "et", context)
    assert german.subject == "Herzlichen Glückwunsch zum Geburtstag!"
    assert "Hier abmelden" in german.text  # the layout's words follow the template's language


def test_unknown_language_falls_back_to_the_default_language() -> None:
    message = Renderer(TEMPLATES, "nb").render("birthday", "fr", sample_context("birthday", "en"))
    assert message.subject.startswith("Gratulerer med dagen")


# --------------------------------------------------------------------------- the sandbox


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__",
        "''.__class__.__mro__",
        "customer.__class__.__mro__[1].__subclasses__()",
        "strings.update({})",
    ],
)
def test_sandbox_blocks_access_to_python_internals(templates: Path, expression: str) -> None:
    _write(templates, "birthday/en.jinja", _template(subject="{{ " + expression + " }}"))
    with pytest.raises(TemplateProblem, match="not allowed in the sandbox") as caught:
        Renderer(templates).render("birthday", "en", sample_context("birthday", "en"))
    assert (caught.value.file, caught.value.line) == ("birthday/en.jinja", 2)


@pytest.mark.parametrize(
    "target", ["/etc/passwd", "../outside.txt", "birthday/../../outside.txt", "birthday/link.txt"]
)
def test_sandbox_blocks_includes_outside_the_templates_folder(templates: Path, target: str) -> None:
    secret = _write(templates.parent, "outside.txt", "SECRET")
    (templates / "birthday" / "link.txt").symlink_to(secret)  # a link inside pointing outside
    text = "{% block text %}{% include '" + target + "' %}{% endblock %}\n"
    _write(templates, "birthday/en.jinja", _template(text=text))
    with pytest.raises(TemplateProblem, match="template not found"):
        Renderer(templates).render("birthday", "en", sample_context("birthday", "en"))


def test_templates_see_no_globals_that_could_do_io() -> None:
    renderer = Renderer(TEMPLATES)
    for autoescape in (False, True):
        assert set(renderer.environment(autoescape).globals) == {
            "range",
            "dict",
            "namespace",
            "cycler",
            "joiner",
        }


def test_undefined_variable_names_file_and_line(templates: Path) -> None:
    _write(
        templates,
        "birthday/en.jinja",
        _template(text="{% block text %}\nHi\n{{ customer.nickname }}\n{% endblock %}\n"),
    )
    with pytest.raises(TemplateProblem, match=r"^birthday/en\.jinja:5: undefined variable: .*nickname"):
        Renderer(templates).render("birthday", "en", sample_context("birthday", "en"))


# --------------------------------------------------------------------------- the linter


def test_lint_reports_a_syntax_error_with_its_line(templates: Path) -> None:
    _write(templates, "birthday/en.jinja", _template(text="{% block text %}\nHi\n{% if %}\n{% endblock %}\n"))
    [problem] = _errors(lint(templates), "birthday/en.jinja")
    assert problem.line == 5
    assert problem.message.startswith("syntax error")
    assert str(problem).startswith(f"{templates / 'birthday' / 'en.jinja'}:5: syntax error")


def test_lint_reports_an_undefined_attribute_with_its_line(templates: Path) -> None:
    _write(
        templates,
        "thank_you/de.jinja",
        _template(text="{% block text %}\n{{ order.tracking_code }}\n{% endblock %}\n"),
    )
    [problem] = _errors(lint(templates), "thank_you/de.jinja")
    assert problem.line == 4
    assert "undefined variable" in problem.message and "tracking_code" in problem.message


def test_lint_reports_an_unknown_variable_even_in_a_branch_samples_do_not_take(templates: Path) -> None:
    text = "{% block text %}\nHei\n{% if years > 99 %}\n{{ voucher_code }}\n{% endif %}\n{% endblock %}\n"
    _write(templates, "anniversary/nb.jinja", _template(text=text))
    [problem] = _errors(lint(templates), "anniversary/nb.jinja")
    assert problem.line == 6
    assert "undefined variable 'voucher_code'" in problem.message


def test_lint_reports_a_subject_over_78_characters(templates: Path) -> None:
    _write(
        templates,
        "birthday/et.jinja",
        _template(subject="Palju õnne, {{ customer.first_name }}! " + "x" * 70),
    )
    [problem] = _errors(lint(templates), "birthday/et.jinja")
    assert problem.line == 2
    assert "at most 78" in problem.message


def test_lint_reports_crlf_in_the_subject(templates: Path) -> None:
    _write(templates, "birthday/en.jinja", _template(subject='Hi{{ "\\r\\n" }}Bcc: all@example.com'))
    [problem] = _errors(lint(templates), "birthday/en.jinja")
    assert "CR/LF" in problem.message


def test_lint_reports_a_missing_unsubscribe_link_when_a_template_overrides_the_layout(
    templates: Path,
) -> None:
    own_layout = (
        '{% if part == "subject" %}Happy birthday{% elif part == "text" %}Happy birthday, {{ customer.first_name }}!'
        "{% else %}<p>Happy birthday, {{ customer.first_name }}!</p>{% endif %}\n"
        "{% block subject %}{% endblock %}{% block text %}{% endblock %}{% block html %}{% endblock %}\n"
    )
    _write(templates, "birthday/de.jinja", own_layout)
    messages = [p.message for p in _errors(lint(templates), "birthday/de.jinja")]
    assert any(m.startswith('does not extend "_layout.jinja"') for m in messages)
    assert "missing unsubscribe link: the text part does not contain unsubscribe_url" in messages
    assert "missing unsubscribe link: the HTML part does not contain unsubscribe_url" in messages


def test_lint_reports_a_layout_that_lost_the_unsubscribe_link(templates: Path) -> None:
    layout = templates / "_layout.jinja"
    layout.write_text(layout.read_text().replace("{{ unsubscribe_url }}", "{{ shop.url }}"))
    problems = [p for p in lint(templates) if "missing unsubscribe link" in p.message]
    # Every template file (variants too: thank_you/en.b.jinja), in its text and HTML part.
    assert len(problems) == 2 * len(template_files(templates))
    assert len(template_files(templates)) == len(OCCASIONS) * len(LANGUAGES) + 1


def test_lint_reports_a_missing_html_block(templates: Path) -> None:
    _write(templates, "feedback/en.jinja", _template(html=""))
    [problem] = _errors(lint(templates), "feedback/en.jinja")
    assert problem.message == "missing part: no {% block html %}"


def test_lint_reports_an_empty_text_block(templates: Path) -> None:
    _write(templates, "feedback/en.jinja", _template(text="{% block text %}  {% endblock %}\n"))
    [problem] = _errors(lint(templates), "feedback/en.jinja")
    assert problem.message == "missing part: the text block renders empty"


def test_lint_warns_about_a_missing_language(templates: Path) -> None:
    (templates / "win_back" / "nb.jinja").unlink()
    [problem] = [p for p in lint(templates) if p.occasion == "win_back"]
    assert problem.severity == "warning"
    assert (
        str(problem)
        == f"{templates / 'win_back' / 'nb.jinja'}: warning: missing language: nb customers get the en template"
    )


def test_lint_reports_an_occasion_without_templates_and_an_unknown_folder(templates: Path) -> None:
    (templates / "feedback").rename(templates / "feedbak")
    messages = [p.message for p in lint(templates) if p.is_error]
    assert any(m.startswith("unknown occasion folder 'feedbak'") for m in messages)
    assert "no template for this occasion: its messages cannot be rendered" in messages


def test_lint_reports_a_broken_strings_file(templates: Path) -> None:
    strings = templates / "_strings.toml"
    strings.write_text(strings.read_text().replace("[et]", "[ee]"))
    [problem] = lint(templates)
    assert problem.file.endswith("_strings.toml") and "no strings for et" in problem.message


def test_a_broken_template_does_not_hide_the_others(templates: Path) -> None:
    _write(templates, "birthday/en.jinja", "{% block %}")
    problems = lint(templates)
    assert {p.occasion for p in problems} == {"birthday"}


# --------------------------------------------------------------------------- preview and CLI


def test_preview_writes_html_and_text(tmp_path: Path) -> None:
    subject, html_path, text_path = preview(TEMPLATES, "anniversary", "et", tmp_path / "out")
    assert subject == "Juba 3 aastat koos – aitäh, Kadri!"
    assert html_path == tmp_path / "out" / "anniversary-et.html"
    assert 'lang="et"' in html_path.read_text(encoding="utf-8")
    assert text_path.read_text(encoding="utf-8").startswith(f"Subject: {subject}\n\nTere, Kadri!")


def test_cli_lint_passes_on_the_shipped_templates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["templates", "lint", "--dir", str(TEMPLATES)]) == 0
    assert capsys.readouterr().out.strip() == f"{len(OCCASIONS) * len(LANGUAGES) + 1} templates OK"  # + en.b


def test_cli_lint_fails_with_file_and_line(templates: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(templates, "birthday/en.jinja", _template(text="{% block text %}\n{% if %}\n{% endblock %}\n"))
    assert main(["templates", "lint", "--dir", str(templates)]) == 1
    assert f"{templates / 'birthday' / 'en.jinja'}:4: syntax error" in capsys.readouterr().out


def test_cli_preview_prints_the_subject(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "templates",
        "preview",
        "birthday",
        "--language",
        "de",
        "--out",
        str(tmp_path),
        "--dir",
        str(TEMPLATES),
    ]
    assert main(args) == 0
    assert "Subject: Herzlichen Glückwunsch zum Geburtstag!" in capsys.readouterr().out
    assert (tmp_path / "birthday-de.html").is_file() and (tmp_path / "birthday-de.txt").is_file()


def test_cli_preview_for_a_warehouse_customer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy import create_engine, insert

    from retention import schema

    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = create_engine(url)
    schema.stg_customers.create(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(schema.stg_customers).values(
                customer_id=7,
                email="liis@example.ee",
                first_name="Liis",
                last_name="Kask",
                language="et",
                time_zone="Europe/Tallinn",
                country="EE",
                marketing_consent=True,
                created_at=dt.datetime(2024, 1, 1),
                updated_at=dt.datetime(2024, 1, 1),
                loaded_night=dt.date(2024, 1, 2),
            )
        )
    engine.dispose()
    args = [
        "templates",
        "preview",
        "birthday",
        "--customer",
        "7",
        "--url",
        url,
        "--out",
        str(tmp_path),
        "--dir",
        str(TEMPLATES),
    ]
    try:
        assert main(args) == 0
    finally:
        from retention.pipeline import warehouse_engine

        warehouse_engine.cache_clear()
    assert "Subject: Palju õnne sünnipäevaks, Liis!" in capsys.readouterr().out
    assert (tmp_path / "birthday-et.txt").read_text(encoding="utf-8").count("Tere, Liis!") == 1


def test_thank_you_leaves_out_first_for_a_later_order() -> None:
    renderer = Renderer(TEMPLATES)
    first, later = sample_contexts("thank_you", "de")
    assert renderer.render("thank_you", "de", first).subject == "Danke für Ihre erste Bestellung, Jörg!"
    assert renderer.render("thank_you", "de", later).subject == "Danke für Ihre Bestellung, Jörg!"
    # Until the outbox passes order.first, every thank-you reads as one for a first order.
    del first["order"]["first"]
    assert renderer.render("thank_you", "de", first).subject == "Danke für Ihre erste Bestellung, Jörg!"


def test_a_broken_layout_is_reported_once(templates: Path) -> None:
    layout = templates / "_layout.jinja"
    layout.write_text(layout.read_text().replace("{{ strings.footer }}", "{{ strings.footer }"))
    [problem] = lint(templates)
    assert problem.file == str(layout) and problem.occasion is None
    assert problem.message.startswith("syntax error") and problem.line is not None
