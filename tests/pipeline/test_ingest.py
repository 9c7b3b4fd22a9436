"""Ingest stage on real files: row-by-row accounting, time zones, mappings and failures that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.events import ALL_ROLES, CANONICAL_COLUMNS
from pipeline.config import DataParams
from pipeline.ingest import IngestError, ingest, normalise, read_file, resolve_source

NOW = pd.Timestamp("2025-06-01", tz="UTC")
ONLINE_RETAIL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "online_retail.parquet"


def run(data: DataParams, tmp_path: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, Path]:
    out = tmp_path / "out"
    metrics = ingest(
        data,
        tmp_path / "synthetic.parquet",
        out / "events.parquet",
        out / "rejects.parquet",
        out / "metrics.json",
        now=NOW,
    )
    return metrics, pd.read_parquet(out / "events.parquet"), pd.read_parquet(out / "rejects.parquet"), out


def assert_nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return path


HEADER = ["user_id", "event_time", "event_type", "amount", "order_id", "channel"]
PLANTED = [
    ["u1", "2024-01-10 10:00:00", "order_paid", "10.5", "o1", "web"],  # 0 ok -> purchase
    ["", "2024-01-10 11:00:00", "view", "", "", "web"],  # 1 null_user_id
    ["   ", "2024-01-10 11:00:00", "view", "", "", "web"],  # 2 null_user_id (whitespace)
    ["u2", "not a time", "view", "", "", "web"],  # 3 unparseable_event_time
    ["u2", "", "view", "", "", "web"],  # 4 null_event_time
    ["u2", "2099-01-01 00:00:00", "view", "", "", "web"],  # 5 far_future_event_time
    ["u2", "2024-01-11 09:00:00", "", "", "", "web"],  # 6 null_event_type
    ["u3", "2024-01-12 09:00:00", "order_paid", "abc", "o2", "app"],  # 7 non_numeric_amount
    ["u3", "2024-01-12 09:00:00", "order_paid", "inf", "o3", "app"],  # 8 non_numeric_amount (inf)
    ["u1", "2024-01-10 10:00:00", "order_paid", "10.5", "o1", "web"],  # 9 exact duplicate of row 0
    ["u1", "2024-01-10 10:00:00", "order_paid", "10.5", "o1", "app"],  # 10 differs in channel: kept
    ["u3", "2024-01-13 09:00:00", "wishlist", "", "", "app"],  # 11 unmapped -> other
    ["u3", "2024-01-14 09:00:00", "refund", "-4.25", "o2", "app"],  # 12 role name as-is, negative kept
    ["", "garbage", "", "x", "", "web"],  # 13 fails many rules: the first one wins
    ["u4", "2024-01-15 09:00:00", "add_to_cart", "NULL", "", "web"],  # 14 cart; "NULL" amount is a null
    ["u4", "2024-01-16 09:00:00", "wishlist", "", "", "web"],  # 15 unmapped -> other
]


def planted_params(source: Path, **kw) -> DataParams:
    return DataParams(
        source=str(source),
        event_types={"purchase": ["order_paid"], "cart": ["add_to_cart"]},
        **kw,
    )


def test_planted_bad_rows_are_accounted_row_by_row(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "events.csv", [HEADER, *PLANTED])
    metrics, events, rejects, out = run(planted_params(src), tmp_path)

    assert metrics["total"] == len(PLANTED)
    assert metrics["rejected_by_reason"] == {
        "null_user_id": 3,
        "unparseable_event_time": 1,
        "null_event_time": 1,
        "far_future_event_time": 1,
        "null_event_type": 1,
        "non_numeric_amount": 2,
    }
    assert metrics["duplicates"] == 1
    assert metrics["accepted"] == 6
    assert metrics["accepted"] + metrics["rejected"] + metrics["duplicates"] == metrics["total"]
    assert metrics["unmapped_event_types"] == {"wishlist": 2}
    assert metrics["files"] == [str(src)]
    assert json.loads((out / "metrics.json").read_text()) == metrics

    by_row = dict(zip(rejects["source_row"], rejects["reason"], strict=True))
    assert by_row == {
        1: "null_user_id",
        2: "null_user_id",
        3: "unparseable_event_time",
        4: "null_event_time",
        5: "far_future_event_time",
        6: "null_event_type",
        7: "non_numeric_amount",
        8: "non_numeric_amount",
        13: "null_user_id",
    }
    assert set(rejects["source_file"]) == {str(src)}
    bad_amount = rejects.set_index("source_row").loc[7]
    assert bad_amount["amount"] == "abc" and bad_amount["channel"] == "app"

    assert list(events.columns) == list(CANONICAL_COLUMNS)
    assert len(events) == metrics["accepted"]
    assert events["event_type"].value_counts().to_dict() == {"purchase": 2, "other": 2, "refund": 1, "cart": 1}
    assert set(events["event_type"]) <= set(ALL_ROLES)
    refund = events[events["event_type"] == "refund"].iloc[0]
    assert refund["amount"] == -4.25 and refund["order_id"] == "o2"
    assert pd.isna(events.loc[events["event_type"] == "cart", "amount"].iloc[0])


def test_too_old_rule_and_first_failing_rule_wins(tmp_path: Path) -> None:
    src = write_csv(
        tmp_path / "events.csv",
        [
            HEADER,
            ["u1", "2019-05-01 00:00:00", "view", "", "", "web"],  # too old
            ["u1", "2019-05-01 00:00:00", "", "zz", "", "web"],  # too old before null_event_type/non_numeric
            ["u1", "2020-01-01 00:00:00", "view", "", "", "web"],  # exactly min_time: kept
        ],
    )
    metrics, events, rejects, _ = run(planted_params(src, min_time="2020-01-01"), tmp_path)
    assert metrics["rejected_by_reason"] == {"too_old_event_time": 2}
    assert rejects["source_row"].tolist() == [0, 1]
    assert events["event_time"].tolist() == [pd.Timestamp("2020-01-01", tz="UTC")]


def test_naive_parquet_times_are_local_then_utc(tmp_path: Path) -> None:
    src = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a"],
            "event_time": pd.to_datetime(
                [
                    "2024-01-15 12:00",  # winter: GMT = UTC
                    "2024-07-15 12:00",  # summer: BST = UTC+1
                    "2024-10-27 01:30",  # repeated when clocks go back: first occurrence (BST)
                    "2024-03-31 01:30",  # skipped when clocks go forward: shifted to 02:00 BST
                ]
            ),
            "event_type": "view",
        }
    ).to_parquet(src)
    metrics, events, _, _ = run(DataParams(source=str(src), timezone="Europe/London"), tmp_path)
    assert metrics["accepted"] == 4
    assert str(events["event_time"].dtype) == "datetime64[us, UTC]"
    assert sorted(events["event_time"]) == [
        pd.Timestamp("2024-01-15 12:00", tz="UTC"),
        pd.Timestamp("2024-03-31 01:00", tz="UTC"),
        pd.Timestamp("2024-07-15 11:00", tz="UTC"),
        pd.Timestamp("2024-10-27 00:30", tz="UTC"),
    ]


def test_string_times_with_and_without_offsets(tmp_path: Path) -> None:
    src = write_csv(
        tmp_path / "events.csv",
        [
            ["user_id", "event_time", "event_type"],
            ["a", "2024-07-15 12:00:00", "view"],  # naive: Europe/London summer
            ["a", "2024-07-15T12:00:00+02:00", "view"],  # explicit offset wins over data.timezone
            ["a", "2024-01-15T12:00:00Z", "view"],
            ["a", "15/01/2024 12:00", "view"],  # another format in the same column
        ],
    )
    metrics, events, _, _ = run(DataParams(source=str(src), timezone="Europe/London"), tmp_path)
    assert metrics["accepted"] == 4
    assert events["event_time"].tolist() == [
        pd.Timestamp("2024-01-15 12:00", tz="UTC"),
        pd.Timestamp("2024-01-15 12:00", tz="UTC"),
        pd.Timestamp("2024-07-15 10:00", tz="UTC"),
        pd.Timestamp("2024-07-15 11:00", tz="UTC"),
    ]


def test_numeric_dates_are_read_in_the_order_the_file_shows(tmp_path: Path) -> None:
    rows = [
        ["user_id", "event_time", "event_type"],
        ["a", "03/04/2024 10:00", "view"],
        ["b", "13/04/2024 10:00", "view"],
    ]
    # the first date is ambiguous; the second can only be day first, so both are April
    _, events, _, _ = run(DataParams(source=str(write_csv(tmp_path / "eu.csv", rows))), tmp_path)
    assert sorted(events["event_time"]) == [
        pd.Timestamp("2024-04-03 10:00", tz="UTC"),
        pd.Timestamp("2024-04-13 10:00", tz="UTC"),
    ]
    rows[2][1] = "04/13/2024 10:00"  # now it can only be month first: 4 March and 13 April
    _, events, _, _ = run(DataParams(source=str(write_csv(tmp_path / "us.csv", rows))), tmp_path)
    assert sorted(events["event_time"]) == [
        pd.Timestamp("2024-03-04 10:00", tz="UTC"),
        pd.Timestamp("2024-04-13 10:00", tz="UTC"),
    ]


def test_numeric_dates_of_unknown_or_mixed_order_fail_until_dayfirst_says(tmp_path: Path) -> None:
    ambiguous = write_csv(
        tmp_path / "day.csv",
        [["user_id", "event_time", "event_type"], ["a", "03/04/2024 10:00", "view"], ["b", "05/06/2024", "view"]],
    )
    with pytest.raises(IngestError, match=r"day\.csv: column 'event_time'.*'03/04/2024'.*data\.dayfirst"):
        run(DataParams(source=str(ambiguous)), tmp_path)
    for dayfirst, first in ((True, "2024-04-03 10:00"), (False, "2024-03-04 10:00")):
        _, events, _, _ = run(DataParams(source=str(ambiguous), dayfirst=dayfirst), tmp_path)
        assert events["event_time"].min() == pd.Timestamp(first, tz="UTC")
    mixed = write_csv(
        tmp_path / "mixed.csv",
        [["user_id", "event_time", "event_type"], ["a", "13/04/2024", "view"], ["b", "04/14/2024", "view"]],
    )
    with pytest.raises(IngestError, match=r"both orders, e\.g\. '13/04/2024' \(day first\) and '04/14/2024'"):
        run(DataParams(source=str(mixed)), tmp_path)
    # the failed run wrote nothing: the events of the last good run (dayfirst false) stay
    last_good = pd.read_parquet(tmp_path / "out" / "events.parquet")
    assert last_good["event_time"].min() == pd.Timestamp("2024-03-04 10:00", tz="UTC")


def test_tz_aware_parquet_times_are_converted(tmp_path: Path) -> None:
    src = tmp_path / "events.parquet"
    times = pd.to_datetime(["2024-07-15 12:00"]).tz_localize("America/New_York")
    pd.DataFrame({"user_id": ["a"], "event_time": times, "event_type": ["view"]}).to_parquet(src)
    _, events, _, _ = run(DataParams(source=str(src), timezone="Europe/London"), tmp_path)
    assert events["event_time"].tolist() == [pd.Timestamp("2024-07-15 16:00", tz="UTC")]


def test_transactions_only_source_gives_purchases(tmp_path: Path) -> None:
    src = write_csv(
        tmp_path / "orders.csv",
        [
            ["customer", "ordered_at", "total"],
            ["c1", "2024-02-01 10:00:00", "20"],
            ["c2", "2024-02-02 10:00:00", "-5"],
            ["c1", "2024-02-03 10:00:00", "7.5"],
        ],
    )
    data = DataParams(
        source=str(src),
        columns={"user_id": "customer", "event_time": "ordered_at", "event_type": None, "amount": "total"},
    )
    metrics, events, _, _ = run(data, tmp_path)
    assert metrics["accepted"] == 3 and metrics["rejected"] == 0
    assert set(events["event_type"]) == {"purchase"}
    assert events["amount"].tolist() == [20.0, 7.5, -5.0]


@pytest.mark.parametrize(
    ("columns", "good_header", "bad_header", "missing"),
    [
        # optional column mapped to a column the second file lacks
        (
            {"amount": "Revenue"},
            ["user_id", "event_time", "event_type", "Revenue"],
            ["user_id", "event_time", "event_type"],
            "Revenue",
        ),
        # required column mapped to a column the second file lacks
        (
            {"user_id": "CustomerID"},
            ["CustomerID", "event_time", "event_type"],
            ["user_id", "event_time", "event_type"],
            "CustomerID",
        ),
        # required column not mapped, and absent under its own name
        ({}, ["user_id", "event_time", "event_type"], ["user_id", "event_time", "kind"], "event_type"),
    ],
)
def test_bad_mapping_fails_naming_file_and_column_and_writes_nothing(
    tmp_path: Path, columns: dict, good_header: list[str], bad_header: list[str], missing: str
) -> None:
    row = ["u", "2024-01-01", "view", "1"]
    write_csv(tmp_path / "a.csv", [good_header, row[: len(good_header)]])
    bad = write_csv(tmp_path / "b.csv", [bad_header, row[: len(bad_header)]])
    with pytest.raises(IngestError) as err:
        run(DataParams(source=str(tmp_path / "*.csv"), columns=columns), tmp_path)
    message = str(err.value)
    assert str(bad) in message and repr(missing) in message
    assert "data.columns." in message and "Available columns" in message
    assert_nothing_written(tmp_path)


def test_corrupt_parquet_fails_naming_the_file_and_writes_nothing(tmp_path: Path) -> None:
    pd.DataFrame({"user_id": ["u"], "event_time": [pd.Timestamp("2024-01-01")], "event_type": ["view"]}).to_parquet(
        tmp_path / "a.parquet"
    )
    corrupt = tmp_path / "b.parquet"
    corrupt.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(IngestError, match="b.parquet") as err:
        run(DataParams(source=str(tmp_path / "*.parquet")), tmp_path)
    assert "cannot be read as Parquet" in str(err.value)
    assert_nothing_written(tmp_path)
    with pytest.raises(IngestError, match="b.parquet"):
        read_file(corrupt, DataParams())


def test_non_utf8_csv_fails_naming_the_file(tmp_path: Path) -> None:
    src = tmp_path / "latin.csv"
    src.write_bytes("user_id,event_time,event_type\nJos\u00e9,2024-01-01,view\n".encode("latin-1"))
    with pytest.raises(IngestError, match="latin.csv.*UnicodeDecodeError"):
        run(DataParams(source=str(src)), tmp_path)
    assert_nothing_written(tmp_path)


def test_no_usable_rows_fails_and_writes_nothing(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "events.csv", [["user_id", "event_time", "event_type"], ["", "2024-01-01", "view"]])
    with pytest.raises(IngestError, match="no usable events.*null_user_id"):
        run(DataParams(source=str(src)), tmp_path)
    assert_nothing_written(tmp_path)


def test_glob_over_two_files_concatenates_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    header = ["user_id", "event_time", "event_type"]
    write_csv(tmp_path / "raw" / "part-2.csv", [header, ["b", "2024-01-02", "view"], ["", "2024-01-02", "view"]])
    write_csv(tmp_path / "raw" / "part-1.csv", [header, ["a", "2024-01-01", "view"], ["b", "x", "view"]])
    (tmp_path / "raw" / "notes.md").write_text("not data")
    data = DataParams(source="raw/part-*.csv")
    assert resolve_source(data, tmp_path / "synthetic.parquet") == [Path("raw/part-1.csv"), Path("raw/part-2.csv")]

    metrics, events, rejects, _ = run(data, tmp_path)
    assert metrics["files"] == ["raw/part-1.csv", "raw/part-2.csv"]
    assert (metrics["total"], metrics["accepted"], metrics["rejected"]) == (4, 2, 2)
    assert events["user_id"].tolist() == ["a", "b"]
    assert sorted(zip(rejects["source_file"], rejects["source_row"], rejects["reason"], strict=True)) == [
        ("raw/part-1.csv", 1, "unparseable_event_time"),
        ("raw/part-2.csv", 1, "null_user_id"),
    ]


def test_resolve_source_no_match_and_synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(IngestError, match=r"matched no files.*data\.source in params\.yaml"):
        resolve_source(DataParams(source="nowhere/*.parquet"), tmp_path / "s.parquet")
    synthetic = tmp_path / "s.parquet"
    synthetic.write_bytes(b"")
    assert resolve_source(DataParams(), synthetic) == [synthetic]


def test_float_customer_ids_become_clean_strings(tmp_path: Path) -> None:
    src = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "CustomerID": [12346.0, 17850.0, None, 12346.0],
            "event_time": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]),
            "event_type": "view",
        }
    ).to_parquet(src)
    metrics, events, rejects, _ = run(DataParams(source=str(src), columns={"user_id": "CustomerID"}), tmp_path)
    assert events["user_id"].tolist() == ["12346", "12346", "17850"]
    assert metrics["rejected_by_reason"] == {"null_user_id": 1}
    assert rejects["source_row"].tolist() == [2]


def test_normalise_is_deterministic_and_typed() -> None:
    raw = pd.DataFrame(
        {
            "user_id": [" b ", "a", "a", "12.0"],
            "event_time": ["2024-01-02", "2024-01-02", "2024-01-01", "2024-01-01"],
            "event_type": ["view", "view", "search", "view"],
            "quantity": ["2", "1e1", " 3 ", ""],
        }
    )
    first = normalise(raw, DataParams(), "mem", NOW)
    again = normalise(raw.iloc[::-1].reset_index(drop=True), DataParams(), "mem", NOW)
    assert first.events["user_id"].tolist() == ["12", "a", "a", "b"]
    assert first.events["quantity"].tolist()[1:] == [3.0, 10.0, 2.0]
    assert first.events.equals(again.events)
    assert {c: str(t) for c, t in first.events.dtypes.items()} == {
        "user_id": "str",
        "event_time": "datetime64[us, UTC]",
        "event_type": "str",
        "amount": "float64",
        "order_id": "str",
        "quantity": "float64",
        "discount": "float64",
        "rating": "float64",
        "delivery_delay_days": "float64",
        "tier": "float64",
    }


def test_numeric_epoch_times_are_refused(tmp_path: Path) -> None:
    raw = pd.DataFrame({"user_id": ["a"], "event_time": [1_700_000_000], "event_type": ["view"]})
    with pytest.raises(IngestError, match="mem.*'event_time'.*epoch"):
        normalise(raw, DataParams(), "mem", NOW)


@pytest.mark.skipif(not ONLINE_RETAIL.is_file(), reason=f"real data not available at {ONLINE_RETAIL}")
def test_online_retail_slice(tmp_path: Path) -> None:
    raw = pd.read_parquet(ONLINE_RETAIL).head(2000)
    src = tmp_path / "retail.parquet"
    raw.to_parquet(src, index=False)
    data = DataParams(
        source=str(src),
        columns={
            "user_id": "CustomerID",
            "event_time": "InvoiceDate",
            "event_type": None,
            "amount": None,
            "order_id": "InvoiceNo",
            "quantity": "Quantity",
        },
        timezone="Europe/London",
    )
    metrics, events, rejects, _ = run(data, tmp_path)

    no_customer = int(raw["CustomerID"].isna().sum())
    assert no_customer > 0
    assert metrics["rejected_by_reason"] == {"null_user_id": no_customer}
    assert metrics["duplicates"] == int(raw[raw["CustomerID"].notna()].duplicated().sum())
    assert metrics["accepted"] + metrics["rejected"] + metrics["duplicates"] == metrics["total"] == 2000
    assert (rejects["reason"] == "null_user_id").all() and rejects["CustomerID"].isna().all()
    assert set(events["event_type"]) == {"purchase"}
    assert events["user_id"].str.fullmatch(r"\d+").all()
    assert events["amount"].isna().all()
    assert (events["quantity"] < 0).any()  # cancellations keep their negative quantity
    # December is GMT: wall-clock time equals UTC
    first = raw[raw["CustomerID"].notna()].iloc[0]
    mine = events[events["user_id"] == str(int(first["CustomerID"]))]
    assert pd.Timestamp(first["InvoiceDate"]).tz_localize("UTC") in set(mine["event_time"])


def test_infinite_values_in_numeric_parquet_columns_are_quarantined() -> None:
    raw = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "event_time": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
            "event_type": ["purchase", "purchase", "purchase"],
            "amount": [1.0, float("-inf"), None],
            "rating": [4.0, 5.0, float("inf")],
        }
    )
    result = normalise(raw, DataParams(), "mem", NOW)
    assert result.metrics["rejected_by_reason"] == {"non_numeric_amount": 1, "non_numeric_rating": 1}
    assert result.rejects["source_row"].tolist() == [1, 2]
    assert result.rejects["amount"].tolist()[0] == "-inf"
    assert result.events["user_id"].tolist() == ["a"]
