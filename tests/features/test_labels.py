"""Population and churn labels at the edges of the lookback and horizon windows."""

from __future__ import annotations

import datetime as dt

import ibis
import pytest

from features.labels import churn_labels, future_revenue, population
from features.rollup import user_day_rollup
from features.windows import cutoff_table, day_number
from tests.conftest import make_events

CUTOFF = dt.date(2024, 3, 1)


def labels(con, rows, lookback=30, horizon=30, qualifying="any"):
    r = user_day_rollup(ibis.memtable(make_events(rows)))
    out = con.to_pandas(churn_labels(r, cutoff_table([CUTOFF]), lookback, horizon, qualifying))
    return dict(zip(out["user_id"], out["churned"], strict=True))


def test_population_and_label_edges(con) -> None:
    rows = [
        # in population (30 days before, first day of the lookback), returns on the last horizon day
        {"user_id": "a", "event_time": "2024-01-31 00:00", "event_type": "view"},
        {"user_id": "a", "event_time": "2024-03-30 23:59", "event_type": "view"},
        # in population, next event exactly at cutoff + horizon: outside the window -> churned
        {"user_id": "b", "event_time": "2024-02-29 12:00", "event_type": "view"},
        {"user_id": "b", "event_time": "2024-03-31 00:00", "event_type": "view"},
        # last event 31 days before: not in the population
        {"user_id": "c", "event_time": "2024-01-30 23:59", "event_type": "view"},
        {"user_id": "c", "event_time": "2024-03-02", "event_type": "view"},
        # an event exactly at the cutoff counts for the label, not for the population
        {"user_id": "d", "event_time": "2024-02-20", "event_type": "view"},
        {"user_id": "d", "event_time": "2024-03-01 00:00", "event_type": "view"},
    ]
    assert labels(con, rows) == {"a": 0, "b": 1, "d": 0}


def test_purchase_only_definition(con) -> None:
    rows = [
        {"user_id": "a", "event_time": "2024-02-20", "event_type": "purchase", "amount": 5.0},
        {"user_id": "a", "event_time": "2024-03-05", "event_type": "view"},  # browsing is not a purchase
        {"user_id": "b", "event_time": "2024-02-20", "event_type": "view"},  # never purchased: not in population
        {"user_id": "c", "event_time": "2024-02-20", "event_type": "purchase", "amount": 5.0},
        {"user_id": "c", "event_time": "2024-03-05", "event_type": "purchase", "amount": 5.0},
    ]
    assert labels(con, rows, qualifying=["purchase"]) == {"a": 1, "c": 0}


def test_population_without_labels(con) -> None:
    rows = [
        {"user_id": "a", "event_time": "2024-02-20", "event_type": "view"},
        {"user_id": "b", "event_time": "2023-12-01", "event_type": "view"},
    ]
    r = user_day_rollup(ibis.memtable(make_events(rows)))
    pop = con.to_pandas(population(r, cutoff_table([CUTOFF]), 30, "any"))
    assert pop.to_dict("records") == [{"user_id": "a", "cutoff_day": day_number(CUTOFF)}]


def future(con, rows, horizon=30):
    r = user_day_rollup(ibis.memtable(make_events(rows)))
    out = con.to_pandas(future_revenue(r, cutoff_table([CUTOFF]), horizon))
    return dict(zip(out["user_id"], out["future_revenue"], strict=True))


def test_future_revenue_sees_only_the_label_window(con) -> None:
    window = [
        # before the cutoff: history, not future revenue
        {"user_id": "a", "event_time": "2024-02-29 23:59", "event_type": "purchase", "amount": 1000.0},
        # exactly at the cutoff and on the last horizon day: counted (fixed-point sums are exact)
        {"user_id": "a", "event_time": "2024-03-01 00:00", "event_type": "purchase", "amount": 7.1},
        {"user_id": "a", "event_time": "2024-03-30 23:59", "event_type": "purchase", "amount": 11.2},
        # a refund is not revenue; a view is not revenue
        {"user_id": "a", "event_time": "2024-03-10", "event_type": "refund", "amount": -7.1},
        {"user_id": "b", "event_time": "2024-03-10", "event_type": "view"},
        {"user_id": "c", "event_time": "2024-03-15", "event_type": "purchase", "amount": 3.0},
    ]
    expected = {"a": 18.3, "c": 3.0}
    assert future(con, window) == pytest.approx(expected, abs=1e-9)
    outside = [
        # at cutoff + horizon and later: beyond the label window, must not change it
        {"user_id": "a", "event_time": "2024-03-31 00:00", "event_type": "purchase", "amount": 500.0},
        {"user_id": "c", "event_time": "2024-06-01", "event_type": "purchase", "amount": 500.0},
        {"user_id": "d", "event_time": "2024-04-02", "event_type": "purchase", "amount": 500.0},
        # more history before the cutoff: must not count either
        {"user_id": "b", "event_time": "2024-01-15", "event_type": "purchase", "amount": 500.0},
        {"user_id": "c", "event_time": "2024-02-01", "event_type": "purchase", "amount": 500.0},
    ]
    assert future(con, window + outside) == pytest.approx(expected, abs=1e-9)
