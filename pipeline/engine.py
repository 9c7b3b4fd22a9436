"""Engine connection: DuckDB (embedded default) pinned to UTC with params' threads and memory."""

from __future__ import annotations

from pathlib import Path

import ibis
from ibis.backends import BaseBackend
from ibis.expr.types import Table

from pipeline.config import Params


def connect(params: Params) -> BaseBackend:
    """A DuckDB connection with the configured threads and memory limit, session time zone UTC."""
    con = ibis.duckdb.connect(threads=params.threads, memory_limit=params.duckdb_memory_limit)
    con.raw_sql("SET TimeZone = 'UTC'")
    # insertion order keeps results independent of thread scheduling where order matters
    con.raw_sql("SET preserve_insertion_order = true")
    return con


def read_events(con: BaseBackend, path: str | Path) -> Table:
    """The ingested canonical events as an Ibis table."""
    return con.read_parquet(str(path))
