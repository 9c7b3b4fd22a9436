"""Campaign measurement: interval maths against published values, the comparison tables, and a simulated
campaign on the synthetic shop whose known effect `winback measure` must recover."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipeline import io, stages
from pipeline.build import build_snapshots, rollup
from pipeline.campaign import read_list
from pipeline.cli import app
from pipeline.config import CampaignParams, GenerateParams, Params
from pipeline.engine import connect, read_events
from pipeline.errors import ExitCode
from pipeline.measure import (
    compare,
    contacts_in_window,
    effect_table,
    measure_campaign,
    newcombe_interval,
    risk_ratio_interval,
    two_proportion_p_value,
    wald_interval,
    wilson_interval,
)
from pipeline.paths import Paths
from pipeline.score import holdout_groups

runner = CliRunner()


# ------------------------------------------------------------------------------------------- maths


@pytest.mark.parametrize(("x", "n", "lo", "hi"), [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605)])
def test_wilson_interval_matches_newcombe_1998(x: int, n: int, lo: float, hi: float) -> None:
    # Newcombe (1998), Statistics in Medicine 17: 857-872, the single-proportion examples
    assert wilson_interval(x, n) == pytest.approx((lo, hi), abs=1e-4)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "lo", "hi"),
    [(56, 70, 48, 80, 0.0524, 0.3339), (9, 10, 3, 10, 0.1705, 0.8090)],
)
def test_newcombe_interval_matches_newcombe_1998(x1: int, n1: int, x2: int, n2: int, lo: float, hi: float) -> None:
    # Newcombe (1998), Statistics in Medicine 17: 873-890, Table II, method 10
    assert newcombe_interval(x1, n1, x2, n2) == pytest.approx((lo, hi), abs=1e-4)


def test_wald_ratio_and_test_against_hand_worked_values() -> None:
    # 56/70 - 48/80 = 0.2: Wald 0.2 -/+ 1.96 * sqrt(0.8 * 0.2 / 70 + 0.6 * 0.4 / 80)
    assert wald_interval(56, 70, 48, 80) == pytest.approx((0.0575, 0.3425), abs=1e-4)
    # pooled z = 0.2 / sqrt(104/150 * 46/150 * (1/70 + 1/80)) = 2.650
    assert two_proportion_p_value(56, 70, 48, 80) == pytest.approx(0.00805, abs=2e-5)
    # Katz: RR = 0.2 / 0.4 = 0.5, se(log RR) = sqrt(1/20 - 1/100 + 1/40 - 1/100) = 0.23452
    assert risk_ratio_interval(20, 100, 40, 100) == pytest.approx((0.5, 0.31576, 0.79174), abs=1e-4)
    assert np.isnan(risk_ratio_interval(0, 10, 3, 10)[0])


def test_newcombe_interval_keeps_its_coverage() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    trials = 2000
    for x1, x2 in zip(rng.binomial(150, 0.2, trials), rng.binomial(120, 0.35, trials), strict=True):
        lo, hi = newcombe_interval(int(x1), 150, int(x2), 120)
        hits += lo <= 0.2 - 0.35 <= hi
    assert 0.93 <= hits / trials <= 0.97
    # and at the boundary, where Wald collapses to a point
    assert newcombe_interval(0, 30, 0, 30)[0] < 0 < newcombe_interval(0, 30, 0, 30)[1]
    assert wald_interval(0, 30, 0, 30) == (0.0, 0.0)


def test_compare_reports_counts_rates_and_effects() -> None:
    r = compare(np.array([1] * 48 + [0] * 32), np.array([1] * 56 + [0] * 14))
    assert (r["treatment_users"], r["treatment_churned"], r["holdout_users"], r["holdout_churned"]) == (80, 48, 70, 56)
    assert r["difference"] == pytest.approx(-0.2)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((-0.3339, -0.0524), abs=1e-4)
    assert r["relative_effect"] == pytest.approx(0.6 / 0.8 - 1)
    assert r["retained_users"] == pytest.approx(16.0)
    empty = compare(np.array([1, 0]), np.array([], dtype=int))
    assert empty["difference"] is None and empty["treatment_churn_rate"] == 0.5


# ---------------------------------------------------------------------------------------- tables

AS_OF = dt.date(2026, 3, 4)


def _toy_list() -> pd.DataFrame:
    n = 8
    return pd.DataFrame(
        {
            "rank": range(1, n + 1),
            "user_id": [f"u{i}" for i in range(n)],
            "segment": ["lapsing"] * 4 + ["active"] * 4,
            "recommended_action": ["call", "email"] * 4,
            "group": ["treatment"] * 2 + ["holdout", "treatment"] * 3,
            "as_of": AS_OF.isoformat(),
        }
    )


def test_lists_without_selection_columns_select_everyone(tmp_path: Path) -> None:
    path = tmp_path / "winback.csv"
    _toy_list().to_csv(path, index=False)
    lst = read_list(path)
    assert lst["selected"].all()
    assert lst["contact"].tolist() == (lst["group"] == "treatment").tolist()
    # with the columns, contact never reaches beyond the selected treatment rows
    with_cols = _toy_list().assign(selected=[True] * 6 + [False] * 2, contact=True)
    with_cols.to_parquet(tmp_path / "winback.parquet")
    lst = read_list(tmp_path / "winback.parquet")
    assert lst["contact"].tolist() == [True, True, False, True, False, True, False, False]
    with_cols.to_csv(tmp_path / "winback.csv", index=False)  # "True" / "False" as text
    assert read_list(tmp_path / "winback.csv")[["selected", "contact"]].equals(lst[["selected", "contact"]])


def test_measure_campaign_compares_selected_rows_overall_per_action_and_segment() -> None:
    lst = _toy_list().assign(selected=[True] * 7 + [False], contact=False)
    lst = read_list_frame(lst)
    labels = pd.DataFrame({"user_id": [f"u{i}" for i in range(8)], "churned": [0, 1, 1, 0, 1, 0, 0, 1]})
    contacts = pd.DataFrame(
        {
            "user_id": ["u0", "u1", "u2", "u0"],
            "contacted_at": pd.to_datetime(
                ["2026-03-04 10:00", "2026-03-05 00:00", "2026-03-06 00:00", "2026-01-01 00:00"], utc=True
            ),
            "action": ["call"] * 4,
        }
    )
    result, table = measure_campaign(lst, labels, contacts, 60)
    o = result["overall"]
    # selected: u0..u6; treatment u0 u1 u3 u5 -> churned 0 1 0 0; holdout u2 u4 u6 -> 1 1 0
    assert (o["treatment_users"], o["treatment_churned"], o["holdout_users"], o["holdout_churned"]) == (4, 1, 3, 2)
    assert o["difference"] == pytest.approx(0.25 - 2 / 3)
    assert set(result["by_action"]) == {"call", "email"} and set(result["by_segment"]) == {"active", "lapsing"}
    assert result["by_segment"]["active"]["treatment_users"] == 1  # u5 (u7 is not selected)
    assert list(table["scope"]) == ["overall", "action", "action", "segment", "segment"]
    log = result["contact_log"]
    assert log["contacts_in_window"] == 3  # the January contact belongs to an earlier campaign
    assert log["treatment_contacted_share"] == pytest.approx(0.5)
    assert log["holdout_contacted_share"] == pytest.approx(1 / 3)
    assert log["complier_effect"] == pytest.approx(o["difference"] / (0.5 - 1 / 3))
    json.dumps(result)  # JSON-ready


def read_list_frame(lst: pd.DataFrame) -> pd.DataFrame:
    """read_list's normalisation of an in-memory list."""
    lst = lst.copy()
    lst["contact"] = lst["selected"] & (lst["group"] == "treatment")
    return lst


def test_contacts_in_window_is_as_of_to_as_of_plus_horizon() -> None:
    at = pd.to_datetime(["2026-03-03 23:59", "2026-03-04 00:00", "2026-05-02 23:59", "2026-05-03 00:00"], utc=True)
    contacts = pd.DataFrame({"user_id": list("abcd"), "contacted_at": at, "action": None})
    assert contacts_in_window(contacts, AS_OF, 60)["user_id"].tolist() == ["b", "c"]


def test_effect_table_with_one_empty_group() -> None:
    frame = pd.DataFrame(
        {"group": ["treatment"] * 3, "churned": [1, 0, 0], "recommended_action": "a", "segment": "s", "selected": True}
    )
    table = effect_table(frame)
    assert table["difference"].isna().all() and (table["treatment_users"] == 3).all()


# ------------------------------------------------------------------ a campaign on the synthetic shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Paths]:
    """A small synthetic shop, ingested, with a win-back list at AS_OF: half of every segment held out.

    The list ranks by days since last activity (any ranking will do: measurement never looks at the
    model); `selected` is its top 80%, so the last rows show that unselected rows are ignored.
    """
    root = tmp_path_factory.mktemp("campaign")
    base = Params()
    params = base.model_copy(
        update={
            "threads": 1,
            "generate": GenerateParams(users=2500, seed=7),
            "data": base.data.model_copy(update={"contacts": "synthetic"}),
        }
    )
    (root / "params.yaml").write_text(yaml.safe_dump(json.loads(params.model_dump_json())))
    paths = Paths(root)
    stages.generate(params, paths)
    stages.ingest(params, paths)
    con = connect(params)
    rows = build_snapshots(con, rollup(read_events(con, paths.events)), [AS_OF], params, labelled=False)
    p = 1 - np.exp(-rows["days_since_last_activity"].to_numpy(float) / 30)
    seg = np.select([rows["tenure_days"] < 30, rows["days_since_last_activity"] >= 30], ["new", "lapsing"], "active")
    family = np.select([rows["late_deliveries_90d"] > 0, rows["open_tickets"] > 0], ["logistics", "service"], "other")
    actions = {"logistics": "shipping voucher", "service": "care call", "other": "recommendations"}
    lst = pd.DataFrame(
        {
            "user_id": rows["user_id"],
            "churn_probability": p,
            "segment": seg,
            "recommended_action": pd.Series(family).map(actions).to_numpy(),
            "group": holdout_groups(rows["user_id"], AS_OF, 0.5, 1, seg),
            "as_of": AS_OF.isoformat(),
        }
    )
    lst = lst.sort_values(["churn_probability", "user_id"], ascending=[False, True], ignore_index=True)
    lst.insert(0, "rank", np.arange(1, len(lst) + 1))
    lst["selected"] = lst["rank"] <= int(0.8 * len(lst))
    lst["contact"] = lst["selected"] & (lst["group"] == "treatment")
    io.write_parquet(lst, paths.winback_dir(AS_OF) / "winback.parquet")
    return params, paths


def _campaign(params: Params, paths: Paths, effect: float) -> tuple[dict, dict]:
    """Simulate the campaign, re-ingest, measure through the CLI; (measure.json, campaign truth)."""
    cp = CampaignParams(list_path=str(paths.winback_dir(AS_OF) / "winback.parquet"), effect=effect)
    stages.generate(params.model_copy(update={"generate": params.generate.model_copy(update={"campaign": cp})}), paths)
    ingest = stages.ingest(params, paths)
    assert ingest["contacts"]["accepted"] == ingest["contacts"]["total"] > 100
    where = ["--params", str(paths.root / "params.yaml"), "--root", str(paths.root)]
    res = runner.invoke(app, ["measure", "--list", AS_OF.isoformat(), *where])
    assert res.exit_code == 0, res.output
    assert "treatment" in res.output and "overall" in res.output
    measured = json.loads((paths.winback_dir(AS_OF) / "measure.json").read_text())
    assert (paths.winback_dir(AS_OF) / "measure.csv").exists()
    return measured, json.loads(paths.campaign_truth.read_text())


def test_measure_recovers_a_simulated_campaign(shop: tuple[Params, Paths]) -> None:
    params, paths = shop
    measured, truth = _campaign(params, paths, effect=0.8)
    o = measured["overall"]
    true = truth["true_effect"]
    assert true < -0.1  # contacted users churn much less than they would have without the campaign
    assert o["ci_high"] < 0  # the campaign's effect is detected
    assert o["ci_low"] <= true <= o["ci_high"]  # and the interval holds the true effect
    assert o["treatment_users"] == truth["contacted"]["users"]
    assert abs(truth["selected_holdout"]["effect"]) < 0.05  # controls are not touched by the campaign
    log = measured["contact_log"]
    assert log["treatment_contacted_share"] == 1.0 and log["holdout_contacted_share"] == 0.0
    assert measured["rows"]["selected"] < measured["rows"]["list"]


def test_measure_finds_nothing_without_an_effect(shop: tuple[Params, Paths]) -> None:
    params, paths = shop
    measured, truth = _campaign(params, paths, effect=0.0)
    o = measured["overall"]
    assert truth["true_effect"] == 0.0  # no effect: the very same shop
    assert o["ci_low"] < 0 < o["ci_high"]


def test_measure_refuses_before_the_horizon_has_passed(shop: tuple[Params, Paths], tmp_path: Path) -> None:
    _, paths = shop
    lst = pd.read_parquet(paths.winback_dir(AS_OF) / "winback.parquet").assign(as_of="2026-06-01")
    io.write_parquet(lst, tmp_path / "winback.parquet")
    where = ["--params", str(paths.root / "params.yaml"), "--root", str(paths.root)]
    res = runner.invoke(app, ["measure", "--list", str(tmp_path / "winback.parquet"), *where])
    assert res.exit_code == ExitCode.INPUT
    text = " ".join(res.output.split())
    assert "horizon not passed: data ends 2026-07-01, need 2026-07-31" in text
    assert not (tmp_path / "measure.json").exists()
