"""BG/NBD purchase model (Fader, Hardie & Lee 2005): maximum-likelihood fit and churn-relevant predictions.

Per customer: x = repeat purchases, t_x = time of the last purchase since the first, T = time from the first
purchase to the cutoff, in any consistent unit (the fitted alpha is in that unit). While alive a customer
buys at Poisson rate lambda ~ Gamma(r, alpha); after every purchase they drop out with probability
p ~ Beta(a, b). Only numpy and scipy: `lifetimes` is unmaintained and fails under pandas 3.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import digamma, expit, gammaln, hyp2f1

_LOG_BOUND = 25.0  # log-parameters are kept in [-25, 25] so exp() never overflows
_SHAPE_RANGE = (1e-5, 1e5)  # r, a, b beyond this: a degenerate fit (e.g. no dropout) that 2F1 cannot evaluate
_PENALISED = np.array([1.0, 0.0, 1.0, 1.0])  # the ridge acts on log r, log a, log b
_A_NEAR_ONE = 1e-5  # E[purchases | alive] has a removable 0/0 at a == 1
_C_NUDGE = 1e-6  # scipy's hyp2f1 returns NaN in some cases with integer c - p1 - p2


@dataclass(frozen=True)
class BGNBD:
    """Fitted BG/NBD parameters: purchase rate ~ Gamma(r, alpha), dropout probability ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


def _history(x, t_x, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated float arrays of x, t_x, T, broadcast to one shape."""
    x, t_x, T = np.broadcast_arrays(*(np.asarray(v, dtype="float64") for v in (x, t_x, T)))
    if not (np.isfinite(x).all() and np.isfinite(t_x).all() and np.isfinite(T).all()):
        raise ValueError("BG/NBD: x, t_x and T must be finite (no NaN or inf)")
    if (x < 0).any() or (t_x < 0).any():
        raise ValueError("BG/NBD: x and t_x must be >= 0")
    if (t_x > T * (1 + 1e-9) + 1e-12).any():
        raise ValueError("BG/NBD: t_x (time of last purchase) must not exceed T (age)")
    return x, t_x, T


def _terms(r: float, alpha: float, a: float, b: float, x, t_x, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-likelihood pieces: the common part, the 'alive at T' and the 'dropped after t_x' (x > 0 only) terms."""
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    common += gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    alive = -(r + x) * np.log(alpha + T)
    dropped = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x)
    return common, alive, np.where(x > 0, dropped, -np.inf)


def log_likelihood(params: BGNBD, x, t_x, T) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood of (x, t_x, T)."""
    x, t_x, T = _history(x, t_x, T)
    common, alive, dropped = _terms(*astuple(params), x, t_x, T)
    return common + np.logaddexp(alive, dropped)


def _objective(log_params: np.ndarray, x, t_x, T, w: np.ndarray, penalizer: float) -> tuple[float, np.ndarray]:
    """Weighted mean negative log-likelihood (+ ridge on log r, log a, log b) and its gradient in log-parameters."""
    r, alpha, a, b = params = np.exp(log_params)
    common, alive, dropped = _terms(r, alpha, a, b, x, t_x, T)
    lse = np.logaddexp(alive, dropped)
    p_alive_term, p_drop_term = np.exp(alive - lse), np.exp(dropped - lse)
    d_ab, d_abx = digamma(a + b), digamma(a + b + x)
    d_r = digamma(r + x) - digamma(r) + np.log(alpha)
    d_r -= p_alive_term * np.log(alpha + T) + p_drop_term * np.log(alpha + t_x)
    d_alpha = r / alpha - (r + x) * (p_alive_term / (alpha + T) + p_drop_term / (alpha + t_x))
    d_a = d_ab - d_abx + p_drop_term / a
    d_b = d_ab + digamma(b + x) - digamma(b) - d_abx - p_drop_term / (b + np.maximum(x, 1) - 1)
    total = w.sum()
    shapes = log_params * _PENALISED  # alpha carries the time unit: not penalised
    value = -float(w @ (common + lse)) / total + penalizer * float(shapes @ shapes)
    grad = (
        np.array([-(w @ g) / total for g in (d_r, d_alpha, d_a, d_b)]) * params
    )  # chain rule: d/dlog(theta) = theta * d/dtheta
    return value, grad + 2 * penalizer * shapes


def fit_bgnbd(x, t_x, T, weights=None, penalizer: float = 0.0) -> BGNBD:
    """Maximum-likelihood BG/NBD fit; weights e.g. counts of identical rows; penalizer a ridge on log r, a, b."""
    x, t_x, T = _history(x, t_x, T)
    w = np.ones(x.shape) if weights is None else np.asarray(weights, dtype="float64")
    x, t_x, T, w = (v.ravel() for v in np.broadcast_arrays(x, t_x, T, w))
    if x.size == 0:
        raise ValueError("BG/NBD: cannot fit on empty input")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("BG/NBD: weights must be finite, >= 0 and not all zero")
    if penalizer < 0:
        raise ValueError("BG/NBD: penalizer must be >= 0")
    if not (w * (x > 0)).any():
        raise ValueError("BG/NBD: no repeat purchases at all; the dropout process (a, b) is not identified")

    # Identical histories are common (integer days): fit on unique rows weighted by their counts.
    rows, inverse = np.unique(np.column_stack([x, t_x, T])[w > 0], axis=0, return_inverse=True)
    w = np.bincount(inverse.ravel(), weights=w[w > 0], minlength=len(rows))
    x, t_x, T = rows.T.copy()

    # Two deterministic starts, each with the Gamma mean rate r / alpha matched to the observed repeat rate.
    rate = max(float(w @ x) / max(float(w @ T), 1e-12), 1e-12)
    starts = [np.log([1.0, 1.0 / rate, 1.0, 1.0]), np.log([0.5, 0.5 / rate, 0.5, 2.0])]
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * 4
    results = [
        minimize(
            _objective,
            np.clip(start, -_LOG_BOUND + 1, _LOG_BOUND - 1),
            args=(x, t_x, T, w, penalizer),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
        )
        for start in starts
    ]
    finite = [res for res in results if np.isfinite(res.fun)]
    # L-BFGS-B may stop on a line-search failure at the optimum: accept a tiny projected gradient too.
    converged = [res for res in finite if res.success or np.max(np.abs(res.jac)) < 1e-6]
    if not finite:
        raise ValueError("BG/NBD fit did not converge from any starting point; check the data or set penalizer > 0")
    best = min(converged or finite, key=lambda res: res.fun)
    fit = BGNBD(*(float(v) for v in np.exp(best.x)))
    lo, hi = _SHAPE_RANGE
    if (np.abs(best.x) >= _LOG_BOUND - 1e-6).any() or not all(lo <= v <= hi for v in (fit.r, fit.a, fit.b)):
        raise ValueError(
            f"BG/NBD fit is degenerate ({fit}): the data do not identify the model (e.g. no sign of dropout or "
            "of rate heterogeneity); set penalizer > 0"
        )
    if not converged:
        raise ValueError(f"BG/NBD fit did not converge ({best.message}); check the data or set penalizer > 0")
    return fit


def _log_odds_dead(params: BGNBD, x, t_x, T) -> np.ndarray:
    """log P(dropped | history) - log P(alive | history); -inf where x == 0."""
    r, alpha, a, b = astuple(params)
    odds = np.log(a) - np.log(b + np.maximum(x, 1) - 1) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return np.where(x > 0, odds, -np.inf)


def p_alive(params: BGNBD, x, t_x, T) -> np.ndarray:
    """P(customer still alive at T | x, t_x, T); 1 where x == 0."""
    x, t_x, T = _history(x, t_x, T)
    return expit(-_log_odds_dead(params, x, t_x, T))


def _hyp2f1(p1, p2, c, z) -> np.ndarray:
    """scipy's 2F1, retried with c nudged both ways where it is NaN (seen when c - p1 - p2 is an integer, z near 1)."""
    p1, p2, c, z = np.broadcast_arrays(p1, p2, c, z)
    out = np.asarray(hyp2f1(p1, p2, c, z), dtype="float64")
    bad = ~np.isfinite(out)
    if bad.any():
        args = p1[bad], p2[bad], c[bad], z[bad]
        out[bad] = 0.5 * (
            hyp2f1(*args[:2], args[2] - _C_NUDGE, args[3]) + hyp2f1(*args[:2], args[2] + _C_NUDGE, args[3])
        )
    return out


def _expected_given_alive(r: float, alpha: float, a: float, b: float, t, x, T) -> np.ndarray:
    """E[purchases in (T, T+t] | alive at T, x] in closed form, via the Gauss hypergeometric 2F1."""
    z = np.clip(t / (alpha + T + t), 0.0, 1.0 - 1e-15)
    c = a + b + x - 1
    # (1-z)^(r+x) 2F1(r+x, b+x; c; z) == (1-z)^(a-1) 2F1(c-r-x, a-1; c; z) (Euler). Use the form whose series
    # converges at z = 1 (c - p1 - p2 > 0): 2F1 stays bounded as t grows, where the other overflows for large x.
    direct = a - 1 - r - x > 0
    power = np.where(direct, r + x, a - 1)
    term = np.exp(power * np.log1p(-z)) * _hyp2f1(power, np.where(direct, b + x, c - r - x), c, z)
    return c / (a - 1) * (1.0 - term)


def _horizon_history(t, x, t_x, T) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated (shape, t, x, t_x, T): the history and the horizon t broadcast together and flattened."""
    x, t_x, T = _history(x, t_x, T)
    t, x, t_x, T = np.broadcast_arrays(np.asarray(t, dtype="float64"), x, t_x, T)
    if not np.isfinite(t).all() or (t < 0).any():
        raise ValueError("BG/NBD: t must be finite and >= 0")
    return t.shape, *(v.ravel() for v in (t, x, t_x, T))


def _given_alive(params: BGNBD, t, x, T) -> np.ndarray:
    """E[purchases in (T, T+t] | alive at T, x] on flat validated arrays; 0 where t == 0."""
    r, alpha, a, b = astuple(params)
    if abs(a - 1) < _A_NEAR_ONE:  # removable 0/0 at a == 1: interpolate linearly between 1 - h and 1 + h
        below, above = (_expected_given_alive(r, alpha, 1 + s, b, t, x, T) for s in (-_A_NEAR_ONE, _A_NEAR_ONE))
        given_alive = below + (a - 1 + _A_NEAR_ONE) / (2 * _A_NEAR_ONE) * (above - below)
    else:
        given_alive = _expected_given_alive(r, alpha, a, b, t, x, T)
    return np.where(t > 0, given_alive, 0.0)


def _checked(out: np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Expected counts clipped at 0 and reshaped; an error if any is not finite."""
    if not np.isfinite(out).all():
        raise ValueError(f"BG/NBD: {name} is not finite for some histories (extreme parameters?)")
    return np.maximum(out, 0.0).reshape(shape)


def expected_purchases_if_alive(params: BGNBD, t, x, t_x, T) -> np.ndarray:
    """Expected number of purchases in (T, T + t] given the history (x, t_x, T) and that the customer is alive at T.

    The value of a customer who is retained: `expected_purchases` is this x `p_alive`. t_x does not enter (only
    P(alive) depends on it) but is validated with the history.
    """
    shape, t, x, _, T = _horizon_history(t, x, t_x, T)
    return _checked(_given_alive(params, t, x, T), "expected_purchases_if_alive", shape)


def expected_purchases(params: BGNBD, t, x, t_x, T) -> np.ndarray:
    """Conditional expected number of purchases in (T, T + t] given the history (x, t_x, T).

    Not conditioned on being alive: P(alive | history) x `expected_purchases_if_alive`.
    """
    shape, t, x, t_x, T = _horizon_history(t, x, t_x, T)
    out = expit(-_log_odds_dead(params, x, t_x, T)) * _given_alive(params, t, x, T)
    return _checked(out, "expected_purchases", shape)


def p_no_purchase(params: BGNBD, t, x, t_x, T) -> np.ndarray:
    """P(no purchase in (T, T + t] | history): the BG/NBD churn probability for purchase-based churn."""
    x, t_x, T = _history(x, t_x, T)
    t, x, t_x, T = np.broadcast_arrays(np.asarray(t, dtype="float64"), x, t_x, T)
    if not np.isfinite(t).all() or (t < 0).any():
        raise ValueError("BG/NBD: t must be finite and >= 0")
    alive = expit(-_log_odds_dead(params, x, t_x, T))
    silent_if_alive = np.exp((params.r + x) * (np.log(params.alpha + T) - np.log(params.alpha + T + t)))
    return np.clip((1.0 - alive) + alive * silent_if_alive, 0.0, 1.0)
