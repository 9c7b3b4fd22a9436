"""Gamma-Gamma model of monetary value (Fader, Hardie & Lee 2005; Fader & Hardie 2013): fit and conditional spend.

Per customer: x = number of transactions whose spend is averaged, m_x = their mean spend (> 0). Each spend is
Gamma(p, nu) with the customer's scale nu ~ Gamma(q, v) across customers, so m_x | x ~ Gamma(p x, nu x) and the
population mean spend is p v / (q - 1) (finite only for q > 1). Spend is assumed independent of the purchase
process, so it combines with BG/NBD expected purchases. The original note fits repeat transactions only (x >= 1
repeat purchases, the first purchase left out); any count of averaged transactions works. v is in currency units.
Only numpy and scipy, like `pipeline/bgnbd.py`.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import digamma, gammaln

_LOG_BOUND = 25.0  # log-parameters are kept in [-25, 25] so exp() never overflows
_SHAPE_RANGE = (1e-5, 1e5)  # p, q beyond this: a degenerate fit (e.g. no spread of spend between customers)
_PENALISED = np.array([1.0, 1.0, 0.0])  # the ridge acts on log p, log q; v carries the currency unit


@dataclass(frozen=True)
class GammaGamma:
    """Fitted Gamma-Gamma parameters: spend per transaction ~ Gamma(p, nu), nu ~ Gamma(q, v)."""

    p: float
    q: float
    v: float


def _spend(x, m_x) -> tuple[np.ndarray, np.ndarray]:
    """Validated float arrays of x and m_x, broadcast to one shape."""
    x, m_x = np.broadcast_arrays(*(np.asarray(a, dtype="float64") for a in (x, m_x)))
    if not (np.isfinite(x).all() and np.isfinite(m_x).all()):
        raise ValueError("Gamma-Gamma: x and m_x must be finite (no NaN or inf)")
    if (x < 0).any() or (m_x < 0).any():
        raise ValueError("Gamma-Gamma: x and m_x must be >= 0")
    return x, m_x


def _log_terms(p: float, q: float, v: float, x: np.ndarray, m_x: np.ndarray) -> np.ndarray:
    """Per-customer log-likelihood of m_x given x (x >= 1, m_x > 0): equation (1a) of the 2013 note."""
    px = p * x
    return (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(m_x)
        + px * np.log(x)
        - (px + q) * np.log(v + x * m_x)
    )


def log_likelihood(params: GammaGamma, x, m_x) -> np.ndarray:
    """Per-customer Gamma-Gamma log-likelihood of the mean spend m_x over x transactions (x >= 1, m_x > 0)."""
    x, m_x = _spend(x, m_x)
    if (x < 1).any() or (m_x <= 0).any():
        raise ValueError("Gamma-Gamma: the likelihood needs x >= 1 and m_x > 0")
    return _log_terms(*astuple(params), x, m_x)


def _objective(log_params: np.ndarray, x, m_x, w: np.ndarray, penalizer: float) -> tuple[float, np.ndarray]:
    """Weighted mean negative log-likelihood (+ ridge on log p, log q) and its gradient in log-parameters."""
    p, q, v = params = np.exp(log_params)
    px, xm = p * x, x * m_x
    d_common = digamma(px + q)
    d_p = x * (d_common - digamma(px) + np.log(m_x) + np.log(x) - np.log(v + xm))
    d_q = d_common - digamma(q) + np.log(v) - np.log(v + xm)
    d_v = q / v - (px + q) / (v + xm)
    total = w.sum()
    shapes = log_params * _PENALISED
    value = -float(w @ _log_terms(p, q, v, x, m_x)) / total + penalizer * float(shapes @ shapes)
    grad = np.array([-(w @ g) / total for g in (d_p, d_q, d_v)]) * params  # d/dlog(theta) = theta * d/dtheta
    return value, grad + 2 * penalizer * shapes


def fit_gammagamma(x, m_x, weights=None, penalizer: float = 0.0) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma fit on customers with x >= 1 and m_x > 0; penalizer a ridge on log p, q."""
    x, m_x = _spend(x, m_x)
    w = np.ones(x.shape) if weights is None else np.asarray(weights, dtype="float64")
    x, m_x, w = (a.ravel() for a in np.broadcast_arrays(x, m_x, w))
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("Gamma-Gamma: weights must be finite and >= 0")
    if penalizer < 0:
        raise ValueError("Gamma-Gamma: penalizer must be >= 0")
    keep = (w > 0) & (x >= 1) & (m_x > 0)
    if not keep.any():
        raise ValueError("Gamma-Gamma: no customer with x >= 1 and m_x > 0 to fit on")
    x, m_x, w = x[keep], m_x[keep], w[keep]

    # Two deterministic starts, each with the population mean p v / (q - 1) matched to the observed mean spend.
    mean = float(w @ m_x) / float(w.sum())
    starts = [np.log([1.0, 2.0, mean]), np.log([5.0, 4.0, 0.6 * mean])]
    results = [
        minimize(
            _objective,
            np.clip(start, -_LOG_BOUND + 1, _LOG_BOUND - 1),
            args=(x, m_x, w, penalizer),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 3,
            options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
        )
        for start in starts
    ]
    finite = [res for res in results if np.isfinite(res.fun)]
    # L-BFGS-B may stop on a line-search failure at the optimum: accept a tiny projected gradient too.
    converged = [res for res in finite if res.success or np.max(np.abs(res.jac)) < 1e-6]
    if not finite:
        raise ValueError(
            "Gamma-Gamma fit did not converge from any starting point; check the data or set penalizer > 0"
        )
    best = min(converged or finite, key=lambda res: res.fun)
    fit = GammaGamma(*(float(a) for a in np.exp(best.x)))
    lo, hi = _SHAPE_RANGE
    if (np.abs(best.x) >= _LOG_BOUND - 1e-6).any() or not all(lo <= a <= hi for a in (fit.p, fit.q)):
        raise ValueError(
            f"Gamma-Gamma fit is degenerate ({fit}): the data do not identify the model (e.g. every customer "
            "spends alike); set penalizer > 0"
        )
    if not converged:
        raise ValueError(f"Gamma-Gamma fit did not converge ({best.message}); check the data or set penalizer > 0")
    return fit


def population_mean_spend(params: GammaGamma) -> float:
    """E[spend per transaction] across customers, p v / (q - 1); needs q > 1."""
    if params.q <= 1:
        raise ValueError(f"Gamma-Gamma: the population mean spend is infinite for q <= 1 ({params})")
    return params.p * params.v / (params.q - 1)


def conditional_expected_spend(params: GammaGamma, x, m_x) -> np.ndarray:
    """E[spend per transaction | x, m_x]: a weighted mean of the population mean and m_x (the former when x == 0)."""
    x, m_x = _spend(x, m_x)
    population = population_mean_spend(params)
    own = params.p * x / (params.p * x + params.q - 1)  # weight of the customer's own mean, 0 at x == 0
    return (1 - own) * population + own * m_x
