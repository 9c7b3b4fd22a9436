"""A throwaway PostgreSQL server on loopback for the warehouse-source tests (Debian's postgresql binaries).

`initdb` into a fresh temporary directory, `pg_ctl start` on a free 127.0.0.1 port with the unix socket in the
same directory, one password-protected role; stopped and deleted on exit. PostgreSQL refuses to run as root, so
when the tests run as root the server runs as the `postgres` system user (Debian's package creates it), else
`nobody`, and its directory is handed to that user. `make postgres` installs the binaries when missing.

Also here: the table the warehouse tests load (a small synthetic shop in a warehouse's own column names and SQL
types, with planted bad rows and exact duplicates) and the data.* keys that read it.
"""

from __future__ import annotations

import contextlib
import getpass
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

USER = "winback"
PASSWORD = "w1nback-test-only"
_BINARIES = ("initdb", "pg_ctl", "postgres")


@dataclass(frozen=True)
class Server:
    """A running server: where it listens and how to reach its `postgres` database."""

    host: str
    port: int
    user: str
    password: str
    directory: Path

    def url(self, database: str, password: bool = False) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{self.user}{secret}@{self.host}:{self.port}/{database}"


def find_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: PATH first, then Debian's versioned directories."""
    on_path = [shutil.which(b) for b in _BINARIES]
    if all(on_path):
        return Path(on_path[0]).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if all((Path(candidate) / b).is_file() for b in _BINARIES):
            return Path(candidate)
    return None


def missing_reason() -> str | None:
    """Why no server can be started here (None: it can)."""
    if find_bin_dir() is None:
        return (
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in /usr/lib/postgresql/*/bin: "
            "run `make postgres` as root, or apt-get install postgresql"
        )
    if os.geteuid() == 0 and _server_user() is None:
        return "running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"psycopg cannot be imported ({exc}): pip install -e '.[warehouse]' (and libpq5)"
    return None


def _server_user() -> str | None:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server() -> Iterator[Server]:
    """Start a fresh server, yield it, stop it and delete its directory."""
    bin_dir = find_bin_dir()
    assert bin_dir is not None, missing_reason()
    as_root = os.geteuid() == 0
    run_as = _server_user() if as_root else getpass.getuser()
    # not under pytest's tmp_path: that is private to root, and the server user must own its directory
    top = Path(tempfile.mkdtemp(prefix="winback-pg-"))
    data, sockets = top / "data", top / "sock"
    sockets.mkdir()
    (top / "pwfile").write_text(PASSWORD + "\n")
    if as_root:
        entry = pwd.getpwnam(run_as)
        for path in (top, sockets, top / "pwfile"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        user_kw = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    else:
        user_kw = {}
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "LC_ALL": "C", "TZ": "UTC"}

    def pg(*args: str) -> None:
        res = subprocess.run(
            [str(bin_dir / args[0]), *args[1:]],
            cwd=top,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            **user_kw,
        )
        if res.returncode != 0:
            log = (top / "server.log").read_text() if (top / "server.log").exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({res.returncode}): {res.stdout}{res.stderr}{log}")

    port = free_port()
    started = False
    try:
        pg(
            "initdb", "-D", str(data), "-U", USER, f"--pwfile={top / 'pwfile'}", "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        options = f"-p {port} -k {sockets} -h 127.0.0.1 -c fsync=off -c full_page_writes=off -c TimeZone=UTC"
        pg("pg_ctl", "-D", str(data), "-l", str(top / "server.log"), "-o", options, "-w", "-t", "60", "start")
        started = True
        yield Server("127.0.0.1", port, USER, PASSWORD, top)
    finally:
        if started:
            with contextlib.suppress(Exception):
                pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(top, ignore_errors=True)


def execute(server: Server, database: str, *statements: str) -> None:
    """Run SQL statements in `database`, autocommitted."""
    import psycopg

    with psycopg.connect(
        host=server.host, port=server.port, user=server.user, password=server.password, dbname=database, autocommit=True
    ) as con:
        for statement in statements:
            con.execute(statement)


def load_frame(server: Server, database: str, table: str, columns: dict[str, str], frame) -> None:
    """Create `table` with `columns` (name -> SQL type) and COPY the frame's rows in (NaN/NaT/None as NULL)."""
    import psycopg

    names = ", ".join(f'"{c}"' for c in columns)
    rows = frame[list(columns)].astype(object).where(frame[list(columns)].notna(), None).itertuples(index=False)
    with psycopg.connect(
        host=server.host, port=server.port, user=server.user, password=server.password, dbname=database, autocommit=True
    ) as con:
        definitions = ", ".join(f'"{c}" {t}' for c, t in columns.items())
        con.execute(f"CREATE TABLE {table} ({definitions})")
        with con.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


# the synthetic shop as a warehouse would hold it: its own column names and SQL types, plus a column the
# mapping does not use
WAREHOUSE_COLUMNS = {
    "CustomerID": "text",
    "EventTime": "timestamptz",
    "Kind": "text",
    "Amount": "numeric",  # unconstrained: it can hold the planted Infinity
    "OrderNo": "text",
    "Qty": "integer",
    "Discount": "double precision",
    "Rating": "double precision",
    "DelayHours": "double precision",
    "Tier": "double precision",
    "Channel": "text",
}
# the data.* keys that read it (data.source and data.table come with the server)
WAREHOUSE_MAPPING = {
    "columns": {
        "user_id": "CustomerID",
        "event_time": "EventTime",
        "event_type": "Kind",
        "amount": "Amount",
        "order_id": "OrderNo",
        "quantity": "Qty",
        "discount": "Discount",
        "rating": "Rating",
        "tier": "Tier",
    },
    "derive": {"delivery_delay_days": "DelayHours / 24"},
    "event_types": {"purchase": ["order_paid"]},
}
WAREHOUSE_BAD_ROWS = {  # reason -> rows planted in the table
    "null_user_id": 2,
    "null_event_time": 1,
    "far_future_event_time": 1,
    "null_event_type": 1,
    "non_numeric_amount": 1,
    "non_numeric_rating": 1,
}
WAREHOUSE_DUPLICATES = 3


def warehouse_frame(users: int = 1000) -> pd.DataFrame:
    """A small synthetic shop in the warehouse's shape, with planted bad rows and exact duplicates at the end."""
    from pipeline.config import GenerateParams
    from pipeline.synthetic import generate_shop

    ev, _ = generate_shop(GenerateParams(users=users, seed=11))
    frame = pd.DataFrame(
        {
            "CustomerID": ev["user_id"],
            "EventTime": ev["event_time"],
            "Kind": ev["event_type"].replace("purchase", "order_paid"),
            "Amount": ev["amount"].round(2),  # cents, as a numeric column holds them
            "OrderNo": ev["order_id"],
            "Qty": ev["quantity"].astype("Int64"),
            "Discount": ev["discount"],
            "Rating": ev["rating"],
            "DelayHours": ev["delivery_delay_days"] * 24,
            "Tier": ev["tier"],
            "Channel": "web",
        }
    )
    first = frame.iloc[0].to_dict()
    bad = [
        {**first, "CustomerID": None},
        {**first, "CustomerID": "   "},
        {**first, "EventTime": None},
        {**first, "EventTime": pd.Timestamp("2099-01-01", tz="UTC")},
        {**first, "Kind": None},
        {**first, "Amount": float("inf")},  # numeric 'Infinity' (PostgreSQL 14+)
        {**first, "Rating": float("-inf")},
    ]
    assert len(bad) == sum(WAREHOUSE_BAD_ROWS.values())
    bad_frame = pd.DataFrame(bad).astype(frame.dtypes.to_dict())
    return pd.concat([frame, bad_frame, frame.iloc[1 : 1 + WAREHOUSE_DUPLICATES]], ignore_index=True)
