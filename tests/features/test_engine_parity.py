"""Every feature and label gives identical results on DuckDB and on Spark (local mode), same Ibis code.

The fixture is built to break them: events exactly on cutoffs and window edges, one microsecond
before midnight, around the March and October DST changes (event times are UTC; a session time
zone that is not pinned would move them across days), users with a single event, users silent in a
window, refunds, null amounts, repeated order ids, late deliveries with reviews, open tickets and
tier changes, plus events after every cutoff that must not count.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.labels import churn_labels, population
from features.rollup import user_day_rollup
from features.windows import cutoff_table, snapshot_features
from pipeline.config import Params
from pipeline.engine import connect, read_events
from tests.conftest import make_events, random_events

if importlib.util.find_spec("pyspark") is None:
    pytest.skip("pyspark is not installed: pip install 'winback[spark]'", allow_module_level=True)
if shutil.which("java") is None:
    pytest.skip("Spark needs Java (17): no `java` on PATH", allow_module_level=True)

CUTOFFS = [dt.date(2024, 3, 31), dt.date(2024, 4, 7), dt.date(2024, 10, 27)]
WINDOWS = [7, 30, 60]


def _edge_events() -> pd.DataFrame:
    """Hand-made rows at every boundary the features and labels have."""
    rows = []

    def add(user: str, t: str, role: str, **kw) -> None:
        rows.append({"user_id": user, "event_time": t, "event_type": role, **kw})

    # exactly at a cutoff (excluded from it), a microsecond and a second before (included)
    add("edge", "2024-03-31T00:00:00Z", "session")
    add("edge", "2024-03-30T23:59:59.999999Z", "purchase", amount=20.0, order_id="e1")
    add("edge", "2024-03-30T23:59:59Z", "view")
    # exactly at the start of the 7-day window of 2024-03-31 and one second before it
    add("edge", "2024-03-24T00:00:00Z", "cart")
    add("edge", "2024-03-23T23:59:59Z", "cart")
    # around the EU spring-forward (01:00 UTC on 2024-03-31) and fall-back (01:00 UTC on 2024-10-27)
    for t in ("2024-03-31T00:30:00Z", "2024-03-31T01:30:00Z", "2024-10-27T00:59:59Z", "2024-10-27T01:00:01Z"):
        add("dst", t, "session")
    add("dst", "2024-03-10T06:59:59Z", "purchase", amount=15.5, order_id="d1", discount=2.0)  # US DST change
    add("dst", "2024-10-26T23:30:00Z", "purchase", amount=9.99, order_id="d2")
    # a single event long before every cutoff; a user silent in the last 7 and 30 days
    add("once", "2024-01-15T12:00:00Z", "purchase", amount=42.0, order_id="o1")
    add("quiet", "2024-02-05T10:00:00Z", "session")
    add("quiet", "2024-02-20T10:00:00Z", "purchase", amount=None, order_id="q1")  # null amount
    # refunds, a line-item order (one id, several rows), late delivery reviewed badly, open ticket, tiers
    add("busy", "2024-03-01T09:00:00Z", "purchase", amount=30.0, order_id="b1")
    add("busy", "2024-03-01T09:00:00Z", "purchase", amount=12.25, order_id="b1")
    add("busy", "2024-03-05T09:00:00Z", "delivery", delivery_delay_days=6.0, order_id="b1")
    add("busy", "2024-03-07T09:00:00Z", "review", rating=1.0, order_id="b1")
    add("busy", "2024-03-09T09:00:00Z", "refund", amount=-12.25, order_id="b1")
    add("busy", "2024-03-10T09:00:00Z", "support")
    add("busy", "2024-03-29T09:00:00Z", "support")
    add("busy", "2024-03-30T09:00:00Z", "support_resolved")
    add("busy", "2024-02-01T00:00:00Z", "membership", tier=1.0)
    add("busy", "2024-03-30T00:00:00Z", "membership", tier=2.0)
    add("busy", "2024-04-02T00:00:00Z", "membership", tier=3.0)  # after the first cutoff
    add("busy", "2024-04-20T09:00:00Z", "purchase", amount=18.0, order_id="b2")  # labels the second cutoff
    return make_events(rows)


def _events() -> pd.DataFrame:
    return pd.concat([_edge_events(), random_events(n_users=30, days=330, seed=5)], ignore_index=True)


def _frames(con, events_path: Path) -> dict[str, pd.DataFrame]:
    """Rollup, labels, population and every feature of the labelled population, as sorted pandas frames."""
    rolled = user_day_rollup(read_events(con, events_path))
    ct = cutoff_table(CUTOFFS)
    labels = churn_labels(rolled, ct, 60, 30, "any")
    feats = snapshot_features(rolled, labels.select("user_id", "cutoff_day"), WINDOWS)
    exprs = {
        "rollup": rolled,
        "population": population(rolled, ct, 60, "any"),
        "features": labels.join(feats, ["user_id", "cutoff_day"]),
    }
    out = {}
    for name, expr in exprs.items():
        df = con.to_pandas(expr)
        keys = [c for c in ("user_id", "cutoff_day", "d") if c in df]
        df["user_id"] = df["user_id"].astype(str)
        out[name] = df.sort_values(keys).reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def spark_con():
    con = connect(Params(engine="spark", threads=2))
    yield con
    con._session.stop()


def test_every_feature_and_label_is_identical_on_duckdb_and_spark(spark_con, tmp_path: Path) -> None:
    # a Parquet file as ingest writes it (missing values are nulls: a pandas NaN would reach Spark as NaN)
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(_events(), preserve_index=False), path)
    duck = _frames(connect(Params()), path)
    spark = _frames(spark_con, path)
    for name, d in duck.items():
        s = spark[name]
        assert list(s.columns) == list(d.columns), name
        assert len(d) == len(s) > 0, name
        for col in d.columns:
            left, right = d[col], s[col]
            if col == "user_id":
                assert left.tolist() == right.tolist()
                continue
            # exact equality, nulls included: counts are integers, sums fixed-point, days from epoch seconds
            np.testing.assert_array_equal(
                left.astype("float64").to_numpy(), right.astype("float64").to_numpy(), err_msg=f"{name}.{col}"
            )
    # the fixture reaches its edges: the user with a microsecond-before purchase is in the population
    feats = duck["features"]
    edge = feats[(feats["user_id"] == "edge") & (feats["cutoff_day"] == (CUTOFFS[0] - dt.date(1970, 1, 1)).days)]
    assert edge["orders_30d"].tolist() == [1.0]
    assert edge["carts_60d"].tolist() == [2.0]
    # 2024-03-30 and 2024-03-24 (the window's first day) are in the 7-day window; 2024-03-23 is not
    assert edge["active_days_7d"].tolist() == [2.0]


def test_training_snapshots_of_the_synthetic_shop_are_identical_on_both_engines(spark_con, shop_snapshots) -> None:
    from pipeline.build import build_snapshots, rollup

    params, snap, events_path = shop_snapshots
    cutoffs = sorted(snap["cutoff"].unique())[-6:]
    out = {}
    for name, con in (("duckdb", connect(params)), ("spark", spark_con)):
        out[name] = build_snapshots(con, rollup(read_events(con, events_path)), cutoffs, params, labelled=True)
    duck, spark = out["duckdb"], out["spark"]
    assert len(duck) > 1000
    pd.testing.assert_frame_equal(duck, spark[duck.columns], check_exact=True, check_dtype=False)
