"""Ingest on Spark (`engine: spark`): Parquet sources are read, projected and grouped by Spark.

Spark reads the files and counts each distinct row of the columns the mapping uses (exact duplicates
are judged on those columns, as for a warehouse table: see pipeline/warehouse.py); the distinct rows
then stream here in batches through the same normalisation and quarantine as every other source,
so the accepted events, the reject reasons and the counts follow the same rules. CSV files are read
by the file reader (pipeline/ingest.py) even with `engine: spark`: Spark's CSV reader replaces bytes
that are not UTF-8 without a word, which the file reader reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ibis
import pandas as pd
import pyarrow.parquet as pq

from pipeline.config import DataParams
from pipeline.engine import engine_path
from pipeline.ingest import IngestResult, _combine
from pipeline.warehouse import read_grouped


def _label(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def read_parquet_on_spark(session: Any, paths: list[Path], data: DataParams, now: pd.Timestamp) -> IngestResult:
    """Normalise and quarantine every row of the Parquet files, grouped by Spark, one read per file schema."""
    con = ibis.pyspark.connect(session)
    # files of one schema are read together; Spark would read files of another schema by the first one's
    by_schema: dict[str, list[Path]] = {}
    for path in paths:
        by_schema.setdefault(pq.read_schema(path).remove_metadata().to_string(), []).append(path)
    results = []
    for i, group in enumerate(by_schema.values()):
        # Ibis's read_parquet takes one path; Spark's reader takes them all
        name = f"winback_ingest_{i}"
        session.read.parquet(*(engine_path(p) for p in group)).createOrReplaceTempView(name)
        table = con.table(name)
        results.append(read_grouped(con, table, data, _label(group), now))
    combined = _combine(results) if len(results) > 1 else results[0]
    combined.metrics["files"] = [str(p) for p in paths]
    return combined
