"""SHAP explanations equal to LightGBM's exact TreeSHAP (`pred_contrib`), in log-odds space."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import shap

from features.catalogue import Feature
from pipeline import treeshap


def shap_values(booster: lgb.LGBMClassifier, X: pd.DataFrame) -> np.ndarray:
    """Per-row, per-feature SHAP values (the bias column dropped); equal to shap.TreeExplainer's."""
    # pred_contrib's numbers from tables built once per booster (pipeline/treeshap.py, many times faster), with
    # pred_contrib itself for what the tables cannot represent; threads as the model's n_jobs, as pred_contrib used
    n_jobs = getattr(booster, "n_jobs", None)
    return treeshap.shap_values(booster, X, threads=n_jobs if isinstance(n_jobs, int) and n_jobs > 0 else None)


def global_importance(values: np.ndarray, features: list[str], catalogue: dict[str, Feature]) -> pd.DataFrame:
    """Mean |SHAP| per feature with its family, most important first."""
    imp = pd.DataFrame(
        {
            "feature": features,
            "family": [catalogue[f].family if f in catalogue else "other" for f in features],
            "mean_abs_shap": np.abs(values).mean(axis=0),
        }
    )
    return imp.sort_values(["mean_abs_shap", "feature"], ascending=[False, True], kind="stable").reset_index(drop=True)


def family_totals(importance: pd.DataFrame) -> dict[str, float]:
    """Sum of mean |SHAP| per driver family, largest first."""
    totals = importance.groupby("family")["mean_abs_shap"].sum().sort_values(ascending=False)
    return {k: float(v) for k, v in totals.items()}


def plot_bar(importance: pd.DataFrame, path: Path, top: int = 20) -> Path:
    """Horizontal bar chart of the top features by mean |SHAP|."""
    head = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(head) + 1.2))
    ax.barh(head["feature"], head["mean_abs_shap"], color="#3b6ea8")
    ax.set_xlabel("mean |SHAP value| (log-odds of churn)")
    ax.set_title("Global churn drivers")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_beeswarm(values: np.ndarray, X: pd.DataFrame, path: Path, top: int = 20) -> Path:
    """SHAP beeswarm (summary) plot: direction and spread of each top feature's effect."""
    shap.summary_plot(values, X, max_display=top, show=False)
    fig = plt.gcf()
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path
