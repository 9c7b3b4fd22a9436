"""BG/NBD fit and predictions against the published CDNOW values, numeric references and simulation; RFM scores."""

from __future__ import annotations

import warnings
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import IntegrationWarning, quad
from scipy.optimize import OptimizeResult
from scipy.special import betaln

from pipeline.bgnbd import (
    BGNBD,
    expected_purchases,
    expected_purchases_if_alive,
    fit_bgnbd,
    log_likelihood,
    p_alive,
    p_no_purchase,
)
from pipeline.rfm import RFM_FEATURES, churn_score_from_rfm, rfm_scores
from tests.conftest import lifetimes_dataset

# Fader, Hardie & Lee (2005), CDNOW 2,357-customer sample, 39-week calibration period.
PUBLISHED = BGNBD(r=0.243, alpha=4.414, a=0.793, b=2.426)
PUBLISHED_LL = -9582.4
CDNOW_LIKE = BGNBD(r=0.25, alpha=4.4, a=0.79, b=2.4)


def _cdnow_summary() -> pd.DataFrame:
    """The CDNOW sample's (x, t_x, T) in weeks, from the `lifetimes` package's data files (never imported)."""
    path = lifetimes_dataset("cdnow_customers_summary.csv")
    return pd.read_csv(path)


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return _cdnow_summary()


@pytest.fixture(scope="module")
def cdnow_fit(cdnow: pd.DataFrame) -> BGNBD:
    return fit_bgnbd(cdnow["frequency"], cdnow["recency"], cdnow["T"])


def simulate(params: BGNBD, T: np.ndarray, horizon: float, seed: int) -> pd.DataFrame:
    """BG/NBD generative process from each first purchase: (x, t_x) in (0, T] and purchases in (T, T + horizon]."""
    rng = np.random.default_rng(seed)
    n = T.size
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    x, t_x, future = np.zeros(n), np.zeros(n), np.zeros(n)
    now, active = np.zeros(n), np.ones(n, dtype=bool)
    while active.any():
        now[active] += rng.exponential(1.0 / lam[active])
        active &= now <= T + horizon
        calib, hold = active & (now <= T), active & (now > T)
        x[calib] += 1
        t_x[calib] = now[calib]
        future[hold] += 1
        active &= rng.random(n) >= p  # drop out after a purchase with probability p
    return pd.DataFrame({"x": x, "t_x": t_x, "T": T, "future": future})


# ---------------------------------------------------------------- CDNOW regression (published values)


def test_fit_reproduces_published_cdnow_parameters(cdnow: pd.DataFrame, cdnow_fit: BGNBD) -> None:
    assert len(cdnow) == 2357
    assert cdnow_fit.r == pytest.approx(PUBLISHED.r, abs=0.005)
    assert cdnow_fit.alpha == pytest.approx(PUBLISHED.alpha, abs=0.02)
    assert cdnow_fit.a == pytest.approx(PUBLISHED.a, abs=0.005)
    assert cdnow_fit.b == pytest.approx(PUBLISHED.b, abs=0.005)


def test_log_likelihood_matches_published_value(cdnow: pd.DataFrame, cdnow_fit: BGNBD) -> None:
    x, t_x, T = cdnow["frequency"], cdnow["recency"], cdnow["T"]
    ll = log_likelihood(PUBLISHED, x, t_x, T)
    assert ll.shape == (2357,) and np.isfinite(ll).all()
    assert ll.sum() == pytest.approx(PUBLISHED_LL, abs=0.5)
    # the optimum is at least as good as the rounded published parameters
    assert log_likelihood(cdnow_fit, x, t_x, T).sum() >= ll.sum() - 1e-9


def test_weighted_fit_on_collapsed_rows_equals_the_row_level_fit(cdnow: pd.DataFrame, cdnow_fit: BGNBD) -> None:
    grouped = cdnow.groupby(["frequency", "recency", "T"]).size().reset_index(name="n")
    assert len(grouped) < len(cdnow)
    fit = fit_bgnbd(grouped["frequency"], grouped["recency"], grouped["T"], weights=grouped["n"])
    for got, want in zip(
        (fit.r, fit.alpha, fit.a, fit.b), (cdnow_fit.r, cdnow_fit.alpha, cdnow_fit.a, cdnow_fit.b), strict=True
    ):
        assert got == pytest.approx(want, rel=1e-5)
    # a weight of 2 is the same as the row appearing twice
    x, t_x, T = (cdnow[c].to_numpy() for c in ("frequency", "recency", "T"))
    doubled = fit_bgnbd(np.r_[x, x[:500]], np.r_[t_x, t_x[:500]], np.r_[T, T[:500]])
    weighted = fit_bgnbd(x, t_x, T, weights=np.r_[np.full(500, 2.0), np.ones(len(x) - 500)])
    assert weighted.r == pytest.approx(doubled.r, rel=1e-6) and weighted.b == pytest.approx(doubled.b, rel=1e-6)
    assert abs(weighted.r - cdnow_fit.r) > 1e-4  # and it does change the fit


def test_fit_is_deterministic_and_penalizer_shrinks(cdnow: pd.DataFrame, cdnow_fit: BGNBD) -> None:
    x, t_x, T = cdnow["frequency"], cdnow["recency"], cdnow["T"]
    assert fit_bgnbd(x, t_x, T) == cdnow_fit
    shrunk = fit_bgnbd(x, t_x, T, penalizer=0.01)

    def ridge(p: BGNBD) -> float:
        return float(np.sum(np.log([p.r, p.a, p.b]) ** 2))

    # the ridge on log r, log a, log b trades likelihood for parameters closer to 1
    assert ridge(shrunk) < ridge(cdnow_fit) - 0.1
    assert log_likelihood(shrunk, x, t_x, T).sum() < log_likelihood(cdnow_fit, x, t_x, T).sum()


# ---------------------------------------------------------------- input checks


def test_fit_rejects_empty_and_invalid_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        fit_bgnbd([], [], [])
    with pytest.raises(ValueError, match="must not exceed T"):
        fit_bgnbd([1, 2], [5.0, 3.0], [4.0, 4.0])
    with pytest.raises(ValueError, match="finite"):
        fit_bgnbd([1, np.nan], [1.0, 1.0], [4.0, 4.0])
    with pytest.raises(ValueError, match="weights"):
        fit_bgnbd([1, 2], [1.0, 3.0], [4.0, 4.0], weights=[0, 0])


def test_fit_raises_when_the_data_do_not_identify_the_model() -> None:
    T = np.full(200, 52.0)
    with pytest.raises(ValueError, match="no repeat purchases"):
        fit_bgnbd(np.zeros(200), np.zeros(200), T)
    # everyone bought at the same steady pace right up to T: no sign of dropout nor of rate heterogeneity
    x = np.random.default_rng(0).poisson(20, 200)
    with pytest.raises(ValueError, match="degenerate.*penalizer"):
        fit_bgnbd(x, T, T)
    fit = fit_bgnbd(x, T, T, penalizer=0.01)  # the suggested remedy works and predicts sensibly
    assert p_alive(fit, 20, 52.0, 52.0) > 0.9
    assert float(expected_purchases(fit, 52.0, 20, 52.0, 52.0)) == pytest.approx(x.mean(), rel=0.25)


def test_fit_reports_non_convergence(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.bgnbd as bgnbd

    def result(fun: float, success: bool):
        def fake_minimize(objective, x0, **_: object) -> OptimizeResult:
            return OptimizeResult(x=x0, fun=fun, jac=np.full(4, 0.1), success=success, message="ABNORMAL")

        return fake_minimize

    history = ([1, 2, 0], [1.0, 3.0, 0.0], [4.0, 4.0, 4.0])
    monkeypatch.setattr(bgnbd, "minimize", result(np.nan, False))
    with pytest.raises(ValueError, match="did not converge from any starting point"):
        fit_bgnbd(*history)
    monkeypatch.setattr(bgnbd, "minimize", result(1.0, False))
    with pytest.raises(ValueError, match=r"did not converge \(ABNORMAL\)"):
        fit_bgnbd(*history)
    monkeypatch.setattr(bgnbd, "minimize", result(1.0, True))
    assert fit_bgnbd(*history).r == pytest.approx(1.0)  # the first start, r = 1


# ---------------------------------------------------------------- p_alive, p_no_purchase


def test_p_alive_is_one_without_repeat_purchases_and_bounded() -> None:
    assert p_alive(CDNOW_LIKE, [0, 0], [0.0, 0.0], [1.0, 80.0]).tolist() == [1.0, 1.0]
    x = np.array([1, 2, 5, 20, 50, 1, 3])
    t_x = np.array([1.0, 30.0, 5.0, 38.0, 1.0, 38.9, 0.1])
    pa = p_alive(CDNOW_LIKE, x, t_x, np.full(7, 39.0))
    assert ((pa >= 0) & (pa <= 1)).all()
    assert pa[4] < 1e-6  # 50 purchases in the first week, then 38 weeks of silence
    assert pa[3] > 0.9  # many purchases, the last one recent
    assert pa[5] > pa[0]  # the same single repeat purchase, but recent
    assert pa[5] == pytest.approx(1 / (1 + 0.79 / 2.4 * ((4.4 + 39) / (4.4 + 38.9)) ** 1.25))


def test_p_alive_decreases_as_the_silence_grows() -> None:
    T = np.linspace(5.0, 200.0, 40)
    pa = p_alive(CDNOW_LIKE, 3, 5.0, T)
    assert pa.shape == T.shape
    assert (np.diff(pa) < 0).all()
    assert pa[0] == pytest.approx(1 / (1 + CDNOW_LIKE.a / (CDNOW_LIKE.b + 2)))  # t_x == T: only the dropout odds


def test_p_no_purchase_is_a_probability_decreasing_in_t() -> None:
    t = np.linspace(0.0, 300.0, 61)
    for x, t_x, T in [(0, 0.0, 39.0), (2, 30.0, 39.0), (10, 5.0, 39.0), (1, 38.0, 39.0)]:
        p = p_no_purchase(CDNOW_LIKE, t, x, t_x, T)
        assert ((p >= 0) & (p <= 1)).all()
        assert p[0] == 1.0
        assert (np.diff(p) < 0).all()
        # it tends to P(dead), never below it
        assert p[-1] >= 1 - p_alive(CDNOW_LIKE, x, t_x, T) - 1e-12


def test_p_no_purchase_closed_form() -> None:
    x, t_x, T, t = np.array([0, 4]), np.array([0.0, 20.0]), np.array([30.0, 39.0]), 13.0
    pa = p_alive(CDNOW_LIKE, x, t_x, T)
    silent = ((CDNOW_LIKE.alpha + T) / (CDNOW_LIKE.alpha + T + t)) ** (CDNOW_LIKE.r + x)
    np.testing.assert_allclose(p_no_purchase(CDNOW_LIKE, t, x, t_x, T), 1 - pa + pa * silent, rtol=1e-12)


# ---------------------------------------------------------------- expected_purchases


def _expected_by_integration(params: BGNBD, t: float, x: int, t_x: float, T: float) -> float:
    """P(alive) * E[(1 - E[exp(-lambda p t)]) / p] for p ~ Beta(a, b + x), lambda ~ Gamma(r + x, alpha + T), by quad."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    k = t / (alpha + T)

    def integrand(u: float) -> float:  # over u = log p: smooth, and the density needs no special endpoints
        p = np.exp(u)
        if p == 0.0:
            return 0.0
        given_p = -np.expm1(-(r + x) * np.log1p(p * k)) / p  # purchases in t given p, averaged over lambda
        return given_p * np.exp(a * u + (b + x - 1) * np.log1p(-p) - betaln(a, b + x))

    mode = np.log(a / (a + b + x))
    inner = sorted(e for e in {-2000.0, -500.0, -100.0, -20.0, mode - 5, mode, mode + 2, -np.log1p(k), -1e-3} if e < 0)
    edges = [-np.inf, *inner, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntegrationWarning)
        val = sum(quad(integrand, lo, hi, epsabs=0, epsrel=1e-12, limit=500)[0] for lo, hi in pairwise(edges))
    return float(p_alive(params, x, t_x, T)) * val


@pytest.mark.parametrize(
    "params",
    [
        CDNOW_LIKE,  # a < 1: the Euler-transformed 2F1 (the direct one overflows for large x)
        BGNBD(r=0.5, alpha=6.0, a=3.5, b=4.0),  # a > 1 + r + x for small x: the direct 2F1; and c - a - b integer
        BGNBD(r=2.0, alpha=10.0, a=1.0, b=3.0),  # a == 1: the removable singularity
        BGNBD(r=0.8, alpha=2.0, a=1.0 + 3e-6, b=0.9),
        BGNBD(r=0.57, alpha=79.0, a=0.064, b=42.9),  # a tiny, b large
    ],
)
def test_expected_purchases_matches_numerical_integration(params: BGNBD) -> None:
    cases = [(0, 0.0, 39.0), (1, 2.0, 39.0), (3, 35.0, 39.0), (12, 20.0, 52.0), (40, 51.0, 52.0), (200, 50.0, 52.0)]
    cases.append((1000, 51.5, 52.0))
    for t in (0.5, 10.0, 39.0, 500.0, 1e5):
        for x, t_x, T in cases:
            got = float(expected_purchases(params, t, x, t_x, T))
            want = _expected_by_integration(params, t, x, t_x, T)
            assert got == pytest.approx(want, rel=1e-6), (params, t, x, t_x, T)


def test_expected_purchases_matches_monte_carlo_for_one_history() -> None:
    # draw (alive, lambda, p) from the posterior given the history, then simulate purchases in (T, T + t]
    rng = np.random.default_rng(20050101)
    n, (x, t_x, T), t = 400_000, (4, 30.0, 39.0), 26.0
    prm = CDNOW_LIKE
    alive = rng.random(n) < p_alive(prm, x, t_x, T)
    lam = rng.gamma(prm.r + x, 1.0 / (prm.alpha + T), n)
    p = rng.beta(prm.a, prm.b + x, n)
    purchases_until_dropout = rng.geometric(p)
    simulated = np.where(alive, np.minimum(rng.poisson(lam * t), purchases_until_dropout), 0)
    assert float(expected_purchases(prm, t, x, t_x, T)) == pytest.approx(simulated.mean(), rel=0.02)
    no_purchase = float(p_no_purchase(prm, t, x, t_x, T))
    assert no_purchase == pytest.approx((simulated == 0).mean(), abs=0.005)


def test_expected_purchases_is_zero_at_zero_and_increasing() -> None:
    t = np.linspace(0.0, 520.0, 105)
    for x, t_x, T in [(0, 0.0, 39.0), (2, 30.0, 39.0), (10, 5.0, 39.0), (25, 38.5, 39.0)]:
        e = expected_purchases(CDNOW_LIKE, t, x, t_x, T)
        assert e.shape == t.shape
        assert e[0] == 0.0
        assert (np.diff(e) > 0).all()
    # a recent, frequent buyer is expected to buy more than a lapsed one with the same count
    lapsed, recent = expected_purchases(CDNOW_LIKE, 39.0, [10, 10], [5.0, 38.0], [39.0, 39.0])
    assert recent > 3 * lapsed


@pytest.mark.parametrize(
    "params",
    [CDNOW_LIKE, BGNBD(r=0.5, alpha=6.0, a=3.5, b=4.0), BGNBD(r=2.0, alpha=10.0, a=1.0, b=3.0)],
)
def test_expected_purchases_is_p_alive_times_the_if_alive_expectation(params: BGNBD) -> None:
    rng = np.random.default_rng(31)
    n = 2000
    T = rng.uniform(0.5, 104.0, n)
    x = np.where(rng.random(n) < 0.3, 0, rng.integers(1, 60, n)).astype(float)
    t_x = np.where(x > 0, rng.uniform(0, 1, n) * T, 0.0)
    t = rng.choice([0.0, 1.0, 13.0, 52.0, 520.0], n)
    unconditional = expected_purchases(params, t, x, t_x, T)
    if_alive = expected_purchases_if_alive(params, t, x, t_x, T)
    assert if_alive.shape == (n,) and np.isfinite(if_alive).all()
    np.testing.assert_allclose(unconditional, p_alive(params, x, t_x, T) * if_alive, rtol=1e-12, atol=0)
    assert (if_alive >= unconditional).all()
    assert (if_alive[t == 0] == 0).all() and (if_alive[t > 0] > 0).all()
    # without a repeat purchase nobody has dropped out yet: both are the same
    np.testing.assert_array_equal(if_alive[x == 0], unconditional[x == 0])
    # the if-alive value ignores the silence; the unconditional one decays with it
    lapsed, recent = (expected_purchases_if_alive(params, 39.0, 10, t_x, 39.0) for t_x in (5.0, 38.0))
    assert lapsed == recent
    assert expected_purchases(params, 39.0, 10, 5.0, 39.0) < lapsed
    # scalars in, 0-d out, and the same validation as expected_purchases
    assert np.shape(expected_purchases_if_alive(params, 10.0, 2, 5.0, 39.0)) == ()
    with pytest.raises(ValueError, match="t must be"):
        expected_purchases_if_alive(params, -1.0, 2, 5.0, 39.0)
    with pytest.raises(ValueError, match="must not exceed"):
        expected_purchases_if_alive(params, 1.0, 2, 50.0, 39.0)


def test_predictions_agree_with_the_simulated_holdout() -> None:
    # law of total expectation: over the population, predictions given each history match realised holdout counts
    rng = np.random.default_rng(7)
    sim = simulate(CDNOW_LIKE, T=rng.uniform(27.0, 39.0, 40_000), horizon=39.0, seed=11)
    expected = expected_purchases(CDNOW_LIKE, 39.0, sim["x"], sim["t_x"], sim["T"])
    assert expected.sum() == pytest.approx(sim["future"].sum(), rel=0.04)
    p0 = p_no_purchase(CDNOW_LIKE, 39.0, sim["x"], sim["t_x"], sim["T"])
    assert p0.mean() == pytest.approx((sim["future"] == 0).mean(), abs=0.01)
    for k in (0, 1, 2):  # also within groups of equal repeat count
        g = sim["x"].to_numpy() == k
        assert expected[g].mean() == pytest.approx(sim["future"][g].mean(), rel=0.1)


# ---------------------------------------------------------------- parameter recovery


def test_fit_recovers_parameters_of_simulated_data() -> None:
    truth = BGNBD(r=0.5, alpha=6.0, a=0.7, b=3.0)
    rng = np.random.default_rng(2024)
    sim = simulate(truth, T=rng.uniform(26.0, 78.0, 5000), horizon=0.0, seed=2025)
    fit = fit_bgnbd(sim["x"], sim["t_x"], sim["T"])
    assert fit.r == pytest.approx(truth.r, rel=0.15)
    assert fit.alpha == pytest.approx(truth.alpha, rel=0.2)
    assert fit.a == pytest.approx(truth.a, rel=0.3)
    assert fit.b == pytest.approx(truth.b, rel=0.35)
    # the better-determined means: of the purchase rate (r / alpha) and of the dropout probability (a / (a + b))
    assert fit.r / fit.alpha == pytest.approx(truth.r / truth.alpha, rel=0.1)
    assert fit.a / (fit.a + fit.b) == pytest.approx(truth.a / (truth.a + truth.b), rel=0.12)
    ll_fit = log_likelihood(fit, sim["x"], sim["t_x"], sim["T"]).sum()
    assert ll_fit >= log_likelihood(truth, sim["x"], sim["t_x"], sim["T"]).sum()


# ---------------------------------------------------------------- RFM


def test_rfm_scores_on_a_hand_made_example_with_ties_and_nans() -> None:
    idx = pd.Index(["u1", "u2", "u3", "u4", "u5", "u6"], name="user_id")
    scores = rfm_scores(
        pd.Series([1.0, 5.0, 5.0, np.nan, 30.0, 2.0], index=idx),  # NaN = never bought: worst
        [3, 1, 1, np.nan, 1, 10],  # NaN frequency = 0
        [100.0, 20.0, np.nan, 0.0, 20.0, 500.0],  # NaN monetary = 0, tied with the real 0
    )
    assert scores.index.equals(idx)
    assert scores["R"].tolist() == [5, 3, 3, 1, 2, 4]
    assert scores["F"].tolist() == [4, 3, 3, 1, 3, 5]
    assert scores["M"].tolist() == [4, 3, 1, 1, 3, 5]
    assert scores["rfm_score"].tolist() == [13, 9, 7, 3, 8, 14]
    np.testing.assert_allclose(churn_score_from_rfm(scores), np.array([2, 6, 8, 12, 7, 1]) / 12)


def test_rfm_quintiles_are_equal_sized_without_ties_and_shared_under_ties() -> None:
    scores = rfm_scores(np.arange(10.0), np.arange(10), np.arange(10.0)[::-1])
    assert scores["R"].tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert scores["F"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert scores["M"].tolist() == scores["R"].tolist()
    # heavy ties: everyone equal is neutral (3); a tied majority shares one score, independent of row order
    assert set(rfm_scores([7.0] * 4, [1] * 4, [0.0] * 4)["F"]) == {3}
    freq = np.array([1] * 8 + [2, 5])
    f = rfm_scores(np.zeros(10), freq, np.zeros(10))["F"].to_numpy()
    assert f.tolist() == [3] * 8 + [5, 5]
    perm = np.random.default_rng(0).permutation(10)
    assert rfm_scores(np.zeros(10), freq[perm], np.zeros(10))["F"].tolist() == f[perm].tolist()


def test_rfm_bounds_and_validation() -> None:
    rng = np.random.default_rng(3)
    scores = rfm_scores(rng.exponential(30, 1000), rng.poisson(3, 1000), rng.gamma(2, 50, 1000), bins=4)
    assert scores[["R", "F", "M"]].isin([1, 2, 3, 4]).all().all()
    assert scores["rfm_score"].between(3, 12).all()
    churn = churn_score_from_rfm(scores, bins=4)
    assert churn.min() >= 0 and churn.max() <= 1
    assert churn_score_from_rfm(np.array([3, 15])).tolist() == [1.0, 0.0]
    assert rfm_scores([], [], []).empty
    with pytest.raises(ValueError, match="lengths differ"):
        rfm_scores([1.0, 2.0], [1], [1.0])
    assert RFM_FEATURES == ("days_since_last_purchase", "orders_total", "revenue_total")
