"""Rolling-origin backtest: every model on the same rows, recomputable metrics, no peeking ahead."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.backtest import cutoff_metrics, model_names, predict_cutoff, run_backtest, summarise
from pipeline.train import LABEL

MODELS = ["model", "baseline_recency", "baseline_rfm_score", "baseline_rfm_logistic", "baseline_bgnbd"]


@pytest.fixture(scope="module")
def backtest(shop_snapshots):
    params, snap, _ = shop_snapshots
    preds, long = run_backtest(snap, params, last_model=None)
    return params, snap, preds, long


def test_predictions_hold_every_model_on_the_test_rows(backtest) -> None:
    params, snap, preds, _ = backtest
    cutoffs = sorted(snap["cutoff"].unique())[-params.evaluate.backtest_cutoffs :]
    assert sorted(preds["cutoff"].unique()) == cutoffs
    assert model_names(preds) == MODELS
    for c in cutoffs:
        expected = snap[snap["cutoff"] == c].sort_values("user_id")
        got = preds[preds["cutoff"] == c].sort_values("user_id")
        assert got["user_id"].tolist() == expected["user_id"].tolist()
        assert got[LABEL].tolist() == expected[LABEL].tolist()
    for m in MODELS:
        assert preds[f"p_{m}"].between(0, 1).all()


def test_metrics_can_be_recomputed_from_the_predictions(backtest) -> None:
    params, _, preds, long = backtest
    for c, part in preds.groupby("cutoff"):
        again = cutoff_metrics(part, params)
        for name, metrics in again.items():
            for k, v in metrics.items():
                recorded = long[(long["cutoff"] == c) & (long["model"] == name) & (long["metric"] == k)]["value"]
                assert recorded.item() == pytest.approx(v, nan_ok=True)
    summary = summarise(long)
    assert set(summary["mean"]) == set(MODELS)
    assert {
        "roc_auc",
        "pr_auc",
        "log_loss",
        "brier",
        "ece",
        "precision_at_k",
        "recall_at_k",
        "value_recall_at_k",
        "lift_top10",
    } <= set(summary["mean"]["model"])


def test_the_model_beats_recency_on_the_synthetic_shop(backtest) -> None:
    _, _, _, long = backtest
    auc = long[long["metric"] == "roc_auc"].groupby("model")["value"].mean()
    assert auc["model"] > auc["baseline_recency"]


def test_changing_later_labels_does_not_change_earlier_predictions(shop_snapshots) -> None:
    params, snap, _ = shop_snapshots
    c = sorted(snap["cutoff"].unique())[-3]
    before = predict_cutoff(snap, c, params)
    later = snap.copy()
    after_c = later["cutoff"] > c
    later.loc[after_c, LABEL] = 1 - later.loc[after_c, LABEL]
    later.loc[after_c, "orders_total"] = later.loc[after_c, "orders_total"] * 3
    np.testing.assert_array_equal(before.to_numpy(), predict_cutoff(later, c, params).to_numpy())
