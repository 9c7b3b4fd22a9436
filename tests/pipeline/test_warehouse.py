"""Warehouse source: events read from a SQL table through Ibis, with the same accounting as files.

The PostgreSQL tests run against a real throwaway server (the session fixture `postgres` in tests/conftest.py,
which skips, saying why, without Debian's postgresql binaries); the rest need no server.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, unquote_plus, urlsplit

import duckdb
import pandas as pd
import pytest
from postgres_server import WAREHOUSE_BAD_ROWS, WAREHOUSE_DUPLICATES
from test_ingest import HEADER, PLANTED, assert_nothing_written, run, write_csv

from features.events import CANONICAL_COLUMNS
from pipeline import warehouse
from pipeline.config import ConfigError, DataParams, load_params
from pipeline.ingest import IngestError, ingest

PLANTED_COLUMNS = HEADER[:-1]  # without `channel`, which a warehouse read would not select
PLANTED_ROWS = [row[:-1] for row in PLANTED]
PLANTED_TYPES = {"purchase": ["order_paid"], "cart": ["add_to_cart"]}
SHOP_NOW = pd.Timestamp("2026-11-23", tz="UTC")


def run_at(data: DataParams, tmp_path: Path, now: pd.Timestamp) -> tuple[dict, pd.DataFrame, pd.DataFrame, Path]:
    """`run` of test_ingest at another `now` (the synthetic shop runs to mid 2026)."""
    out = tmp_path / "out"
    metrics = ingest(data, tmp_path / "s.parquet", out / "events.parquet", out / "rejects.parquet", out / "m.json", now)
    return metrics, pd.read_parquet(out / "events.parquet"), pd.read_parquet(out / "rejects.parquet"), out


def sorted_events(events: pd.DataFrame) -> pd.DataFrame:
    return events.sort_values(list(CANONICAL_COLUMNS), kind="stable", na_position="last").reset_index(drop=True)


def same_counts(a: dict, b: dict) -> None:
    assert {k: v for k, v in a.items() if k != "files"} == {k: v for k, v in b.items() if k != "files"}


# --------------------------------------------------------------------------------- params and URLs


def test_a_url_source_needs_a_table_and_no_plain_password() -> None:
    ok = DataParams(source="postgresql://analyst:${WINBACK_DB_PASSWORD}@db:5432/shop", table="raw.events")
    assert ok.table == "raw.events"
    assert DataParams(source="postgresql://analyst@db/shop", table="events").table == "events"
    with pytest.raises(ValueError, match=r"data\.table must name the events table"):
        DataParams(source="postgresql://analyst@db/shop")
    with pytest.raises(ValueError, match=r"data\.table must name"):
        DataParams(source="postgresql://analyst@db/shop", table="a..b")
    with pytest.raises(ValueError, match=r"password in plain text.*\$\{WINBACK_DB_PASSWORD\}"):
        DataParams(source="postgresql://analyst:hunter2@db/shop", table="events")
    with pytest.raises(ValueError, match=r"data\.table is set .* not a connection URL"):
        DataParams(source="data/events.parquet", table="events")


def test_a_plain_password_in_params_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: postgresql://a:hunter2@db/shop\n  table: events\n")
    with pytest.raises(ConfigError, match="password in plain text") as err:
        load_params(path)
    assert "hunter2" not in str(err.value).split("got")[0]  # the message itself does not repeat it


def test_env_references_are_expanded_and_the_password_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WB_PW", "p@ss/w:rd+1")
    monkeypatch.setenv("WB_HOST", "db.internal")
    url = warehouse.expand_url("postgresql://analyst:${WB_PW}@${WB_HOST}:5432/shop")
    assert url == "postgresql://analyst:p%40ss%2Fw%3Ard%2B1@db.internal:5432/shop"
    assert unquote_plus(urlsplit(url).password) == unquote(urlsplit(url).password) == "p@ss/w:rd+1"
    assert warehouse.redact(url) == "postgresql://analyst@db.internal:5432/shop"
    data = DataParams(source="postgresql://analyst:${WB_PW}@db:5432/shop", table="events")
    assert warehouse.source_label(data) == "table events at postgresql://analyst@db:5432/shop"
    monkeypatch.delenv("WB_PW")
    with pytest.raises(IngestError, match=r"environment variable\(s\) \['WB_PW'\].*export WB_PW"):
        warehouse.expand_url("postgresql://analyst:${WB_PW}@db/shop")


def test_unknown_scheme_and_missing_driver_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="'nosuchdb' is not a database Ibis can connect to"):
        run(DataParams(source="nosuchdb://x/y", table="events"), tmp_path)
    missing = tmp_path / "typo.duckdb"
    with pytest.raises(IngestError, match=r"cannot connect.*Fix: check host, port and database name"):
        run(DataParams(source=f"duckdb:///{missing}", table="events"), tmp_path)
    assert not missing.exists()  # opened read-only: no empty database is left behind
    assert_nothing_written(tmp_path)


# ---------------------------------------------- a DuckDB database file as the warehouse (no server needed)


def test_duckdb_file_table_matches_the_csv_in_small_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv = write_csv(tmp_path / "events.csv", [PLANTED_COLUMNS, *PLANTED_ROWS])
    db = tmp_path / "shop.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA raw")
        con.execute(f"CREATE TABLE raw.events ({', '.join(f'{c} VARCHAR' for c in PLANTED_COLUMNS)})")
        con.executemany(f"INSERT INTO raw.events VALUES ({', '.join('?' * len(PLANTED_COLUMNS))})", PLANTED_ROWS)
    monkeypatch.setattr(warehouse, "BATCH_ROWS", 3)  # distinct rows per batch: six batches

    f_metrics, f_events, f_rejects, _ = run(DataParams(source=str(csv), event_types=PLANTED_TYPES), tmp_path / "f")
    w_data = DataParams(source=f"duckdb:///{db}", table="raw.events", event_types=PLANTED_TYPES)
    w_metrics, w_events, w_rejects, _ = run(w_data, tmp_path / "w")

    same_counts(w_metrics, f_metrics)
    assert w_metrics["duplicates"] == 2  # row 9 and, without channel, row 10
    assert w_metrics["files"] == [f"table raw.events at duckdb:///{db}"]
    pd.testing.assert_frame_equal(sorted_events(w_events), sorted_events(f_events))
    assert sorted(w_rejects["reason"]) == sorted(f_rejects["reason"])
    # positions in the query result, counted across batches
    assert w_rejects["source_row"].is_unique and w_rejects["source_row"].between(0, len(PLANTED_ROWS) - 1).all()
    bad = w_rejects[w_rejects["amount"] == "abc"].iloc[0]
    assert bad["reason"] == "non_numeric_amount" and bad["source_file"].startswith("table raw.events at duckdb")


# ------------------------------------------------------------------------------ PostgreSQL, for real


@pytest.fixture
def shop(postgres_shop: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("WINBACK_DB_PASSWORD", postgres_shop["server"].password)
    return postgres_shop


def test_postgres_table_gives_the_same_events_as_parquet(
    shop: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parquet = tmp_path / "events.parquet"
    shop["frame"].to_parquet(parquet)
    file_data = DataParams(**{**shop["data"], "source": str(parquet), "table": None})
    f_metrics, f_events, f_rejects, _ = run_at(file_data, tmp_path / "file", SHOP_NOW)
    monkeypatch.setattr(warehouse, "BATCH_ROWS", 50_000)  # three batches
    data = DataParams(**shop["data"])
    w_metrics, w_events, w_rejects, out = run_at(data, tmp_path / "warehouse", SHOP_NOW)

    same_counts(w_metrics, f_metrics)
    assert w_metrics["total"] == len(shop["frame"])
    assert w_metrics["rejected_by_reason"] == WAREHOUSE_BAD_ROWS
    assert w_metrics["duplicates"] == WAREHOUSE_DUPLICATES
    assert w_metrics["accepted"] + w_metrics["rejected"] + w_metrics["duplicates"] == w_metrics["total"]
    assert json.loads((out / "m.json").read_text()) == w_metrics
    pd.testing.assert_frame_equal(w_events, sorted_events(f_events))  # already in full sort order
    assert w_events["delivery_delay_days"].notna().any()  # data.derive, evaluated on the fetched rows

    server = shop["server"]
    label = f"table raw.events at postgresql://winback@127.0.0.1:{server.port}/shop"
    assert w_metrics["files"] == [label]
    assert set(w_rejects["source_file"]) == {label}
    assert sorted(w_rejects["reason"]) == sorted(f_rejects["reason"])
    bad = w_rejects[w_rejects["reason"] == "non_numeric_amount"].iloc[0]
    assert bad["Amount"] == "inf"  # the table, the column (in the reason) and the value
    assert server.password not in out.joinpath("rejects.parquet").read_bytes().decode("latin-1")


def test_postgres_query_selects_only_what_the_mapping_reads(shop: dict) -> None:
    data = DataParams(**shop["data"])
    con = warehouse.connect_warehouse(data)
    try:
        sql = con.compile(warehouse.warehouse_query(warehouse.open_table(con, data), data))
    finally:
        con.disconnect()
    assert '"Channel"' not in sql and '"DelayHours"' in sql  # unmapped out; data.derive's input in
    assert "GROUP BY" in sql and 'CAST("t0"."Amount" AS DOUBLE PRECISION)' in sql


def test_postgres_planted_text_table_matches_the_csv(
    shop: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from postgres_server import load_frame

    frame = pd.DataFrame(PLANTED_ROWS, columns=PLANTED_COLUMNS)
    load_frame(shop["server"], "shop", "raw.planted", dict.fromkeys(PLANTED_COLUMNS, "text"), frame)
    csv = write_csv(tmp_path / "events.csv", [PLANTED_COLUMNS, *PLANTED_ROWS])
    f_metrics, f_events, _, _ = run(DataParams(source=str(csv), event_types=PLANTED_TYPES), tmp_path / "f")
    monkeypatch.setattr(warehouse, "BATCH_ROWS", 2)
    data = DataParams(source=shop["data"]["source"], table="raw.planted", event_types=PLANTED_TYPES)
    w_metrics, w_events, _, _ = run(data, tmp_path / "w")
    same_counts(w_metrics, f_metrics)
    pd.testing.assert_frame_equal(w_events, sorted_events(f_events))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"table": "raw.nope"},
            r"table raw\.nope at postgresql://winback@.*table not found \(tables there: \[.*'events'",
        ),
        ({"table": "nowhere.events"}, r"table not found \(schema 'nowhere' has no tables or does not exist\)"),
        ({"source": "postgresql://winback:${WRONG_PW}@127.0.0.1:{port}/shop"}, r"cannot connect.*password.*\$\{VAR\}"),
        ({"source": "postgresql://winback:${WINBACK_DB_PASSWORD}@127.0.0.1:{port}/nope"}, r"cannot connect.*nope"),
        ({"columns": {"user_id": "Customer"}}, r"'user_id' is mapped to source column 'Customer'.*CustomerID"),
        ({"derive": {"delivery_delay_days": "DelayHourz / 24"}}, r"data\.derive cannot be evaluated.*DelayHourz"),
    ],
    ids=["missing-table", "missing-schema", "wrong-password", "missing-database", "bad-mapping", "bad-derive"],
)
def test_postgres_failures_name_the_fix_and_write_nothing(
    shop: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict, message: str
) -> None:
    monkeypatch.setenv("WRONG_PW", "not-the-password")
    port = shop["server"].port
    change = {k: v.replace("{port}", str(port)) if isinstance(v, str) else v for k, v in change.items()}
    columns = {**shop["data"]["columns"], **change.pop("columns", {})}
    data = DataParams(**{**shop["data"], "columns": columns, **change})
    with pytest.raises(IngestError, match=message) as err:
        run(data, tmp_path)
    assert "not-the-password" not in str(err.value) and shop["server"].password not in str(err.value)
    assert_nothing_written(tmp_path)
