"""Label sensitivity: how the churn definition (horizon, qualifying activity) changes what can be learnt."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from features.catalogue import catalogue
from pipeline.build import build_snapshots, data_span, labelable_cutoffs, rollup
from pipeline.config import LabelParams, Params
from pipeline.engine import connect, read_events
from pipeline.errors import WinbackError
from pipeline.metrics import classification_metrics
from pipeline.paths import Paths
from pipeline.train import LABEL, fit_churn_model, matrix, rows_at


def parse_qualifying(text: str) -> str | list[str]:
    """'any' or a '+'-joined list of roles such as 'purchase' or 'purchase+cart'."""
    return "any" if text == "any" else text.split("+")


def evaluate_definition(
    con: Any, rolled: Any, first: dt.date, end: dt.date, params: Params, labels: LabelParams
) -> dict[str, Any]:
    """Base rate and out-of-time ROC-AUC / PR-AUC / ECE at the last labelable cutoff for one definition."""
    p = params.model_copy(update={"labels": labels})
    row: dict[str, Any] = {
        "horizon_days": labels.horizon_days,
        "qualifying": "+".join(labels.qualifying) if isinstance(labels.qualifying, list) else labels.qualifying,
    }
    try:
        cutoffs = labelable_cutoffs(first, end, p.features, labels)
        snap = build_snapshots(con, rolled, cutoffs, p, labelled=True)
        names = [f.name for f in catalogue(p.features.windows)]
        tm = fit_churn_model(snap, names, labels.horizon_days, p.train, p.seed, p.threads)
    except WinbackError as exc:
        return row | {"status": f"not enough history: {exc}"}
    test = rows_at(snap, tm.split.test)
    m = classification_metrics(test[LABEL].to_numpy(int), tm.model.predict_proba(matrix(test, tm.features))[:, 1])
    return row | {
        "status": "ok",
        "test_cutoff": tm.split.test.isoformat(),
        "users": m["rows"],
        "base_rate": m["base_rate"],
        "roc_auc": m["roc_auc"],
        "pr_auc": m["pr_auc"],
        "ece": m["ece"],
    }


def sweep(params: Params, paths: Paths, horizons: list[int], qualifying: list[str]) -> pd.DataFrame:
    """One row per (horizon, qualifying activity): base rate, ROC-AUC and ECE, computed the training way."""
    con = connect(params)
    events = read_events(con, paths.events)
    rolled = rollup(events)
    first, end = data_span(con, rolled)
    rows = []
    for q in qualifying:
        for h in horizons:
            labels = params.labels.model_copy(update={"horizon_days": h, "qualifying": parse_qualifying(q)})
            rows.append(
                evaluate_definition(con, rolled, first, end, params, LabelParams.model_validate(labels.model_dump()))
            )
    return pd.DataFrame(rows)
