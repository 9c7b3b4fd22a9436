"""Bad inputs as the on-call engineer meets them: every kind through the real `winback` command, with its outcome.

Each case writes tiny real files (CSV or Parquet) and a params.yaml pointing `data.source` at them, runs
the command line (`pipeline.cli.app` in-process, or `winback` in a child process where the case needs its
own process: a full disk), and checks the documented outcome, which is one of:

* **refused**: the exit code of its class (pipeline/errors.py), a message naming the file, the column or key,
  the offending value and the fix, and nothing written (no `data/ingested/`, no `metrics/`; for scoring,
  every published list byte for byte as before and no new one);
* **quarantined**: exit 0, and every input row accounted for: rows read = kept + quarantined + exact
  duplicates, `rejects.parquet` holds each quarantined row (source file, row, reason, raw values) and
  `metrics/ingest.json` the per-reason counts;
* **normalised**: exit 0, every row accounted for as above, and the canonical events are exactly the ones
  listed (UTC instants, roles, amounts), sorted by user and time.

Cases (the pytest id or test name), with the input and the outcome:

* `missing_column` (no `user_id` column): refused, 3: names the file, `'user_id'`, the columns it has,
  `data.columns.user_id`.
* `renamed_column` (`data.columns.event_time: InvoiceDate`, the file has `invoice_date`): refused, 3, as above.
* `semicolon_delimited` (a `;`-separated CSV read with `,`): refused, 3: says it looks `;`-delimited,
  `data.csv_delimiter`.
* `wrong_type_text_amount` (`12.5 EUR`, `abc` in `amount`): quarantined `non_numeric_amount`, raw text kept in
  rejects.
* `wrong_type_numeric_ids` (integer / float user ids in Parquet): normalised: ids as text, `12346.0` -> `12346`.
* `wrong_type_epoch_times` (`event_time` holds epoch numbers (Parquet int64)): refused, 3: names the column, a
  value, `data.derive.event_time`.
* `unparseable_times_only` (no `event_time` is a date): refused, 3: "no usable events", the reason counts and the
  first bad row.
* `non_utf8_csv` (Latin-1 bytes in a CSV): refused, 3: names the file, the line and the bytes, `iconv`.
* `empty_file` (0 bytes): refused, 3: "the file is empty (0 bytes".
* `header_only` (a header and no rows): refused, 3: "no data rows".
* `null_ids` (empty, blank, `NULL`, `nan` user ids): quarantined `null_user_id`.
* `duplicate_rows` (the same row three times, a fourth differing in one source column): 2 exact duplicates dropped
  and counted (`duplicates`), the differing row kept.
* `same_file_twice` (one export delivered twice, as two files of the glob): 1 duplicate counted, the event once
  (an event identical in every canonical column to one of an earlier file is dropped).
* `out_of_order_rows` (rows in no order): normalised: sorted by user, time, role.
* `future_timestamps` (2099 and next year): quarantined `far_future_event_time` (later than now +
  `data.max_future_days`).
* `clock_word_times` (`now`, `Today` as event times (pandas reads them as the clock)): quarantined
  `unparseable_event_time`, never "the moment ingest ran".
* `mixed_time_zones` (naive, `Z`, `+02:00`, ` UTC` in one column; a named zone (`CEST`)): normalised to UTC
  instants; the named zone quarantined `unparseable_event_time`.
* `missing_time_zone` (naive times, `data.timezone: America/New_York`): normalised: read as New York local time
  (EST and EDT).
* `dst_change` (naive Europe/London times across both 2024 transitions): normalised: a skipped time moved forward,
  a repeated one read as its first occurrence, both counted in `adjusted_event_times`.
* `negative_amounts` (a refund and a cancelled purchase below zero): normalised: kept as they are (revenue nets
  them).
* `nan_amounts` (`NaN` and empty amounts): normalised: the amount is null (a spelling of "no value"), the event
  kept.
* `infinite_amounts` (`inf`, `-Infinity`): quarantined `non_numeric_amount`.
* `absurd_amounts` (1e13, -5e15, 1e308 (and 1e309, which is infinite)): quarantined `out_of_range_amount` (> 1e12;
  1e309 as `non_numeric_amount`); 1e12 kept.
* `unknown_event_types` (`wishlist` not in `data.event_types`): normalised: role `other` (still activity), counted
  in `unmapped_event_types`.
* `corrupted_parquet` (a truncated Parquet file): refused, 3: names the file, "cannot be read as Parquet".
* `no_matching_files` (the source glob matches no Parquet/CSV file): refused, 3: names `data.source`, the pattern
  and the files found.
* `unknown_timezone` (`data.timezone: Europe/Londn`): refused, 2 when the params are read.
* `params_typo` (`labels.horizon_dayz`): refused, 2: names the file and the key.
* `param_out_of_range` (`labels.horizon_days: 0`, `score.holdout_fraction: 1.5`): refused, 2: names the key and
  the value.
* `param_wrong_type` (`train.num_leaves: many`): refused, 2: names the key and the value.
* `memory_limit_not_a_size` (`duckdb_memory_limit: lots`): refused, 2: names the key, the value and sizes that work.
* `users_with_one_event` (users with a single event beside a steady user): features built: each in the population
  at the cutoffs whose lookback holds the event, churned.
* `last_weeks_unlabelable` (the last `labels.horizon_days` of data): no snapshot at those cutoffs (every cutoff +
  horizon <= end of data).
* `no_labelable_cutoff` (20 days of data, 60-day horizon): refused, 3: names `labels.horizon_days`.
* `as_of_before_data` (`score --as-of` before the first event): refused, 3, nothing published; the message names
  the data's span.
* `as_of_after_data` (`score --as-of` a week after the end of the data): refused, 3: names both dates (scoring
  there would make every user look a week more inactive).
* `no_champion_model` (no `@champion` for `mlflow.model_name`): refused, 4: names the model and the fix.
* `model_features_mismatch` (`features.windows` changed since training): refused, 4: names the missing features.
* `list_horizon_not_passed` (`measure --list` on a list whose horizon has not passed): refused, 3: "horizon not
  passed", the dates.
* `corrupted_ingested_parquet` (`data/ingested/events.parquet` truncated, then `score`): refused, 3: names the
  file and says to run `winback ingest` again.
* `out_of_memory_features`, `out_of_memory_score` (`duckdb_memory_limit: 1MB`, far below what a query needs):
  refused, 8: names the limit, the threads and the spill directory and what to change; the snapshots and every
  published list as they were; `score` logs the refusal with its code in `runs.jsonl`.
* `disk_full_score` (`score` with writes capped (RLIMIT_FSIZE: EFBIG)): refused, 7; the published list intact, no
  temporary file left.
* `disk_full_ingest` (`ingest` with writes capped): refused, 7; the previous ingest outputs intact, no temporary
  file left.
* `disk_full_message` (the same): the message names the file that could not be written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from pipeline import cli
from pipeline.cli import app
from pipeline.errors import ExitCode

runner = CliRunner()
NEXT_YEAR = dt.date.today().year + 1


# ------------------------------------------------------------------------------------------------ helpers


def csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def text(output: str) -> str:
    """The message with the terminal's line wrapping undone."""
    return " ".join(output.split())


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich wraps messages at 80 columns and folds long paths inside a word: keep each message on one line
    monkeypatch.setattr(cli.console, "width", 10_000)


def invoke(root: Path, *args: str, params: Path | None = None):
    return runner.invoke(app, [*args, "--params", str(params or root / "params.yaml"), "--root", str(root)])


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def input_rows(path: Path) -> int:
    """Rows of a source file, counted without the ingest code (the fixtures have no quoted newlines)."""
    if path.suffix == ".parquet":
        return pq.read_metadata(path).num_rows
    return max(0, len([line for line in path.read_bytes().splitlines() if line.strip()]) - 1)


def nothing_ingested(root: Path) -> None:
    assert not (root / "data" / "ingested").exists(), sorted(p.name for p in (root / "data" / "ingested").iterdir())
    assert not (root / "metrics").exists()


# ------------------------------------------------------------------------------------------ ingest cases


@dataclass(frozen=True)
class Refused:
    """A clear error: the exit code, text the message must hold, and nothing written."""

    code: ExitCode
    needles: tuple[str, ...]


@dataclass(frozen=True)
class Ingested:
    """Exit 0 with every row accounted for; `events` (user, UTC time, role, amount) when given, in order."""

    rejected: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    events: list[tuple[str, str, str, float | None]] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    rejected_values: dict[int, dict[str, str]] = field(default_factory=dict)  # source row -> raw cells


@dataclass(frozen=True)
class IngestCase:
    id: str
    files: dict[str, bytes | pd.DataFrame]
    expect: Refused | Ingested
    data: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    marks: tuple = ()


HEAD = "user_id,event_time,event_type,amount"
EVENT_TYPES = {"purchase": ["order_paid"], "refund": ["refund_issued"]}


def _parquet(**cols: Any) -> pd.DataFrame:
    return pd.DataFrame(cols)


INGEST_CASES: list[IngestCase] = [
    IngestCase(
        "missing_column",
        {"events.csv": csv("customer,event_time,event_type", "c1,2024-01-01 10:00:00,view")},
        Refused(ExitCode.INPUT, ("raw/events.csv", "'user_id'", "'customer'", "set data.columns.user_id")),
    ),
    IngestCase(
        "renamed_column",
        {"events.csv": csv("user_id,invoice_date,event_type", "c1,2024-01-01 10:00:00,view")},
        Refused(ExitCode.INPUT, ("raw/events.csv", "'InvoiceDate'", "'invoice_date'", "set data.columns.event_time")),
        data={"columns": {"event_time": "InvoiceDate"}},
    ),
    IngestCase(
        "semicolon_delimited",
        {"events.csv": csv("user_id;event_time;event_type", "c1;2024-01-01 10:00:00;view")},
        Refused(ExitCode.INPUT, ("raw/events.csv", "'user_id'", "';'-delimited", "data.csv_delimiter: ';'")),
    ),
    IngestCase(
        "wrong_type_text_amount",
        {
            "events.csv": csv(
                HEAD,
                "c1,2024-01-01 10:00:00,order_paid,12.5 EUR",
                "c1,2024-01-02 10:00:00,order_paid,abc",
                "c1,2024-01-03 10:00:00,order_paid,7",
            )
        },
        Ingested(
            rejected={"non_numeric_amount": 2},
            events=[("c1", "2024-01-03 10:00", "purchase", 7.0)],
            rejected_values={0: {"amount": "12.5 EUR"}, 1: {"amount": "abc"}},
        ),
    ),
    IngestCase(
        "wrong_type_numeric_ids",
        {
            "events.parquet": _parquet(
                user_id=[12346.0, 17850.0, 12346.0],
                event_time=pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
                event_type=["view", "view", "view"],
            )
        },
        Ingested(
            events=[
                ("12346", "2024-01-01 00:00", "view", None),
                ("12346", "2024-01-03 00:00", "view", None),
                ("17850", "2024-01-02 00:00", "view", None),
            ]
        ),
    ),
    IngestCase(
        "wrong_type_epoch_times",
        {"events.parquet": _parquet(user_id=["a", "b"], event_time=[1_700_000_000, 1_700_086_400], event_type="view")},
        Refused(ExitCode.INPUT, ("raw/events.parquet", "'event_time'", "1700000000", "data.derive.event_time")),
    ),
    IngestCase(
        "unparseable_times_only",
        {"events.csv": csv("user_id,event_time,event_type", "a,soon,view", "b,31/31/2024,view")},
        Refused(
            ExitCode.INPUT,
            ("raw/events.csv", "no usable events", "'unparseable_event_time': 2", "row 0", "data.timezone"),
        ),
    ),
    IngestCase(
        "non_utf8_csv",
        {
            "events.csv": "user_id,event_time,event_type\nu1,2024-01-01,view\nJos\u00e9,2024-01-02,view\n".encode(
                "latin-1"
            )
        },
        Refused(ExitCode.INPUT, ("raw/events.csv", "not UTF-8", "line 3", "Jos\\xe9", "iconv")),
    ),
    IngestCase("empty_file", {"events.csv": b""}, Refused(ExitCode.INPUT, ("raw/events.csv", "empty (0 bytes"))),
    IngestCase(
        "header_only",
        {"events.csv": csv(HEAD)},
        Refused(ExitCode.INPUT, ("raw/events.csv", "no data rows", "data.source")),
    ),
    IngestCase(
        "null_ids",
        {
            "events.csv": csv(
                HEAD,
                ",2024-01-01 10:00:00,view,",
                "   ,2024-01-01 10:00:00,view,",
                "NULL,2024-01-01 10:00:00,view,",
                "nan,2024-01-01 10:00:00,view,",
                "u1,2024-01-01 10:00:00,view,",
            )
        },
        Ingested(rejected={"null_user_id": 4}, events=[("u1", "2024-01-01 10:00", "view", None)]),
    ),
    IngestCase(
        "duplicate_rows",
        {
            "events.csv": csv(
                "user_id,event_time,event_type,amount,channel",
                "u1,2024-01-01 10:00:00,order_paid,10,web",
                "u1,2024-01-01 10:00:00,order_paid,10,web",
                "u1,2024-01-01 10:00:00,order_paid,10,web",
                "u1,2024-01-01 10:00:00,order_paid,10,app",
            )
        },
        Ingested(
            duplicates=2,
            events=[("u1", "2024-01-01 10:00", "purchase", 10.0), ("u1", "2024-01-01 10:00", "purchase", 10.0)],
        ),
    ),
    IngestCase(
        "same_file_twice",
        {
            "part-1.csv": csv(HEAD, "u1,2024-01-01 10:00:00,view,"),
            "part-2.csv": csv(HEAD, "u1,2024-01-01 10:00:00,view,"),
        },
        Ingested(duplicates=1, events=[("u1", "2024-01-01 10:00", "view", None)]),
        data={"source": "raw/*.csv"},
    ),
    IngestCase(
        "out_of_order_rows",
        {
            "events.csv": csv(
                HEAD,
                "u2,2024-01-03 10:00:00,view,",
                "u1,2024-01-02 10:00:00,order_paid,5",
                "u2,2024-01-01 10:00:00,view,",
                "u1,2024-01-01 09:00:00,view,",
            )
        },
        Ingested(
            events=[
                ("u1", "2024-01-01 09:00", "view", None),
                ("u1", "2024-01-02 10:00", "purchase", 5.0),
                ("u2", "2024-01-01 10:00", "view", None),
                ("u2", "2024-01-03 10:00", "view", None),
            ]
        ),
    ),
    IngestCase(
        "future_timestamps",
        {
            "events.csv": csv(
                HEAD,
                "u1,2099-01-01 00:00:00,view,",
                f"u1,{NEXT_YEAR}-12-31 00:00:00,view,",
                "u1,2024-01-01 10:00:00,view,",
            )
        },
        Ingested(rejected={"far_future_event_time": 2}, events=[("u1", "2024-01-01 10:00", "view", None)]),
    ),
    IngestCase(
        "clock_word_times",
        {"events.csv": csv(HEAD, "u1,now,view,", "u1,Today,view,", "u1,2024-01-01 10:00:00,view,")},
        Ingested(
            rejected={"unparseable_event_time": 2},
            events=[("u1", "2024-01-01 10:00", "view", None)],
            rejected_values={0: {"event_time": "now"}, 1: {"event_time": "Today"}},
        ),
    ),
    IngestCase(
        "mixed_time_zones",
        {
            "events.csv": csv(
                HEAD,
                "u1,2024-07-01 12:00:00,view,",  # naive: Europe/Berlin summer time (UTC+2)
                "u1,2024-07-01T12:00:00Z,view,",
                "u1,2024-07-01T12:00:00+02:00,view,",
                "u1,2024-01-15 12:00:00 UTC,view,",
                "u1,2024-07-01T12:00:00 CEST,view,",  # a named zone: not an offset, cannot be read safely
            )
        },
        Ingested(
            rejected={"unparseable_event_time": 1},
            events=[
                ("u1", "2024-01-15 12:00", "view", None),
                ("u1", "2024-07-01 10:00", "view", None),
                ("u1", "2024-07-01 10:00", "view", None),
                ("u1", "2024-07-01 12:00", "view", None),
            ],
            rejected_values={4: {"event_time": "2024-07-01T12:00:00 CEST"}},
        ),
        data={"timezone": "Europe/Berlin"},
    ),
    IngestCase(
        "missing_time_zone",
        {"events.csv": csv(HEAD, "u1,2024-01-15 12:00:00,view,", "u1,2024-07-15 12:00:00,view,")},
        Ingested(events=[("u1", "2024-01-15 17:00", "view", None), ("u1", "2024-07-15 16:00", "view", None)]),
        data={"timezone": "America/New_York"},
    ),
    IngestCase(
        "dst_change",
        {
            "events.csv": csv(
                HEAD,
                "u1,2024-03-31 00:30:00,view,",  # GMT
                "u1,2024-03-31 01:30:00,view,",  # skipped (clocks 01:00 -> 02:00): moved to 02:00 BST
                "u1,2024-03-31 02:30:00,view,",  # BST
                "u1,2024-10-27 00:30:00,view,",  # BST
                "u1,2024-10-27 01:30:00,view,",  # twice (clocks 02:00 -> 01:00): the first, BST
                "u1,2024-10-27 02:30:00,view,",  # GMT
            )
        },
        Ingested(
            events=[
                ("u1", "2024-03-31 00:30", "view", None),
                ("u1", "2024-03-31 01:00", "view", None),
                ("u1", "2024-03-31 01:30", "view", None),
                ("u1", "2024-10-26 23:30", "view", None),
                ("u1", "2024-10-27 00:30", "view", None),
                ("u1", "2024-10-27 02:30", "view", None),
            ],
            metrics={"adjusted_event_times": {"ambiguous_local_time": 1, "nonexistent_local_time": 1}},
        ),
        data={"timezone": "Europe/London"},
    ),
    IngestCase(
        "negative_amounts",
        {
            "events.csv": csv(
                HEAD,
                "u1,2024-01-01 10:00:00,order_paid,20",
                "u1,2024-01-02 10:00:00,refund_issued,-4.25",
                "u1,2024-01-03 10:00:00,order_paid,-10",
            )
        },
        Ingested(
            events=[
                ("u1", "2024-01-01 10:00", "purchase", 20.0),
                ("u1", "2024-01-02 10:00", "refund", -4.25),
                ("u1", "2024-01-03 10:00", "purchase", -10.0),
            ]
        ),
    ),
    IngestCase(
        "nan_amounts",
        {"events.csv": csv(HEAD, "u1,2024-01-01 10:00:00,order_paid,NaN", "u1,2024-01-02 10:00:00,order_paid,")},
        Ingested(events=[("u1", "2024-01-01 10:00", "purchase", None), ("u1", "2024-01-02 10:00", "purchase", None)]),
    ),
    IngestCase(
        "infinite_amounts",
        {
            "events.csv": csv(
                HEAD,
                "u1,2024-01-01 10:00:00,order_paid,inf",
                "u1,2024-01-02 10:00:00,refund_issued,-Infinity",
                "u1,2024-01-03 10:00:00,order_paid,3",
            )
        },
        Ingested(
            rejected={"non_numeric_amount": 2},
            events=[("u1", "2024-01-03 10:00", "purchase", 3.0)],
            rejected_values={0: {"amount": "inf"}, 1: {"amount": "-Infinity"}},
        ),
    ),
    IngestCase(
        "absurd_amounts",
        {
            "events.csv": csv(
                HEAD,
                "u1,2024-01-01 10:00:00,order_paid,1e13",
                "u1,2024-01-02 10:00:00,refund_issued,-5e15",
                "u1,2024-01-03 10:00:00,order_paid,1e308",
                "u1,2024-01-04 10:00:00,order_paid,1e309",
                "u1,2024-01-05 10:00:00,order_paid,1000000000000",
            )
        },
        Ingested(
            rejected={"out_of_range_amount": 3, "non_numeric_amount": 1},
            events=[("u1", "2024-01-05 10:00", "purchase", 1e12)],
            rejected_values={
                0: {"amount": "1e13", "reason": "out_of_range_amount"},
                3: {"reason": "non_numeric_amount"},
            },
        ),
    ),
    IngestCase(
        "unknown_event_types",
        {"events.csv": csv(HEAD, "u1,2024-01-01 10:00:00,wishlist,", "u2,2024-01-01 11:00:00,wishlist,")},
        Ingested(
            events=[("u1", "2024-01-01 10:00", "other", None), ("u2", "2024-01-01 11:00", "other", None)],
            metrics={"unmapped_event_types": {"wishlist": 2}},
        ),
    ),
    IngestCase(
        "corrupted_parquet",
        {"events.parquet": b"PAR1\x15\x04truncated export"},
        Refused(ExitCode.INPUT, ("raw/events.parquet", "cannot be read as Parquet")),
    ),
    IngestCase(
        "no_matching_files",
        {"notes.txt.bak": b"not data"},
        Refused(ExitCode.INPUT, ("data.source", "'raw/*'", "matched no Parquet/CSV files", "notes.txt.bak")),
        data={"source": "raw/*"},
    ),
    IngestCase(
        "unknown_timezone",
        {"events.csv": csv(HEAD, "u1,2024-01-01 10:00:00,view,")},
        Refused(ExitCode.CONFIG, ("data.timezone", "'Europe/Londn'")),
        data={"timezone": "Europe/Londn"},
    ),
    IngestCase(
        "params_typo",
        {"events.csv": csv(HEAD, "u1,2024-01-01 10:00:00,view,")},
        Refused(ExitCode.CONFIG, ("params.yaml", "unknown key 'labels.horizon_dayz'")),
        params={"labels": {"horizon_dayz": 30}},
    ),
    IngestCase(
        "param_out_of_range",
        {"events.csv": csv(HEAD, "u1,2024-01-01 10:00:00,view,")},
        Refused(
            ExitCode.CONFIG, ("params.yaml", "labels.horizon_days", "(got 0)", "score.holdout_fraction", "(got 1.5)")
        ),
        params={"labels": {"horizon_days": 0}, "score": {"holdout_fraction": 1.5}},
    ),
    IngestCase(
        "param_wrong_type",
        {"events.csv": csv(HEAD, "u1,2024-01-01 10:00:00,view,")},
        Refused(ExitCode.CONFIG, ("params.yaml", "train.num_leaves", "'many'")),
        params={"train": {"num_leaves": "many"}},
    ),
    IngestCase(
        "memory_limit_not_a_size",
        {"events.csv": csv(HEAD, "u1,2024-01-01 10:00:00,view,")},
        Refused(ExitCode.CONFIG, ("params.yaml", "duckdb_memory_limit", "'lots'", "'4GB'", "'1200MB'")),
        params={"duckdb_memory_limit": "lots"},
    ),
]


def ingest_project(root: Path, case: IngestCase) -> Path:
    (root / "raw").mkdir()
    for name, content in case.files.items():
        if isinstance(content, pd.DataFrame):
            content.to_parquet(root / "raw" / name, index=False)
        else:
            (root / "raw" / name).write_bytes(content)
    source = case.data.get("source") or f"raw/{next(iter(case.files))}"
    data = {"event_types": EVENT_TYPES, **case.data, "source": source}
    return write_params(root / "params.yaml", {**case.params, "data": data})


def check_accounted(root: Path, sources: list[Path], expect: Ingested) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Every row read is kept, quarantined with a reason, or counted as an exact duplicate."""
    metrics = json.loads((root / "metrics" / "ingest.json").read_text())
    events = pd.read_parquet(root / "data" / "ingested" / "events.parquet")
    rejects = pd.read_parquet(root / "data" / "ingested" / "rejects.parquet")
    assert metrics["total"] == sum(input_rows(p) for p in sources)
    assert metrics["accepted"] + metrics["rejected"] + metrics["duplicates"] == metrics["total"]
    assert (len(events), len(rejects)) == (metrics["accepted"], metrics["rejected"])
    assert metrics["rejected_by_reason"] == expect.rejected
    assert metrics["duplicates"] == expect.duplicates
    assert dict(Counter(rejects["reason"])) == expect.rejected
    assert not rejects.duplicated(["source_file", "source_row"]).any()
    assert rejects["source_row"].between(0, metrics["total"] - 1).all()
    for key, value in expect.metrics.items():
        assert metrics[key] == value, key
    return metrics, events, rejects


def as_tuples(events: pd.DataFrame) -> list[tuple]:
    return [
        (u, t.strftime("%Y-%m-%d %H:%M"), r, None if pd.isna(a) else float(a))
        for u, t, r, a in events[["user_id", "event_time", "event_type", "amount"]].itertuples(index=False)
    ]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in INGEST_CASES])
def test_ingest_bad_input(case: IngestCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ingest_project(tmp_path, case)
    res = invoke(tmp_path, "ingest")
    message = text(res.output)
    if isinstance(case.expect, Refused):
        assert res.exit_code == case.expect.code, message
        assert "Traceback" not in res.output
        for needle in case.expect.needles:
            assert needle in message, f"{needle!r} not in: {message}"
        nothing_ingested(tmp_path)
        return
    assert res.exit_code == 0, message
    sources = sorted((tmp_path / "raw").iterdir())
    _, events, rejects = check_accounted(tmp_path, sources, case.expect)
    assert events["event_time"].dt.tz is not None and str(events["event_time"].dt.tz) == "UTC"
    assert events[["user_id", "event_time", "event_type"]].equals(
        events[["user_id", "event_time", "event_type"]].sort_values(["user_id", "event_time", "event_type"])
    )
    if case.expect.events is not None:
        assert as_tuples(events) == case.expect.events
    by_row = rejects.set_index("source_row")
    for row, cells in case.expect.rejected_values.items():
        for column, value in cells.items():
            assert by_row.loc[row, column] == value, (row, column)


# ------------------------------------------------------------------------------- features: cutoffs, labels

FEATURE_PARAMS = {
    "threads": 1,
    "features": {"windows": [7], "frequency_days": 7},
    "labels": {"horizon_days": 14, "lookback_days": 28},
}


def features_project(root: Path, rows: list[str], **overrides: Any) -> Path:
    (root / "raw").mkdir()
    (root / "raw" / "events.csv").write_bytes(csv("user_id,event_time,event_type", *rows))
    params = {**FEATURE_PARAMS, **overrides, "data": {"source": "raw/events.csv"}}
    return write_params(root / "params.yaml", params)


def steady_user(days: int, start: dt.date = dt.date(2024, 1, 1)) -> list[str]:
    return [f"steady,{start + dt.timedelta(days=i)} 12:00:00,session" for i in range(days)]


def test_users_with_one_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user seen once is in the population at every cutoff whose lookback holds the event, and churned."""
    monkeypatch.chdir(tmp_path)
    once = {"once_a": dt.datetime(2024, 2, 10, 8), "once_b": dt.datetime(2024, 3, 1, 23, 59, 59)}
    rows = steady_user(120) + [f"{u},{t:%Y-%m-%d %H:%M:%S},view" for u, t in once.items()]
    features_project(tmp_path, rows)
    assert invoke(tmp_path, "ingest").exit_code == 0
    res = invoke(tmp_path, "features")
    assert res.exit_code == 0, text(res.output)
    snap = pd.read_parquet(tmp_path / "data" / "features" / "snapshots.parquet")
    cutoffs = sorted(snap["cutoff"].unique())
    for user, t in once.items():
        mine = snap[snap["user_id"] == user].sort_values("cutoff")
        # in the population at cutoff c when the event is in [c - lookback, c)
        expected = [c for c in cutoffs if t.date() < c and c - dt.timedelta(days=28) <= t.date()]
        assert mine["cutoff"].tolist() == expected and expected
        assert (mine["churned"] == 1).all()
        since = [(dt.datetime.combine(c, dt.time()) - t).total_seconds() / 86_400 for c in expected]
        np.testing.assert_allclose(mine["days_since_last_activity"], since)
        assert (mine["tenure_days"] == mine["days_since_last_activity"]).all()


def test_last_weeks_unlabelable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last `labels.horizon_days` of data have no closed label window: no training snapshot there."""
    monkeypatch.chdir(tmp_path)
    features_project(tmp_path, steady_user(100))
    assert invoke(tmp_path, "ingest").exit_code == 0
    res = invoke(tmp_path, "features")
    assert res.exit_code == 0, text(res.output)
    summary = json.loads((tmp_path / "metrics" / "features.json").read_text())
    end = dt.date.fromisoformat(summary["data_end"])
    assert end == dt.date(2024, 4, 10)
    snap = pd.read_parquet(tmp_path / "data" / "features" / "snapshots.parquet")
    last = max(snap["cutoff"])
    assert last + dt.timedelta(days=14) <= end < last + dt.timedelta(days=14 + 7)
    assert snap["churned"].notna().all()
    assert summary["cutoffs"] == snap["cutoff"].nunique()


def test_no_labelable_cutoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    features_project(tmp_path, steady_user(20), labels={"horizon_days": 60, "lookback_days": 28})
    assert invoke(tmp_path, "ingest").exit_code == 0
    res = invoke(tmp_path, "features")
    assert res.exit_code == ExitCode.INPUT, text(res.output)
    message = text(res.output)
    assert "no labelable cutoff" in message and "horizon 60 days" in message and "labels.horizon_days" in message
    assert not (tmp_path / "data" / "features").exists()


# --------------------------------------------------------------------------------- scoring with a model

SHOP_PARAMS = {
    "threads": 1,
    # no end of promotions in the small shop: its coupon features would drift past the scoring guards
    "generate": {"users": 300, "seed": 3, "promotions_end": None},
    "train": {"n_estimators": 40, "early_stopping_rounds": 10},
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic shop ingested, featured and trained once, its model @champion, one list published."""
    from mlflow import MlflowClient

    from pipeline import tracking
    from pipeline.config import MlflowParams

    root = tmp_path_factory.mktemp("shop")
    write_params(root / "params.yaml", SHOP_PARAMS)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow puts the artifacts of a new experiment under the working directory
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setattr(cli.console, "width", 10_000)
        for stage in ("generate", "ingest", "features", "train"):
            res = invoke(root, stage)
            assert res.exit_code == 0, f"{stage}: {text(res.output)[-3000:]}"
        version = json.loads((root / "models" / "train.json").read_text())["model_version"]
        tracking.setup(MlflowParams(tracking_uri=f"sqlite:///{root / 'mlflow.db'}"))
        MlflowClient().set_registered_model_alias("winback-churn", "champion", version)
        res = invoke(root, "score")
        assert res.exit_code == 0, text(res.output)[-3000:]
    return root


@pytest.fixture
def in_shop(shop: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(shop)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return shop


def published(root: Path) -> dict[str, str]:
    """sha256 of every file of every published list (through the date's link) and of outputs/latest.json."""
    out = {}
    lists = root / "outputs" / "winback"
    for day in sorted(lists.iterdir()):
        if day.name[:1].isdigit():
            for f in sorted(day.iterdir()):
                out[f"{day.name}/{f.name}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    out["latest.json"] = hashlib.sha256((root / "outputs" / "latest.json").read_bytes()).hexdigest()
    return out


def data_end(root: Path) -> dt.date:
    return dt.date.fromisoformat(json.loads((root / "metrics" / "features.json").read_text())["data_end"])


def first_day(root: Path) -> dt.date:
    return dt.date.fromisoformat(json.loads((root / "metrics" / "features.json").read_text())["data_first_day"])


@dataclass(frozen=True)
class ScoreCase:
    id: str
    args: Callable[[Path], list[str]]
    code: ExitCode
    needles: Callable[[Path], list[str]]
    params: dict[str, Any] = field(default_factory=dict)  # merged over the shop's params
    marks: tuple = ()


SCORE_CASES = [
    ScoreCase(
        "as_of_before_data",
        lambda r: ["score", "--as-of", "2023-01-02"],
        ExitCode.INPUT,
        lambda r: ["--as-of 2023-01-02 is before the first event", first_day(r).isoformat(), data_end(r).isoformat()],
    ),
    ScoreCase(
        "as_of_after_data",
        lambda r: ["score", "--as-of", (data_end(r) + dt.timedelta(days=7)).isoformat()],
        ExitCode.INPUT,
        lambda r: [
            f"--as-of {(data_end(r) + dt.timedelta(days=7)).isoformat()} is after the end of the data",
            data_end(r).isoformat(),
            "7 day(s) more inactive",
        ],
    ),
    ScoreCase(
        "no_champion_model",
        lambda r: ["score"],
        ExitCode.MODEL,
        lambda r: ["winback-churn-other@champion", "promote a version"],
        params={"mlflow": {"model_name": "winback-churn-other"}},
    ),
    ScoreCase(
        "model_features_mismatch",
        lambda r: ["score"],
        ExitCode.MODEL,
        lambda r: ["needs features the data does not have", "_90d"],
        params={"features": {"windows": [7, 30]}},
    ),
    ScoreCase(
        "list_horizon_not_passed",
        lambda r: ["measure", "--list", data_end(r).isoformat()],
        ExitCode.INPUT,
        lambda r: ["horizon not passed", f"data ends {data_end(r).isoformat()}", "labels.horizon_days"],
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in SCORE_CASES])
def test_scoring_bad_input(case: ScoreCase, in_shop: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((in_shop / "params.yaml").read_text())
    for key, value in case.params.items():
        params[key] = {**params.get(key, {}), **value}
    before = published(in_shop)
    res = invoke(in_shop, *case.args(in_shop), params=write_params(tmp_path / "params.yaml", params))
    message = text(res.output)
    assert res.exit_code == case.code, message
    assert "Traceback" not in res.output
    for needle in case.needles(in_shop):
        assert needle in message, f"{needle!r} not in: {message}"
    assert published(in_shop) == before


def test_corrupted_ingested_parquet(in_shop: Path, tmp_path: Path) -> None:
    events = in_shop / "data" / "ingested" / "events.parquet"
    good = events.read_bytes()
    before = published(in_shop)
    try:
        events.write_bytes(good[: len(good) // 3])
        res = invoke(in_shop, "score")
    finally:
        events.write_bytes(good)
    assert res.exit_code == ExitCode.INPUT, text(res.output)
    assert "data/ingested/events.parquet" in text(res.output) and "winback ingest" in text(res.output)
    assert published(in_shop) == before


@pytest.mark.parametrize("stage", ["features", "score"], ids=["out_of_memory_features", "out_of_memory_score"])
def test_out_of_memory(stage: str, in_shop: Path, tmp_path: Path) -> None:
    """DuckDB out of memory is a refusal saying which params to change (exit 8), not a bug (exit 1)."""
    params = {**yaml.safe_load((in_shop / "params.yaml").read_text()), "duckdb_memory_limit": "1MB"}
    snapshots = in_shop / "data" / "features" / "snapshots.parquet"
    before = published(in_shop), snapshots.read_bytes()
    runs = in_shop / "outputs" / "winback" / "runs.jsonl"
    logged = runs.read_text().count("\n")
    res = invoke(in_shop, stage, params=write_params(tmp_path / "params.yaml", params))
    message = text(res.output)
    assert res.exit_code == ExitCode.RESOURCES, message[-3000:]
    assert "Traceback" not in res.output
    for needle in ("DuckDB ran out of memory", "duckdb_memory_limit '1MB'", "threads 1", "duckdb_temp_directory"):
        assert needle in message, f"{needle!r} not in: {message}"
    assert (published(in_shop), snapshots.read_bytes()) == before
    entries = runs.read_text().splitlines()[logged:]
    if stage == "score":
        assert [json.loads(e)["exit_code"] for e in entries] == [ExitCode.RESOURCES]
    else:
        assert entries == []


# ------------------------------------------------------------------------------------------- a full disk


def _capped_writes(limit: int) -> Callable[[], None]:
    def cap() -> None:  # in the child: a write past `limit` bytes fails with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return cap


def run_capped(root: Path, *args: str, limit: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="10000")
    env.pop("MLFLOW_TRACKING_URI", None)
    winback = Path(sys.executable).parent / "winback"
    return subprocess.run(
        [str(winback), *args, "--params", "params.yaml", "--root", "."],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_capped_writes(limit),
    )


def tree(root: Path) -> set[str]:
    """Every path under the stage outputs; the run log of the lists (outputs/winback/runs.jsonl) aside."""
    return {
        str(p.relative_to(root))
        for top in ("data", "metrics", "models", "outputs")
        for p in (root / top).rglob("*")
        if p.name != "runs.jsonl"
    }


@pytest.mark.parametrize(
    ("stage", "outputs", "limit"),
    [
        pytest.param("score", None, 20_000, id="disk_full_score"),
        pytest.param("ingest", ["data/ingested/events.parquet", "metrics/ingest.json"], 20_000, id="disk_full_ingest"),
    ],
)
def test_disk_full_write(in_shop: Path, stage: str, outputs: list[str] | None, limit: int) -> None:
    """Writes past a few kB fail with EFBIG, as on a full disk: exit 7, the last good output intact."""
    watched = [in_shop / p for p in outputs] if outputs else []
    before = published(in_shop), {p: p.read_bytes() for p in watched}
    paths = tree(in_shop)
    res = run_capped(in_shop, stage, limit=limit)
    message = text(res.stdout + res.stderr)
    assert res.returncode == ExitCode.OUTPUT, message[-3000:]
    assert "Traceback" not in message
    assert "File too large" in message and "previous output is unchanged" in message
    assert (published(in_shop), {p: p.read_bytes() for p in watched}) == before
    assert tree(in_shop) == paths  # no temporary or staging file left behind


def test_disk_full_message(in_shop: Path) -> None:
    res = run_capped(in_shop, "ingest", limit=20_000)
    assert res.returncode == ExitCode.OUTPUT
    assert "data/ingested/events.parquet" in text(res.stdout + res.stderr)
