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
# roles whose events feed more than counts (amounts, delays, ratings, orders, tiers): a few percent of
# all events, aggregated from their own subset (side_events) instead of in the pass over every event
SIDE_ROLES: tuple[str, ...] = ("purchase", "refund", "delivery", "review", "membership")
# per-day columns computed from that subset and joined to the main aggregate once: column -> (type, how
# several rows of one (user, d) combine). Every one is a sum, a first or a latest value, so a row that
# merges several days (merge_before) holds them exactly; null on days the subset does not touch.
SIDE_COLUMNS: dict[str, tuple[str, str]] = {
    "n_orders": ("int64", "sum"),
    "n_coupon_orders": ("int64", "sum"),
    "first_purchase_ts": ("int64", "min"),
    "last_purchase_ts": ("int64", "max"),
    "revenue": ("int64", "sum"),
    "refund_amount": ("int64", "sum"),
    "delay_sum": ("int64", "sum"),
    "delay_n": ("int64", "sum"),
    "delay_max": ("float64", "max"),
    "late_n": ("int64", "sum"),
    "rating_sum": ("int64", "sum"),
    "rating_n": ("int64", "sum"),
    "low_rating_n": ("int64", "sum"),
    "tier_last": ("float64", "max"),
    "late_low_rating_n": ("int64", "sum"),
    "purchase_gap": ("float64", "sum"),
    "purchase_days": ("int64", "sum"),
    "gap_n": ("int64", "sum"),
    "gap_sq": ("float64", "sum"),
    "last_coupon_ts": ("int64", "max"),
}
# side columns that are 0, not null, on a day without the events they count
_SIDE_ZERO = (
    "n_orders", "n_coupon_orders", "revenue", "refund_amount", "delay_sum", "delay_n", "late_n", "rating_sum",
    "rating_n", "low_rating_n", "late_low_rating_n", "purchase_days", "gap_n",
)  # fmt: skip
# the rollup's columns after user_id and d, in order
ROLLUP_COLUMNS: tuple[str, ...] = (
    "n_events", "first_ts", "last_ts", *(f"n_{r}" for r in ALL_ROLES), "n_orders", "n_coupon_orders",
    "first_purchase_ts", "last_purchase_ts", "revenue", "refund_amount", "delay_sum", "delay_n", "delay_max", "late_n",
    "rating_sum", "rating_n", "low_rating_n", "tier_last", "abandoned_cart", "late_low_rating_n", "purchase_gap",
    "purchase_days", "gap_n", "gap_sq", "last_coupon_ts",
)  # fmt: skip


@ibis.udf.scalar.builtin(name="epoch")
def _duckdb_epoch(ts: dt.Timestamp(timezone="UTC")) -> float:
    """DuckDB's epoch(TIMESTAMPTZ): seconds since 1970-01-01 UTC, with the microseconds."""


def duckdb_only(expr: ibis.Expr) -> bool:
    """Whether `expr` reads only DuckDB tables (in-memory tables run on whichever backend executes them)."""
    tables = expr.op().find(ops.DatabaseTable)
    return bool(tables) and all(t.source.name == "duckdb" for t in tables)


def epoch_seconds(ts: ibis.Expr) -> ibis.Expr:
    """Whole epoch seconds of a UTC timestamp, floored (DuckDB's epoch keeps the microseconds, Spark's drops them)."""
    if duckdb_only(ts):
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


def _with_days(events: Table, merge_before: int | None = None) -> Table:
    ts = epoch_seconds(events.event_time)
    d = ts // SECONDS_PER_DAY
    if merge_before is not None:
        d = ibis.greatest(d, ibis.literal(merge_before - 1, "int64"))
    return events.mutate(ts=ts, d=d)


def side_events(events: Table) -> Table:
    """The canonical events of SIDE_ROLES: the subset every side table reads (see user_day_rollup).

    Materialised once (build.rollup), it is scanned by the side tables instead of all events for each.
    """
    e = canonical_types(events)
    return e.filter(e.event_type.isin(SIDE_ROLES)).drop("quantity")


def user_day_rollup(events: Table, merge_before: int | None = None, side: Table | None = None) -> Table:
    """Aggregate canonical events to one row per (user_id, UTC day) with per-role counts and sums.

    Days are integers (days since 1970-01-01 UTC) computed from epoch seconds, so every engine
    agrees on which day an event falls and no calendar arithmetic differs between engines.

    One group-by over all events computes what every event feeds (counts per role, first and last
    times); what only the events of SIDE_ROLES feed (amounts, delays, ratings, distinct orders,
    purchase gaps, the tier, late-order reviews) is computed from that subset alone (`_side_days`)
    and joined once: the pass over every event carries 15 aggregates instead of 26.

    `merge_before` (a day number): the days before it are merged into one row per user, dated
    merge_before - 1, holding their sums, counts, first and last times and latest values (as
    SIDE_COLUMNS say). For one cutoff, features read single days only inside their windows and the
    rest as totals (features/windows.py::HISTORY), so a rollup merged before the longest window
    gives the same features with a row per user instead of one per active day: a hash aggregate over
    a few groups per user, several times cheaper than over every user-day (build.scoring_rollup).
    Day counts and per-day flags (n_events, abandoned_cart) of a merged row are not per-day values.

    `side`: side_events(events), when the caller has it materialised.
    """
    side = side_events(events) if side is None else side
    main = activity_rollup(events, merge_before)
    sd = _side_days(side, merge_before)
    j = main.left_join(sd, (main.user_id == sd.s_user) & (main.d == sd.s_d))
    cols = {c: j[c] for c in (*main.columns, *SIDE_COLUMNS)}
    for c in _SIDE_ZERO:
        cols[c] = j[c].fill_null(0)
    cols["abandoned_cart"] = ((cols["n_cart"] > 0) & (cols["n_orders"] == 0)).cast("int64")
    return j.select("user_id", "d", **{c: cols[c] for c in ROLLUP_COLUMNS})


def activity_rollup(events: Table, merge_before: int | None = None) -> Table:
    """Per (user_id, d): n_events, first_ts, last_ts and n_<role>, the pass over every event of user_day_rollup.

    Without the side tables: enough for activity KPIs, cohorts and labels (qualifying events), at a
    fraction of the full rollup's cost.
    """
    e = _with_days(canonical_types(events).select("user_id", "event_time", "event_type"), merge_before)
    role = e.event_type
    aggs: dict[str, ibis.Expr] = {"n_events": e.count(), "first_ts": e.ts.min(), "last_ts": e.ts.max()}
    for r in ALL_ROLES:
        aggs[f"n_{r}"] = _count(role == r)
    return e.group_by(["user_id", "d"]).aggregate(**aggs)


def _side_days(events: Table, merge_before: int | None = None) -> Table:
    """(s_user, s_d, SIDE_COLUMNS) for the days with any of the side events (side_events)."""
    purchases = _orders_per_day(events)
    # gap to the previous purchase day: depends only on earlier days, so it is point-in-time safe
    w = ibis.window(group_by=purchases.user_id, order_by=purchases.d)
    gap = (purchases.d - purchases.d.lag().over(w)).cast("float64")
    purchases = purchases.mutate(
        purchase_days=ibis.literal(1, "int64"), purchase_gap=gap, gap_n=gap.notnull().cast("int64"), gap_sq=gap * gap
    )
    if merge_before is not None:  # gaps are between true days; the merged row holds their sum, first or latest
        purchases = purchases.mutate(d=ibis.greatest(purchases.d, ibis.literal(merge_before - 1, "int64")))
        how = {c: SIDE_COLUMNS[c] for c in purchases.columns if c in SIDE_COLUMNS}
        purchases = purchases.group_by(["user_id", "d"]).aggregate(
            **{c: getattr(purchases[c], h)().cast(t) for c, (t, h) in how.items()}
        )
    m = _with_days(events.filter((events.event_type == "membership") & events.tier.notnull()), merge_before)
    tiers = m.group_by(["user_id", "d"]).aggregate(tier_last=m.tier.argmax(m.ts))
    late = _late_order_reviews(events, merge_before)
    # every day of the other parts has a side event, so it has a row here: left joins keep them all
    j = _amounts_per_day(events, merge_before)
    for part in (purchases, tiers, late):
        part = part.rename(p_user="user_id", p_d="d")
        j = j.left_join(part, (j.user_id == part.p_user) & (j.d == part.p_d)).drop("p_user", "p_d")
    return j.select(s_user="user_id", s_d="d", **{c: j[c].cast(t) for c, (t, _) in SIDE_COLUMNS.items()})


def _amounts_per_day(events: Table, merge_before: int | None) -> Table:
    """Per (user_id, d): purchase times, revenue, refunds, delivery delays and ratings, from the side events."""
    e = _with_days(events, merge_before)
    role = e.event_type
    purchase = role == "purchase"
    delivery = (role == "delivery") & e.delivery_delay_days.notnull()
    review = (role == "review") & e.rating.notnull()
    return e.group_by(["user_id", "d"]).aggregate(
        first_purchase_ts=_when(purchase, e.ts).min(),
        last_purchase_ts=_when(purchase, e.ts).max(),
        revenue=_exact_sum(e.amount, purchase),
        refund_amount=_exact_sum(e.amount.abs(), role == "refund"),
        delay_sum=_exact_sum(e.delivery_delay_days, delivery),
        delay_n=_count(delivery),
        delay_max=_when(delivery, e.delivery_delay_days).max(),
        late_n=_count(delivery & (e.delivery_delay_days >= LATE_DELIVERY_DAYS)),
        rating_sum=_exact_sum(e.rating, review),
        rating_n=_count(review),
        low_rating_n=_count(review & (e.rating <= LOW_RATING)),
    )


def _orders_per_day(events: Table) -> Table:
    """(user_id, d, n_orders, n_coupon_orders, last_coupon_ts) on the days with a purchase, from the purchases alone.

    n_orders is distinct_orders of the day; last_coupon_ts the time of its last purchase with a coupon.
    """
    p = _with_days(events.filter(events.event_type == "purchase"))
    coupon = p.discount.fill_null(0) > 0
    # one row per order id (and one for a day's purchases without an order id, which count one each)
    o = p.group_by(["user_id", "d", "order_id"]).aggregate(
        rows=p.count(), coupon_rows=_count(coupon), coupon_ts=_when(coupon, p.ts).max()
    )
    no_id = o.order_id.isnull()
    return o.group_by(["user_id", "d"]).aggregate(
        n_orders=ibis.ifelse(no_id, o.rows, 1).sum(),
        n_coupon_orders=ibis.ifelse(no_id, o.coupon_rows, (o.coupon_rows > 0).cast("int64")).sum(),
        last_coupon_ts=o.coupon_ts.max(),
    )


def _late_order_reviews(events: Table, merge_before: int | None = None) -> Table:
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
    bad = (e.event_type == "review") & (e.rating <= LOW_RATING) & e.order_id.notnull()
    rv = _with_days(e.filter(bad), merge_before)
    rv = rv.join(late, (rv.user_id == late.o_user) & (rv.order_id == late.o_order) & (late.o_ts <= rv.ts))
    # one count per review even if an order has several late deliveries
    return rv.group_by([rv.user_id, rv.d]).aggregate(late_low_rating_n=rv.count())
