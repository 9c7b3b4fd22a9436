"""Champion / challenger: a new model becomes @champion only when it wins on the same cutoff."""

from __future__ import annotations

import pandas as pd

from pipeline import tracking
from pipeline.config import Params
from pipeline.metrics import classification_metrics
from pipeline.train import LABEL, matrix, model_feature_names


def _champion_auc(uri: str, test: pd.DataFrame) -> float | None:
    model = tracking.load_model(uri)
    features = model_feature_names(model)
    if not set(features) <= set(test.columns):
        return None
    p = model.predict_proba(matrix(test, features))[:, 1]
    return classification_metrics(test[LABEL].to_numpy(int), p)["roc_auc"]


def decide(params: Params, info: dict, test: pd.DataFrame, results: dict) -> dict:
    """Set @champion or @challenger for the new version and say why."""
    client = tracking.setup(params.mlflow)
    name = params.mlflow.model_name
    candidate = info["model_version"]
    auc = results["model"]["roc_auc"]
    base_auc = results["baseline_recency"]["roc_auc"]
    current = tracking.alias_version(client, name, "champion")
    out = {
        "candidate_version": candidate,
        "previous_champion_version": current,
        "candidate_roc_auc": auc,
        "baseline_roc_auc": base_auc,
        "champion_roc_auc": None,
    }
    if auc <= base_auc:
        decision, reason = "challenger", f"ROC-AUC {auc:.4f} does not beat the recency baseline's {base_auc:.4f}"
    elif current is None:
        decision, reason = "promoted", f"first champion; beats the recency baseline ({auc:.4f} vs {base_auc:.4f})"
    elif current == candidate:
        decision, reason = "promoted", "already the champion"
    else:
        champ_auc = _champion_auc(f"models:/{name}/{current}", test)
        out["champion_roc_auc"] = champ_auc
        bar = params.evaluate.min_improvement
        if champ_auc is None:
            decision, reason = (
                "promoted",
                (f"champion v{current} cannot score these features; candidate beats the baseline"),
            )
        elif auc >= champ_auc + bar:
            decision, reason = "promoted", f"ROC-AUC {auc:.4f} >= champion v{current}'s {champ_auc:.4f} + {bar}"
        else:
            decision, reason = "challenger", f"ROC-AUC {auc:.4f} < champion v{current}'s {champ_auc:.4f} + {bar}"
    alias = "champion" if decision == "promoted" else "challenger"
    client.set_registered_model_alias(name, alias, candidate)
    out |= {"decision": decision, "reason": reason, "champion_version": candidate if alias == "champion" else current}
    return out
