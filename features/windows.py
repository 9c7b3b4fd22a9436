"""Point-in-time window aggregates per (user, cutoff) from the user-day rollup."""

from __future__ import annotations

import datetime as dt

import ibis
from ibis.expr.types import Table

from features.catalogue import SnapshotContext, catalogue

EPOCH = dt.date(1970, 1, 1)


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01: the integer day used by the rollup (midnight UTC boundaries)."""
    return (day - EPOCH).days


def cutoff_table(cutoffs: list[dt.date]) -> Table:
    """An in-memory table of cutoffs (midnight UTC) as integer day numbers."""
    days = sorted({day_number(c) for c in cutoffs})
    return ibis.memtable({"cutoff_day": days}, schema={"cutoff_day": "int64"})


def snapshot_features(rollup: Table, cutoffs: Table, windows: list[int]) -> Table:
    """Every catalogue feature for every (user, cutoff), from rollup days strictly before the cutoff.

    One inequality join over the rollup serves all cutoffs; a feature only ever sees rows with
    d < cutoff_day, i.e. events with event_time < cutoff midnight UTC.
    """
    rows = rollup.join(cutoffs, rollup.d < cutoffs.cutoff_day)
    rows = rows.mutate(age=rows.cutoff_day - rows.d)
    ctx = SnapshotContext(rows)
    aggs = {f.name: f.compute(ctx) for f in catalogue(windows)}
    return rows.group_by(["user_id", "cutoff_day"]).aggregate(**aggs)
