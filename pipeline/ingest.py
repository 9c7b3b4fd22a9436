"""Ingest stage: read the raw event source, validate, normalise to the canonical schema, quarantine bad rows.

Quarantine rules run in a fixed order and a row gets the reason of the first rule it fails:

1. ``null_user_id``            user id null, empty or whitespace
2. ``null_event_time``         event time null or empty
3. ``unparseable_event_time``  event time present but not a date/time (``now``, ``today``... included)
4. ``far_future_event_time``   later than ``now + data.max_future_days``
5. ``too_old_event_time``      earlier than ``data.min_time`` (midnight UTC), when set
6. ``null_event_type``         event type null or empty (only when the source has event types)
7. ``non_numeric_<col>``       amount, quantity, discount, rating, delivery_delay_days, tier (in that order):
   ``out_of_range_<col>``      present but not a finite number, or (checked right after) a magnitude above
                               MAX_ABS_VALUE (1e12), which no real value has and the features' exact integer
                               sums (value x 10,000 in int64) cannot hold

Rows that pass every rule and are identical to an earlier passing row in every source column of the same file
are dropped as exact duplicates (counted, not quarantined).

Naive times are read in ``data.timezone``. A wall-clock time that does not exist there (skipped when clocks go
forward) is moved forward to the first valid instant, and one that occurs twice (clocks go back) is read as its
first occurrence; both are kept and counted in ``adjusted_event_times`` of the metrics.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import importlib.util
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.parquet as pq

from features.events import ALL_ROLES, CANONICAL_COLUMNS, OPTIONAL_COLUMNS, OTHER, REQUIRED_COLUMNS
from pipeline.config import DERIVED_PREFIX, DataParams, is_warehouse_url
from pipeline.errors import InputError
from pipeline.io import atomic_paths, write_csv, write_json, write_parquet

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".txt")
SUPPORTED_SUFFIXES = PARQUET_SUFFIXES + CSV_SUFFIXES

NUMERIC_COLUMNS: tuple[str, ...] = tuple(c for c, t in OPTIONAL_COLUMNS.items() if t == "float64")
STRING_COLUMNS: tuple[str, ...] = tuple(c for c, t in CANONICAL_COLUMNS.items() if t == "string")

# Spellings of "no value" written by spreadsheets, databases and str(None)/str(nan); compared after
# strip + lower. A CSV is read without pandas' own NA detection so that rejects keep the raw text.
NULL_TOKENS = frozenset({"", "nan", "none", "null", "na", "n/a", "nat", "<na>"})
# Words pandas reads as the current clock time: as an event time they are placeholders, not instants, and
# would silently become "the moment ingest ran"; they are quarantined as unparseable.
CLOCK_WORDS = frozenset({"now", "today", "tomorrow", "yesterday"})

REJECT_META = ("source_file", "source_row", "reason")

# A date of numbers with the year last (03/04/2024, 3.4.24, 03-04-2024): day and month order unknown.
_NUMERIC_DATE = r"^\s*(\d{1,2})[/.\-](\d{1,2})[/.\-]\d{2,4}(?!\d)"
# An explicit UTC marker or offset after a clock time: such strings are instants, not local times.
_AWARE_TIME = re.compile(r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)
# Float ids exported as text ("12346.0"); the fraction is an artefact of a float column, not part of the id.
_FLOAT_ID = re.compile(r"^(-?\d+)\.0+$")

_PANDAS_DTYPES = {"string": str, "float64": "float64", "timestamp[us, UTC]": pd.DatetimeTZDtype("us", "UTC")}
_NULLABLE = {"user_id": False, "event_time": False, "event_type": False}

EVENTS_SCHEMA = pa.DataFrameSchema(
    {
        name: pa.Column(
            _PANDAS_DTYPES[dtype],
            nullable=_NULLABLE.get(name, True),
            checks={
                "user_id": [pa.Check.str_length(min_value=1)],
                "event_type": [pa.Check.isin(ALL_ROLES)],
            }.get(name),
        )
        for name, dtype in CANONICAL_COLUMNS.items()
    },
    strict=True,
    coerce=True,
    ordered=True,
    name="canonical events",
)

SORT_KEYS = ["user_id", "event_time", "event_type"]

# Largest magnitude accepted in a numeric column: features sum values exactly as int64 counts of 1/10,000
# (features/rollup.py), which overflow near 9.2e14 per value; no amount, rating or delay comes near 1e12.
MAX_ABS_VALUE = 1e12


class IngestError(InputError):
    """The raw source cannot be ingested; the message names the file, the column and how to fix it."""


@dataclass(frozen=True)
class IngestResult:
    """Canonical events, quarantined rows and counts from one normalisation."""

    events: pd.DataFrame
    rejects: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- sources


def _suffix_ok(path: Path) -> bool:
    return path.name.lower().endswith(SUPPORTED_SUFFIXES)


def resolve_source(data: DataParams, synthetic_path: Path) -> list[Path]:
    """Files of the configured source: the synthetic file, or a path, directory or glob of Parquet/CSV files."""
    fix = (
        "set data.source in params.yaml to an existing Parquet/CSV file, a directory or a glob "
        f"(supported: {', '.join(SUPPORTED_SUFFIXES)}), or to 'synthetic'"
    )
    if data.source == "synthetic":
        path = Path(synthetic_path)
        if not path.is_file():
            raise IngestError(
                f"{path}: synthetic events not found (data.source is 'synthetic'); "
                "run the generate stage first (dvc repro generate)"
            )
        return [path]
    return match_files(data.source, "data.source", fix)


def match_files(spec: str, key: str, fix: str) -> list[Path]:
    """The Parquet/CSV files a path, directory, glob or 'package:<pkg>/<path>' names; errors name `key`."""
    pattern = str(package_path(spec, key)) if spec.startswith("package:") else spec
    pattern = str(Path(pattern).expanduser())
    if any(ch in pattern for ch in "*?["):
        matched = [Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
    elif Path(pattern).is_dir():
        matched = [p for p in Path(pattern).iterdir() if p.is_file()]
    elif Path(pattern).is_file():
        if not _suffix_ok(Path(pattern)):
            raise IngestError(f"{pattern}: unsupported file type for {key}; {fix}")
        return [Path(pattern)]
    else:
        raise IngestError(f"{key} {spec!r} matched no files (cwd: {Path.cwd()}); {fix}")
    files = sorted((p for p in matched if _suffix_ok(p)), key=str)
    if not matched:
        raise IngestError(f"{key} {spec!r} matched no files (cwd: {Path.cwd()}); {fix}")
    if not files:
        found = sorted(str(p) for p in matched)[:5]
        raise IngestError(
            f"{key} {spec!r} matched no Parquet/CSV files (cwd: {Path.cwd()}; other files found: {found}); {fix}"
        )
    return files


def reject_rows(raw: pd.DataFrame, reason: pd.Series, source_name: str) -> pd.DataFrame:
    """The rows with a reason, as source strings behind (source_file, source_row, reason)."""
    rejected = reason.notna().to_numpy()
    body = _as_strings(raw.loc[rejected])
    # a source column named like a meta column keeps its values under a prefixed name
    body.columns = [f"source.{c}" if c in REJECT_META else c for c in raw.columns]
    meta = pd.DataFrame(
        {
            "source_file": pd.Series(source_name, index=body.index, dtype=str),
            "source_row": np.flatnonzero(rejected).astype("int64"),
            "reason": reason[rejected].astype(str),
        },
        index=body.index,
    )
    return pd.concat([meta, body], axis=1).reset_index(drop=True)


def package_path(source: str, key: str = "data.source") -> Path:
    """Resolve 'package:<pkg>/<path>' to a data file inside an installed package (without importing it)."""
    spec_text = source.removeprefix("package:")
    package, _, inner = spec_text.partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise IngestError(
            f"{key} {source!r}: Python package {package!r} is not installed; install it "
            f"(e.g. pip install {package}) or point {key} at a file path"
        )
    return Path(next(iter(spec.submodule_search_locations))) / inner


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(PARQUET_SUFFIXES)


_READ_ERRORS = (OSError, ValueError, pyarrow.ArrowException)  # ParserError and UnicodeDecodeError are ValueErrors


def _read_columns(path: Path, data: DataParams) -> list[str]:
    """Column names of a file, reading only its schema or header."""
    _check_not_empty(path)
    try:
        # an empty frame with the file's own column types, so derived expressions type-check here
        empty = pq.read_schema(path).empty_table().to_pandas() if _is_parquet(path) else _read_csv(path, data, 0)
    except _READ_ERRORS as exc:
        raise IngestError(_unreadable(path, data, exc)) from exc
    empty = empty[[c for c in empty.columns if not str(c).startswith("__index_level_")]]
    return [str(c) for c in derive_columns(empty, data, str(path)).columns]


def _read_csv(path: Path, data: DataParams, nrows: int | None = None) -> pd.DataFrame:
    header = {"header": None, "names": data.csv_columns} if data.csv_columns else {}
    return pd.read_csv(path, sep=data.csv_delimiter, dtype=str, keep_default_na=False, nrows=nrows, **header)


def derive_columns(raw: pd.DataFrame, data: DataParams, source_name: str) -> pd.DataFrame:
    """Add the `data.derive` columns, each a DuckDB SQL expression over the source columns."""
    if not data.derive:
        return raw
    exprs = ", ".join(f'({expr}) AS "{DERIVED_PREFIX}{name}"' for name, expr in data.derive.items())
    con = duckdb.connect()
    try:
        con.register("source", raw)
        derived = con.execute(f"SELECT {exprs} FROM source").df()
    except duckdb.Error as exc:
        raise IngestError(
            f"{source_name}: data.derive cannot be evaluated ({', '.join(data.derive)}): "
            f"{str(exc).splitlines()[0]}. Fix the SQL "
            f"expression in data.derive in params.yaml; source columns are {list(raw.columns)}"
            + (" and are read as text from CSV (use TRY_CAST(col AS DOUBLE))" if len(raw.columns) else "")
        ) from exc
    finally:
        con.close()
    out = raw.copy()
    for col in derived.columns:
        out[col] = derived[col].to_numpy()
    return out


def _check_not_empty(path: Path) -> None:
    """A 0-byte file is a failed export, not an empty table: refuse it by name."""
    with contextlib.suppress(OSError):  # unreadable files are reported by the reader
        if path.stat().st_size == 0:
            raise IngestError(
                f"{path}: the file is empty (0 bytes: no header, no rows), usually an export that failed. "
                "Export it again, or remove it from the files data.source in params.yaml matches; nothing was written"
            )


def _first_undecodable_line(path: Path) -> tuple[int, bytes] | None:
    """(line number, raw line) of the first line of a CSV file that is not valid UTF-8."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with contextlib.suppress(OSError), opener(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number, line.rstrip(b"\r\n")[:120]
    return None


def _unreadable(path: Path, data: DataParams, exc: Exception) -> str:
    kind = "Parquet" if _is_parquet(path) else f"CSV (delimiter {data.csv_delimiter!r}, UTF-8)"
    if isinstance(exc, UnicodeDecodeError) and not _is_parquet(path):
        where = _first_undecodable_line(path)
        line = f" at line {where[0]}: {where[1]!r}" if where else ""
        bad = exc.object[exc.start : exc.end]
        return (
            f"{path}: is not UTF-8 text{line} ({type(exc).__name__}: {exc.reason}, byte {bad!r}). "
            "Re-export the file as UTF-8, or convert it, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv` for "
            "Latin-1 (Windows-1252: -f cp1252); nothing was written"
        )
    return (
        f"{path}: cannot be read as {kind}: {type(exc).__name__}: {exc}. "
        "Fix or replace the file, or exclude it from data.source in params.yaml"
        + ("" if _is_parquet(path) else "; for another delimiter set data.csv_delimiter")
    )


def read_file(path: Path, data: DataParams) -> pd.DataFrame:
    """Read one Parquet or CSV file; CSV cells are read as raw strings so bad values can be quarantined."""
    path = Path(path)
    _check_not_empty(path)
    try:
        raw = pd.read_parquet(path) if _is_parquet(path) else _read_csv(path, data)
    except _READ_ERRORS as exc:
        raise IngestError(_unreadable(path, data, exc)) from exc
    return derive_columns(raw, data, str(path))


# ------------------------------------------------------------------------------------------ mapping


def _column_mapping(columns: list[str], data: DataParams, source_name: str) -> dict[str, str | None]:
    """Canonical column -> source column (None: fill with nulls / default), checked against the file."""
    available = list(columns)
    mapping: dict[str, str | None] = {}
    for canonical in CANONICAL_COLUMNS:
        src = data.source_column(canonical)
        explicit = canonical in data.columns
        if src is None:
            if canonical in ("user_id", "event_time"):
                raise IngestError(
                    f"{source_name}: data.columns.{canonical} is null, but {canonical} is required; "
                    f"set data.columns.{canonical} in params.yaml to the source column that holds it "
                    f"(available columns: {available})"
                )
            mapping[canonical] = None
        elif src in available:
            mapping[canonical] = src
        elif canonical in REQUIRED_COLUMNS or explicit:
            if explicit:
                what = f"is mapped to source column {src!r}, which the file does not have"
            else:
                what = f"is not mapped, so a column named {src!r} is expected, but the file has none"
            if canonical == "event_type":
                alt = " (or to null if the source has no event types)"
            elif canonical in OPTIONAL_COLUMNS:
                alt = " (or to null if the source has none)"
            else:
                alt = ""
            raise IngestError(
                f"{source_name}: canonical column {canonical!r} {what}. Available columns: {available}. "
                f"Fix: set data.columns.{canonical} in params.yaml to the source column that holds it{alt}"
                + _delimiter_hint(available, data)
            )
        else:
            mapping[canonical] = None
    return mapping


def _delimiter_hint(columns: list[str], data: DataParams) -> str:
    """A hint when a CSV header read as one column holds another delimiter (e.g. a ';'-separated export)."""
    if len(columns) != 1:
        return ""
    found = [d for d in (";", "\t", "|", ",") if d != data.csv_delimiter and d in columns[0]]
    if not found:
        return ""
    return (
        f". The header was read as one column and holds {found[0]!r}: the file looks {found[0]!r}-delimited; "
        f"if so, set data.csv_delimiter: {found[0]!r} in params.yaml"
    )


def _role_lookup(data: DataParams, source_name: str) -> dict[str, str]:
    """Source event type -> canonical role; explicit mappings win over role names used as-is."""
    lookup: dict[str, str] = {role: role for role in ALL_ROLES}
    claimed: dict[str, str] = {}
    for role, source_types in data.event_types.items():
        for source_type in source_types:
            if source_type in claimed and claimed[source_type] != role:
                raise IngestError(
                    f"{source_name}: column event_type value {source_type!r} is listed under both "
                    f"data.event_types.{claimed[source_type]} and data.event_types.{role}; "
                    "keep it under one role in params.yaml"
                )
            claimed[source_type] = role
            lookup[source_type] = role
    return lookup


# --------------------------------------------------------------------------------------- conversion


def _clean_text(values: pd.Series) -> pd.Series:
    """Values as stripped strings with every null spelling as missing."""
    text = values.astype(str).str.strip()
    return text.mask(values.isna() | text.str.lower().isin(NULL_TOKENS))


def _clean_ids(values: pd.Series) -> pd.Series:
    """Identifiers as strings; whole floats lose their '.0' (a float id column is an export artefact)."""
    if pd.api.types.is_float_dtype(values.dtype):
        floats = values.to_numpy(dtype="float64", na_value=np.nan)
        out = pd.Series(np.nan, index=values.index, dtype=str)
        finite = np.isfinite(floats)
        whole = finite & (floats == np.floor(floats)) & (np.abs(floats) < 2**53)
        out[whole] = pd.Series(floats[whole].astype("int64"), index=values.index[whole]).astype(str)
        rest = finite & ~whole
        out[rest] = pd.Series(floats[rest], index=values.index[rest]).map(repr)
        return out
    if pd.api.types.is_integer_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return values.astype(str).mask(values.isna())
    return _clean_text(values).str.replace(_FLOAT_ID, r"\1", regex=True)


def _parse_numeric(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Float values (NaN when missing or bad) and a mask of present-but-not-a-finite-number cells."""
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        floats = values.astype("float64").to_numpy(dtype="float64", na_value=np.nan)
        bad = np.isinf(floats)
    else:
        text = _clean_text(values)
        present = text.notna().to_numpy()
        floats = pd.to_numeric(text, errors="coerce").astype("float64").to_numpy(na_value=np.nan)
        bad = present & ~np.isfinite(floats)
    return np.where(bad, np.nan, floats), bad


def _to_datetime(text: pd.Series, utc: bool, dayfirst: bool = False) -> pd.Series:
    """Parse strings; a fast pass with one inferred format, then per-value parsing for the rest."""
    with warnings.catch_warnings():
        # "could not infer format" only announces the slower per-value fallback
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(text, errors="coerce", utc=utc, dayfirst=dayfirst)
        retry = parsed.isna() & text.notna()
        if retry.any():
            # e.g. named time zones mixed with naive values: those stay unparseable
            with contextlib.suppress(ValueError, TypeError):
                parsed[retry] = pd.to_datetime(text[retry], errors="coerce", utc=utc, format="mixed", dayfirst=dayfirst)
    return parsed


def _day_first(text: pd.Series, dayfirst: bool | None, source_name: str, column: str) -> bool:
    """Whether the numeric dates of `text` (03/04/2024) put the day first: data.dayfirst when set, else what
    the unambiguous ones show (13/04/2024 is day first, 04/13/2024 month first).

    Without it pandas reads the first value's order into the whole column and every other value one by one,
    so 03/04/2024 beside 13/04/2024 became 4 March and 13 April: wrong dates, silently.
    """
    if dayfirst is not None:
        return dayfirst
    # a numeric date fits in 10 characters: its distinct beginnings (about one per day) tell the order
    text = pd.Series(text.str.slice(0, 10).unique(), dtype="str")
    parts = text.str.extract(_NUMERIC_DATE).dropna()
    first, second = parts[0].astype(int), parts[1].astype(int)
    day, month = (first > 12) & (second <= 12), (second > 12) & (first <= 12)
    ambiguous = (first <= 12) & (second <= 12)
    fix = "set data.dayfirst in params.yaml: true (day first) or false (month first)"
    if day.any() and month.any():
        raise IngestError(
            f"{source_name}: column {column!r} has numeric dates in both orders, e.g. {text[day.idxmax()]!r} "
            f"(day first) and {text[month.idxmax()]!r} (month first), so a date like 03/04 cannot be read safely: "
            f"fix the export, or {fix} to say how such dates are read (dates that fit one order only keep it)"
        )
    if not day.any() and not month.any() and ambiguous.any():
        raise IngestError(
            f"{source_name}: column {column!r}: every numeric date could be day or month first, e.g. "
            f"{text[ambiguous.idxmax()]!r}, so none can be read safely: {fix}"
        )
    return bool(day.any())


def _localize(naive: pd.Series, tz: ZoneInfo, adjusted: Counter[str] | None = None) -> pd.Series:
    """Naive local times -> UTC instants.

    A repeated wall-clock time when clocks go back is read as its first occurrence (summer time), and a
    wall-clock time skipped when clocks go forward is moved forward to the first valid instant, so that
    DST transitions never crash or drop events and the result does not depend on row order. With
    `adjusted`, both kinds are counted into it (ambiguous_local_time, nonexistent_local_time).
    """
    naive = naive.astype("datetime64[us]")
    first = np.ones(len(naive), dtype=bool)
    local = naive.dt.tz_localize(tz, ambiguous=first, nonexistent="shift_forward")
    if adjusted is not None and len(naive) and str(tz) not in ("UTC", "Etc/UTC"):
        present = naive.notna()
        later = naive.dt.tz_localize(tz, ambiguous=~first, nonexistent="shift_forward")
        adjusted["ambiguous_local_time"] += int((present & local.ne(later)).sum())
        adjusted["nonexistent_local_time"] += int((present & local.dt.tz_localize(None).ne(naive)).sum())
    return local.dt.tz_convert("UTC")


def _parse_times(
    values: pd.Series,
    tz: ZoneInfo,
    source_name: str,
    column: str,
    adjusted: Counter[str] | None = None,
    dayfirst: bool | None = None,
) -> tuple[pd.Series, ...]:
    """UTC timestamps plus masks of null and of unparseable cells; DST adjustments counted into `adjusted`.

    `dayfirst`: data.dayfirst (see _day_first).
    """
    utc_dtype = pd.DatetimeTZDtype("us", "UTC")
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        times = values.dt.tz_convert("UTC").astype(utc_dtype)
        return times, times.isna(), pd.Series(False, index=values.index)
    if pd.api.types.is_datetime64_dtype(values.dtype):
        times = _localize(values, tz, adjusted).astype(utc_dtype)
        return times, times.isna(), pd.Series(False, index=values.index)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        raise IngestError(
            f"{source_name}: event time column {column!r} is numeric ({values.dtype}, e.g. "
            f"{values.dropna().iloc[0] if values.notna().any() else 'all null'!r}); numeric epoch times are not "
            "read directly: derive a timestamp in params.yaml, e.g. data.derive.event_time: "
            f'"to_timestamp({column} / 1000)" for epoch milliseconds, or point data.columns.event_time at a '
            "timestamp column"
        )
    text = _clean_text(values)
    null = text.isna()
    aware = text.str.contains(_AWARE_TIME, regex=True).fillna(False).astype(bool) & ~null
    clock_word = text.str.lower().isin(CLOCK_WORDS).to_numpy(dtype=bool)
    naive = ~null & ~aware & ~clock_word
    day_first = _day_first(text[aware | naive], dayfirst, source_name, column)
    times = pd.Series(pd.NaT, index=values.index, dtype=utc_dtype)
    if aware.any():
        times[aware] = _to_datetime(text[aware], utc=True, dayfirst=day_first).astype(utc_dtype)
    if naive.any():
        local = _to_datetime(text[naive], utc=False, dayfirst=day_first)
        times[naive] = _localize(local, tz, adjusted).astype(utc_dtype)
    return times, null, ~null & times.isna()


def _as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column as text, nulls kept as nulls, for the rejects file."""
    return pd.DataFrame(
        {col: frame[col].astype(str).mask(frame[col].isna()) for col in frame.columns}, index=frame.index
    )


# ---------------------------------------------------------------------------------------- normalise


def normalise(raw: pd.DataFrame, data: DataParams, source_name: str, now: pd.Timestamp) -> IngestResult:
    """Map, validate and convert one file's raw rows to canonical events, rejects and counts (no I/O)."""
    raw = raw.reset_index(drop=True)
    raw.columns = [str(c) for c in raw.columns]
    total = len(raw)
    mapping = _column_mapping(list(raw.columns), data, source_name)
    roles = _role_lookup(data, source_name)
    try:
        tz = ZoneInfo(data.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise IngestError(
            f"{source_name}: column event_time cannot be localised: data.timezone {data.timezone!r} is not an "
            "IANA time zone; set data.timezone in params.yaml to e.g. 'UTC' or 'Europe/London'"
        ) from exc
    if mapping["event_type"] is None and data.default_event_type not in ALL_ROLES:
        raise IngestError(
            f"{source_name}: column event_type is mapped to null, so every row gets data.default_event_type, "
            f"but {data.default_event_type!r} is not a role; set it in params.yaml to one of {list(ALL_ROLES)}"
        )
    now = pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")

    index = raw.index
    reason = pd.Series(np.nan, index=index, dtype=object)

    def flag(mask: pd.Series | np.ndarray, name: str) -> None:
        # first failing rule wins: only rows without a reason yet take this one
        mask = pd.Series(np.asarray(mask, dtype=bool), index=index)
        reason[mask & reason.isna()] = name

    user_id = _clean_ids(raw[mapping["user_id"]])
    flag(user_id.isna(), "null_user_id")

    adjusted: Counter[str] = Counter()
    times, null_time, bad_time = _parse_times(
        raw[mapping["event_time"]], tz, source_name, mapping["event_time"], adjusted, data.dayfirst
    )
    flag(null_time, "null_event_time")
    flag(bad_time, "unparseable_event_time")
    flag((times > now + pd.Timedelta(days=data.max_future_days)).fillna(False), "far_future_event_time")
    if data.min_time is not None:
        # min_time is a calendar date in params; its midnight is taken in UTC like every stored time
        flag((times < pd.Timestamp(data.min_time, tz="UTC")).fillna(False), "too_old_event_time")

    if mapping["event_type"] is None:
        source_type = pd.Series(np.nan, index=index, dtype=str)
        event_type = pd.Series(data.default_event_type, index=index, dtype=str)
    else:
        source_type = _clean_ids(raw[mapping["event_type"]])
        flag(source_type.isna(), "null_event_type")
        event_type = source_type.map(roles).fillna(OTHER).astype(str)

    numeric: dict[str, np.ndarray] = {}
    for col in NUMERIC_COLUMNS:
        if mapping[col] is None:
            numeric[col] = np.full(total, np.nan)
            continue
        numeric[col], bad = _parse_numeric(raw[mapping[col]])
        flag(bad, f"non_numeric_{col}")
        flag(np.abs(np.nan_to_num(numeric[col])) > MAX_ABS_VALUE, f"out_of_range_{col}")

    passed = reason.isna().to_numpy()
    candidates = raw.loc[passed]
    try:
        dup_within = candidates.duplicated(keep="first")
    except TypeError:  # unhashable cells (lists, dicts from nested Parquet): compare their text
        dup_within = _as_strings(candidates).duplicated(keep="first")
    duplicate = np.zeros(total, dtype=bool)
    duplicate[np.flatnonzero(passed)] = dup_within.to_numpy()
    keep = passed & ~duplicate

    events = pd.DataFrame(
        {
            "user_id": user_id[keep],
            "event_time": times[keep],
            "event_type": event_type[keep],
            **{col: numeric[col][keep] for col in NUMERIC_COLUMNS},
        },
        index=index[keep],
    )
    events["order_id"] = (
        _clean_ids(raw.loc[keep, mapping["order_id"]])
        if mapping["order_id"] is not None
        else pd.Series(np.nan, index=events.index, dtype=str)
    )
    events = events[list(CANONICAL_COLUMNS)]
    events = events.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)
    events = EVENTS_SCHEMA.validate(events)

    rejected = reason.notna().to_numpy()
    rejects = reject_rows(raw, reason, source_name)

    unmapped = Counter(source_type[keep & (event_type == OTHER).to_numpy() & (source_type != OTHER).to_numpy()])
    metrics = {
        "total": total,
        "accepted": int(keep.sum()),
        "duplicates": int(duplicate.sum()),
        "rejected": int(rejected.sum()),
        "rejected_by_reason": {k: int(v) for k, v in sorted(Counter(reason[rejected]).items())},
        "unmapped_event_types": {str(k): int(v) for k, v in sorted(unmapped.items())},
        # adjustments among all parsed times (the rows may still be quarantined or duplicates)
        "adjusted_event_times": {k: int(v) for k, v in sorted(adjusted.items()) if v},
        "files": [source_name],
    }
    _check_accounting(metrics)
    return IngestResult(events=events, rejects=rejects, metrics=metrics)


def _check_accounting(metrics: dict[str, Any]) -> None:
    # explicit raise rather than `assert`, which `python -O` would strip
    if metrics["accepted"] + metrics["rejected"] + metrics["duplicates"] != metrics["total"]:
        raise AssertionError(f"ingest lost rows: {metrics}")
    if sum(metrics["rejected_by_reason"].values()) != metrics["rejected"]:
        raise AssertionError(f"ingest reject reasons do not add up: {metrics}")


def _drop_repeated_across_files(results: list[IngestResult]) -> list[IngestResult]:
    """Drop events identical (in every canonical column) to one of an earlier file: an export delivered twice.

    Within a file, rows identical in every *source* column are exact duplicates (normalise); across files
    the source columns may differ (two exports of one log), so the canonical event decides, as Spark's
    grouping of identical mapped rows does. The dropped rows are counted as duplicates.
    """
    cols = list(CANONICAL_COLUMNS)
    seen: set[int] = set()
    out: list[IngestResult] = []
    for r in results:
        keys = pd.util.hash_pandas_object(r.events[cols], index=False).to_numpy()
        repeated = np.fromiter((k in seen for k in keys.tolist()), dtype=bool, count=len(keys))
        seen.update(keys.tolist())
        if repeated.any():
            # a 64-bit hash match is confirmed on the values themselves: no distinct event is ever dropped
            earlier = pd.concat([o.events[cols] for o in out], ignore_index=True).drop_duplicates()
            found = r.events.loc[repeated, cols].merge(earlier, on=cols, how="left", indicator=True)["_merge"]
            repeated[np.flatnonzero(repeated)] = (found == "both").to_numpy()
        if repeated.any():
            n = int(repeated.sum())
            events = r.events[~repeated].reset_index(drop=True)
            metrics = {**r.metrics, "accepted": r.metrics["accepted"] - n, "duplicates": r.metrics["duplicates"] + n}
            r = IngestResult(events=events, rejects=r.rejects, metrics=metrics)
        out.append(r)
    return out


def _combine(results: list[IngestResult]) -> IngestResult:
    """One result from per-file results: events re-sorted across files, counts summed."""
    events = pd.concat([r.events for r in results], ignore_index=True)
    events = events.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)
    non_empty = [r.rejects for r in results if len(r.rejects)]
    rejects = pd.concat(non_empty, ignore_index=True) if non_empty else results[0].rejects
    rejects = rejects.astype({c: str for c in rejects.columns if c != "source_row"})
    metrics: dict[str, Any] = {"total": 0, "accepted": 0, "duplicates": 0, "rejected": 0}
    by_reason: Counter[str] = Counter()
    unmapped: Counter[str] = Counter()
    adjusted: Counter[str] = Counter()
    files: list[str] = []
    for r in results:
        for key in ("total", "accepted", "duplicates", "rejected"):
            metrics[key] += r.metrics[key]
        by_reason.update(r.metrics["rejected_by_reason"])
        unmapped.update(r.metrics["unmapped_event_types"])
        adjusted.update(r.metrics.get("adjusted_event_times", {}))
        files.extend(r.metrics["files"])
    metrics["rejected_by_reason"] = dict(sorted(by_reason.items()))
    metrics["unmapped_event_types"] = dict(sorted(unmapped.items()))
    metrics["adjusted_event_times"] = dict(sorted(adjusted.items()))
    metrics["files"] = files
    _check_accounting(metrics)
    return IngestResult(events=events, rejects=rejects, metrics=metrics)


# ------------------------------------------------------------------------------------------- stage


def _pseudonymised(result: IngestResult, data: DataParams, key: bytes) -> IngestResult:
    """Events with keyed-hash user ids (re-sorted), rejects redacted to their mapped columns."""
    from pipeline.privacy import pseudonymise, redact_rejects

    events = result.events.assign(user_id=pseudonymise(result.events["user_id"], key))
    events = events.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)
    mapped = {data.columns.get(c, c) for c in CANONICAL_COLUMNS} | {f"{DERIVED_PREFIX}{c}" for c in data.derive}
    rejects = redact_rejects(result.rejects, mapped - {None}, data.columns.get("user_id", "user_id") or "", key)
    return IngestResult(events=events, rejects=rejects, metrics=result.metrics)


def ingest(
    data: DataParams,
    synthetic_path: Path,
    out_events: Path,
    out_rejects: Path,
    out_metrics: Path,
    now: pd.Timestamp | None = None,
    spark: Any = None,
    key: bytes | None = None,
) -> dict:
    """Ingest every source file and write events, rejects and metrics; on any failure write nothing.

    With a Spark session, Parquet sources are read and grouped by Spark (pipeline/spark_ingest.py).
    With a pseudonym `key` (pipeline/privacy.py), user ids are written as keyed hashes and quarantined
    rows keep only their mapped columns.
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    if is_warehouse_url(data.source):
        from pipeline.warehouse import read_table  # Ibis and the database driver only when needed

        result = read_table(data, now)
    else:
        paths = resolve_source(data, synthetic_path)
        # every file's header first: a bad mapping in the last file fails before the first is read
        for path in paths:
            _column_mapping(_read_columns(path, data), data, str(path))
        if spark is not None and all(_is_parquet(p) for p in paths):
            from pipeline.spark_ingest import read_parquet_on_spark

            result = read_parquet_on_spark(spark, paths, data, now)
        else:
            results = [normalise(read_file(path, data), data, str(path), now) for path in paths]
            result = _combine(_drop_repeated_across_files(results))
    metrics = result.metrics
    if metrics["total"] == 0:
        raise IngestError(
            f"{', '.join(metrics['files'])}: no data rows (a header or schema only, 0 rows). Check that the export "
            "ran to completion and that data.source in params.yaml points at the right files; nothing was written"
        )
    if metrics["accepted"] == 0:
        first = result.rejects.iloc[0] if len(result.rejects) else None
        example = (
            f" First rejected row: {first['source_file']} row {first['source_row']} ({first['reason']})."
            if first is not None
            else ""
        )
        raise IngestError(
            f"{', '.join(metrics['files'])}: no usable events ({metrics['total']} rows, rejected by reason: "
            f"{metrics['rejected_by_reason']}).{example} Check data.columns, data.timezone, data.min_time "
            "and data.max_future_days in params.yaml against the file; nothing was written"
        )
    if key is not None:
        result = _pseudonymised(result, data, key)
    with atomic_paths(out_events, out_rejects, out_metrics) as (events, rejects, metrics_path):
        write_parquet(result.events, events)
        if Path(out_rejects).name.lower().endswith(".csv"):
            write_csv(result.rejects, rejects)
        else:
            write_parquet(result.rejects, rejects)
        write_json(metrics, metrics_path)
    return metrics
