"""Time-ordered split, LightGBM with early stopping, and calibration on a later slice."""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from pipeline import quickscorer
from pipeline.config import TrainParams
from pipeline.errors import InputError
from pipeline.metrics import classification_metrics

LABEL = "churned"
KEYS = ("user_id", "cutoff")
# snapshot rows whose outcome a retention contact may have changed (pipeline/contacts.py); never a feature
CONTACTED = "contacted"


@dataclass(frozen=True)
class TimeSplit:
    """Cutoffs per role; every label window of an earlier role closes by the next role's cutoff."""

    train: list[dt.date]
    validation: dt.date
    calibration: dt.date
    test: dt.date

    def as_dict(self) -> dict[str, object]:
        """Plain form for JSON and MLflow."""
        return {
            "train_first": self.train[0].isoformat(),
            "train_last": self.train[-1].isoformat(),
            "train_cutoffs": len(self.train),
            "validation": self.validation.isoformat(),
            "calibration": self.calibration.isoformat(),
            "test": self.test.isoformat(),
        }


def _latest_closed_by(cutoffs: list[dt.date], bound: dt.date, horizon: int) -> list[dt.date]:
    return [c for c in cutoffs if c + dt.timedelta(days=horizon) <= bound]


def time_split(cutoffs: list[dt.date], horizon_days: int, max_train_cutoffs: int | None = None) -> TimeSplit:
    """Test = last cutoff; calibration = the latest cutoff whose labels closed by the test cutoff;
    validation (early stopping) = the cutoff before it; training = cutoffs whose labels closed by
    the validation cutoff.

    This emulates production: the model evaluated at `test` never saw a label whose window was
    still open at `test`, and early stopping never saw a training label from its own window.
    Validation and calibration are adjacent so that a year of data leaves room for training.
    """
    cutoffs = sorted(cutoffs)
    test = cutoffs[-1]
    cal = _latest_closed_by(cutoffs, test, horizon_days)
    val = [c for c in cutoffs if c < cal[-1]] if cal else []
    train = _latest_closed_by(val, val[-1], horizon_days) if val else []
    if not train:
        span = 2 * horizon_days
        raise InputError(
            f"not enough labelable history: the time split needs training cutoffs at least {span} days "
            f"before the last labelable cutoff {test} (have {cutoffs[0]}..{test}); use more data, "
            "a shorter labels.horizon_days, or an earlier features.first_cutoff"
        )
    if max_train_cutoffs:
        train = train[-max_train_cutoffs:]
    return TimeSplit(train=train, validation=val[-1], calibration=cal[-1], test=test)


def usable_features(train_rows: pd.DataFrame, candidates: list[str]) -> list[str]:
    """Catalogue features present in the data that vary in training (no all-null or constant column)."""
    out = []
    for name in candidates:
        if name in train_rows and train_rows[name].nunique(dropna=False) > 1:
            out.append(name)
    return out


def matrix(rows: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Model input: float64 columns in the model's feature order (pandas 3 strings never reach LightGBM)."""
    return rows[features].astype("float64")


def contacted_policy(rows: pd.DataFrame, tp: TrainParams) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Rows to fit on and their sample weights (None: unweighted) under `train.contacted`.

    exclude (default): drop rows a contact may have changed, since their label is the campaign's
    outcome and not the untreated churn the list ranks by; contacts are a small slice at the top of
    past lists, and their held-out twins (never contacted) stay in, so little is lost.
    weight: keep them at `contacted_weight` (for when contacts are too many to drop). keep: as they are.
    """
    if CONTACTED not in rows or tp.contacted == "keep":
        return rows, None
    flag = rows[CONTACTED].fillna(False).to_numpy(bool)
    if tp.contacted == "exclude":
        return rows[~flag], None
    return rows, np.where(flag, tp.contacted_weight, 1.0)


def fit_booster(
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_val: pd.DataFrame,
    y_val: np.ndarray,
    tp: TrainParams,
    seed: int,
    threads: int,
    w_train: np.ndarray | None = None,
    w_val: np.ndarray | None = None,
) -> lgb.LGBMClassifier:
    """LightGBM with early stopping on the validation slice; deterministic for a seed and thread count."""
    model = lgb.LGBMClassifier(
        objective="binary",
        n_estimators=tp.n_estimators,
        learning_rate=tp.learning_rate,
        num_leaves=tp.num_leaves,
        min_child_samples=tp.min_child_samples,
        subsample=tp.subsample,
        subsample_freq=tp.subsample_freq,
        colsample_bytree=tp.colsample_bytree,
        reg_lambda=tp.reg_lambda,
        random_state=seed,
        n_jobs=threads,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    model.fit(
        X_train,
        y_train,
        sample_weight=w_train,
        eval_X=(X_val,),
        eval_y=(y_val,),
        eval_sample_weight=None if w_val is None else [w_val],
        eval_metric="binary_logloss",
        callbacks=[lgb.early_stopping(tp.early_stopping_rounds, verbose=False)],
    )
    return model


def calibration_method(tp: TrainParams, n_rows: int) -> str:
    """Isotonic needs enough rows to be stable; fall back to sigmoid below the threshold."""
    if tp.calibration != "auto":
        return tp.calibration
    return "isotonic" if n_rows >= tp.isotonic_min_rows else "sigmoid"


def calibrate(
    model: lgb.LGBMClassifier, X_cal: pd.DataFrame, y_cal: np.ndarray, method: str, weight: np.ndarray | None = None
) -> CalibratedClassifierCV:
    """Calibrate the frozen booster on a later slice than it was trained and early-stopped on."""
    cal = CalibratedClassifierCV(FrozenEstimator(model), method=method)
    with warnings.catch_warnings():
        # weights are meant for the calibrator only: the frozen booster is not refitted
        warnings.filterwarnings("ignore", message="Since FrozenEstimator does not appear to accept sample_weight")
        return cal.fit(X_cal, y_cal, sample_weight=weight)


def inner_booster(calibrated: CalibratedClassifierCV) -> lgb.LGBMClassifier:
    """The LightGBM model inside a calibrated wrapper (for SHAP contributions in log-odds space)."""
    frozen = calibrated.calibrated_classifiers_[0].estimator
    return getattr(frozen, "estimator", frozen)


def churn_scores(calibrated: CalibratedClassifierCV, X: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Booster log-odds and calibrated P(churn) per row of X, bit for bit as predict_proba gives them, in one pass.

    Equal to (inner_booster(calibrated).predict_proba(X, raw_score=True), calibrated.predict_proba(X)[:, 1]): the
    booster's scores come from pipeline.quickscorer (LightGBM's numbers, ~2.5x faster, one pass for both) and the
    calibrator is applied as CalibratedClassifierCV applies its one calibrated classifier. Any other model shape or
    calibration method goes through predict_proba itself.
    """
    booster = inner_booster(calibrated)
    if not (isinstance(booster, lgb.LGBMClassifier) and _plain_binary_calibration(calibrated)):
        return booster.predict_proba(X, raw_score=True), calibrated.predict_proba(X)[:, 1]
    raw, p = quickscorer.predict_scores(booster, X)
    # _CalibratedClassifier.predict_proba for two classes: the calibrator on the estimator's first response method
    # of (decision_function, predict_proba), i.e. the log-odds since LightGBM 4.7 has decision_function, else
    # P(class 1); then the clip of values a rounding error above 1. CalibratedClassifierCV's mean of one is the value.
    cc = calibrated.calibrated_classifiers_[0]
    response = raw if hasattr(cc.estimator, "decision_function") else p
    proba = np.asarray(cc.calibrators[0].predict(response), dtype=np.float64)
    proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
    # CalibratedClassifierCV averages into zeros: + 0.0 turns a -0.0 into 0.0 as that does (dividing by 1 is exact)
    return raw, proba + 0.0


def churn_probability(calibrated: CalibratedClassifierCV, X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Calibrated P(churn) per row of X, bit for bit calibrated.predict_proba(X)[:, 1] (see churn_scores)."""
    return churn_scores(calibrated, X)[1]


def _plain_binary_calibration(calibrated: CalibratedClassifierCV) -> bool:
    """One sigmoid or isotonic calibrator over a two-class booster: the case churn_scores reproduces."""
    if len(calibrated.calibrated_classifiers_) != 1 or len(calibrated.classes_) != 2:
        return False
    cc = calibrated.calibrated_classifiers_[0]
    booster = inner_booster(calibrated)
    return (
        cc.method in ("sigmoid", "isotonic")
        and len(cc.calibrators) == 1
        and np.array_equal(cc.classes, calibrated.classes_)
        and np.array_equal(booster.classes_, calibrated.classes_)
    )


def model_feature_names(calibrated: CalibratedClassifierCV) -> list[str]:
    """Feature names the model was trained on, in order."""
    return list(inner_booster(calibrated).feature_name_)


def calibration_cutoffs(cutoffs: list[dt.date], split: TimeSplit, tp: TrainParams) -> list[dt.date]:
    """The cutoffs the calibrator is fitted on (see TrainParams.calibration_span)."""
    if tp.calibration_span == "cutoff":
        return [split.calibration]
    return [c for c in cutoffs if split.train[-1] < c <= split.calibration]


@dataclass(frozen=True)
class TrainedModel:
    """A calibrated churn model with what it was trained on."""

    model: CalibratedClassifierCV
    booster: lgb.LGBMClassifier
    features: list[str]
    split: TimeSplit
    calibration_method: str
    train_rows: int
    validation: dict
    # training, validation and calibration rows a contact may have changed (excluded or weighted by policy)
    contacted_rows: int = 0

    @property
    def best_iteration(self) -> int:
        """Boosting rounds kept by early stopping."""
        return int(self.booster.best_iteration_ or self.booster.n_estimators)


def rows_at(snapshots: pd.DataFrame, cutoffs: list[dt.date] | dt.date) -> pd.DataFrame:
    """Snapshot rows of one cutoff or a list of cutoffs."""
    wanted = cutoffs if isinstance(cutoffs, list) else [cutoffs]
    return snapshots[snapshots["cutoff"].isin(wanted)]


def fit_churn_model(
    snapshots: pd.DataFrame, candidates: list[str], horizon_days: int, tp: TrainParams, seed: int, threads: int
) -> TrainedModel:
    """Split by time, fit the booster with early stopping, calibrate it on the later slice."""
    split = time_split(sorted(snapshots["cutoff"].unique()), horizon_days, tp.max_train_cutoffs)
    tr, va = rows_at(snapshots, split.train), rows_at(snapshots, split.validation)
    ca = rows_at(snapshots, calibration_cutoffs(sorted(snapshots["cutoff"].unique()), split, tp))
    contacted = sum(int(r[CONTACTED].fillna(False).sum()) for r in (tr, va, ca) if CONTACTED in r)
    (tr, w_tr), (va, w_va), (ca, w_ca) = (contacted_policy(r, tp) for r in (tr, va, ca))
    names = usable_features(tr, candidates)
    y_tr, y_va, y_ca = (r[LABEL].to_numpy(int) for r in (tr, va, ca))
    booster = fit_booster(matrix(tr, names), y_tr, matrix(va, names), y_va, tp, seed, threads, w_tr, w_va)
    method = calibration_method(tp, len(ca))
    model = calibrate(booster, matrix(ca, names), y_ca, method, w_ca)
    validation = classification_metrics(y_va, booster.predict_proba(matrix(va, names))[:, 1])
    return TrainedModel(model, booster, names, split, method, len(tr), validation, contacted)
