"""Properties of the features and of the list, over random small event tables (hypothesis).

A user's features at a cutoff depend only on that user's events before the cutoff: shuffling the rows,
delivering the whole input twice (in one file: ingest drops exact duplicates), adding other users, or
changing, adding or removing any event at or after the cutoff leaves them unchanged. Both build paths
are checked: one cutoff (scoring) and several cutoffs (training). The win-back list is a pure function of
(data, params, model): the same rows scored twice, or in another order, give the same list.
"""

from __future__ import annotations

import datetime as dt

import ibis
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.events import ROLES
from features.rollup import user_day_rollup
from pipeline.build import build_snapshots
from pipeline.config import DataParams, Params
from pipeline.engine import connect
from pipeline.ingest import normalise
from tests.conftest import make_events

CUTOFF = dt.date(2024, 3, 1)
T0 = pd.Timestamp(CUTOFF, tz="UTC")
NOW = pd.Timestamp("2025-01-01", tz="UTC")
DAY = 86_400
USERS = ["a", "b", "c"]
OTHERS = ["x", "y"]

PROPERTY_SETTINGS = settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def event(draw, users: list[str], lo_days: int, hi_days: int) -> dict:
    """One canonical event of a user, `lo_days`..`hi_days` days from the cutoff (to the second)."""
    role = draw(st.sampled_from(ROLES))
    secs = draw(st.integers(lo_days * DAY, hi_days * DAY - 1))
    row: dict = {
        "user_id": draw(st.sampled_from(users)),
        # a few events exactly at midnight and at the cutoff itself, the edges where leaks hide
        "event_time": (T0 + pd.Timedelta(seconds=draw(st.sampled_from([secs, secs - secs % DAY])))).isoformat(),
        "event_type": role,
    }
    order = draw(st.sampled_from([None, "o1", "o2"]))
    if role in ("purchase", "refund"):
        amount = draw(st.floats(0.5, 500, allow_nan=False).map(lambda v: round(v, 2)))
        row |= {"amount": -amount if role == "refund" else amount, "order_id": order}
        row["discount"] = draw(st.sampled_from([None, 0.0, 5.0])) if role == "purchase" else None
    elif role == "delivery":
        row |= {"order_id": order, "delivery_delay_days": float(draw(st.integers(0, 6)))}
    elif role == "review":
        row |= {"order_id": order, "rating": float(draw(st.integers(1, 5)))}
    elif role == "membership":
        row["tier"] = draw(st.sampled_from([None, 1.0, 2.0, 3.0]))
    return row


def events_strategy(users: list[str], lo_days: int, hi_days: int, max_size: int = 25):
    return st.lists(event(users, lo_days, hi_days), min_size=0, max_size=max_size)


# before the cutoff: within every window and lookback (60 days); at or after it: up to the label horizon
BEFORE = events_strategy(USERS, -75, 0)
AFTER = events_strategy(USERS, 0, 45, max_size=10)
OTHER_USERS = events_strategy(OTHERS, -75, 45, max_size=10)


@pytest.fixture(scope="module")
def params() -> Params:
    """Windows of 7, 30 and 60 days, lookback 60 (as the conftest's), one per module: hypothesis reuses it."""
    p = Params(threads=1)
    return p.model_copy(
        update={
            "features": p.features.model_copy(update={"windows": [7, 30, 60]}),
            "labels": p.labels.model_copy(update={"horizon_days": 30, "lookback_days": 60}),
        }
    )


@pytest.fixture(scope="module")
def con(params: Params):
    return connect(params)


def frame(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return make_events([{"user_id": "nobody", "event_time": "1999-01-01T00:00:00Z", "event_type": "view"}])
    return make_events(rows)


def features(con, params, events: pd.DataFrame, cutoffs: tuple[dt.date, ...] = (CUTOFF,)) -> pd.DataFrame:
    """The population's feature rows at CUTOFF, built through the pipeline's own build (scoring's when one cutoff)."""
    rolled = user_day_rollup(ibis.memtable(events))
    snap = build_snapshots(con, rolled, list(cutoffs), params, labelled=False)
    snap = snap[snap["cutoff"] == CUTOFF].drop(columns=["churned", "future_revenue"])
    return snap.sort_values("user_id", kind="stable").reset_index(drop=True)


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def only(df: pd.DataFrame, users: list[str]) -> pd.DataFrame:
    return df[df["user_id"].isin(users)].reset_index(drop=True)


def variants(**frames: pd.DataFrame) -> pd.DataFrame:
    """Several event tables in one, each user renamed '<name>|<user>' so that one build computes them all."""
    parts = [df.assign(user_id=name + "|" + df["user_id"].astype(str)) for name, df in frames.items()]
    return pd.concat(parts, ignore_index=True)


def variant(built: pd.DataFrame, name: str) -> pd.DataFrame:
    mine = built[built["user_id"].str.startswith(name + "|")].copy()
    mine["user_id"] = mine["user_id"].str.removeprefix(name + "|")
    return mine.reset_index(drop=True)


@PROPERTY_SETTINGS
@given(before=BEFORE, after=AFTER, changed=AFTER, others=OTHER_USERS, seed=st.integers(0, 2**16))
def test_features_depend_only_on_the_users_own_events_before_the_cutoff(
    con, params, before, after, changed, others, seed
) -> None:
    """Shuffled rows, other users, and adding, removing or changing every event at or after the cutoff.

    The reference is built from the users' events alone at the one cutoff. Every variant is built in one
    other table (users renamed per variant, so the variants are other users to each other, with more users
    beside them) whose rows are shuffled, once through the one-cutoff build (scoring) and once with an
    earlier cutoff too (training's build); each variant must give exactly the reference's features.
    """
    events = frame(before + after)
    expected = features(con, params, events)
    table = variants(
        shuffled=events.sample(frac=1, random_state=seed),  # row order
        others=frame(before + after + others),  # other users in the same table
        removed=frame(before),  # every event at or after the cutoff removed
        changed=frame(before + changed),  # ... replaced by other ones
    ).sample(frac=1, random_state=seed + 1)
    for cutoffs in [(CUTOFF,), (CUTOFF - dt.timedelta(days=7), CUTOFF)]:
        built = features(con, params, table, cutoffs)
        for name in ("shuffled", "removed", "changed"):
            same(variant(built, name), expected)
        same(only(variant(built, "others"), USERS), expected)


@PROPERTY_SETTINGS
@given(before=BEFORE, seed=st.integers(0, 2**16))
def test_the_whole_input_twice_gives_the_same_events_and_features(con, params, before, seed) -> None:
    """Ingest drops rows identical in every source column (of one file), so a doubled export changes nothing."""
    raw = frame(before).astype({"event_time": str})  # source-like: times as text, as in a CSV export
    once = normalise(raw, DataParams(), "events.csv", NOW)
    doubled = pd.concat([raw, raw.sample(frac=1, random_state=seed)], ignore_index=True)
    twice = normalise(doubled, DataParams(), "events.csv", NOW)
    assert twice.metrics["total"] == 2 * len(raw)
    assert twice.metrics["duplicates"] == once.metrics["duplicates"] + len(raw)
    assert twice.metrics["accepted"] == once.metrics["accepted"]
    same(twice.events, once.events)
    built = features(con, params, variants(once=once.events, twice=twice.events))
    same(variant(built, "twice"), variant(built, "once"))


# ------------------------------------------------------------------------------------ the list


@pytest.fixture(scope="module")
def scored(shop_snapshots):
    """A model fitted on the small shop and its population rows at the end of the data."""
    from features.catalogue import catalogue
    from pipeline.build import data_span, rollup
    from pipeline.engine import read_events
    from pipeline.train import fit_churn_model

    params, snap, events_path = shop_snapshots
    candidates = [f.name for f in catalogue(params.features.windows)]
    tm = fit_churn_model(snap, candidates, params.labels.horizon_days, params.train, params.seed, params.threads)
    con = connect(params)
    rolled = rollup(read_events(con, events_path))
    _, end = data_span(con, rolled)
    rows = build_snapshots(con, rolled, [end], params, labelled=False)
    return params, tm.model, rows, end


def test_the_list_is_a_pure_function_of_data_params_and_model(scored) -> None:
    from pipeline.stages import score_population

    params, model, rows, as_of = scored
    first = score_population(model, rows, params, as_of, "1")
    again = score_population(model, rows.copy(), params, as_of, "1")
    same(again, first)
    shuffled = rows.sample(frac=1, random_state=1).reset_index(drop=True)
    same(score_population(model, shuffled, params, as_of, "1"), first)
    assert len(first) == len(rows) > 100
    assert first["rank"].tolist() == list(range(1, len(first) + 1))
    assert np.isfinite(first["churn_probability"]).all()
