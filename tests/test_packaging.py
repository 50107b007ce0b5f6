"""`pip install .` (not editable) gives a package that runs a whole night, away from the repository.

The wheel is built from a copy of the source tree (an in-tree build would write ``build/`` and
``*.egg-info`` into the repository while others work in it), installed into a fresh virtualenv
with its production dependencies only (pip's cache keeps that quick), and run from a folder
outside the repository: migrate, a night on a demo shop into a SQLite warehouse, and delivery
to a real SMTP server on loopback. The demo shop is written by this test's own interpreter:
the demo generator is an extra the installed package does not have.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from retention.demo import DEMO_AS_OF, generate
from tests.airflow_env import ROOT
from tests.conftest import SECRET

pytestmark = pytest.mark.slow

#: Not part of the package's source: never copied into the build tree.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "var",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "node_modules",
)

#: The optional dependencies (extras) that production does not need.
EXTRAS_ONLY = ("faker", "aiosmtpd", "matplotlib")


def _run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, check: bool = True):
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The wheel built from a copy of the repository, installed into a fresh virtualenv."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(base / "dist"), str(source)]
    )
    (wheel,) = (base / "dist").glob("retention-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    # No extras: what production installs. PyPI (through pip's cache) is the only network used.
    _run([str(python), "-m", "pip", "install", "--quiet", str(wheel)])
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base
    ).stdout.strip()
    return {"wheel": wheel, "python": python, "bin": venv / "bin", "site": Path(purelib), "base": base}


def _env(home: Path, **extra: str) -> dict[str, str]:
    """The process environment without anything that could lead back to the repository."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RETENTION_", "PYTHON", "VIRTUAL_ENV", "AIRFLOW"))
    }
    env.update({"RETENTION_HOME": str(home), "RETENTION_UNSUBSCRIBE_SECRET": SECRET.decode(), **extra})
    return env


def test_wheel_holds_every_sql_model_and_template(built) -> None:
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    models = [p.relative_to(ROOT / "sql").as_posix() for p in (ROOT / "sql").rglob("*.sql")]
    templates = [
        p.relative_to(ROOT / "templates").as_posix()
        for pattern in ("*.jinja", "*.toml", "*.md")
        for p in (ROOT / "templates").rglob(pattern)
    ]
    assert len(models) >= 10 and "macros.sql" in models
    assert len(templates) >= 30 and "_layout.jinja" in templates and "thank_you/en.jinja" in templates
    missing = [f"retention/_sql/{m}" for m in models if f"retention/_sql/{m}" not in names]
    missing += [f"retention/_templates/{t}" for t in templates if f"retention/_templates/{t}" not in names]
    assert missing == []
    # Every module, also of a subpackage added later (pyproject.toml lists the packages by name).
    modules = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "retention").rglob("*.py")
        if "__pycache__" not in p.parts
    ]
    assert "retention/migrations/versions/0001_initial_warehouse_schema.py" in modules
    assert [m for m in modules if m not in names] == []
    # Nothing of the repository's other folders rides along.
    assert not [n for n in names if n.startswith(("tests/", "dags/", "plugins/", "sql/", "templates/"))]


def test_installed_package_reads_its_files_from_site_packages(built, tmp_path: Path) -> None:
    probe = (
        "import importlib.util, json, retention, retention.sqlmodels as m\n"
        "from retention.settings import Settings\n"
        "print(json.dumps({'package': retention.__file__, 'sql': str(m.SQL_DIR),\n"
        "  'templates': str(Settings().templates_path),\n"
        f"  'extras': [n for n in {EXTRAS_ONLY!r} if importlib.util.find_spec(n)]}}))"
    )
    out = json.loads(_run([str(built["python"]), "-c", probe], env=_env(tmp_path), cwd=tmp_path).stdout)
    site = built["site"]
    assert Path(out["package"]).parent == site / "retention"
    assert Path(out["sql"]) == site / "retention" / "_sql"
    assert Path(out["templates"]) == site / "retention" / "_templates"
    assert not any(str(ROOT) in path for path in (out["package"], out["sql"], out["templates"]))
    assert out["extras"] == []  # production dependencies only: the night below runs without them
    own = tmp_path / "our-templates"
    env = _env(tmp_path, RETENTION_TEMPLATES_DIR=str(own))
    out = json.loads(_run([str(built["python"]), "-c", probe], env=env, cwd=tmp_path).stdout)
    assert Path(out["templates"]) == own  # a deployment's own templates win


def test_installed_package_runs_a_night_and_delivers_outside_the_repo(
    built, tmp_path: Path, mail_sink
) -> None:
    shop = tmp_path / "shop.db"
    generate(f"sqlite:///{shop}", 300, 7, DEMO_AS_OF)
    run = tmp_path / "elsewhere"
    run.mkdir()
    env = _env(
        tmp_path / "home",
        RETENTION_SOURCE_URL=f"sqlite:///{shop}",
        RETENTION_WAREHOUSE_URL=f"sqlite:///{tmp_path / 'warehouse.db'}",
        RETENTION_SMTP_URL=f"smtp://127.0.0.1:{mail_sink.port}",
    )
    retention = str(built["bin"] / "retention")

    _run([retention, "nightly", "--date", str(DEMO_AS_OF)], env=env, cwd=run)
    report = json.loads(_run([retention, "report", "--json"], env=env, cwd=run).stdout)
    occasions = sum(n for by_language in report["occasions"].values() for n in by_language.values())
    queued = report["outbox"].get("queued", 0)
    assert report["logical_date"] == str(DEMO_AS_OF)
    assert sum(report["extract"]["rows"].values()) > 0
    assert occasions > 0 and queued > 0

    # 15:00 UTC: inside every demo customer's send window that day (Tallinn to New York).
    sent = json.loads(
        _run([retention, "send", "--until", f"{DEMO_AS_OF}T15:00:00+00:00"], env=env, cwd=run).stdout
    )
    received = mail_sink.wait_for(queued)
    assert len(received) == queued
    assert sent.get("sent") == queued, sent
    assert all(m.message["List-Unsubscribe"] for m in received)

    lint = _run([retention, "templates", "lint"], env=env, cwd=run)
    assert "templates OK" in lint.stdout
    # The demo generator is an extra: a clear one-line reason, not a traceback.
    demo = _run([retention, "demo-data", "--customers", "10"], env=env, cwd=run, check=False)
    assert demo.returncode == 1
    assert "pip install 'retention[demo]'" in demo.stderr and "Traceback" not in demo.stderr
