"""Expected value over the horizon: history, recent and BG/NBD x Gamma-Gamma on small real frames and fits."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import get_args

import ibis
import numpy as np
import pandas as pd
import pytest

from features.catalogue import catalogue
from features.rollup import user_day_rollup
from pipeline.baselines import DAYS_PER_WEEK, BGNBDBaseline
from pipeline.bgnbd import expected_purchases, expected_purchases_if_alive
from pipeline.build import build_snapshots
from pipeline.config import ScoreParams, load_params
from pipeline.gammagamma import conditional_expected_spend
from pipeline.train import usable_features
from pipeline.value import METHODS, MIN_REPEATERS, expected_value, fit_spend, history_value, spend_history
from tests.conftest import random_events

HORIZON = 60
CUTOFF = dt.date(2024, 6, 1)


def _user(
    uid: str, order_days: int, first: float, last: float, revenue: float, tenure: float | None = None
) -> dict[str, object]:
    """One snapshot row with the columns the value methods read (days are days before the cutoff)."""
    bought = order_days > 0
    return {
        "user_id": uid,
        "cutoff": CUTOFF,
        "purchase_days_total": float(order_days),
        "orders_total": float(order_days),
        "days_since_first_purchase": first if bought else np.nan,
        "days_since_last_purchase": last if bought else np.nan,
        "revenue_total": revenue,
        "revenue_30d": 0.0,
        "revenue_90d": revenue if bought and last <= 90 else 0.0,
        "tenure_days": tenure if tenure is not None else (first if bought else 30.0),
    }


def population(n: int = 300, seed: int = 5) -> pd.DataFrame:
    """Snapshot rows of a simulated shop: Poisson order days with dropout, Gamma spend per order day."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        age = float(rng.integers(30, 400))
        rate, spend = rng.gamma(1.5, 1 / 40), rng.gamma(4.0, 10.0)  # order days per day, mean spend per day
        days = np.sort(rng.uniform(0, age, 1 + rng.poisson(rate * age * rng.uniform(0.2, 1.0))))
        amounts = rng.gamma(5.0, spend / 5.0, days.size)
        rows.append(_user(f"u{i:03d}", days.size, age, age - days[-1], float(amounts.sum()), age + 3))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def shop() -> pd.DataFrame:
    return population()


def test_history_is_todays_rule_and_zero_without_orders(shop: pd.DataFrame) -> None:
    rows = pd.concat([shop, pd.DataFrame([_user("never", 0, 0, 0, 0.0)])], ignore_index=True)
    out = expected_value(rows, HORIZON, "history")
    # today's rule (formerly pipeline/score.py): lifetime revenue / tenure days (at least 1) x horizon
    rule = rows["revenue_total"].clip(lower=0) / rows["tenure_days"].clip(lower=1) * HORIZON
    np.testing.assert_allclose(out, rule.to_numpy(), rtol=1e-12)
    assert out[-1] == 0.0


def test_recent_scales_the_longest_revenue_window(shop: pd.DataFrame) -> None:
    out = expected_value(shop, HORIZON, "recent")
    np.testing.assert_allclose(out, shop["revenue_90d"].to_numpy() / 90 * HORIZON)
    with pytest.raises(ValueError, match="revenue_"):
        expected_value(shop.drop(columns=["revenue_30d", "revenue_90d"]), HORIZON, "recent")


def test_bgnbd_gg_values_frequent_big_spenders_higher(shop: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    probes = pd.DataFrame(
        [
            _user("frequent_big", 12, 200, 5, 12 * 80.0),
            _user("rare_small", 2, 200, 5, 2 * 15.0),
            _user("frequent_small", 12, 200, 5, 12 * 15.0),
            _user("lapsed_big", 12, 200, 150, 12 * 80.0),
        ]
    )
    rows = pd.concat([shop, probes], ignore_index=True)
    with caplog.at_level(logging.WARNING, logger="pipeline.value"):
        out = pd.Series(expected_value(rows, HORIZON, "bgnbd_gg"), index=rows["user_id"])
    assert not caplog.records  # a real fit, no fallback
    assert np.isfinite(out).all() and (out >= 0).all()
    assert out["frequent_big"] > out["frequent_small"] > out["rare_small"]
    # the value if retained: a long silence makes churn likely (the churn probability's job) but, given the user
    # is still alive, their order rate depends on the order count and age only; no second discount for the risk
    assert out["lapsed_big"] == pytest.approx(out["frequent_big"], rel=1e-12)


def test_bgnbd_gg_is_orders_if_alive_times_spend(shop: pd.DataFrame) -> None:
    bought, x, t_x, T = BGNBDBaseline._history(shop)
    assert bought.all()
    n_orders, mean_spend = spend_history(shop)
    purchases = BGNBDBaseline._fit(x, t_x, T)
    spend = conditional_expected_spend(fit_spend(n_orders, mean_spend), n_orders, mean_spend)
    horizon = HORIZON / DAYS_PER_WEEK
    out = expected_value(shop, HORIZON, "bgnbd_gg")
    np.testing.assert_allclose(out, expected_purchases_if_alive(purchases, horizon, x, t_x, T) * spend, rtol=1e-12)
    # not the unconditional expectation, which discounts P(alive) once more (equal here only where P(alive) ~ 1)
    unconditional = expected_purchases(purchases, horizon, x, t_x, T) * spend
    assert (out >= unconditional * (1 - 1e-12)).all()


def test_bgnbd_gg_never_buyers_and_non_positive_revenue(shop: pd.DataFrame) -> None:
    extra = pd.DataFrame(
        [
            _user("new_visitor", 0, 0, 0, 0.0, tenure=5.0),
            _user("old_visitor", 0, 0, 0, 0.0, tenure=300.0),
            _user("free_orders", 3, 100, 10, 0.0),
            _user("refunded", 3, 100, 10, -50.0),
        ]
    )
    rows = pd.concat([shop, extra], ignore_index=True)
    out = pd.Series(expected_value(rows, HORIZON, "bgnbd_gg"), index=rows["user_id"])
    assert np.isfinite(out).all() and (out >= 0).all()
    # never ordered: a population-level value that fades the longer they have been around without ordering
    assert out["new_visitor"] > out["old_visitor"] > 0
    # no positive spend of their own: shrunk towards the population mean spend, like a zero-spend history
    assert out["free_orders"] == pytest.approx(out["refunded"])
    assert history_value(rows, HORIZON)[-1] == 0.0


def test_tiny_population_falls_back_to_history(caplog: pytest.LogCaptureFixture) -> None:
    rows = pd.DataFrame([_user("a", 3, 100, 10, 90.0), _user("b", 1, 50, 50, 20.0), _user("c", 0, 0, 0, 0.0)])
    with caplog.at_level(logging.WARNING, logger="pipeline.value"):
        out = expected_value(rows, HORIZON, "bgnbd_gg")
    np.testing.assert_array_equal(out, history_value(rows, HORIZON))
    assert "using 'history'" in caplog.text and f"fewer than the {MIN_REPEATERS}" in caplog.text
    assert expected_value(rows.iloc[:0], HORIZON, "bgnbd_gg").shape == (0,)


def test_bgnbd_gg_is_deterministic_order_free_and_fitted_per_cutoff(shop: pd.DataFrame) -> None:
    first = expected_value(shop, HORIZON, "bgnbd_gg")
    np.testing.assert_array_equal(first, expected_value(shop, HORIZON, "bgnbd_gg"))
    shuffled = shop.sample(frac=1.0, random_state=1)
    np.testing.assert_allclose(expected_value(shuffled, HORIZON, "bgnbd_gg"), first[shuffled.index], rtol=1e-6)
    # a second cutoff's population is fitted on its own: the first cutoff's values do not move
    later = population(n=200, seed=9).assign(cutoff=CUTOFF + dt.timedelta(days=7))
    both = expected_value(pd.concat([later, shop], ignore_index=True), HORIZON, "bgnbd_gg")
    np.testing.assert_allclose(both[len(later) :], first, rtol=1e-9)


def test_unknown_method_is_rejected(shop: pd.DataFrame) -> None:
    assert set(METHODS) == {"history", "recent", "bgnbd_gg"}
    with pytest.raises(ValueError, match="unknown value method"):
        expected_value(shop, HORIZON, "oracle")


def test_future_revenue_is_a_label_never_a_feature(con, params) -> None:
    rolled = user_day_rollup(ibis.memtable(random_events(n_users=30, days=200, seed=2)))
    cutoffs = [dt.date(2024, 5, 1), dt.date(2024, 5, 29)]
    snap = build_snapshots(con, rolled, cutoffs, params, labelled=True)
    assert snap["future_revenue"].notna().all() and (snap["future_revenue"] > 0).any()
    candidates = [f.name for f in catalogue(params.features.windows)]
    assert "future_revenue" not in candidates
    assert "future_revenue" not in usable_features(snap, candidates)
    unlabelled = build_snapshots(con, rolled, cutoffs[-1:], params, labelled=False)
    assert unlabelled["future_revenue"].isna().all() and unlabelled["churned"].isna().all()


def test_params_offer_exactly_the_value_methods() -> None:
    field = ScoreParams.model_fields["value_model"]
    assert get_args(field.annotation) == METHODS and field.default in METHODS
    assert load_params(Path(__file__).resolve().parents[2] / "params.yaml").score.value_model == field.default
