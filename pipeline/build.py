"""Build labelled training snapshots and unlabelled scoring snapshots with the same feature code."""

from __future__ import annotations

import datetime as dt

import ibis
import pandas as pd
from ibis.backends import BaseBackend
from ibis.expr.types import Table

from features.labels import churn_labels, future_revenue, population
from features.rollup import user_day_rollup
from features.windows import EPOCH, cutoff_table, snapshot_features
from pipeline.config import FeatureParams, LabelParams, Params
from pipeline.errors import WinbackError


class ScheduleError(WinbackError, ValueError):
    """The data span cannot support the requested cutoffs; the message says which param to change."""


def data_span(con: BaseBackend, rolled: Table) -> tuple[dt.date, dt.date]:
    """(first event day, end of data) from the user-day rollup; end of data is midnight UTC after the last event."""
    lo, hi = con.execute(rolled.aggregate(lo=rolled.d.min(), hi=rolled.d.max())).iloc[0]
    if pd.isna(lo):
        raise ScheduleError("the ingested event table is empty: check data.source and the ingest rejects")
    return EPOCH + dt.timedelta(days=int(lo)), EPOCH + dt.timedelta(days=int(hi) + 1)


def labelable_cutoffs(first_day: dt.date, data_end: dt.date, fp: FeatureParams, lp: LabelParams) -> list[dt.date]:
    """Cutoffs every `frequency_days`, anchored on the last labelable one (cutoff + horizon <= end of data)."""
    last = data_end - dt.timedelta(days=lp.horizon_days)
    if fp.last_cutoff is not None:
        last = min(last, fp.last_cutoff)
    first = fp.first_cutoff or first_day + dt.timedelta(days=max(fp.windows))
    out = []
    c = last
    while c >= first:
        out.append(c)
        c -= dt.timedelta(days=fp.frequency_days)
    if not out:
        raise ScheduleError(
            f"no labelable cutoff between {first} and {last} (data {first_day}..{data_end}, "
            f"horizon {lp.horizon_days} days): reduce labels.horizon_days or features.first_cutoff"
        )
    return sorted(out)


def rollup(events: Table) -> Table:
    """The user-day rollup, materialised once so features and labels do not recompute it."""
    return user_day_rollup(events).cache()


def build_snapshots(
    con: BaseBackend, rolled: Table, cutoffs: list[dt.date], params: Params, labelled: bool = True
) -> pd.DataFrame:
    """One row per (user in the population, cutoff): features, `churned` and `future_revenue` (null if unlabelled)."""
    ct = cutoff_table(cutoffs)
    lp = params.labels
    if labelled:
        pop = churn_labels(rolled, ct, lp.lookback_days, lp.horizon_days, lp.qualifying)
        # realised revenue in the label window: a backtest target for the value estimate, never a feature
        fut = future_revenue(rolled, ct, lp.horizon_days)
        j = pop.left_join(fut, ["user_id", "cutoff_day"])
        pop = j.select(pop.user_id, pop.cutoff_day, pop.churned, future_revenue=fut.future_revenue.fill_null(0.0))
    else:
        pop = population(rolled, ct, lp.lookback_days, lp.qualifying)
        pop = pop.mutate(churned=ibis.null("int8"), future_revenue=ibis.null("float64"))
    feats = snapshot_features(rolled, pop.select("user_id", "cutoff_day"), params.features.windows)
    snap = pop.join(feats, ["user_id", "cutoff_day"])
    df = con.to_pandas(snap)
    df.insert(1, "cutoff", pd.to_datetime(df.pop("cutoff_day").astype("int64"), unit="D").dt.date)
    label = df.pop("churned")
    df["churned"] = label.astype("Int8")
    df["future_revenue"] = df.pop("future_revenue").astype("float64")
    df["user_id"] = df["user_id"].astype(str)
    return df.sort_values(["cutoff", "user_id"], kind="stable").reset_index(drop=True)
