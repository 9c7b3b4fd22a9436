"""`winback promote` and `winback rollback` move @champion only with a reason, and the audit log says who and why."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import pytest
import yaml
from dvc_project import project_env, run_ok
from mlflow import MlflowClient

from pipeline.errors import ExitCode

pytestmark = pytest.mark.e2e
NAME = "winback-churn"


def _winback(copy: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bin/winback", *args], cwd=copy, env=project_env(copy), capture_output=True, text=True, timeout=900
    )


def _audit(copy: Path) -> list[dict]:
    return [json.loads(x) for x in (copy / "models" / "audit.jsonl").read_text().splitlines()]


def test_promote_only_a_winner_and_roll_back_with_an_audit_trail(copy: Path) -> None:
    uri = f"sqlite:///{copy / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    first = client.get_model_version_by_alias(NAME, "champion")
    first_version = str(first.version)
    # a challenger: the same trained model registered again, so it ties with the champion on every metric
    mlflow.set_tracking_uri(uri)
    second = str(mlflow.register_model(first.source, NAME).version)

    def champion() -> str:
        return str(client.get_model_version_by_alias(NAME, "champion").version)

    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["evaluate"]["min_improvement"] = 0.01
    (copy / "strict.yaml").write_text(yaml.safe_dump(params))
    refused = _winback(copy, "promote", "--version", second, "--reason", "try it", "--params", "strict.yaml")
    assert refused.returncode == ExitCode.GUARD, refused.stdout + refused.stderr
    assert "min_improvement" in " ".join((refused.stdout + refused.stderr).split())
    assert champion() == first_version
    assert _audit(copy)[-1]["action"] == "promote-refused"

    no_reason = _winback(copy, "promote", "--version", second, "--reason", "  ")
    assert no_reason.returncode == ExitCode.CONFIG

    run_ok(["bin/winback", "promote", "--version", second, "--reason", "ties the champion"], copy)
    assert champion() == second
    entry = _audit(copy)[-1]
    assert entry["action"] == "promote" and entry["reason"] == "ties the champion" and entry["by"]
    assert entry["previous_champion"] == first_version
    metrics = entry["metrics"]
    assert metrics["candidate"]["roc_auc"] == metrics["champion"]["roc_auc"] > 0.5
    assert metrics["candidate"]["ece"] <= params["evaluate"]["max_ece"]

    run_ok(["bin/winback", "rollback", "--reason", "the new list looked wrong"], copy)
    assert champion() == first_version
    back = _audit(copy)[-1]
    assert back["action"] == "rollback" and back["version"] == first_version
    assert back["previous_champion"] == second and back["reason"] == "the new list looked wrong"
    unknown = _winback(copy, "rollback", "--to-version", "99", "--reason", "x")
    assert unknown.returncode == ExitCode.MODEL and "no version 99" in unknown.stdout + unknown.stderr
