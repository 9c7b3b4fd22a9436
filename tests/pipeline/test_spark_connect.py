"""`spark.remote`: the whole pipeline through a real Spark Connect server writes what the DuckDB run writes.

The server (tests/spark_connect_server.py) is a separate JVM with its own working directory and a machine
time zone that is not UTC, as a server on another machine would be: relative paths must reach it absolute,
and the client must pin the session to UTC, or the events, snapshots and list would differ.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from postgres_server import free_port
from typer.testing import CliRunner

from pipeline.build import read_snapshots
from pipeline.cli import app
from pipeline.errors import ExitCode

SHOP = {
    "threads": 1,
    "generate": {"users": 300, "seed": 3, "promotions_end": None},
    "train": {"n_estimators": 40, "early_stopping_rounds": 10},
}


def run(root: Path, name: str, params: dict) -> Path:
    """`winback run` in its own process, as users run it (PySpark marks a process that opened a Connect session
    as Connect-only: a later local session in the same process would fail)."""
    config = root / f"{name}.yaml"
    config.write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    winback = Path(sys.executable).parent / "winback"
    # relative paths, as users write them: they must reach the server absolute
    res = subprocess.run(
        [str(winback), "run", "--config", config.name, "--out", name],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    return root / name


def winback_list(out: Path) -> pd.DataFrame:
    (path,) = (out / "outputs" / "winback").glob("*/winback.parquet")
    return pd.read_parquet(path)


def test_a_run_through_spark_connect_equals_the_duckdb_run(spark_connect_url: str, tmp_path: Path) -> None:
    duck = run(tmp_path, "duckdb", SHOP)
    remote = run(tmp_path, "connect", {**SHOP, "engine": "spark", "spark": {"remote": spark_connect_url}})
    events = "data/ingested/events.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(remote / events), pd.read_parquet(duck / events))
    snapshots = "data/features/snapshots.parquet"
    pd.testing.assert_frame_equal(read_snapshots(remote / snapshots), read_snapshots(duck / snapshots))
    ours, theirs = winback_list(remote), winback_list(duck)
    assert len(ours) > 100 and ours["reason_1"].notna().any()
    pd.testing.assert_frame_equal(ours, theirs)


@pytest.mark.parametrize(
    ("remote", "needles"),
    [
        pytest.param("sc://127.0.0.1:{port}/;token=s3cret", ["cannot reach", ":{port}", "token=***"], id="down"),
        pytest.param("http://127.0.0.1:{port}", ["is not a Spark Connect URL", "sc://host:port"], id="not_sc"),
    ],
)
def test_an_unusable_spark_remote_fails_at_once_naming_it(
    remote: str, needles: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not after the Connect client's minutes of retries, and without the URL's token."""
    pytest.importorskip("pyspark", reason="pyspark is not installed: pip install 'winback[spark]'")
    port = free_port()  # nothing listens there
    monkeypatch.chdir(tmp_path)
    params = {"engine": "spark", "spark": {"remote": remote.format(port=port)}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    started = time.monotonic()
    res = CliRunner().invoke(app, ["features", "--params", "params.yaml", "--root", "."])
    message = " ".join(res.output.split())
    assert res.exit_code == ExitCode.CONFIG, message
    assert time.monotonic() - started < 60
    for needle in needles:
        assert needle.format(port=port) in message, message
    assert "s3cret" not in message
