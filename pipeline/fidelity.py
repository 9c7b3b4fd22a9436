"""Explanation fidelity on the synthetic shop: does reason_1 name the cause that was planted?"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from pipeline.build import build_snapshots, scoring_rollup
from pipeline.config import Params
from pipeline.engine import connect, read_events
from pipeline.errors import WinbackError
from pipeline.paths import Paths
from pipeline.stages import score_population


def explanation_fidelity(lst: pd.DataFrame, churned: pd.Series, causes: pd.Series, tier: str = "high") -> dict:
    """Share of `tier` users who churned from a planted cause whose driver_family is that cause.

    `churned` (0/1) and `causes` (ground-truth cause, "none" for background churn) are indexed by
    user_id. Users who churned for no planted reason have nothing to be explained and are left out.
    """
    frame = lst.set_index("user_id")[["risk_tier", "driver_family"]]
    frame = frame.join(churned.rename("churned"), how="inner").join(causes.rename("cause"), how="inner")
    judged = frame[(frame["risk_tier"] == tier) & (frame["churned"] == 1) & (frame["cause"] != "none")]
    hit = judged["driver_family"] == judged["cause"]
    by_cause = {
        cause: {"users": len(g), "matches": int(hit[g.index].sum())} for cause, g in judged.groupby("cause", sort=True)
    }
    confusion = pd.crosstab(judged["cause"], judged["driver_family"]).to_dict(orient="index")
    return {
        "tier": tier,
        "users": len(judged),
        "matches": int(hit.sum()),
        "fidelity": float(hit.mean()) if len(judged) else float("nan"),
        "by_cause": by_cause,
        "confusion": {c: {f: int(n) for f, n in row.items() if n} for c, row in confusion.items()},
    }


def fidelity_at(model: Any, params: Params, paths: Paths, as_of: dt.date, version: str = "") -> dict:
    """Score the population at `as_of` with `model` and judge its reasons against the shop's truth."""
    if not paths.truth.exists():
        raise WinbackError(f"{paths.truth}: no ground truth; explanation fidelity needs the synthetic shop")
    con = connect(params)
    rows = build_snapshots(
        con, scoring_rollup(read_events(con, paths.events), as_of, params), [as_of], params, labelled=True
    )
    if rows.empty:
        raise WinbackError(f"no user is in the population at {as_of}")
    # every high-risk user is judged, not only the contact list's
    every = params.model_copy(update={"score": params.score.model_copy(update={"reasons_for": "all"})})
    lst = score_population(model, rows, every, as_of, version)
    truth = pd.read_parquet(paths.truth, columns=["user_id", "cause"]).set_index("user_id")["cause"]
    churned = rows.set_index("user_id")["churned"].astype(int)
    return {"as_of": as_of.isoformat(), **explanation_fidelity(lst, churned, truth)}
