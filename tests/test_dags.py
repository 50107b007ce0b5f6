"""DAG integrity: every DAG file imports cleanly, is documented, owned, tagged and retried,
every task has a timeout and a failure alert, failures no retry can mend are final at once,
and parsing is cheap (no domain code, no database)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.airflow_env import ROOT, airflow_env, probe

pytestmark = pytest.mark.airflow

PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
def callbacks(value):
    return [] if value is None else value if isinstance(value, list) else [value]
dags = {
    dag_id: {
        "doc_md": bool(dag.doc_md),
        "tags": sorted(dag.tags),
        "owner": dag.default_args.get("owner"),
        "retries": dag.default_args.get("retries"),
        "tasks": sorted(t.task_id for t in dag.tasks),
        "params": sorted(dag.params.keys()),
        "timezone": str(dag.timezone),
        "timeouts": {
            t.task_id: t.execution_timeout.total_seconds() if t.execution_timeout else None for t in dag.tasks
        },
        "inlets": {t.task_id: sorted(a.uri for a in t.inlets) for t in dag.tasks},
        "outlets": {t.task_id: sorted(a.uri for a in t.outlets) for t in dag.tasks},
        "groups": {t.task_id: (t.task_group.group_id if t.task_group else None) for t in dag.tasks},
        "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
        "param_docs": {k: dag.params.get_param(k).description for k in dag.params.keys()},
        "alerts": {
            t.task_id: [f"{c.__module__}.{c.__name__}" for c in callbacks(t.on_failure_callback)]
            for t in dag.tasks
        },
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
    assert set(dagbag["dags"]) == {
        "retention_nightly",
        "retention_delivery",
        "retention_erasure",
        "retention_templates",
    }


@pytest.mark.parametrize(
    "dag_id", ["retention_nightly", "retention_delivery", "retention_erasure", "retention_templates"]
)
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


def test_erasure_is_manual_with_the_person_as_its_param(dagbag) -> None:
    erasure = dagbag["dags"]["retention_erasure"]
    assert erasure["tasks"] == ["forget", "migrate"]
    assert erasure["params"] == ["person"]


def test_parsing_loads_no_domain_code(dagbag) -> None:
    # The one exception: the declaration of the nightly stages (names, order, timeouts, assets),
    # a module of dataclasses that names each stage's function as a string.
    assert dagbag["heavy"] == ["retention.stages"]


def test_the_nightly_tasks_follow_the_stage_list(dagbag) -> None:
    """retention_nightly is built from retention.stages.NIGHT_STAGES: same tasks, same order,
    each with its stage's timeout, in one chain after migrate."""
    from retention.stages import NIGHT_STAGES

    nightly = dagbag["dags"]["retention_nightly"]
    chain = ["migrate", *(s.task_id for s in NIGHT_STAGES)]
    assert nightly["tasks"] == sorted(chain)
    for before, after in zip(chain, [*chain[1:], None], strict=True):
        assert nightly["downstream"][before] == ([after] if after else []), before
    for stage in NIGHT_STAGES:
        assert nightly["timeouts"][stage.task_id] == stage.timeout.total_seconds(), stage.name
        assert nightly["groups"][stage.task_id] == stage.group, stage.name


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


@pytest.mark.parametrize(
    "dag_id", ["retention_nightly", "retention_delivery", "retention_erasure", "retention_templates"]
)
def test_every_task_has_a_timeout_and_a_failure_alert(dagbag, dag_id) -> None:
    dag = dagbag["dags"][dag_id]
    for task_id, seconds in dag["timeouts"].items():
        # A hung stage must fail well before the next run of its DAG would be due.
        limit = 24 * 3600 if dag_id == "retention_nightly" else 3600
        assert seconds is not None and 0 < seconds < limit, (task_id, seconds)
    assert all(calls == ["retention_airflow.alert_on_failure"] for calls in dag["alerts"].values()), dag[
        "alerts"
    ]


FAIL_FAST_PROBE = r"""
import sys
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import AirflowFailException
from retention.pipeline import stage_migrate
from retention.settings import Settings

stage_migrate(Settings())
tasks = DagBag(dag_folder=sys.argv[1]).dags["retention_nightly"].task_dict
context = {"params": {"night": "2026-11-21", "full_refresh": False}, "run_id": "probe"}
try:
    task = tasks[sys.argv[2]]
    task.python_callable(**(context if sys.argv[2] != "migrate" else {}))
except AirflowFailException as exc:
    print("final:", exc)
except Exception as exc:
    print("retryable:", type(exc).__name__, exc)
else:
    print("passed")
"""


@pytest.mark.parametrize(
    ("task_id", "secret", "expected"),
    [
        # No extract ran for the night: the quality gate fails, and no retry can change that.
        pytest.param("quality", "s" * 32, "final: QualityError: night 2026-11-21", id="quality-gate"),
        pytest.param(
            "migrate",
            "too-short",
            "final: WeakSecret: RETENTION_UNSUBSCRIBE_SECRET is 9 bytes",
            id="weak-secret",
        ),
        pytest.param("migrate", "s" * 32, "passed", id="good-secret"),
    ],
)
def test_failures_no_retry_can_mend_are_final_at_once(tmp_path, task_id, secret, expected) -> None:
    env = airflow_env(tmp_path, warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}", source_url="sqlite://")
    env["RETENTION_UNSUBSCRIBE_SECRET"] = secret
    proc = subprocess.run(
        [sys.executable, "-c", FAIL_FAST_PROBE, str(ROOT / "dags"), task_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith(expected), proc.stdout[-2000:]


def test_lineage_follows_the_data_from_the_shop_to_the_outbox(dagbag) -> None:
    """Each nightly task reads what an earlier task wrote; the chain starts at the shop's database."""
    nightly = dagbag["dags"]["retention_nightly"]
    order = [
        "migrate",
        "extract",
        "quality",
        "customer_facts",
        "segments",
        "recommendations",
        "occasions",
        "render",
    ]
    assert nightly["inlets"]["extract"] == ["shop://retention/source"]
    written: set[str] = set()
    for task_id in order:
        missing = set(nightly["inlets"][task_id]) - written - {"shop://retention/source"}
        assert not missing, f"{task_id} reads {missing} before anything wrote it"
        written |= set(nightly["outlets"][task_id])
    assert all(nightly["outlets"][t] for t in order if t not in ("migrate", "quality"))
    assert "warehouse://retention/outbox" in nightly["outlets"]["render"]
    delivery = dagbag["dags"]["retention_delivery"]
    assert (
        delivery["inlets"]["send_batches"]
        == delivery["outlets"]["send_batches"]
        == ["warehouse://retention/outbox"]
    )


def test_nightly_tasks_are_grouped_as_the_data_flows(dagbag) -> None:
    groups = dagbag["dags"]["retention_nightly"]["groups"]
    assert groups == {
        "migrate": "load",
        "extract": "load",
        "quality": "load",
        "customer_facts": "model",
        "segments": "model",
        "recommendations": "model",
        "occasions": "messages",
        "render": "messages",
    }


@pytest.mark.parametrize("dag_id", ["retention_nightly", "retention_delivery", "retention_erasure"])
def test_every_param_of_a_manual_run_is_described(dagbag, dag_id) -> None:
    docs = dagbag["dags"][dag_id]["param_docs"]
    assert docs and all(text and len(text) > 15 for text in docs.values()), docs
    if dag_id == "retention_delivery":
        assert set(docs) == {"dry_run", "occasions", "limit"}


UNKNOWN_OCCASION_PROBE = r"""
import sys
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import AirflowFailException
plan = DagBag(dag_folder=sys.argv[1]).dags["retention_delivery"].task_dict["plan"]
context = {"params": {"dry_run": True, "occasions": ["birthdya"], "limit": None}, "logical_date": None}
try:
    plan.python_callable(**context)
except AirflowFailException as exc:
    print("final:", exc)
else:
    print("passed")
"""


def test_a_misspelt_occasion_param_fails_at_once_naming_it(tmp_path) -> None:
    env = airflow_env(tmp_path, warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}", source_url="sqlite://")
    last = probe(UNKNOWN_OCCASION_PROBE, env, str(ROOT / "dags"))
    assert last.startswith("final: ValueError: unknown occasion(s) birthdya"), last
