"""Baselines produce sensible churn probabilities from the snapshot features."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.baselines import BGNBDBaseline, RecencyBaseline, RFMLogisticBaseline, all_baselines
from pipeline.train import LABEL


def _split(snap: pd.DataFrame):
    cutoffs = sorted(snap["cutoff"].unique())
    train = snap[snap["cutoff"].isin(cutoffs[:20])]
    test = snap[snap["cutoff"] == cutoffs[-1]]
    return train, test


def test_every_baseline_gives_probabilities(shop_snapshots) -> None:
    params, snap, _ = shop_snapshots
    train, test = _split(snap)
    for b in all_baselines(params.labels.horizon_days):
        p = b.fit(train, train[LABEL].to_numpy(int)).predict_proba(test)
        assert p.shape == (len(test),)
        assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all(), b.name


def test_recency_baseline_is_monotone_in_days_since_last_activity(shop_snapshots) -> None:
    _, snap, _ = shop_snapshots
    train, _ = _split(snap)
    b = RecencyBaseline().fit(train, train[LABEL].to_numpy(int))
    probe = pd.DataFrame({"days_since_last_activity": [0.0, 5.0, 30.0, 80.0]})
    assert np.all(np.diff(b.predict_proba(probe)) > 0)


def test_bgnbd_baseline_risk_rises_with_time_since_last_order(shop_snapshots) -> None:
    _, snap, _ = shop_snapshots
    train, _ = _split(snap)
    b = BGNBDBaseline(horizon_days=60).fit(train, train[LABEL].to_numpy(int))
    probe = pd.DataFrame(
        {
            "purchase_days_total": [5.0] * 3,
            "days_since_first_purchase": [200.0] * 3,
            "days_since_last_purchase": [5.0, 60.0, 150.0],
        }
    )
    p = b.predict_proba(probe)
    assert np.all(np.diff(p) > 0)


def test_rfm_logistic_handles_never_buyers(shop_snapshots) -> None:
    _, snap, _ = shop_snapshots
    train, test = _split(snap)
    b = RFMLogisticBaseline().fit(train, train[LABEL].to_numpy(int))
    never = test.assign(days_since_last_purchase=np.nan, orders_total=0.0, revenue_total=0.0)
    assert np.isfinite(b.predict_proba(never)).all()
