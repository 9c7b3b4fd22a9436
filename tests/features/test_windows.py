"""Point-in-time features: exact values at window edges, and no leakage from after the cutoff."""

from __future__ import annotations

import datetime as dt

import ibis
import numpy as np
import pandas as pd
import pytest

from features.catalogue import catalogue
from features.rollup import user_day_rollup
from features.windows import cutoff_table, day_number, snapshot_features
from tests.conftest import make_events, random_events

CUTOFF = dt.date(2024, 3, 1)


def features_at(con, events: pd.DataFrame, cutoffs: list[dt.date], windows=(7, 30, 60)) -> pd.DataFrame:
    rolled = user_day_rollup(ibis.memtable(events))
    ct = cutoff_table(cutoffs)
    # every user with any event before the cutoff (the pipeline asks only for its population)
    pairs = rolled.join(ct, rolled.d < ct.cutoff_day).select("user_id", "cutoff_day").distinct()
    table = snapshot_features(rolled, pairs, list(windows))
    return con.to_pandas(table).sort_values(["cutoff_day", "user_id"]).reset_index(drop=True)


def test_event_exactly_at_cutoff_is_excluded_and_one_second_before_is_included(con) -> None:
    ev = make_events(
        [
            {"user_id": "a", "event_time": "2024-02-29 23:59:59", "event_type": "session"},
            {"user_id": "a", "event_time": "2024-03-01 00:00:00", "event_type": "session"},
            {"user_id": "a", "event_time": "2024-03-01 00:00:00", "event_type": "purchase", "amount": 50.0},
        ]
    )
    f = features_at(con, ev, [CUTOFF]).iloc[0]
    assert f["sessions_7d"] == 1
    assert f["orders_total"] == 0
    assert f["days_since_last_activity"] == pytest.approx(1 / 86_400)
    assert np.isnan(f["days_since_last_purchase"])


def test_window_edges_count_whole_days(con) -> None:
    # day 7 before the cutoff is inside the 7-day window; day 8 is outside
    ev = make_events(
        [
            {"user_id": "a", "event_time": "2024-02-23 00:00:00", "event_type": "session"},  # 7 days before
            {"user_id": "a", "event_time": "2024-02-22 23:59:59", "event_type": "session"},  # 8th day before
        ]
    )
    f = features_at(con, ev, [CUTOFF]).iloc[0]
    assert f["sessions_7d"] == 1
    assert f["sessions_30d"] == 2
    assert f["active_days_7d"] == 1


def test_purchase_family_values(con) -> None:
    ev = make_events(
        [
            {
                "user_id": "a",
                "event_time": "2024-01-01 10:00",
                "event_type": "purchase",
                "amount": 10.0,
                "order_id": "o1",
                "discount": 2.0,
            },
            {
                "user_id": "a",
                "event_time": "2024-01-11 10:00",
                "event_type": "purchase",
                "amount": 30.0,
                "order_id": "o2",
                "discount": 0.0,
            },
            # two lines of the same order count as one order
            {
                "user_id": "a",
                "event_time": "2024-01-31 10:00",
                "event_type": "purchase",
                "amount": 20.0,
                "order_id": "o3",
                "discount": 0.0,
            },
            {
                "user_id": "a",
                "event_time": "2024-01-31 10:00",
                "event_type": "purchase",
                "amount": 20.0,
                "order_id": "o3",
                "discount": 0.0,
            },
            {"user_id": "a", "event_time": "2024-02-05 10:00", "event_type": "refund", "amount": -20.0},
        ]
    )
    f = features_at(con, ev, [CUTOFF]).iloc[0]
    assert f["orders_total"] == 3
    assert f["revenue_total"] == 80
    assert f["avg_order_value"] == pytest.approx(80 / 3)
    assert f["mean_interpurchase_days"] == pytest.approx(15)  # gaps of 10 and 20 days
    assert f["interpurchase_cv"] == pytest.approx(5 / 15)
    assert f["days_since_last_purchase"] == pytest.approx(29 + 14 / 24)
    assert f["purchase_overdue_ratio"] == pytest.approx((29 + 14 / 24) / 15)
    assert f["coupon_share_total"] == pytest.approx(1 / 3)
    assert f["refund_share_total"] == pytest.approx(0.25)
    assert f["tenure_days"] == pytest.approx(60 - 10 / 24)
    assert f["purchase_days_total"] == 3
    assert f["days_since_first_purchase"] == pytest.approx(60 - 10 / 24)


def test_service_logistics_satisfaction_loyalty(con) -> None:
    ev = make_events(
        [
            {"user_id": "a", "event_time": "2024-02-01", "event_type": "support"},
            {"user_id": "a", "event_time": "2024-02-02", "event_type": "support"},
            {"user_id": "a", "event_time": "2024-02-03", "event_type": "support_resolved"},
            {"user_id": "a", "event_time": "2024-02-04", "event_type": "delivery", "delivery_delay_days": 5.0},
            {"user_id": "a", "event_time": "2024-02-05", "event_type": "delivery", "delivery_delay_days": 0.0},
            {"user_id": "a", "event_time": "2024-02-06", "event_type": "review", "rating": 1.0},
            {"user_id": "a", "event_time": "2024-02-07", "event_type": "review", "rating": 4.0},
            {"user_id": "a", "event_time": "2024-01-10", "event_type": "membership", "tier": 1.0},
            {"user_id": "a", "event_time": "2024-02-10", "event_type": "membership", "tier": 2.0},
            {"user_id": "a", "event_time": "2024-03-02", "event_type": "membership", "tier": 3.0},
        ]
    )
    f = features_at(con, ev, [CUTOFF]).iloc[0]
    assert f["tickets_60d"] == 2
    assert f["open_tickets"] == 1
    assert f["late_deliveries_60d"] == 1
    assert f["mean_delivery_delay_60d"] == pytest.approx(2.5)
    assert f["max_delivery_delay_60d"] == 5
    assert f["mean_rating_60d"] == pytest.approx(2.5)
    assert f["low_ratings_60d"] == 1
    assert f["late_order_low_ratings_60d"] == 0  # the bad review has no order id: not linked to a delivery
    assert f["tier"] == 2  # the tier-3 change happens after the cutoff


def test_bad_reviews_of_late_orders_count_as_logistics_only_after_the_late_delivery(con) -> None:
    ev = make_events(
        [
            # o1: delivered 5 days late, then rated 1: a delivery complaint
            {
                "user_id": "a",
                "event_time": "2024-02-04",
                "event_type": "delivery",
                "delivery_delay_days": 5.0,
                "order_id": "o1",
            },
            {"user_id": "a", "event_time": "2024-02-06", "event_type": "review", "rating": 1.0, "order_id": "o1"},
            # o2: on time, rated 2: a product complaint
            {
                "user_id": "a",
                "event_time": "2024-02-05",
                "event_type": "delivery",
                "delivery_delay_days": 0.0,
                "order_id": "o2",
            },
            {"user_id": "a", "event_time": "2024-02-07", "event_type": "review", "rating": 2.0, "order_id": "o2"},
            # o3: rated 1 before the cutoff, its late delivery only after it: not visible at the cutoff
            {"user_id": "a", "event_time": "2024-02-20", "event_type": "review", "rating": 1.0, "order_id": "o3"},
            {
                "user_id": "a",
                "event_time": "2024-03-03",
                "event_type": "delivery",
                "delivery_delay_days": 9.0,
                "order_id": "o3",
            },
        ]
    )
    f = features_at(con, ev, [CUTOFF]).iloc[0]
    assert f["late_order_low_ratings_60d"] == 1
    assert f["low_ratings_60d"] == 2  # o2 and o3
    assert f["reviews_60d"] == 3


def test_every_catalogue_feature_is_computed(con) -> None:
    f = features_at(con, random_events(), [CUTOFF])
    expected = {feat.name for feat in catalogue([7, 30, 60])}
    assert expected <= set(f.columns)
    assert len(f) > 10


def _perturb_after(events: pd.DataFrame, cutoff: dt.date, seed: int) -> pd.DataFrame:
    """Delete, change and add events at or after the cutoff; keep everything before it."""
    rng = np.random.default_rng(seed)
    edge = pd.Timestamp(cutoff, tz="UTC")
    before = events[events["event_time"] < edge]
    after = events[events["event_time"] >= edge].copy()
    after = after[rng.random(len(after)) < 0.5]  # delete about half
    after["amount"] = after["amount"] * 7  # change values
    after["event_type"] = rng.permutation(after["event_type"].to_numpy())
    extra = random_events(n_users=60, days=30, seed=seed + 1)  # new users and events after the cutoff
    extra["event_time"] = edge + (extra["event_time"] - extra["event_time"].min())
    return pd.concat([before, after, extra], ignore_index=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_leakage_changing_events_after_the_cutoff_leaves_features_identical(con, seed: int) -> None:
    events = random_events(seed=seed)
    cutoffs = [dt.date(2024, 2, 1), CUTOFF, dt.date(2024, 4, 15)]
    base = features_at(con, events, cutoffs)
    for c in cutoffs:
        changed = features_at(con, _perturb_after(events, c, seed), cutoffs)
        day = day_number(c)
        left = base[base["cutoff_day"] == day].reset_index(drop=True)
        right = changed[changed["cutoff_day"] == day]
        # users who only appear after the cutoff have no features at it
        right = right[right["user_id"].isin(left["user_id"])].reset_index(drop=True)
        pd.testing.assert_frame_equal(left, right)
