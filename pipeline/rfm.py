"""Classic RFM scoring (recency, frequency, monetary quantile scores) as a transparent churn baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

# The canonical snapshot features (features/catalogue.py) that play R, F and M, in that order:
# days from the last order to the cutoff (NaN = never ordered), orders before the cutoff, revenue before it.
RFM_FEATURES: tuple[str, str, str] = ("days_since_last_purchase", "orders_total", "revenue_total")


def _quantile_score(values: np.ndarray, bins: int) -> np.ndarray:
    """Score 1..bins by mid-rank (higher value = higher score); tied values always share a score."""
    # With n distinct values each score holds n / bins users. A tied group gets the score of its mid-rank, so a
    # heavy tie (most customers with one order) lands in one score instead of being split by row order, and a
    # column with no spread at all scores everyone in the middle.
    n = values.size
    # mid-rank percentile (rank - 1/2) / n with rank = (min + max) / 2 over ties, in exact integer arithmetic
    lo = rankdata(values, method="min").astype("int64")
    hi = rankdata(values, method="max").astype("int64")
    return np.clip(1 + (lo + hi - 1) * bins // (2 * n), 1, bins)


def rfm_scores(recency_days, frequency, monetary, bins: int = 5) -> pd.DataFrame:
    """R, F, M scores 1..bins (bins = most recent / frequent / highest spend) and rfm_score = R + F + M."""
    if bins < 2:
        raise ValueError("rfm_scores: bins must be >= 2")
    index = recency_days.index if isinstance(recency_days, pd.Series) else None
    rec, freq, mon = (np.asarray(v, dtype="float64").ravel() for v in (recency_days, frequency, monetary))
    if not rec.size == freq.size == mon.size:
        raise ValueError(f"rfm_scores: lengths differ (recency {rec.size}, frequency {freq.size}, monetary {mon.size})")
    if rec.size == 0:
        return pd.DataFrame({c: pd.Series([], dtype="int64") for c in ("R", "F", "M", "rfm_score")}, index=index)
    # Fewer days since the last purchase is better; NaN (never purchased) ranks worst, tied with the other NaNs.
    r = _quantile_score(-np.nan_to_num(rec, nan=np.inf, posinf=np.inf), bins)
    f = _quantile_score(np.nan_to_num(freq, nan=0.0), bins)
    m = _quantile_score(np.nan_to_num(mon, nan=0.0), bins)
    return pd.DataFrame({"R": r, "F": f, "M": m, "rfm_score": r + f + m}, index=index)


def churn_score_from_rfm(scores, bins: int = 5) -> np.ndarray:
    """Churn score in [0, 1] from rfm_score (a frame from rfm_scores, or the sums): 1 = worst RFM, 0 = best."""
    total = scores["rfm_score"] if isinstance(scores, pd.DataFrame) else scores
    total = np.asarray(total, dtype="float64")
    return (3 * bins - total) / (3 * bins - 3)
