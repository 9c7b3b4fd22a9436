"""Assemble the ranked win-back list (DESIGN 3.3) from a scored population."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

import numpy as np
import pandas as pd

from pipeline.config import ScoreParams
from pipeline.value import expected_value

REASON_COLUMNS: tuple[str, ...] = (
    "reason_1",
    "reason_2",
    "reason_3",
    "driver_family",
    "reason_1_family",
    "reason_2_family",
    "reason_3_family",
)
LIST_COLUMNS: tuple[str, ...] = (
    "rank",
    "user_id",
    "churn_probability",
    "risk_tier",
    "value_at_risk",
    "expected_value",
    "segment",
    "membership_tier",
    *REASON_COLUMNS,
    "recommended_action",
    "action_cost",
    "group",
    "selected",
    "contact",
    "model_version",
    "as_of",
)


def _uniform_hash(user_ids: pd.Series, as_of: dt.date, seed: int) -> np.ndarray:
    prefix = f"{seed}|{as_of.isoformat()}|".encode()
    digests = [hashlib.blake2b(prefix + uid.encode(), digest_size=8).digest() for uid in user_ids]
    return np.array([int.from_bytes(d, "big") for d in digests], dtype=np.float64) / 2.0**64


def holdout_groups(
    user_ids: pd.Series, as_of: dt.date, fraction: float, seed: int, strata: np.ndarray | None = None
) -> np.ndarray:
    """'holdout' for a seeded, deterministic pseudo-random `fraction` of users, else 'treatment'.

    A keyed hash of (seed, as_of, user_id) orders users the same way on any machine and for any row
    order. Without strata a user is held out when their hash is below `fraction` (independent of
    the other users); with strata (segments) the lowest-hash round(fraction x n) users of each
    stratum are held out, so every segment has its own control group of the configured size.
    """
    u = _uniform_hash(user_ids, as_of, seed)
    if strata is None:
        return np.where(u < fraction, "holdout", "treatment")
    frame = pd.DataFrame({"u": u, "s": np.asarray(strata)})
    rank = frame.groupby("s")["u"].rank(method="first").to_numpy()
    size = frame.groupby("s")["u"].transform("size").to_numpy()
    return np.where(rank <= np.floor(fraction * size + 0.5), "holdout", "treatment")


def risk_tiers(p: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """high / medium / low by the configured probability thresholds."""
    return np.select([p >= thresholds["high"], p >= thresholds["medium"]], ["high", "medium"], "low")


def segments(rows: pd.DataFrame, p: np.ndarray, sp: ScoreParams) -> np.ndarray:
    """Lifecycle segment by documented rules, first match wins.

    new: tenure < new_user_days; high-value: lifetime revenue in the top (1 - high_value_quantile)
    of the population; dormant: no activity for dormant_days or more; lapsing: no activity for
    lapsing_days or more; at-risk: churn probability in the high tier; active: everyone else.
    """
    revenue = rows["revenue_total"].astype("float64").fillna(0)
    hv_bar = revenue.quantile(sp.high_value_quantile)
    conds = [
        rows["tenure_days"].to_numpy() < sp.new_user_days,
        (revenue > 0).to_numpy() & (revenue >= hv_bar).to_numpy(),
        rows["days_since_last_activity"].to_numpy() >= sp.dormant_days,
        rows["days_since_last_activity"].to_numpy() >= sp.lapsing_days,
        p >= sp.tier_thresholds["high"],
    ]
    return np.select(conds, ["new", "high-value", "dormant", "lapsing", "at-risk"], "active")


def membership_tiers(rows: pd.DataFrame, sp: ScoreParams) -> np.ndarray:
    """Tier name per user: the data's membership level, or the lifetime-spend bars when configured."""
    if sp.tier_spend_thresholds is not None:
        spend = rows["revenue_total"].astype("float64").fillna(0).to_numpy()
        level = np.searchsorted(np.asarray(sp.tier_spend_thresholds, dtype=float), spend, side="right")
    elif "tier" in rows:
        level = rows["tier"].astype("float64").fillna(0).clip(lower=0).round().astype(int).to_numpy()
    else:
        level = np.zeros(len(rows), dtype=int)
    names = np.array(sp.tier_names + [f"tier {i}" for i in range(len(sp.tier_names), int(level.max(initial=0)) + 1)])
    return names[level]


def contact_selection(ranked: pd.DataFrame, sp: ScoreParams) -> tuple[np.ndarray, np.ndarray, bool]:
    """(selected, contact, settled) for a list (or its top ranks) in rank order.

    A user is eligible when their value at risk covers min_value_to_cost x their action's cost.
    Walking down the ranks, eligible treatment users are contacted until contact_capacity users or
    the budget is used; `selected` marks every eligible user, treatment or holdout, down to the last
    contacted rank, so the holdout users in it are the campaign's like-for-like control group.
    `settled` is True when the walk ended inside `ranked`, so ranks below it cannot change the result.
    """
    cost = ranked["action_cost"].to_numpy(float)
    eligible = ranked["value_at_risk"].to_numpy(float) >= sp.min_value_to_cost * cost
    treated = eligible & (ranked["group"].to_numpy() == "treatment")
    spend = np.cumsum(np.where(treated, cost, 0.0))
    count = np.cumsum(treated)
    within = (count <= sp.contact_capacity) & (spend <= (np.inf if sp.budget is None else sp.budget))
    contact = treated & within
    last = np.flatnonzero(contact).max(initial=-1)
    selected = eligible & (np.arange(len(ranked)) <= last)
    # capacity and budget only run out: once a treated user is over either, every later one is too
    settled = bool((treated & ~within).any())
    return selected, contact, settled


def recommended_actions(families: pd.Series, segs: np.ndarray, sp: ScoreParams) -> list[str]:
    """Action from the params table: family x segment, then any family x segment, then family x any."""
    table = sp.actions
    out = []
    for fam, seg in zip(families, segs, strict=True):
        for a, b in ((fam, seg), ("*", seg), (fam, "*")):
            action = table.get(a, {}).get(b)
            if action:
                break
        out.append(action or sp.default_action)
    return out


Explainer = Callable[[np.ndarray], pd.DataFrame]
# reasons are first computed for this many top ranks (at least), then for twice as many until the
# campaign's selection (capacity, budget) is settled inside them
FIRST_EXPLAINED = 1000


def winback_list(
    rows: pd.DataFrame,
    proba: np.ndarray,
    reasons: pd.DataFrame | Explainer,
    sp: ScoreParams,
    horizon_days: int,
    as_of: dt.date,
    model_version: str,
    raw_score: np.ndarray | None = None,
) -> pd.DataFrame:
    """The ranked list: one row per user in the population, highest churn probability first.

    Calibration (isotonic) maps many raw scores onto one probability; ties are broken by the
    uncalibrated model score so the ranking keeps the model's full resolution, then by user_id.
    `reasons` holds REASON_COLUMNS per row of `rows`, or is a function from row positions to them.
    With `sp.reasons_for == "contact_list"` only the top ranks the campaign's selection walks
    through are explained (their action and cost follow from the reasons); lower ranks keep null
    reasons, action and cost. With "all" every user is explained.
    """
    p = np.asarray(proba, dtype=float)
    segs = segments(rows, p, sp)
    value = expected_value(rows, horizon_days, sp.value_model)
    out = pd.DataFrame(
        {
            "user_id": rows["user_id"].astype(str).to_numpy(),
            "churn_probability": p.round(6),
            "risk_tier": risk_tiers(p, sp.tier_thresholds),
            "value_at_risk": (p * value).round(2),
            "expected_value": value.round(2),
            "segment": segs,
            "membership_tier": membership_tiers(rows, sp),
            "group": holdout_groups(rows["user_id"].astype(str), as_of, sp.holdout_fraction, sp.holdout_seed, segs),
            "model_version": str(model_version),
            "as_of": as_of.isoformat(),
            "_pos": np.arange(len(rows)),
        }
    )
    key = "value_at_risk" if sp.rank_by == "value_at_risk" else "churn_probability"
    out["_tiebreak"] = np.zeros(len(out)) if raw_score is None else np.asarray(raw_score, dtype=float)
    out = out.sort_values([key, "_tiebreak", "user_id"], ascending=[False, False, True], kind="stable")
    out = out.drop(columns="_tiebreak").reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    explain = reasons if callable(reasons) else lambda pos: reasons.iloc[pos].reset_index(drop=True)
    positions = out["_pos"].to_numpy()
    n = len(out)
    done = 0
    parts: list[pd.DataFrame] = []
    size = n if sp.reasons_for == "all" else min(n, max(FIRST_EXPLAINED, 2 * sp.contact_capacity))
    while True:
        part = explain(positions[done:size]).reset_index(drop=True)
        part["recommended_action"] = recommended_actions(part["driver_family"], segs[positions[done:size]], sp)
        part["action_cost"] = [sp.action_costs[a] for a in part["recommended_action"]]
        parts.append(part[[*REASON_COLUMNS, "recommended_action", "action_cost"]])
        done = size
        explained = pd.concat(parts, ignore_index=True)
        top = pd.concat([out.iloc[:done], explained], axis=1)
        selected, contact, settled = contact_selection(top, sp)
        if settled or done == n:
            break
        size = min(n, 2 * size)
    out = out.drop(columns="_pos").join(explained)
    out["selected"] = np.concatenate([selected, np.zeros(n - done, dtype=bool)])
    out["contact"] = np.concatenate([contact, np.zeros(n - done, dtype=bool)])
    return out[list(LIST_COLUMNS)]


def list_summary(lst: pd.DataFrame) -> dict:
    """Counts and totals of a win-back list for summary.json and the report."""
    contacts = lst["contact"].to_numpy(bool)
    return {
        "users": len(lst),
        "by_risk_tier": lst["risk_tier"].value_counts().sort_index().to_dict(),
        "by_group": lst["group"].value_counts().sort_index().to_dict(),
        "by_segment": lst["segment"].value_counts().sort_index().to_dict(),
        "by_driver_family": lst["driver_family"].value_counts().sort_index().to_dict(),
        "by_action": lst["recommended_action"].value_counts().sort_index().to_dict(),
        "by_membership_tier": lst["membership_tier"].value_counts().sort_index().to_dict(),
        "mean_churn_probability": float(lst["churn_probability"].mean()) if len(lst) else 0.0,
        "total_value_at_risk": float(lst["value_at_risk"].sum()),
        "campaign": {
            "contacts": int(contacts.sum()),
            "holdout_controls": int((lst["selected"] & (lst["group"] == "holdout")).sum()),
            "cost": float(lst.loc[contacts, "action_cost"].sum()),
            "value_at_risk_contacted": float(lst.loc[contacts, "value_at_risk"].sum()),
            "contacts_by_action": lst.loc[contacts, "recommended_action"].value_counts().sort_index().to_dict(),
        },
    }


def compare_lists(current: pd.DataFrame, previous: pd.DataFrame, top: int = 10) -> dict:
    """Week over week: users who entered or left the list and the largest rank moves."""
    cur = current.set_index("user_id")["rank"]
    prev = previous.set_index("user_id")["rank"]
    entered = cur.index.difference(prev.index)
    left = prev.index.difference(cur.index)
    both = cur.index.intersection(prev.index)
    moves = pd.DataFrame({"previous_rank": prev[both], "rank": cur[both]})
    moves["change"] = moves["previous_rank"] - moves["rank"]  # positive: moved up the list
    moves = moves.reindex(moves["change"].abs().sort_values(ascending=False, kind="stable").index).head(top)
    return {
        "previous_as_of": str(previous["as_of"].iloc[0]) if len(previous) else None,
        "new_entries": len(entered),
        "exits": len(left),
        "stayed": len(both),
        "top_new_entries": cur[entered].sort_values().head(top).index.tolist(),
        "largest_rank_moves": [
            {
                "user_id": uid,
                "previous_rank": int(r["previous_rank"]),
                "rank": int(r["rank"]),
                "change": int(r["change"]),
            }
            for uid, r in moves.iterrows()
        ],
    }
