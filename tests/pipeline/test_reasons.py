"""Reason codes: user's own values, explainable features only, deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalogue import catalogue
from pipeline.reasons import reason_text, top_reasons

CAT = {f.name: f for f in catalogue([7, 30, 90])}


def test_reason_uses_the_users_values_and_a_reference_point() -> None:
    row = {"days_since_last_purchase": 47.2, "mean_interpurchase_days": 12.4}
    assert reason_text(CAT["days_since_last_purchase"], row) == "No order for 47 days (usually every 12)"
    # without the reference point the next template is used
    row = {"days_since_last_purchase": 47.2, "mean_interpurchase_days": float("nan")}
    assert reason_text(CAT["days_since_last_purchase"], row) == "No order for 47 days"
    assert reason_text(CAT["days_since_last_purchase"], {"days_since_last_purchase": float("nan")}) == (
        "Has never ordered"
    )


def test_plural_endings_agree_with_the_value() -> None:
    assert reason_text(CAT["open_tickets"], {"open_tickets": 1.0}) == "1 support ticket still open"
    assert reason_text(CAT["open_tickets"], {"open_tickets": 3.0}) == "3 support tickets still open"
    assert reason_text(CAT["late_deliveries_90d"], {"late_deliveries_90d": 1.0}) == (
        "1 late delivery in the last 90 days"
    )
    assert reason_text(CAT["searches_90d"], {"searches_90d": 2.0}) == "2 searches in the last 90 days"


def test_every_template_formats_for_typical_values() -> None:
    row = {name: 2.0 for name in CAT}
    for feature in CAT.values():
        text = reason_text(feature, row)
        assert "{" not in text and text, feature.name


def test_top_reasons_order_by_contribution_and_skip_unexplainable() -> None:
    features = ["open_tickets", "active_days_prev_30d", "days_since_last_activity", "tier"]
    rows = pd.DataFrame(
        {
            "open_tickets": [2.0, 0.0],
            "active_days_prev_30d": [9.0, 1.0],
            "days_since_last_activity": [40.0, 3.0],
            "tier": [1.0, 0.0],
        }
    )
    contrib = np.array([[0.9, 5.0, 0.4, -0.2], [-0.1, 5.0, 0.2, 0.3]])
    out = top_reasons(contrib, rows, features, CAT)
    assert list(out.iloc[0][["reason_1", "reason_2", "reason_3"]]) == [
        "2 support tickets still open",
        "Last seen 40 days ago",
        "Membership level 1 (0 = not a member)",
    ]
    assert out.iloc[0]["driver_family"] == "service"
    assert out.iloc[1]["reason_1"] == "Membership level 0 (0 = not a member)"
    assert out.iloc[1]["driver_family"] == "loyalty"
    # active_days_prev_30d is not explainable on its own: never cited despite the largest contribution
    assert not out.apply(lambda r: r.str.contains("before the last").any(), axis=1).any()
    pd.testing.assert_frame_equal(out, top_reasons(contrib, rows, features, CAT))


def test_reasons_prefer_distinct_families_then_fill() -> None:
    features = ["open_tickets", "tickets_90d", "days_since_last_activity"]
    rows = pd.DataFrame({"open_tickets": [1.0], "tickets_90d": [1.0], "days_since_last_activity": [20.0]})
    out = top_reasons(np.array([[0.9, 0.8, 0.1]]), rows, features, CAT).iloc[0]
    assert [out["reason_1"], out["reason_2"], out["reason_3"]] == [
        "1 support ticket still open",
        "Last seen 20 days ago",
        "1 support ticket in the last 90 days",
    ]


def test_unknown_values_are_never_cited_and_risk_raising_reasons_come_first() -> None:
    features = ["mean_gap_days_90d", "refunds_90d", "open_tickets", "days_since_last_activity"]
    rows = pd.DataFrame(
        {"mean_gap_days_90d": [np.nan], "refunds_90d": [0.0], "open_tickets": [2.0], "days_since_last_activity": [9.0]}
    )
    out = top_reasons(np.array([[0.9, -0.2, 0.5, 0.1]]), rows, features, CAT).iloc[0]
    # a driver is cited only when the user's value shows it: "0 refunds" explains nothing
    assert [out["reason_1"], out["reason_2"], out["reason_3"]] == [
        "2 support tickets still open",
        "Last seen 9 days ago",
        "",
    ]
