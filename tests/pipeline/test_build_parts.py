"""The training build written in user ranges, each from its own events (write_snapshots), equals the whole build
over the rollup of every user, read back in order."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from pipeline import build
from pipeline.build import (
    build_snapshots,
    data_span,
    events_span,
    labelable_cutoffs,
    read_snapshots,
    rollup,
    write_snapshots,
)
from pipeline.config import Params
from pipeline.contacts import flag_contacted
from pipeline.engine import read_events
from tests.conftest import random_events


def _tables(con) -> set[str]:
    """write_snapshots' own tables and views left in the DuckDB connection (Ibis's list_tables fails here)."""
    sql = "SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal"
    return {row[0] for row in con.raw_sql(sql).fetchall() if row[0].startswith("winback_")}


def _with_part_rows(params: Params, rows: int) -> Params:
    return params.model_copy(update={"features": params.features.model_copy(update={"snapshot_part_rows": rows})})


@pytest.fixture
def shop(tmp_path: Path, con, params: Params):
    """(events, their rollup, cutoffs, contact log path) of 30 random users, with contacts spread over the history."""
    events = random_events(n_users=30, days=300, seed=3)
    # user ids of different lengths and cases, so the ranges split on string order, not on a number
    events["user_id"] = events["user_id"].str.replace("u00", "U", regex=False).str.replace("u01", "x1", regex=False)
    events.to_parquet(tmp_path / "events.parquet", index=False)
    table = read_events(con, tmp_path / "events.parquet")
    rolled = rollup(table)
    assert events_span(con, table) == data_span(con, rolled)
    cutoffs = labelable_cutoffs(*data_span(con, rolled), params.features, params.labels)
    users = sorted(events["user_id"].unique())
    contacts = pd.DataFrame(
        {
            "user_id": users[::3],
            "contacted_at": pd.Timestamp("2024-05-01", tz="UTC")
            + pd.to_timedelta([19 * i for i in range(len(users[::3]))], unit="D"),
            "action": "email",
        }
    )
    contacts.to_parquet(tmp_path / "contacts.parquet", index=False)
    return table, rolled, cutoffs, tmp_path / "contacts.parquet"


def test_snapshots_written_in_parts_equal_the_whole_build(tmp_path: Path, con, params: Params, shop) -> None:
    events, rolled, cutoffs, contacts = shop
    whole = build_snapshots(con, rolled, cutoffs, params, labelled=True)
    whole = flag_contacted(con, whole, contacts, params.labels.horizon_days)
    assert whole["contacted"].any() and not whole["contacted"].all()
    assert len(cutoffs) > 5 and len(whole) > 400

    target = tmp_path / "out" / "snapshots.parquet"
    # about 80 rows a part (the bound per user counts a few cutoffs the user is not in the population at)
    summary = write_snapshots(con, events, cutoffs, _with_part_rows(params, 100), contacts, target)
    assert summary["parts"] > 4
    # the view of a part's users and the table of cutoffs the query is compiled over are dropped
    assert not _tables(con)
    got = read_snapshots(target)
    assert_frame_equal(got, whole, check_exact=True)
    # the file itself is in part order; every reader goes through read_snapshots
    raw = pd.read_parquet(target)
    assert not raw["user_id"].equals(whole["user_id"])
    assert summary == {
        "rows": len(whole),
        "users": whole["user_id"].nunique(),
        "base_rate": float(whole["churned"].mean()),
        "contacted_rows": int(whole["contacted"].sum()),
        "parts": summary["parts"],
    }

    # one part (the default size at this scale) gives the same file content
    one = write_snapshots(con, events, cutoffs, params, contacts, tmp_path / "one.parquet")
    assert one["parts"] == 1
    assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), whole, check_exact=True)


def test_no_contact_log_and_no_population(tmp_path: Path, con, params: Params, shop) -> None:
    events, _, cutoffs, _ = shop
    target = tmp_path / "snapshots.parquet"
    summary = write_snapshots(con, events, cutoffs, _with_part_rows(params, 200), tmp_path / "none.parquet", target)
    assert summary["contacted_rows"] == 0 and summary["parts"] > 1
    assert not read_snapshots(target)["contacted"].any()
    # cutoffs long after the data: nobody is in the population, an empty file with the columns
    late = [cutoffs[-1] + dt.timedelta(days=400)]
    summary = write_snapshots(con, events, late, params, tmp_path / "none.parquet", target)
    assert summary["rows"] == 0 and summary["users"] == 0
    empty = read_snapshots(target)
    assert empty.empty and {"user_id", "cutoff", "churned", "contacted"} <= set(empty.columns)


def test_a_failing_part_keeps_the_previous_file(tmp_path: Path, con, params: Params, shop, monkeypatch) -> None:
    events, _, cutoffs, contacts = shop
    target = tmp_path / "snapshots.parquet"
    target.write_bytes(b"previous snapshots")
    calls = {"n": 0}
    real = build.snapshot_frame

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("engine failed on the second part")
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "snapshot_frame", failing)
    with pytest.raises(RuntimeError, match="second part"):
        write_snapshots(con, events, cutoffs, _with_part_rows(params, 100), contacts, target)
    assert calls["n"] == 2
    assert not _tables(con)
    assert target.read_bytes() == b"previous snapshots"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contacts.parquet", "events.parquet", "snapshots.parquet"]
