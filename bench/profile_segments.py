"""Where the segments stage spends an ordinary night: cProfile of ``stage_segments`` (issue 15, item 4).

    python -m bench.run --size medium --keep            # prints "Kept <home> ..."
    python -m bench.profile_segments --home <home> [--warehouse-url URL] [--night 2026-11-27]

Re-runs the segments stage of the warehouse's latest night (a night nobody ran after is
recomputed, not reproduced) under cProfile and prints the functions by cumulative time,
and the stage's sub-steps (churn fit, snapshots, outcomes, pruning, summary, report, chart)
timed one by one. It changes no code path; it only measures.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time

from bench import kept
from retention import segments
from retention.pipeline import warehouse_engine
from retention.settings import Settings


def _steps(settings: Settings, night) -> list[tuple[str, float]]:
    """The stage's sub-steps as ``pipeline.stage_segments`` runs them, each timed."""
    timings = []
    engine = warehouse_engine(settings.warehouse)

    def step(name, func):
        started = time.perf_counter()
        result = func()
        timings.append((name, time.perf_counter() - started))
        return result

    with engine.begin() as conn:
        fits = step("fit_churn", lambda: segments.fit_churn(conn, night, settings))
        step("build_snapshots", lambda: segments.build_snapshots(conn, night, settings, fits))
        step("snapshot_outcomes", lambda: segments.snapshot_outcomes(conn, night.date, fits))
        step("prune_snapshots", lambda: segments.prune_snapshots(conn, night, settings.snapshot_days))
        summary = step("segment_summary", lambda: segments.segment_summary(conn, night.date))
        step("write_report", lambda: segments.write_report(conn, night.date, summary))
    step("draw_chart", lambda: segments.draw_chart(night.date, summary, settings.home_dir / "profile.png"))
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = kept.parser(__doc__)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    settings, night = kept.settings_and_night(args)
    profiler = cProfile.Profile()
    profiler.enable()
    timings = _steps(settings, night)
    profiler.disable()
    print(f"segments of night {night.date} on {settings.warehouse.split('@')[-1]}, sub-steps:")
    for name, seconds in timings:
        print(f"  {name:20} {seconds:8.2f} s")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
