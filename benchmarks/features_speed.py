"""Feature build speed on the synthetic shop: one cutoff vs many, against a plain one-pass group-by.

Usage: python benchmarks/features_speed.py --users 20000 [--cutoffs 44]
Prints events/s and ratios to a reference measured in the same run (a single DuckDB group-by
with per-role counts over the same events), so results compare across machines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ibis

from features.events import ALL_ROLES
from features.windows import cutoff_table, snapshot_features
from pipeline.build import data_span, rollup
from pipeline.config import GenerateParams, Params
from pipeline.engine import connect, read_events
from pipeline.synthetic import write_shop


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--cutoffs", type=int, default=44)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    params = Params(threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        events_path = Path(tmp) / "events.parquet"
        counts = write_shop(GenerateParams(users=args.users), events_path, Path(tmp) / "truth.parquet")
        con = connect(params)
        events = read_events(con, events_path)
        n = counts["events"]

        def reference() -> object:
            aggs = {f"n_{r}": events.count(where=events.event_type == r) for r in ALL_ROLES}
            return con.to_pyarrow(events.group_by("user_id").aggregate(**aggs))

        t_ref, _ = _timed(reference)
        t_roll, rolled = _timed(lambda: rollup(events))
        _, end = data_span(con, rolled)
        windows = params.features.windows

        def build(k: int) -> object:
            cutoffs = [end - dt.timedelta(days=params.labels.horizon_days + 7 * i) for i in range(k)]
            return con.to_pyarrow(snapshot_features(rolled, cutoff_table(cutoffs), windows))

        t_one, one = _timed(lambda: build(1))
        t_many, many = _timed(lambda: build(args.cutoffs))
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} threads={args.threads}")
    print(f"ibis {ibis.__version__}; events={n:,} users={args.users:,}")
    print(f"reference one-pass group-by : {t_ref:7.2f} s  {n / t_ref / 1e6:6.1f} M events/s")
    print(f"user-day rollup (once)      : {t_roll:7.2f} s  {t_roll / t_ref:5.1f}x reference")
    print(f"features, 1 cutoff          : {t_one:7.2f} s  {t_one / t_ref:5.1f}x reference  rows={one.num_rows:,}")
    print(
        f"features, {args.cutoffs} cutoffs        : {t_many:7.2f} s  {t_many / t_ref:5.1f}x reference  "
        f"{t_many / t_one:5.1f}x one cutoff  rows={many.num_rows:,}"
    )


if __name__ == "__main__":
    main()
