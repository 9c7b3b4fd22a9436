"""Descriptive KPIs over canonical events: activity per period, the shopping funnel, event type counts."""

from __future__ import annotations

from typing import Literal

import ibis
from ibis.expr.types import Table

from features.events import canonical_types
from features.rollup import _distinct_orders

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
        orders=_distinct_orders(e, purchase),
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
