"""Baselines the model must beat on the same snapshots: days since last activity."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

RECENCY = "days_since_last_activity"


class RecencyBaseline:
    """P(churn) from days since last activity alone, via a logistic fit on log1p(days)."""

    name = "recency"

    def fit(self, rows: pd.DataFrame, y: np.ndarray) -> RecencyBaseline:
        """Fit on training snapshots."""
        self.model_ = LogisticRegression().fit(self._x(rows), y)
        return self

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        """Churn probability per row."""
        return self.model_.predict_proba(self._x(rows))[:, 1]

    @staticmethod
    def _x(rows: pd.DataFrame) -> np.ndarray:
        return np.log1p(rows[[RECENCY]].astype("float64").clip(lower=0).to_numpy())
