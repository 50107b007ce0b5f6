"""Benchmark: fit BG/NBD and Gamma-Gamma on a simulated customer base.

Simulates ``--customers`` customers from known BG/NBD and Gamma-Gamma parameters with a seeded
numpy generator (time in whole days, first purchases spread over ``--days`` of history), groups
them into distinct (frequency, recency, T) triples the way the nightly job's SQL does, fits both
models and prints sizes, timings, peak memory and recovered versus true parameters::

    python -m bench.bench_churn --customers 1000000
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retention.churn import fit_bg_nbd, fit_gamma_gamma

# True parameters with the time unit in days: about r/alpha * 365 = 3 purchases a year while
# alive and a mean dropout probability of a/(a+b) = 0.24 after each purchase (CDNOW-like).
TRUE_BG = {"r": 0.25, "alpha": 30.0, "a": 0.8, "b": 2.5}
# Mean order value p*v/(q-1) = 30 currency units.
TRUE_GG = {"p": 6.0, "q": 4.0, "v": 15.0}


@dataclass(frozen=True)
class Population:
    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    monetary_value: np.ndarray


def simulate(customers: int, days: int, seed: int) -> Population:
    """Draw a BG/NBD + Gamma-Gamma population; recency and T rounded to whole days."""
    rng = np.random.default_rng(seed)
    age = rng.integers(0, days + 1, size=customers).astype(np.float64)
    rate = rng.gamma(TRUE_BG["r"], 1.0 / TRUE_BG["alpha"], size=customers)
    dropout = rng.beta(TRUE_BG["a"], TRUE_BG["b"], size=customers)
    # A customer drops out right after the J-th repeat purchase, J ~ Geometric(p) on 1, 2, ...
    lifetime_purchases = rng.geometric(dropout)
    possible = rng.poisson(rate * age)
    x = np.minimum(possible, lifetime_purchases)
    # Given N Poisson arrivals in (0, T], the x-th one sits at T * Beta(x, N - x + 1).
    repeat = x > 0
    last = np.zeros(customers)
    last[repeat] = age[repeat] * rng.beta(x[repeat], possible[repeat] - x[repeat] + 1)
    recency = np.rint(last)
    # Gamma-Gamma: customer scale nu ~ Gamma(q, rate v); the mean of x spends ~ Gamma(p x, rate nu x).
    nu = rng.gamma(TRUE_GG["q"], 1.0 / TRUE_GG["v"], size=customers)
    monetary = np.zeros(customers)
    monetary[repeat] = rng.gamma(TRUE_GG["p"] * x[repeat], 1.0 / (nu[repeat] * x[repeat]))
    monetary = np.maximum(np.round(monetary, 2), 0.01)  # cents, as stored; never 0 for buyers
    return Population(x.astype(np.float64), recency, age, np.where(repeat, monetary, 0.0))


def aggregate(pop: Population) -> pd.DataFrame:
    """Distinct (frequency, recency, T) with counts: what ``group by 1, 2, 3`` returns."""
    frame = pd.DataFrame({"frequency": pop.frequency, "recency": pop.recency, "T": pop.T})
    return frame.groupby(["frequency", "recency", "T"], sort=False).size().rename("customers").reset_index()


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux and bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def report(name: str, true: dict[str, float], fitted: object) -> None:
    for key, value in true.items():
        got = getattr(fitted, key)
        print(
            f"  {name:<11} {key:<6} true {value:>9.4f}  fitted {got:>9.4f}  ({(got / value - 1) * 100:+.2f} %)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=3 * 365, help="length of the history in days")
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    pop = simulate(args.customers, args.days, args.seed)
    simulated = time.perf_counter()
    triples = aggregate(pop)
    aggregated = time.perf_counter()
    bg = fit_bg_nbd(triples["frequency"], triples["recency"], triples["T"], weights=triples["customers"])
    bg_done = time.perf_counter()
    gg = fit_gamma_gamma(pop.frequency, pop.monetary_value)
    gg_done = time.perf_counter()

    print(f"rows (customers)          {args.customers:>12,}")
    print(f"repeat buyers (x > 0)     {gg.customers:>12,}")
    print(f"unique (x, t_x, T)        {len(triples):>12,}")
    print(f"simulate seconds          {simulated - started:>12.2f}")
    print(f"aggregate seconds         {aggregated - simulated:>12.2f}")
    print(f"BG/NBD fit seconds        {bg_done - aggregated:>12.2f}")
    print(f"Gamma-Gamma fit seconds   {gg_done - bg_done:>12.2f}")
    print(f"peak RSS MiB              {peak_rss_mib():>12.1f}")
    report("BG/NBD", TRUE_BG, bg)
    report("Gamma-Gamma", TRUE_GG, gg)


if __name__ == "__main__":
    main()
