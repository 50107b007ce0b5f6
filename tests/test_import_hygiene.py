"""The nightly path imports none of the extras' packages (issue #16).

``faker`` (``retention demo-data``), ``aiosmtpd`` (``retention smtp-sink``) and ``matplotlib``
(the segments chart, skipped without it) are extras that production does not install
(``pyproject.toml``): a module of the nightly path that imported one of them at its top would
fail there. The nightly path is read from the DAG files themselves: every module a DAG file
imports, at its top or inside a task, and every first-party module those import in turn (also
inside functions, at any depth). A new stage module, or a new import in a task, is checked
without editing this test. Two checks: Python itself (a fresh interpreter imports the modules
and Airflow parses the DAG files, and ``sys.modules`` is looked at afterwards), and the source
(every module-level import in retention/, dags/ and plugins/, to name the file and line).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.airflow_env import ROOT, airflow_env

#: The extras' packages that production does not have.
EXTRAS_ONLY = ("faker", "aiosmtpd", "matplotlib")

#: The only modules that may import an extra at their top: the commands that need them, which
#: check for it first (``retention.cli._require_extra``) and are not on the nightly path.
ALLOWED = {"retention/demo.py": {"faker"}, "retention/smtp_sink.py": {"aiosmtpd"}}

#: First-party modules live in the package (retention.*) or in plugins/ (retention_airflow).
_SEARCH = (ROOT, ROOT / "plugins")

_PROBE = r"""
import importlib, json, sys
extras, dags, modules = json.loads(sys.argv[1])
def loaded():
    return {m.split(".")[0] for m in sys.modules} & set(extras)
report = {}
if dags:
    from airflow.dag_processing.dagbag import DagBag
    before = loaded()
    bag = DagBag(dag_folder=dags)
    report["DagBag(dags/)"] = sorted(loaded() - before)
    report["import errors"] = sorted(f"{k}: {v}" for k, v in bag.import_errors.items())
    report["dags"] = sorted(bag.dags)
for name in modules:
    before = loaded()
    importlib.import_module(name)
    report[name] = sorted(loaded() - before)
print(json.dumps(report))
"""


def _source_of(name: str) -> Path | None:
    """The file of a first-party module (``retention.pipeline``, ``retention_airflow``); else None."""
    for base in _SEARCH:
        path = base.joinpath(*name.split("."))
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
    return None


def _imported_names(path: Path) -> set[str]:
    """Every module an ``import`` anywhere in the file may load (``from a import b``: a and a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def nightly_modules() -> list[str]:
    """The first-party modules the DAG files reach through imports, at any depth."""
    seen: dict[str, Path] = {}
    todo = sorted((ROOT / "dags").glob("*.py"))
    while todo:
        for name in _imported_names(todo.pop()):
            path = _source_of(name)
            if path is not None and name not in seen:
                seen[name] = path
                todo.append(path)
    return sorted(seen)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(source: str, filename: str = "<source>") -> dict[str, int]:
    """Top-level packages a module imports when it is imported (not inside functions, not for
    type checkers only), each with its first line."""
    found: dict[str, int] = {}

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.setdefault(alias.name.split(".")[0], node.lineno)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.setdefault(node.module.split(".")[0], node.lineno)
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, field, []))

    visit(ast.parse(source, filename).body)
    return found


def _probe(modules: list[str], *, dags: bool, home: Path) -> dict:
    """Import ``modules`` one by one in a fresh interpreter (after Airflow parses dags/ if ``dags``):
    which extras' modules each brought in."""
    env = airflow_env(home, warehouse_url="sqlite://", source_url="sqlite://")
    env["PYTHONPATH"] = str(ROOT / "plugins")  # as Airflow puts the plugins folder on sys.path
    argument = json.dumps([EXTRAS_ONLY, str(ROOT / "dags") if dags else None, modules])
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, argument],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_nightly_path_is_read_from_the_dag_files() -> None:
    modules = nightly_modules()
    stages = {
        "retention.pipeline",
        "retention.extract",
        "retention.quality",
        "retention.segments",
        "retention.churn",
        "retention.occasions",
        "retention.outbox",
        "retention.render",
        "retention.delivery",
        "retention.mailer",
        "retention.settings",
        "retention.db",
        "retention_airflow",
    }
    assert stages <= set(modules), f"not reached from dags/: {sorted(stages - set(modules))}"


@pytest.mark.airflow
def test_dag_files_and_the_nightly_modules_import_no_extra(tmp_path: Path) -> None:
    modules = nightly_modules()
    report = _probe(modules, dags=True, home=tmp_path)
    assert report["import errors"] == []
    assert {"retention_nightly", "retention_delivery"} <= set(report["dags"])
    culprits = {step: extras for step, extras in report.items() if step not in ("import errors", "dags")}
    assert set(culprits) == {"DagBag(dags/)", *modules}
    assert {step: extras for step, extras in culprits.items() if extras} == {}, (
        "importing these loaded an extra that production does not install; import it inside the "
        "function that needs it (see retention.segments.draw_chart)"
    )


@pytest.mark.parametrize(
    ("module", "extra"), [("retention.demo", "faker"), ("retention.smtp_sink", "aiosmtpd")]
)
def test_the_probe_sees_an_extra_that_a_module_imports(tmp_path: Path, module: str, extra: str) -> None:
    """The check above can fail: the commands that do import an extra are caught by it."""
    assert module not in nightly_modules()
    report = _probe([module], dags=False, home=tmp_path)
    assert extra in report[module]


def test_no_module_imports_an_extra_at_its_top_but_the_commands_that_need_it() -> None:
    offenders = []
    for folder in ("retention", "dags", "plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            imports = module_level_imports(path.read_text(encoding="utf-8"), relative)
            offenders += [
                f"{relative}:{line} imports {package} at module level"
                for package, line in sorted(imports.items())
                if package in EXTRAS_ONLY and package not in ALLOWED.get(relative, set())
            ]
    assert offenders == []


def test_the_allowed_modules_are_off_the_nightly_path() -> None:
    on_path = {_source_of(name) for name in nightly_modules()}
    assert [file for file in ALLOWED if ROOT / file in on_path] == []


def test_module_level_imports_skips_functions_and_type_checking_blocks() -> None:
    source = (
        "import numpy as np\n"
        "from typing import TYPE_CHECKING\n"
        "try:\n    from faker import Faker\nexcept ImportError:\n    Faker = None\n"
        "if TYPE_CHECKING:\n    import aiosmtpd\n"
        "class Chart:\n    import json\n"
        "def draw():\n    import matplotlib\n"
    )
    assert module_level_imports(source) == {"numpy": 1, "typing": 2, "faker": 4, "json": 10}
