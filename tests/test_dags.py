"""DAG integrity: every DAG file imports cleanly, is documented, owned, tagged and retried,
and parsing is cheap (no domain code, no database)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.airflow_env import ROOT, airflow_env

pytestmark = pytest.mark.airflow

PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dags = {
    dag_id: {
        "doc_md": bool(dag.doc_md),
        "tags": sorted(dag.tags),
        "owner": dag.default_args.get("owner"),
        "retries": dag.default_args.get("retries"),
        "tasks": sorted(t.task_id for t in dag.tasks),
        "params": sorted(dag.params.keys()),
        "timezone": str(dag.timezone),
    }
    for dag_id, dag in bag.dags.items()
}
heavy = sorted(m for m in sys.modules if m.startswith(("retention.", "pandas", "yagmail")))
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow")
    env = airflow_env(home, warehouse_url="sqlite://", source_url="sqlite://")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag["errors"] == {}
    assert set(dagbag["dags"]) == {"retention_nightly", "retention_delivery"}


@pytest.mark.parametrize("dag_id", ["retention_nightly", "retention_delivery"])
def test_dag_is_documented_owned_tagged_and_retried(dagbag, dag_id) -> None:
    dag = dagbag["dags"][dag_id]
    assert dag["doc_md"]
    assert "retention" in dag["tags"]
    assert dag["owner"] == "data-eng"
    assert dag["retries"] >= 1


def test_nightly_chain_has_every_stage(dagbag) -> None:
    nightly = dagbag["dags"]["retention_nightly"]
    assert nightly["tasks"] == [
        "customer_facts",
        "extract",
        "migrate",
        "occasions",
        "quality",
        "recommendations",
        "render",
        "segments",
    ]
    assert nightly["params"] == ["full_refresh", "night"]
    assert nightly["timezone"] == "Europe/Berlin"


def test_parsing_loads_no_domain_code(dagbag) -> None:
    assert dagbag["heavy"] == []


def test_the_domain_package_never_imports_airflow() -> None:
    code = (
        "import importlib, pkgutil, sys, retention\n"
        "for m in pkgutil.walk_packages(retention.__path__, 'retention.'):\n"
        "    if not m.name.startswith('retention.migrations'): importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
