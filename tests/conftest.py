"""Shared fixtures: tiny real event tables run on a real DuckDB connection."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.events import CANONICAL_COLUMNS, ROLES
from pipeline.config import Params
from pipeline.engine import connect


def make_events(rows: list[dict]) -> pd.DataFrame:
    """A canonical events frame from partial row dicts (missing columns are null)."""
    df = pd.DataFrame(rows)
    for col, dtype in CANONICAL_COLUMNS.items():
        if col not in df:
            df[col] = None
        if dtype == "float64":
            df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
        elif dtype.startswith("timestamp"):
            df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
        else:
            df[col] = df[col].astype(object)
    return df[list(CANONICAL_COLUMNS)]


def lifetimes_dataset(name: str) -> Path:
    """A data file shipped in the `lifetimes` package (found without importing it); skips when absent."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("CDNOW data not installed: pip install --no-deps lifetimes==0.11.3 (used only as a data source)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / name
    if not path.is_file():
        pytest.skip(f"CDNOW data not found at {path}")
    return path


def random_events(n_users: int = 40, days: int = 240, seed: int = 0) -> pd.DataFrame:
    """Random events of every role, with amounts, delays, ratings and tiers, over `days` from 2024-01-01."""
    rng = np.random.default_rng(seed)
    n = n_users * 25
    start = pd.Timestamp("2024-01-01", tz="UTC")
    roles = rng.choice(list(ROLES), size=n)
    secs = rng.integers(0, days * 86_400, size=n)
    df = pd.DataFrame(
        {
            "user_id": [f"u{i:03d}" for i in rng.integers(0, n_users, size=n)],
            "event_time": start + pd.to_timedelta(secs, unit="s"),
            "event_type": roles,
            "amount": np.where(roles == "purchase", rng.gamma(2, 20, n), np.where(roles == "refund", -10.0, np.nan)),
            # purchases have their own ids; deliveries, reviews and refunds share a few ids per user so
            # reviews link to (sometimes late, sometimes later) deliveries of the same order
            "order_id": np.where(
                roles == "purchase",
                [f"o{i}" for i in range(n)],
                np.where(np.isin(roles, ["delivery", "review", "refund"]), [f"x{i % 3}" for i in range(n)], None),
            ),
            "discount": np.where(roles == "purchase", rng.choice([0.0, 5.0], n), np.nan),
            "rating": np.where(roles == "review", rng.integers(1, 6, n), np.nan),
            "delivery_delay_days": np.where(roles == "delivery", rng.integers(0, 8, n), np.nan),
            "tier": np.where(roles == "membership", rng.integers(1, 4, n), np.nan),
        }
    )
    return make_events(df.to_dict("records"))


@pytest.fixture
def params() -> Params:
    """Default params with short windows suited to tiny fixtures."""
    p = Params()
    return p.model_copy(
        update={
            "features": p.features.model_copy(update={"windows": [7, 30, 60]}),
            "labels": p.labels.model_copy(update={"horizon_days": 30, "lookback_days": 60}),
        }
    )


@pytest.fixture
def con(params: Params):
    """A real DuckDB connection pinned to UTC."""
    return connect(params)


@pytest.fixture(scope="session")
def shop_snapshots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, pd.DataFrame, object]:
    """Labelled weekly snapshots of a small synthetic shop (real generator, DuckDB and feature code)."""
    from pipeline.build import build_snapshots, data_span, labelable_cutoffs, rollup
    from pipeline.config import GenerateParams
    from pipeline.engine import read_events
    from pipeline.synthetic import write_shop

    tmp = tmp_path_factory.mktemp("shop")
    base = Params()
    params = base.model_copy(
        update={
            "threads": 1,
            "generate": GenerateParams(users=1500, seed=11),
            "train": base.train.model_copy(update={"n_estimators": 80, "early_stopping_rounds": 20}),
            "evaluate": base.evaluate.model_copy(update={"backtest_cutoffs": 2, "contact_capacity": 50}),
        }
    )
    write_shop(params.generate, tmp / "events.parquet", tmp / "truth.parquet")
    con = connect(params)
    events = read_events(con, tmp / "events.parquet")
    rolled = rollup(events)
    first, end = data_span(con, rolled)
    cutoffs = labelable_cutoffs(first, end, params.features, params.labels)
    snap = build_snapshots(con, rolled, cutoffs, params, labelled=True)
    return params, snap, tmp / "events.parquet"


# ------------------------------------------------------------------------ warehouse source (PostgreSQL)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on loopback (tests/postgres_server.py); skips without the binaries."""
    from postgres_server import missing_reason, running_server

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with running_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_shop(postgres) -> dict:
    """Database `shop` with table raw.events: a 1000-user synthetic shop plus bad rows and duplicates.

    Returns the server, the data.* keys that read it (the password as ${WINBACK_DB_PASSWORD}, which the
    tests export) and the frame that was loaded.
    """
    from postgres_server import WAREHOUSE_COLUMNS, WAREHOUSE_MAPPING, execute, load_frame, warehouse_frame

    execute(postgres, "postgres", "CREATE DATABASE shop")
    execute(postgres, "shop", "CREATE SCHEMA raw")
    frame = warehouse_frame()
    load_frame(postgres, "shop", "raw.events", WAREHOUSE_COLUMNS, frame)
    url = f"postgresql://{postgres.user}:${{WINBACK_DB_PASSWORD}}@{postgres.host}:{postgres.port}/shop"
    return {"server": postgres, "data": {"source": url, "table": "raw.events", **WAREHOUSE_MAPPING}, "frame": frame}


# ------------------------------------------------------------------------------ Spark Connect (spark.remote)


@pytest.fixture(scope="session")
def spark_connect_url():
    """The sc:// URL of a throwaway Spark Connect server (tests/spark_connect_server.py); skips without one."""
    from spark_connect_server import missing_reason, running_server

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with running_server() as url:
        yield url
