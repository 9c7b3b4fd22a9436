"""Value benchmark: rolling-origin backtest of the expected-value methods behind `value_at_risk`.

Usage: python benchmarks/value.py [--datasets synthetic,online_retail,cdnow] [--cutoffs 6] [--step 4] [--keep DIR]
Per dataset it generates (synthetic only), ingests and builds the labelled snapshots of its config, then at each of
`--cutoffs` labelable cutoffs `--step` weeks apart (the last one first) predicts every method of `pipeline/value.py`
for the whole population (the models are fitted on it) and scores the prediction against the target of "value if
retained": the revenue each *retained* user (`churned == 0`) really generated in [cutoff, cutoff + horizon)
(`future_revenue`). Metrics on the retained rows: MAE, RMSE, Spearman rank correlation, the share of their realised
revenue held by their top 10% by predicted value, and bias (total predicted / total realised). A second, smaller
table ranks all rows' `future_revenue` by the value alone (Spearman, top-10% share): how much of the realised revenue
the value ranks without a churn probability. Means over cutoffs, and ratios to `history` measured on the same rows,
are printed and written into docs/benchmarks.md between the value markers, with the date, commit and machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from quality import DATASETS, _available  # benchmarks/ is on sys.path when this file is run as a script
from record import provenance, write_section
from scipy.stats import spearmanr

from pipeline.build import build_snapshots, data_span, labelable_cutoffs, rollup
from pipeline.config import Params, load_params
from pipeline.engine import connect, read_events
from pipeline.ingest import ingest
from pipeline.paths import Paths
from pipeline.synthetic import write_shop
from pipeline.value import METHODS, expected_value

REPO = Path(__file__).resolve().parents[1]
REFERENCE = "history"
TOP = 0.1
METRICS = ("mae", "rmse", "spearman", "top10_capture")
ALL_ROWS = ("spearman", "top10_capture")  # the second table: the value alone against every row's future revenue
BETTER = {"mae": "lower", "rmse": "lower", "spearman": "higher", "top10_capture": "higher", "bias": "closer to 1"}


class _Fallbacks(logging.Handler):
    """Counts the warnings pipeline.value logs when it falls back to `history`."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def value_metrics(predicted: np.ndarray, realised: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, Spearman, the share of realised revenue held by the top 10% by prediction, total ratio (bias)."""
    err = predicted - realised
    k = max(1, round(TOP * len(predicted)))
    top = np.argsort(-predicted, kind="stable")[:k]  # ties keep the rows' (user_id) order
    total = realised.sum()
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "spearman": float(spearmanr(predicted, realised).statistic),
        "top10_capture": float(realised[top].sum() / total) if total > 0 else float("nan"),
        "bias": float(predicted.sum() / total) if total > 0 else float("nan"),
    }


def labelled_snapshots(params: Params, root: Path) -> pd.DataFrame:
    """Labelled snapshots (with future_revenue) from the project's generator, ingest and snapshot builder."""
    paths = Paths(root)
    if params.data.source == "synthetic":
        write_shop(params.generate, paths.raw_events, paths.truth)
    ingest(params.data, paths.raw_events, paths.events, paths.rejects, paths.metrics("ingest"))
    con = connect(params)
    rolled = rollup(read_events(con, paths.events))
    first, end = data_span(con, rolled)
    cutoffs = labelable_cutoffs(first, end, params.features, params.labels)
    return build_snapshots(con, rolled, cutoffs, params, labelled=True)


def backtest(snap: pd.DataFrame, horizon_days: int, n_cutoffs: int, step_weeks: int) -> tuple[pd.DataFrame, dict]:
    """Metrics per (cutoff, method, rows) on cutoffs `step_weeks` apart, ending at the last labelable one.

    `rows` is "retained" (the target of the value if retained: `churned == 0`) or "all" (the whole population).
    """
    cutoffs = sorted(snap["cutoff"].unique())[::-1][:: max(1, step_weeks)][:n_cutoffs][::-1]
    records, info = [], {"cutoffs": cutoffs, "seconds": dict.fromkeys(METHODS, 0.0), "fallbacks": 0}
    handler = _Fallbacks()
    logging.getLogger("pipeline.value").addHandler(handler)
    try:
        for cutoff in cutoffs:
            rows = snap[snap["cutoff"] == cutoff].reset_index(drop=True)
            realised = rows["future_revenue"].to_numpy(float)
            retained = (rows["churned"] == 0).to_numpy()
            for method in METHODS:
                t0 = time.perf_counter()
                predicted = expected_value(rows, horizon_days, method)  # fitted on the whole population
                info["seconds"][method] += time.perf_counter() - t0
                for scope, sel in (("retained", retained), ("all", np.ones(len(rows), dtype=bool))):
                    records.append(
                        {
                            "cutoff": cutoff,
                            "method": method,
                            "rows": scope,
                            "users": int(sel.sum()),
                            "future": realised[sel].mean(),
                            **value_metrics(predicted[sel], realised[sel]),
                        }
                    )
    finally:
        logging.getLogger("pipeline.value").removeHandler(handler)
    info["fallbacks"] = handler.count
    return pd.DataFrame.from_records(records), info


def _table(name: str, per_cutoff: pd.DataFrame, info: dict, horizon_days: int, seconds: float) -> str:
    retained = per_cutoff[per_cutoff["rows"] == "retained"]
    everyone = per_cutoff[per_cutoff["rows"] == "all"]
    means = retained.groupby("method")[[*METRICS, "bias"]].mean().reindex(list(METHODS))
    ratios = means / means.loc[REFERENCE]
    cutoffs = info["cutoffs"]
    users = everyone.groupby("cutoff")["users"].first()
    kept = retained.groupby("cutoff")["users"].first()
    lines = [
        f"#### {name}: {len(cutoffs)} cutoffs {cutoffs[0]} .. {cutoffs[-1]}, horizon {horizon_days} days, "
        f"{users.mean():,.0f} users per cutoff of whom {kept.mean():,.0f} retained ({(kept / users).mean():.0%}), "
        f"mean future revenue {retained['future'].mean():,.2f} per retained user and "
        f"{everyone['future'].mean():,.2f} per user (run took {seconds:.0f} s; bgnbd_gg fell back to history "
        f"at {info['fallbacks']} cutoffs)",
        "",
        "Retained users (`churned == 0`): the value if retained against their realised revenue.",
        "",
        "| method | "
        + " | ".join(METRICS)
        + " | "
        + " | ".join(f"{m} / {REFERENCE}" for m in METRICS)
        + " | bias | s |",
        "|---" * (2 * len(METRICS) + 3) + "|",
    ]
    for method in METHODS:
        cells = [f"{means.loc[method, m]:,.3f}" for m in METRICS] + [f"{ratios.loc[method, m]:.3f}" for m in METRICS]
        cells += [f"{means.loc[method, 'bias']:.3f}", f"{info['seconds'][method]:.2f}"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    every = everyone.groupby("method")[list(ALL_ROWS)].mean().reindex(list(METHODS))
    every_ratios = every / every.loc[REFERENCE]
    lines += [
        "",
        "All users: the value alone (no churn probability) ranking everyone's realised revenue.",
        "",
        "| method | " + " | ".join(ALL_ROWS) + " | " + " | ".join(f"{m} / {REFERENCE}" for m in ALL_ROWS) + " |",
        "|---" * (2 * len(ALL_ROWS) + 1) + "|",
    ]
    for method in METHODS:
        cells = [f"{v:.3f}" for v in (*every.loc[method], *every_ratios.loc[method])]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the benchmark, print and record its tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--cutoffs", type=int, default=6, help="test cutoffs per dataset")
    ap.add_argument("--step", type=int, default=4, help="weeks between test cutoffs")
    ap.add_argument("--keep", type=Path, help="keep every dataset's stage outputs under this directory")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    os.chdir(REPO)  # configs resolve data paths relative to the repository root
    command = f"python benchmarks/value.py --datasets {args.datasets} --cutoffs {args.cutoffs} --step {args.step}"
    header = (
        f"### Value (`{command}`): {provenance()}\n\n"
        "Expected value over the horizon if retained (`pipeline/value.py`), predicted for every user of the "
        "population, against the revenue each retained user (`churned == 0`) really generated in "
        "[cutoff, cutoff + horizon) (`future_revenue`), mean over cutoffs "
        f"{args.step} weeks apart. Better: {', '.join(f'{m} {b}' for m, b in BETTER.items())}; "
        "`top10_capture` is the share of the realised revenue held by the top 10% by predicted value; `bias` is "
        "total predicted / total realised revenue. "
        f"Ratios are to `{REFERENCE}` on the same rows; `s` is the method's total time over the cutoffs. "
        "Where churn means no purchase in the horizon (Online Retail, CDNOW), every retained user bought, so the "
        "target is revenue given at least one order, above the value if alive: that pushes every method's bias down "
        "there. The second table ranks all users' realised revenue by the value alone, which is not "
        "what the value is for (the churn probability carries the risk) but shows how much the methods lean on "
        "recency.\n"
    )
    sections = [header]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for name in args.datasets.split(","):
            config, requirement = DATASETS[name]
            if not _available(requirement):
                sections.append(f"#### {name}: skipped ({requirement} not available)\n")
                print(sections[-1])
                continue
            t0 = time.perf_counter()
            params = load_params(config)
            snap = labelled_snapshots(params, root / name)
            per_cutoff, info = backtest(snap, params.labels.horizon_days, args.cutoffs, args.step)
            sections.append(_table(name, per_cutoff, info, params.labels.horizon_days, time.perf_counter() - t0))
            print(sections[-1])
    if args.no_write:
        return
    write_section("value", "\n".join(sections))


if __name__ == "__main__":
    main()
