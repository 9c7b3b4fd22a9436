"""Measure a campaign: churn of a win-back list's treatment vs holdout users once the horizon has passed.

Outcome: the churn label of the pipeline (features/labels.py::churn_labels) at cutoff = the list's
as_of with the current `labels` params: churned = no qualifying event in [as_of, as_of + horizon).

Estimand: among the list's `selected` rows (the campaign's rank range, both groups; every row for
lists without the column), churn rate of the treatment group minus that of the holdout group. The
holdout is a random (keyed-hash) share of every segment, so the difference is the campaign's
intention-to-treat effect: what being on the contact list did, whether or not the contact happened.
Negative = fewer churners thanks to the campaign. The same comparison is made per recommended action
and per segment (each is a randomised comparison too, on fewer users).

Interval: Newcombe's hybrid score interval for a difference of independent proportions (Newcombe
1998, method 10): it combines the Wilson score intervals of the two rates. Unlike the Wald interval
it stays inside [-1, 1], keeps close to nominal coverage for small groups and rates near 0 or 1
(per-action and per-segment cells are small), and needs no iteration. The relative effect is the
risk ratio minus one with the Katz log interval; the p-value is the pooled two-proportion z-test.

From the contact log, also: how many treatment users were actually contacted (compliance), how many
held-out users were contacted anyway (contamination), and contacted-per-log vs holdout ("as treated"),
which is biased whenever who gets reached depends on the user (reachable users churn less anyway):
read it next to the intention-to-treat effect, never instead. The complier effect (intention-to-treat
/ compliance difference, Bloom's estimator) is given with the ITT interval scaled the same way.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from pipeline import io
from pipeline.campaign import list_as_of, list_path, read_list
from pipeline.config import Params
from pipeline.errors import WinbackError
from pipeline.paths import Paths

METHOD = "Newcombe hybrid score interval (method 10) for the difference; Katz log interval for the risk ratio"


def wilson_interval(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion x/n (no continuity correction)."""
    if n <= 0:
        return (0.0, 1.0)
    z = norm.ppf(0.5 + confidence / 2)
    p = x / n
    centre = (2 * n * p + z * z) / (2 * (n + z * z))
    half = z * math.sqrt(z * z + 4 * n * p * (1 - p)) / (2 * (n + z * z))
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 (x1/n1 - x2/n2), from the two Wilson intervals."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def wald_interval(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """The textbook Wald interval for p1 - p2 (for reference; the report uses Newcombe's)."""
    z = norm.ppf(0.5 + confidence / 2)
    p1, p2 = x1 / n1, x2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return (p1 - p2 - z * se, p1 - p2 + z * se)


def risk_ratio_interval(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """Risk ratio (x1/n1) / (x2/n2) with the Katz log interval; NaN when a group has no event."""
    if x1 == 0 or x2 == 0:
        return (float("nan"),) * 3
    z = norm.ppf(0.5 + confidence / 2)
    rr = (x1 / n1) / (x2 / n2)
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2)
    return (rr, rr * math.exp(-z * se), rr * math.exp(z * se))


def two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled z-test of p1 = p2."""
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return float(2 * norm.sf(abs(x1 / n1 - x2 / n2) / se))


def compare(treatment: np.ndarray, holdout: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Churn of treatment vs holdout (0/1 outcomes): rates, difference with its interval, relative effect."""
    n1, n2 = len(treatment), len(holdout)
    x1, x2 = int(np.sum(treatment)), int(np.sum(holdout))
    out: dict[str, Any] = {
        "treatment_users": n1,
        "treatment_churned": x1,
        "treatment_churn_rate": x1 / n1 if n1 else None,
        "holdout_users": n2,
        "holdout_churned": x2,
        "holdout_churn_rate": x2 / n2 if n2 else None,
        "difference": None,
        "ci_low": None,
        "ci_high": None,
        "relative_effect": None,
        "relative_ci_low": None,
        "relative_ci_high": None,
        "p_value": None,
        "retained_users": None,
    }
    if n1 == 0 or n2 == 0:
        return out
    lo, hi = newcombe_interval(x1, n1, x2, n2, confidence)
    rr, rr_lo, rr_hi = risk_ratio_interval(x1, n1, x2, n2, confidence)
    diff = x1 / n1 - x2 / n2

    def finite(v: float) -> float | None:
        return None if math.isnan(v) else v - 1

    out |= {
        "difference": diff,
        "ci_low": lo,
        "ci_high": hi,
        "relative_effect": finite(rr),
        "relative_ci_low": finite(rr_lo),
        "relative_ci_high": finite(rr_hi),
        "p_value": two_proportion_p_value(x1, n1, x2, n2),
        # churners the campaign avoided among the treated (negative: it caused churn)
        "retained_users": -diff * n1,
    }
    return out


def effect_table(frame: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per comparison: overall, per recommended_action, per segment (selected rows only).

    `frame` has group, churned (0/1), recommended_action, segment, selected.
    """
    sel = frame[frame["selected"]]
    rows = []
    scopes: list[tuple[str, str, pd.DataFrame]] = [("overall", "all", sel)]
    for col, scope in (("recommended_action", "action"), ("segment", "segment")):
        scopes += [(scope, str(level), g) for level, g in sel.groupby(col, sort=True)]
    for scope, level, g in scopes:
        t = g.loc[g["group"] == "treatment", "churned"].to_numpy()
        h = g.loc[g["group"] == "holdout", "churned"].to_numpy()
        rows.append({"scope": scope, "level": level, **compare(t, h, confidence)})
    return pd.DataFrame(rows)


def contacts_in_window(contacts: pd.DataFrame, as_of: dt.date, horizon_days: int) -> pd.DataFrame:
    """Logged contacts that belong to this campaign: contacted_at in [as_of, as_of + horizon)."""
    start = pd.Timestamp(as_of, tz="UTC")
    end = start + pd.Timedelta(days=horizon_days)
    at = contacts["contacted_at"]
    return contacts[(at >= start) & (at < end)]


def log_comparison(frame: pd.DataFrame, logged: pd.DataFrame, confidence: float = 0.95) -> dict[str, Any]:
    """Compliance, contamination, as-treated and complier effects from the contact log (selected rows)."""
    sel = frame[frame["selected"]]
    reached = sel["user_id"].isin(set(logged["user_id"]))
    treat, hold = sel["group"] == "treatment", sel["group"] == "holdout"
    c_t = float(reached[treat].mean()) if treat.any() else 0.0
    c_h = float(reached[hold].mean()) if hold.any() else 0.0
    out: dict[str, Any] = {
        "contacts_in_window": len(logged),
        "contacted_users": int(logged["user_id"].nunique()),
        "contacted_not_on_list": int((~logged["user_id"].isin(set(frame["user_id"]))).sum()),
        "treatment_contacted_share": c_t,
        "holdout_contacted_share": c_h,
        "planned_contacts": int(sel["contact"].sum()),
        "planned_contacted_share": float(reached[sel["contact"]].mean()) if sel["contact"].any() else None,
        "as_treated": compare(
            sel.loc[treat & reached, "churned"].to_numpy(), sel.loc[hold, "churned"].to_numpy(), confidence
        ),
        "complier_effect": None,
        "complier_ci_low": None,
        "complier_ci_high": None,
    }
    itt = compare(sel.loc[treat, "churned"].to_numpy(), sel.loc[hold, "churned"].to_numpy(), confidence)
    gap = c_t - c_h
    if itt["difference"] is not None and gap > 0:
        out |= {
            "complier_effect": itt["difference"] / gap,
            "complier_ci_low": itt["ci_low"] / gap,
            "complier_ci_high": itt["ci_high"] / gap,
        }
    return out


def outcomes(lst: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The list with each user's churn label; rows without a label (not in the population) are dropped."""
    frame = lst.merge(labels[["user_id", "churned"]], on="user_id", how="left")
    unlabelled = int(frame["churned"].isna().sum())
    frame = frame[frame["churned"].notna()].copy()
    frame["churned"] = frame["churned"].astype(int)
    return frame, unlabelled


def measure_campaign(
    lst: pd.DataFrame,
    labels: pd.DataFrame,
    contacts: pd.DataFrame,
    horizon_days: int,
    confidence: float = 0.95,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The whole measurement from a list (read_list), its users' churn labels and the contact log."""
    as_of = list_as_of(lst)
    frame, unlabelled = outcomes(lst, labels)
    table = effect_table(frame, confidence)

    def by(scope: str) -> dict[str, Any]:
        part = table[table["scope"] == scope].drop(columns="scope").set_index("level")
        return {str(k): _clean(v) for k, v in part.to_dict("index").items()}

    logged = contacts_in_window(contacts, as_of, horizon_days)
    result = {
        "as_of": as_of.isoformat(),
        "horizon_days": horizon_days,
        "confidence": confidence,
        "method": METHOD,
        "estimand": "churn rate of selected treatment users minus that of selected holdout users (intention to treat)",
        "rows": {
            "list": len(lst),
            "selected": int(lst["selected"].sum()),
            "selected_treatment": int((lst["selected"] & (lst["group"] == "treatment")).sum()),
            "selected_holdout": int((lst["selected"] & (lst["group"] == "holdout")).sum()),
            "unlabelled": unlabelled,
            "has_selected_column": bool(lst.attrs.get("has_selected", True)),
        },
        "overall": by("overall").get("all"),
        "by_action": by("action"),
        "by_segment": by("segment"),
        "contact_log": log_comparison(frame, logged, confidence),
    }
    result["contact_log"]["as_treated"] = _clean(result["contact_log"]["as_treated"])
    return result, table


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """JSON-friendly values: numpy scalars to Python, NaN to None."""
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and math.isnan(v):
            v = None
        out[k] = v
    return out


def run_measure(params: Params, paths: Paths, which: str | Path, confidence: float = 0.95) -> dict[str, Any]:
    """Stage: measure the campaign of one list; writes measure.json and measure.csv beside the list."""
    from pipeline.build import data_span, rollup
    from pipeline.campaign import labels_at
    from pipeline.contacts import read_contacts
    from pipeline.engine import connect, read_events

    if not 0 < confidence < 1:
        raise WinbackError(f"confidence must be between 0 and 1 (got {confidence})")
    path = list_path(paths, which)
    lst = read_list(path)
    as_of = list_as_of(lst)
    horizon = params.labels.horizon_days
    if not paths.events.exists():
        raise WinbackError(f"{paths.events}: no ingested events; run `winback ingest` first")
    con = connect(params)
    _, end = data_span(con, rollup(read_events(con, paths.events)))
    need = as_of + dt.timedelta(days=horizon)
    if end < need:
        raise WinbackError(
            f"horizon not passed: data ends {end.isoformat()}, need {need.isoformat()} "
            f"(the list's as_of {as_of.isoformat()} + labels.horizon_days {horizon}); measure again later"
        )
    labels = labels_at(params, paths.events, as_of)
    result, table = measure_campaign(lst, labels, read_contacts(paths.contacts), horizon, confidence)
    result |= {"list": str(path), "data_end": end.isoformat(), "outcome": outcome_text(params)}
    out_dir = Path(path).parent
    io.write_json(result, out_dir / "measure.json")
    io.write_csv(table, out_dir / "measure.csv")
    return result


def outcome_text(params: Params) -> str:
    """The churn definition in words."""
    lp = params.labels
    kind = "" if lp.qualifying == "any" else " / ".join(lp.qualifying) + " "
    return (
        f"churned = no {kind}event in [as_of, as_of + {lp.horizon_days} days), among users with a {kind}event "
        f"in the {lp.lookback_days} days before as_of"
    )
