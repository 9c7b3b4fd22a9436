"""Explanation fidelity benchmark on the synthetic shop (issue 4: reason_1 names the planted cause).

Usage: python benchmarks/fidelity.py [--users 5000] [--dates 4] [--keep DIR]
Runs the whole pipeline on the built-in shop, then at the last `--dates` labelable cutoffs (four
weeks apart) scores the population with the trained model and, among high-risk users who churned
from a planted cause, counts how often the family of reason_1 is that cause. The reference measured
in the same run is the family of the single largest SHAP contribution among explainable features
(no driver/state distinction, no evidence rule). Writes docs/benchmarks.md between the fidelity
markers, with the date, commit and machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from record import provenance, write_section

from features.catalogue import catalogue
from pipeline import tracking
from pipeline.build import build_snapshots, scoring_rollup
from pipeline.config import load_params
from pipeline.engine import connect, read_events
from pipeline.explain import shap_values
from pipeline.fidelity import explanation_fidelity, fidelity_at
from pipeline.paths import Paths
from pipeline.run import params_for_output, run_all
from pipeline.train import inner_booster, matrix, model_feature_names

REPO = Path(__file__).resolve().parents[1]
CAUSES = ["engagement", "logistics", "promotion", "satisfaction", "service"]


def top_shap_family(model, params, paths: Paths, as_of: dt.date) -> dict:
    """The reference: reason_1 = the explainable feature with the largest SHAP contribution."""
    con = connect(params)
    rows = build_snapshots(
        con, scoring_rollup(read_events(con, paths.events), as_of, params), [as_of], params, labelled=True
    )
    features = model_feature_names(model)
    X = matrix(rows, features)
    contrib = shap_values(inner_booster(model), X)
    cat = {f.name: f for f in catalogue(params.features.windows)}
    explainable = np.array([cat[f].explainable for f in features])
    best = np.where(explainable, contrib, -np.inf).argmax(axis=1)
    families = np.array([cat[f].family for f in features])[best]
    p = model.predict_proba(X)[:, 1]
    tier = np.where(p >= params.score.tier_thresholds["high"], "high", "other")
    lst = pd.DataFrame({"user_id": rows["user_id"], "risk_tier": tier, "driver_family": families})
    truth = pd.read_parquet(paths.truth, columns=["user_id", "cause"]).set_index("user_id")["cause"]
    return explanation_fidelity(lst, rows.set_index("user_id")["churned"].astype(int), truth)


def main() -> None:
    """Run the benchmark, print and record its table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=None, help="synthetic users (default: params.yaml)")
    ap.add_argument("--dates", type=int, default=4)
    ap.add_argument("--keep", type=Path, help="keep the run's outputs under this directory")
    args = ap.parse_args()
    os.chdir(REPO)
    params = load_params("params.yaml")
    if args.users:
        params = params.model_copy(update={"generate": params.generate.model_copy(update={"users": args.users})})
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        run_all(params, root)
        params = params_for_output(params, root)
        paths = Paths(root)
        train = json.loads(paths.train_info.read_text())
        tracking.setup(params.mlflow)
        model = tracking.load_model(train["model_uri"])
        last = dt.date.fromisoformat(train["split"]["test"])
        lines = []
        for k in range(args.dates):
            as_of = last - dt.timedelta(days=28 * k)
            ours = fidelity_at(model, params, paths, as_of)
            ref = top_shap_family(model, params, paths, as_of)
            per_cause = " · ".join(
                f"{c} {ours['by_cause'].get(c, {}).get('matches', 0)}/{ours['by_cause'].get(c, {}).get('users', 0)}"
                for c in CAUSES
            )
            lines.append(
                f"| {as_of} | {ours['users']} | **{ours['fidelity']:.3f}** | {ref['fidelity']:.3f} | "
                f"{ours['fidelity'] / ref['fidelity']:.2f} | {per_cause} |"
            )
            print(lines[-1])
    block = (
        f"### Explanation fidelity (`python benchmarks/fidelity.py`): {provenance()} · "
        f"{params.generate.users} synthetic users\n\n"
        "High-risk users (P >= the high tier) who churned from a planted cause; fidelity = share whose "
        "`reason_1` family is that cause. Reference: the family of the largest SHAP contribution.\n\n"
        "| as_of | users judged | fidelity | reference (top SHAP) | ratio | matches per cause |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n"
    )
    write_section("fidelity", block)


if __name__ == "__main__":
    main()
