"""Engine connection: DuckDB (embedded default) or Spark, both pinned to UTC."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import ibis
from ibis.backends import BaseBackend
from ibis.expr.types import Table

from pipeline.config import ConfigError, Params
from pipeline.errors import InputError, ResourceError

log = logging.getLogger(__name__)
UTC = "UTC"
CONNECT_PORT = 15002  # Spark Connect's default
REACH_TIMEOUT_S = 10
# the Ibis backends over a Spark Connect session, whose caches close_remote_session releases
_REMOTE_BACKENDS: list[BaseBackend] = []


def shown_remote(remote: str) -> str:
    """A Spark Connect URL for messages: its token (sc://host:port/;token=...) replaced by ***."""
    return re.sub(r"(;\s*token=)[^;]*", r"\1***", remote)


def _check_reachable(remote: str) -> None:
    """Fail at once when nothing listens at a Spark Connect URL: its client retries for minutes before it gives up."""
    parts, shown = urlsplit(remote), shown_remote(remote)
    try:
        host, port = parts.hostname, parts.port or CONNECT_PORT
    except ValueError as exc:  # a port that is not a number
        raise ConfigError(f"spark.remote {shown!r} is not a Spark Connect URL (sc://host:port): {exc}") from exc
    if parts.scheme != "sc" or not host:
        raise ConfigError(f"spark.remote {shown!r} is not a Spark Connect URL: write sc://host:port")
    try:
        socket.create_connection((host, port), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Spark Connect server at spark.remote {shown} ({host}:{port}: {exc}): check that it runs "
            "and that this machine may connect to it"
        ) from exc


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
    if sp.remote:
        _check_reachable(sp.remote)
    builder = SparkSession.builder.remote(sp.remote) if sp.remote else SparkSession.builder.master(sp.master)
    conf = {"spark.sql.session.timeZone": UTC, "spark.sql.shuffle.partitions": str(max(2, 2 * params.threads))}
    if not sp.remote:  # static settings: a Spark Connect server has its own, and warns at each it refuses
        conf["spark.ui.showConsoleProgress"] = "false"
        # managed tables (if any) go to a scratch place, never into the working directory
        conf["spark.sql.warehouse.dir"] = str(Path(tempfile.gettempdir()) / "winback-spark-warehouse")
    for key, value in {**conf, **sp.conf}.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
        zone = session.conf.get("spark.sql.session.timeZone")
    except Exception as exc:  # no Java, a wrong master URL, an unreachable cluster or server
        # the JVM's message carries its whole stack trace: the first lines say what failed
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()][:3]
        where = f"spark.remote {shown_remote(sp.remote)}" if sp.remote else f"spark.master {sp.master}"
        raise ConfigError(
            f"cannot start Spark at {where}: {' '.join(lines)[:500]}. Check the URL, that the cluster or server is "
            "reachable from here (Spark's own log above says what it tried), and that Java 17 is installed"
        ) from exc
    if zone != UTC:  # e.g. spark.conf overriding it: days would no longer be the DuckDB build's
        raise ConfigError(f"the Spark session's time zone is {zone!r}, not UTC: remove spark.sql.session.timeZone")
    return session


def close_remote_session(params: Params) -> None:
    """Close the Spark Connect session of `spark.remote`, if one is open: its server then frees the session's
    cached tables and views now, not when the session times out (a local or cluster session is left to the process).
    """
    if params.engine != "spark" or not params.spark.remote:
        return
    from pyspark.sql.connect.session import SparkSession

    # newest first: a cached rollup's plan reads the side-event cache made before it (build.rollup), and Spark
    # Connect re-reads that plan to unpersist it. Released here, while the session is open, and not by Ibis's
    # finalizers at exit, which would find the session closed.
    # A failure here (the server gone) is logged, never raised: it must not hide how the command ended.
    try:
        while _REMOTE_BACKENDS:
            con = _REMOTE_BACKENDS.pop()
            for name in reversed(list(con._cache_name_to_entry)):
                con._finalize_cached_table(name)
        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()
    except Exception as exc:
        log.warning("could not close the Spark Connect session at %s: %s", shown_remote(params.spark.remote), exc)


def connect(params: Params) -> BaseBackend:
    """The configured engine: DuckDB (threads, memory limit, time zone UTC) or Spark through Ibis."""
    if params.engine == "spark":
        con = ibis.pyspark.connect(spark_session(params))
        if params.spark.remote:
            _REMOTE_BACKENDS.append(con)
        return con
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


def engine_path(path: str | Path) -> str:
    """`path` as the engine should be given it: absolute.

    A Spark Connect server or a cluster's executors resolve a relative path against their own working
    directory, not the one winback runs in. Symbolic links are kept, not resolved: a shared mount's
    path is the same on every node, where a link's target may not be.
    """
    return str(Path(path).expanduser().absolute())


def read_events(con: BaseBackend, path: str | Path) -> Table:
    """The ingested canonical events as an Ibis table; a missing or unreadable file is an InputError."""
    if not Path(path).exists():
        raise InputError(f"{path}: no ingested events; run `winback ingest` (or `dvc repro`) first")
    try:
        return con.read_parquet(engine_path(path))
    except Exception as exc:  # DuckDB's and Spark's errors for a truncated or corrupted file share no base class
        raise InputError(
            f"{path}: cannot be read as Parquet ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); the file "
            "is truncated or corrupted: run `winback ingest` (or `dvc repro --force ingest`) again"
        ) from exc
