"""FastTreeShap equals LightGBM's pred_contrib on real (tiny) models: missing values, zeros, repeated features,
best_iteration, and the pred_contrib fallbacks for what the tables cannot represent."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from pipeline import treeshap
from pipeline.treeshap import FastTreeShap
from tests.pipeline.tree_inputs import tree_frame, tree_probe

ATOL = 1e-9


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    return tree_frame(n, seed)


def _probe(X: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    return tree_probe(X, 300, seed)


def _fit(params: dict, n: int = 3000, seed: int = 0, rounds: int = 25) -> tuple[lgb.Booster, pd.DataFrame]:
    X, y = _frame(n, seed)
    base = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 20, "learning_rate": 0.2, "verbose": -1}
    base.update({"seed": seed, "deterministic": True, "num_threads": 1})
    return lgb.train({**base, **params}, lgb.Dataset(X, y), num_boost_round=rounds), X


def _check(booster: lgb.Booster, X: pd.DataFrame | np.ndarray, **kw) -> FastTreeShap:
    """Ours against pred_contrib (bias column dropped) and additivity against the raw score."""
    ref = np.asarray(booster.predict(X, pred_contrib=True))
    fts = FastTreeShap(booster, **kw)
    ours = fts.shap_values(X)
    assert ours.shape == (len(X), booster.num_feature())
    np.testing.assert_allclose(ours, ref[:, :-1], rtol=0, atol=ATOL)
    np.testing.assert_allclose(fts.expected_value, ref[:, -1], rtol=0, atol=ATOL)
    np.testing.assert_allclose(ours.sum(axis=1) + fts.expected_value, booster.predict(X, raw_score=True), atol=ATOL)
    return fts


def _nodes(booster: lgb.Booster) -> list[dict]:
    out = []

    def walk(node: dict) -> None:
        if "split_index" in node:
            out.append(node)
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return out


@pytest.fixture(scope="module")
def nan_model() -> tuple[lgb.Booster, pd.DataFrame]:
    return _fit({})


@pytest.mark.parametrize("unit_bits", [0, 4, treeshap.MAX_UNIT_BITS])
def test_matches_pred_contrib_with_nan_zero_and_tiny_values(nan_model, unit_bits: int) -> None:
    booster, X = nan_model
    assert {n["missing_type"] for n in _nodes(booster)} >= {"NaN"}
    # 0: one table per leaf; 4: sibling leaves and small subtrees merged; default: whole small trees merged
    fts = _check(booster, _probe(X), max_unit_bits=unit_bits)
    assert fts.whole_fallback is None and not fts.fallback_trees


def test_numpy_float32_and_two_threads_agree(nan_model) -> None:
    booster, X = nan_model
    probe = _probe(X)
    _check(booster, probe.to_numpy())
    _check(booster, probe.astype("float32"))
    one = FastTreeShap(booster, threads=1).shap_values(probe)
    np.testing.assert_allclose(FastTreeShap(booster, threads=2).shap_values(probe), one, rtol=0, atol=1e-12)


def test_zero_as_missing() -> None:
    booster, X = _fit({"zero_as_missing": True})
    assert "Zero" in {n["missing_type"] for n in _nodes(booster)}
    _check(booster, _probe(X))


def test_missing_values_off_reads_nan_as_zero() -> None:
    booster, X = _fit({"use_missing": False})
    assert {n["missing_type"] for n in _nodes(booster)} == {"None"}
    _check(booster, _probe(X))


def test_features_repeated_on_a_path() -> None:
    # two features and deep trees: paths split on the same feature again and again
    X2 = _frame(3000, 2)[0][["days", "trend"]]
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 31, "min_data_in_leaf": 5, "verbose": -1, "num_threads": 1},
        lgb.Dataset(X2, (np.nan_to_num(X2["days"]) % 17 < 8).astype(int)),
        num_boost_round=10,
    )
    depth = max(len(p) for p in _paths(booster))
    distinct = max(len(set(p)) for p in _paths(booster))
    assert depth > distinct == 2
    _check(booster, _probe(X2))


def _paths(booster: lgb.Booster) -> list[list[int]]:
    """The features split on along every root->leaf path."""
    out: list[list[int]] = []

    def walk(node: dict, path: list[int]) -> None:
        if "leaf_index" in node:
            out.append(path)
            return
        walk(node["left_child"], [*path, node["split_feature"]])
        walk(node["right_child"], [*path, node["split_feature"]])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"], [])
    return out


def test_best_iteration_is_used_like_predict() -> None:
    X, y = _frame(3000, 3)
    Xv, yv = _frame(1000, 4)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 15, "learning_rate": 0.5, "verbose": -1, "num_threads": 1},
        lgb.Dataset(X, y),
        num_boost_round=200,
        valid_sets=[lgb.Dataset(Xv, yv)],
        callbacks=[lgb.early_stopping(5, verbose=False)],
        keep_training_booster=True,
    )
    assert 0 < booster.best_iteration < booster.current_iteration()
    fts = _check(booster, _probe(X))
    assert fts.n_trees == booster.best_iteration


def test_scikit_learn_wrapper_and_explain_shap_values(nan_model) -> None:
    from pipeline.explain import shap_values  # imports shap and matplotlib: only this test pays for them

    _, X = nan_model
    _, y = _frame(3000, 0)
    clf = lgb.LGBMClassifier(n_estimators=20, num_leaves=15, min_child_samples=20, verbose=-1, n_jobs=1).fit(X, y)
    ref = clf.booster_.predict(X, pred_contrib=True)[:, :-1]
    np.testing.assert_allclose(shap_values(clf, X), ref, rtol=0, atol=ATOL)
    # the tables are built once per booster
    assert treeshap.for_model(clf) is treeshap.for_model(clf.booster_)


def test_cache_rebuilds_after_training_more() -> None:
    X, y = _frame(3000, 0)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), 5, keep_training_booster=True
    )
    first = treeshap.for_model(booster)
    assert treeshap.for_model(booster) is first
    booster.update()
    second = treeshap.for_model(booster)
    assert second is not first and second.n_trees == 6
    np.testing.assert_allclose(
        treeshap.shap_values(booster, X), booster.predict(X, pred_contrib=True)[:, :-1], rtol=0, atol=ATOL
    )


def test_categorical_splits_fall_back_per_tree() -> None:
    X, y = _frame(3000, 5)
    X = X.assign(level=X["level"].astype(int))
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "num_threads": 1, "min_data_per_group": 10},
        lgb.Dataset(X, y, categorical_feature=["level"]),
        num_boost_round=15,
    )
    assert any(n["decision_type"] == "==" for n in _nodes(booster))
    fts = _check(booster, _probe(X))
    assert fts.fallback_trees and set(fts.fallback_trees.values()) == {"categorical split"}
    assert len(fts.tree_internal) > 0, "trees without categorical splits still use the tables"


def test_pandas_categorical_falls_back_for_the_whole_model() -> None:
    X, y = _frame(2000, 6)
    X = X.assign(level=pd.Categorical(X["level"].astype(int)))
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), 10)
    fts = _check(booster, X)
    assert fts.whole_fallback == "pandas categorical features"


def test_paths_over_the_limit_and_the_memory_budget_fall_back() -> None:
    booster, X = _fit({"num_leaves": 40, "min_data_in_leaf": 5}, rounds=8)
    assert max(len(set(p)) for p in _paths(booster)) > 4
    fts = _check(booster, _probe(X), max_path_features=4)
    assert "distinct features on a path" in " ".join(fts.fallback_trees.values())
    assert len(fts.tree_internal) > 0 or len(fts.fallback_trees) == booster.num_trees()
    fts = _check(booster, _probe(X), max_table_bytes=0)
    assert set(fts.fallback_trees.values()) == {"over the table memory budget"} and len(fts.table) == 0


def test_single_leaf_trees_only_move_the_bias() -> None:
    X, y = _frame(500, 7)
    booster = lgb.train(
        {"objective": "binary", "min_gain_to_split": 1e9, "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), 3
    )
    fts = _check(booster, X)
    assert not fts.shap_values(X).any()


def test_multiclass_is_refused() -> None:
    X, y = _frame(600, 8)
    booster = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1},
        lgb.Dataset(X, y + (X["level"].to_numpy() > 2)),
        3,
    )
    with pytest.raises(ValueError, match="multiclass"):
        FastTreeShap(booster)


def test_wrong_width_is_refused(nan_model) -> None:
    booster, X = nan_model
    with pytest.raises(ValueError, match="features"):
        FastTreeShap(booster).shap_values(X.iloc[:, :3])
    assert FastTreeShap(booster).shap_values(X.iloc[:0]).shape == (0, X.shape[1])
