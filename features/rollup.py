"""One pass over canonical events to a user-day rollup that every snapshot reads."""

from __future__ import annotations

import ibis
from ibis.expr.types import Table

from features.events import ALL_ROLES, canonical_types

SECONDS_PER_DAY = 86_400
# a delivery this many days late (or more) counts as late
LATE_DELIVERY_DAYS = 2
# a review rating at or below this counts as bad
LOW_RATING = 2
# float sums are summed as integers of 1/FIXED_POINT units: a parallel float sum depends on the
# order rows arrive in, which would make features (and so models) differ between identical runs
FIXED_POINT = 10_000


def _exact_sum(values: ibis.Expr, where: ibis.Expr) -> ibis.Expr:
    return (values * FIXED_POINT).round().cast("int64").sum(where=where).fill_null(0)


def distinct_orders(e: Table, where: ibis.Expr) -> ibis.Expr:
    """Distinct orders among the rows where `where` holds (rows without an order id count one each)."""
    # line-item sources repeat an order id per line; sources without order ids count one order per row
    return e.order_id.nunique(where=where & e.order_id.notnull()) + e.count(where=where & e.order_id.isnull())


def user_day_rollup(events: Table) -> Table:
    """Aggregate canonical events to one row per (user_id, UTC day) with per-role counts and sums.

    Days are integers (days since 1970-01-01 UTC) computed from epoch seconds, so every engine
    agrees on which day an event falls and no calendar arithmetic differs between engines.
    """
    events = canonical_types(events)
    ts = events.event_time.epoch_seconds()
    e = events.mutate(ts=ts, d=ts // SECONDS_PER_DAY)
    role = e.event_type
    purchase = role == "purchase"
    delivery = (role == "delivery") & e.delivery_delay_days.notnull()
    review = (role == "review") & e.rating.notnull()
    aggs: dict[str, ibis.Expr] = {
        "n_events": e.count(),
        "first_ts": e.ts.min(),
        "last_ts": e.ts.max(),
    }
    for r in ALL_ROLES:
        aggs[f"n_{r}"] = e.count(where=role == r)
    aggs |= {
        "n_orders": distinct_orders(e, purchase),
        "n_coupon_orders": distinct_orders(e, purchase & (e.discount.fill_null(0) > 0)),
        "first_purchase_ts": e.ts.min(where=purchase),
        "last_purchase_ts": e.ts.max(where=purchase),
        "revenue": _exact_sum(e.amount, purchase),
        "refund_amount": _exact_sum(e.amount.abs(), role == "refund"),
        "delay_sum": _exact_sum(e.delivery_delay_days, delivery),
        "delay_n": e.count(where=delivery),
        "delay_max": e.delivery_delay_days.max(where=delivery),
        "late_n": e.count(where=delivery & (e.delivery_delay_days >= LATE_DELIVERY_DAYS)),
        "rating_sum": _exact_sum(e.rating, review),
        "rating_n": e.count(where=review),
        "low_rating_n": e.count(where=review & (e.rating <= LOW_RATING)),
        "tier_last": e.tier.argmax(e.ts, where=(role == "membership") & e.tier.notnull()),
    }
    r = e.group_by(["user_id", "d"]).aggregate(**aggs)
    r = r.mutate(abandoned_cart=((r.n_cart > 0) & (r.n_orders == 0)).cast("int64"))
    # gap to the previous purchase day: depends only on earlier days, so it is point-in-time safe
    p = r.filter(r.n_orders > 0)
    w = ibis.window(group_by="user_id", order_by="d")
    gaps = p.select(g_user=p.user_id, g_d=p.d, purchase_gap=(p.d - p.d.lag().over(w)).cast("float64"))
    joined = r.left_join(gaps, (r.user_id == gaps.g_user) & (r.d == gaps.g_d))
    return joined.drop("g_user", "g_d")
