"""Contact log: ingestion with quarantine, the `contacted` snapshot flag, and how training treats flagged rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import ibis
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.contacts import contacted_rows
from features.windows import cutoff_table, day_number
from pipeline.config import ConfigError, DataParams, Params, TrainParams, load_params
from pipeline.contacts import contact_files, flag_contacted, ingest_contacts, read_contacts
from pipeline.engine import connect
from pipeline.ingest import IngestError
from pipeline.train import contacted_policy, fit_churn_model

NOW = pd.Timestamp("2026-07-01 12:00", tz="UTC")


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": ["a", "b", "c"], "event_time": pd.to_datetime(["2026-01-01"] * 3, utc=True)}).to_parquet(
        path
    )
    return path


def _ingest(tmp_path: Path, events: Path, text: str, **data: object) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    log = tmp_path / "contacts.csv"
    log.write_text(text)
    dp = DataParams(contacts=str(log), **data)
    out, rej = tmp_path / "out" / "contacts.parquet", tmp_path / "out" / "rejects.parquet"
    metrics = ingest_contacts(dp, contact_files(dp, tmp_path / "none"), events, out, rej, now=NOW)
    return metrics, pd.read_parquet(out), pd.read_parquet(rej)


def test_every_row_is_used_or_quarantined_with_a_reason(tmp_path: Path, events: Path) -> None:
    metrics, contacts, rejects = _ingest(
        tmp_path,
        events,
        "customer,sent,channel\n"
        "a,2026-03-02 10:00,email\n"
        " ,2026-03-02 10:00,email\n"  # blank user
        "zz,2026-03-02 10:00,email\n"  # no such user
        "b,not a date,call\n"
        "b,,call\n"
        "c,2027-01-01 00:00,email\n"  # in the future
        "a,2026-03-02 10:00,email\n"  # duplicate of the first row
        "a,2026-03-02 10:00,call\n"  # same time, other action: kept
        "c,2026-03-03 09:30:00+02:00,\n",  # an offset is honoured; no action
        contact_columns={"user_id": "customer", "contacted_at": "sent", "action": "channel"},
    )
    assert metrics["total"] == 9 and metrics["accepted"] == 3 and metrics["rejected"] == 6
    assert metrics["rejected_by_reason"] == {
        "duplicate": 1,
        "far_future_contacted_at": 1,
        "null_contacted_at": 1,
        "null_user_id": 1,
        "unknown_user_id": 1,
        "unparseable_contacted_at": 1,
    }
    assert contacts["user_id"].tolist() == ["a", "a", "c"]
    assert contacts["action"].tolist()[:2] == ["email", "call"] and pd.isna(contacts["action"].iloc[2])
    assert contacts["contacted_at"].iloc[2] == pd.Timestamp("2026-03-03 07:30", tz="UTC")
    assert str(contacts["contacted_at"].dtype) == "datetime64[us, UTC]"
    # rejects keep the raw text, the file and the row
    dup = rejects[rejects["reason"] == "duplicate"].iloc[0]
    assert dup["source_row"] == 6 and dup["customer"] == "a" and dup["source_file"].endswith("contacts.csv")
    assert set(rejects.columns) >= {"source_file", "source_row", "reason", "customer", "sent", "channel"}


def test_naive_times_are_read_in_the_data_timezone(tmp_path: Path, events: Path) -> None:
    _, contacts, _ = _ingest(
        tmp_path, events, "user_id,contacted_at,action\nb,2026-03-02 10:00,email\n", timezone="Europe/Berlin"
    )
    assert contacts["contacted_at"].iloc[0] == pd.Timestamp("2026-03-02 09:00", tz="UTC")


def test_a_missing_column_fails_naming_file_column_and_key(tmp_path: Path, events: Path) -> None:
    with pytest.raises(IngestError) as err:
        _ingest(tmp_path, events, "user_id,when\nb,2026-03-02\n")
    text = str(err.value)
    assert "contacts.csv" in text and "'contacted_at'" in text and "data.contact_columns.contacted_at" in text
    assert "['user_id', 'when']" in text
    with pytest.raises(IngestError, match="data.contact_columns.action"):
        columns = {"contacted_at": "when", "action": "x"}
        _ingest(tmp_path, events, "user_id,when\nb,2026-03-02\n", contact_columns=columns)


def test_contact_dates_follow_dayfirst(tmp_path: Path, events: Path) -> None:
    with pytest.raises(IngestError, match="data.dayfirst"):
        _ingest(tmp_path, events, "user_id,contacted_at\na,03/02/2026\n")
    _, contacts, _ = _ingest(tmp_path, events, "user_id,contacted_at\na,03/02/2026\n", dayfirst=True)
    assert contacts["contacted_at"].tolist() == [pd.Timestamp("2026-02-03", tz="UTC")]


def test_no_log_writes_an_empty_canonical_file(tmp_path: Path, events: Path) -> None:
    out, rej = tmp_path / "c.parquet", tmp_path / "r.parquet"
    dp = DataParams()
    assert contact_files(dp, tmp_path / "raw.parquet") == []
    metrics = ingest_contacts(dp, [], events, out, rej, now=NOW)
    assert metrics["total"] == metrics["accepted"] == metrics["rejected"] == 0
    schema = pq.read_schema(out)
    assert schema.names == ["user_id", "contacted_at", "action"]
    assert str(schema.field("contacted_at").type) == "timestamp[us, tz=UTC]"
    assert read_contacts(out).empty and read_contacts(tmp_path / "absent.parquet").empty


def test_contact_params_are_checked(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="run the generate stage"):
        contact_files(DataParams(contacts="synthetic"), tmp_path / "missing.parquet")
    with pytest.raises(IngestError, match="data.contacts 'nowhere/"):
        contact_files(DataParams(contacts="nowhere/*.csv"), tmp_path / "x")
    bad = tmp_path / "params.yaml"
    bad.write_text("data:\n  source: events.csv\n  contacts: synthetic\n")
    with pytest.raises(ConfigError, match="data.contacts is 'synthetic'"):
        load_params(bad)
    bad.write_text("data:\n  contact_columns: {user: id}\n")
    with pytest.raises(ConfigError, match="unknown contact column"):
        load_params(bad)


def test_contacted_rule_covers_a_horizon_either_side_of_the_contact() -> None:
    con = connect(Params())
    cutoff = dt.date(2026, 3, 2)
    h = 60
    at = {  # user -> contact time; cutoff - h and cutoff + h - 1 day are in, the days beyond are out
        "in_first_day": pd.Timestamp(cutoff - dt.timedelta(days=h), tz="UTC"),
        "out_before": pd.Timestamp(cutoff - dt.timedelta(days=h), tz="UTC") - pd.Timedelta(seconds=1),
        "in_last_day": pd.Timestamp(cutoff + dt.timedelta(days=h - 1), tz="UTC") + pd.Timedelta(hours=23),
        "out_after": pd.Timestamp(cutoff + dt.timedelta(days=h), tz="UTC"),
        "in_at_cutoff": pd.Timestamp(cutoff, tz="UTC"),
    }
    contacts = ibis.memtable(
        pd.DataFrame({"user_id": list(at), "contacted_at": pd.Series(list(at.values())).astype("datetime64[us, UTC]")})
    )
    pairs = con.to_pandas(contacted_rows(contacts, cutoff_table([cutoff]), h))
    assert sorted(pairs["user_id"]) == ["in_at_cutoff", "in_first_day", "in_last_day"]
    assert set(pairs["cutoff_day"]) == {day_number(cutoff)}


def test_flag_contacted_marks_snapshot_rows(tmp_path: Path) -> None:
    con = connect(Params())
    cutoffs = [dt.date(2026, 1, 5) + dt.timedelta(weeks=i) for i in range(30)]
    snap = pd.DataFrame([(u, c) for c in cutoffs for u in ("a", "b")], columns=["user_id", "cutoff"])
    path = tmp_path / "contacts.parquet"
    unflagged = flag_contacted(con, snap, path, 28)  # no log yet
    assert unflagged["contacted"].dtype == bool and not unflagged["contacted"].any()
    assert unflagged.drop(columns="contacted").equals(snap) and "contacted" not in snap
    pd.DataFrame(
        {"user_id": ["a"], "contacted_at": pd.to_datetime(["2026-03-04 10:00"], utc=True), "action": ["email"]}
    ).to_parquet(path)
    flagged = flag_contacted(con, snap, path, 28)
    marked = flagged.loc[flagged["contacted"], "cutoff"]
    assert (flagged.loc[flagged["user_id"] == "b", "contacted"] == False).all()  # noqa: E712
    # cutoffs c with c - 28 days <= 2026-03-04 < c + 28 days
    assert marked.min() == dt.date(2026, 2, 9) and marked.max() == dt.date(2026, 3, 30)
    assert len(marked) == 8
    assert "contacted" not in snap  # the caller's frame is not modified


def _snapshots(seed: int = 0) -> pd.DataFrame:
    """Weekly snapshots where contacted rows (30%) have the treated outcome: nobody churned."""
    rng = np.random.default_rng(seed)
    cutoffs = [dt.date(2024, 1, 7) + dt.timedelta(weeks=i) for i in range(30)]
    n = 800
    frames = []
    for c in cutoffs:
        x1, x2 = rng.normal(size=n), rng.normal(size=n)
        p = 1 / (1 + np.exp(-(1.2 * x1 - x2 - 0.3)))
        contacted = rng.random(n) < 0.3
        churned = np.where(contacted, 0, rng.random(n) < p)
        frames.append(
            pd.DataFrame(
                {"user_id": [f"u{i}" for i in range(n)], "cutoff": c, "x1": x1, "x2": x2, "churned": churned}
            ).assign(contacted=contacted, p=p)
        )
    return pd.concat(frames, ignore_index=True)


def test_contacted_policy() -> None:
    snap = _snapshots().head(10)
    assert contacted_policy(snap, TrainParams(contacted="keep"))[0] is snap
    kept, w = contacted_policy(snap, TrainParams(contacted="exclude"))
    assert w is None and not kept["contacted"].any() and len(kept) == (~snap["contacted"]).sum()
    rows, w = contacted_policy(snap, TrainParams(contacted="weight", contacted_weight=0.25))
    assert rows is snap and w.tolist() == np.where(snap["contacted"], 0.25, 1.0).tolist()
    assert contacted_policy(snap.drop(columns="contacted"), TrainParams())[1] is None


@pytest.mark.parametrize("policy", ["exclude", "weight", "keep"])
def test_treated_outcomes_do_not_silently_train_the_model(policy: str) -> None:
    snap = _snapshots()
    tp = TrainParams(n_estimators=60, early_stopping_rounds=10, min_child_samples=20, contacted=policy)
    tm = fit_churn_model(snap, ["x1", "x2"], 28, tp, seed=1, threads=1)
    test = snap[(snap["cutoff"] == snap["cutoff"].max()) & ~snap["contacted"]]
    bias = tm.model.predict_proba(test[["x1", "x2"]])[:, 1].mean() - test["p"].mean()
    assert tm.contacted_rows > 0
    if policy == "exclude":
        assert abs(bias) < 0.02  # untreated risk, as the list needs it
        assert tm.train_rows < (snap["cutoff"].isin(tm.split.train)).sum()
    elif policy == "keep":
        assert bias < -0.08  # treated "no churn" labels drag every probability down
    else:
        assert -0.08 < bias < -0.01  # down-weighted: in between


def test_a_bad_contact_log_leaves_every_ingest_output_as_it_was(tmp_path: Path) -> None:
    from pipeline import stages
    from pipeline.paths import Paths

    source = tmp_path / "shop.csv"
    source.write_text("user_id,event_time,event_type\na,2026-01-01 10:00,purchase\nb,2026-01-02 10:00,purchase\n")
    log = tmp_path / "log.csv"
    log.write_text("user_id,contacted_at\na,2026-03-02 10:00\n")
    paths = Paths(tmp_path / "run")
    params = Params.model_validate({"data": {"source": str(source), "contacts": str(log)}})
    first = stages.ingest(params, paths)
    outputs = (paths.events, paths.rejects, paths.contacts, paths.contact_rejects, paths.metrics("ingest"))
    before = {p: p.read_bytes() for p in outputs}
    assert first["accepted"] == 2 and first["contacts"]["accepted"] == 1
    # new events, and a log that only fails once the events have been read
    source.write_text("user_id,event_time,event_type\nc,2026-01-03 10:00,purchase\n")
    log.write_text("user_id,when\na,2026-03-02 10:00\n")
    with pytest.raises(IngestError, match="contacted_at"):
        stages.ingest(params, paths)
    assert {p: p.read_bytes() for p in outputs} == before
    assert not [p for p in (tmp_path / "run").rglob(".*") if p.is_file()]  # no temporary file left
