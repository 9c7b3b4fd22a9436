"""Population stability (PSI) of features and scores against the rows a model was trained on.

A reference profile is taken at training time (decile edges of every feature and of the score on the
training rows, with the share of rows in each bin and the share of nulls) and logged with the model,
so a scoring run compares its population with what its own model saw, whatever happened to the
snapshots since.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

BINS = 10
# a bin share is floored at this before the log: an empty bin would make PSI infinite
FLOOR = 1e-4


def _edges(values: np.ndarray, bins: int) -> list[float]:
    """Inner bin edges: the distinct deciles of the finite values (fewer for features with few values)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return sorted({float(q) for q in qs})


def shares(values: np.ndarray, edges: list[float]) -> list[float]:
    """Share of `values` per bin: len(edges) + 1 value bins (right-closed at each edge), then one for nulls."""
    values = np.asarray(values, dtype="float64")
    n = values.size
    if n == 0:
        return [0.0] * (len(edges) + 2)
    missing = ~np.isfinite(values)
    idx = np.searchsorted(np.asarray(edges, dtype="float64"), values[~missing], side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype("float64")
    return [*(counts / n).tolist(), float(missing.sum() / n)]


def profile(frame: pd.DataFrame, scores: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """The reference profile of `frame`'s columns and of `scores`: edges and bin shares each."""

    def one(v: np.ndarray) -> dict[str, Any]:
        edges = _edges(v, bins)
        return {"edges": edges, "shares": shares(v, edges)}

    return {
        "rows": len(frame),
        "bins": bins,
        "features": {c: one(frame[c].to_numpy("float64", na_value=np.nan)) for c in frame.columns},
        "score": one(np.asarray(scores, dtype="float64")),
    }


def psi(expected: list[float], actual: list[float]) -> float:
    """Population stability index sum((a - e) * ln(a / e)) over bins, shares floored at FLOOR."""
    e = np.maximum(np.asarray(expected, dtype="float64"), FLOOR)
    a = np.maximum(np.asarray(actual, dtype="float64"), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def compare(reference: dict[str, Any], frame: pd.DataFrame, scores: np.ndarray) -> dict[str, Any]:
    """PSI of every reference feature present in `frame` and of `scores`.

    `feature_psi` is a list of {feature, psi}, largest first (a list: JSON written with sorted keys keeps its order).
    """
    out: dict[str, float] = {}
    for name, ref in reference["features"].items():
        if name in frame.columns:
            now = shares(frame[name].to_numpy("float64", na_value=np.nan), ref["edges"])
            out[name] = round(psi(ref["shares"], now), 6)
    ranked = [{"feature": k, "psi": v} for k, v in sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))]
    score_psi = psi(reference["score"]["shares"], shares(scores, reference["score"]["edges"]))
    return {"reference_rows": reference["rows"], "score_psi": round(score_psi, 6), "feature_psi": ranked}


def realised_calibration(lst: pd.DataFrame, labels: pd.DataFrame, bins: int = BINS) -> dict[str, Any]:
    """Predicted churn probability of a past list against its users' realised churn, overall and for the holdout.

    `labels`: (user_id, churned) at the list's as_of. The holdout group was never contacted, so its
    realised churn is the model's own test; treatment users may have been won back by the campaign.
    Users no longer labelable (left the population definition) are counted apart.
    """
    from pipeline.metrics import expected_calibration_error

    frame = lst[["user_id", "group", "churn_probability"]].merge(labels, on="user_id", how="left")
    out: dict[str, Any] = {"users": len(frame), "unlabelled": int(frame["churned"].isna().sum())}
    frame = frame[frame["churned"].notna()]
    for part, rows in (("all", frame), ("holdout", frame[frame["group"] == "holdout"])):
        y = rows["churned"].to_numpy("int64")
        p = rows["churn_probability"].to_numpy("float64")
        out[part] = (
            {
                "users": len(rows),
                "mean_predicted": round(float(p.mean()), 6),
                "observed_rate": round(float(y.mean()), 6),
                "ece": round(expected_calibration_error(y, p, bins), 6),
                "brier": round(float(np.mean((p - y) ** 2)), 6),
            }
            if len(rows)
            else {"users": 0}
        )
    return out
