"""Inputs shared by the tests that compare our tree kernels (treeshap, quickscorer) with LightGBM's own."""

from __future__ import annotations

import numpy as np
import pandas as pd

# values at LightGBM's zero threshold (kZeroThreshold = 1e-35f), infinities and all-missing rows
EDGE = [np.nan, 0.0, -0.0, 1e-36, -1e-36, 1e-35, -1e-35, 1e-34, np.inf, -np.inf]


def tree_frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Mixed features like the product's: days with NaN, counts with many zeros, amounts, a trend, tiny values."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "days": np.where(rng.random(n) < 0.15, np.nan, rng.exponential(30, n)),
            "count": rng.poisson(1.0, n).astype("float64"),
            "amount": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2, 20, n) * (rng.random(n) < 0.6)),
            "trend": rng.normal(0, 1, n),
            "tiny": rng.choice([0.0, 1e-36, -1e-36, 1e-35, -1e-35, 1.0, -1.0, np.nan], n),
            "level": rng.integers(0, 5, n).astype("float64"),
        }
    )
    logit = (
        0.04 * np.nan_to_num(X["days"], nan=60.0)
        - 0.8 * X["count"]
        + 0.02 * X["amount"].fillna(-20)
        + X["trend"] * X["level"] / 3
        + np.where(X["tiny"].abs() > 0.5, 0.7, 0)
        - 1.5
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def tree_probe(X: pd.DataFrame, rows: int, seed: int = 1) -> pd.DataFrame:
    """The first `rows` training-like rows plus edge values in every column."""
    rng = np.random.default_rng(seed)
    edge = pd.DataFrame({c: rng.permutation(np.resize(EDGE, 40)) for c in X.columns})
    edge.loc[0] = np.nan
    edge.loc[1] = 0.0
    return pd.concat([X.iloc[:rows], edge], ignore_index=True)
