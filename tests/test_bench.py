"""``make bench`` itself, at a tiny size: every stage is timed and the delivery adds up.

The benchmark's numbers are for people to read (speed is never asserted); what can fail here
is the harness: a stage missing from the table, a result file that lost a section, or a
delivery whose messages do not add up at the server (each message sent by our delivery, by the
yagmail baseline and by the smtplib ceiling must arrive exactly once).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"extract", "quality", "facts", "segments", "recommendations", "occasions", "render"}


@pytest.mark.parametrize("warehouse", ["sqlite", "postgresql"])
def test_a_tiny_benchmark_times_every_stage_and_its_delivery_adds_up(tmp_path, warehouse) -> None:
    if warehouse == "postgresql" and not PG_URL:
        pytest.skip("RETENTION_TEST_PG_URL is not set")
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "bench.run", "--size", "small", "--customers", "300", "--nights", "1"]
    cmd += ["--no-rebuild", "--skip-peers", "--json", str(out)]
    if warehouse == "postgresql":
        cmd += ["--warehouse-url", PG_URL]  # the benchmark makes and drops its own scratch database
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["warehouse"] == warehouse and result["customers"] == 300
    summary = result["summary"]
    assert set(summary["first_night"]) == STAGES and set(summary["ordinary_night_mean"]) == STAGES
    assert all(seconds >= 0 for seconds in summary["first_night"].values())
    assert result["changes"][0]["customers_changed"] > 0

    delivery = result["delivery"]
    one, lanes = delivery["counts"], delivery["lanes"]["counts"]
    yag, ceiling = delivery["yagmail"], delivery["smtp_ceiling"]
    assert one["sent"] + lanes["sent"] > 0 and one["failed"] == one["unknown"] == 0
    assert (
        delivery["received_by_sink"]
        == one["sent"] + lanes["sent"] + yag["messages"] + 2 * ceiling["messages"]
    )
    assert ceiling["one_connection_per_second"] > 0 and ceiling["parallel_per_second"] > 0
    assert ceiling["server_cpu_ms_per_message"] > 0  # read from /proc for the server's process
    render = result["baselines"]["render"]
    assert render["ours"]["messages"] > 0 and render["jinja2_cached"]["per_second"] > 0
    assert render["jinja2_cached_without_inlining"]["messages"] > 0
    assert render["css_inline_alone"]["messages"] > 0
    # The table a reader sees names every stage and the ceiling.
    for stage in STAGES:
        assert f"\n  {stage}" in done.stdout
    assert "the SMTP server's ceiling" in done.stdout and "rendering's floor" in done.stdout
