"""The nightly benchmark: time and peak memory of every stage on a demo shop of a given size.

    python -m bench.run --customers 100000 [--warehouse-url URL] [--keep]

It writes a demo shop whose data ends on 2026-11-21, runs night 2026-11-21 (the first
night: the whole history up to that day) and night 2026-11-22 (one busy day of changes,
incremental), then rebuilds the facts of night 2026-11-22 in full, and evaluates the
suggestions against what customers bought next (``retention evaluate-suggestions``: hit
rate and precision at 3, next to two baselines). The incremental facts
are reported as a ratio of that full rebuild, measured in the same process, so that the
number means something on a noisy machine.

Peak memory is the resident set's high-water mark of this process during each stage
(reset between stages through /proc/self/clear_refs where Linux allows it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from retention.demo import DEMO_AS_OF, generate
from retention.evaluate import evaluate_suggestions, format_table
from retention.night import night_for_date
from retention.pipeline import (
    NIGHT_STAGES,
    stage_facts,
    stage_migrate,
    warehouse_engine,
)
from retention.settings import Settings

FIRST_NIGHT = DEMO_AS_OF - dt.timedelta(days=1)
SECOND_NIGHT = DEMO_AS_OF


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(rows: list[dict], name: str, func: Callable[[], object]) -> object:
    _reset_peak()
    started = time.perf_counter()
    result = func()
    rows.append(
        {"stage": name, "seconds": round(time.perf_counter() - started, 3), "peak_mib": round(_peak_mib(), 1)}
    )
    print(f"  {name:28} {rows[-1]['seconds']:9.2f} s  {rows[-1]['peak_mib']:8.0f} MiB", flush=True)
    return result


def _run_night(rows: list[dict], settings: Settings, night_date, label: str) -> dict:
    night = night_for_date(night_date, settings.time_zone)
    results = {}
    for stage in NIGHT_STAGES:
        results[stage.name] = _measure(
            rows, f"{label} {stage.name}", lambda s=stage: s(settings, night, f"bench-{night}")
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warehouse-url", help="default: a SQLite file in a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", help="also write the table as JSON to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    home = Path(tempfile.mkdtemp(prefix="retention-bench-"))
    os.environ.setdefault("RETENTION_UNSUBSCRIBE_SECRET", "bench-only-unsubscribe-secret-0123456789")
    settings = Settings(home=home, warehouse_url=args.warehouse_url)
    rows: list[dict] = []
    print(f"Benchmark: {args.customers} customers, warehouse {settings.warehouse.split('@')[-1]}")
    summary = _measure(rows, "demo shop", lambda: generate(settings.source, args.customers, args.seed))
    print(f"  shop: {summary.rows}")
    _measure(rows, "migrate", lambda: stage_migrate(settings))
    _run_night(rows, settings, FIRST_NIGHT, "night 1 (history)")
    results = _run_night(rows, settings, SECOND_NIGHT, "night 2 (one day)")
    night = night_for_date(SECOND_NIGHT, settings.time_zone)
    _measure(
        rows,
        "night 2 facts, full rebuild",
        lambda: stage_facts(settings, night, "bench-full", full_refresh=True),
    )

    evaluation = _measure(
        rows,
        "evaluate suggestions",
        lambda: evaluate_suggestions(
            warehouse_engine(settings.warehouse),
            time_zone=settings.time_zone,
            min_pairs=settings.rules_min_pairs,
            min_confidence=settings.rules_min_confidence,
        ),
    )

    timing = {row["stage"]: row["seconds"] for row in rows}
    incremental, full = timing["night 2 (one day) facts"], timing["night 2 facts, full rebuild"]
    print(
        f"\nIncremental facts of night 2: {results['facts']['customers']} customers in {incremental:.2f} s, "
        f"{incremental / full:.3f} of the full rebuild ({full:.2f} s)"
    )
    fits = results["segments"]["fits"]
    print(f"Churn fit on {fits['triples']} distinct triples (BG/NBD + Gamma-Gamma)")
    print("\nSuggestions against what customers bought next (retention evaluate-suggestions):")
    print(format_table(evaluation))
    print(f"Process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        document = {"customers": args.customers, "stages": rows, "suggestions": evaluation}
        Path(args.json).write_text(json.dumps(document, indent=2, default=str))
    warehouse_engine.cache_clear()
    if args.keep:
        print(f"Kept {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
