"""Gamma-Gamma fit against the published CDNOW values, a numeric posterior, simulation and its properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.optimize import check_grad
from scipy.stats import gamma

from pipeline.gammagamma import (
    GammaGamma,
    _objective,
    conditional_expected_spend,
    fit_gammagamma,
    log_likelihood,
    population_mean_spend,
)
from tests.conftest import lifetimes_dataset

# Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary Value": the 946 CDNOW repeat customers.
PUBLISHED = GammaGamma(p=6.25, q=3.74, v=15.44)


def _cdnow_repeaters() -> pd.DataFrame:
    """CDNOW repeat customers' (x, mean repeat spend), from the `lifetimes` package's data files (never imported)."""
    path = lifetimes_dataset("cdnow_customers_summary_with_transactions.csv")
    df = pd.read_csv(path)
    return df[df["x"] > 0]


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return _cdnow_repeaters()


@pytest.fixture(scope="module")
def cdnow_fit(cdnow: pd.DataFrame) -> GammaGamma:
    return fit_gammagamma(cdnow["x"], cdnow["zbar"])


def test_fit_reproduces_published_cdnow_parameters(cdnow: pd.DataFrame, cdnow_fit: GammaGamma) -> None:
    assert len(cdnow) == 946
    assert cdnow_fit.p == pytest.approx(PUBLISHED.p, abs=0.01)
    assert cdnow_fit.q == pytest.approx(PUBLISHED.q, abs=0.01)
    assert cdnow_fit.v == pytest.approx(PUBLISHED.v, abs=0.01)
    # the fit is the maximum: the rounded published values score no better
    fitted, published = (log_likelihood(f, cdnow["x"], cdnow["zbar"]).sum() for f in (cdnow_fit, PUBLISHED))
    assert fitted >= published


def test_gradient_matches_finite_differences(cdnow: pd.DataFrame) -> None:
    x, m = cdnow["x"].to_numpy(float), cdnow["zbar"].to_numpy(float)
    w = np.ones_like(x)
    for penalizer in (0.0, 0.1):
        f = lambda z, pen=penalizer: _objective(z, x, m, w, pen)[0]  # noqa: E731
        g = lambda z, pen=penalizer: _objective(z, x, m, w, pen)[1]  # noqa: E731
        assert check_grad(f, g, np.log([2.0, 3.0, 10.0])) < 1e-5


def test_weights_equal_repeated_rows_and_penalizer_shrinks(cdnow: pd.DataFrame, cdnow_fit: GammaGamma) -> None:
    head = cdnow.head(300)
    doubled = fit_gammagamma(np.r_[head["x"], head["x"]], np.r_[head["zbar"], head["zbar"]])
    weighted = fit_gammagamma(head["x"], head["zbar"], weights=2.0)
    assert weighted.p == pytest.approx(doubled.p, rel=1e-5) and weighted.q == pytest.approx(doubled.q, rel=1e-5)
    shrunk = fit_gammagamma(cdnow["x"], cdnow["zbar"], penalizer=0.1)
    assert abs(np.log(shrunk.p)) < abs(np.log(cdnow_fit.p)) and abs(np.log(shrunk.q)) < abs(np.log(cdnow_fit.q))
    assert fit_gammagamma(cdnow["x"], cdnow["zbar"]) == cdnow_fit  # deterministic


def test_fit_recovers_simulated_parameters() -> None:
    truth = GammaGamma(p=4.0, q=5.0, v=60.0)
    rng = np.random.default_rng(3)
    n = 4000
    nu = rng.gamma(truth.q, 1.0 / truth.v, n)
    x = rng.integers(1, 8, n)
    m = np.array([rng.gamma(truth.p, 1.0 / nu_i, k).mean() for nu_i, k in zip(nu, x, strict=True)])
    fit = fit_gammagamma(x, m)
    assert fit.p == pytest.approx(truth.p, rel=0.1)
    assert population_mean_spend(fit) == pytest.approx(population_mean_spend(truth), rel=0.05)


def test_conditional_spend_matches_a_numeric_posterior_mean() -> None:
    params = PUBLISHED
    for x, m in ((1, 10.0), (3, 50.0), (12, 25.0)):
        # nu ~ Gamma(q, rate v); m | nu ~ Gamma(p x, rate nu x); E[spend | nu] = p / nu
        def joint(nu: float, weight: float, x: int = x, m: float = m) -> float:
            prior = gamma.pdf(nu, params.q, scale=1 / params.v)
            return weight(nu) * prior * gamma.pdf(m, params.p * x, scale=1 / (nu * x))

        num = quad(joint, 0, np.inf, args=(lambda nu: params.p / nu,))[0]
        den = quad(joint, 0, np.inf, args=(lambda nu: 1.0,))[0]
        assert conditional_expected_spend(params, x, m) == pytest.approx(num / den, rel=1e-6)


def test_population_mean_for_customers_without_transactions() -> None:
    out = conditional_expected_spend(PUBLISHED, [0, 0], [0.0, 99.0])
    assert out == pytest.approx([population_mean_spend(PUBLISHED)] * 2)
    assert population_mean_spend(PUBLISHED) == pytest.approx(6.25 * 15.44 / 2.74)


@settings(max_examples=200, deadline=None)
@given(
    p=st.floats(0.1, 50),
    q=st.floats(1.01, 50),
    v=st.floats(0.01, 1e4),
    x=st.integers(0, 500),
    m=st.floats(0, 1e5),
)
def test_conditional_spend_lies_between_population_and_own_mean(p: float, q: float, v: float, x: int, m: float) -> None:
    params = GammaGamma(p, q, v)
    out = float(conditional_expected_spend(params, x, m))
    pop = population_mean_spend(params)
    lo, hi = min(pop, m), max(pop, m)
    assert lo * (1 - 1e-9) <= out <= hi * (1 + 1e-9)


def test_invalid_input_and_infinite_mean_are_rejected() -> None:
    with pytest.raises(ValueError, match="no customer"):
        fit_gammagamma([0, 0], [5.0, 5.0])
    with pytest.raises(ValueError, match="finite"):
        fit_gammagamma([1, 2], [np.nan, 5.0])
    with pytest.raises(ValueError, match=">= 0"):
        fit_gammagamma([1, 2], [-1.0, 5.0])
    with pytest.raises(ValueError, match="penalizer"):
        fit_gammagamma([1, 2], [1.0, 5.0], penalizer=-1)
    with pytest.raises(ValueError, match="infinite"):
        conditional_expected_spend(GammaGamma(1.0, 0.8, 1.0), 1, 1.0)


def test_identical_spend_is_degenerate() -> None:
    # everyone spends exactly the same: no spread between customers, the fit runs off to the bounds
    with pytest.raises(ValueError, match="degenerate|converge"):
        fit_gammagamma(np.arange(1, 41), np.full(40, 20.0))
