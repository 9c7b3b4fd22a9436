"""Explanation fidelity on the synthetic shop: reason_1's family names the planted cause (issue 4)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.config import load_params
from pipeline.fidelity import fidelity_at
from pipeline.paths import Paths

pytestmark = pytest.mark.e2e


def test_reason_1_names_the_planted_cause_for_most_high_risk_churners(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    params = load_params(project / "params.yaml")
    train = json.loads((project / "models" / "train.json").read_text())
    tracking.setup(params.mlflow)
    model = tracking.load_model(train["model_uri"])
    # the out-of-time test cutoff: its horizon has passed, so who churned is known
    as_of = dt.date.fromisoformat(train["split"]["test"])
    result = fidelity_at(model, params, Paths(project), as_of)
    assert result["users"] >= 50, result
    assert result["fidelity"] >= 0.70, json.dumps(result, indent=1)
    # every planted cause is represented, and none is explained by chance alone
    assert set(result["by_cause"]) == {"engagement", "logistics", "promotion", "satisfaction", "service"}
