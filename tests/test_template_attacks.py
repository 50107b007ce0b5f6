"""A battery of hostile templates: sandbox escapes, resource exhaustion, files outside the folder.

For every attack, planted in ``thank_you/en.jinja`` (its line 4):

- ``lint`` reports it as an error of that file (with the line where it can be known) and
  returns: every attack is bounded by the same budget as the night (here a short one);
- a real night's render stage (:func:`retention.outbox.fill` on a warehouse prepared by
  ``run_night``, on SQLite and PostgreSQL) writes every other occasion's and language's
  messages, names ``thank_you/en`` in ``template_failures`` and marks its candidate
  ``blocked`` with the reason.

Then the hard bounds of the worker process (a task that cannot be interrupted, a worker
that dies, memory) and the static checks of lint (recursion, include cycles, loops, size).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, update

from retention import schema
from retention.lint import Problem, lint
from retention.night import night_for_date
from retention.outbox import fill
from retention.pipeline import run_night, warehouse_engine
from retention.registry import OCCASIONS
from retention.render import Renderer, RenderLimits, RenderPool, TemplateProblem
from retention.samples import sample_context
from retention.settings import LANGUAGES, Settings
from tests.conftest import PG_URL, _drop_pg_database, _fresh_pg_database
from tests.shop import Shop

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
NIGHT = "2026-11-20"
FIRST_DAY = dt.datetime(2026, 11, 19, 9, 30)
LONG_SECRET = b"attack-battery-unsubscribe-secret-0123456789"
#: A short budget keeps the battery fast; the hangs below stop after it.
LIMITS = RenderLimits(timeout_seconds=0.5, memory_mb=256)
ATTACKED = "thank_you/en.jinja"


#: Unbounded recursion is stopped by Python's recursion limit or, on a loaded machine, by the
#: render budget first; either blocks the template, and lint names it statically as well.
RECURSION = r"recursion|itself|exceeded the render budget"


@dataclass(frozen=True)
class Attack:
    id: str
    body: str  # goes on line 4 of the text block
    expect: str  # regex that the reason must match
    line: bool = True  # the reason names line 4


ATTACKS = [
    # --- resource exhaustion
    Attack("range_1e9", "{% for i in range(10**9) %}x{% endfor %}", r"Range too big|loop runs"),
    Attack(
        "recursive_macro",
        "{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}",
        RECURSION,
    ),
    Attack("self_include", "{% include 'thank_you/en.jinja' %}", RECURSION, False),
    Attack("str_times_1e9", "{{ 'a' * 10**9 }}", r"unbounded: '\*'"),
    Attack("printf_width", "{{ '%999999999s' | format(1) }}", r"unbounded: the format"),
    Attack("printf_width_op", "{{ '%999999999s' % 1 }}", r"unbounded: the format"),
    Attack(
        "nested_loops",
        "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
        r"exceeded the render budget|loop runs",
    ),
    Attack("pow_tower", "{{ 9 ** (9 ** 9) }}", r"unbounded: .*bits"),
    Attack("center_method", "{{ 'x'.center(10**9) }}", r"unbounded: str.center"),
    Attack("center_filter", "{{ 'x' | center(10**9) }}", r"unbounded: center"),
    Attack("indent_filter", "{{ 'x' | indent(10**9, true) }}", r"unbounded: indent"),
    Attack("replace_grows", "{{ ('a' * 100000) | replace('a', 'b' * 1000) }}", r"unbounded: replace"),
    Attack("batch_fill", "{{ [1] | batch(10**9, 0) | list | length }}", r"unbounded: batch"),
    Attack("list_times_1e9", "{{ [1] * 10**9 }}", r"unbounded: '\*'"),
    Attack("format_method", '{{ "{:>999999999}".format(1) }}', r"unbounded: the format spec"),
    Attack("range_list_string", "{{ range(10**5) | list | string * 10**3 }}", r"unbounded: '\*'"),
    Attack(
        "doubling_concat",
        "{% set ns = namespace(s='x' * 1000) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s | length }}",
        r"exceeded the render budget|memory",
    ),
    Attack(
        "output_too_large", "{% for i in range(100) %}{{ 'x' * 10000 }}{% endfor %}", r"over the limit", False
    ),
    # --- sandbox escapes
    Attack("str_mro", "{{ ''.__class__.__mro__ }}", r"not allowed in the sandbox"),
    Attack("subclasses", "{{ ().__class__.__base__.__subclasses__() }}", r"not allowed in the sandbox"),
    Attack("cycler_globals", "{{ cycler.__init__.__globals__ }}", r"not allowed in the sandbox"),
    Attack("template_context", "{{ self._TemplateReference__context }}", r"not allowed in the sandbox"),
    Attack("lipsum_globals", "{{ lipsum.__globals__ }}", r"undefined"),
    Attack("config", "{{ config.items() }}", r"undefined"),
    Attack("request", "{{ request.environ }}", r"undefined"),
    Attack("mutate_strings", "{{ strings.update({}) }}", r"not allowed in the sandbox"),
    # --- Python objects into a message
    Attack("print_cycler", "{{ cycler }}", r"prints a type"),
    Attack("print_joiner", "{{ joiner() }}", r"prints a Joiner"),
    Attack("print_namespace", "{{ namespace() }}", r"prints a Namespace"),
    Attack("print_range", "{{ range }}", r"prints a function"),
    Attack("print_loop", "{% for x in [1] %}{{ loop }}{% endfor %}", r"prints a LoopContext"),
    Attack("print_self", "{{ self }}", r"prints a TemplateReference"),
    Attack("print_macro", "{% macro m() %}{% endmacro %}{{ m }}", r"prints a Macro"),
    Attack("cycler_as_string", "{{ cycler | string }}", r"repr reached", False),
    Attack("method_as_string", "{{ strings.items | string }}", r"repr reached", False),
    Attack("object_via_format", "{{ '%s' | format(joiner()) }}", r"repr reached", False),
    # --- files outside templates/
    Attack("include_parent", "{% include '../outside.txt' %}", r"template not found"),
    Attack("include_absolute", "{% include '/etc/passwd' %}", r"template not found"),
    Attack("include_symlink", "{% include 'thank_you/link.txt' %}", r"template not found"),
    Attack("import_parent", "{% import '../outside.txt' as x %}", r"template not found"),
]


def _template(body: str) -> str:
    return (
        '{% extends "_layout.jinja" %}\n'
        "{% block subject %}Thank you, {{ customer.first_name }}!{% endblock %}\n"
        "{% block text %}\n"
        f"{body}\n"
        "{% endblock %}\n"
        "{% block html %}<p>Thank you, {{ customer.first_name }}!</p>{% endblock %}\n"
    )


def _plant(folder: Path, attack: Attack, languages: tuple[str, ...] | None = None) -> Path:
    """A copy of the shipped templates (optionally only some languages) with the attack in thank_you/en."""
    copy = folder / "templates"
    shutil.copytree(TEMPLATES, copy)
    if languages:
        for path in copy.glob("*/*.jinja"):
            if path.stem not in languages:
                path.unlink()
    outside = folder / "outside.txt"
    outside.write_text("SECRET OUTSIDE", encoding="utf-8")
    (copy / "thank_you" / "link.txt").symlink_to(outside)
    (copy / ATTACKED).write_text(_template(attack.body), encoding="utf-8")
    return copy


def _assert_reason(reason: str, attack: Attack) -> None:
    assert re.search(attack.expect, reason), reason
    if attack.line:
        assert f"{ATTACKED}:4:" in reason, reason
    else:
        assert ATTACKED in reason, reason
    assert "SECRET OUTSIDE" not in reason


# --------------------------------------------------------------------------- lint


SLOTS = [f"{occasion}/{language}.jinja" for occasion in OCCASIONS for language in LANGUAGES]


@pytest.fixture(scope="module")
def linted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, list[Problem]]]:
    """Every attack planted in a template of its own (one per occasion and language), linted together.

    One lint run per 32 attacks: it also shows that lint reports every broken template.
    """
    found: dict[str, tuple[str, list[Problem]]] = {}
    for batch in range(0, len(ATTACKS), len(SLOTS)):
        attacks = ATTACKS[batch : batch + len(SLOTS)]
        folder = tmp_path_factory.mktemp(f"lint{batch}")
        templates = _plant(folder, Attack("none", "Thank you", ""))
        for slot, attack in zip(SLOTS, attacks, strict=False):
            body = attack.body.replace("thank_you/", slot.partition("/")[0] + "/").replace(
                "en.jinja", slot.partition("/")[2]
            )
            (templates / slot).write_text(_template(body), encoding="utf-8")
            (templates / slot).parent.joinpath("link.txt").unlink(missing_ok=True)
            (templates / slot).parent.joinpath("link.txt").symlink_to(folder / "outside.txt")
        problems = lint(templates, limits=LIMITS)
        slots = {str(templates / slot): attack.id for slot, attack in zip(SLOTS, attacks, strict=False)}
        strays = [str(p) for p in problems if p.is_error and p.file not in slots]
        assert strays == [], strays
        for file, attack_id in slots.items():
            found[attack_id] = (file, [p for p in problems if p.is_error and p.file == file])
    return found


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.id)
def test_lint_reports_the_attack_with_file_and_line(attack: Attack, linted) -> None:
    file, errors = linted[attack.id]
    assert errors, f"{attack.id}: lint found nothing in {file}"
    slot = "/".join(Path(file).parts[-2:])
    assert all(f"{p.occasion}/{p.language}.jinja" == slot for p in errors), [str(p) for p in errors]
    assert any(re.search(attack.expect, p.message) for p in errors), [str(p) for p in errors]
    if attack.line:
        assert any(p.line == 4 for p in errors), [str(p) for p in errors]


def test_lint_reports_every_broken_template_not_only_the_first(tmp_path: Path) -> None:
    templates = _plant(tmp_path, ATTACKS[6])  # nested loops: a hang
    (templates / "birthday" / "de.jinja").write_text(_template("{{ 'a' * 10**9 }}"), encoding="utf-8")
    (templates / "win_back" / "nb.jinja").write_text(
        _template("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}"), encoding="utf-8"
    )
    errors = [p for p in lint(templates, limits=LIMITS) if p.is_error]
    assert {(p.occasion, p.language) for p in errors} == {
        ("thank_you", "en"),
        ("birthday", "de"),
        ("win_back", "nb"),
    }


def test_cli_lint_exits_non_zero_and_prints_file_and_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from retention.cli import main

    templates = _plant(tmp_path, ATTACKS[0], languages=("en",))
    monkeypatch.setenv("RETENTION_RENDER_TIMEOUT_SECONDS", "0.5")
    assert main(["templates", "lint", "--dir", str(templates)]) == 1
    assert f"{templates / ATTACKED}:4: " in capsys.readouterr().out


# --------------------------------------------------------------------------- a real night


@dataclass
class PreparedNight:
    settings: Settings

    def reset(self) -> None:
        """Back to the state right after the night's occasions: no outbox, nothing blocked."""
        with warehouse_engine(self.settings.warehouse).begin() as conn:
            conn.execute(schema.outbox.delete())
            occ = schema.occasions
            conn.execute(update(occ).where(occ.c.status == "blocked").values(status="selected", reason=None))


def _shop(settings: Settings) -> Shop:
    """thank_you in de, nb, et, en (customers 1-4) and birthday in de and en (7, 8)."""
    shop = Shop(settings.source)
    shop.product(10, price="249.00", cost="150.00")
    for cid, language, zone in (
        (1, "de", "Europe/Berlin"),
        (2, "nb", "Europe/Oslo"),
        (3, "et", "Europe/Tallinn"),
        (4, "en", "Europe/London"),
    ):
        shop.customer(cid, language=language, time_zone=zone)
        shop.order(100 + cid, cid, FIRST_DAY)
        shop.item(1000 + cid, 100 + cid, 10, updated_at=FIRST_DAY)
    shop.customer(7, language="de", birthday=dt.date(1970, 11, 20))
    shop.customer(8, language="en", birthday=dt.date(1980, 11, 20))
    return shop


@contextmanager
def _prepare(kind: str, home: Path) -> Iterator[PreparedNight]:
    """One night run through every stage; the attacks re-run its render stage."""
    database = None
    if kind == "sqlite":
        url = f"sqlite:///{home / 'warehouse.db'}"
    else:
        if not PG_URL:
            pytest.skip("RETENTION_TEST_PG_URL is not set")
        database, url = _fresh_pg_database()
    settings = Settings(
        home=home, warehouse_url=url, source_url=f"sqlite:///{home / 'shop.db'}", holdout_share=0.0
    )
    _shop(settings)
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RETENTION_UNSUBSCRIBE_SECRET", LONG_SECRET.decode())
            results = run_night(settings, night_for_date(NIGHT, settings.time_zone), "prepare")
        assert results["render"]["queued"] == {"thank_you": 4, "birthday": 2}, results["render"]
        yield PreparedNight(settings)
    finally:
        warehouse_engine.cache_clear()
        if database:
            _drop_pg_database(database)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PreparedNight]:
    with _prepare("sqlite", tmp_path_factory.mktemp("night-sqlite")) as night:
        yield night


@pytest.fixture(scope="module")
def prepared_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PreparedNight]:
    with _prepare("postgresql", tmp_path_factory.mktemp("night-pg")) as night:
        yield night


def _outbox(settings: Settings) -> set[tuple[str, str]]:
    box = schema.outbox
    with warehouse_engine(settings.warehouse).connect() as conn:
        return {(r.occasion, r.language) for r in conn.execute(select(box.c.occasion, box.c.language))}


def _occasion_state(settings: Settings, customer_id: int) -> tuple[str, str | None]:
    occ = schema.occasions
    with warehouse_engine(settings.warehouse).connect() as conn:
        return conn.execute(select(occ.c.status, occ.c.reason).where(occ.c.customer_id == customer_id)).one()


EVERYTHING_ELSE = {
    ("thank_you", "de"),
    ("thank_you", "nb"),
    ("thank_you", "et"),
    ("birthday", "de"),
    ("birthday", "en"),
}


def _night_with(prepared: PreparedNight, attack: Attack, tmp_path: Path) -> None:
    prepared.reset()
    templates = _plant(tmp_path, attack)
    settings = prepared.settings.with_overrides(
        templates_dir=templates, render_timeout_seconds=0.5, render_memory_mb=256
    )
    night = night_for_date(NIGHT, settings.time_zone)
    counts = fill(warehouse_engine(settings.warehouse), night, settings, LONG_SECRET)
    assert _outbox(settings) == EVERYTHING_ELSE
    assert counts["queued"] == {"thank_you": 3, "birthday": 2}
    assert list(counts["template_failures"]) == ["thank_you/en"]
    _assert_reason(counts["template_failures"]["thank_you/en"], attack)
    status, reason = _occasion_state(settings, 4)
    assert status == "blocked" and reason.startswith("template: thank_you/en.jinja")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.id)
def test_a_night_renders_everything_but_the_attacked_template(
    attack: Attack, prepared: PreparedNight, tmp_path: Path
) -> None:
    _night_with(prepared, attack, tmp_path)


#: One attack of each kind on PostgreSQL too: the rendering is the same, the writes are not.
PG_SAMPLE = (
    "range_1e9",
    "recursive_macro",
    "nested_loops",
    "str_times_1e9",
    "str_mro",
    "print_loop",
    "cycler_as_string",
    "include_symlink",
    "output_too_large",
)


@pytest.mark.postgres
@pytest.mark.timeout(60)
@pytest.mark.parametrize("attack", [a for a in ATTACKS if a.id in PG_SAMPLE], ids=lambda a: a.id)
def test_a_night_on_postgresql_renders_everything_but_the_attacked_template(
    attack: Attack, prepared_pg: PreparedNight, tmp_path: Path
) -> None:
    _night_with(prepared_pg, attack, tmp_path)


def test_a_fixed_template_renders_the_blocked_candidates_on_a_re_run(
    prepared: PreparedNight, tmp_path
) -> None:
    prepared.reset()
    templates = _plant(tmp_path, ATTACKS[3])
    settings = prepared.settings.with_overrides(templates_dir=templates, render_timeout_seconds=0.5)
    night = night_for_date(NIGHT, settings.time_zone)
    engine = warehouse_engine(settings.warehouse)
    assert list(fill(engine, night, settings, LONG_SECRET)["template_failures"]) == ["thank_you/en"]
    shutil.copy(TEMPLATES / ATTACKED, templates / ATTACKED)
    counts = fill(engine, night, settings, LONG_SECRET)
    assert counts == {"queued": {"thank_you": 1}, "template_failures": {}, "missing_data": {}}
    assert _occasion_state(settings, 4) == ("selected", None)
    assert _outbox(settings) == EVERYTHING_ELSE | {("thank_you", "en")}


def test_run_night_with_several_attacks_names_each_in_the_report(
    settings: Settings, tmp_path, monkeypatch
) -> None:
    from retention.report import format_report, night_report

    monkeypatch.setenv("RETENTION_UNSUBSCRIBE_SECRET", LONG_SECRET.decode())
    templates = _plant(tmp_path, ATTACKS[6])  # thank_you/en hangs
    (templates / "birthday" / "de.jinja").write_text(_template("{{ 'a' * 10**9 }}"), encoding="utf-8")
    settings = settings.with_overrides(templates_dir=templates, holdout_share=0.0, render_timeout_seconds=0.5)
    _shop(settings)
    results = run_night(settings, night_for_date(NIGHT, settings.time_zone), "attacked")
    assert results["render"]["queued"] == {"thank_you": 3, "birthday": 1}
    assert set(results["render"]["template_failures"]) == {"thank_you/en", "birthday/de"}
    report = night_report(warehouse_engine(settings.warehouse), dt.date(2026, 11, 20))
    failures = report["render"]["template_failures"]
    # The linter's verdict comes first (the same one `retention templates lint` gives): it finds
    # the runaway loop without running it; the render budget stays the backstop.
    assert failures["thank_you/en"].startswith("thank_you/en.jinja:4: this loop runs")
    assert failures["birthday/de"].startswith("birthday/de.jinja:4: unbounded")
    assert report["outbox"] == {"queued": 4}
    skipped = report["occasions_skipped"]
    assert any(reason.startswith("template: thank_you/en.jinja:4:") for reason in skipped["thank_you"])
    assert "NOT RENDERED birthday/de: birthday/de.jinja:4: unbounded" in format_report(report)


# --------------------------------------------------------------------------- bounded, not refused


def test_a_power_tower_reads_left_to_right_and_stays_small(tmp_path: Path) -> None:
    # Jinja reads 9**9**9 as (9**9)**9 = 9**81: a 78-digit number, harmless.
    templates = _plant(tmp_path, Attack("tower", "{{ 9**9**9 }}", ""))
    message = Renderer(templates, limits=LIMITS).render("thank_you", "en", sample_context("thank_you", "en"))
    assert str(9**81) in message.text


def test_the_customers_own_data_may_look_like_a_repr(tmp_path: Path) -> None:
    context = sample_context("birthday", "en")
    context["customer"] = {**context["customer"], "first_name": "Eve <object at 0xdeadbeef>"}
    context["customer"]["salutation"] = "Hi Eve <object at 0xdeadbeef>"
    message = Renderer(TEMPLATES).render("birthday", "en", context)
    assert "Hi Eve <object at 0xdeadbeef>," in message.text


def test_plain_values_of_every_kind_print(tmp_path: Path) -> None:
    body = "{{ 1 }} {{ 2.5 }} {{ true }} {{ none }} {{ 'x' }} {{ [1, 2] | join(',') }} {{ range(3) | sum }}"
    templates = _plant(tmp_path, Attack("plain", body, ""))
    text = (
        Renderer(templates, limits=LIMITS).render("thank_you", "en", sample_context("thank_you", "en")).text
    )
    assert "1 2.5 True None x 1,2 3" in text


# --------------------------------------------------------------------------- the worker's hard bounds


def _hang_where_no_timer_reaches() -> None:
    """Stands in for a loop inside one C call: the soft timer cannot interrupt it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(60)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _ok() -> str:
    return "ok"


def test_a_task_that_cannot_be_interrupted_is_stopped_and_the_worker_replaced() -> None:
    with RenderPool(TEMPLATES, limits=LIMITS, grace_seconds=0.5) as pool:
        with pytest.raises(TemplateProblem, match=r"^x\.jinja: exceeded the render budget of 0\.5 s"):
            pool.run(_hang_where_no_timer_reaches, (), renders=1, name="x.jinja")
        assert pool.run(_ok, (), renders=1, name="x.jinja") == "ok"


def test_a_worker_that_dies_blocks_only_its_task() -> None:
    with RenderPool(TEMPLATES, limits=LIMITS) as pool:
        with pytest.raises(TemplateProblem, match=r"rendering process died \(signal SIGKILL\)"):
            pool.run(_die, (), renders=1, name="x.jinja")
        [message] = pool.render("birthday/en.jinja", [sample_context("birthday", "en")])
        assert message.subject.startswith("Happy birthday")


def test_a_template_over_the_memory_budget_is_stopped(tmp_path: Path) -> None:
    body = (
        "{% set ns = namespace(s='x' * 200000) %}{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s | length }}"
    )
    templates = _plant(tmp_path, Attack("memory", body, ""))
    limits = RenderLimits(timeout_seconds=20, memory_mb=64)
    with RenderPool(templates, limits=limits) as pool, pytest.raises(TemplateProblem, match="memory"):
        pool.render(ATTACKED, [sample_context("thank_you", "en")])


# --------------------------------------------------------------------------- lint's static checks


def _lint_errors(templates: Path, file: str) -> list[Problem]:
    return [p for p in lint(templates, limits=LIMITS) if p.is_error and p.file.endswith(file)]


def test_lint_refuses_mutually_recursive_macros_even_when_never_called(tmp_path: Path) -> None:
    body = "{% macro a() %}{{ b() }}{% endmacro %}\n{% macro b() %}{{ a() }}{% endmacro %}Hi"
    templates = _plant(tmp_path, Attack("macros", body, ""), languages=("en",))
    messages = {(p.line, p.message.split(" (")[0]) for p in _lint_errors(templates, ATTACKED)}
    assert messages == {(4, "macro 'a' calls itself"), (5, "macro 'b' calls itself")}


def test_lint_refuses_an_include_cycle_through_another_file(tmp_path: Path) -> None:
    templates = _plant(tmp_path, Attack("cycle", "{% include '_partials/a.jinja' %}", ""), languages=("en",))
    (templates / "_partials").mkdir()
    (templates / "_partials" / "a.jinja").write_text("{% include 'thank_you/en.jinja' %}", encoding="utf-8")
    [problem] = [p for p in _lint_errors(templates, ATTACKED) if "extends itself" in p.message]
    assert problem.line == 4
    assert "thank_you/en.jinja -> _partials/a.jinja -> thank_you/en.jinja" in problem.message


def test_lint_counts_nested_constant_loops(tmp_path: Path) -> None:
    body = "{% for a in range(2000) %}\n{% for b in range(1000) %}{% endfor %}{% endfor %}"
    templates = _plant(tmp_path, Attack("loops", body, ""), languages=("en",))
    [problem] = [p for p in _lint_errors(templates, ATTACKED) if "loop runs" in p.message]
    assert problem.line == 5
    assert problem.message.startswith(
        "this loop runs 2,000,000 times (range of 1,000 inside loops running 2,000"
    )


def test_a_template_over_the_size_limit_is_refused_by_lint_and_render(tmp_path: Path) -> None:
    templates = _plant(tmp_path, Attack("big", "{# " + "x" * 70_000 + " #}", ""), languages=("en",))
    [problem] = _lint_errors(templates, ATTACKED)
    assert problem.message.startswith("the file is 70") and "over the limit of 65536 bytes" in problem.message
    with pytest.raises(TemplateProblem, match="over the limit of 65536 bytes"):
        Renderer(templates).render("thank_you", "en", sample_context("thank_you", "en"))


def test_limits_come_from_the_settings() -> None:
    settings = Settings(
        template_max_bytes=2048, message_max_bytes=8192, render_timeout_seconds=1.5, render_memory_mb=128
    )
    assert RenderLimits.from_settings(settings) == RenderLimits(2048, 8192, 1.5, 128)
