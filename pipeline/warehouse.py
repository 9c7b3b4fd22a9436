"""Warehouse source: events read straight from a SQL table through Ibis (`data.source` a URL, `data.table`).

The table goes through the same mapping, quarantine and accounting as a file (pipeline/ingest.py), so every
row ends up accepted, rejected (with a reason) or counted as an exact duplicate. What runs where:

* in the warehouse: the projection to the columns the mapping and `data.derive` use, and a
  ``GROUP BY`` over them with a row count. Exact duplicates are judged on those columns (a file's are
  judged on all of its columns); identical rows always pass or fail together, so the count per distinct
  row is all the duplicate rule needs, and no state has to span batches;
* here, batch by batch (``BATCH_ROWS`` distinct rows, streamed through a server-side cursor): each row
  expanded back to its count, `data.derive` evaluated by DuckDB exactly as for files (same SQL dialect,
  same result), then `normalise`.

The connection URL is any Ibis backend's (``postgresql://``, ``duckdb://``, ``mysql://``, ...; PostgreSQL
needs ``pip install 'winback[warehouse]'``). ``${NAME}`` in it is replaced by the environment variable NAME
when the source is read, so the password never sits in params.yaml (params files are versioned, and DVC
copies params into dvc.lock); without one, libpq's PGPASSWORD and ~/.pgpass apply. Rejected rows name the
table (``source_file``: ``table <table> at <url without password>``), the reason (the column: e.g.
``non_numeric_amount``) and the row's values; ``source_row`` is the position in the query result, which a
table does not order.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import ibis
import pandas as pd
import pyarrow as pa
import sqlglot
from ibis.backends import BaseBackend
from ibis.common.exceptions import TableNotFound
from ibis.expr.types import Table

from features.events import CANONICAL_COLUMNS
from pipeline.config import DERIVED_PREFIX, ENV_REFERENCE, DataParams
from pipeline.errors import WinbackError
from pipeline.ingest import (
    IngestError,
    IngestResult,
    _column_mapping,
    _combine,
    derive_columns,
    normalise,
)

BATCH_ROWS = 100_000
COUNT = "=rows"  # the row count per distinct row; no real column is named like this

_PASSWORD_ERROR = re.compile(r"password|authenticat", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL without its password, for messages and the rejects file."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + netloc))


def source_label(data: DataParams) -> str:
    """How messages and rejects name the source: the table and where it is, never the password."""
    return f"table {data.table} at {redact(data.source)}"


def expand_url(source: str) -> str:
    """data.source with every ${NAME} replaced by the environment variable NAME (URL-encoded in the password)."""
    missing = sorted({m.group(1) for m in ENV_REFERENCE.finditer(source) if m.group(1) not in os.environ})
    if missing:
        raise IngestError(
            f"data.source {source!r} refers to environment variable(s) {missing}, which are not set: "
            f"export {missing[0]}=... before running (it holds the secret that params.yaml must not)"
        )

    def sub(text: str, encode: bool = False) -> str:
        return ENV_REFERENCE.sub(
            lambda m: quote(os.environ[m.group(1)], safe="") if encode else os.environ[m.group(1)], text
        )

    scheme, sep, rest = source.partition("://")
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        # percent-encoded (Ibis decodes it), so a password with '@', '/', ':' or '+' survives the URL
        authority = f"{sub(user)}{colon}{sub(password, encode=True)}@{sub(host)}"
    else:
        authority = sub(authority)
    return f"{scheme}{sep}{authority}{slash}{sub(tail)}"


def connect_warehouse(data: DataParams) -> BaseBackend:
    """An Ibis connection to the warehouse; any failure is an IngestError saying what to fix."""
    url = expand_url(data.source)
    shown = redact(data.source)
    scheme = urlsplit(url).scheme
    # a DuckDB file is only read: a mistyped path fails instead of creating an empty database
    options = {"read_only": True} if scheme == "duckdb" else {}
    try:
        return ibis.connect(url, **options)
    except ImportError as exc:
        extra = "warehouse" if scheme.startswith("postgres") else None
        how = f"pip install 'winback[{extra}]'" if extra else f"pip install 'ibis-framework[{scheme}]'"
        raise IngestError(
            f"data.source {shown!r}: the {scheme} driver is not installed ({str(exc).splitlines()[0]}); "
            f"install it: {how}"
        ) from exc
    except ValueError as exc:
        if "Don't know how to connect" not in str(exc):
            raise _cannot_connect(shown, url, exc) from exc
        raise IngestError(
            f"data.source {shown!r}: {scheme!r} is not a database Ibis can connect to; use e.g. "
            "'postgresql://user@host:5432/db' (see https://ibis-project.org/backends for the others), "
            "or a path to Parquet/CSV files"
        ) from exc
    except WinbackError:
        raise
    except Exception as exc:  # the drivers' own errors: refused, unknown host or database, authentication
        raise _cannot_connect(shown, url, exc) from exc


def _first_line(exc: BaseException, url: str) -> str:
    """The error's first line, with the password (if any, as written in the URL or decoded) masked."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    password = urlsplit(url).password
    for secret in {password, unquote(password)} if password else ():
        text = text.replace(secret, "***")
    return text


def _cannot_connect(shown: str, url: str, exc: BaseException) -> IngestError:
    message = _first_line(exc, url)
    if _PASSWORD_ERROR.search(message):
        fix = (
            "check the user in data.source and the password: write ${VAR} where it goes in the URL "
            "(e.g. postgresql://user:${WINBACK_DB_PASSWORD}@host:5432/db) and export VAR, or set PGPASSWORD "
            "or ~/.pgpass"
        )
    else:
        fix = "check host, port and database name in data.source, and that the server accepts connections from here"
    return IngestError(f"data.source {shown!r}: cannot connect: {type(exc).__name__}: {message}. Fix: {fix}")


def open_table(con: BaseBackend, data: DataParams) -> Table:
    """The events table named by data.table ('table', 'schema.table' or 'database.schema.table')."""
    *where, name = str(data.table).split(".")
    database: Any = None if not where else where[0] if len(where) == 1 else tuple(where)
    try:
        return con.table(name, database=database)
    except TableNotFound as exc:
        try:
            tables = con.list_tables(database=database)
        except Exception:  # e.g. the schema itself does not exist, on some backends
            tables = []
        if tables:
            known = f"tables there: {sorted(tables)[:20]}" + (" ..." if len(tables) > 20 else "")
        else:
            known = f"schema {'.'.join(where)!r} has no tables or does not exist" if where else "no tables there"
        raise IngestError(
            f"{source_label(data)}: table not found ({known}). Fix: set data.table in params.yaml to the events "
            "table, as 'table' or 'schema.table'"
        ) from exc


def _to_pandas(batch: pa.RecordBatch | pa.Table) -> pd.DataFrame:
    """Arrow to pandas with integers kept as integers in every batch (nullable), whatever its nulls."""

    def mapper(t: pa.DataType) -> Any:
        if pa.types.is_integer(t):
            return pd.Int64Dtype()
        return pd.BooleanDtype() if pa.types.is_boolean(t) else None

    return batch.to_pandas(types_mapper=mapper)


def _derive_inputs(data: DataParams, columns: list[str]) -> list[str]:
    """The table columns the data.derive expressions read (all of them when an expression does not parse)."""
    used: set[str] = set()
    lower = {c.lower(): c for c in columns}
    for expr in data.derive.values():
        try:
            refs = [c.name for c in sqlglot.parse_one(expr, read="duckdb").find_all(sqlglot.exp.Column)]
        except sqlglot.errors.ParseError:
            return columns  # DuckDB's own error names the problem when the expression is evaluated
        # DuckDB resolves unquoted names case-insensitively
        used |= {c if c in columns else lower.get(c.lower(), c) for c in refs}
    return [c for c in columns if c in used]


def warehouse_query(table: Table, data: DataParams, label: str | None = None) -> Table:
    """The distinct rows of the columns the mapping uses, each with its row count, computed in the warehouse."""
    label = label or source_label(data)
    schema = table.schema()
    empty = _to_pandas(schema.to_pyarrow().empty_table())
    # a bad data.derive or mapping fails here, before any row is read
    mapping = _column_mapping(list(derive_columns(empty, data, label).columns), data, label)
    wanted = {src for src in mapping.values() if src is not None and not src.startswith(DERIVED_PREFIX)}
    wanted |= set(_derive_inputs(data, list(schema.names)))
    columns = [c for c in schema.names if c in wanted]
    projected = table.select(*(_portable(table, c) for c in columns))
    return projected.aggregate(**{COUNT: projected.count()}, by=columns)


def _portable(table: Table, column: str) -> Any:
    """The column as fetched: numeric(p, s) would arrive as Python Decimals, which DuckDB (data.derive) and the
    numeric checks read slowly or not at all. Whole decimals become integers (text beyond 18 digits, so long
    ids stay exact), fractional ones floats."""
    dtype = table.schema()[column]
    if not dtype.is_decimal():
        return table[column]
    if dtype.scale == 0:
        target = "int64" if dtype.precision is not None and dtype.precision <= 18 else "string"
    else:
        target = "float64"
    return table[column].cast(target).name(column)


def _batches(con: BaseBackend, expr: Table, rows: int):
    """Arrow record batches of the query, streamed."""
    if con.name == "duckdb":  # Ibis 12's DuckDB batch reader calls an API DuckDB 1.4+ removed
        return con.con.sql(con.compile(expr)).to_arrow_reader(rows)
    return con.to_pyarrow_batches(expr, chunk_size=rows)


def read_table(data: DataParams, now: pd.Timestamp, batch_rows: int | None = None) -> IngestResult:
    """Normalise and quarantine every row of the warehouse table, batch by batch."""
    label = source_label(data)
    con = connect_warehouse(data)
    try:
        result = read_grouped(con, open_table(con, data), data, label, now, batch_rows, expand_url(data.source))
    finally:
        disconnect = getattr(con, "disconnect", None)
        if disconnect is not None:
            disconnect()
    result.metrics["files"] = [label]
    return result


def read_grouped(
    con: BaseBackend,
    table: Table,
    data: DataParams,
    label: str,
    now: pd.Timestamp,
    batch_rows: int | None = None,
    url: str = "",
) -> IngestResult:
    """Group `table`'s rows in its engine (see warehouse_query), then normalise and quarantine them here in batches."""
    query = warehouse_query(table, data, label)
    results: list[IngestResult] = []
    offset = 0
    try:
        for batch in _batches(con, query, batch_rows or BATCH_ROWS):
            distinct = _to_pandas(batch)
            counts = distinct.pop(COUNT).to_numpy(dtype="int64")
            raw = distinct.loc[distinct.index.repeat(counts)].reset_index(drop=True)
            result = normalise(derive_columns(raw, data, label), data, label, now)
            result.rejects["source_row"] += offset
            offset += len(raw)
            results.append(result)
    except WinbackError:
        raise
    except Exception as exc:  # the engine failed mid-query: lost connection, permissions, timeout, bad file
        raise IngestError(
            f"{label}: reading the rows failed: {type(exc).__name__}: {_first_line(exc, url)}."
            " Nothing was written; check the source, its permissions and the connection, then run again"
        ) from exc
    if not results:  # an empty table still goes through normalise, for its checks and zero counts
        empty = derive_columns(_to_pandas(query.schema().to_pyarrow().empty_table()).drop(columns=COUNT), data, label)
        results = [normalise(empty, data, label, now)]
    combined = _combine(results)
    combined.metrics["files"] = [label]
    # the engine returns groups in no set order: sort on every column so the output does not depend on it
    events = combined.events.sort_values(list(CANONICAL_COLUMNS), kind="stable", na_position="last")
    return IngestResult(events.reset_index(drop=True), combined.rejects, combined.metrics)
