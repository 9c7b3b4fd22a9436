"""Champion / challenger: a model becomes @champion only when it wins on the same cutoff and is calibrated.

Every move of @champion (the evaluate stage's decision, `winback promote`, `winback rollback`) and every
refused promotion is appended to the registry's audit log with who, when, the metrics and the reason.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import tracking
from pipeline.config import Params
from pipeline.errors import GuardError, ModelError
from pipeline.metrics import classification_metrics
from pipeline.train import LABEL, matrix, model_feature_names, rows_at


def _metrics(uri: str, test: pd.DataFrame, params: Params) -> dict[str, float] | None:
    """ROC-AUC, ECE, Brier and log loss of a registered model on `test`; None if it cannot score these features."""
    model = tracking.load_model(uri)
    features = model_feature_names(model)
    if not set(features) <= set(test.columns):
        return None
    p = model.predict_proba(matrix(test, features))[:, 1]
    m = classification_metrics(
        test[LABEL].to_numpy(int), p, params.evaluate.top_fraction, params.evaluate.calibration_bins
    )
    return {k: float(m[k]) for k in ("roc_auc", "ece", "brier", "log_loss")}


def bars(
    candidate: dict[str, float], champion: dict[str, float] | None, champion_version: str | None, params: Params
) -> list[str]:
    """Why the candidate may not become champion (empty: it may): calibration, then the champion's ROC-AUC."""
    ep = params.evaluate
    failed = []
    if candidate["ece"] > ep.max_ece:
        failed.append(f"its ECE {candidate['ece']:.4f} is above evaluate.max_ece {ep.max_ece}")
    if champion is not None and candidate["roc_auc"] < champion["roc_auc"] + ep.min_improvement:
        failed.append(
            f"its ROC-AUC {candidate['roc_auc']:.4f} < champion v{champion_version}'s "
            f"{champion['roc_auc']:.4f} + evaluate.min_improvement {ep.min_improvement}"
        )
    return failed


def audit(path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Append one entry (with when and who) to the audit log; returns it."""
    line = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "by": os.environ.get("WINBACK_USER") or getpass.getuser(),
        **entry,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(line, sort_keys=True, default=str) + "\n")
    return line


def read_audit(path: Path) -> list[dict[str, Any]]:
    """Every audit entry, oldest first."""
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def decide(params: Params, info: dict, test: pd.DataFrame, results: dict, audit_log: Path | None = None) -> dict:
    """Set @champion or @challenger for the newly trained version (evaluate stage) and say why."""
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
        "candidate_ece": results["model"]["ece"],
        "baseline_roc_auc": base_auc,
        "champion_roc_auc": None,
    }
    champ = None
    if current is not None and current != candidate:
        champ = _metrics(f"models:/{name}/{current}", test, params)
        out["champion_roc_auc"] = champ["roc_auc"] if champ else None
    failed = bars({"roc_auc": auc, "ece": results["model"]["ece"]}, champ, current, params)
    if auc <= base_auc:
        decision, reason = "challenger", f"ROC-AUC {auc:.4f} does not beat the recency baseline's {base_auc:.4f}"
    elif current == candidate:
        decision, reason = "promoted", "already the champion"
    elif current is None:
        # with nothing to fall back on, a first model that beats the baseline is used; a poor calibration is said
        decision, reason = "promoted", f"first champion; beats the recency baseline ({auc:.4f} vs {base_auc:.4f})"
        reason += "".join(f"; note: {f}" for f in failed)
    elif failed:
        decision, reason = "challenger", "; ".join(failed)
    elif champ is None:
        decision, reason = "promoted", f"champion v{current} cannot score these features; candidate beats the baseline"
    else:
        decision, reason = "promoted", f"ROC-AUC {auc:.4f} >= champion v{current}'s {champ['roc_auc']:.4f}"
    alias = "champion" if decision == "promoted" else "challenger"
    client.set_registered_model_alias(name, alias, candidate)
    out |= {"decision": decision, "reason": reason, "champion_version": candidate if alias == "champion" else current}
    if audit_log is not None and current != candidate:
        audit(
            audit_log,
            {
                "action": "evaluate",
                "model": name,
                "version": candidate,
                "alias": alias,
                "previous_champion": current,
                "metrics": {"candidate": {"roc_auc": auc, "ece": results["model"]["ece"]}, "champion": champ},
                "reason": reason,
            },
        )
    return out


def _test_cutoff(client: Any, name: str, version: str) -> dt.date:
    run = client.get_run(client.get_model_version(name, version).run_id)
    return dt.date.fromisoformat(run.data.params["split.test"])


def promote(params: Params, snapshots: pd.DataFrame, audit_log: Path, version: str | None, reason: str) -> dict:
    """Move @champion to `version` (default: @challenger) if it beats the champion on its test cutoff and is calibrated.

    Both are scored on the same rows: the current snapshots at the candidate's own test cutoff, out of
    time for both. A refusal raises GuardError and is audited too.
    """
    client = tracking.setup(params.mlflow)
    name = params.mlflow.model_name
    version = version or tracking.alias_version(client, name, "challenger")
    if version is None:
        raise ModelError(f"no version given and no {name}@challenger: pass --version N")
    current = tracking.alias_version(client, name, "champion")
    if current == version:
        raise ModelError(f"{name} v{version} is already @champion")
    try:
        cutoff = _test_cutoff(client, name, version)
    except Exception as exc:  # an unknown version, or a run logged without its split
        raise ModelError(f"{name} v{version}: cannot find its registered run and test cutoff ({exc})") from exc
    test = rows_at(snapshots, cutoff)
    if test.empty or test[LABEL].isna().all():
        raise ModelError(f"no labelled snapshot rows at v{version}'s test cutoff {cutoff}: run `dvc repro` first")
    cand = _metrics(f"models:/{name}/{version}", test, params)
    if cand is None:
        raise ModelError(f"{name} v{version} needs features the current snapshots do not have")
    champ = _metrics(f"models:/{name}/{current}", test, params) if current else None
    failed = bars(cand, champ, current, params)
    entry = {
        "model": name,
        "version": version,
        "previous_champion": current,
        "test_cutoff": cutoff.isoformat(),
        "metrics": {"candidate": cand, "champion": champ},
        "reason": reason,
    }
    if failed:
        audit(audit_log, {"action": "promote-refused", **entry, "failed": failed})
        raise GuardError(f"v{version} not promoted: " + "; ".join(failed))
    client.set_registered_model_alias(name, "champion", version)
    return audit(audit_log, {"action": "promote", **entry})


def rollback(params: Params, audit_log: Path, to_version: str | None, reason: str) -> dict:
    """Move @champion back to `to_version` (default: the champion before the current one, from the audit log)."""
    client = tracking.setup(params.mlflow)
    name = params.mlflow.model_name
    current = tracking.alias_version(client, name, "champion")
    if to_version is None:
        moves = [e for e in read_audit(audit_log) if e.get("model") == name and e.get("action") in MOVES]
        became = [e for e in moves if _new_champion(e) == current]
        to_version = became[-1].get("previous_champion") if became else None
        if to_version is None:
            raise ModelError(f"the audit log {audit_log} has no champion before v{current}: pass --to-version N")
    try:
        client.get_model_version(name, to_version)
    except Exception as exc:
        raise ModelError(f"{name} has no version {to_version}") from exc
    client.set_registered_model_alias(name, "champion", to_version)
    return audit(
        audit_log,
        {"action": "rollback", "model": name, "version": to_version, "previous_champion": current, "reason": reason},
    )


# audit actions that moved @champion, and the version each made champion
MOVES = ("evaluate", "promote", "rollback")


def _new_champion(entry: dict) -> str | None:
    if entry["action"] == "evaluate":
        return entry["version"] if entry.get("alias") == "champion" else None
    return entry["version"]
