"""Ingest on Spark: Parquet read and grouped by Spark gives the same events, rejects and counts as the file reader."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest
from postgres_server import WAREHOUSE_BAD_ROWS, WAREHOUSE_DUPLICATES, WAREHOUSE_MAPPING, warehouse_frame
from test_warehouse import SHOP_NOW, run_at, same_counts, sorted_events

from pipeline import warehouse
from pipeline.config import DataParams, Params
from pipeline.engine import spark_session
from pipeline.ingest import ingest

if importlib.util.find_spec("pyspark") is None:
    pytest.skip("pyspark is not installed: pip install 'winback[spark]'", allow_module_level=True)
if shutil.which("java") is None:
    pytest.skip("Spark needs Java (17): no `java` on PATH", allow_module_level=True)


@pytest.fixture(scope="module")
def spark():
    return spark_session(Params(engine="spark", threads=2))


def test_parquet_on_spark_gives_the_same_events_rejects_and_counts(
    spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = warehouse_frame(users=300)
    rows, copies = frame.iloc[:-WAREHOUSE_DUPLICATES], frame.iloc[-WAREHOUSE_DUPLICATES:]
    half = len(rows) // 2
    source = tmp_path / "src"
    source.mkdir()
    # the copies beside their originals (the file reader finds duplicates within a file); two schemas:
    # Spark reads each group of files by its own schema
    pd.concat([rows.iloc[:half], copies]).to_parquet(source / "a.parquet")
    rows.iloc[half:].assign(Channel=1).to_parquet(source / "b.parquet")
    data = DataParams(**{**WAREHOUSE_MAPPING, "source": str(source / "*.parquet")})

    f_metrics, f_events, f_rejects, _ = run_at(data, tmp_path / "files", SHOP_NOW)
    monkeypatch.setattr(warehouse, "BATCH_ROWS", 5_000)
    out = tmp_path / "spark"
    s_metrics = ingest(
        data, tmp_path / "s.parquet", out / "events.parquet", out / "rejects.parquet", out / "m.json", SHOP_NOW, spark
    )
    s_events, s_rejects = pd.read_parquet(out / "events.parquet"), pd.read_parquet(out / "rejects.parquet")

    same_counts(s_metrics, f_metrics)
    assert s_metrics["rejected_by_reason"] == WAREHOUSE_BAD_ROWS
    assert s_metrics["duplicates"] == WAREHOUSE_DUPLICATES
    assert s_metrics["accepted"] + s_metrics["rejected"] + s_metrics["duplicates"] == s_metrics["total"] == len(frame)
    assert s_metrics["files"] == [str(source / "a.parquet"), str(source / "b.parquet")]
    pd.testing.assert_frame_equal(sorted_events(s_events), sorted_events(f_events))
    assert sorted(s_rejects["reason"]) == sorted(f_rejects["reason"])
    assert set(s_rejects["source_file"]) == {str(source / "b.parquet")}  # the planted rows are at the end
