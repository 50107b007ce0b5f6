"""BG/NBD and Gamma-Gamma: published CDNOW estimates, model properties, weights, validation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import approx_fprime

from retention import churn
from retention.churn import (
    BgNbdParams,
    GammaGammaParams,
    clv,
    expected_order_value,
    expected_purchases,
    fit_bg_nbd,
    fit_gamma_gamma,
    p_alive,
)

CDNOW = Path(__file__).parent / "fixtures" / "cdnow" / "cdnow_customers_summary_with_transactions.csv"

# Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way", CDNOW, weeks.
PAPER_BG = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PAPER_BG_LOGLIK = -9582.4
# Fader, Hardie & Lee (2005) iso-value paper and Fader & Hardie (2013) note.
PAPER_GG = {"p": 6.25, "q": 3.74, "v": 15.44}


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return pd.read_csv(CDNOW)


@pytest.fixture(scope="module")
def bg(cdnow: pd.DataFrame) -> BgNbdParams:
    return fit_bg_nbd(cdnow["x"], cdnow["t_x"], cdnow["T"])


@pytest.fixture(scope="module")
def gg(cdnow: pd.DataFrame) -> GammaGammaParams:
    return fit_gamma_gamma(cdnow["x"], cdnow["zbar"])


# ------------------------------------------------------------------------------ published values


def test_bg_nbd_reproduces_the_paper_on_cdnow(bg: BgNbdParams) -> None:
    assert bg.customers == 2357
    for name, published in PAPER_BG.items():
        assert getattr(bg, name) == pytest.approx(published, rel=0.01), name
    assert bg.log_likelihood == pytest.approx(PAPER_BG_LOGLIK, abs=0.1)


def test_gamma_gamma_reproduces_the_paper_on_cdnow(gg: GammaGammaParams) -> None:
    assert gg.customers == 946  # customers with at least one repeat purchase
    for name, published in PAPER_GG.items():
        assert getattr(gg, name) == pytest.approx(published, rel=0.01), name


def test_published_conditional_expectation(bg: BgNbdParams) -> None:
    # FHL 2005: x = 2, t_x = 30.43, T = 38.86 -> 1.226 repeat purchases in the next 39 weeks.
    assert expected_purchases(bg, 39, 2, 30.43, 38.86) == pytest.approx(1.226, rel=0.01)
    paper = BgNbdParams(**PAPER_BG, log_likelihood=0.0, customers=0)
    assert expected_purchases(paper, 39, 2, 30.43, 38.86) == pytest.approx(1.226, rel=0.01)


# ------------------------------------------------------------------------------ model properties


def test_p_alive_is_one_without_repeat_purchases(bg: BgNbdParams) -> None:
    assert np.array_equal(p_alive(bg, [0, 0, 0], [0, 0, 0], [0.0, 38.86, 1e6]), [1.0, 1.0, 1.0])


def test_p_alive_falls_as_the_customer_stays_silent(bg: BgNbdParams) -> None:
    ages = np.array([30.43, 35.0, 38.86, 52.0, 104.0, 1000.0])
    alive = p_alive(bg, 2, 30.43, ages)
    assert alive[0] < 1.0
    assert np.all(np.diff(alive) < 0)
    assert np.all((alive > 0) & (alive <= 1))


def test_expected_purchases_grow_with_the_horizon(bg: BgNbdParams) -> None:
    horizons = np.array([0.0, 1.0, 4.0, 13.0, 39.0, 52.0, 520.0])
    expected = expected_purchases(bg, horizons, 2, 30.43, 38.86)
    assert expected[0] == 0.0
    assert np.all(np.diff(expected) > 0)


def test_heavy_buyers_and_long_histories_stay_finite(bg: BgNbdParams) -> None:
    x = np.array([0, 1, 50, 1000, 5000])
    tx = np.array([0.0, 0.5, 3000.0, 9000.0, 9999.0])
    age = np.full(5, 10_000.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value warnings either
        alive = p_alive(bg, x, tx, age)
        expected = expected_purchases(bg, 520.0, x, tx, age)
        value = clv(bg, GammaGammaParams(6.25, 3.74, 15.44, 0.0, 0), x, tx, age, np.full(5, 20.0))
    assert np.all(np.isfinite(alive)) and np.all(np.isfinite(expected)) and np.all(np.isfinite(value))
    assert np.all(expected >= 0)


@pytest.mark.parametrize(("a", "b", "x"), [(1.0, 2.0, 3), (0.4, 0.6, 0)])
def test_expected_purchases_is_continuous_through_removable_singularities(a: float, b: float, x: int) -> None:
    # a = 1 divides by a - 1; a + b = 1 with x = 0 puts c = 0 into the hypergeometric function.
    def at(shift: float) -> float:
        params = BgNbdParams(0.5, 10.0, a + shift, b, 0.0, 0)
        return float(expected_purchases(params, 52.0, x, 20.0 if x else 0.0, 40.0))

    exact = at(0.0)
    assert np.isfinite(exact) and exact > 0
    assert at(-1e-4) == pytest.approx(exact, rel=1e-3)
    assert at(1e-4) == pytest.approx(exact, rel=1e-3)
    assert at(5e-7) == pytest.approx(exact, rel=1e-5)


def test_expected_purchases_when_a_plus_b_is_below_one() -> None:
    # x = 0 and a + b < 1: the transformed 2F1 is negative. Reference from 50-digit mpmath.
    params = BgNbdParams(0.3, 5.0, 0.3, 0.5, 0.0, 0)
    assert expected_purchases(params, 100.0, 0, 0.0, 5.0) == pytest.approx(1.5525428971346287, rel=1e-8)


def test_time_unit_only_rescales_alpha(cdnow: pd.DataFrame, bg: BgNbdParams) -> None:
    in_days = fit_bg_nbd(cdnow["x"], cdnow["t_x"] * 7.0, cdnow["T"] * 7.0)
    assert in_days.alpha == pytest.approx(bg.alpha * 7.0, rel=1e-5)
    for name in ("r", "a", "b"):
        assert getattr(in_days, name) == pytest.approx(getattr(bg, name), rel=1e-5)
    # Predictions agree when the horizon is converted too.
    assert expected_purchases(in_days, 39 * 7, 2, 30.43 * 7, 38.86 * 7) == pytest.approx(
        expected_purchases(bg, 39, 2, 30.43, 38.86), rel=1e-5
    )


def test_loglik_gradients_match_finite_differences(cdnow: pd.DataFrame) -> None:
    data = churn._rfm_data(*(cdnow[c].to_numpy(float) for c in ("x", "t_x", "T")), np.ones(len(cdnow)))
    theta = np.log([0.3, 0.1, 0.7, 2.0])
    analytic = churn._bg_nbd_loglik(theta, data)[1]
    numeric = approx_fprime(theta, lambda t: churn._bg_nbd_loglik(t, data)[0], 1e-7)
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-3)

    repeat = cdnow["x"].to_numpy(float) > 0
    spend = churn._spend_data(
        cdnow["x"].to_numpy(float)[repeat],
        cdnow["zbar"].to_numpy(float)[repeat] / 30.0,
        np.ones(repeat.sum()),
    )
    theta = np.log([5.0, 3.0, 0.5])
    analytic = churn._gamma_gamma_loglik(theta, spend)[1]
    numeric = approx_fprime(theta, lambda t: churn._gamma_gamma_loglik(t, spend)[0], 1e-7)
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-3)


def test_expected_order_value_shrinks_towards_the_population_mean(gg: GammaGammaParams) -> None:
    population_mean = gg.p * gg.v / (gg.q - 1.0)
    values = expected_order_value(gg, [0, 1, 10, 1000], [0.0, 100.0, 100.0, 100.0])
    assert values[0] == pytest.approx(population_mean)
    assert population_mean < values[1] < values[2] < values[3] < 100.0
    assert values[3] == pytest.approx(100.0, rel=0.01)


def test_clv_is_discounted_monthly_purchases_times_order_value(bg: BgNbdParams, gg: GammaGammaParams) -> None:
    x, tx, age, m = 2, 30.43, 38.86, 25.0
    month_in_weeks = churn.DAYS_PER_MONTH / 7.0
    undiscounted = clv(bg, gg, x, tx, age, m, months=12, time_unit_days=7.0, monthly_discount=0.0)
    assert undiscounted == pytest.approx(
        expected_purchases(bg, 12 * month_in_weeks, x, tx, age) * expected_order_value(gg, x, m)
    )
    one_month = clv(bg, gg, x, tx, age, m, months=1, time_unit_days=7.0, monthly_discount=0.01)
    assert one_month == pytest.approx(
        expected_purchases(bg, month_in_weeks, x, tx, age) * expected_order_value(gg, x, m) / 1.01
    )
    discounted = clv(bg, gg, x, tx, age, m, months=12, time_unit_days=7.0, monthly_discount=0.01)
    assert one_month < discounted < undiscounted


# ------------------------------------------------------------------------------ weights


def test_aggregated_triples_fit_like_raw_rows(cdnow: pd.DataFrame, bg: BgNbdParams) -> None:
    triples = cdnow.groupby(["x", "t_x", "T"]).size().rename("n").reset_index()
    assert len(triples) < len(cdnow)
    aggregated = fit_bg_nbd(triples["x"], triples["t_x"], triples["T"], weights=triples["n"])
    assert aggregated.customers == bg.customers
    assert aggregated.log_likelihood == pytest.approx(bg.log_likelihood, rel=1e-10)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(aggregated, name) == pytest.approx(getattr(bg, name), rel=1e-5), name


def test_weighted_gamma_gamma_fits_like_repeated_rows(cdnow: pd.DataFrame) -> None:
    rows = cdnow[cdnow["x"] > 0].head(300)
    counts = np.arange(len(rows)) % 3 + 1
    repeated = rows.loc[rows.index.repeat(counts)]
    weighted = fit_gamma_gamma(rows["x"], rows["zbar"], weights=counts)
    raw = fit_gamma_gamma(repeated["x"], repeated["zbar"])
    assert weighted.customers == raw.customers == counts.sum()
    for name in ("p", "q", "v", "log_likelihood"):
        assert getattr(weighted, name) == pytest.approx(getattr(raw, name), rel=1e-5), name


def test_recovers_simulated_parameters() -> None:
    rng = np.random.default_rng(7)
    n = 50_000
    age = rng.integers(0, 731, size=n).astype(float)
    possible = rng.poisson(rng.gamma(0.5, 1 / 20.0, size=n) * age)
    x = np.minimum(possible, rng.geometric(rng.beta(1.2, 3.0, size=n)))
    tx = np.zeros(n)
    tx[x > 0] = age[x > 0] * rng.beta(x[x > 0], possible[x > 0] - x[x > 0] + 1)
    fitted = fit_bg_nbd(x, tx, age)
    assert fitted.r == pytest.approx(0.5, rel=0.1)
    assert fitted.alpha == pytest.approx(20.0, rel=0.1)
    assert fitted.a == pytest.approx(1.2, rel=0.2)
    assert fitted.b == pytest.approx(3.0, rel=0.2)


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "message"),
    [
        ([1, -1, 0], [1, 1, 0], [5, 5, 5], r"frequency must be >= 0 at index 1: -1\.0"),
        ([1, 1.5, 0], [1, 1, 0], [5, 5, 5], r"frequency must be a whole number .* at index 1: 1\.5"),
        ([1, 2, 0], [1, -2, 0], [5, 5, 5], r"recency must be >= 0 at index 1: -2\.0"),
        ([1, 2, 0], [1, 2, 0], [5, 5, -5], r"T must be >= 0 at index 2: -5\.0"),
        ([1, 2, 3], [1, 2, 7.5], [5, 5, 5], r"recency must be <= T at index 2: 7\.5"),
        ([1, 0, 0], [1, 0, 3], [5, 5, 5], r"recency must be 0 when frequency is 0 at index 2: 3\.0"),
        ([1, np.nan, 0], [1, 1, 0], [5, 5, 5], r"frequency must be finite, got NaN or inf at index 1: nan"),
        ([1, 1, 0], [1, 1, 0], [5, np.inf, 5], r"T must be finite, got NaN or inf at index 1: inf"),
        ([1, 1], [1, 1, 0], [5, 5, 5], r"must have the same shape"),
    ],
)
def test_fit_bg_nbd_rejects_bad_rows(frequency: list, recency: list, T: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_bg_nbd(frequency, recency, T)


def test_prediction_functions_validate_too(bg: BgNbdParams) -> None:
    with pytest.raises(ValueError, match=r"recency must be <= T at index 0: 9\.0"):
        p_alive(bg, [1], [9.0], [5.0])
    with pytest.raises(ValueError, match=r"t must be >= 0 at index 0: -1\.0"):
        expected_purchases(bg, -1.0, 1, 1.0, 5.0)


def test_weights_and_degenerate_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"weights must be >= 0 at index 1: -3\.0"):
        fit_bg_nbd([1, 0], [1, 0], [2, 2], weights=[1, -3])
    with pytest.raises(ValueError, match=r"weights must have shape \(2,\)"):
        fit_bg_nbd([1, 0], [1, 0], [2, 2], weights=[1, 2, 3])
    with pytest.raises(ValueError, match="no customer has a repeat purchase"):
        fit_bg_nbd([0, 0], [0, 0], [2, 3])


def test_gamma_gamma_validation(gg: GammaGammaParams) -> None:
    with pytest.raises(ValueError, match=r"monetary_value must be > 0 when frequency > 0 at index 1: 0\.0"):
        fit_gamma_gamma([2, 1, 0], [10.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"monetary_value must be finite, got NaN or inf at index 0: nan"):
        fit_gamma_gamma([2], [np.nan])
    with pytest.raises(ValueError, match="no customer with frequency > 0"):
        fit_gamma_gamma([0, 0], [0.0, 0.0])
    with pytest.raises(ValueError, match="q > 1"):
        expected_order_value(GammaGammaParams(1.0, 0.9, 1.0, 0.0, 0), [1], [10.0])


def test_degenerate_samples_warn_instead_of_failing_silently() -> None:
    with pytest.raises(ValueError, match="every T is 0"):
        fit_bg_nbd([0, 1], [0, 0], [0, 0])
    # Identical spend everywhere: no heterogeneity, so p and q run off to infinity.
    with pytest.warns(RuntimeWarning, match="do not identify the model"):
        fit_gamma_gamma([1, 2, 3, 1], [10.0, 10.0, 10.0, 10.0])
