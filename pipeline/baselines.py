"""Baselines the model must beat on exactly the same snapshots and labels.

Each has `fit(rows, y)` on training snapshots and `predict_proba(rows)` giving P(churn) per row, so
every metric (including calibration) compares like with like.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.bgnbd import BGNBD, fit_bgnbd, p_no_purchase
from pipeline.errors import WinbackError
from pipeline.rfm import RFM_FEATURES, churn_score_from_rfm, rfm_scores

RECENCY = "days_since_last_activity"
DAYS_PER_WEEK = 7.0
PENALIZERS = (0.0, 0.001, 0.01, 0.1)


class _FittedScore:
    """A transparent score per row turned into P(churn) by a model fitted on training snapshots."""

    name = "baseline"

    def _model(self) -> Any:
        return LogisticRegression()

    def _x(self, rows: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def fit(self, rows: pd.DataFrame, y: np.ndarray) -> _FittedScore:
        """Fit on training snapshots."""
        self.model_ = self._model().fit(self._x(rows), y)
        return self

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        """Churn probability per row."""
        return self.model_.predict_proba(self._x(rows))[:, 1]


class RecencyBaseline(_FittedScore):
    """P(churn) from days since last activity alone, via a logistic fit on log1p(days)."""

    name = "baseline_recency"

    def _x(self, rows: pd.DataFrame) -> np.ndarray:
        return np.log1p(rows[[RECENCY]].astype("float64").clip(lower=0).to_numpy())


def _rfm(rows: pd.DataFrame) -> pd.DataFrame:
    recency, frequency, monetary = (rows[c].astype("float64").to_numpy() for c in RFM_FEATURES)
    return rfm_scores(recency, frequency, monetary)


class RFMScoreBaseline(_FittedScore):
    """The classic RFM score (quintiles within each snapshot), mapped to P(churn) by a logistic fit."""

    name = "baseline_rfm_score"

    def _x(self, rows: pd.DataFrame) -> np.ndarray:
        # quintiles are relative to the users of the same cutoff, as a marketer would compute them
        parts = [pd.Series(churn_score_from_rfm(_rfm(part)), index=part.index) for _, part in rows.groupby("cutoff")]
        return pd.concat(parts).reindex(rows.index).to_numpy().reshape(-1, 1)


class RFMLogisticBaseline(_FittedScore):
    """Logistic regression on log recency, frequency and monetary value (never-buyers flagged)."""

    name = "baseline_rfm_logistic"

    def _model(self) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))

    def _x(self, rows: pd.DataFrame) -> np.ndarray:
        recency, frequency, monetary = (rows[c].astype("float64") for c in RFM_FEATURES)
        never = recency.isna()
        # a never-buyer's recency is unknown: use the snapshot's tenure, and flag it
        recency = recency.fillna(rows["tenure_days"].astype("float64"))
        return np.column_stack(
            [
                np.log1p(recency.clip(lower=0)),
                np.log1p(frequency.fillna(0).clip(lower=0)),
                np.log1p(monetary.fillna(0).clip(lower=0)),
                never.astype(float),
            ]
        )


class BGNBDBaseline:
    """BG/NBD fitted on the latest training snapshot: P(no purchase within the horizon).

    Inputs per user, in weeks: x = order days - 1 (repeat purchases), t_x = time from the first to
    the last order, T = time since the first order. Users who never ordered get the churn rate of
    never-buyers in training.
    """

    name = "baseline_bgnbd"

    def __init__(self, horizon_days: int):
        self.horizon_weeks = horizon_days / DAYS_PER_WEEK

    @staticmethod
    def _history(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        days = rows["purchase_days_total"].astype("float64").to_numpy()
        age = rows["days_since_first_purchase"].astype("float64").to_numpy()
        since_last = rows["days_since_last_purchase"].astype("float64").to_numpy()
        bought = (days >= 1) & np.isfinite(age) & np.isfinite(since_last)
        x = np.where(bought, days - 1, 0.0)
        T = np.where(bought, age, 1.0) / DAYS_PER_WEEK
        t_x = np.where(bought, np.clip(age - since_last, 0, None), 0.0) / DAYS_PER_WEEK
        return bought, x, t_x, T

    def fit(self, rows: pd.DataFrame, y: np.ndarray) -> BGNBDBaseline:
        """Fit the BG/NBD parameters on the users of the latest training cutoff."""
        latest = (rows["cutoff"] == rows["cutoff"].max()).to_numpy()
        bought, x, t_x, T = self._history(rows)
        sel = latest & bought
        self.params_ = self._fit(x[sel], t_x[sel], T[sel])
        never = ~bought
        self.never_rate_ = float(np.mean(y[never])) if never.any() else 1.0
        return self

    @staticmethod
    def _fit(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> BGNBD:
        # snapshot populations are recent buyers, which can leave dropout unidentified: then shrink
        # the log-parameters with the smallest penalty that gives a proper fit
        error: ValueError | None = None
        for penalizer in PENALIZERS:
            try:
                return fit_bgnbd(x, t_x, T, penalizer=penalizer)
            except ValueError as exc:
                error = exc
        raise WinbackError(f"BG/NBD baseline cannot be fitted on the training snapshot: {error}")

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        """P(no order within the horizon) per row."""
        bought, x, t_x, T = self._history(rows)
        p = p_no_purchase(self.params_, self.horizon_weeks, x, t_x, T)
        return np.where(bought, p, self.never_rate_)


def all_baselines(horizon_days: int) -> list:
    """Every baseline, in report order."""
    return [RecencyBaseline(), RFMScoreBaseline(), RFMLogisticBaseline(), BGNBDBaseline(horizon_days)]
