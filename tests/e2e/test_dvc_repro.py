"""The whole pipeline through real DVC, MLflow (sqlite) and DuckDB on a small synthetic shop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from dvc_project import assert_campaign_explained, project_env, run_ok

from pipeline.errors import ExitCode
from pipeline.score import LIST_COLUMNS

# `project` (the pipeline run once through `dvc repro`) comes from conftest.py
pytestmark = pytest.mark.e2e


def test_list_contract(project: Path) -> None:
    latest = json.loads((project / "outputs" / "latest.json").read_text())
    out_dir = project / "outputs" / "winback" / latest["as_of"]
    lst = pd.read_csv(out_dir / "winback.csv", dtype={"user_id": str})
    assert tuple(lst.columns) == LIST_COLUMNS
    assert lst["rank"].tolist() == list(range(1, len(lst) + 1))
    assert lst["churn_probability"].between(0, 1).all()
    assert_campaign_explained(lst)
    assert set(lst["group"]) == {"treatment", "holdout"}
    assert lst["user_id"].is_unique
    assert (lst["as_of"] == latest["as_of"]).all()
    parquet = pd.read_parquet(out_dir / "winback.parquet")
    assert len(parquet) == len(lst)
    assert (out_dir / "report.html").stat().st_size > 5000
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["users"] == len(lst)


def test_model_beats_the_baseline_out_of_time(project: Path) -> None:
    ev = json.loads((project / "metrics" / "evaluate.json").read_text())
    metrics = {"roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top10", "recall_top10"}
    for model in ("model", "baseline_recency"):
        assert metrics <= set(ev[model])
    assert ev["model"]["roc_auc"] > ev["baseline_recency"]["roc_auc"]
    assert ev["model"]["pr_auc"] > ev["baseline_recency"]["pr_auc"]
    promotion = json.loads((project / "models" / "champion.json").read_text())
    assert promotion["decision"] == "promoted"


def test_ingest_accounting_and_champion_registered(project: Path) -> None:
    ing = json.loads((project / "metrics" / "ingest.json").read_text())
    assert ing["accepted"] + ing["rejected"] + ing["duplicates"] == ing["total"] > 0
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("winback-churn", "champion")
    train = json.loads((project / "models" / "train.json").read_text())
    assert str(champion.version) == train["model_version"]


def test_second_repro_does_nothing(project: Path) -> None:
    dvc = str(Path(sys.executable).parent / "dvc")
    res = run_ok([dvc, "repro"], project)
    assert "up to date" in res.stdout.lower(), res.stdout
    assert "Running stage" not in res.stdout


def test_score_another_date_from_the_command_line(project: Path) -> None:
    run_ok(["bin/winback", "score", "--as-of", "2026-05-15"], project)
    lst = pd.read_parquet(project / "outputs" / "winback" / "2026-05-15" / "winback.parquet")
    assert len(lst) > 100
    assert (lst["as_of"] == "2026-05-15").all()
    assert lst["churn_probability"].between(0, 1).all()
    # the next run compares itself with this earlier list
    run_ok(["bin/winback", "score"], project)
    latest = json.loads((project / "outputs" / "latest.json").read_text())
    summary = json.loads((project / "outputs" / "winback" / latest["as_of"] / "summary.json").read_text())
    wow = summary["week_over_week"]
    assert wow["previous_as_of"] == "2026-05-15"
    assert wow["new_entries"] + wow["stayed"] == summary["users"]


def test_scoring_without_a_champion_fails_with_a_clear_message(project: Path, tmp_path: Path) -> None:
    env = project_env(project) | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}"}
    res = subprocess.run(["bin/winback", "score"], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == ExitCode.MODEL
    assert "winback-churn@champion" in " ".join((res.stdout + res.stderr).split())


def test_reasons_quote_each_users_own_features(project: Path) -> None:
    from features.catalogue import catalogue
    from pipeline.config import load_params
    from pipeline.reasons import reason_text

    latest = json.loads((project / "outputs" / "latest.json").read_text())
    out_dir = project / "outputs" / "winback" / latest["as_of"]
    lst = pd.read_parquet(out_dir / "winback.parquet").head(200)
    feats = pd.read_parquet(out_dir / "features.parquet").set_index("user_id")
    cat = catalogue(load_params(project / "params.yaml").features.windows)
    checked = 0
    for _, r in lst.iterrows():
        row = feats.loc[r["user_id"]].to_dict()
        # every reason is the sentence one catalogue feature writes from this user's own values
        for k in (1, 2, 3):
            text, family = r[f"reason_{k}"], r[f"reason_{k}_family"]
            if not text:
                continue
            sources = [f for f in cat if f.explainable and reason_text(f, row) == text]
            assert sources, f"{r['user_id']}: {text!r} matches none of their features"
            assert family in {f.family for f in sources}
            checked += 1
        assert r["driver_family"] == r["reason_1_family"]
    assert checked >= 300
