"""Out-of-core on one machine: DuckDB's memory limit and spill directory come from params."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params
from pipeline.engine import connect


def setting(con, name: str) -> str:
    return con.raw_sql(f"SELECT current_setting('{name}')").fetchone()[0]


def test_memory_limit_and_spill_directory_reach_duckdb(tmp_path: Path) -> None:
    spill = tmp_path / "spill dir"
    con = connect(Params(duckdb_memory_limit="100MB", duckdb_temp_directory=str(spill)))
    assert setting(con, "temp_directory") == str(spill)
    assert setting(con, "memory_limit") in {"95.3 MiB", "100.0 MB", "100MB"}
    # a sort beyond the limit finishes by spilling there (DuckDB creates the directory on first use)
    assert not spill.exists()
    con.raw_sql("SET preserve_insertion_order = false")
    n = con.raw_sql("SELECT count(*) FROM (SELECT md5(i::VARCHAR) AS h FROM range(2000000) t(i) ORDER BY h)")
    assert n.fetchone()[0] == 2_000_000
    assert spill.is_dir()


def test_spill_directory_defaults_to_duckdbs_own() -> None:
    assert setting(connect(Params()), "temp_directory") == ".tmp"  # DuckDB's default for an in-memory database
