"""PSI against a reference profile, and predicted against realised churn of a past list."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import drift


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"a": rng.normal(shift, 1, n), "b": rng.poisson(3, n).astype(float), "c": np.zeros(n)})


def test_same_distribution_is_stable_and_a_broken_column_is_not() -> None:
    rng = np.random.default_rng(0)
    ref = drift.profile(_frame(rng, 20_000), rng.uniform(size=20_000))
    same = drift.compare(ref, _frame(rng, 5_000), rng.uniform(size=5_000))
    assert max(r["psi"] for r in same["feature_psi"]) < 0.02 and same["score_psi"] < 0.02
    broken = _frame(rng, 5_000).assign(a=lambda f: f["a"] * 100, b=np.nan)
    out = drift.compare(ref, broken, rng.uniform(0.5, 1.0, 5_000))
    psi = {r["feature"]: r["psi"] for r in out["feature_psi"]}
    assert [r["feature"] for r in out["feature_psi"]] == ["b", "a", "c"]  # largest first
    assert psi["b"] > 8 and psi["a"] > 3 and psi["c"] == 0
    assert out["score_psi"] > 0.5


def test_psi_matches_the_textbook_formula() -> None:
    expected, actual = [0.25, 0.25, 0.5, 0.0], [0.5, 0.25, 0.25, 0.0]
    want = (0.5 - 0.25) * np.log(0.5 / 0.25) + (0.25 - 0.5) * np.log(0.25 / 0.5)
    assert drift.psi(expected, actual) == pytest.approx(want)
    assert drift.psi(expected, expected) == 0.0


def test_shares_put_edge_values_in_the_lower_bin_and_nulls_apart() -> None:
    assert drift.shares(np.array([0.0, 1.0, 1.5, 2.0, np.nan]), [1.0, 2.0]) == [0.4, 0.4, 0.0, 0.2]
    assert drift.shares(np.array([]), [1.0]) == [0.0, 0.0, 0.0]


def test_realised_calibration_of_a_past_list() -> None:
    lst = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d", "e"],
            "group": ["treatment", "treatment", "holdout", "holdout", "holdout"],
            "churn_probability": [0.9, 0.1, 0.8, 0.2, 0.6],
        }
    )
    labels = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "churned": [1, 0, 1, 1]})
    out = drift.realised_calibration(lst, labels)
    assert out["users"] == 5 and out["unlabelled"] == 1
    assert out["all"]["users"] == 4 and out["all"]["observed_rate"] == 0.75
    assert out["holdout"] == {
        "users": 2,
        "mean_predicted": 0.5,
        "observed_rate": 1.0,
        "ece": pytest.approx(0.5),
        "brier": pytest.approx((0.2**2 + 0.8**2) / 2),
    }
