"""`winback run --config` with the events in a PostgreSQL table (a real throwaway server, see tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dvc_project import assert_campaign_explained, run_winback_config
from postgres_server import WAREHOUSE_BAD_ROWS, WAREHOUSE_DUPLICATES

pytestmark = pytest.mark.e2e


def test_run_config_on_a_postgres_table(postgres_shop: dict, tmp_path: Path) -> None:
    server = postgres_shop["server"]
    config = {
        "threads": 2,
        "data": postgres_shop["data"],  # the password as ${WINBACK_DB_PASSWORD}, set only in the environment
        "features": {"frequency_days": 28, "windows": [7, 30, 90]},
        "train": {"n_estimators": 80, "early_stopping_rounds": 20},
        "evaluate": {"backtest_cutoffs": 2, "contact_capacity": 50},
        "score": {"contact_capacity": 50},
    }
    path = tmp_path / "warehouse.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert server.password not in path.read_text()
    out = tmp_path / "run"
    res = run_winback_config(path, out, cwd=tmp_path, env={"WINBACK_DB_PASSWORD": server.password}, timeout=600)
    assert server.password not in res.stdout + res.stderr

    ingest = json.loads((out / "metrics" / "ingest.json").read_text())
    assert ingest["files"] == [f"table raw.events at postgresql://winback@127.0.0.1:{server.port}/shop"]
    assert ingest["total"] == len(postgres_shop["frame"])
    assert ingest["rejected_by_reason"] == WAREHOUSE_BAD_ROWS
    assert ingest["duplicates"] == WAREHOUSE_DUPLICATES
    assert ingest["accepted"] + ingest["rejected"] + ingest["duplicates"] == ingest["total"]
    assert not (out / "data" / "raw").exists()  # nothing generated: the table is the source

    lst = pd.read_csv(next((out / "outputs" / "winback").glob("*/winback.csv")))
    assert len(lst) > 100
    assert lst["rank"].tolist() == list(range(1, len(lst) + 1))
    assert lst["user_id"].str.match(r"^u\d{7}$").all()
    assert_campaign_explained(lst)
