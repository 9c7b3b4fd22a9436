"""Synthetic shop generation speed, against building a random frame of the same shape.

Usage: python benchmarks/synthetic_speed.py --users 20000 [--repeat 3]
Prints events/s of generate_shop (best of --repeat runs, after a small warm-up) and of a reference
measured in the same run: numpy draws random values for the same number of rows and pandas builds
a frame with the same columns and dtypes. The ratio compares across machines; the machine is often
shared, so the best run is the figure to quote.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from features.events import CANONICAL_COLUMNS, ROLES
from pipeline.config import GenerateParams
from pipeline.synthetic import generate_shop


def _best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def reference_frame(n_rows: int, n_users: int, seed: int = 0) -> pd.DataFrame:
    """A frame of n_rows random events with the canonical columns and dtypes, built the plain way."""
    rng = np.random.default_rng(seed)
    user_ids = np.array([f"u{i:07d}" for i in range(1, n_users + 1)], dtype=object)
    user = np.sort(rng.integers(0, n_users, n_rows))
    start = pd.Timestamp("2024-07-01", tz="UTC").value // 1000
    times = start + rng.integers(0, 730 * 86_400_000_000, n_rows)
    is_order = rng.random(n_rows) < 0.1
    roles = np.array(ROLES, dtype=object)[rng.integers(0, len(ROLES), n_rows)]

    def sparse(values: np.ndarray, share: float) -> np.ndarray:
        return np.where(rng.random(n_rows) < share, values, np.nan)

    order_ids = np.where(is_order, np.char.add("o", rng.integers(0, 10**7, n_rows).astype(str)), None)
    frame = pd.DataFrame(
        {
            "user_id": pd.array(user_ids[user], dtype="str"),
            "event_time": pd.to_datetime(times, unit="us", utc=True).as_unit("us"),
            "event_type": pd.array(roles, dtype="str"),
            "amount": sparse(rng.lognormal(3.8, 0.6, n_rows), 0.05),
            "order_id": pd.array(order_ids, dtype="str"),
            "quantity": sparse(rng.integers(1, 5, n_rows).astype(float), 0.05),
            "discount": sparse(rng.random(n_rows) * 10, 0.05),
            "rating": sparse(rng.integers(1, 6, n_rows).astype(float), 0.01),
            "delivery_delay_days": sparse(rng.integers(0, 5, n_rows).astype(float), 0.05),
            "tier": sparse(rng.integers(1, 4, n_rows).astype(float), 0.003),
        }
    )
    return frame.sort_values(["user_id", "event_time"], ignore_index=True)[list(CANONICAL_COLUMNS)]


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    params = GenerateParams(users=args.users)
    generate_shop(GenerateParams(users=200))  # warm-up: imports, first-call costs
    t_gen, (events, truth) = _best(lambda: generate_shop(params), args.repeat)
    n = len(events)
    t_ref, ref = _best(lambda: reference_frame(n, args.users), args.repeat)
    assert list(ref.columns) == list(events.columns) and len(ref) == n
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()}")
    print(
        f"numpy {np.__version__}, pandas {pd.__version__}; users={args.users:,} events={n:,} "
        f"churned={int(truth['churn_time'].notna().sum()):,} best of {args.repeat}"
    )
    print(f"generate_shop                : {t_gen:7.2f} s  {n / t_gen / 1e6:6.2f} M events/s")
    print(f"reference random frame       : {t_ref:7.2f} s  {n / t_ref / 1e6:6.2f} M events/s")
    print(f"generate_shop / reference    : {t_gen / t_ref:7.2f}x the time")


if __name__ == "__main__":
    main()
