"""QuickScorer's raw scores and probabilities equal LightGBM's bit for bit on real (tiny) models: missing values,
zeros, LightGBM's zero threshold, every missing type, best_iteration, single-leaf trees, and the fallbacks."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from pipeline import quickscorer
from tests.pipeline.tree_inputs import tree_frame, tree_probe


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    return tree_frame(n, seed)


def _probe(X: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    return tree_probe(X, 500, seed)


def _fit(n: int = 3000, seed: int = 0, **params) -> tuple[lgb.LGBMClassifier, pd.DataFrame]:
    X, y = _frame(n, seed)
    base = {"n_estimators": 30, "num_leaves": 15, "min_child_samples": 20, "learning_rate": 0.2, "verbose": -1}
    base |= {"random_state": seed, "deterministic": True, "n_jobs": 1}
    return lgb.LGBMClassifier(**(base | params)).fit(X, y), X


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal as float64 bit patterns (so -0.0 differs from 0.0, and NaN equals NaN)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool((a.view(np.int64) == b.view(np.int64)).all())


def _check(model: lgb.LGBMClassifier, X: pd.DataFrame | np.ndarray, supported: bool = True) -> None:
    """predict_scores equals LightGBM's raw score and P(class 1) bit for bit, through the kernel when supported."""
    assert (quickscorer.for_model(model) is not None) is supported
    raw, proba = quickscorer.predict_scores(model, X)
    assert _same_bits(raw, model.predict_proba(X, raw_score=True))
    assert _same_bits(proba, model.predict_proba(X)[:, 1])


# the reference: LightGBM's sklearn wrapper warns on numpy input to a model fitted on a DataFrame
@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"num_leaves": 64, "min_child_samples": 5, "n_estimators": 15},  # one full uint64 word per tree
        {"zero_as_missing": True},  # missing type Zero: 0 and NaN take the default direction
        {"use_missing": False},  # missing type None: NaN reads as 0.0
        {"max_depth": 2, "n_estimators": 60},
        {"max_bin": 7, "min_child_samples": 2},  # coarse thresholds: many rows exactly on one
    ],
    ids=["default", "64-leaves", "zero-as-missing", "no-missing", "shallow", "coarse-bins"],
)
def test_equals_lightgbm_bit_for_bit(params: dict) -> None:
    model, X = _fit(**params)
    probe = _probe(X)
    _check(model, probe)
    _check(model, probe.to_numpy())  # row-major numpy
    _check(model, np.asfortranarray(probe.to_numpy()))
    _check(model, probe.astype("float32"))  # LightGBM reads float32 as is: widening is exact


def test_thresholds_hit_exactly_and_every_split_value() -> None:
    model, X = _fit()
    # each split threshold itself and its neighbours: x <= threshold must go left, the next double right
    dump = model.booster_.dump_model()["tree_info"]
    thresholds: dict[int, list[float]] = {}

    def walk(node: dict) -> None:
        if "split_feature" in node:
            thresholds.setdefault(node["split_feature"], []).append(node["threshold"])
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in dump:
        walk(tree["tree_structure"])
    rows = []
    for f, ts in thresholds.items():
        for t in ts:
            for v in (t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf)):
                row = X.iloc[len(rows) % len(X)].to_numpy().copy()
                row[f] = v
                rows.append(row)
    _check(model, pd.DataFrame(rows, columns=X.columns))


def test_best_iteration_and_single_leaf_trees() -> None:
    X, y = _frame(3000, 0)
    Xv, yv = _frame(1000, 1)
    model = lgb.LGBMClassifier(n_estimators=200, learning_rate=0.3, verbose=-1, n_jobs=1, random_state=0)
    model.fit(X, y, eval_X=(Xv,), eval_y=(yv,), callbacks=[lgb.early_stopping(5, verbose=False)])
    assert 0 < model.booster_.best_iteration < 200
    _check(model, _probe(X))
    # no split can pay for itself: every tree is one leaf (the constant log-odds)
    stumps, X = _fit(min_split_gain=1e9)
    assert stumps.booster_.dump_model()["tree_info"][0]["num_leaves"] == 1
    _check(stumps, _probe(X))


def test_fallbacks_still_equal_lightgbm() -> None:
    # more leaves than one word holds
    model, X = _fit(num_leaves=80, min_child_samples=5, n_estimators=5)
    assert max(t["num_leaves"] for t in model.booster_.dump_model()["tree_info"]) > quickscorer.MAX_LEAVES
    _check(model, _probe(X), supported=False)
    # a sigmoid other than 1: the model text rounds it to 6 digits, so LightGBM computes the probability
    model, X = _fit(sigmoid=0.123456789)
    _check(model, _probe(X), supported=False)
    # pandas categoricals
    model, X = _fit()
    Xc = X.assign(level=X["level"].astype("category"))
    cat = lgb.LGBMClassifier(n_estimators=10, verbose=-1, n_jobs=1).fit(Xc, (X["trend"] > 0).astype(int))
    _check(cat, Xc, supported=False)
    # input LightGBM converts its own way (ints become float32): through LightGBM, with a supported model
    ints = _probe(X).replace([np.inf, -np.inf], np.nan).fillna(0).round().astype("int64")
    _check(model, ints)


def test_cache_rebuilds_for_a_retrained_booster() -> None:
    X, y = _frame(3000, 0)
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=5, keep_training_booster=True)
    first = quickscorer.for_model(booster)
    assert first is not None and quickscorer.for_model(booster) is first  # built once per booster
    booster.update()  # one more iteration in place
    again = quickscorer.for_model(booster)
    assert again is not first
    probe = _probe(X)
    raw, proba = again.scores(probe)
    assert _same_bits(raw, booster.predict(probe, raw_score=True))
    assert _same_bits(proba, booster.predict(probe))
