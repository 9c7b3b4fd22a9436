"""The command line on bad input: exit code 2, a message naming the problem, nothing written."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ExitCode

runner = CliRunner()


def _project(tmp_path: Path, columns: dict) -> Path:
    (tmp_path / "events.csv").write_text(
        "customer,ts,kind,value\n"
        "1,2024-01-01 10:00:00,order_paid,12.5\n"
        ",2024-01-03 12:00:00,order_paid,3\n"
        "3,not a date,order_paid,4\n"
        "1,2024-01-01 10:00:00,order_paid,12.5\n"
    )
    params = {"data": {"source": "events.csv", "columns": columns, "event_types": {"purchase": ["order_paid"]}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def _invoke(project: Path, *args: str):
    return runner.invoke(app, [*args, "--params", str(project / "params.yaml"), "--root", str(project)])


def test_ingest_accounts_for_every_row(tmp_path: Path, monkeypatch) -> None:
    project = _project(tmp_path, {"user_id": "customer", "event_time": "ts", "event_type": "kind", "amount": "value"})
    monkeypatch.chdir(project)
    res = _invoke(project, "ingest")
    assert res.exit_code == 0, res.output
    metrics = yaml.safe_load((project / "metrics" / "ingest.json").read_text())
    assert metrics["total"] == 4
    assert metrics["accepted"] == 1 and metrics["duplicates"] == 1
    assert metrics["rejected_by_reason"] == {"null_user_id": 1, "unparseable_event_time": 1}


def test_mapping_to_a_missing_column_fails_naming_it_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    project = _project(tmp_path, {"user_id": "customer", "event_time": "timestamp", "event_type": "kind"})
    monkeypatch.chdir(project)
    res = _invoke(project, "ingest")
    assert res.exit_code == ExitCode.INPUT
    text = " ".join(res.output.split())
    assert "events.csv" in text and "'timestamp'" in text and "data.columns.event_time" in text
    assert not (project / "data").exists() and not (project / "metrics").exists()


def test_a_params_typo_fails_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("labels:\n  horizon_dayz: 30\n")
    res = _invoke(tmp_path, "features")
    assert res.exit_code == 2
    assert "labels.horizon_dayz" in " ".join(res.output.split())
