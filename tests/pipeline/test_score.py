"""The win-back list contract: columns, ranks, tiers, segments, actions and the holdout group."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipeline.config import ScoreParams
from pipeline.score import (
    LIST_COLUMNS,
    compare_lists,
    holdout_groups,
    membership_tiers,
    recommended_actions,
    winback_list,
)

AS_OF = dt.date(2026, 7, 1)


def _inputs(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame(
        {
            "user_id": [f"u{i:04d}" for i in range(n)],
            "tenure_days": rng.integers(1, 700, n).astype(float),
            "revenue_total": rng.gamma(2, 100, n),
            "days_since_last_activity": rng.integers(0, 90, n).astype(float),
        }
    )
    family = rng.choice(["service", "logistics", "engagement"], n)
    reasons = pd.DataFrame(
        {
            "reason_1": "r1",
            "reason_2": "r2",
            "reason_3": "r3",
            "driver_family": family,
            "reason_1_family": family,
            "reason_2_family": "purchase",
            "reason_3_family": "engagement",
        }
    )
    return rows, rng.random(n), reasons


def sp_history(**kw) -> ScoreParams:
    """Score params with the lifetime-spend value rule: these tiny frames lack the BG/NBD inputs."""
    return ScoreParams(value_model="history", **kw)


COSTS = {"call": 8.0, "second-order offer": 5.0, "personalised recommendations": 0.5}


def test_list_contract() -> None:
    rows, p, reasons = _inputs()
    sp = sp_history(actions={"service": {"*": "call"}, "*": {"new": "second-order offer"}}, action_costs=COSTS)
    lst = winback_list(rows, p, reasons, sp, 60, AS_OF, "3")
    assert tuple(lst.columns) == LIST_COLUMNS
    assert lst["rank"].tolist() == list(range(1, len(rows) + 1))
    assert lst["churn_probability"].is_monotonic_decreasing
    assert set(lst["group"]) == {"holdout", "treatment"}
    assert set(lst["risk_tier"]) == {"high", "medium", "low"}
    high = lst[lst["risk_tier"] == "high"]["churn_probability"]
    assert (high >= 0.5).all()
    assert (lst["value_at_risk"] >= 0).all()
    assert (lst.loc[lst["segment"] == "new", "recommended_action"] == "second-order offer").all()
    svc = lst[(lst["driver_family"] == "service") & (lst["segment"] != "new")]
    assert (svc["recommended_action"] == "call").all()
    assert lst["model_version"].unique().tolist() == ["3"]


def test_probability_ties_are_ranked_by_the_raw_score() -> None:
    rows, p, reasons = _inputs(n=4)
    p = np.array([0.9, 0.9, 0.9, 0.2])
    raw = np.array([1.0, 3.0, 2.0, 5.0])
    lst = winback_list(rows, p, reasons, sp_history(), 60, AS_OF, "1", raw_score=raw)
    assert lst["user_id"].tolist() == ["u0001", "u0002", "u0000", "u0003"]


def test_rank_by_value_at_risk() -> None:
    rows, p, reasons = _inputs()
    lst = winback_list(rows, p, reasons, sp_history(rank_by="value_at_risk"), 60, AS_OF, "1")
    assert lst["value_at_risk"].is_monotonic_decreasing


def test_holdout_is_deterministic_independent_of_other_users_and_near_the_fraction() -> None:
    ids = pd.Series([f"user-{i}" for i in range(20_000)])
    g = holdout_groups(ids, AS_OF, 0.1, seed=1)
    assert abs((g == "holdout").mean() - 0.1) < 0.01
    np.testing.assert_array_equal(g[:50], holdout_groups(ids[:50][::-1], AS_OF, 0.1, seed=1)[::-1])
    other_day = holdout_groups(ids, AS_OF + dt.timedelta(days=7), 0.1, seed=1)
    assert (g != other_day).any()


def test_action_lookup_precedence() -> None:
    sp = ScoreParams(
        actions={"service": {"*": "care", "high-value": "vip care"}, "*": {"high-value": "perks"}},
        default_action="recs",
        action_costs={"care": 1, "vip care": 2, "perks": 3, "recs": 0},
    )
    fam = pd.Series(["service", "service", "logistics", "logistics"])
    seg = np.array(["high-value", "active", "high-value", "active"])
    assert recommended_actions(fam, seg, sp) == ["vip care", "care", "perks", "recs"]


def test_holdout_is_stratified_by_segment() -> None:
    ids = pd.Series([f"user-{i}" for i in range(3000)])
    segs = np.array(["new"] * 200 + ["active"] * 2000 + ["lapsing"] * 800)
    g = holdout_groups(ids, AS_OF, 0.1, seed=1, strata=segs)
    for seg, n in (("new", 200), ("active", 2000), ("lapsing", 800)):
        assert (g[segs == seg] == "holdout").sum() == round(0.1 * n)
    np.testing.assert_array_equal(g, holdout_groups(ids, AS_OF, 0.1, seed=1, strata=segs))


def test_compare_lists_reports_entries_exits_and_moves() -> None:
    prev = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "rank": [1, 2, 3, 4], "as_of": "2026-06-24"})
    cur = pd.DataFrame({"user_id": ["d", "a", "e", "b"], "rank": [1, 2, 3, 4], "as_of": "2026-07-01"})
    out = compare_lists(cur, prev)
    assert (out["new_entries"], out["exits"], out["stayed"]) == (1, 1, 3)
    assert out["top_new_entries"] == ["e"]
    assert out["previous_as_of"] == "2026-06-24"
    assert out["largest_rank_moves"][0] == {"user_id": "d", "previous_rank": 4, "rank": 1, "change": 3}


def test_every_action_needs_a_cost() -> None:
    with pytest.raises(ValueError, match="no cost for \\['call'\\]"):
        ScoreParams(actions={"service": {"*": "call"}})


def test_capacity_and_budget_bound_the_contacts_and_holdout_controls_share_the_rank_range() -> None:
    rows, p, reasons = _inputs(n=2000)
    sp = sp_history(holdout_fraction=0.2, contact_capacity=100, min_value_to_cost=0.0)
    lst = winback_list(rows, p, reasons, sp, 60, AS_OF, "1")
    contact, selected = lst["contact"], lst["selected"]
    assert contact.sum() == 100
    assert (lst.loc[contact, "group"] == "treatment").all()
    last = lst.loc[contact, "rank"].max()
    # every user down to the last contacted rank is selected; holdout users there are the controls
    assert selected.tolist() == (lst["rank"] <= last).tolist()
    assert (lst.loc[selected & (lst["group"] == "treatment"), "contact"]).all()
    assert 10 <= (selected & (lst["group"] == "holdout")).sum() <= 40
    # a budget of 20 buys 40 recommendations at 0.5
    by_budget = winback_list(rows, p, reasons, sp.model_copy(update={"budget": 20.0}), 60, AS_OF, "1")
    assert by_budget["contact"].sum() == 40
    assert by_budget.loc[by_budget["contact"], "action_cost"].sum() <= 20.0


def test_users_whose_value_at_risk_does_not_cover_the_cost_are_not_contacted() -> None:
    rows, p, reasons = _inputs(n=500)
    sp = sp_history(contact_capacity=10_000, min_value_to_cost=1.0, action_costs={"personalised recommendations": 30.0})
    lst = winback_list(rows, p, reasons, sp, 60, AS_OF, "1")
    assert lst["contact"].any() and not lst["contact"].all()
    assert (lst.loc[lst["contact"], "value_at_risk"] >= 30.0).all()
    assert not lst.loc[lst["value_at_risk"] < 30.0, "selected"].any()


def test_membership_tier_from_data_or_spend_bars() -> None:
    rows = pd.DataFrame({"revenue_total": [0.0, 350.0, 5000.0, 950.0], "tier": [0.0, 1.0, 3.0, 5.0]})
    assert membership_tiers(rows, ScoreParams()).tolist() == ["none", "silver", "platinum", "tier 5"]
    by_spend = ScoreParams(tier_names=["basic", "plus", "premium"], tier_spend_thresholds=[300.0, 900.0])
    assert membership_tiers(rows, by_spend).tolist() == ["basic", "plus", "premium", "premium"]
    assert membership_tiers(rows.drop(columns="tier"), ScoreParams()).tolist() == ["none"] * 4


@pytest.mark.parametrize("update", [{}, {"budget": 30.0}, {"min_value_to_cost": 2.0}, {"contact_capacity": 5000}])
def test_contact_list_reasons_explain_only_the_ranks_the_selection_needs(update: dict) -> None:
    rows, p, reasons = _inputs(n=6000, seed=3)
    calls: list[int] = []

    def explain(pos: np.ndarray) -> pd.DataFrame:
        calls.append(len(pos))
        return reasons.iloc[pos].reset_index(drop=True)

    sp = sp_history(**{"holdout_fraction": 0.2, "contact_capacity": 300, **update})
    every = winback_list(rows, p, reasons, sp.model_copy(update={"reasons_for": "all"}), 60, AS_OF, "1")
    lazy = winback_list(rows, p, explain, sp, 60, AS_OF, "1")
    explained = lazy["reason_1"].notna()
    # the same campaign either way; only users below the explained ranks lose their reasons and action
    pd.testing.assert_frame_equal(lazy[explained], every[explained])
    assert lazy[["selected", "contact"]].equals(every[["selected", "contact"]])
    assert explained.tolist() == (lazy["rank"] <= sum(calls)).tolist()
    assert lazy.loc[~explained, ["driver_family", "recommended_action", "action_cost"]].isna().all().all()
    if update.get("contact_capacity") == 5000:
        assert sum(calls) == len(rows)  # no capacity to stop at: everyone may be contacted, everyone is explained
    else:
        assert calls[0] == 1000 and sum(calls) < len(rows)
    assert every["reason_1"].notna().all()
