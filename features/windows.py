"""Point-in-time window aggregates per (user, cutoff) from the user-day rollup.

Many cutoffs must not cost many passes over history. A feature reads two kinds of rows (see
`SnapshotContext`): the user's rollup days inside the longest window before the cutoff, found by a
range join against the cutoff table (each rollup day meets only the few cutoffs whose window holds
it), and one marker row per (user, cutoff) carrying running totals of the user's whole history
(`HISTORY`), computed by one cumulative window over the user's days and markers in time order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import ibis
from ibis.expr.types import Table

from features.catalogue import SnapshotContext, catalogue

EPOCH = dt.date(1970, 1, 1)
# a tier level is stored as day * TIER_CODE + level, so the running max is the latest level
TIER_CODE = 1000

# running values over all history before a cutoff: name -> (reduction, per-rollup-row value). Each is
# a sum, min or max of rollup columns that hold sums or latest values, so it is the same over a rollup
# whose early days are merged into one row (rollup.user_day_rollup's merge_before)
HISTORY: dict[str, tuple[str, Callable[[Table], ibis.Expr]]] = {
    "sum_n_orders": ("sum", lambda r: r.n_orders),
    "sum_n_coupon_orders": ("sum", lambda r: r.n_coupon_orders),
    "sum_revenue": ("sum", lambda r: r.revenue),
    "sum_refund_amount": ("sum", lambda r: r.refund_amount),
    "sum_n_support": ("sum", lambda r: r.n_support),
    "sum_n_support_resolved": ("sum", lambda r: r.n_support_resolved),
    "sum_late_n": ("sum", lambda r: r.late_n),
    "sum_purchase_gap": ("sum", lambda r: r.purchase_gap),
    "sum_gap_n": ("sum", lambda r: r.gap_n),
    "sum_gap_sq": ("sum", lambda r: r.gap_sq),
    "sum_purchase_days": ("sum", lambda r: r.purchase_days),
    "first_ts": ("min", lambda r: r.first_ts),
    "first_purchase_ts": ("min", lambda r: r.first_purchase_ts),
    "last_ts": ("max", lambda r: r.last_ts),
    "last_purchase_ts": ("max", lambda r: r.last_purchase_ts),
    "last_coupon_ts": ("max", lambda r: r.last_coupon_ts),
    "tier": (
        "max",
        lambda r: ibis.ifelse(r.tier_last.notnull(), r.d * TIER_CODE + r.tier_last.cast("int64"), ibis.null("int64")),
    ),
}


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01: the integer day used by the rollup (midnight UTC boundaries)."""
    return (day - EPOCH).days


def cutoff_table(cutoffs: list[dt.date]) -> Table:
    """An in-memory table of cutoffs (midnight UTC) as integer day numbers."""
    days = sorted({day_number(c) for c in cutoffs})
    return ibis.memtable({"cutoff_day": days}, schema={"cutoff_day": "int64"})


def longest_window(windows: list[int]) -> int:
    """Days of history the windowed features read (trend features look back twice the middle window)."""
    windows = sorted(set(windows))
    return max(windows[-1], 2 * windows[len(windows) // 2])


def history_markers(rollup: Table, pairs: Table) -> Table:
    """Per (user_id, cutoff_day) of `pairs`: every HISTORY value over the user's rollup days before the cutoff.

    The markers join the user's days in one stream ordered by (day, kind); a marker sorts before a
    rollup row of its own day, so running reductions at the marker cover exactly d < cutoff_day.
    """
    days = rollup.select(
        "user_id", "d", kind=ibis.literal(1, "int8"), **{name: fn(rollup) for name, (_, fn) in HISTORY.items()}
    )
    nulls = {name: ibis.null(days.schema()[name]) for name in HISTORY}
    marks = pairs.select("user_id", d=pairs.cutoff_day, kind=ibis.literal(0, "int8"), **nulls)
    stream = days.union(marks)
    w = ibis.cumulative_window(group_by="user_id", order_by=["d", "kind"])
    running = {name: getattr(stream[name], how)().over(w) for name, (how, _) in HISTORY.items()}
    out = stream.mutate(**running).filter(lambda t: t.kind == 0)
    tier = ibis.ifelse(out.tier.notnull(), out.tier % TIER_CODE, ibis.null("int64"))
    return out.select("user_id", cutoff_day="d", **{f"h_{n}": out[n] for n in HISTORY if n != "tier"}, h_tier=tier)


def history_at(rollup: Table, pairs: Table, cutoff_day: int) -> Table:
    """history_markers(rollup, pairs) when every pair has the same cutoff_day: a plain group-by over earlier days.

    One cutoff needs no running values: each HISTORY value is one reduction over the user's days before it.
    """
    past = rollup.filter(rollup.d < cutoff_day).semi_join(pairs, "user_id")
    h = past.group_by("user_id").aggregate(**{name: getattr(fn(past), how)() for name, (how, fn) in HISTORY.items()})
    h = h.rename(h_user="user_id")
    # a pair without earlier days still gets its row (all history values null), as it gets a marker
    out = pairs.left_join(h, pairs.user_id == h.h_user)
    tier = ibis.ifelse(out.tier.notnull(), out.tier % TIER_CODE, ibis.null("int64"))
    return out.select("user_id", "cutoff_day", **{f"h_{n}": out[n] for n in HISTORY if n != "tier"}, h_tier=tier)


def snapshot_features(rollup: Table, pairs: Table, windows: list[int], single_cutoff: dt.date | None = None) -> Table:
    """Every catalogue feature for every (user_id, cutoff_day) of `pairs`, from rollup days strictly before the cutoff.

    A feature only ever sees rows with d < cutoff_day, i.e. events with event_time < cutoff midnight UTC.
    `single_cutoff`: the one cutoff of every pair, when the caller knows there is only one (scoring); the
    history values then come from a plain group-by instead of running values over every rollup day.
    """
    span = longest_window(windows)
    if single_cutoff is None:
        cutoffs = pairs.select("cutoff_day").distinct()
        recent = rollup.join(cutoffs, (rollup.d < cutoffs.cutoff_day) & (rollup.d >= cutoffs.cutoff_day - span))
        marks = history_markers(rollup, pairs)
    else:
        day = day_number(single_cutoff)
        recent = rollup.filter((rollup.d < day) & (rollup.d >= day - span))
        recent = recent.mutate(cutoff_day=ibis.literal(day, "int64"))
        marks = history_at(rollup, pairs, day)
    recent = recent.semi_join(pairs, ["user_id", "cutoff_day"])
    recent = recent.mutate(age=recent.cutoff_day - recent.d)
    rollup_cols = [c for c in rollup.columns if c != "user_id"]
    history_cols = [c for c in marks.columns if c.startswith("h_")]
    schema = {**recent.schema(), **marks.schema()}
    # one stream: recent days (history columns null) and markers (rollup columns null, age 0)
    rows = recent.select(
        "user_id", "cutoff_day", "age", *rollup_cols, **{c: ibis.null(schema[c]) for c in history_cols}
    ).union(
        marks.select(
            "user_id",
            "cutoff_day",
            age=ibis.literal(0, schema["age"]),
            **{c: ibis.null(schema[c]) for c in rollup_cols},
            **{c: marks[c] for c in history_cols},
        )
    )
    ctx = SnapshotContext(rows)
    aggs = {f.name: f.compute(ctx) for f in catalogue(windows)}
    return rows.group_by(["user_id", "cutoff_day"]).aggregate(**aggs)
