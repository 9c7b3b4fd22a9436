"""Time split, feature selection, determinism and calibration of the churn model."""

from __future__ import annotations

import datetime as dt

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from pipeline.config import TrainParams
from pipeline.errors import WinbackError
from pipeline.train import (
    calibrate,
    calibration_method,
    churn_probability,
    churn_scores,
    fit_booster,
    inner_booster,
    model_feature_names,
    time_split,
    usable_features,
)

WEEKLY = [dt.date(2024, 1, 7) + dt.timedelta(weeks=i) for i in range(40)]


def test_time_split_closes_every_label_before_the_role_that_uses_it() -> None:
    s = time_split(WEEKLY, horizon_days=28)
    h = dt.timedelta(days=28)
    assert s.test == WEEKLY[-1]
    # calibration and validation labels close by the test cutoff
    assert s.calibration + h <= s.test
    assert s.validation < s.calibration
    # training labels close by the validation cutoff
    assert all(c + h <= s.validation for c in s.train)
    # the latest cutoffs allowed are used
    assert s.calibration == s.test - h
    assert s.validation == s.calibration - dt.timedelta(weeks=1)
    assert s.train[-1] == s.validation - h
    assert s.train[0] == WEEKLY[0]


def test_time_split_needs_enough_history() -> None:
    with pytest.raises(WinbackError, match="not enough labelable history"):
        time_split(WEEKLY[:9], horizon_days=28)


def test_max_train_cutoffs_keeps_the_latest() -> None:
    s = time_split(WEEKLY, horizon_days=28, max_train_cutoffs=3)
    assert len(s.train) == 3 and s.train[-1] == s.validation - dt.timedelta(days=28)


def test_usable_features_drop_constant_and_all_null_columns() -> None:
    rows = pd.DataFrame({"a": [1.0, 2.0], "b": [0.0, 0.0], "c": [np.nan, np.nan], "d": [np.nan, 1.0]})
    assert usable_features(rows, ["a", "b", "c", "d", "missing"]) == ["a", "d"]


def _data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n), "noise": rng.normal(size=n)})
    logit = 1.5 * X["x1"] - X["x2"]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def test_fit_is_deterministic_and_calibrated_model_exposes_its_booster() -> None:
    tp = TrainParams(n_estimators=60, early_stopping_rounds=10, min_child_samples=10)
    X, y = _data(3000, 0)
    Xv, yv = _data(1000, 1)
    Xc, yc = _data(1500, 2)
    m1 = fit_booster(X, y, Xv, yv, tp, seed=3, threads=1)
    m2 = fit_booster(X, y, Xv, yv, tp, seed=3, threads=1)
    np.testing.assert_array_equal(m1.predict_proba(Xc), m2.predict_proba(Xc))
    method = calibration_method(tp, len(Xc))
    assert method == "isotonic"
    cal = calibrate(m1, Xc, yc, method)
    assert inner_booster(cal) is m1 or inner_booster(cal).booster_.model_to_string() == m1.booster_.model_to_string()
    assert model_feature_names(cal) == ["x1", "x2", "noise"]
    p = cal.predict_proba(Xc)[:, 1]
    assert abs(p.mean() - yc.mean()) < 0.02  # calibrated on this slice: mean matches the base rate


def test_calibration_method_falls_back_to_sigmoid_on_few_rows() -> None:
    assert calibration_method(TrainParams(), 999) == "sigmoid"
    assert calibration_method(TrainParams(calibration="isotonic"), 10) == "isotonic"


def test_calibration_span_gap_uses_every_cutoff_after_training_whose_labels_closed() -> None:
    from pipeline.train import calibration_cutoffs

    s = time_split(WEEKLY, horizon_days=28)
    assert calibration_cutoffs(WEEKLY, s, TrainParams()) == [s.calibration]
    gap = calibration_cutoffs(WEEKLY, s, TrainParams(calibration_span="gap"))
    assert gap[0] == s.train[-1] + dt.timedelta(weeks=1) and gap[-1] == s.calibration
    assert all(c + dt.timedelta(days=28) <= s.test for c in gap)
    assert s.validation in gap


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool((a.view(np.int64) == b.view(np.int64)).all())


class _NoMargin(lgb.LGBMClassifier):
    """LGBMClassifier as before LightGBM 4.7: no decision_function, so the calibrator reads predict_proba."""

    @property
    def decision_function(self) -> None:  # a property that raises hides the method from hasattr
        raise AttributeError("decision_function")


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
@pytest.mark.parametrize("margin", [True, False], ids=["decision_function", "predict_proba"])
def test_churn_scores_equal_predict_proba_bit_for_bit(method: str, margin: bool) -> None:
    tp = TrainParams(n_estimators=60, early_stopping_rounds=10, min_child_samples=10)
    X, y = _data(3000, 0)
    Xv, yv = _data(1000, 1)
    Xc, yc = _data(1500, 2)
    booster = fit_booster(X, y, Xv, yv, tp, seed=3, threads=1)
    if not margin:
        booster.__class__ = _NoMargin  # the same fitted model, without decision_function
    cal = calibrate(booster, Xc, yc, method)
    assert hasattr(cal.calibrated_classifiers_[0].estimator, "decision_function") is margin
    probe = pd.concat([_data(2000, 3)[0], pd.DataFrame({"x1": [np.nan, 0.0, np.inf], "x2": [0.0, np.nan, -np.inf]})])
    probe["noise"] = probe["noise"].fillna(1e-36)
    raw, proba = churn_scores(cal, probe)
    assert _same_bits(raw, inner_booster(cal).predict_proba(probe, raw_score=True))
    assert _same_bits(proba, cal.predict_proba(probe)[:, 1])
    assert _same_bits(churn_probability(cal, probe.to_numpy()), proba)  # numpy input: the same numbers
