"""The fast formulations give exactly what the straightforward ones give.

* the rollup (one group-by for what every event feeds, small side tables joined once for distinct
  orders, purchase gaps, tiers and late-order reviews) equals a one-aggregate reference rollup;
* DuckDB's epoch path (events read from Parquet) equals Ibis's portable epoch_seconds (in-memory events);
* snapshot_features for one cutoff with `single_cutoff` (history by a plain group-by) equals the
  general path (running history markers) for the same cutoff.

The fixture has tiers (two changes on one day, a change without a level), refunds, purchases
without order ids, line-item orders, coupons, bad reviews of late orders (before and after the
late delivery), reviews without order ids and events on both sides of midnight.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import ibis
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.events import ALL_ROLES, canonical_types
from features.labels import population
from features.rollup import FIXED_POINT, LATE_DELIVERY_DAYS, LOW_RATING, SECONDS_PER_DAY, user_day_rollup
from features.windows import cutoff_table, day_number, snapshot_features
from tests.conftest import make_events, random_events

WINDOWS = [7, 30, 60]
CUTOFFS = [dt.date(2024, 3, 1), dt.date(2024, 5, 13), dt.date(2024, 8, 20)]


def _hand_events() -> pd.DataFrame:
    rows = []

    def add(user: str, t: str, role: str, **kw) -> None:
        rows.append({"user_id": user, "event_time": t, "event_type": role, **kw})

    # purchases without order ids count one order each; a line-item order counts once, a coupon on any line counts
    add("h1", "2024-02-10T09:00:00Z", "purchase", amount=10.0)
    add("h1", "2024-02-10T10:00:00Z", "purchase", amount=12.5, discount=3.0)
    add("h1", "2024-02-10T11:00:00Z", "purchase", amount=20.0, order_id="L1")
    add("h1", "2024-02-10T11:00:00Z", "purchase", amount=5.0, order_id="L1", discount=1.0)
    add("h1", "2024-02-10T23:59:59.999999Z", "purchase", amount=7.0, order_id="L2")
    add("h1", "2024-02-11T00:00:00Z", "purchase", amount=8.0, order_id="L2")  # the same order on the next day
    add("h1", "2024-02-20T08:00:00Z", "refund", amount=-5.0, order_id="L1")
    add("h1", "2024-02-25T08:00:00Z", "session")
    # two tier changes on one day (the later one wins), then a membership event without a level
    add("h1", "2024-02-12T08:00:00Z", "membership", tier=2.0)
    add("h1", "2024-02-12T20:00:00Z", "membership", tier=1.0)
    add("h1", "2024-02-14T08:00:00Z", "membership")
    # a bad review after the order's late delivery counts; one before it, or without an order id, does not
    add("h2", "2024-02-01T08:00:00Z", "purchase", amount=30.0, order_id="K1")
    add("h2", "2024-02-03T08:00:00Z", "review", rating=1.0, order_id="K1")
    add("h2", "2024-02-05T08:00:00Z", "delivery", delivery_delay_days=4.0, order_id="K1")
    add("h2", "2024-02-06T08:00:00Z", "review", rating=2.0, order_id="K1")
    add("h2", "2024-02-06T09:00:00Z", "review", rating=1.0)
    add("h2", "2024-02-07T08:00:00Z", "delivery", delivery_delay_days=9.0, order_id="K1")  # a second late delivery
    add("h2", "2024-02-08T08:00:00Z", "review", rating=1.0, order_id="K1")
    add("h2", "2024-02-09T08:00:00Z", "delivery", delivery_delay_days=1.0, order_id="K2")
    add("h2", "2024-02-09T09:00:00Z", "review", rating=1.0, order_id="K2")  # an on-time order
    add("h2", "2024-02-28T23:00:00Z", "support")
    # a user whose first event is after the first cutoff
    add("h3", "2024-04-02T08:00:00Z", "purchase", amount=3.0, order_id="M1", discount=0.5)
    add("h3", "2024-04-02T08:00:00Z", "unknown_type")
    return make_events(rows)


def _events() -> pd.DataFrame:
    return pd.concat([_hand_events(), random_events(n_users=40, days=240, seed=3)], ignore_index=True)


def _reference_rollup(events) -> ibis.Table:
    """The rollup as one aggregate over all events (count DISTINCT orders, argmax tier) plus two joins."""
    events = canonical_types(events)
    ts = events.event_time.epoch_seconds().floor().cast("int64")
    e = events.mutate(ts=ts, d=ts // SECONDS_PER_DAY)
    role = e.event_type
    purchase = role == "purchase"
    delivery = (role == "delivery") & e.delivery_delay_days.notnull()
    review = (role == "review") & e.rating.notnull()

    def orders(where):
        return e.order_id.nunique(where=where & e.order_id.notnull()) + e.count(where=where & e.order_id.isnull())

    def fixed(values, where):
        return (values * FIXED_POINT).round().cast("int64").sum(where=where).fill_null(0)

    aggs = {"n_events": e.count(), "first_ts": e.ts.min(), "last_ts": e.ts.max()}
    aggs |= {f"n_{r}": e.count(where=role == r) for r in ALL_ROLES}
    aggs |= {
        "n_orders": orders(purchase),
        "n_coupon_orders": orders(purchase & (e.discount.fill_null(0) > 0)),
        "first_purchase_ts": e.ts.min(where=purchase),
        "last_purchase_ts": e.ts.max(where=purchase),
        "revenue": fixed(e.amount, purchase),
        "refund_amount": fixed(e.amount.abs(), role == "refund"),
        "delay_sum": fixed(e.delivery_delay_days, delivery),
        "delay_n": e.count(where=delivery),
        "delay_max": e.delivery_delay_days.max(where=delivery),
        "late_n": e.count(where=delivery & (e.delivery_delay_days >= LATE_DELIVERY_DAYS)),
        "rating_sum": fixed(e.rating, review),
        "rating_n": e.count(where=review),
        "low_rating_n": e.count(where=review & (e.rating <= LOW_RATING)),
        "tier_last": e.tier.argmax(e.ts, where=(role == "membership") & e.tier.notnull()),
        "last_coupon_ts": e.ts.max(where=purchase & (e.discount.fill_null(0) > 0)),
    }
    r = e.group_by(["user_id", "d"]).aggregate(**aggs)
    r = r.mutate(abandoned_cart=((r.n_cart > 0) & (r.n_orders == 0)).cast("int64"))
    late = e.filter((role == "delivery") & e.order_id.notnull() & (e.delivery_delay_days >= LATE_DELIVERY_DAYS))
    late = late.group_by(["user_id", "order_id"]).aggregate(o_ts=late.ts.min())
    late = late.select(o_user="user_id", o_order="order_id", o_ts="o_ts")
    rv = e.filter((role == "review") & (e.rating <= LOW_RATING) & e.order_id.notnull())
    rv = rv.join(late, (rv.user_id == late.o_user) & (rv.order_id == late.o_order) & (late.o_ts <= rv.ts))
    per_day = rv.group_by(["user_id", "d"]).aggregate(n=rv.count())
    j = r.left_join(per_day, ["user_id", "d"])
    r = j.select(*r.columns, late_low_rating_n=j.n.fill_null(0))
    p = r.filter(r.n_orders > 0)
    w = ibis.window(group_by="user_id", order_by="d")
    gaps = p.select("user_id", "d", purchase_gap=(p.d - p.d.lag().over(w)).cast("float64"))
    j = r.left_join(gaps, ["user_id", "d"])
    gap = j.purchase_gap
    return j.select(
        *[c for c in r.columns if c != "last_coupon_ts"],
        purchase_gap=gap,
        purchase_days=(j.n_orders > 0).cast("int64"),
        gap_n=gap.notnull().cast("int64"),
        gap_sq=gap * gap,
        last_coupon_ts=j.last_coupon_ts,
    )


def _frame(con, expr, keys: list[str]) -> pd.DataFrame:
    return con.to_pandas(expr).sort_values(keys).reset_index(drop=True)


@pytest.fixture
def parquet_events(con, tmp_path: Path):
    # a Parquet file as ingest writes it: read through DuckDB, the rollup takes its epoch path
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(_events(), preserve_index=False), path)
    return con.read_parquet(str(path))


def test_rollup_equals_the_one_aggregate_reference(con, parquet_events) -> None:
    fast = _frame(con, user_day_rollup(parquet_events), ["user_id", "d"])
    ref = _frame(con, _reference_rollup(parquet_events), ["user_id", "d"])
    pd.testing.assert_frame_equal(fast, ref, check_exact=True)
    # the fixture reaches the side tables: distinct and coupon orders, gaps, tiers, late-order reviews
    h1 = fast[fast["user_id"] == "h1"].set_index("d")
    day = day_number(dt.date(2024, 2, 10))
    assert h1.loc[day, ["n_orders", "n_coupon_orders"]].tolist() == [4, 2]
    assert h1.loc[day + 1, "purchase_gap"] == 1.0
    assert h1.loc[day + 2, "tier_last"] == 1.0
    assert fast.loc[fast["user_id"] == "h2", "late_low_rating_n"].tolist() == [0, 0, 0, 1, 0, 1, 0, 0]
    assert fast["tier_last"].notna().sum() > 5 and fast["n_coupon_orders"].sum() > 20


def test_duckdb_epoch_path_equals_the_portable_one(con, parquet_events) -> None:
    from_parquet = _frame(con, user_day_rollup(parquet_events), ["user_id", "d"])
    in_memory = _frame(con, user_day_rollup(ibis.memtable(_events())), ["user_id", "d"])
    pd.testing.assert_frame_equal(from_parquet, in_memory, check_exact=True)


@pytest.mark.parametrize("cutoff", CUTOFFS)
def test_single_cutoff_history_equals_the_running_markers(con, parquet_events, cutoff: dt.date) -> None:
    rolled = user_day_rollup(parquet_events).cache()
    pairs = population(rolled, cutoff_table([cutoff]), 60, "any")
    # plus users without any day before the cutoff: they still get a row, all history null
    later = rolled.filter(rolled.d >= day_number(cutoff)).select("user_id").distinct()
    later = later.mutate(cutoff_day=ibis.literal(day_number(cutoff), "int64"))
    pairs = pairs.union(later.anti_join(pairs, "user_id"))
    general = _frame(con, snapshot_features(rolled, pairs, WINDOWS), ["user_id", "cutoff_day"])
    single = _frame(con, snapshot_features(rolled, pairs, WINDOWS, single_cutoff=cutoff), ["user_id", "cutoff_day"])
    assert len(general) > 10
    pd.testing.assert_frame_equal(single, general, check_exact=True)
    # the history features the fast path computes differently are all reached
    reached = ("tier", "orders_total", "days_since_first_purchase", "interpurchase_cv", "days_since_last_coupon_order")
    for col in reached:
        assert col in general.columns, col
        assert general[col].notna().any(), col


@pytest.mark.parametrize("cutoff", CUTOFFS)
def test_a_rollup_merged_before_the_windows_gives_the_same_snapshots(con, parquet_events, cutoff: dt.date) -> None:
    from pipeline.build import build_snapshots, scoring_rollup
    from pipeline.config import Params

    params = Params.model_validate({"features": {"windows": WINDOWS}, "labels": {"lookback_days": 45}})
    daily = user_day_rollup(parquet_events).cache()
    merged = scoring_rollup(parquet_events, cutoff, params)
    if cutoff > CUTOFFS[0]:  # the first cutoff has no day before its windows
        assert con.execute(merged.count()) < con.execute(daily.count())  # days were merged
    for labelled in (False, True):
        want = build_snapshots(con, daily, [cutoff], params, labelled=labelled)
        got = build_snapshots(con, merged, [cutoff], params, labelled=labelled)
        assert len(want) > 10
        pd.testing.assert_frame_equal(got, want, check_exact=True)
