"""Population and churn labels per cutoff (DESIGN 3.2)."""

from __future__ import annotations

from collections.abc import Sequence

import ibis
from ibis.expr.types import Table

from features.rollup import FIXED_POINT


def qualifying_events(rollup: Table, qualifying: str | Sequence[str]) -> ibis.Expr:
    """Per rollup row, the number of events that count as 'active' for the churn definition."""
    if qualifying == "any":
        return rollup.n_events
    total = ibis.literal(0, "int64")
    for role in qualifying:
        total = total + rollup[f"n_{role}"]
    return total


def population(rollup: Table, cutoffs: Table, lookback_days: int, qualifying: str | Sequence[str]) -> Table:
    """(user_id, cutoff_day) for users with a qualifying event in [cutoff - lookback, cutoff)."""
    q = rollup.filter(qualifying_events(rollup, qualifying) > 0)
    j = q.join(cutoffs, (q.d < cutoffs.cutoff_day) & (q.d >= cutoffs.cutoff_day - lookback_days))
    return j.select("user_id", "cutoff_day").distinct()


def churn_labels(
    rollup: Table, cutoffs: Table, lookback_days: int, horizon_days: int, qualifying: str | Sequence[str]
) -> Table:
    """Population at each cutoff with `churned` = 1 when no qualifying event in [cutoff, cutoff + horizon)."""
    q = rollup.filter(qualifying_events(rollup, qualifying) > 0)
    j = q.join(
        cutoffs,
        (q.d >= cutoffs.cutoff_day - lookback_days) & (q.d < cutoffs.cutoff_day + horizon_days),
    )
    g = j.group_by(["user_id", "cutoff_day"]).aggregate(
        past=j.count(where=j.d < j.cutoff_day),
        future=j.count(where=j.d >= j.cutoff_day),
    )
    g = g.filter(g.past > 0)
    return g.select("user_id", "cutoff_day", churned=(g.future == 0).cast("int8"))


def future_revenue(rollup: Table, cutoffs: Table, horizon_days: int) -> Table:
    """(user_id, cutoff_day, future_revenue): order revenue in [cutoff, cutoff + horizon); a target, never a feature."""
    r = rollup.filter(rollup.revenue != 0)
    j = r.join(cutoffs, (r.d >= cutoffs.cutoff_day) & (r.d < cutoffs.cutoff_day + horizon_days))
    g = j.group_by(["user_id", "cutoff_day"]).aggregate(fixed=j.revenue.sum())
    return g.select("user_id", "cutoff_day", future_revenue=g.fixed.cast("float64") / FIXED_POINT)
