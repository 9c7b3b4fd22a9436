"""Engine connection: DuckDB (embedded default) or Spark, both pinned to UTC."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import ibis
from ibis.backends import BaseBackend
from ibis.expr.types import Table

from pipeline.config import ConfigError, Params
from pipeline.errors import InputError, ResourceError


def spark_session(params: Params) -> Any:
    """A Spark session (local, cluster or Spark Connect per params.spark) pinned to UTC.

    The session time zone decides how timestamps turn into days: pinned to UTC, Spark and DuckDB
    agree on every day boundary (features compute days from epoch seconds on both).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError("engine: spark needs pyspark: pip install 'winback[spark]' (and Java 17)") from exc
    sp = params.spark
    if not sp.remote and sp.master.startswith("local"):
        # local Python workers (mapInPandas, UDFs) run this interpreter, which has winback's packages;
        # PySpark's default, `python3` on PATH, may not (outside an activated virtualenv)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.remote(sp.remote) if sp.remote else SparkSession.builder.master(sp.master)
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(max(2, 2 * params.threads)),
        "spark.ui.showConsoleProgress": "false",
        # managed tables (if any) go to a scratch place, never into the working directory
        "spark.sql.warehouse.dir": str(Path(tempfile.gettempdir()) / "winback-spark-warehouse"),
        **sp.conf,
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate()
    except Exception as exc:  # no Java, a wrong master URL, an unreachable cluster
        raise ConfigError(f"cannot start Spark ({sp.remote or sp.master}): {exc}") from exc


def connect(params: Params) -> BaseBackend:
    """The configured engine: DuckDB (threads, memory limit, time zone UTC) or Spark through Ibis."""
    if params.engine == "spark":
        return ibis.pyspark.connect(spark_session(params))
    # the spill directory, when set (DuckDB creates it on first spill); unset: DuckDB's own default
    spill_dir = params.duckdb_temp_directory
    spill = {"temp_directory": str(Path(spill_dir).expanduser())} if spill_dir else {}
    con = ibis.duckdb.connect(threads=params.threads, memory_limit=params.duckdb_memory_limit, **spill)
    con.raw_sql("SET TimeZone = 'UTC'")
    # insertion order keeps results independent of thread scheduling where order matters
    con.raw_sql("SET preserve_insertion_order = true")
    # the training build queries one user range of the events file at a time: without the cache every
    # query parses the file's footer again (at 100M events, a third of a range's time)
    con.raw_sql("SET parquet_metadata_cache = true")
    return con


@contextmanager
def memory_errors(params: Params) -> Iterator[None]:
    """DuckDB running out of memory or of spill space, raised as a ResourceError saying which params to change.

    Without it the scheduler sees exit 1, a bug with a traceback, for what a param fixes.
    """
    try:
        yield
    except duckdb.OutOfMemoryException as exc:
        spill = params.duckdb_temp_directory or "DuckDB's default, .tmp in the working directory"
        limit = params.duckdb_memory_limit
        raise ResourceError(
            f"DuckDB ran out of memory ({str(exc).splitlines()[0]}) with duckdb_memory_limit {limit!r}, threads "
            f"{params.threads} and duckdb_temp_directory {spill}: raise duckdb_memory_limit (about 60% of the "
            "memory the process may use), lower threads, or point duckdb_temp_directory at a disk with free space; "
            "the last good outputs are unchanged"
        ) from exc


def read_events(con: BaseBackend, path: str | Path) -> Table:
    """The ingested canonical events as an Ibis table; a missing or unreadable file is an InputError."""
    if not Path(path).exists():
        raise InputError(f"{path}: no ingested events; run `winback ingest` (or `dvc repro`) first")
    try:
        return con.read_parquet(str(path))
    except Exception as exc:  # DuckDB's and Spark's errors for a truncated or corrupted file share no base class
        raise InputError(
            f"{path}: cannot be read as Parquet ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); the file "
            "is truncated or corrupted: run `winback ingest` (or `dvc repro --force ingest`) again"
        ) from exc
