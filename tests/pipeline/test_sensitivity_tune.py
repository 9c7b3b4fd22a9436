"""Label sensitivity sweep and Optuna tuning on a small real shop."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow import MlflowClient

from pipeline import tracking
from pipeline.config import MlflowParams
from pipeline.paths import Paths
from pipeline.sensitivity import parse_qualifying, sweep
from pipeline.tune import tune, write_params


def test_sweep_reports_every_definition(shop_snapshots, tmp_path: Path) -> None:
    params, _, events = shop_snapshots
    paths = Paths(tmp_path)
    paths.events.parent.mkdir(parents=True)
    paths.events.write_bytes(Path(events).read_bytes())
    table = sweep(params, paths, [30, 60, 400], ["any", "purchase"])
    assert len(table) == 6
    ok = table[table["status"] == "ok"]
    assert len(ok) == 4  # a 400-day horizon leaves no training history in two years
    assert ok["base_rate"].between(0, 1).all() and ok["roc_auc"].between(0.5, 1).all()
    # a purchase-based definition calls more users churned than any activity, for the same horizon
    rate = ok.set_index(["qualifying", "horizon_days"])["base_rate"]
    assert rate[("purchase", 60)] > rate[("any", 60)]
    assert parse_qualifying("purchase+cart") == ["purchase", "cart"]


def test_tune_logs_nested_trials_and_writes_params(shop_snapshots, tmp_path: Path) -> None:
    params, snap, _ = shop_snapshots
    params = params.model_copy(update={"mlflow": MlflowParams(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")})
    tracking.setup(params.mlflow)
    best, loss = tune(snap, params, trials=3)
    assert set(best) >= {"num_leaves", "learning_rate"} and 0 < loss < 1
    runs = mlflow.search_runs(experiment_names=[params.mlflow.experiment])
    parent = runs[runs["tags.mlflow.runName"] == "tune"]["run_id"].item()
    children = runs[runs["tags.mlflow.parentRunId"] == parent]
    assert len(children) == 3
    assert MlflowClient().get_run(parent).data.params["best.num_leaves"] == str(best["num_leaves"])
    target = tmp_path / "params.yaml"
    target.write_text("# my comment\ntrain:\n  num_leaves: 31  # leaves\n  n_estimators: 500\n")
    write_params(target, best)
    text = target.read_text()
    assert "# my comment" in text and "n_estimators: 500" in text
    assert f"num_leaves: {best['num_leaves']}" in text
