"""One pass over canonical events to a user-day rollup that every snapshot reads."""

from __future__ import annotations

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
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
# per-day columns computed from small subsets of the events (purchases, tier changes, late-order
# reviews) and joined to the main aggregate once; null on days the subset does not touch
SIDE_COLUMNS: dict[str, str] = {
    "n_orders": "int64",
    "n_coupon_orders": "int64",
    "tier_last": "float64",
    "late_low_rating_n": "int64",
    "purchase_gap": "float64",
}


@ibis.udf.scalar.builtin(name="epoch")
def _duckdb_epoch(ts: dt.Timestamp(timezone="UTC")) -> float:
    """DuckDB's epoch(TIMESTAMPTZ): seconds since 1970-01-01 UTC, with the microseconds."""


def _duckdb_only(expr: ibis.Expr) -> bool:
    """Whether `expr` reads only DuckDB tables (in-memory tables run on whichever backend executes them)."""
    tables = expr.op().find(ops.DatabaseTable)
    return bool(tables) and all(t.source.name == "duckdb" for t in tables)


def epoch_seconds(ts: ibis.Expr) -> ibis.Expr:
    """Whole epoch seconds of a UTC timestamp, floored (DuckDB's epoch keeps the microseconds, Spark's drops them)."""
    if _duckdb_only(ts):
        # Ibis's epoch_seconds casts to a naive timestamp first: a per-row time zone conversion in
        # DuckDB that costs more than the rest of the per-event projection; epoch needs none
        return _duckdb_epoch(ts).floor().cast("int64")
    return ts.epoch_seconds().floor().cast("int64")


def _when(cond: ibis.Expr, value: ibis.Expr) -> ibis.Expr:
    """value where cond holds, else null: aggregates over it skip the other rows.

    Cheaper than an aggregate's `where=` on DuckDB, whose FILTER clauses each slice the whole input
    chunk; the result is the same on every engine.
    """
    return ibis.ifelse(cond, value, ibis.null(value.type()))


def _count(cond: ibis.Expr) -> ibis.Expr:
    return _when(cond, ibis.literal(1, "int8")).count()


def _exact_sum(values: ibis.Expr, where: ibis.Expr) -> ibis.Expr:
    return _when(where, (values * FIXED_POINT).round().cast("int64")).sum().fill_null(0)


def distinct_orders(e: Table, where: ibis.Expr) -> ibis.Expr:
    """Distinct orders among the rows where `where` holds (rows without an order id count one each)."""
    # line-item sources repeat an order id per line; sources without order ids count one order per row
    return e.order_id.nunique(where=where & e.order_id.notnull()) + e.count(where=where & e.order_id.isnull())


def _with_days(events: Table) -> Table:
    ts = epoch_seconds(events.event_time)
    return events.mutate(ts=ts, d=ts // SECONDS_PER_DAY)


def user_day_rollup(events: Table) -> Table:
    """Aggregate canonical events to one row per (user_id, UTC day) with per-role counts and sums.

    Days are integers (days since 1970-01-01 UTC) computed from epoch seconds, so every engine
    agrees on which day an event falls and no calendar arithmetic differs between engines.

    One group-by over all events computes what every row feeds (counts, times, sums); what only a
    small subset feeds (distinct orders, purchase gaps, the tier, late-order reviews) is computed
    from that subset alone (`_side_days`) and joined once.
    """
    events = canonical_types(events)
    e = _with_days(events)
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
        aggs[f"n_{r}"] = _count(role == r)
    aggs |= {
        "first_purchase_ts": _when(purchase, e.ts).min(),
        "last_purchase_ts": _when(purchase, e.ts).max(),
        "revenue": _exact_sum(e.amount, purchase),
        "refund_amount": _exact_sum(e.amount.abs(), role == "refund"),
        "delay_sum": _exact_sum(e.delivery_delay_days, delivery),
        "delay_n": _count(delivery),
        "delay_max": _when(delivery, e.delivery_delay_days).max(),
        "late_n": _count(delivery & (e.delivery_delay_days >= LATE_DELIVERY_DAYS)),
        "rating_sum": _exact_sum(e.rating, review),
        "rating_n": _count(review),
        "low_rating_n": _count(review & (e.rating <= LOW_RATING)),
    }
    main = e.group_by(["user_id", "d"]).aggregate(**aggs)
    side = _side_days(events)
    j = main.left_join(side, (main.user_id == side.s_user) & (main.d == side.s_d))
    cols = {c: j[c] for c in main.columns}
    for c in ("n_orders", "n_coupon_orders", "late_low_rating_n"):
        cols[c] = j[c].fill_null(0)
    k = main.columns.index("first_purchase_ts")
    order = [*main.columns[:k], "n_orders", "n_coupon_orders", *main.columns[k:]]
    return j.select(
        **{c: cols[c] for c in order},
        tier_last=j.tier_last,
        abandoned_cart=((cols["n_cart"] > 0) & (cols["n_orders"] == 0)).cast("int64"),
        late_low_rating_n=cols["late_low_rating_n"],
        purchase_gap=j.purchase_gap,
    )


def _side_days(events: Table) -> Table:
    """(s_user, s_d, SIDE_COLUMNS) for the days with a purchase, a tier change or a bad review of a late order."""
    purchases = _orders_per_day(events)
    # gap to the previous purchase day: depends only on earlier days, so it is point-in-time safe
    w = ibis.window(group_by=purchases.user_id, order_by=purchases.d)
    purchases = purchases.mutate(purchase_gap=(purchases.d - purchases.d.lag().over(w)).cast("float64"))
    m = _with_days(events.filter((events.event_type == "membership") & events.tier.notnull()))
    tiers = m.group_by(["user_id", "d"]).aggregate(tier_last=m.tier.argmax(m.ts))
    late = _late_order_reviews(events)
    null = {c: ibis.null(t) for c, t in SIDE_COLUMNS.items()}
    parts = [
        purchases.select(
            "user_id", "d", **{**null, **{c: purchases[c] for c in ("n_orders", "n_coupon_orders", "purchase_gap")}}
        ),
        tiers.select("user_id", "d", **{**null, "tier_last": tiers.tier_last}),
        late.select("user_id", "d", **{**null, "late_low_rating_n": late.late_low_rating_n}),
    ]
    # each column comes from one part, which has at most one row per (user, day): max picks it
    u = ibis.union(*parts)
    g = u.group_by(["user_id", "d"]).aggregate(**{c: u[c].max() for c in SIDE_COLUMNS})
    return g.rename(s_user="user_id", s_d="d")


def _orders_per_day(events: Table) -> Table:
    """(user_id, d, n_orders, n_coupon_orders) on the days with a purchase: distinct_orders from the purchases alone."""
    p = _with_days(events.filter(events.event_type == "purchase"))
    coupon = p.discount.fill_null(0) > 0
    # one row per order id (and one for a day's purchases without an order id, which count one each)
    o = p.group_by(["user_id", "d", "order_id"]).aggregate(rows=p.count(), coupon_rows=_count(coupon))
    no_id = o.order_id.isnull()
    return o.group_by(["user_id", "d"]).aggregate(
        n_orders=ibis.ifelse(no_id, o.rows, 1).sum(),
        n_coupon_orders=ibis.ifelse(no_id, o.coupon_rows, (o.coupon_rows > 0).cast("int64")).sum(),
    )


def _late_order_reviews(events: Table) -> Table:
    """(user_id, d, late_low_rating_n): bad reviews (per day) of orders whose delivery came late.

    A bad review of a late order is a complaint about the delivery, not about the product: linking
    reviews to their order's delivery through order_id lets features tell the two apart. Reviews
    without an order id, or of orders without delivery data, are never counted as late.
    """
    e = events
    late = e.filter((e.event_type == "delivery") & e.order_id.notnull() & (e.delivery_delay_days >= LATE_DELIVERY_DAYS))
    late = _with_days(late)
    # the first late delivery of each order; a review only counts it if it came first, so a feature
    # at a cutoff never reads a delivery from after the cutoff through a review from before it
    late = late.group_by([late.user_id, late.order_id]).aggregate(o_ts=late.ts.min())
    late = late.select(o_user="user_id", o_order="order_id", o_ts="o_ts")
    rv = _with_days(e.filter((e.event_type == "review") & (e.rating <= LOW_RATING) & e.order_id.notnull()))
    rv = rv.join(late, (rv.user_id == late.o_user) & (rv.order_id == late.o_order) & (late.o_ts <= rv.ts))
    # one count per review even if an order has several late deliveries
    return rv.group_by([rv.user_id, rv.d]).aggregate(late_low_rating_n=rv.count())
