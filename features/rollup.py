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
    # whole seconds, floored: DuckDB's epoch keeps the microseconds, Spark's drops them
    ts = events.event_time.epoch_seconds().floor().cast("int64")
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
    r = _with_late_order_reviews(e, r)
    # gap to the previous purchase day: depends only on earlier days, so it is point-in-time safe
    p = r.filter(r.n_orders > 0)
    w = ibis.window(group_by="user_id", order_by="d")
    gaps = p.select(g_user=p.user_id, g_d=p.d, purchase_gap=(p.d - p.d.lag().over(w)).cast("float64"))
    joined = r.left_join(gaps, (r.user_id == gaps.g_user) & (r.d == gaps.g_d))
    return joined.drop("g_user", "g_d")


def _with_late_order_reviews(e: Table, r: Table) -> Table:
    """Add `late_low_rating_n`: bad reviews (per day) of orders whose delivery came late.

    A bad review of a late order is a complaint about the delivery, not about the product: linking
    reviews to their order's delivery through order_id lets features tell the two apart. Reviews
    without an order id, or of orders without delivery data, are never counted as late.
    """
    late = e.filter((e.event_type == "delivery") & e.order_id.notnull() & (e.delivery_delay_days >= LATE_DELIVERY_DAYS))
    # the first late delivery of each order; a review only counts it if it came first, so a feature
    # at a cutoff never reads a delivery from after the cutoff through a review from before it
    late = late.group_by([late.user_id, late.order_id]).aggregate(o_ts=late.ts.min())
    late = late.select(o_user="user_id", o_order="order_id", o_ts="o_ts")
    rv = e.filter((e.event_type == "review") & (e.rating <= LOW_RATING) & e.order_id.notnull())
    rv = rv.join(late, (rv.user_id == late.o_user) & (rv.order_id == late.o_order) & (late.o_ts <= rv.ts))
    # one count per review even if an order has several late deliveries
    per_day = rv.group_by([rv.user_id, rv.d]).aggregate(late_low_rating_n=rv.count())
    per_day = per_day.select(l_user="user_id", l_d="d", late_low_rating_n="late_low_rating_n")
    joined = r.left_join(per_day, (r.user_id == per_day.l_user) & (r.d == per_day.l_d))
    joined = joined.mutate(late_low_rating_n=joined.late_low_rating_n.fill_null(0))
    return joined.drop("l_user", "l_d")
