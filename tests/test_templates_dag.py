"""Issue #14, item 5: the `retention_templates` DAG lints every template, and the night obeys it.

A template whose loop runs 200,000 times renders for real customers within the time budget,
but the linter refuses it (at most 100,000 per range). The DAG reports it as blocked, with the
file, line and reason, and fails so that the alert goes out; the nightly render, run on the
same templates, blocks that occasion in that language with exactly the same reason and sends
everything else.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from retention import schema
from retention.night import night_for_date
from retention.pipeline import run_night, warehouse_engine
from tests.airflow_env import ROOT, airflow_env
from tests.test_template_attacks import LONG_SECRET, NIGHT, _shop

pytestmark = pytest.mark.airflow

PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import AirflowFailException
tasks = DagBag(dag_folder=sys.argv[1]).dags["retention_templates"].task_dict
summary = tasks["lint"].python_callable()
try:
    outcome = ["passed", tasks["verdict"].python_callable(summary)]
except AirflowFailException as exc:
    outcome = ["final", str(exc)]
print(json.dumps({"summary": summary, "verdict": outcome}))
"""

LOOP = "{% for i in range(200000) %}{% endfor %}"


def _templates(folder: Path, broken: bool) -> Path:
    copy = folder / "templates"
    shutil.copytree(ROOT / "templates", copy)
    if broken:
        path = copy / "thank_you" / "en.jinja"
        lines = path.read_text(encoding="utf-8").splitlines()
        lines.insert(3, LOOP)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return copy


def _dag_run(tmp_path: Path, templates: Path) -> dict:
    env = airflow_env(tmp_path, warehouse_url="sqlite://", source_url="sqlite://")
    env["RETENTION_TEMPLATES_DIR"] = str(templates)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_dag_passes_the_shipped_templates(tmp_path: Path) -> None:
    result = _dag_run(tmp_path, _templates(tmp_path, broken=False))
    assert result["summary"]["blocked"] == {}
    assert result["summary"]["templates"] >= 32
    assert result["verdict"][0] == "passed"


def test_the_dag_and_the_night_block_the_same_template_for_the_same_reason(
    settings, tmp_path, monkeypatch
) -> None:
    templates = _templates(tmp_path, broken=True)
    result = _dag_run(tmp_path, templates)
    assert list(result["summary"]["blocked"]) == ["thank_you/en"]
    reason = result["summary"]["blocked"]["thank_you/en"]
    assert reason.startswith("thank_you/en.jinja:4: this loop runs 200,000 times"), reason
    assert result["verdict"][0] == "final" and "thank_you/en" in result["verdict"][1]

    monkeypatch.setenv("RETENTION_UNSUBSCRIBE_SECRET", LONG_SECRET.decode())
    settings = settings.with_overrides(templates_dir=templates, holdout_share=0.0)
    _shop(settings)
    results = run_night(settings, night_for_date(NIGHT, settings.time_zone), "linted")
    assert results["render"]["template_failures"] == {"thank_you/en": reason}
    with warehouse_engine(settings.warehouse).connect() as conn:
        occ = schema.occasions
        rows = conn.execute(
            select(occ.c.occasion, occ.c.language, occ.c.status, occ.c.reason).where(
                occ.c.occasion == "thank_you"
            )
        ).all()
    english = [row for row in rows if row.language == "en"]
    assert english and all((r.status, r.reason) == ("blocked", f"template: {reason}") for r in english)
    assert all(row.status == "selected" for row in rows if row.language != "en")
    assert results["render"]["queued"]["thank_you"] == len(rows) - len(english)
