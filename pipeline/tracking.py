"""MLflow tracking and registry: the sqlite store by default, MLFLOW_TRACKING_URI honoured."""

from __future__ import annotations

import os
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
import skops.io
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from pipeline.config import MlflowParams

# only types from these modules may be trusted when the skops-serialised model is loaded
_TRUSTED_PREFIXES = ("lightgbm.", "sklearn.", "numpy.", "collections.")


def tracking_uri(mp: MlflowParams) -> str:
    """The tracking URI in force: the environment wins over params.yaml."""
    return os.environ.get("MLFLOW_TRACKING_URI") or mp.tracking_uri


def setup(mp: MlflowParams) -> MlflowClient:
    """Point MLflow at the configured store and experiment; return a client for the registry."""
    mlflow.set_tracking_uri(tracking_uri(mp))
    mlflow.set_experiment(mp.experiment)
    return MlflowClient()


def trusted_types(model: Any) -> list[str]:
    """The non-default skops types in `model`, restricted to the libraries we deliberately trust."""
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    unexpected = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if unexpected:
        raise TypeError(f"model holds types outside the trusted libraries: {unexpected}")
    return sorted(untrusted)


def log_calibrated_model(model: Any, example: pd.DataFrame, model_name: str) -> Any:
    """Log and register the calibrated model so pyfunc predict returns probabilities."""
    proba = model.predict_proba(example)
    return mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, proba),
        input_example=example,
        registered_model_name=model_name,
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=trusted_types(model),
    )


def load_model(uri: str) -> Any:
    """Load a logged sklearn model (e.g. models:/winback-churn@champion)."""
    return mlflow.sklearn.load_model(uri)


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The registered version an alias points at, or None."""
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


DRIFT_REFERENCE = "drift/reference.json"


def drift_reference(client: MlflowClient, model_name: str, version: str) -> dict | None:
    """The drift profile logged with a registered version's training run, or None if it has none."""
    run_id = client.get_model_version(model_name, version).run_id
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{DRIFT_REFERENCE}")
    except (MlflowException, OSError):
        return None


def log_training(
    tm: Any, params: Any, feature_catalogue: list[dict], snapshots: pd.DataFrame, reference: dict | None = None
) -> tuple[str, Any]:
    """One MLflow run per training: params, split, metrics, catalogue, drift reference and the registered model."""
    with mlflow.start_run(run_name="train") as run:
        mlflow.log_params({f"train.{k}": v for k, v in params.train.model_dump().items()})
        mlflow.log_params({f"split.{k}": v for k, v in tm.split.as_dict().items()})
        mlflow.log_params(
            {
                "labels.horizon_days": params.labels.horizon_days,
                "labels.lookback_days": params.labels.lookback_days,
                "labels.qualifying": str(params.labels.qualifying),
                "seed": params.seed,
                "calibration_method": tm.calibration_method,
                "n_features": len(tm.features),
            }
        )
        mlflow.log_metrics(
            {
                "best_iteration": tm.best_iteration,
                "train_rows": tm.train_rows,
                "validation_roc_auc": tm.validation["roc_auc"],
                "validation_log_loss": tm.validation["log_loss"],
            }
        )
        mlflow.log_dict(feature_catalogue, "feature_catalogue.json")
        mlflow.log_dict(params.model_dump(mode="json"), "params.json")
        if reference is not None:
            mlflow.log_dict(reference, DRIFT_REFERENCE)
        example = snapshots.loc[snapshots["cutoff"] == tm.split.calibration, tm.features].head(5).astype("float64")
        info = log_calibrated_model(tm.model, example, params.mlflow.model_name)
    return run.info.run_id, info
