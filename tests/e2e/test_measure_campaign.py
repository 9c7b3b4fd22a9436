"""A campaign on a list scored by the real champion: simulate it on the shop, re-ingest, measure it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app

# `project` (the pipeline run once through `dvc repro`) comes from conftest.py
pytestmark = pytest.mark.e2e
AS_OF = "2026-04-01"  # labels close 2026-05-31, before the shop ends


def test_measure_recovers_a_campaign_on_the_champions_list(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a separate root, so the DVC project stays as `dvc repro` left it; the champion comes from its registry
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["score"]["holdout_fraction"] = 0.5  # a control group big enough for an informative interval
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data" / "ingested").mkdir(parents=True)
    shutil.copy(project / "data" / "ingested" / "events.parquet", tmp_path / "data" / "ingested")
    runner = CliRunner()

    def winback(*args: str) -> str:
        res = runner.invoke(app, [*args, "--params", str(tmp_path / "params.yaml"), "--root", str(tmp_path)])
        assert res.exit_code == 0, f"winback {' '.join(args)}:\n{res.output}"
        return res.output

    winback("score", "--as-of", AS_OF)
    winback("simulate-campaign", "--list", AS_OF, "--effect", "0.8")
    winback("ingest")
    out = winback("measure", "--list", AS_OF)
    assert "overall" in out

    truth = json.loads((tmp_path / "data" / "raw" / "campaign.json").read_text())
    measured = json.loads((tmp_path / "outputs" / "winback" / AS_OF / "measure.json").read_text())
    o = measured["overall"]
    assert truth["true_effect"] < -0.05
    assert o["ci_low"] <= truth["true_effect"] <= o["ci_high"] < 0
    assert measured["contact_log"]["treatment_contacted_share"] > 0.95
    assert measured["contact_log"]["holdout_contacted_share"] == 0.0
    # the next snapshots flag the contacted rows, and training leaves them out
    winback("features")
    features = json.loads((tmp_path / "metrics" / "features.json").read_text())
    assert features["contacted_rows"] > 0


def test_a_campaign_on_a_pseudonymised_list(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the list names users by pseudonym; the shop is generated, and its contact log written, with raw ids
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.setenv("WINBACK_PSEUDONYM_KEY", "k" * 32)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["score"]["holdout_fraction"] = 0.5
    params["privacy"] = {"pseudonymise_user_ids": True}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(project / "data" / "raw", tmp_path / "data" / "raw")
    runner = CliRunner()

    def winback(*args: str) -> str:
        res = runner.invoke(app, [*args, "--params", str(tmp_path / "params.yaml"), "--root", str(tmp_path)])
        assert res.exit_code == 0, f"winback {' '.join(args)}:\n{res.output}"
        return res.output

    winback("ingest")
    winback("score", "--as-of", AS_OF)
    listed = pd.read_parquet(tmp_path / "outputs" / "winback" / AS_OF / "winback.parquet")
    assert not listed["user_id"].str.startswith("u").any()  # pseudonyms, not the shop's ids
    winback("simulate-campaign", "--list", AS_OF, "--effect", "0.8")
    raw_log = pd.read_parquet(tmp_path / "data" / "raw" / "contacts.parquet")
    assert len(raw_log) == int(listed["contact"].sum()) and raw_log["user_id"].str.startswith("u").all()
    winback("ingest")
    contacts = pd.read_parquet(tmp_path / "data" / "ingested" / "contacts.parquet")
    assert set(contacts["user_id"]) == set(listed.loc[listed["contact"], "user_id"])
    winback("measure", "--list", AS_OF)
    truth = json.loads((tmp_path / "data" / "raw" / "campaign.json").read_text())
    o = json.loads((tmp_path / "outputs" / "winback" / AS_OF / "measure.json").read_text())["overall"]
    assert truth["true_effect"] < -0.05
    assert o["ci_low"] <= truth["true_effect"] <= o["ci_high"] < 0
