"""The feature catalogue: every feature defined once, with its computation and its metadata.

A feature's `compute` receives a `SnapshotContext` over the (user-day x cutoff) rows strictly before
the cutoff and returns one reduction per (user, cutoff). Its metadata (family, reason templates,
actionable, explainable) is what SHAP reason codes, the report and the docs read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import ibis
from ibis.expr.types import Table

from features.rollup import FIXED_POINT, LATE_DELIVERY_DAYS, LOW_RATING, SECONDS_PER_DAY

FAMILIES: tuple[str, ...] = (
    "engagement",
    "purchase",
    "funnel",
    "promotion",
    "service",
    "logistics",
    "satisfaction",
    "loyalty",
)


class SnapshotContext:
    """Reductions over the rows of one (user, cutoff), built by features/windows.py.

    Two kinds of rows: the user's rollup days within the longest window before the cutoff (`age` =
    cutoff_day - d >= 1), and one marker row (`age` = 0) holding the user's whole history up to the
    cutoff as running totals (`h_*` columns, see features/windows.py::HISTORY). Windowed reductions
    read the first kind, all-history ones the marker, so no feature ever scans all of a user's past
    for every cutoff.
    """

    def __init__(self, rows: Table):
        self.rows = rows

    def within(self, days: int) -> ibis.Expr:
        """Rollup rows of the last `days` days before the cutoff."""
        return (self.rows.age >= 1) & (self.rows.age <= days)

    def between(self, newest: int, oldest: int) -> ibis.Expr:
        """Rows whose age is in (newest, oldest]: e.g. (30, 60] is the 30 days before the last 30."""
        return (self.rows.age > max(newest, 0)) & (self.rows.age <= oldest)

    def history(self, name: str) -> ibis.Expr:
        """A running value over all history before the cutoff (features/windows.py::HISTORY)."""
        return self.rows[f"h_{name}"].max()

    def sum(self, column: str, days: int | None = None, where: ibis.Expr | None = None) -> ibis.Expr:
        """Sum of a rollup column over a window (all history when neither is given); 0 when nothing to sum."""
        if days is None and where is None:
            return self.history(f"sum_{column}").fill_null(0).cast("float64")
        cond = self.within(days) if where is None else where
        # a CASE rather than sum(where=): DuckDB's FILTER slices every input column per aggregate
        value = self.rows[column]
        return ibis.ifelse(cond, value, ibis.null(value.type())).sum().fill_null(0).cast("float64")

    def sum_fixed(self, column: str, days: int | None = None) -> ibis.Expr:
        """Sum of a fixed-point rollup column (revenue, delays, ratings) in its natural unit."""
        return self.sum(column, days) / FIXED_POINT

    def active_days(self, days: int | None = None, where: ibis.Expr | None = None) -> ibis.Expr:
        """Number of days with any event in a window (`where` rows of a window, e.g. `between`)."""
        if days is None and where is None:
            raise ValueError("active_days needs a window: all-history counts are history() values")
        cond = self.within(days) if where is None else where
        return ibis.ifelse(cond, ibis.literal(1, "int8"), ibis.null("int8")).count().cast("float64")

    def _cutoff_ts(self) -> ibis.Expr:
        return (self.rows.cutoff_day * SECONDS_PER_DAY).max()

    def days_since(self, newest: str) -> ibis.Expr:
        """Elapsed days from a running-latest epoch-seconds history value to the cutoff (null if none)."""
        return (self._cutoff_ts() - self.history(newest)).cast("float64") / SECONDS_PER_DAY

    def days_since_first_purchase(self) -> ibis.Expr:
        """Elapsed days from the user's first order to the cutoff (null if none)."""
        return self.days_since("first_purchase_ts")

    def days_since_first(self) -> ibis.Expr:
        """Elapsed days from the user's first event to the cutoff."""
        return self.days_since("first_ts")


def _some(value: float) -> bool:
    return value > 0


def _late(value: float) -> bool:
    return value >= LATE_DELIVERY_DAYS


def _known(value: float) -> bool:
    return True  # reasons never cite unknown values, so any cited value shows it


def ratio(num: ibis.Expr, den: ibis.Expr) -> ibis.Expr:
    """num / den, null when den is 0 or null (engines disagree on division by zero)."""
    return ibis.ifelse(den > 0, num.cast("float64") / den.cast("float64"), ibis.null("float64"))


@dataclass(frozen=True)
class Feature:
    """One model feature: how it is computed and how it reads to a person."""

    name: str
    family: str
    description: str
    compute: Callable[[SnapshotContext], ibis.Expr] = field(repr=False, compare=False)
    # alternatives tried in order; the first whose placeholders are all known is used.
    # {value} is this feature; {<feature name>} any other feature of the same row; {s}, {es} and
    # {ies} are plural endings that agree with {value} ("1 ticket", "2 tickets", "1 delivery").
    reasons: tuple[str, ...] = ()
    reason_missing: str | None = None  # used when the feature's value is null
    unit: str = ""
    actionable: bool = True
    explainable: bool = True
    window: int | None = None
    # A driver is an experience or a change of behaviour that can make a user leave (late deliveries,
    # open tickets, coupon dependence, fading activity); it leads the reasons when the user's value
    # shows it (`driver_if(value)`: "2 late deliveries" does, "0 late deliveries" does not). None
    # marks a state feature (recency, volume, tenure, spend): it describes where the user stands,
    # which every leaving user shares, so it only leads when no driver raises the risk.
    driver_if: Callable[[float], bool] | None = field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> str:
        """'driver' or 'state' (see driver_if)."""
        return "state" if self.driver_if is None else "driver"


def _engagement(windows: list[int]) -> list[Feature]:
    mid, long = windows[len(windows) // 2], windows[-1]
    out = [
        Feature(
            "days_since_last_activity",
            "engagement",
            "Days from the last event of any kind to the cutoff",
            lambda c: c.days_since("last_ts"),
            (
                "Last seen {value:.0f} day{s} ago (usual gap between visits: {mean_gap_days_90d:.1f} days)",
                "Last seen {value:.0f} day{s} ago",
            ),
            unit="days",
        ),
        Feature(
            f"active_days_trend_{mid}d",
            "engagement",
            f"Active days in the last {mid} days minus active days in the {mid} days before",
            lambda c: c.active_days(mid) - c.active_days(where=c.between(mid, 2 * mid)),
            (
                f"Active on {{active_days_{mid}d:.0f}} days in the last {mid}, "
                f"vs {{active_days_prev_{mid}d:.0f}} in the {mid} before",
            ),
            unit="days",
            window=mid,
            driver_if=lambda v: v < 0,
        ),
        Feature(
            f"active_days_prev_{mid}d",
            "engagement",
            f"Active days in the {mid} days before the last {mid}",
            lambda c: c.active_days(where=c.between(mid, 2 * mid)),
            (f"Active on {{value:.0f}} day{{s}} in the {mid} days before the last {mid}",),
            unit="days",
            window=2 * mid,
            explainable=False,
        ),
        Feature(
            f"mean_gap_days_{long}d",
            "engagement",
            f"Mean days between active days within the last {long} days",
            lambda c: ratio(
                c.rows.d.max(where=c.within(long)) - c.rows.d.min(where=c.within(long)),
                c.active_days(long) - 1,
            ),
            (f"Visits every {{value:.0f}} day{{s}} on average over the last {long} days",),
            unit="days",
            window=long,
        ),
    ]
    for w in windows:
        out += [
            Feature(
                f"active_days_{w}d",
                "engagement",
                f"Days with any event in the last {w} days",
                lambda c, w=w: c.active_days(w),
                (f"Active on {{value:.0f}} of the last {w} days",),
                unit="days",
                window=w,
            ),
            Feature(
                f"sessions_{w}d",
                "engagement",
                f"Sessions in the last {w} days",
                lambda c, w=w: c.sum("n_session", w),
                (f"{{value:.0f}} visit{{s}} in the last {w} days",),
                unit="sessions",
                window=w,
            ),
            Feature(
                f"views_{w}d",
                "engagement",
                f"Product views in the last {w} days",
                lambda c, w=w: c.sum("n_view", w),
                (f"{{value:.0f}} product view{{s}} in the last {w} days",),
                unit="views",
                window=w,
            ),
        ]
    out.append(
        Feature(
            f"searches_{long}d",
            "engagement",
            f"Searches in the last {long} days",
            lambda c: c.sum("n_search", long),
            (f"{{value:.0f}} search{{es}} in the last {long} days",),
            unit="searches",
            window=long,
        )
    )
    return out


def _mean_gap(c: SnapshotContext) -> ibis.Expr:
    return ratio(c.sum("purchase_gap"), c.history("sum_gap_n"))


def _gap_cv(c: SnapshotContext) -> ibis.Expr:
    n = c.history("sum_gap_n").cast("float64")
    mean = ratio(c.sum("purchase_gap"), n)
    mean_sq = ratio(c.history("sum_gap_sq").cast("float64"), n)
    var = (mean_sq - mean * mean).clip(lower=0)
    return ibis.ifelse(n >= 2, ratio(var.sqrt(), mean), ibis.null("float64"))


def _purchase(windows: list[int]) -> list[Feature]:
    mid, long = windows[len(windows) // 2], windows[-1]
    out = [
        Feature(
            "days_since_last_purchase",
            "purchase",
            "Days from the last order to the cutoff",
            lambda c: c.days_since("last_purchase_ts"),
            (
                "No order for {value:.0f} day{s} (usually every {mean_interpurchase_days:.0f})",
                "No order for {value:.0f} day{s}",
            ),
            reason_missing="Has never ordered",
            unit="days",
        ),
        Feature(
            "orders_total",
            "purchase",
            "Orders before the cutoff",
            lambda c: c.sum("n_orders"),
            ("{value:.0f} order{s} in total",),
            unit="orders",
        ),
        Feature(
            "purchase_days_total",
            "purchase",
            "Days with at least one order before the cutoff (BG/NBD frequency + 1)",
            lambda c: c.history("sum_purchase_days").fill_null(0).cast("float64"),
            ("Ordered on {value:.0f} different day{s}",),
            unit="days",
        ),
        Feature(
            "days_since_first_purchase",
            "purchase",
            "Days from the first order to the cutoff (BG/NBD customer age T)",
            lambda c: c.days_since_first_purchase(),
            ("First order {value:.0f} day{s} ago",),
            reason_missing="Has never ordered",
            unit="days",
            actionable=False,
        ),
        Feature(
            "revenue_total",
            "purchase",
            "Revenue of all orders before the cutoff",
            lambda c: c.sum_fixed("revenue"),
            ("Spent {value:,.0f} in total",),
            unit="currency",
        ),
        Feature(
            "avg_order_value",
            "purchase",
            "Mean revenue per order",
            lambda c: ratio(c.sum_fixed("revenue"), c.sum("n_orders")),
            ("Average order of {value:,.2f}",),
            unit="currency",
        ),
        Feature(
            "tenure_days",
            "purchase",
            "Days since the user's first event",
            lambda c: c.days_since_first(),
            ("Customer for {value:.0f} day{s}",),
            unit="days",
            actionable=False,
        ),
        Feature(
            "mean_interpurchase_days",
            "purchase",
            "Mean days between order days",
            _mean_gap,
            ("Usually orders every {value:.0f} day{s}",),
            unit="days",
        ),
        Feature(
            "interpurchase_cv",
            "purchase",
            "Coefficient of variation of days between order days (regularity)",
            _gap_cv,
            ("Irregular ordering rhythm (variation {value:.1f})",),
            unit="ratio",
        ),
        Feature(
            "purchase_overdue_ratio",
            "purchase",
            "Days since the last order / usual days between orders",
            lambda c: ratio(c.days_since("last_purchase_ts"), _mean_gap(c)),
            (
                "Order overdue: {days_since_last_purchase:.0f} days since the last, usually every "
                "{mean_interpurchase_days:.0f}",
            ),
            unit="ratio",
        ),
    ]
    out += [
        Feature(
            "monthly_order_rate",
            "purchase",
            "Orders per 30 days of tenure (a rate, comparable across customer ages)",
            lambda c: ratio(c.sum("n_orders") * 30, c.days_since_first().clip(lower=30)),
            ("Orders about {value:.1f} times a month",),
            unit="orders / 30 days",
        ),
        Feature(
            "monthly_revenue_rate",
            "purchase",
            "Revenue per 30 days of tenure",
            lambda c: ratio(c.sum_fixed("revenue") * 30, c.days_since_first().clip(lower=30)),
            ("Spends about {value:,.0f} a month",),
            unit="currency / 30 days",
        ),
        Feature(
            f"recent_order_share_{long}d",
            "purchase",
            f"Share of all orders placed in the last {long} days",
            lambda c: ratio(c.sum("n_orders", long), c.sum("n_orders")),
            (f"{{value:.0%}} of all orders were in the last {long} days",),
            unit="share",
            window=long,
        ),
    ]
    for w in sorted({mid, long}):
        out += [
            Feature(
                f"orders_{w}d",
                "purchase",
                f"Orders in the last {w} days",
                lambda c, w=w: c.sum("n_orders", w),
                (f"{{value:.0f}} order{{s}} in the last {w} days",),
                unit="orders",
                window=w,
            ),
            Feature(
                f"revenue_{w}d",
                "purchase",
                f"Revenue in the last {w} days",
                lambda c, w=w: c.sum_fixed("revenue", w),
                (f"Spent {{value:,.0f}} in the last {w} days",),
                unit="currency",
                window=w,
            ),
        ]
    return out


def _other_families(windows: list[int]) -> list[Feature]:
    long = windows[-1]
    return [
        Feature(
            f"carts_{long}d",
            "funnel",
            f"Add-to-cart events in the last {long} days",
            lambda c: c.sum("n_cart", long),
            (f"{{value:.0f}} item{{s}} added to cart in the last {long} days",),
            unit="carts",
            window=long,
        ),
        Feature(
            f"cart_conversion_{long}d",
            "funnel",
            f"Orders per add-to-cart in the last {long} days",
            lambda c: ratio(c.sum("n_orders", long), c.sum("n_cart", long)),
            (f"Only {{value:.0%}} of carts in the last {long} days became orders",),
            unit="ratio",
            window=long,
            driver_if=lambda v: v <= 0.5,
        ),
        Feature(
            f"abandoned_cart_days_{long}d",
            "funnel",
            f"Days with a cart but no order in the last {long} days",
            lambda c: c.sum("abandoned_cart", long),
            (f"Left a full cart on {{value:.0f}} day{{s}} in the last {long}",),
            unit="days",
            window=long,
            driver_if=_some,
        ),
        Feature(
            f"coupon_orders_{long}d",
            "promotion",
            f"Orders with a coupon in the last {long} days",
            lambda c: c.sum("n_coupon_orders", long),
            unit="orders",
            window=long,
            explainable=False,  # cited through coupon_share_{long}d
        ),
        Feature(
            f"coupon_share_{long}d",
            "promotion",
            f"Share of orders in the last {long} days that used a coupon",
            lambda c: ratio(c.sum("n_coupon_orders", long), c.sum("n_orders", long)),
            (
                f"Used a coupon on {{coupon_orders_{long}d:.0f}} of {{orders_{long}d:.0f}} orders "
                f"in the last {long} days",
                f"{{value:.0%}} of orders in the last {long} days used a coupon",
            ),
            unit="share",
            window=long,
            driver_if=_some,
        ),
        Feature(
            "coupon_orders_total",
            "promotion",
            "Orders with a coupon before the cutoff",
            lambda c: c.sum("n_coupon_orders"),
            unit="orders",
            explainable=False,  # cited through coupon_share_total
        ),
        Feature(
            "coupon_share_total",
            "promotion",
            "Share of all orders that used a coupon",
            lambda c: ratio(c.sum("n_coupon_orders"), c.sum("n_orders")),
            (
                "Used a coupon on {coupon_orders_total:.0f} of {orders_total:.0f} orders",
                "{value:.0%} of all orders used a coupon",
            ),
            unit="share",
            driver_if=_some,
        ),
        Feature(
            "days_since_last_coupon_order",
            "promotion",
            "Days from the last order with a coupon to the cutoff",
            lambda c: c.days_since("last_coupon_ts"),
            (
                "Last coupon order {value:.0f} day{s} ago (coupons on {coupon_orders_total:.0f} of "
                "{orders_total:.0f} orders)",
                "Last coupon order {value:.0f} day{s} ago",
            ),
            reason_missing="Has never used a coupon",
            unit="days",
            driver_if=_known,
        ),
        Feature(
            f"tickets_{long}d",
            "service",
            f"Support tickets opened in the last {long} days",
            lambda c: c.sum("n_support", long),
            (f"{{value:.0f}} support ticket{{s}} in the last {long} days",),
            unit="tickets",
            window=long,
            driver_if=_some,
        ),
        Feature(
            "open_tickets",
            "service",
            "Support tickets opened but not resolved before the cutoff",
            lambda c: (c.sum("n_support") - c.sum("n_support_resolved")).clip(lower=0),
            ("{value:.0f} support ticket{s} still open",),
            unit="tickets",
            driver_if=_some,
        ),
        Feature(
            f"deliveries_{long}d",
            "logistics",
            f"Deliveries in the last {long} days",
            lambda c: c.sum("delay_n", long),
            unit="deliveries",
            window=long,
            explainable=False,  # the reference point of late_deliveries_{long}d
        ),
        Feature(
            f"late_deliveries_{long}d",
            "logistics",
            f"Deliveries at least {LATE_DELIVERY_DAYS} days late in the last {long} days",
            lambda c: c.sum("late_n", long),
            (
                f"{{value:.0f}} of {{deliveries_{long}d:.0f}} deliveries in the last {long} days arrived late",
                f"{{value:.0f}} late deliver{{ies}} in the last {long} days",
            ),
            unit="deliveries",
            window=long,
            driver_if=_some,
        ),
        Feature(
            "late_deliveries_total",
            "logistics",
            f"Deliveries at least {LATE_DELIVERY_DAYS} days late, all history",
            lambda c: c.sum("late_n"),
            ("{value:.0f} late deliver{ies} since the first order",),
            unit="deliveries",
            driver_if=_some,
        ),
        Feature(
            f"late_order_low_ratings_{long}d",
            "logistics",
            f"Reviews rated {LOW_RATING} or less of orders delivered late, in the last {long} days",
            lambda c: c.sum("late_low_rating_n", long),
            (f"{{value:.0f}} review{{s}} of {LOW_RATING} stars or less after a late delivery in the last {long} days",),
            unit="reviews",
            window=long,
            driver_if=_some,
        ),
        Feature(
            f"delay_days_{long}d",
            "logistics",
            f"Days late summed over the deliveries of the last {long} days",
            lambda c: c.sum_fixed("delay_sum", long),
            (f"Deliveries in the last {long} days were {{value:.0f}} day{{s}} late in total",),
            unit="days",
            window=long,
            driver_if=lambda v: v >= 1,
        ),
        Feature(
            f"mean_delivery_delay_{long}d",
            "logistics",
            f"Mean days late of deliveries in the last {long} days",
            lambda c: ratio(c.sum_fixed("delay_sum", long), c.sum("delay_n", long)),
            (f"Deliveries in the last {long} days arrived {{value:.1f}} days late on average",),
            unit="days",
            window=long,
            driver_if=lambda v: v >= 1,
        ),
        Feature(
            f"max_delivery_delay_{long}d",
            "logistics",
            f"Longest delivery delay in the last {long} days",
            lambda c: c.rows.delay_max.max(where=c.within(long)).cast("float64"),
            (f"A delivery arrived {{value:.0f}} day{{s}} late in the last {long} days",),
            unit="days",
            window=long,
            driver_if=_late,
        ),
        Feature(
            f"mean_rating_{long}d",
            "satisfaction",
            f"Mean review rating in the last {long} days",
            lambda c: ratio(c.sum_fixed("rating_sum", long), c.sum("rating_n", long)),
            (f"Average review rating {{value:.1f}} of 5 in the last {long} days",),
            unit="stars",
            window=long,
            driver_if=lambda v: v <= 3,
        ),
        Feature(
            f"reviews_{long}d",
            "satisfaction",
            f"Reviews written in the last {long} days",
            lambda c: c.sum("rating_n", long),
            unit="reviews",
            window=long,
            explainable=False,  # the reference point of low_ratings_{long}d
        ),
        Feature(
            f"low_ratings_{long}d",
            "satisfaction",
            f"Reviews rated {LOW_RATING} or less in the last {long} days, except those of late deliveries",
            lambda c: c.sum("low_rating_n", long) - c.sum("late_low_rating_n", long),
            (
                f"{{value:.0f}} of {{reviews_{long}d:.0f}} reviews in the last {long} days rated "
                f"{LOW_RATING} stars or less",
                f"{{value:.0f}} review{{s}} of {LOW_RATING} stars or less in the last {long} days",
            ),
            unit="reviews",
            window=long,
            driver_if=_some,
        ),
        Feature(
            f"refunds_{long}d",
            "satisfaction",
            f"Refunds in the last {long} days",
            lambda c: c.sum("n_refund", long),
            (f"{{value:.0f}} refund{{s}} in the last {long} days",),
            unit="refunds",
            window=long,
            driver_if=_some,
        ),
        Feature(
            "refund_share_total",
            "satisfaction",
            "Refunded amount / ordered revenue, all history",
            lambda c: ratio(c.sum_fixed("refund_amount"), c.sum_fixed("revenue")),
            ("Refunded {value:.0%} of what they ordered",),
            unit="share",
            driver_if=_some,
        ),
        Feature(
            "tier",
            "loyalty",
            "Membership tier level at the cutoff (0 = none)",
            lambda c: c.history("tier").fill_null(0).cast("float64"),
            ("Membership level {value:.0f} (0 = not a member)",),
            unit="level",
        ),
    ]


def catalogue(windows: list[int]) -> list[Feature]:
    """All features for the given window lengths (days), in a stable order."""
    windows = sorted(set(windows))
    feats = _engagement(windows) + _purchase(windows) + _other_families(windows)
    names = [f.name for f in feats]
    assert len(names) == len(set(names)), "feature names must be unique"
    assert all(f.family in FAMILIES for f in feats)
    return feats


def catalogue_table(windows: list[int]) -> list[dict]:
    """The catalogue as plain records (for MLflow artifacts, the report and the docs)."""
    return [
        {
            "name": f.name,
            "family": f.family,
            "description": f.description,
            "unit": f.unit,
            "window_days": f.window,
            "actionable": f.actionable,
            "explainable": f.explainable,
            "kind": f.kind,
            "reasons": list(f.reasons),
            "reason_missing": f.reason_missing,
        }
        for f in catalogue(windows)
    ]
