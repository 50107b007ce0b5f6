"""The scaling chart: each stage's seconds against the shop's size, log-log, from `make bench`'s results.

    python -m bench.chart [--warehouse postgresql] [--out docs/scaling.png]

Reads the newest ``bench/results/<size>-<warehouse>-*.json`` of every size (small, medium,
large; a custom ``BENCH_CUSTOMERS`` run is left out) and draws two panels: the first night and
the mean ordinary night, one line per stage, with a dotted line of slope 1 (linear cost) for
reference. Needs matplotlib (the ``bench`` or ``charts`` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.run import RESULTS, SIZES

STAGES = ("extract", "facts", "segments", "recommendations", "occasions", "render")
PANELS = (
    ("first_night", "first night (whole history)"),
    ("ordinary_night_mean", "ordinary night (1 % changed)"),
)


def newest_results(warehouse: str, folder: Path = RESULTS) -> list[dict]:
    """The newest result of each standard size for ``warehouse``, smallest first."""
    found = []
    for size in SIZES:
        files = sorted(folder.glob(f"{size}-{warehouse}-*.json"))
        if files:
            found.append(json.loads(files[-1].read_text()))
    return sorted(found, key=lambda doc: doc["customers"])


def draw(results: list[dict], warehouse: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    customers = [doc["customers"] for doc in results]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, (key, title) in zip(axes, PANELS, strict=True):
        for stage in STAGES:
            seconds = [max(doc["summary"][key].get(stage, 0), 1e-3) for doc in results]
            ax.plot(customers, seconds, marker="o", label=stage)
        first = max(doc["summary"][key].get("extract", 0) for doc in results[:1]) or 1.0
        ax.plot(customers, [first * c / customers[0] for c in customers], "k:", label="linear")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("customers")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds")
    axes[1].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"make bench on {warehouse}, {results[0].get('cpus', '?')} cores (shared machine)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", default="postgresql", choices=("postgresql", "sqlite"))
    parser.add_argument("--out", type=Path, help="default: bench/results/scaling-<warehouse>.png")
    args = parser.parse_args(argv)
    results = newest_results(args.warehouse)
    if len(results) < 2:
        print(f"need results of at least two sizes in {RESULTS} for {args.warehouse}; run make bench first")
        return 1
    out = draw(results, args.warehouse, args.out or RESULTS / f"scaling-{args.warehouse}.png")
    sizes = ", ".join(f"{doc['customers']:,} ({doc['started']})" for doc in results)
    print(f"{out}: {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
