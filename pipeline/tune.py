"""LightGBM tuning with Optuna on time-ordered splits only; every trial is a nested MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd

from features.catalogue import catalogue
from pipeline.config import Params, TrainParams
from pipeline.metrics import classification_metrics
from pipeline.train import LABEL, contacted_policy, fit_booster, matrix, rows_at, time_split, usable_features

TUNED = ("num_leaves", "learning_rate", "min_child_samples", "subsample", "colsample_bytree", "reg_lambda")


def suggest(trial: optuna.Trial, base: TrainParams) -> TrainParams:
    """A trial's LightGBM parameters; everything not tuned keeps its params.yaml value."""
    return base.model_copy(
        update={
            "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 10, 300, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        }
    )


def tune(snapshots: pd.DataFrame, params: Params, trials: int) -> tuple[dict[str, Any], float]:
    """Maximise validation log-likelihood (lower log loss) on the validation cutoff of the time split.

    The test and calibration cutoffs are never looked at, so tuning cannot leak into the evaluation.
    """
    split = time_split(sorted(snapshots["cutoff"].unique()), params.labels.horizon_days, params.train.max_train_cutoffs)
    (train, w_tr), (val, w_va) = (
        contacted_policy(rows_at(snapshots, c), params.train) for c in (split.train, split.validation)
    )
    names = usable_features(train, [f.name for f in catalogue(params.features.windows)])
    X_tr, y_tr = matrix(train, names), train[LABEL].to_numpy(int)
    X_va, y_va = matrix(val, names), val[LABEL].to_numpy(int)

    def objective(trial: optuna.Trial) -> float:
        tp = suggest(trial, params.train)
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            booster = fit_booster(X_tr, y_tr, X_va, y_va, tp, params.seed, params.threads, w_tr, w_va)
            m = classification_metrics(y_va, booster.predict_proba(X_va)[:, 1])
            mlflow.log_params({k: getattr(tp, k) for k in TUNED})
            mlflow.log_metrics({"validation_log_loss": m["log_loss"], "validation_roc_auc": m["roc_auc"]})
        trial.set_user_attr("roc_auc", m["roc_auc"])
        return m["log_loss"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=params.seed))
    with mlflow.start_run(run_name="tune"):
        mlflow.log_params({"trials": trials, "validation_cutoff": split.validation.isoformat()})
        study.optimize(objective, n_trials=trials)
        mlflow.log_params({f"best.{k}": v for k, v in study.best_params.items()})
        mlflow.log_metric("best_validation_log_loss", study.best_value)
    return study.best_params, study.best_value


def write_params(path: Path, best: dict[str, Any]) -> None:
    """Write the tuned values into the `train` section of a params file, keeping its comments."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold long values such as SQL expressions
    doc = yaml.load(path.read_text())
    for key, value in best.items():
        doc.setdefault("train", {})[key] = round(value, 6) if isinstance(value, float) else value
    with path.open("w") as fh:
        yaml.dump(doc, fh)
