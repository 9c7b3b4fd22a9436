"""Descriptive KPIs over canonical events: activity per period, the shopping funnel, event type counts."""

from __future__ import annotations

from typing import Literal

import ibis
from ibis.expr.types import Table

from features.events import canonical_types
from features.rollup import distinct_orders

Period = Literal["day", "week", "month"]

# Ibis truncate units; weeks start on Monday 00:00 in the session time zone (UTC, see pipeline.engine)
_TRUNCATE_UNITS: dict[str, str] = {"day": "D", "week": "W", "month": "M"}

# shopping funnel steps (canonical roles), in funnel order
FUNNEL_STEPS: tuple[str, ...] = ("session", "view", "search", "cart", "purchase")


def activity_by_period(events: Table, period: Period = "week") -> Table:
    """Per period start (date): distinct active users, events, distinct orders and purchase revenue."""
    if period not in _TRUNCATE_UNITS:
        raise ValueError(f"period must be one of {sorted(_TRUNCATE_UNITS)}, got {period!r}")
    e = canonical_types(events)
    e = e.mutate(period_start=e.event_time.truncate(_TRUNCATE_UNITS[period]).date())
    purchase = e.event_type == "purchase"
    agg = e.group_by("period_start").aggregate(
        active_users=e.user_id.nunique(),
        events=e.count(),
        orders=distinct_orders(e, purchase),
        revenue=e.amount.sum(where=purchase).fill_null(0).cast("float64"),
    )
    return agg.order_by("period_start")


def funnel(events: Table) -> Table:
    """One row per funnel step in order: distinct users, events and user conversion from the previous step."""
    e = canonical_types(events)
    e = e.filter(e.event_type.isin(FUNNEL_STEPS))
    counts = e.group_by("event_type").aggregate(users=e.user_id.nunique(), events=e.count())
    steps = ibis.memtable(
        {"step_order": list(range(1, len(FUNNEL_STEPS) + 1)), "step": list(FUNNEL_STEPS)},
        schema={"step_order": "int64", "step": "string"},
    )
    j = steps.left_join(counts, steps.step == counts.event_type)
    j = j.select(
        "step_order",
        "step",
        users=j.users.fill_null(0).cast("int64"),
        events=j.events.fill_null(0).cast("int64"),
    )
    previous = j.users.lag().over(ibis.window(order_by="step_order"))
    # users of a step need not have done the earlier steps (e.g. purchases logged without sessions)
    j = j.mutate(conversion=j.users.cast("float64") / previous.nullif(0).cast("float64"))
    return j.order_by("step_order")


def event_type_counts(events: Table) -> Table:
    """Events and distinct users per event_type (canonical role), most frequent first."""
    e = canonical_types(events)
    counts = e.group_by("event_type").aggregate(events=e.count(), users=e.user_id.nunique())
    return counts.order_by([ibis.desc("events"), "event_type"])


def _month_index(day: ibis.Expr) -> ibis.Expr:
    date = ibis.date(1970, 1, 1) + day.as_interval("D")
    return date.year() * 12 + date.month() - 1


def retention_kpis(rollup: Table, as_of_day: int, repurchase_window_days: int = 365) -> Table:
    """One row of activity KPIs before `as_of_day` (an integer day of the rollup).

    DAU = users active on the last day; WAU / MAU = distinct users of the last 7 / 30 days;
    stickiness = mean DAU over the last 30 days / MAU; repurchase rate = share of users with an
    order in the last `repurchase_window_days` who ordered on two or more days in that window.
    """
    r = rollup.filter(rollup.d < as_of_day)
    r = r.mutate(age=as_of_day - r.d)
    activity = r.aggregate(
        dau=r.count(where=r.age == 1),
        wau=r.user_id.nunique(where=r.age <= 7),
        mau=r.user_id.nunique(where=r.age <= 30),
        user_days_30=r.count(where=r.age <= 30),
    )
    # a day with a purchase event is a day with an order (n_orders > 0): activity_rollup's counts suffice
    buyers = r.filter((r.age <= repurchase_window_days) & (r.n_purchase > 0))
    per_buyer = buyers.group_by("user_id").aggregate(order_days=buyers.count())
    repurchase = per_buyer.aggregate(
        buyers=per_buyer.count(), repeat_buyers=per_buyer.count(where=per_buyer.order_days >= 2)
    )
    j = activity.cross_join(repurchase)
    return j.select(
        "dau",
        "wau",
        "mau",
        stickiness=(j.user_days_30.cast("float64") / 30) / j.mau.nullif(0).cast("float64"),
        buyers=j.buyers,
        repurchase_rate=j.repeat_buyers.cast("float64") / j.buyers.nullif(0).cast("float64"),
    )


def cohort_retention(rollup: Table, as_of_day: int) -> Table:
    """Monthly cohort retention before `as_of_day`: per first-activity month and months since,
    the share of the cohort active in that month (month 0 is 1 by definition)."""
    r = rollup.filter(rollup.d < as_of_day).mutate(month=_month_index(rollup.d))
    first = r.group_by("user_id").aggregate(cohort=r.month.min())
    j = r.join(first, "user_id")
    active = j.group_by(["cohort", "month"]).aggregate(active_users=j.user_id.nunique())
    size = first.group_by("cohort").aggregate(cohort_users=first.count())
    out = active.join(size, "cohort")
    out = out.select(
        cohort_month=(ibis.date(1970, 1, 1) + ((out.cohort // 12 - 1970) * 12 + out.cohort % 12).as_interval("M")),
        months_since=out.month - out.cohort,
        cohort_users=out.cohort_users,
        retention=out.active_users.cast("float64") / out.cohort_users.cast("float64"),
    )
    return out.order_by(["cohort_month", "months_since"])


def churn_rate_per_cutoff(labels: Table) -> Table:
    """Per cutoff (date): users in the population and the share who churned, from `labels.churn_labels`."""
    g = labels.group_by("cutoff_day").aggregate(users=labels.count(), churned=labels.churned.sum().cast("int64"))
    g = g.mutate(
        cutoff=(ibis.date(1970, 1, 1) + g.cutoff_day.as_interval("D")).cast("date"),
        churn_rate=g.churned.cast("float64") / g.users.cast("float64"),
    )
    return g.select("cutoff", "users", "churned", "churn_rate").order_by("cutoff")
