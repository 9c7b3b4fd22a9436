"""KPIs on a tiny hand-built event table with exact expected numbers (week boundaries at Monday 00:00 UTC)."""

from __future__ import annotations

import datetime as dt

import ibis
import pandas as pd
import pytest

from features.events import CANONICAL_COLUMNS
from features.kpis import FUNNEL_STEPS, activity_by_period, event_type_counts, funnel

# 2024-01-01 and 2024-01-08 are Mondays
ROWS = [
    # user, event_time (UTC), event_type, amount, order_id
    ("u1", "2024-01-07 23:59:59", "session", None, None),  # last second of the week of 01-01
    ("u1", "2024-01-08 00:00:00", "session", None, None),  # first second of the week of 01-08
    ("u1", "2024-01-08 10:00:00", "purchase", 20.0, "o1"),  # two lines of one order
    ("u1", "2024-01-08 10:00:00", "purchase", 5.0, "o1"),
    ("u2", "2024-01-03 09:00:00", "view", None, None),
    ("u2", "2024-01-03 09:05:00", "cart", None, None),
    ("u2", "2024-01-03 09:10:00", "purchase", 10.0, None),  # no order id: the row is one order
    ("u2", "2024-01-09 12:00:00", "refund", -10.0, "o2"),  # not revenue, still activity
    ("u3", "2024-01-31 23:00:00", "search", None, None),  # January, week of 01-29
    ("u3", "2024-02-01 00:00:00", "session", None, None),  # February, same week
    ("u3", "2024-02-01 01:00:00", "support", None, None),
    ("u4", "2024-01-02 08:00:00", "other", None, None),
    ("u4", "2024-01-02 08:01:00", "view", None, None),
    ("u1", "2024-02-05 12:00:00", "purchase", 7.5, "o3"),
]


def events_frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id", "event_time", "event_type", "amount", "order_id"])
    df["event_time"] = pd.to_datetime(df["event_time"]).dt.tz_localize("UTC")
    df["amount"] = df["amount"].astype("float64")
    df["order_id"] = df["order_id"].astype("str")
    for col, dtype in CANONICAL_COLUMNS.items():
        if col not in df:
            df[col] = pd.Series([None] * len(df), dtype="float64" if dtype == "float64" else "str")
    return df


@pytest.fixture(scope="module")
def con():
    con = ibis.duckdb.connect()
    con.raw_sql("SET TimeZone = 'UTC'")  # as pipeline.engine.connect does
    return con


@pytest.fixture(scope="module")
def events():
    return ibis.memtable(events_frame(ROWS))


def D(s: str) -> dt.date:
    return dt.date.fromisoformat(s)


def as_records(df: pd.DataFrame) -> list[dict]:
    out = df.astype(object).where(df.notna(), None).to_dict("records")
    for r in out:
        if isinstance(r.get("period_start"), pd.Timestamp):
            r["period_start"] = r["period_start"].date()
    return out


def test_weekly_activity_exact(con, events):
    got = as_records(con.to_pandas(activity_by_period(events, "week")))
    assert got == [
        {"period_start": D("2024-01-01"), "active_users": 3, "events": 6, "orders": 1, "revenue": 10.0},
        {"period_start": D("2024-01-08"), "active_users": 2, "events": 4, "orders": 1, "revenue": 25.0},
        {"period_start": D("2024-01-29"), "active_users": 1, "events": 3, "orders": 0, "revenue": 0.0},
        {"period_start": D("2024-02-05"), "active_users": 1, "events": 1, "orders": 1, "revenue": 7.5},
    ]


def test_week_is_the_default_period(con, events):
    pd.testing.assert_frame_equal(
        con.to_pandas(activity_by_period(events)), con.to_pandas(activity_by_period(events, "week"))
    )


def test_user_active_in_two_weeks_counts_in_both(con):
    # one second apart across the Sunday/Monday boundary (UTC)
    df = con.to_pandas(activity_by_period(ibis.memtable(events_frame(ROWS[:2])), "week"))
    assert as_records(df) == [
        {"period_start": D("2024-01-01"), "active_users": 1, "events": 1, "orders": 0, "revenue": 0.0},
        {"period_start": D("2024-01-08"), "active_users": 1, "events": 1, "orders": 0, "revenue": 0.0},
    ]


def test_monthly_activity_exact(con, events):
    got = as_records(con.to_pandas(activity_by_period(events, "month")))
    assert got == [
        {"period_start": D("2024-01-01"), "active_users": 4, "events": 11, "orders": 2, "revenue": 35.0},
        {"period_start": D("2024-02-01"), "active_users": 2, "events": 3, "orders": 1, "revenue": 7.5},
    ]


def test_daily_activity_splits_at_midnight_utc(con, events):
    got = {r["period_start"]: r for r in as_records(con.to_pandas(activity_by_period(events, "day")))}
    assert len(got) == 8
    assert got[D("2024-01-07")]["events"] == 1
    assert got[D("2024-01-08")] == {
        "period_start": D("2024-01-08"),
        "active_users": 1,
        "events": 3,
        "orders": 1,
        "revenue": 25.0,
    }
    assert got[D("2024-01-31")]["events"] == 1
    assert got[D("2024-02-01")]["events"] == 2


def test_unknown_period_is_rejected(events):
    with pytest.raises(ValueError, match="period"):
        activity_by_period(events, "year")


def test_funnel_exact(con, events):
    got = as_records(con.to_pandas(funnel(events)))
    assert got == [
        {"step_order": 1, "step": "session", "users": 2, "events": 3, "conversion": None},
        {"step_order": 2, "step": "view", "users": 2, "events": 2, "conversion": 1.0},
        {"step_order": 3, "step": "search", "users": 1, "events": 1, "conversion": 0.5},
        {"step_order": 4, "step": "cart", "users": 1, "events": 1, "conversion": 1.0},
        {"step_order": 5, "step": "purchase", "users": 2, "events": 4, "conversion": 2.0},
    ]


def test_funnel_keeps_steps_without_events(con):
    rows = [r for r in ROWS if r[2] != "search"]
    got = as_records(con.to_pandas(funnel(ibis.memtable(events_frame(rows)))))
    assert [r["step"] for r in got] == list(FUNNEL_STEPS)
    search, cart = got[2], got[3]
    assert (search["users"], search["events"], search["conversion"]) == (0, 0, 0.0)
    # nothing to convert from: no ratio rather than a division by zero
    assert (cart["users"], cart["conversion"]) == (1, None)


def test_event_type_counts_exact(con, events):
    got = as_records(con.to_pandas(event_type_counts(events)))
    assert got == [
        {"event_type": "purchase", "events": 4, "users": 2},
        {"event_type": "session", "events": 3, "users": 2},
        {"event_type": "view", "events": 2, "users": 2},
        {"event_type": "cart", "events": 1, "users": 1},
        {"event_type": "other", "events": 1, "users": 1},
        {"event_type": "refund", "events": 1, "users": 1},
        {"event_type": "search", "events": 1, "users": 1},
        {"event_type": "support", "events": 1, "users": 1},
    ]
    assert sum(r["events"] for r in got) == len(ROWS)


def test_retention_kpis_and_cohorts_on_a_hand_built_rollup() -> None:
    from features.kpis import cohort_retention, retention_kpis

    con = ibis.duckdb.connect()
    # days: 19723 = 2024-01-01, 19724/19725 = Jan 2/3, 19753 = Jan 31, 19754 = Feb 1; as of Feb 2
    rollup = ibis.memtable(
        pd.DataFrame(
            {
                "user_id": ["a", "a", "b", "b", "c"],
                "d": [19723, 19754, 19724, 19725, 19753],
                "n_purchase": [1, 1, 0, 1, 1],
            }
        )
    )
    k = con.to_pandas(retention_kpis(rollup, 19755)).iloc[0]
    assert (k["dau"], k["wau"], k["mau"], k["buyers"]) == (1, 2, 3, 3)
    assert k["stickiness"] == pytest.approx(3 / 30 / 3)
    assert k["repurchase_rate"] == pytest.approx(1 / 3)
    c = con.to_pandas(cohort_retention(rollup, 19755))
    assert c["cohort_month"].astype(str).tolist() == ["2024-01-01", "2024-01-01"]
    assert c["months_since"].tolist() == [0, 1]
    assert c["retention"].tolist() == pytest.approx([1.0, 1 / 3])


def test_churn_rate_per_cutoff_counts_the_population_and_its_churners() -> None:
    from features.kpis import churn_rate_per_cutoff

    con = ibis.duckdb.connect()
    labels = ibis.memtable(
        pd.DataFrame(
            {
                "user_id": ["a", "b", "c", "a", "b"],
                "cutoff_day": [19723, 19723, 19723, 19730, 19730],  # 2024-01-01 and 2024-01-08
                "churned": pd.Series([1, 0, 0, 1, 1], dtype="int8"),
            }
        )
    )
    got = con.to_pandas(churn_rate_per_cutoff(labels))
    assert got["cutoff"].astype(str).tolist() == ["2024-01-01", "2024-01-08"]
    assert got["users"].tolist() == [3, 2]
    assert got["churned"].tolist() == [1, 2]
    assert got["churn_rate"].tolist() == pytest.approx([1 / 3, 1.0])
