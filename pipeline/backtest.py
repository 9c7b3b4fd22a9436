"""Rolling-origin backtest: at each test cutoff, fit on labels closed by it, evaluate on it."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import pandas as pd

from features.catalogue import catalogue
from pipeline.baselines import all_baselines
from pipeline.config import Params
from pipeline.errors import WinbackError
from pipeline.metrics import capacity_metrics, classification_metrics
from pipeline.train import LABEL, contacted_policy, fit_churn_model, matrix, model_feature_names, rows_at, time_split
from pipeline.value import expected_value

log = logging.getLogger(__name__)
MODEL = "model"


def test_cutoffs(cutoffs: list[dt.date], n: int) -> list[dt.date]:
    """The last `n` labelable cutoffs: consecutive test origins, oldest first."""
    return sorted(cutoffs)[-n:]


def predict_cutoff(
    snapshots: pd.DataFrame, test_cutoff: dt.date, params: Params, model: Any | None = None
) -> pd.DataFrame:
    """Out-of-time predictions at one cutoff for the model and every baseline, from the same training rows.

    `model` is the already-trained model for this cutoff (the registered one at the last cutoff);
    otherwise one is fitted here with exactly the training stage's procedure.
    """
    history = snapshots[snapshots["cutoff"] <= test_cutoff]
    horizon = params.labels.horizon_days
    if model is None:
        candidates = [f.name for f in catalogue(params.features.windows)]
        tm = fit_churn_model(history, candidates, horizon, params.train, params.seed, params.threads)
        model, split = tm.model, tm.split
    else:
        split = time_split(sorted(history["cutoff"].unique()), horizon, params.train.max_train_cutoffs)
    train, test = rows_at(history, split.train), rows_at(history, test_cutoff)
    # the baselines fit on the model's training rows (contacted ones dropped under train.contacted: exclude)
    train = contacted_policy(train, params.train)[0]
    out = test[["user_id", "cutoff", LABEL]].reset_index(drop=True)
    out["value"] = expected_value(test, horizon, params.score.value_model)
    out[f"p_{MODEL}"] = model.predict_proba(matrix(test, model_feature_names(model)))[:, 1]
    y_train = train[LABEL].to_numpy(int)
    for baseline in all_baselines(horizon):
        out[f"p_{baseline.name}"] = baseline.fit(train, y_train).predict_proba(test)
    return out


def model_names(predictions: pd.DataFrame) -> list[str]:
    """Models with a probability column in a predictions frame, the model first."""
    return [c.removeprefix("p_") for c in predictions.columns if c.startswith("p_")]


def cutoff_metrics(predictions: pd.DataFrame, params: Params) -> dict[str, dict[str, float]]:
    """Every metric for every model on one cutoff's predictions."""
    ep = params.evaluate
    y = predictions[LABEL].to_numpy(int)
    value = predictions["value"].to_numpy(float)
    return {
        name: classification_metrics(y, predictions[f"p_{name}"].to_numpy(float), ep.top_fraction, ep.calibration_bins)
        | capacity_metrics(y, predictions[f"p_{name}"].to_numpy(float), value, ep.contact_capacity)
        for name in model_names(predictions)
    }


def run_backtest(snapshots: pd.DataFrame, params: Params, last_model: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions (all cutoffs, all models) and a long metrics table (cutoff, model, metric, value)."""
    cutoffs = test_cutoffs(sorted(snapshots["cutoff"].unique()), params.evaluate.backtest_cutoffs)
    preds, rows = [], []
    for c in cutoffs:
        try:
            p = predict_cutoff(snapshots, c, params, last_model if c == cutoffs[-1] else None)
        except WinbackError as exc:
            log.warning("backtest cutoff %s skipped: %s", c, exc)
            continue
        preds.append(p)
        for name, metrics in cutoff_metrics(p, params).items():
            rows += [{"cutoff": c, "model": name, "metric": k, "value": float(v)} for k, v in metrics.items()]
    if not preds:
        raise WinbackError("no backtest cutoff has enough history; see the warnings above")
    return pd.concat(preds, ignore_index=True), pd.DataFrame(rows)


def summarise(long: pd.DataFrame) -> dict[str, Any]:
    """Mean and standard deviation over cutoffs per model and metric."""
    g = long.groupby(["model", "metric"])["value"]
    mean, std = g.mean(), g.std(ddof=0)
    models = list(dict.fromkeys(long["model"]))
    return {
        "cutoffs": sorted({c.isoformat() for c in long["cutoff"]}),
        "mean": {m: {k: float(v) for k, v in mean[m].items()} for m in models},
        "std": {m: {k: float(np.nan_to_num(v)) for k, v in std[m].items()} for m in models},
    }
