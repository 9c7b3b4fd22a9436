"""Out-of-time classification metrics and the curves behind the DVC plots."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

_EPS = 1e-6


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Population-weighted mean |observed rate - mean prediction| over equal-width probability bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            err += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(err)


def _top(p: np.ndarray, fraction: float) -> np.ndarray:
    # stable ordering so ties resolve the same way every run
    k = min(len(p), max(1, round(len(p) * fraction)))
    order = np.argsort(-p, kind="stable")
    mask = np.zeros(len(p), dtype=bool)
    mask[order[:k]] = True
    return mask


def capacity_metrics(y: np.ndarray, p: np.ndarray, value: np.ndarray, capacity: int) -> dict:
    """Precision and recall among the `capacity` highest-risk users, and the share of churners' value they hold."""
    y = np.asarray(y, dtype=int)
    k = min(capacity, len(y))
    top = _top(np.asarray(p, dtype=float), k / len(y)) if len(y) else np.zeros(0, bool)
    churn_value = np.where(y == 1, np.nan_to_num(np.asarray(value, dtype=float)), 0.0)
    return {
        "precision_at_k": float(y[top].mean()) if k else float("nan"),
        "recall_at_k": float(y[top].sum() / max(y.sum(), 1)),
        "value_recall_at_k": float(churn_value[top].sum() / churn_value.sum()) if churn_value.sum() > 0 else 0.0,
        "k": int(k),
    }


def classification_metrics(y: np.ndarray, p: np.ndarray, top_fraction: float = 0.1, bins: int = 10) -> dict:
    """ROC-AUC, PR-AUC, log loss, Brier, ECE, and lift / recall / precision in the top fraction."""
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    top = _top(p, top_fraction)
    base = y.mean()
    pct = round(top_fraction * 100)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p, bins),
        f"lift_top{pct}": float(y[top].mean() / base) if base > 0 else float("nan"),
        f"recall_top{pct}": float(y[top].sum() / max(y.sum(), 1)),
        f"precision_top{pct}": float(y[top].mean()),
        "base_rate": float(base),
        "rows": len(y),
    }


def _thin(df: pd.DataFrame, max_points: int = 200) -> pd.DataFrame:
    if len(df) <= max_points:
        return df
    keep = np.unique(np.linspace(0, len(df) - 1, max_points).round().astype(int))
    return df.iloc[keep]


def curves(y: np.ndarray, scores: dict[str, np.ndarray], bins: int = 10) -> dict[str, pd.DataFrame]:
    """ROC, precision-recall, calibration and cumulative-gains points, one `model` column per curve."""
    y = np.asarray(y, dtype=int)
    out: dict[str, list[pd.DataFrame]] = {"roc": [], "pr": [], "calibration": [], "gains": []}
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        out["roc"].append(_thin(pd.DataFrame({"fpr": fpr, "tpr": tpr})).assign(model=name))
        prec, rec, _ = precision_recall_curve(y, p)
        out["pr"].append(_thin(pd.DataFrame({"recall": rec, "precision": prec})).assign(model=name))
        idx = np.minimum((np.asarray(p) * bins).astype(int), bins - 1)
        cal = (
            pd.DataFrame({"bin": idx, "p": p, "y": y})
            .groupby("bin")
            .agg(mean_predicted=("p", "mean"), observed_rate=("y", "mean"), rows=("y", "size"))
            .reset_index(drop=True)
        )
        out["calibration"].append(cal.assign(model=name))
        order = np.argsort(-np.asarray(p), kind="stable")
        gains = pd.DataFrame(
            {
                "contacted_share": np.arange(1, len(y) + 1) / len(y),
                "churners_caught_share": np.cumsum(y[order]) / max(y.sum(), 1),
            }
        )
        out["gains"].append(_thin(gains).assign(model=name))
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


def calibration_figure(calibration: pd.DataFrame) -> Figure:
    """Reliability diagram: observed churn rate against mean predicted probability, per model."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect")
    for name, part in calibration.groupby("model", sort=True):
        ax.plot(part["mean_predicted"], part["observed_rate"], marker="o", label=name)
    ax.set_xlabel("mean predicted churn probability")
    ax.set_ylabel("observed churn rate")
    ax.legend()
    fig.tight_layout()
    return fig
