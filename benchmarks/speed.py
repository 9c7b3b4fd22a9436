"""Feature build and scoring speed at growing event counts (issue 5): the cost per event should not grow.

Usage: python benchmarks/speed.py [--sizes 2M,20M] [--cutoffs 44] [--memory-limit 1.2GB] [--data-dir DIR]
       [--pandas-max 20M] [--pandas-cutoffs-max 20M] [--contacts 500] [--reasons-all] [--no-write]
       [--part-rows N] [--no-spark] [--spark-max 2M] [--spark-memory 3g] [--only training_build,...]

For every size N it generates N synthetic events with DuckDB SQL straight to Parquet (cached in
--data-dir, so each size is generated once: 100M takes about 1.5 minutes and 0.85 GB; a run with
100M takes a good deal longer than the default 2M,20M, which takes about 10 minutes) and measures,
each step in its own process (DuckDB and LightGBM threads = --threads, DuckDB memory_limit =
--memory-limit; peak RSS = the process's ru_maxrss from wait4). The default limit, 1.2GB, is what a
2 GB process needs: DuckDB's limit bounds DuckDB's own buffers, and the process also holds Python,
the result in Arrow and the pandas frame (at 100M events, a 2GB limit measured 2.44 GB of RSS):

  (c) reference: one plain DuckDB SQL group-by over the Parquet file (count, last time and summed
      amount per user and event type), fetched into an Arrow table: the practical ceiling of one pass;
  (a) scoring build: read_events -> scoring_rollup (days before the longest window merged into one row
      per user) -> build_snapshots(labelled=False) for one cutoff (the end of the data), as `winback score`
      builds its features, i.e. every catalogue feature for the population,
      materialised as the pandas DataFrame build_snapshots returns;
  (b) training build: read_events -> write_snapshots for --cutoffs weekly cutoffs ending at the last
      labelable one (every feature, churned, future_revenue and contacted), as the features stage runs it:
      built in user ranges of at most about features.snapshot_part_rows rows (--part-rows), each from its
      own events (its rollup included), and written part by part to one Parquet file, so at most two parts
      are in memory at a time (with --code pointing at
      a version without write_snapshots: build_snapshots into one DataFrame, as before);
  (d) pandas: a straightforward pandas implementation of 51 of the 54 catalogue features
      (PANDAS_SKIPPED lists the rest; the run checks its values against the build's) for the same
      cutoff, from pd.read_parquet to a DataFrame, up to --pandas-max events (it needs about 9 GB
      at 20M); (d') the same over the training cutoffs, with labels, up to --pandas-cutoffs-max.

A DuckDB step that runs out of memory is retried at the next of --retry-memory-limits and reported
as such. Scoring throughput: a calibrated LightGBM is trained (pipeline.train.fit_churn_model,
untimed) on the training snapshots of the smallest size and applied to the scoring rows of the
largest: predict_proba (users/s), SHAP + reason codes (pipeline.reasons.top_reasons) for the
contact list (the --contacts most likely churners) and, with --reasons-all, for the whole base and
the whole win-back list (pipeline.stages.score_population).

Spark local mode (sizes up to --spark-max, default 2M: local Spark on 2 cores is slow; larger sizes
are reported as not run; --no-spark skips them, and they are skipped with the reason printed when
`java` is not on PATH or pyspark is not installed): master local[--threads], spark.driver.memory
--spark-memory, the same pipeline functions with `engine: spark` (pipeline.engine.connect):
  (a) on Spark: scoring_rollup (cached, materialised by a count) -> build_snapshots(labelled=False) for the
      scoring cutoff -> pandas, checked against the DuckDB scoring build's rows when both ran;
  (b) on Spark: write_snapshots over the training cutoffs, as (b);
  scoring throughput on Spark (needs (b)'s snapshots of the smallest size, as the DuckDB scorer):
      the same kind of model, saved with mlflow.sklearn and applied with mlflow.pyfunc.spark_udf to
      the feature rows in Spark (probabilities, users/s), and the whole list with
      pipeline.spark_scoring.score_population_spark (checked equal to the pandas scorer's list).
Peak memory of a Spark step = sums over its process tree (Python driver + JVM + Python workers),
sampled every 0.2 s with psutil (TreeRss): PSS, RSS (an upper bound: shared pages count in every
process) and the JVM's RSS; its CPU time includes the JVM (the step waits for the JVM to exit).

The machine is often shared: each step waits up to --quiet-wait seconds for other processes to go
quiet, and the table shows the cores they used during the step anyway. --code DIR imports
features/ and pipeline/ from DIR (e.g. `git archive <commit> features pipeline | tar -x -C DIR`)
to measure another version. Results, bars (pass/FAIL), machine and commit go to the `speed`
section of docs/benchmarks.md unless --no-write.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

# bump when the generator's SQL changes, so cached files are regenerated
# (3: independent uniforms, see _u; the files of version 2 had one rating, one delay, no discounts, ...)
GENERATOR_VERSION = 3
EVENTS_PER_USER = 150
START = dt.date(2024, 7, 1)
DAYS = 730

# catalogue features the pandas implementation computes (windows 7, 30, 90) and those it does not
PANDAS_SKIPPED = (
    "abandoned_cart_days_90d",  # needs a per user-day table (a rollup) first
    "late_order_low_ratings_90d",  # links reviews to late deliveries through order ids
    "low_ratings_90d",  # excludes the late-order reviews above
)


def parse_size(text: str) -> int:
    """'2M' -> 2_000_000, '500k' -> 500_000, '1000' -> 1000."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def size_label(n: int) -> str:
    """2_000_000 -> '2M'."""
    for unit, scale in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= scale and n % (scale // 10) == 0:
            return f"{n / scale:g}{unit}"
    return str(n)


# ------------------------------------------------------------------------------------------------
# data


def _u(*key: object) -> str:
    """A uniform in [0, 1) from DuckDB's hash of `key`: reproducible and independent of threads.

    The hash is hashed again: DuckDB's hash of several values combines them with a multiply-xor, so
    hash(uid, k, 13) and hash(uid, k, 9) differ by a fixed xor mask and their leading bits (the
    uniform) are a function of each other: every uniform of an event was a function of the one that
    picks its type (one rating, one delay, no discount, ... per type), every uniform of a user a
    function of the others. The second hash (a full 64-bit mix) makes them independent.
    """
    return f"(hash(hash({', '.join(map(str, key))})) / 18446744073709551616.0)"


def generator_sql(n_events: int) -> tuple[str, str]:
    """(users table SQL, events query SQL) for about n_events canonical events.

    Users (n_events / 150 of them) get Pareto(1.3) activity weights (capped at 200x the scale, a
    Zipf-like tail: a few heavy users, many light ones), a start day skewed to the first year, and
    for 60% a finite lifetime (exponential, mean 240 days: the churners). Each user's events fall
    on active days spread over their life (thinning out towards a churner's end), 1-12 per day,
    the first of a day a session, the rest a mix of roles; purchases carry amount, quantity and
    sometimes a discount, refunds a negative amount, deliveries a delay, reviews a rating,
    membership events a tier. Order ids are user + week, shared by the purchases, deliveries,
    reviews and refunds of that week. Rows come out sorted by (user_id, event_time), as ingest
    writes them.
    """
    s0 = int(dt.datetime.combine(START, dt.time(), tzinfo=dt.UTC).timestamp())
    users = f"""
    WITH raw AS (
      SELECT i AS uid,
        least(pow(1 - {_u("i", 1)}, -1 / 1.3), 200.0) AS w,
        1 + floor(12 * {_u("i", 2)})::BIGINT AS per_day,
        floor({DAYS - 30} * pow({_u("i", 3)}, 1.5))::BIGINT AS start_day,
        {_u("i", 4)} < 0.6 AS churner,
        CASE WHEN churner THEN ceil(-ln(1 - {_u("i", 5)}) * 240)::BIGINT ELSE 100000 END AS life
      FROM range({max(1, round(n_events / EVENTS_PER_USER))}) t(i)
    ), sized AS (
      SELECT uid, start_day, per_day, churner,
        greatest(1, round(w * {n_events} / sum(w) OVER ()))::BIGINT AS n,
        greatest(1, least({DAYS}, start_day + life) - start_day) AS span
      FROM raw
    ), based AS (
      -- a churner's days are placed on half its span, then stretched (see `day` below)
      SELECT *, CASE WHEN churner THEN greatest(1, span // 2) ELSE span END AS base FROM sized
    )
    SELECT uid, 'u' || lpad(uid::VARCHAR, 8, '0') AS user_id, n, start_day, churner, base,
      least(base, ceil(n / per_day))::BIGINT AS days,
      ceil(n / least(base, ceil(n / per_day)))::BIGINT AS m
    FROM based ORDER BY uid
    """
    events = f"""
    WITH ev AS (
      SELECT uid, user_id, start_day, churner, base, days, m, unnest(range(n)) AS k FROM users
    ), d AS (
      SELECT *, k // m AS j, k % m AS e FROM ev
    ), o AS (
      -- offset of active day j in [0, base): strictly increasing in j, so rows stay sorted by time
      SELECT *, floor(j * base / days)::BIGINT + floor({_u("uid", "j", 6)} * floor(base / days))::BIGINT AS o,
        CASE WHEN e = 0 THEN 1.0 ELSE {_u("uid", "k", 9)} END AS r
      FROM d
    ), d2 AS (
      -- churners fade: gaps between their active days grow from 1x to 3x before they leave
      SELECT *, start_day + CASE WHEN churner THEN o + o * o // base ELSE o END AS day FROM o
    ), t AS (
      SELECT *, CASE WHEN e = 0 THEN 'session'
          WHEN r < 0.45 THEN 'view' WHEN r < 0.57 THEN 'search' WHEN r < 0.67 THEN 'cart'
          WHEN r < 0.73 THEN 'purchase' WHEN r < 0.78 THEN 'delivery' WHEN r < 0.80 THEN 'review'
          WHEN r < 0.807 THEN 'refund' WHEN r < 0.819 THEN 'support' WHEN r < 0.829 THEN 'support_resolved'
          WHEN r < 0.832 THEN 'membership' ELSE 'other' END AS event_type,
        ({_u("uid", "k", 10)} + {_u("uid", "k", 11)} + {_u("uid", "k", 12)} - 1.5) * 2 AS z,
        {_u("uid", "k", 13)} AS a, {_u("uid", "k", 14)} AS b
      FROM d2
    )
    SELECT user_id,
      to_timestamp({s0} + day * 86400 + floor({_u("uid", "j", 7)} * 60000) + e * 40 + floor(a * 30)) AS event_time,
      event_type,
      CASE event_type WHEN 'purchase' THEN round(exp(3.6 + 0.7 * z), 2)
        WHEN 'refund' THEN -round(exp(3.2 + 0.6 * z), 2) END AS amount,
      CASE WHEN event_type IN ('purchase', 'delivery', 'review', 'refund')
        THEN user_id || '-' || (day // 7)::VARCHAR END AS order_id,
      CASE WHEN event_type = 'purchase' THEN 1 + floor(4 * a * a) END::DOUBLE AS quantity,
      CASE WHEN event_type = 'purchase' AND b < 0.25 THEN round(2 + 72 * b, 2) END::DOUBLE AS discount,
      CASE WHEN event_type = 'review' THEN least(5, 1 + floor(5 * pow(a, 0.6))) END::DOUBLE AS rating,
      CASE WHEN event_type = 'delivery' THEN floor(-2 + 7 * pow(a, 3)) END::DOUBLE AS delivery_delay_days,
      CASE WHEN event_type = 'membership' THEN floor(4 * a) END::DOUBLE AS tier
    FROM t
    """
    return users, events


def _duckdb(threads: int, memory_limit: str, tmp: Path):
    import duckdb

    tmp.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        config={
            "threads": threads,
            "memory_limit": memory_limit,
            "temp_directory": str(tmp),
        }
    )
    con.sql("SET TimeZone = 'UTC'")
    con.sql("SET enable_progress_bar = false")
    return con


def ensure_events(n_events: int, data_dir: Path, threads: int) -> tuple[Path, dict]:
    """The Parquet file of n_events events in data_dir and its metadata, generated when missing."""
    path = data_dir / f"events_{size_label(n_events)}.parquet"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("generator_version") == GENERATOR_VERSION:
            return path, meta
    import duckdb

    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"generating {n_events:,} events -> {path}", flush=True)
    t0 = time.perf_counter()
    con = _duckdb(threads, "4GB", data_dir / "duckdb_tmp")
    users, events = generator_sql(n_events)
    con.sql(f"CREATE TEMP TABLE users AS {users}")
    part = path.with_suffix(".parquet.part")
    con.sql(f"COPY ({events}) TO '{part}' (FORMAT parquet)")
    part.rename(path)
    stats = con.execute(
        "SELECT count(*), count(DISTINCT user_id), min(event_time)::DATE::VARCHAR, max(event_time)::DATE::VARCHAR, "
        f"count(DISTINCT (user_id, event_time::DATE)) FROM read_parquet('{path}')"
    ).fetchone()
    meta = {
        "generator_version": GENERATOR_VERSION,
        "duckdb": duckdb.__version__,
        "events": stats[0],
        "users": stats[1],
        "first_day": stats[2],
        # end of data: midnight UTC after the last event (as pipeline.build.data_span)
        "data_end": (dt.date.fromisoformat(stats[3]) + dt.timedelta(days=1)).isoformat(),
        "user_days": stats[4],
        "bytes": path.stat().st_size,
        "generate_s": round(time.perf_counter() - t0, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    con.close()
    print(f"  {meta}", flush=True)
    return path, meta


def warm(path: Path) -> None:
    """Read the file once so every step starts from the page cache, not from disk."""
    with path.open("rb") as f:
        while f.read(1 << 24):
            pass


# ------------------------------------------------------------------------------------------------
# steps: each runs in a child process (`--step NAME --spec JSON`) and returns a dict of figures


def _params(spec: dict):
    """params.yaml's feature, label, training and scoring settings with the step's threads and memory limit.

    Only the sections every version of the code knows are read, so `--code` can point at an older commit.
    """
    import yaml

    from pipeline.config import FeatureParams, Params

    raw = yaml.safe_load((REPO / "params.yaml").read_text()) or {}
    kept = {k: raw[k] for k in ("seed", "features", "labels", "train", "score") if k in raw}
    # keys newer than the code (e.g. snapshot_part_rows for a --code version from before it) are dropped
    kept["features"] = {k: v for k, v in kept.get("features", {}).items() if k in FeatureParams.model_fields}
    return Params.model_validate({**kept, "threads": spec["threads"], "duckdb_memory_limit": spec["memory_limit"]})


def _connect(spec: dict, params):
    from pipeline.engine import connect

    con = connect(params)
    tmp = Path(spec["tmp"])
    tmp.mkdir(parents=True, exist_ok=True)
    con.raw_sql(f"SET temp_directory = '{tmp}'")  # spill beside the data, not into the working directory
    return con


def step_reference(spec: dict) -> dict:
    """(c) One DuckDB group-by over the Parquet file: count, last time, summed amount per user and type."""
    t0 = time.perf_counter()
    con = _duckdb(spec["threads"], spec["memory_limit"], Path(spec["tmp"]))
    table = con.sql(
        "SELECT user_id, event_type, count(*) AS n, max(event_time) AS last_time, sum(amount) AS amount "
        f"FROM read_parquet('{spec['events']}') GROUP BY user_id, event_type"
    ).to_arrow_table()
    return {"seconds": time.perf_counter() - t0, "rows": table.num_rows, "out_mb": table.nbytes / 1e6}


def _rollup_for(events, cutoffs: list, params, labelled: bool):
    """The rollup the pipeline builds these snapshots from: merged before the windows for one unlabelled cutoff
    (scoring, as `winback score` builds its features), daily otherwise; materialised (a temp table on DuckDB)."""
    from pipeline import build

    if not labelled and len(cutoffs) == 1 and hasattr(build, "scoring_rollup"):  # --code: older versions lack it
        return build.scoring_rollup(events, cutoffs[0], params)
    return build.rollup(events)


def _build(spec: dict, labelled: bool) -> dict:
    from pipeline.build import build_snapshots
    from pipeline.engine import read_events

    params = _params(spec)
    cutoffs = [dt.date.fromisoformat(c) for c in spec["cutoffs"]]
    t0 = time.perf_counter()
    con = _connect(spec, params)
    rolled = _rollup_for(read_events(con, spec["events"]), cutoffs, params, labelled)
    t1 = time.perf_counter()
    df = build_snapshots(con, rolled, cutoffs, params, labelled=labelled)
    t2 = time.perf_counter()
    out = {
        "seconds": t2 - t0,
        "rollup_s": t1 - t0,
        "snapshots_s": t2 - t1,
        "rows": len(df),
        "columns": df.shape[1],
        "rollup_rows": int(con.execute(rolled.count())),
        "out_mb": df.memory_usage(deep=True).sum() / 1e6,
    }
    if labelled:
        out["churn_rate"] = float(df["churned"].astype("float64").mean())
    if spec.get("save"):
        df.to_parquet(spec["save"], index=False)
    return out


def step_scoring_build(spec: dict) -> dict:
    """(a) Every feature for one cutoff, unlabelled, through the pipeline's own functions."""
    return _build(spec, labelled=False)


def step_training_build(spec: dict) -> dict:
    """(b) Every feature and label for the training cutoffs, written in parts as the features stage does."""
    try:
        from pipeline.build import write_snapshots
    except ImportError:  # --code: a version from before the build in parts materialised one DataFrame
        return _build(spec, labelled=True)
    import inspect

    from pipeline.build import rollup
    from pipeline.engine import read_events

    params = _params(spec)
    if spec.get("part_rows"):
        fp = params.features.model_copy(update={"snapshot_part_rows": spec["part_rows"]})
        params = params.model_copy(update={"features": fp})
    cutoffs = [dt.date.fromisoformat(c) for c in spec["cutoffs"]]
    target = Path(spec.get("save") or Path(spec["tmp"]) / f"training_{os.getpid()}.parquet")
    # the current code builds each user range from its own events; --code versions before it took a rollup
    from_events = "events" in inspect.signature(write_snapshots).parameters
    t0 = time.perf_counter()
    con = _connect(spec, params)
    events = read_events(con, spec["events"])
    source = events if from_events else rollup(events)  # a rollup is materialised (a DuckDB temp table)
    t1 = time.perf_counter()
    # no contact log: every row gets contacted = False, as in a run without one
    built = write_snapshots(con, source, cutoffs, params, Path(spec["tmp"]) / "no-contacts.parquet", target)
    t2 = time.perf_counter()
    import pyarrow.parquet as pq

    out = {
        "seconds": t2 - t0,
        **({} if from_events else {"rollup_s": t1 - t0, "snapshots_s": t2 - t1}),
        "rows": built["rows"],
        "columns": len(pq.read_schema(target).names),
        "out_mb": target.stat().st_size / 1e6,
        "written": True,
        "parts": built["parts"],
        "part_rows": params.features.snapshot_part_rows,
        "churn_rate": built["base_rate"],
    }
    if not spec.get("save"):
        target.unlink()
    return out


def pandas_read(path: str):
    """The events with pandas, plus epoch seconds and the UTC day number of every event."""
    import pandas as pd

    cols = ["user_id", "event_time", "event_type", "amount", "order_id", "discount", "rating"]
    ev = pd.read_parquet(path, columns=[*cols, "delivery_delay_days", "tier"])
    ev["secs"] = (ev["event_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    ev["day"] = ev["secs"] // 86_400
    return ev


def pandas_snapshot(ev, cutoff_day: int, windows: list[int], lookback: int):
    """pandas_features(windows) per user in the population at one cutoff, the straightforward pandas way.

    Boolean masks per role and window, one groupby over the events, one over the distinct orders
    (orders count once per day, as the rollup counts them), one over the purchase days for the gaps.
    """
    import numpy as np
    import pandas as pd

    mid, long = windows[len(windows) // 2], windows[-1]
    past = ev[ev["day"] < cutoff_day]
    age = cutoff_day - past["day"]
    role = past["event_type"]
    cols: dict[str, object] = {"user_id": past["user_id"], "last_s": past["secs"], "first_s": past["secs"]}
    agg: dict[str, tuple[str, str]] = {"last_s": ("last_s", "max"), "first_s": ("first_s", "min")}

    def add(name: str, values: object, how: str) -> None:
        cols[name] = values
        agg[name] = (name, how)

    for w in windows:
        add(f"active_days_{w}d", past["day"].where(age <= w), "nunique")
        add(f"sessions_{w}d", (role == "session") & (age <= w), "sum")
        add(f"views_{w}d", (role == "view") & (age <= w), "sum")
    add(f"active_days_prev_{mid}d", past["day"].where((age > mid) & (age <= 2 * mid)), "nunique")
    add("last_day_long", past["day"].where(age <= long), "max")
    add("first_day_long", past["day"].where(age <= long), "min")
    add(f"searches_{long}d", (role == "search") & (age <= long), "sum")
    purchase = role == "purchase"
    add("last_purchase_s", past["secs"].where(purchase), "max")
    add("last_coupon_s", past["secs"].where(purchase & (past["discount"].fillna(0) > 0)), "max")
    add("first_purchase_s", past["secs"].where(purchase), "min")
    add("revenue_total", past["amount"].where(purchase, 0.0), "sum")
    for w in sorted({mid, long}):
        add(f"revenue_{w}d", past["amount"].where(purchase & (age <= w), 0.0), "sum")
    add(f"carts_{long}d", (role == "cart") & (age <= long), "sum")
    add("support", role == "support", "sum")
    add("resolved", role == "support_resolved", "sum")
    add(f"tickets_{long}d", (role == "support") & (age <= long), "sum")
    delivery = (role == "delivery") & past["delivery_delay_days"].notna()
    delay = past["delivery_delay_days"]
    add(f"deliveries_{long}d", delivery & (age <= long), "sum")
    add(f"late_deliveries_{long}d", delivery & (delay >= 2) & (age <= long), "sum")
    add("late_deliveries_total", delivery & (delay >= 2), "sum")
    add(f"delay_days_{long}d", delay.where(delivery & (age <= long), 0.0), "sum")
    add(f"max_delivery_delay_{long}d", delay.where(delivery & (age <= long)), "max")
    review = (role == "review") & past["rating"].notna() & (age <= long)
    add(f"reviews_{long}d", review, "sum")
    add("rating_sum", past["rating"].where(review, 0.0), "sum")
    add(f"refunds_{long}d", (role == "refund") & (age <= long), "sum")
    add("refund_amount", past["amount"].abs().where(role == "refund", 0.0), "sum")
    f = pd.DataFrame(cols).groupby("user_id", sort=True).agg(**agg)

    # orders: distinct (day, order_id) among purchases; a purchase without an order id is one order
    p = past.loc[purchase, ["user_id", "day", "order_id", "discount"]]
    p = p.assign(age=cutoff_day - p["day"])
    orders = pd.concat(
        [p[p["order_id"].isna()], p[p["order_id"].notna()].drop_duplicates(["user_id", "day", "order_id"])]
    )
    coupon = p[p["discount"].fillna(0) > 0]
    coupon = pd.concat(
        [
            coupon[coupon["order_id"].isna()],
            coupon[coupon["order_id"].notna()].drop_duplicates(["user_id", "day", "order_id"]),
        ]
    )
    o = (
        pd.DataFrame(
            {
                "user_id": orders["user_id"],
                "orders_total": 1,
                f"orders_{mid}d": orders["age"] <= mid,
                f"orders_{long}d": orders["age"] <= long,
            }
        )
        .groupby("user_id")
        .sum()
    )
    c = (
        pd.DataFrame(
            {"user_id": coupon["user_id"], "coupon_orders_total": 1, f"coupon_orders_{long}d": coupon["age"] <= long}
        )
        .groupby("user_id")
        .sum()
    )
    # purchase days and the gaps between them
    pdays = p[["user_id", "day"]].drop_duplicates().sort_values(["user_id", "day"])
    gap = pdays.groupby("user_id")["day"].diff()
    g = pd.DataFrame({"user_id": pdays["user_id"], "purchase_days_total": 1, "gap": gap, "gap_sq": gap**2})
    g = g.groupby("user_id").agg(
        purchase_days_total=("purchase_days_total", "sum"),
        gap_n=("gap", "count"),
        gap_sum=("gap", "sum"),
        gap_sq=("gap_sq", "sum"),
    )
    m = past[(role == "membership") & past["tier"].notna()]
    tier = m.sort_values(["user_id", "secs"], kind="stable").groupby("user_id")["tier"].last().rename("tier")
    f = f.join([o, c, g, tier])

    def ratio(num: pd.Series, den: pd.Series) -> pd.Series:
        return (num / den.where(den > 0)).astype("float64")

    cutoff_s = cutoff_day * 86_400
    for name in ("orders_total", f"orders_{mid}d", f"orders_{long}d", "coupon_orders_total", f"coupon_orders_{long}d"):
        f[name] = f[name].fillna(0)
    f["tier"] = f["tier"].fillna(0)
    f["purchase_days_total"] = f["purchase_days_total"].fillna(0)
    f["days_since_last_activity"] = (cutoff_s - f["last_s"]) / 86_400
    f["days_since_last_purchase"] = (cutoff_s - f["last_purchase_s"]) / 86_400
    f["days_since_last_coupon_order"] = (cutoff_s - f["last_coupon_s"]) / 86_400
    f["days_since_first_purchase"] = (cutoff_s - f["first_purchase_s"]) / 86_400
    f["tenure_days"] = (cutoff_s - f["first_s"]) / 86_400
    f[f"active_days_trend_{mid}d"] = f[f"active_days_{mid}d"] - f[f"active_days_prev_{mid}d"]
    f[f"mean_gap_days_{long}d"] = ratio(f["last_day_long"] - f["first_day_long"], f[f"active_days_{long}d"] - 1)
    f["avg_order_value"] = ratio(f["revenue_total"], f["orders_total"])
    mean_gap = ratio(f["gap_sum"], f["gap_n"])
    f["mean_interpurchase_days"] = mean_gap
    var = (ratio(f["gap_sq"], f["gap_n"]) - mean_gap**2).clip(lower=0)
    f["interpurchase_cv"] = ratio(np.sqrt(var), mean_gap).where(f["gap_n"] >= 2)
    f["purchase_overdue_ratio"] = ratio(f["days_since_last_purchase"], mean_gap)
    f["monthly_order_rate"] = ratio(f["orders_total"] * 30, f["tenure_days"].clip(lower=30))
    f["monthly_revenue_rate"] = ratio(f["revenue_total"] * 30, f["tenure_days"].clip(lower=30))
    f[f"recent_order_share_{long}d"] = ratio(f[f"orders_{long}d"], f["orders_total"])
    f[f"cart_conversion_{long}d"] = ratio(f[f"orders_{long}d"], f[f"carts_{long}d"])
    f[f"coupon_share_{long}d"] = ratio(f[f"coupon_orders_{long}d"], f[f"orders_{long}d"])
    f["coupon_share_total"] = ratio(f["coupon_orders_total"], f["orders_total"])
    f["open_tickets"] = (f["support"] - f["resolved"]).clip(lower=0)
    f[f"mean_delivery_delay_{long}d"] = ratio(f[f"delay_days_{long}d"], f[f"deliveries_{long}d"])
    f[f"mean_rating_{long}d"] = ratio(f["rating_sum"], f[f"reviews_{long}d"])
    f["refund_share_total"] = ratio(f["refund_amount"], f["revenue_total"])
    f = f[f["last_s"] >= (cutoff_day - lookback) * 86_400]  # population: an event in [cutoff - lookback, cutoff)
    return f[pandas_features(windows)].astype("float64").reset_index()


def pandas_features(windows: list[int]) -> list[str]:
    """Catalogue features the pandas implementation computes, in catalogue order."""
    from features.catalogue import catalogue

    return [f.name for f in catalogue(windows) if f.name not in PANDAS_SKIPPED]


def _day(iso: str) -> int:
    return (dt.date.fromisoformat(iso) - dt.date(1970, 1, 1)).days


def step_pandas(spec: dict) -> dict:
    """(d) pandas: read the events, pandas_features for each cutoff (plus churn labels when labelled)."""
    import pandas as pd

    params = _params(spec)
    windows, lp = sorted(set(params.features.windows)), params.labels
    if lp.qualifying != "any":
        raise SystemExit("the pandas implementation assumes labels.qualifying: any")
    t0 = time.perf_counter()
    ev = pandas_read(spec["events"])
    t1 = time.perf_counter()
    frames = []
    for c in spec["cutoffs"]:
        snap = pandas_snapshot(ev, _day(c), windows, lp.lookback_days)
        if spec["labelled"]:
            d = _day(c)
            future = ev.loc[(ev["day"] >= d) & (ev["day"] < d + lp.horizon_days), "user_id"].unique()
            snap["churned"] = (~snap["user_id"].isin(future)).astype("int8")
        snap.insert(1, "cutoff", dt.date.fromisoformat(c))
        frames.append(snap)
    df = pd.concat(frames, ignore_index=True)
    t2 = time.perf_counter()
    if spec.get("save"):
        df.to_parquet(spec["save"], index=False)
    return {
        "seconds": t2 - t0,
        "read_s": t1 - t0,
        "features_s": t2 - t1,
        "rows": len(df),
        "features": len(pandas_features(windows)),
        "in_mb": ev.memory_usage(deep=True).sum() / 1e6,
        "out_mb": df.memory_usage(deep=True).sum() / 1e6,
    }


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _fit(snaps, params, cat: dict) -> tuple:
    """(the calibrated model fitted as the train stage fits it, seconds): untimed in the figures."""
    from pipeline.train import fit_churn_model

    t0 = time.perf_counter()
    features = [c for c in snaps.columns if c in cat]
    trained = fit_churn_model(snaps, features, params.labels.horizon_days, params.train, params.seed, params.threads)
    return trained, time.perf_counter() - t0


def step_scorer(spec: dict) -> dict:
    """Scoring throughput: probabilities and reason codes (users/s) with a model trained here."""
    import numpy as np
    import pandas as pd

    from features.catalogue import catalogue
    from pipeline.explain import shap_values
    from pipeline.reasons import top_reasons
    from pipeline.stages import score_population

    try:  # --code: a version from before churn_probability
        from pipeline.train import churn_probability
    except ImportError:

        def churn_probability(model, X):
            return model.predict_proba(X)[:, 1]

    from pipeline.train import inner_booster, matrix, model_feature_names

    params = _params(spec)
    cat = {f.name: f for f in catalogue(params.features.windows)}
    try:  # a file written in parts: back in (cutoff, user_id) order, as the train stage reads it
        from pipeline.build import read_snapshots
    except ImportError:
        read_snapshots = pd.read_parquet
    snaps = read_snapshots(spec["train"])
    trained, fit_s = _fit(snaps, params, cat)
    model, booster = trained.model, inner_booster(trained.model)
    features = model_feature_names(model)
    rows = pd.read_parquet(spec["rows"])
    n = len(rows)
    out = {
        "fit_s": fit_s,
        "train_rows": trained.train_rows,
        "trees": trained.best_iteration,
        "leaves": params.train.num_leaves,
        "features": len(features),
        "users": n,
    }

    def proba() -> np.ndarray:
        return churn_probability(model, matrix(rows, features))

    out["proba_s"] = _best(proba, 3)
    top = rows.iloc[np.argsort(-proba(), kind="stable")[: spec["contacts"]]]

    def reasons(r: pd.DataFrame) -> pd.DataFrame:
        return top_reasons(shap_values(booster, matrix(r, features)), r, features, cat)

    out["contacts"] = len(top)
    out["contact_reasons_s"] = _best(lambda: reasons(top), 3)
    out["contact_shap_s"] = _best(lambda: shap_values(booster, matrix(top, features)), 3)
    as_of = dt.date.fromisoformat(spec["as_of"])
    # the default list: reasons for the top ranks the contact selection walks through
    out["list_s"] = _best(lambda: score_population(model, rows, params, as_of, "bench"), 1)
    if spec["all"]:
        out["shap_all_s"] = _best(lambda: shap_values(booster, matrix(rows, features)), 1)
        out["reasons_all_s"] = _best(lambda: reasons(rows), 1)
        every = params.model_copy(update={"score": params.score.model_copy(update={"reasons_for": "all"})})
        out["list_all_s"] = _best(lambda: score_population(model, rows, every, as_of, "bench"), 1)
    return out


# ------------------------------------------------------------------------------------------------
# Spark local mode: the same pipeline functions with engine: spark (pipeline.engine.connect)


def spark_missing() -> str | None:
    """Why the Spark steps cannot run here (no Java, no pyspark), or None."""
    import importlib.util
    import shutil

    if shutil.which("java") is None:
        return "Spark needs Java (17): no `java` on PATH"
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install 'winback[spark]')"
    return None


def _spark_params(spec: dict):
    """_params with engine: spark on local[threads], spark.driver.memory = --spark-memory, scratch beside the data."""
    from pipeline.config import SparkParams

    params = _params(spec)
    conf = {"spark.driver.memory": spec["spark_memory"], "spark.local.dir": str(Path(spec["tmp"]) / "spark")}
    sp = SparkParams(master=f"local[{spec['threads']}]", conf=conf)
    return params.model_copy(update={"engine": "spark", "spark": sp})


def _spark_rollup(spec: dict, params, scoring: dt.date) -> tuple:
    """(con, rolled, session_s, rollup_s): a Spark session and the scorer's rollup for the one cutoff `scoring`
    (merged before its windows), cached and materialised by a count.

    Spark caches lazily: the count makes the rollup exist before the snapshots, as DuckDB's temp table does.
    """
    from pipeline.engine import connect, read_events

    t0 = time.perf_counter()
    con = connect(params)
    con._session.sparkContext.setLogLevel("ERROR")
    t1 = time.perf_counter()
    rolled = _rollup_for(read_events(con, spec["events"]), [scoring], params, labelled=False)
    rows = int(con.execute(rolled.count()))
    t2 = time.perf_counter()
    return con, rolled, rows, t1 - t0, t2 - t1


def _spark_stop(con, rolled=None) -> None:
    """Stop the session and wait for the JVM to exit, so wait4's CPU time and ru_maxrss include it."""
    from pyspark import SparkContext

    from pipeline.build import release_rollup

    if rolled is not None:
        release_rollup(rolled)  # now, not from Ibis's finalizer at exit (after the JVM is gone)
    gateway = SparkContext._gateway
    con._session.stop()
    proc = getattr(gateway, "proc", None)
    if gateway is not None:
        gateway.shutdown()
    if proc is not None:
        proc.stdin.close()  # the JVM exits when its stdin closes
        proc.wait(timeout=120)


def step_spark_scoring_build(spec: dict) -> dict:
    """(a) on Spark: every feature for one cutoff, unlabelled, build_snapshots on engine: spark -> pandas."""
    from pipeline.build import build_snapshots

    params = _spark_params(spec)
    cutoffs = [dt.date.fromisoformat(c) for c in spec["cutoffs"]]
    t0 = time.perf_counter()
    con, rolled, rollup_rows, session_s, rollup_s = _spark_rollup(spec, params, scoring=cutoffs[0])
    t1 = time.perf_counter()
    df = build_snapshots(con, rolled, cutoffs, params, labelled=False)
    t2 = time.perf_counter()
    out = {
        "seconds": t2 - t0,
        "session_s": session_s,
        "rollup_s": rollup_s,
        "snapshots_s": t2 - t1,
        "rows": len(df),
        "columns": df.shape[1],
        "rollup_rows": rollup_rows,
        "out_mb": df.memory_usage(deep=True).sum() / 1e6,
    }
    if spec.get("save"):
        df.to_parquet(spec["save"], index=False)
    _spark_stop(con, rolled)
    return out


def step_spark_training_build(spec: dict) -> dict:
    """(b) on Spark: write_snapshots (every feature and label, in user ranges) on engine: spark."""
    import pyarrow.parquet as pq

    from pipeline.build import write_snapshots

    params = _spark_params(spec)
    if spec.get("part_rows"):
        fp = params.features.model_copy(update={"snapshot_part_rows": spec["part_rows"]})
        params = params.model_copy(update={"features": fp})
    cutoffs = [dt.date.fromisoformat(c) for c in spec["cutoffs"]]
    target = Path(spec["tmp"]) / f"spark_training_{os.getpid()}.parquet"
    from pipeline.engine import connect, read_events

    t0 = time.perf_counter()
    con = connect(params)
    con._session.sparkContext.setLogLevel("ERROR")
    t1 = time.perf_counter()
    # each user range from its own events, its rollup cached for the range (as the features stage runs it)
    built = write_snapshots(con, read_events(con, spec["events"]), cutoffs, params, Path(spec["tmp"]) / "none", target)
    t2 = time.perf_counter()
    out = {
        "seconds": t2 - t0,
        "session_s": t1 - t0,
        "snapshots_s": t2 - t1,
        "rows": built["rows"],
        "columns": len(pq.read_schema(target).names),
        "out_mb": target.stat().st_size / 1e6,
        "written": True,
        "parts": built["parts"],
        "part_rows": params.features.snapshot_part_rows,
        "churn_rate": built["base_rate"],
    }
    target.unlink()
    _spark_stop(con)
    return out


def step_spark_scorer(spec: dict) -> dict:
    """Scoring throughput on Spark: probabilities via mlflow spark_udf, the list via score_population_spark.

    The model (pipeline.train.fit_churn_model on the DuckDB training snapshots, untimed) is saved as
    the train stage logs it (mlflow.sklearn, pyfunc predict = predict_proba) to a local directory,
    which is the model URI spark_udf loads in the Python workers.
    """
    import mlflow.pyfunc
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, DoubleType

    from features.catalogue import catalogue
    from pipeline.build import read_snapshots
    from pipeline.spark_scoring import score_population_spark, snapshot_frame
    from pipeline.stages import score_population
    from pipeline.tracking import trusted_types
    from pipeline.train import matrix, model_feature_names

    params = _spark_params(spec)
    cat = {f.name: f for f in catalogue(params.features.windows)}
    snaps = read_snapshots(spec["train"])
    trained, fit_s = _fit(snaps, params, cat)
    model = trained.model
    features = model_feature_names(model)
    example = snaps[features].head(5).astype("float64")
    uri = str(Path(spec["tmp"]) / f"spark_model_{os.getpid()}")
    mlflow.sklearn.save_model(
        model,
        uri,
        signature=infer_signature(example, model.predict_proba(example)),
        input_example=example,
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=trusted_types(model),
    )
    del snaps
    rows = pd.read_parquet(spec["rows"])
    as_of = dt.date.fromisoformat(spec["as_of"])
    n = len(rows)
    out = {"fit_s": fit_s, "train_rows": trained.train_rows, "trees": trained.best_iteration, "users": n}
    out["leaves"], out["features"] = params.train.num_leaves, len(features)
    con, rolled, _, out["session_s"], out["rollup_s"] = _spark_rollup(spec, params, scoring=as_of)
    spark = con._session
    # the feature rows at as_of in Spark, as score_population_spark builds them (persisted, counted)
    t0 = time.perf_counter()
    frame = snapshot_frame(con, rolled, as_of, params, "winback_bench_rows").persist()
    out["frame_rows"] = frame.count()
    out["frame_s"] = time.perf_counter() - t0
    predict = mlflow.pyfunc.spark_udf(spark, uri, result_type=ArrayType(DoubleType()), env_manager="local")
    X = frame.select("user_id", *[F.col(f).cast("double").alias(f) for f in features])

    def proba() -> pd.DataFrame:
        return X.select("user_id", predict(F.struct(*features))[1].alias("p")).toPandas()

    out["proba_s"] = _best(proba, 3)
    got = proba().set_index("user_id")["p"].reindex(rows["user_id"].astype(str)).to_numpy(float)
    want = model.predict_proba(matrix(rows, features))[:, 1]
    out["proba_max_diff"] = float(abs(got - want).max())
    frame.unpersist()
    # the whole list as the score stage runs it on Spark (its own feature rows, probabilities, reasons)
    expected = score_population(model, rows, params, as_of, "bench")
    got_list = None

    def full() -> None:
        nonlocal got_list
        got_list = score_population_spark(con, rolled, model, uri, rows, params, as_of, "bench")

    out["list_s"] = _best(full, 1)
    out["list_same"] = bool(got_list.equals(expected))
    if spec["all"]:
        every = params.model_copy(update={"score": params.score.model_copy(update={"reasons_for": "all"})})
        out["list_all_s"] = _best(lambda: score_population_spark(con, rolled, model, uri, rows, every, as_of, "b"), 1)
    _spark_stop(con, rolled)
    return out


SPARK_STEPS = ("spark_scoring_build", "spark_training_build", "spark_scorer")
STEPS = {
    "reference": step_reference,
    "scoring_build": step_scoring_build,
    "training_build": step_training_build,
    "pandas": step_pandas,
    "scorer": step_scorer,
    "spark_scoring_build": step_spark_scoring_build,
    "spark_training_build": step_spark_training_build,
    "spark_scorer": step_spark_scorer,
}


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user and nice]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait: float, below: float = 0.3, sample: float = 2.0) -> float:
    """Wait up to max_wait seconds until other processes use less than `below` cores; return their use."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = busy_seconds()
        time.sleep(sample)
        used = (busy_seconds() - b0) / sample
        if used < below or time.monotonic() >= deadline:
            return used


class TreeRss:
    """Peak memory summed over a process and all its descendants (e.g. a Spark step's JVM and Python workers).

    Sampled every `every` s with psutil (a peak shorter than that can be missed): the sum of RSS (pages
    shared between processes, e.g. forked Python workers, count once per process: an upper bound), the
    sum of PSS (shared pages split between their processes: what the tree really holds), and the RSS of
    the `java` processes alone.
    """

    def __init__(self, pid: int, every: float = 0.2) -> None:
        import threading

        self.pid, self.every, self.peak, self.pss, self.jvm = pid, every, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = pss = jvm = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for p in procs:
                try:
                    mem = p.memory_full_info()
                    total, pss = total + mem.rss, pss + mem.pss
                    jvm += mem.rss if p.name() == "java" else 0
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak, self.pss, self.jvm = max(self.peak, total), max(self.pss, pss), max(self.jvm, jvm)
            self._stop.wait(self.every)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"tree_rss_gb": self.peak / 1e9, "tree_pss_gb": self.pss / 1e9, "jvm_rss_gb": self.jvm / 1e9}


def run_step(name: str, spec: dict, work: Path, quiet_wait: float, tag: str | None = None, tree: bool = False) -> dict:
    """Run one step in a child process; its figures plus wall time, peak RSS and CPU accounting.

    `cpu` is the child's own CPU time / wall time (2 = both cores all the time); `others` is the
    average number of cores the rest of the machine used meanwhile (from /proc/stat): a step that
    competed with other processes shows others > 0 and is slower than it would be alone. With
    `tree` (the Spark steps), also the peak RSS summed over the process tree (TreeRss: Python + JVM
    + Python workers); the CPU time then includes the JVM, which the step waits for before exiting.
    """
    tag = tag or name
    result, log = work / f"{tag}.json", work / f"{tag}.log"
    result.unlink(missing_ok=True)
    before = wait_quiet(quiet_wait)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--spec", json.dumps(spec)]
    t0, b0 = time.perf_counter(), busy_seconds()
    with log.open("w") as err:
        child = subprocess.Popen([*cmd, "--out", str(result)], stdout=err, stderr=subprocess.STDOUT, cwd=work)
        sampler = TreeRss(child.pid) if tree else None
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall, busy = time.perf_counter() - t0, busy_seconds() - b0
    cpu = usage.ru_utime + usage.ru_stime
    base = {
        "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,
        "process_s": wall,
        "cpu": cpu / wall,
        "others": max(0.0, busy - cpu) / wall,
        "others_before": before,
        "load": os.getloadavg()[0],
        **(sampler.stop() if sampler else {}),
    }
    if child.returncode != 0 or not result.exists():
        text = log.read_text()
        tail = text.strip().splitlines()[-1:] or ["(no output)"]
        oom = "OutOfMemoryException" in text
        error = f"DuckDB out of memory at memory_limit {spec['memory_limit']}" if oom else tail[0][:200]
        print(f"  {tag}: FAILED (exit {child.returncode}): {error}", flush=True)
        return {**base, "error": error, "oom": oom}
    out = {**base, **json.loads(result.read_text())}
    shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
    print(f"  {tag}: {shown}", flush=True)
    return out


# ------------------------------------------------------------------------------------------------
# report


def _check_pandas(build: Path, pandas_out: Path, windows: list[int]) -> str:
    """How far the pandas subset is from the build on the same users (a sanity check of (d))."""
    import numpy as np
    import pandas as pd

    a, b = pd.read_parquet(build), pd.read_parquet(pandas_out)
    names = pandas_features(windows)
    j = a[["user_id", *names]].merge(b[["user_id", *names]], on="user_id", how="outer", suffixes=("", "_pd"))
    same_users = len(j) == len(a) == len(b)
    worst, bad = 0.0, []
    for f in names:
        x, y = j[f].to_numpy(float), j[f + "_pd"].to_numpy(float)
        both_nan = np.isnan(x) & np.isnan(y)
        diff = np.where(both_nan, 0.0, np.abs(x - y) / np.maximum(1.0, np.abs(x)))
        d = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff))) if len(diff) else 0.0
        worst = max(worst, d)
        if d > 1e-6:
            bad.append(f"{f} ({d:.3g})")
    users = "same users" if same_users else f"users differ: build {len(a):,}, pandas {len(b):,}"
    if not bad:
        return (
            f"pandas subset agrees with the build: {len(names)} features, {users}, max relative difference {worst:.1e}"
        )
    return f"pandas subset differs from the build on {len(bad)} of {len(names)} features ({users}): {', '.join(bad)}"


def _check_same(duck: Path, spark: Path) -> str:
    """How far the Spark scoring build's rows are from DuckDB's (the engines should agree: test_engine_parity)."""
    import numpy as np
    import pandas as pd

    a, b = pd.read_parquet(duck), pd.read_parquet(spark)
    cols = [c for c in a.columns if c in b.columns and c not in ("user_id", "cutoff")]
    j = a.merge(b, on=["user_id", "cutoff"], how="outer", suffixes=("", "_spark"))
    users = "same users" if len(j) == len(a) == len(b) else f"users differ: DuckDB {len(a):,}, Spark {len(b):,}"
    worst, bad = 0.0, []
    for c in cols:
        x, y = j[c].astype("float64").to_numpy(), j[c + "_spark"].astype("float64").to_numpy()
        diff = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y) / np.maximum(1.0, np.abs(x)))
        d = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff))) if len(diff) else 0.0
        worst = max(worst, d)
        if d > 1e-9:
            bad.append(f"{c} ({d:.3g})")
    missing = sorted(set(a.columns) ^ set(b.columns))
    if not bad and not missing:
        return (
            f"Spark scoring build agrees with DuckDB's: {len(cols)} columns, {users}, max rel. difference {worst:.1e}"
        )
    return f"Spark scoring build differs from DuckDB's ({users}; columns only in one: {missing}): {', '.join(bad)}"


STEP_LABELS = {
    "reference": "(c) reference group-by -> Arrow table of (user, type) rows",
    "scoring_build": "(a) scoring build, 1 cutoff -> DataFrame of every feature",
    "training_build": "(b) training build, {k} cutoffs -> DataFrame of every feature + labels",
    "pandas": "(d) pandas, 1 cutoff -> DataFrame of {f} features",
    "pandas_training": "(d') pandas, {k} cutoffs -> DataFrame of {f} features + labels",
}
# (b) as the features stage runs it (write_snapshots); the DataFrame label is for --code versions before it
TRAINING_WRITTEN = (
    "(b) training build, {k} cutoffs -> one Parquet file of every feature + labels (MB on disk), "
    "written in {p} user ranges of <= ~{r:,} rows, each built from its own events (its rollup included)"
)


def _seconds(res: dict, n: int, step: str) -> float | None:
    r = res.get(n, {}).get(step)
    return r["seconds"] if r and "seconds" in r else None


def report(
    args: argparse.Namespace,
    sizes: list[int],
    res: dict,
    metas: dict,
    scorer: dict | None,
    notes: list[str],
    spark_scorer: dict | None = None,
) -> str:
    """The markdown block: command, data, per-step table, ratios, scoring throughput, bars."""
    from record import provenance

    lines = [
        f"### Speed (`python benchmarks/speed.py {args.argv}`): {provenance()}",
        "",
        f"DuckDB threads = {args.threads}, memory_limit = {args.memory_limit}; each step in its own process, "
        "timed from connecting (or reading) to the materialised result; peak RSS = that process (Python and "
        "libraries included); CPU = the step's CPU time / wall time in cores; others = cores the rest of the "
        "machine used meanwhile (2 cores in all: others > 0 means the step competed and its time is inflated)."
        + (f" features/ and pipeline/ imported from `{args.code}`, not from the commit above." if args.code else ""),
        "",
        "| events | users | user-days | Parquet MB | generated in |",
        "|---|---|---|---|---|",
    ]
    for n in sizes:
        m = metas[n]
        mb, gen = m["bytes"] / 1e6, m["generate_s"]
        lines.append(f"| {m['events']:,} | {m['users']:,} | {m['user_days']:,} | {mb:,.0f} | {gen:.0f} s |")
    lines += [
        "",
        "| events | step -> what is materialised | rows | s | M events/s | ns/event | peak RSS GB | CPU | others |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        m = metas[n]
        for step, label in STEP_LABELS.items():
            r = res[n].get(step)
            if r is None:
                continue
            if r.get("written"):
                label = TRAINING_WRITTEN.format(k=args.cutoffs, p=r["parts"], r=r["part_rows"])
            else:
                label = label.format(k=args.cutoffs, f=r.get("features", len(pandas_features([7, 30, 90]))))
            if r.get("oom_at"):
                label += f" **(out of memory at memory_limit {', '.join(r['oom_at'])}"
                label += ")**" if "error" in r else f"; ran at {r['memory_limit']})**"
            tail = f"{r['peak_rss_gb']:.2f} | {r['cpu']:.2f} | {r['others']:.2f} |"
            if "error" in r:
                lines.append(f"| {size_label(n)} | {label} | FAILED: {r['error']} | | | | {tail}")
                continue
            parts = ""
            if "rollup_s" in r:
                parts = f" (rollup {r['rollup_s']:.1f} + snapshots {r['snapshots_s']:.1f})"
            elif "read_s" in r:
                parts = f" (read {r['read_s']:.1f} + features {r['features_s']:.1f})"
            lines.append(
                f"| {size_label(n)} | {label} | {r['rows']:,} ({r['out_mb']:,.0f} MB) | {r['seconds']:.2f}{parts} | "
                f"{m['events'] / r['seconds'] / 1e6:.2f} | {r['seconds'] / m['events'] * 1e9:.0f} | {tail}"
            )

    def ratio(n: int, x: str, y: str, pct: bool = False) -> str:
        tx, ty = _seconds(res, n, x), _seconds(res, n, y)
        if tx is None or ty is None:
            return "-"
        return f"{tx / ty:.0%}" if pct else f"{tx / ty:.2f}x"

    lines += [
        "",
        "Ratios: a/c = the scoring build's events/s as a share of the reference's; the others are ratios of "
        "times. The pandas figures cover a subset of the features (d: 1 cutoff, d': every training cutoff).",
        "",
        "| events | a/c | b/a | d/a (pandas subset / full build) | d'/b (pandas subset / full build) |",
        "|---|---|---|---|---|",
    ]
    for n in sizes:
        lines.append(
            f"| {size_label(n)} | {ratio(n, 'reference', 'scoring_build', True)} | "
            f"{ratio(n, 'training_build', 'scoring_build')} | {ratio(n, 'pandas', 'scoring_build')} | "
            f"{ratio(n, 'pandas_training', 'training_build')} |"
        )
    lines.append("")
    if scorer and "error" not in scorer:
        s = scorer
        lines += [
            f"Scoring throughput on the {s['users']:,} scoring rows of the {size_label(s['size'])} set: a calibrated "
            f"LightGBM of {s['trees']} trees ({s['leaves']} leaves max) on {s['features']} features, fitted with "
            f"pipeline.train.fit_churn_model in {s['fit_s']:.0f} s on {s['train_rows']:,} training rows of the "
            f"{size_label(s['train_size'])} set. Best of 3, except the whole-base figures (1 run).",
            "",
            "| what | users | s | users/s |",
            "|---|---|---|---|",
        ]
        rows = [
            (
                "probabilities (matrix + churn_probability: QuickScorer, bit for bit predict_proba)",
                s["users"],
                s["proba_s"],
            ),
            ("SHAP only, contact list", s["contacts"], s["contact_shap_s"]),
            ("reason codes, contact list (SHAP + top_reasons)", s["contacts"], s["contact_reasons_s"]),
            ("whole win-back list, default (score_population, reasons_for: contact_list)", s["users"], s["list_s"]),
        ]
        if "reasons_all_s" in s:
            rows += [
                ("SHAP only, whole base", s["users"], s["shap_all_s"]),
                ("reason codes, whole base (SHAP + top_reasons)", s["users"], s["reasons_all_s"]),
                ("whole win-back list, reasons_for: all (score_population)", s["users"], s["list_all_s"]),
            ]
        lines += [f"| {w} | {u:,} | {t:.3f} | {u / t:,.0f} |" for w, u, t in rows]
        lines.append("")
    elif scorer:
        lines += [f"Scoring throughput: FAILED ({scorer['error']})", ""]
    lines += spark_report(args, sizes, res, metas, spark_scorer)
    lines += bars(sizes, res, metas, scorer, args)
    if notes:
        lines += ["", *[f"* {x}" for x in notes]]
    return "\n".join(lines) + "\n"


def _tree_mem(r: dict) -> str:
    """A Spark step's peak memory: tree PSS (tree RSS; JVM RSS), in GB."""
    return f"{r.get('tree_pss_gb', 0):.2f} ({r.get('tree_rss_gb', 0):.2f}; {r.get('jvm_rss_gb', 0):.2f})"


SPARK_LABELS = {
    "spark_scoring_build": "(a) scoring build on Spark, 1 cutoff -> DataFrame of every feature",
    "spark_training_build": "(b) training build on Spark, {k} cutoffs -> one Parquet file{p}, each from its events",
}


def spark_report(args: argparse.Namespace, sizes: list[int], res: dict, metas: dict, scorer: dict | None) -> list[str]:
    """The Spark local-mode tables: the builds per size (with the DuckDB ratios) and the scoring throughput."""
    import platform

    if args.spark_reason:
        return [f"Spark local mode: not run ({args.spark_reason}).", ""]
    builds = [s for s in args.spark_steps if s in SPARK_LABELS]
    if not args.spark_steps:
        return []
    try:
        import pyspark

        version = f"PySpark {pyspark.__version__}"
    except ImportError:
        version = "PySpark ?"
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[:1]
    spark_max = parse_size(args.spark_max)
    lines = [
        f"Spark local mode ({version}, {java[0] if java else 'java ?'}, Python {platform.python_version()}): "
        f"master local[{args.threads}], spark.driver.memory {args.spark_memory}, the same pipeline functions with "
        "`engine: spark` (pipeline.engine.connect) on the same Parquet files, up to --spark-max "
        f"{args.spark_max}. Timed from starting the Spark session (JVM start included) to the materialised "
        "result; the rollup is cached and materialised by a count before the snapshots, as DuckDB's temp table. "
        "Peak memory = sums over the step's process tree (Python driver + JVM + Python workers), sampled every "
        "0.2 s with psutil: PSS (shared pages split between processes: what the tree holds) and RSS (shared pages "
        "counted in every process: an upper bound), and the JVM's RSS alone; CPU includes the JVM's (the step "
        "waits for it to exit).",
        "",
    ]
    if builds:
        lines += [
            "| events | step -> what is materialised | rows | s (session + rollup + snapshots; (b): rollup per range) "
            "| M events/s | ns/event | peak GB: tree PSS (tree RSS; JVM RSS) | CPU | others | / DuckDB (a) "
            "| / DuckDB same step |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for n in sizes if builds else []:
        m = metas[n]
        for step in builds:
            duck = step.removeprefix("spark_")
            if n > spark_max:
                label = SPARK_LABELS[step].format(k=args.cutoffs, p="")
                lines.append(f"| {size_label(n)} | {label} | not run (--spark-max {args.spark_max}) | | | | | | | | |")
                continue
            r = res[n].get(step)
            if r is None:
                continue
            label = SPARK_LABELS[step].format(k=args.cutoffs, p=f", {r['parts']} user ranges" if "parts" in r else "")
            tree = _tree_mem(r)
            tail = f"{tree} | {r['cpu']:.2f} | {r['others']:.2f} |"
            if "error" in r:
                lines.append(f"| {size_label(n)} | {label} | FAILED: {r['error']} | | | | {tail} | |")
                continue
            ta, ts = _seconds(res, n, "scoring_build"), _seconds(res, n, duck)
            vs_a = f"{r['seconds'] / ta:.1f}x" if ta else "-"
            vs_same = f"{r['seconds'] / ts:.1f}x" if ts else "-"
            rolled = f"{r['rollup_s']:.1f} + " if "rollup_s" in r else ""
            parts = f" ({r['session_s']:.1f} + {rolled}{r['snapshots_s']:.1f})"
            lines.append(
                f"| {size_label(n)} | {label} | {r['rows']:,} ({r['out_mb']:,.0f} MB) | {r['seconds']:.1f}{parts} | "
                f"{m['events'] / r['seconds'] / 1e6:.3f} | {r['seconds'] / m['events'] * 1e9:,.0f} | {tail} "
                f"{vs_a} | {vs_same} |"
            )
    if builds:
        lines.append("")
    s = scorer
    if s and "error" not in s:
        lines += [
            f"Scoring throughput on Spark, on the {s['users']:,} scoring rows of the {size_label(s['size'])} set "
            f"({s['rows_from']}): a calibrated LightGBM of {s['trees']} trees on {s['features']} features "
            f"(pipeline.train.fit_churn_model on {s['train_rows']:,} training rows of the "
            f"{size_label(s['train_size'])} set, {s['fit_s']:.0f} s, untimed), saved with "
            "mlflow.sklearn (pyfunc predict = predict_proba) and loaded by mlflow.pyfunc.spark_udf. Session start "
            f"{s['session_s']:.1f} s and rollup {s['rollup_s']:.1f} s (cached) not included below. Probabilities: "
            f"best of 3, max difference from predict_proba on the driver {s['proba_max_diff']:.1e}; the list: 1 run, "
            f"identical to the pandas scorer's (score_population): {'yes' if s['list_same'] else '**no**'}.",
            "",
            "| what | users | s | users/s |",
            "|---|---|---|---|",
        ]
        rows = [
            ("feature rows in Spark (snapshot_frame, persisted + counted)", s["frame_rows"], s["frame_s"]),
            ("probabilities (spark_udf over the persisted rows -> pandas)", s["users"], s["proba_s"]),
            (
                "whole win-back list, default (score_population_spark, reasons_for: contact_list; "
                "its own feature rows included)",
                s["users"],
                s["list_s"],
            ),
        ]
        if "list_all_s" in s:
            rows.append(("whole win-back list, reasons_for: all (score_population_spark)", s["users"], s["list_all_s"]))
        lines += [f"| {w} | {u:,} | {t:.2f} | {u / t:,.0f} |" for w, u, t in rows]
        tree = _tree_mem(s)
        cpu = f"CPU {s['cpu']:.2f}, others {s['others']:.2f}"
        lines += ["", f"Spark scoring step: peak GB, tree PSS (tree RSS; JVM RSS) {tree}; {cpu}.", ""]
    elif s:
        lines += [f"Scoring throughput on Spark: FAILED ({s['error']})", ""]
    elif "spark_scorer" in args.spark_steps:
        lines += ["Scoring throughput on Spark: not run (see the notes).", ""]
    return lines


def bars(sizes: list[int], res: dict, metas: dict, scorer: dict | None, args: argparse.Namespace) -> list[str]:
    """The issue's bars, each with what was measured and pass / FAIL / not measured."""
    at, big = 20_000_000, 100_000_000
    out = ["| bar (2 cores; at 20M events unless said) | measured | result |", "|---|---|---|"]

    def row(bar: str, value: float | None, ok: bool, text: str) -> None:
        verdict = "not measured" if value is None else ("**pass**" if ok else "**FAIL**")
        out.append(f"| {bar} | {text if value is not None else '-'} | {verdict} |")

    def time_ratio(x: str, y: str) -> float | None:
        tx, ty = _seconds(res, at, x), _seconds(res, at, y)
        return None if tx is None or ty is None else tx / ty

    def limits(*steps: str) -> str:
        """A note when a step ran at a larger memory_limit than asked (after running out of memory)."""
        ran = [(s, res.get(at, {}).get(s) or {}) for s in steps]
        odd = [f"{s.replace('_', ' ')} at memory_limit {r['memory_limit']}" for s, r in ran if r.get("oom_at")]
        return f" ({'; '.join(odd)})" if odd else ""

    v = time_ratio("reference", "scoring_build")
    ok = v is not None and v >= 0.33
    row("scoring build >= 33% of the reference group-by's events/s", v, ok, f"{v or 0:.0%}" + limits("scoring_build"))
    v = time_ratio("training_build", "scoring_build")
    text = f"{v or 0:.2f}x" + limits("training_build", "scoring_build")
    row(f"training build ({args.cutoffs} cutoffs) <= 5x the scoring build", v, v is not None and v <= 5, text)
    v = time_ratio("pandas", "scoring_build")
    text = f"{v or 0:.2f}x" + limits("scoring_build")
    row("scoring build >= 5x faster than pandas (1 cutoff; pandas: subset)", v, v is not None and v >= 5, text)
    v = time_ratio("pandas_training", "training_build")
    text = f"{v or 0:.2f}x" + limits("training_build")
    bar = f"training build >= 5x faster than pandas ({args.cutoffs} cutoffs; pandas: subset)"
    row(bar, v, v is not None and v >= 5, text)
    for step in ("scoring_build", "training_build"):
        r = res.get(big, {}).get(step) or {}
        v = r["peak_rss_gb"] if "seconds" in r else (0.0 if r.get("oom_at") else None)
        text = f"{v or 0:.2f} GB"
        if r.get("oom_at"):
            text = f"out of memory at {', '.join(r['oom_at'])}" + (f"; {text} at {r['memory_limit']}" if v else "")
        ok = v is not None and v <= 2 and not r.get("oom_at")
        row(
            f"peak RSS <= 2 GB at 100M events, {step.replace('_', ' ')} (memory_limit {args.memory_limit})", v, ok, text
        )
    ok = scorer is not None and "proba_s" in scorer
    v = scorer["users"] / scorer["proba_s"] if ok else None
    row("probabilities >= 200k users/s", v, v is not None and v >= 200_000, f"{v or 0:,.0f}/s")
    v = scorer["contacts"] / scorer["contact_reasons_s"] if ok else None
    row(
        f"reason codes >= 5k users/s (contact list of {args.contacts})",
        v,
        v is not None and v >= 5000,
        f"{v or 0:,.0f}/s",
    )
    if ok and "reasons_all_s" in scorer:
        v = scorer["users"] / scorer["reasons_all_s"]
        row("reason codes >= 5k users/s (whole base)", v, v >= 5000, f"{v:,.0f}/s")
    for step in ("scoring_build", "training_build", "reference"):
        x, y = _seconds(res, at, step), _seconds(res, big, step)
        v = (y / metas[big]["events"]) / (x / metas[at]["events"]) if x and y else None
        row(
            f"time per event at 100M <= 1.5x that at 20M, {step.replace('_', ' ')}",
            v,
            v is not None and v <= 1.5,
            f"{v or 0:.2f}x",
        )
    return out


def main() -> None:
    """Generate (or reuse) the event sets, run every step per size in its own process, report."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2M,20M", help="event counts; 100M takes long (generation ~2 min, builds many)")
    ap.add_argument("--cutoffs", type=int, default=44, help="weekly training cutoffs for (b)")
    ap.add_argument(
        "--memory-limit", default="1.2GB", help="DuckDB memory_limit of every DuckDB step (1.2GB: a 2 GB process)"
    )
    ap.add_argument("--retry-memory-limits", default="4GB,8GB", help="limits to retry a step at when DuckDB runs out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "winback-speed")
    ap.add_argument("--pandas-max", default="20M", help="largest size for pandas on one cutoff (RAM)")
    ap.add_argument("--pandas-cutoffs-max", default="20M", help="largest size for pandas on every training cutoff")
    ap.add_argument("--quiet-wait", type=float, default=60, help="seconds to wait for other processes before a step")
    ap.add_argument("--contacts", type=int, default=500, help="contact list size for reason codes")
    ap.add_argument("--reasons-all", action="store_true", help="also reason codes and the list for the whole base")
    ap.add_argument(
        "--code", type=Path, help="import features/ and pipeline/ from DIR (e.g. a git archive of another commit)"
    )
    ap.add_argument("--no-write", action="store_true", help="print only; do not write docs/benchmarks.md")
    ap.add_argument("--part-rows", type=int, help="features.snapshot_part_rows of (b) (default: params.yaml's)")
    ap.add_argument("--no-spark", action="store_true", help="skip the Spark local-mode steps")
    ap.add_argument(
        "--spark-max", default="2M", help="largest size for the Spark steps (local Spark on 2 cores is slow)"
    )
    ap.add_argument(
        "--spark-memory", default="3g", help="spark.driver.memory of the Spark steps (local mode: all of it)"
    )
    ap.add_argument(
        "--only",
        help="comma-separated steps to run: reference, scoring_build, training_build, pandas, pandas_training, "
        "scorer, spark_scoring_build, spark_training_build, spark_scorer (a partial run: implies --no-write)",
    )
    ap.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        Path(args.out).write_text(json.dumps(STEPS[args.step](json.loads(args.spec))))
        return
    args.argv = " ".join(sys.argv[1:])
    only = set(args.only.split(",")) if args.only else None
    unknown = (only or set()) - {*STEPS, "pandas_training"}
    if unknown:
        ap.error(f"--only: unknown step(s) {sorted(unknown)}")
    args.no_write = args.no_write or only is not None

    def wanted(name: str) -> bool:
        return only is None or name in only

    if args.code:  # the steps (child processes) import the project's code from there
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(args.code.resolve()), os.environ.get("PYTHONPATH")])
        )
    sizes = sorted(parse_size(s) for s in args.sizes.split(","))
    pandas_max, pandas_k_max = parse_size(args.pandas_max), parse_size(args.pandas_cutoffs_max)
    params = _params({"threads": args.threads, "memory_limit": args.memory_limit})
    windows, horizon = sorted(set(params.features.windows)), params.labels.horizon_days
    data_dir = args.data_dir.resolve()
    work = data_dir / "run"
    work.mkdir(parents=True, exist_ok=True)
    base = {"threads": args.threads, "memory_limit": args.memory_limit, "tmp": str(data_dir / "duckdb_tmp")}
    base["part_rows"] = args.part_rows
    spark_max = parse_size(args.spark_max)
    args.spark_steps = [s for s in SPARK_STEPS if wanted(s)]
    args.spark_reason = "--no-spark" if args.no_spark else (spark_missing() if args.spark_steps else None)
    if args.spark_reason:
        print(f"Spark steps not run: {args.spark_reason}", flush=True)
        args.spark_steps = []
    spark_base = {**base, "spark_memory": args.spark_memory}
    t_start = time.perf_counter()

    def spark_step(name: str, spec: dict) -> dict:
        """run_step for a Spark step: no DuckDB memory limit to retry at; peak RSS over the process tree."""
        return run_step(name, {**spec, **spark_base}, work, args.quiet_wait, tree=True)

    def step(name: str, spec: dict, tag: str | None = None) -> dict:
        """run_step, retried at the next of --retry-memory-limits while DuckDB runs out of memory."""
        oom_at: list[str] = []
        for limit in [args.memory_limit, *filter(None, args.retry_memory_limits.split(","))]:
            r = run_step(name, {**spec, "memory_limit": limit}, work, args.quiet_wait, tag)
            if not r.get("oom"):
                break
            oom_at.append(limit)
        return {**r, "memory_limit": limit, "oom_at": oom_at}

    for stale in work.glob("*.parquet"):
        stale.unlink()  # outputs of an earlier run must not stand in for a failed step of this one
    print(f"load average at start: {os.getloadavg()}", flush=True)
    res: dict[int, dict] = {}
    metas: dict[int, dict] = {}
    event_paths: dict[int, Path] = {}
    notes: list[str] = []
    for n in sizes:
        # generated in a child: a forked step starts with its parent's peak RSS, so the parent stays small
        gen = multiprocessing.get_context("spawn").Process(target=ensure_events, args=(n, data_dir, args.threads))
        gen.start()
        gen.join()
        if gen.exitcode != 0:
            sys.exit(f"generating {n:,} events failed (exit {gen.exitcode})")
        path, meta = ensure_events(n, data_dir, args.threads)
        metas[n], event_paths[n] = meta, path
        warm(path)
        end = dt.date.fromisoformat(meta["data_end"])
        last = end - dt.timedelta(days=horizon)
        train_cutoffs = [(last - dt.timedelta(days=7 * i)).isoformat() for i in range(args.cutoffs)][::-1]
        spec = {**base, "events": str(path)}
        label = size_label(n)
        print(
            f"{label}: {meta['events']:,} events, {meta['users']:,} users, {meta['user_days']:,} user-days, "
            f"scoring cutoff {end}, training cutoffs {train_cutoffs[0]}..{train_cutoffs[-1]}",
            flush=True,
        )
        r: dict[str, dict] = {}
        if wanted("reference"):
            r["reference"] = step("reference", spec)
        scoring_out = work / f"scoring_{label}.parquet"
        if wanted("scoring_build"):
            scoring = {**spec, "cutoffs": [end.isoformat()], "save": str(scoring_out)}
            r["scoring_build"] = step("scoring_build", scoring)
        # the smallest size's training snapshots train the model of the scoring throughput step
        save = str(work / f"training_{label}.parquet") if n == sizes[0] else None
        if wanted("training_build"):
            r["training_build"] = step("training_build", {**spec, "cutoffs": train_cutoffs, "save": save})
        if wanted("pandas") and n <= pandas_max:
            pandas_out = work / f"pandas_{label}.parquet"
            one = {**spec, "cutoffs": [end.isoformat()], "labelled": False, "save": str(pandas_out)}
            r["pandas"] = step("pandas", one)
            if pandas_out.exists() and scoring_out.exists():
                check = _check_pandas(scoring_out, pandas_out, windows)
                notes.append(f"{label}: {check}")
                print(f"  {check}", flush=True)
        elif wanted("pandas"):
            notes.append(f"{label}: pandas not run (above --pandas-max {args.pandas_max}: RAM)")
        if wanted("pandas_training") and n <= pandas_k_max:
            r["pandas_training"] = step(
                "pandas", {**spec, "cutoffs": train_cutoffs, "labelled": True}, "pandas_training"
            )
        elif wanted("pandas_training"):
            notes.append(f"{label}: pandas over the training cutoffs not run (above --pandas-cutoffs-max)")
        if "spark_scoring_build" in args.spark_steps and n <= spark_max:
            spark_out = work / f"spark_scoring_{label}.parquet"
            one = {**spec, "cutoffs": [end.isoformat()], "save": str(spark_out)}
            r["spark_scoring_build"] = spark_step("spark_scoring_build", one)
            if spark_out.exists() and scoring_out.exists():
                check = _check_same(scoring_out, spark_out)
                notes.append(f"{label}: {check}")
                print(f"  {check}", flush=True)
        if "spark_training_build" in args.spark_steps and n <= spark_max:
            r["spark_training_build"] = spark_step("spark_training_build", {**spec, "cutoffs": train_cutoffs})
        if args.spark_steps and n > spark_max:
            notes.append(f"{label}: Spark steps not run (above --spark-max {args.spark_max})")
            print(f"  Spark steps not run (above --spark-max {args.spark_max})", flush=True)
        res[n] = r
    scorer = None
    train_file = work / f"training_{size_label(sizes[0])}.parquet"
    scored = max(sizes)
    rows_file = work / f"scoring_{size_label(scored)}.parquet"
    if train_file.exists() and rows_file.exists() and wanted("scorer"):
        spec = {**base, "train": str(train_file), "rows": str(rows_file), "contacts": args.contacts}
        scorer = step("scorer", {**spec, "all": args.reasons_all, "as_of": metas[scored]["data_end"]})
        scorer |= {"size": scored, "train_size": sizes[0]}
    spark_scorer = None
    spark_sizes = [n for n in sizes if n <= spark_max]
    if "spark_scorer" in args.spark_steps and spark_sizes:
        label = size_label(max(spark_sizes))
        rows_file = next(
            (f for f in (work / f"spark_scoring_{label}.parquet", work / f"scoring_{label}.parquet") if f.exists()),
            None,
        )
        if train_file.exists() and rows_file:
            n = max(spark_sizes)
            spec = {**base, "events": str(event_paths[n]), "train": str(train_file), "rows": str(rows_file)}
            spark_scorer = spark_step("spark_scorer", {**spec, "all": args.reasons_all, "as_of": metas[n]["data_end"]})
            spark_scorer |= {"size": max(spark_sizes), "train_size": sizes[0], "rows_from": rows_file.name}
        else:
            why = "training_build (smallest size)" if not train_file.exists() else f"a scoring build at {label}"
            notes.append(f"Spark scoring throughput not run: it needs the snapshots of {why} in the same run")
            print(f"spark_scorer not run: it needs the snapshots of {why} in the same run", flush=True)
    if 100_000_000 not in sizes:
        notes.append("100M not run in this invocation (`--sizes 2M,20M,100M`; see the 100M run below if recorded)")
    notes.append(f"run took {time.perf_counter() - t_start:.0f} s; load average at the end {os.getloadavg()[0]:.2f}")
    block = report(args, sizes, res, metas, scorer, notes, spark_scorer)
    print()
    print(block)
    if not args.no_write:
        from record import write_section

        write_section("speed", block)


if __name__ == "__main__":
    main()
