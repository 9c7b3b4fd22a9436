"""Expected value of each user over the horizon if retained: the multiplier behind `value_at_risk` (DESIGN 3.3).

`value_at_risk` = churn probability x this value, so the value must not discount the risk of churn again: it is
the revenue the user is expected to bring *if they stay*. Every method reads only snapshot features, i.e. events
before each row's cutoff, so nothing leaks:

* `history`: lifetime revenue / tenure days x horizon (the user's mean daily spend since their first event).
* `recent`: revenue in the longest revenue window of the catalogue / its days x horizon.
* `bgnbd_gg`: BG/NBD expected order days in the horizon *given the user is alive* (`expected_purchases_if_alive`,
  not the unconditional `expected_purchases`, which also multiplies by P(alive) and would count churn twice) x
  Gamma-Gamma expected spend per order day, both fitted per cutoff on the rows' own histories. Given alive, the
  BG/NBD order rate depends on the order count and age only: a long silence lowers the churn probability's side of
  `value_at_risk`, not this value. A user who never ordered counts as a customer with no order over their tenure
  (x = t_x = 0, T = tenure): BG/NBD expected orders if alive x the population mean spend. A population too small or
  too uniform to fit falls back to `history` for that cutoff, with a logged warning.

Users who never ordered are worth 0 under `history` and `recent`. `benchmarks/value.py` backtests the methods
against the revenue that retained users (`churned == 0`) really generated in the horizon (`future_revenue` of
labelled snapshots).
"""

from __future__ import annotations

import logging
import re
from typing import Literal, get_args

import numpy as np
import pandas as pd

from pipeline.baselines import DAYS_PER_WEEK, BGNBDBaseline
from pipeline.bgnbd import expected_purchases_if_alive
from pipeline.errors import WinbackError
from pipeline.gammagamma import GammaGamma, conditional_expected_spend, fit_gammagamma, population_mean_spend

log = logging.getLogger(__name__)

ValueMethod = Literal["history", "recent", "bgnbd_gg"]
METHODS: tuple[str, ...] = get_args(ValueMethod)
# fewer repeat buyers than this at a cutoff: too few to fit BG/NBD and Gamma-Gamma, use `history`
MIN_REPEATERS = 10
PENALIZERS = (0.0, 0.001, 0.01, 0.1)  # Gamma-Gamma: the smallest ridge that gives a proper fit (q > 1)
_REVENUE_WINDOW = re.compile(r"revenue_(\d+)d")


def history_value(rows: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Lifetime mean daily spend (revenue / tenure days, at least one day) x horizon days."""
    tenure = rows["tenure_days"].astype("float64").clip(lower=1.0)
    return (rows["revenue_total"].astype("float64").clip(lower=0) / tenure * horizon_days).to_numpy()


def recent_value(rows: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Mean daily spend over the longest revenue window of the snapshot (revenue_<w>d / w) x horizon days."""
    windows = sorted(int(m.group(1)) for c in rows.columns if (m := _REVENUE_WINDOW.fullmatch(str(c))))
    if not windows:
        raise ValueError("the 'recent' value needs a revenue_<days>d column in the snapshot rows")
    w = windows[-1]
    return (rows[f"revenue_{w}d"].astype("float64").fillna(0).clip(lower=0) / w * horizon_days).to_numpy()


def spend_history(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(order days, mean revenue per order day >= 0) per row: the Gamma-Gamma (x, m_x); (0, 0) for never-buyers."""
    days = rows["purchase_days_total"].astype("float64").fillna(0).to_numpy()
    revenue = rows["revenue_total"].astype("float64").fillna(0).clip(lower=0).to_numpy()
    mean = np.divide(revenue, days, out=np.zeros_like(revenue), where=days > 0)
    return np.where(days > 0, days, 0.0), mean


def fit_spend(x: np.ndarray, m_x: np.ndarray) -> GammaGamma:
    """Gamma-Gamma fit with the smallest ridge in PENALIZERS that gives a finite population mean (q > 1)."""
    error: ValueError | None = None
    for penalizer in PENALIZERS:
        try:
            params = fit_gammagamma(x, m_x, penalizer=penalizer)
        except ValueError as exc:
            error = exc
            continue
        if params.q > 1:
            return params
        error = ValueError(f"Gamma-Gamma fit has an infinite mean spend (q <= 1): {params}")
    raise WinbackError(f"Gamma-Gamma cannot be fitted: {error}")


def bgnbd_gg_value(rows: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """BG/NBD expected order days in the horizon if alive x Gamma-Gamma spend per order day, fitted on these rows."""
    bought, x, t_x, T = BGNBDBaseline._history(rows)
    n_orders, mean_spend = spend_history(rows)
    repeaters = int((bought & (x >= 1)).sum())
    if repeaters < MIN_REPEATERS:
        raise WinbackError(f"{repeaters} repeat buyers, fewer than the {MIN_REPEATERS} needed to fit BG/NBD")
    purchases = BGNBDBaseline._fit(x[bought], t_x[bought], T[bought])
    spend = fit_spend(n_orders[bought], mean_spend[bought])
    horizon = horizon_days / DAYS_PER_WEEK
    # if alive, not x P(alive): value_at_risk multiplies by the churn probability itself
    orders = expected_purchases_if_alive(purchases, horizon, x, t_x, T)
    value = orders * conditional_expected_spend(spend, n_orders, mean_spend)
    # never ordered: no order since their first event (the population prior, updated by the silence) x mean spend
    tenure = rows["tenure_days"].astype("float64").fillna(0).clip(lower=0).to_numpy() / DAYS_PER_WEEK
    zero = np.zeros(len(rows))
    prior = expected_purchases_if_alive(purchases, horizon, zero, zero, tenure) * population_mean_spend(spend)
    value = np.where(bought, value, prior)
    if not np.isfinite(value).all():
        raise WinbackError("BG/NBD x Gamma-Gamma value is not finite for some users")
    return value


def _bgnbd_gg_or_history(rows: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """bgnbd_gg on one cutoff's rows, or history with a logged warning when the models cannot be fitted."""
    try:
        return bgnbd_gg_value(rows, horizon_days)
    except (WinbackError, ValueError) as exc:
        cutoff = rows["cutoff"].iloc[0] if "cutoff" in rows and len(rows) else "?"
        log.warning("value at cutoff %s: BG/NBD x Gamma-Gamma not fitted (%s); using 'history'", cutoff, exc)
        return history_value(rows, horizon_days)


def expected_value(rows: pd.DataFrame, horizon_days: int, method: str) -> np.ndarray:
    """Expected revenue of each row's user in the horizon if retained, by `method` (one of METHODS)."""
    if method == "history":
        return history_value(rows, horizon_days)
    if method == "recent":
        return recent_value(rows, horizon_days)
    if method != "bgnbd_gg":
        raise ValueError(f"unknown value method {method!r}; use one of {list(METHODS)}")
    out = np.zeros(len(rows))
    if len(rows) == 0:
        return out
    # one fit per cutoff: a user's value at a cutoff uses only the population's histories at that cutoff
    groups = rows.groupby("cutoff", sort=True).indices if "cutoff" in rows else {None: np.arange(len(rows))}
    for positions in groups.values():
        out[positions] = _bgnbd_gg_or_history(rows.iloc[positions], horizon_days)
    return out
