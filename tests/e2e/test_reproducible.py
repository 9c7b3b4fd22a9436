"""`dvc repro --force` again gives identical metrics, model predictions and win-back lists (compared by hash)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from dvc_project import run_ok

from pipeline.publish import sha256_file

pytestmark = pytest.mark.e2e

# what must not change between two runs of the same code, params and data
COMPARED = [
    "metrics/features.json",
    "metrics/train.json",
    "metrics/evaluate.json",
    "data/features/snapshots.parquet",
    "data/evaluate/predictions.parquet",
    "data/evaluate/backtest_metrics.csv",
]
LIST_FILES = ["winback.parquet", "winback.csv", "features.parquet", "cohort_retention.csv"]
# summary.json also compares the list with earlier lists, which other tests add to the shared project
HISTORY_KEYS = ("week_over_week", "calibration_drift")


def _hashes(root: Path, as_of: str) -> dict[str, str]:
    lists = root / "outputs" / "winback" / as_of
    summary = json.loads((lists / "summary.json").read_text())
    for key in HISTORY_KEYS:
        summary.pop(key)
    summary["guards"].pop("population")
    return (
        {name: sha256_file(root / name) for name in COMPARED}
        | {f"list/{name}": sha256_file(lists / name) for name in LIST_FILES}
        | {"list/summary.json without history": json.dumps(summary, sort_keys=True)}
    )


def test_forced_repro_reproduces_every_metric_prediction_and_list(project: Path, tmp_path: Path) -> None:
    as_of = json.loads((project / "outputs" / "latest.json").read_text())["as_of"]
    first = _hashes(project, as_of)
    again = tmp_path / "again"
    shutil.copytree(project, again, symlinks=True)
    (again / "mlflow.db").unlink()  # a fresh registry: the run registers and promotes its own model
    shutil.rmtree(again / "mlruns", ignore_errors=True)
    shutil.rmtree(again / "outputs")
    run_ok([str(Path(sys.executable).parent / "dvc"), "repro", "--force"], again)
    second = _hashes(again, as_of)
    assert second == first, {k: (first[k][:12], second[k][:12]) for k in first if first[k] != second[k]}
