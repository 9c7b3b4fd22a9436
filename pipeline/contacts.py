"""Retention contact log: validate, normalise and quarantine it into data/ingested/contacts.parquet.

The log says whom the team contacted, when and how: one row per contact with `user_id`, `contacted_at`
and optionally `action` (mapped from the log's own columns by `data.contact_columns`). Every row is
either accepted or quarantined in data/ingested/contact_rejects.parquet with the reason of the first
rule it fails:

1. ``null_user_id``               user id null, empty or whitespace
2. ``null_contacted_at``          contact time null or empty
3. ``unparseable_contacted_at``   contact time present but not a date/time
4. ``far_future_contacted_at``    later than ``now + data.max_future_days``
5. ``too_old_contacted_at``       earlier than ``data.min_time`` (midnight UTC), when set
6. ``unknown_user_id``            the user has no ingested event
7. ``duplicate``                  same user, time and action as an earlier accepted row (any file)

Naive times are read in ``data.timezone`` and stored as UTC, like event times. The canonical file is
always written (empty, with its schema, when there is no log), so the features stage can depend on it.
How contacts reach training is in features/contacts.py (`contacted` snapshot rows) and how they are
measured in pipeline/measure.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow.parquet as pq

from pipeline import io
from pipeline.config import CONTACT_COLUMNS, DataParams
from pipeline.engine import engine_path
from pipeline.ingest import (
    _READ_ERRORS,
    IngestError,
    _clean_ids,
    _clean_text,
    _is_parquet,
    _parse_times,
    match_files,
    reject_rows,
)
from pipeline.privacy import pseudonymise, redact_rejects

CONTACTS_SCHEMA = pa.DataFrameSchema(
    {
        "user_id": pa.Column(str, nullable=False, checks=pa.Check.str_length(min_value=1)),
        "contacted_at": pa.Column(pd.DatetimeTZDtype("us", "UTC"), nullable=False),
        "action": pa.Column(str, nullable=True),
    },
    strict=True,
    coerce=True,
    ordered=True,
    name="canonical contacts",
)


def empty_contacts() -> pd.DataFrame:
    """A contact log with no rows and the canonical schema."""
    return CONTACTS_SCHEMA.validate(
        pd.DataFrame(
            {
                "user_id": pd.Series([], dtype=str),
                "contacted_at": pd.Series([], dtype=pd.DatetimeTZDtype("us", "UTC")),
                "action": pd.Series([], dtype=str),
            }
        )
    )


def contact_files(data: DataParams, synthetic_path: Path) -> list[Path]:
    """Files of the configured contact log ([] when there is none); fails naming data.contacts."""
    fix = "set data.contacts in params.yaml to null, 'synthetic' or an existing Parquet/CSV file, directory or glob"
    if data.contacts is None:
        return []
    if data.contacts == "synthetic":
        path = Path(synthetic_path)
        if not path.is_file():
            raise IngestError(
                f"{path}: the synthetic contact log is missing (data.contacts is 'synthetic'); run the "
                "generate stage (dvc repro generate) or `winback simulate-campaign` first"
            )
        return [path]
    return match_files(data.contacts, "data.contacts", fix)


def read_contact_file(path: Path) -> pd.DataFrame:
    """One log file; CSV cells as raw strings (comma-separated, header row) so bad values can be quarantined."""
    try:
        if _is_parquet(path):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except _READ_ERRORS as exc:
        kind = "Parquet" if _is_parquet(path) else "CSV (comma-separated, UTF-8, with a header row)"
        raise IngestError(
            f"{path}: the contact log cannot be read as {kind}: {type(exc).__name__}: {exc}. "
            "Fix or replace the file, or change data.contacts in params.yaml"
        ) from exc


def contact_mapping(columns: list[str], data: DataParams, source_name: str) -> dict[str, str | None]:
    """Canonical contact column -> column of the log (None: the log has no action)."""
    mapping: dict[str, str | None] = {}
    for canonical in CONTACT_COLUMNS:
        src = data.contact_columns.get(canonical, canonical)
        explicit = canonical in data.contact_columns
        if src is None or (src not in columns and canonical == "action" and not explicit):
            mapping[canonical] = None
        elif src in columns:
            mapping[canonical] = src
        else:
            what = "is mapped to column" if explicit else "is not mapped, so a column named"
            alt = " (or to null if the log has none)" if canonical == "action" else ""
            raise IngestError(
                f"{source_name}: contact column {canonical!r} {what} {src!r}"
                f"{' is expected' if not explicit else ''}, but the log has no such column. Available columns: "
                f"{columns}. Fix: set data.contact_columns.{canonical} in params.yaml to the column that holds it{alt}"
            )
    return mapping


def normalise_contacts(
    raw: pd.DataFrame,
    data: DataParams,
    source_name: str,
    now: pd.Timestamp,
    known_users: set[str] | None,
    key: bytes | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(accepted contacts, rejects, counts) of one file; duplicates are found across files by `ingest_contacts`."""
    raw = raw.reset_index(drop=True)
    raw.columns = [str(c) for c in raw.columns]
    mapping = contact_mapping(list(raw.columns), data, source_name)
    try:
        tz = ZoneInfo(data.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise IngestError(
            f"{source_name}: column {mapping['contacted_at']!r} cannot be localised: data.timezone "
            f"{data.timezone!r} is not an IANA time zone; set data.timezone in params.yaml to e.g. 'UTC'"
        ) from exc
    time_col = mapping["contacted_at"]
    values = raw[time_col]
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        example = values.dropna().iloc[0] if values.notna().any() else "all null"
        raise IngestError(
            f"{source_name}: contact time column {time_col!r} is numeric ({values.dtype}, e.g. {example!r}); "
            "write it as date/time text or a timestamp column, or point data.contact_columns.contacted_at at one"
        )
    now = pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    reason = pd.Series(np.nan, index=raw.index, dtype=object)

    def flag(mask: pd.Series | np.ndarray, name: str) -> None:
        mask = pd.Series(np.asarray(mask, dtype=bool), index=raw.index)
        reason[mask & reason.isna()] = name

    user_id = _clean_ids(raw[mapping["user_id"]])
    if key is not None:  # the events' ids are pseudonyms too (privacy.pseudonymise_user_ids)
        user_id = pseudonymise(user_id, key)
    flag(user_id.isna(), "null_user_id")
    times, null_time, bad_time = _parse_times(values, tz, source_name, time_col, dayfirst=data.dayfirst)
    flag(null_time, "null_contacted_at")
    flag(bad_time, "unparseable_contacted_at")
    flag((times > now + pd.Timedelta(days=data.max_future_days)).fillna(False), "far_future_contacted_at")
    if data.min_time is not None:
        flag((times < pd.Timestamp(data.min_time, tz="UTC")).fillna(False), "too_old_contacted_at")
    if known_users is not None:
        flag(user_id.notna() & ~user_id.isin(known_users), "unknown_user_id")
    if mapping["action"] is None:
        action = pd.Series(np.nan, index=raw.index, dtype=str)
    else:
        action = _clean_text(raw[mapping["action"]])

    keep = reason.isna().to_numpy()
    accepted = pd.DataFrame({"user_id": user_id[keep], "contacted_at": times[keep], "action": action[keep]})
    accepted["_file"] = source_name
    accepted["_row"] = np.flatnonzero(keep)
    rejects = reject_rows(raw, reason, source_name)
    counts = {"total": len(raw), "files": [source_name]}
    return accepted, rejects, counts


def event_users(events_path: Path) -> set[str]:
    """Distinct user ids of the ingested events."""
    con = duckdb.connect()
    try:
        rows = con.execute("SELECT DISTINCT user_id FROM read_parquet(?)", [str(events_path)]).fetchall()
    finally:
        con.close()
    return {r[0] for r in rows}


def combine(
    parts: list[tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]], raws: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Contacts of every file with cross-file duplicates quarantined, sorted; rejects; counts that add up."""
    accepted = pd.concat([p[0] for p in parts], ignore_index=True) if parts else pd.DataFrame()
    rejects = [p[1] for p in parts if len(p[1])]
    if len(accepted):
        dup = accepted.duplicated(["user_id", "contacted_at", "action"], keep="first").to_numpy()
        for name, rows in accepted[dup].groupby("_file", sort=False)["_row"]:
            raw = raws[name]
            reason = pd.Series(np.nan, index=raw.index, dtype=object)
            reason.iloc[rows.to_numpy()] = "duplicate"
            rejects.append(reject_rows(raw, reason, name))
        accepted = accepted[~dup]
    if len(accepted):
        contacts = accepted[["user_id", "contacted_at", "action"]].sort_values(
            ["user_id", "contacted_at"], kind="stable"
        )
        contacts = CONTACTS_SCHEMA.validate(contacts.reset_index(drop=True))
    else:
        contacts = empty_contacts()
    if rejects:
        all_rejects = pd.concat(rejects, ignore_index=True)
        all_rejects = all_rejects.astype({c: str for c in all_rejects.columns if c != "source_row"})
    else:
        all_rejects = pd.DataFrame(
            {"source_file": pd.Series([], dtype=str), "source_row": pd.Series([], dtype="int64"), "reason": []}
        ).astype({"reason": str})
    by_reason = Counter(all_rejects["reason"])
    metrics: dict[str, Any] = {
        "total": sum(p[2]["total"] for p in parts),
        "accepted": len(contacts),
        "rejected": len(all_rejects),
        "rejected_by_reason": {k: int(v) for k, v in sorted(by_reason.items())},
        "users": int(contacts["user_id"].nunique()),
        "first": contacts["contacted_at"].min().isoformat() if len(contacts) else None,
        "last": contacts["contacted_at"].max().isoformat() if len(contacts) else None,
        "files": [f for p in parts for f in p[2]["files"]],
    }
    if metrics["accepted"] + metrics["rejected"] != metrics["total"]:
        raise AssertionError(f"contact ingest lost rows: {metrics}")
    return contacts, all_rejects, metrics


def ingest_contacts(
    data: DataParams,
    files: list[Path],
    events_path: Path,
    out_contacts: Path,
    out_rejects: Path,
    now: pd.Timestamp | None = None,
    key: bytes | None = None,
) -> dict[str, Any]:
    """Validate the contact log against the ingested events and write contacts, rejects; return the counts.

    With a pseudonym `key`, user ids are keyed hashes and rejects keep only the mapped columns.
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    raws = {str(path): read_contact_file(path).reset_index(drop=True) for path in files}
    for name, raw in raws.items():
        raw.columns = [str(c) for c in raw.columns]
        contact_mapping(list(raw.columns), data, name)
    known = event_users(events_path) if raws else None
    parts = [normalise_contacts(raw, data, name, now, known, key) for name, raw in raws.items()]
    contacts, rejects, metrics = combine(parts, raws)
    if key is not None:
        mapped = {data.contact_columns.get(c, c) for c in CONTACT_COLUMNS} - {None}
        rejects = redact_rejects(rejects, mapped, data.contact_columns.get("user_id", "user_id") or "", key)
    io.write_parquet(contacts, out_contacts)
    io.write_parquet(rejects, out_rejects)
    return metrics


def read_contacts(path: Path) -> pd.DataFrame:
    """The canonical contact log, or an empty one when the file does not exist (a run from before contacts)."""
    path = Path(path)
    if not path.exists():
        return empty_contacts()
    return pq.read_table(path).to_pandas()


def contacted_keys(con: Any, contacts_path: Path, cutoffs: list, horizon_days: int) -> pd.MultiIndex:
    """(user_id, cutoff) pairs whose outcome a logged contact may have changed; empty without a log."""
    from features.contacts import contacted_rows
    from features.windows import EPOCH, cutoff_table

    path = Path(contacts_path)
    if not len(cutoffs) or not path.exists() or pq.read_metadata(path).num_rows == 0:
        return pd.MultiIndex.from_arrays([[], []])
    contacts = con.read_parquet(engine_path(path))
    pairs = con.to_pandas(contacted_rows(contacts, cutoff_table(sorted(cutoffs)), horizon_days))
    days = pd.to_timedelta(pairs["cutoff_day"].astype("int64"), unit="D")
    return pd.MultiIndex.from_arrays([pairs["user_id"].astype(str), (pd.Timestamp(EPOCH) + days).dt.date])


def flag_contacted(
    con: Any, snap: pd.DataFrame, contacts_path: Path, horizon_days: int, keys: pd.MultiIndex | None = None
) -> pd.DataFrame:
    """`snap` with a boolean `contacted`: rows whose outcome a logged contact may have changed.

    The rule is features/contacts.py::contacted_rows (a contact in [cutoff - horizon, cutoff + horizon)).
    `contacted` is not a feature: training reads it only to exclude or down-weight rows (train.contacted).
    `keys`: contacted_keys computed once for many parts of the snapshots (by default, for `snap`'s cutoffs).
    """
    if keys is None:
        keys = contacted_keys(con, contacts_path, list(snap["cutoff"].unique()), horizon_days)
    if not len(keys):  # no logged contact near any cutoff (or no log): no row to look up
        return snap.assign(contacted=np.zeros(len(snap), dtype=bool))
    rows = pd.MultiIndex.from_arrays([snap["user_id"].astype(str), snap["cutoff"]])
    return snap.assign(contacted=rows.isin(keys))
