"""The synthetic shop: schema, determinism, event semantics, churn truth and planted causes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.events import CANONICAL_COLUMNS, ROLES
from pipeline import synthetic
from pipeline.config import GenerateParams
from pipeline.synthetic import CAUSES, generate_shop, iter_shop, write_shop

SMALL = GenerateParams(users=300, seed=11)
# enough churners per cause to compare groups; still well under a second to generate
MEDIUM = GenerateParams(users=2000, seed=5)
FUNNEL = ("session", "view", "search", "cart", "purchase")
STR = pd.Series(["x"]).dtype  # pandas' default string dtype


@pytest.fixture(scope="module")
def small() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_shop(SMALL)


@pytest.fixture(scope="module")
def medium() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_shop(MEDIUM)


def _span(params: GenerateParams) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(params.start, tz="UTC")
    return start, pd.Timestamp(params.end, tz="UTC") + pd.Timedelta(days=1)


def test_events_schema_and_order(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, _ = small
    assert list(events.columns) == list(CANONICAL_COLUMNS)
    for col in ("user_id", "event_type", "order_id"):
        assert events[col].dtype == STR, col
    assert events["event_time"].dtype == "datetime64[us, UTC]"
    for col in ("amount", "quantity", "discount", "rating", "delivery_delay_days", "tier"):
        assert events[col].dtype == np.float64, col
    assert events["user_id"].str.fullmatch(r"u\d{7}").all()
    assert events["user_id"].notna().all() and events["event_time"].notna().all()
    assert events.index.equals(pd.RangeIndex(len(events)))
    key = events[["user_id", "event_time"]]
    assert key.equals(key.sort_values(["user_id", "event_time"], kind="stable").reset_index(drop=True))


def test_truth_schema(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, truth = small
    assert list(truth.columns) == [
        "user_id",
        "signup_time",
        "churn_time",
        "cause",
        "returned",
        "return_time",
        "tier_at_end",
    ]
    assert truth["user_id"].tolist() == [f"u{i:07d}" for i in range(1, SMALL.users + 1)]
    assert truth["churn_time"].dtype == "datetime64[us, UTC]"
    assert truth["returned"].dtype == bool and truth["tier_at_end"].dtype == np.int64
    assert set(truth["cause"]) <= set(CAUSES)
    never = truth["churn_time"].isna()
    assert (truth.loc[never, "cause"] == "none").all()
    assert not truth.loc[never, "returned"].any()
    assert truth["return_time"].notna().eq(truth["returned"]).all()
    # every user exists in the events, and their first event is their signup
    first = events.groupby("user_id")["event_time"].min()
    assert first.reindex(truth["user_id"]).to_numpy().tolist() == truth["signup_time"].tolist()


def test_deterministic_per_seed(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, truth = generate_shop(SMALL)
    pd.testing.assert_frame_equal(events, small[0])
    pd.testing.assert_frame_equal(truth, small[1])
    other, _ = generate_shop(SMALL.model_copy(update={"seed": SMALL.seed + 1}))
    assert len(other) != len(events) or not other.equals(events)


def test_every_role_appears(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, _ = small
    assert set(events["event_type"]) == set(ROLES)


def test_times_inside_span(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, truth = small
    start, stop = _span(SMALL)
    assert events["event_time"].min() >= start and events["event_time"].max() < stop
    for col in ("signup_time", "churn_time", "return_time"):
        t = truth[col].dropna()
        assert ((t >= start) & (t < stop)).all(), col


def test_purchase_and_refund_values(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, _ = small
    role = events["event_type"]
    purchases, refunds = events[role == "purchase"], events[role == "refund"]
    assert len(purchases) > 100 and len(refunds) > 0
    assert (purchases["amount"] > 0).all()
    assert (purchases["quantity"] >= 1).all() and (purchases["quantity"] % 1 == 0).all()
    assert (purchases["discount"] >= 0).all() and purchases["discount"].notna().all()
    assert (refunds["amount"] < 0).all()
    assert purchases["order_id"].notna().all() and purchases["order_id"].is_unique
    # a refund refers to an earlier purchase of the same user and returns at most what was paid
    paid = purchases.set_index("order_id")
    assert refunds["order_id"].isin(paid.index).all()
    origin = paid.loc[refunds["order_id"]]
    assert (origin["user_id"].to_numpy() == refunds["user_id"].to_numpy()).all()
    assert (origin["event_time"].to_numpy() < refunds["event_time"].to_numpy()).all()
    assert (-refunds["amount"].to_numpy() <= origin["amount"].to_numpy() + 1e-9).all()
    other = ~role.isin(["purchase", "refund"])
    assert events.loc[other, "amount"].isna().all()
    assert events.loc[role != "purchase", ["quantity", "discount"]].isna().all().all()


def test_attribute_columns_only_on_their_roles(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, _ = small
    role = events["event_type"]
    with_order = role.isin(["purchase", "delivery", "refund", "review"])
    assert events.loc[with_order, "order_id"].notna().all()
    assert events.loc[~with_order, "order_id"].isna().all()
    reviews = events.loc[role == "review", "rating"]
    assert reviews.isin([1.0, 2.0, 3.0, 4.0, 5.0]).all()
    assert events.loc[role != "review", "rating"].isna().all()
    delays = events.loc[role == "delivery", "delivery_delay_days"]
    assert (delays >= 0).all() and (delays > 0).any() and delays.notna().all()
    assert events.loc[role != "delivery", "delivery_delay_days"].isna().all()
    assert events.loc[role == "membership", "tier"].isin([1.0, 2.0, 3.0]).all()
    assert events.loc[role != "membership", "tier"].isna().all()


def test_deliveries_reviews_follow_their_order(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, _ = small
    paid = events[events["event_type"] == "purchase"].set_index("order_id")["event_time"]
    deliveries = events[events["event_type"] == "delivery"]
    assert deliveries["order_id"].is_unique
    lag = deliveries["event_time"].to_numpy() - paid.loc[deliveries["order_id"]].to_numpy()
    lag = lag / np.timedelta64(1, "D")
    promised = lag - deliveries["delivery_delay_days"].to_numpy()
    assert (promised > 1).all() and (promised < 7).all()
    delivered = deliveries.set_index("order_id")["event_time"]
    reviews = events[events["event_type"] == "review"]
    assert reviews["order_id"].isin(delivered.index).all()
    assert (reviews["event_time"].to_numpy() > delivered.loc[reviews["order_id"]].to_numpy()).all()


def test_coupons_only_while_promotions_run(medium: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, _ = medium
    purchases = events[events["event_type"] == "purchase"]
    ends = pd.Timestamp(MEDIUM.promotions_end, tz="UTC")
    during = purchases[purchases["event_time"] < ends]
    assert (during["discount"] > 0).mean() > 0.1
    assert (purchases.loc[purchases["event_time"] >= ends, "discount"] == 0).all()
    assert (during["discount"] < during["amount"] * 0.5).all()


def test_funnel_order(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    # within a user's funnel rows, a session starts each visit; a purchase needs an earlier cart in it
    events, _ = small
    funnel = events[events["event_type"].isin(FUNNEL)]
    is_session = funnel["event_type"] == "session"
    visit = is_session.astype(int).groupby(funnel["user_id"]).cumsum()
    assert (visit >= 1).all()
    carts = (funnel["event_type"] == "cart").astype(int).groupby([funnel["user_id"], visit]).cumsum()
    purchase = funnel["event_type"] == "purchase"
    assert (carts[purchase] >= 1).all()
    per_visit = funnel.groupby([funnel["user_id"], visit])["event_type"]
    assert per_visit.apply(lambda s: (s == "purchase").sum() <= (s == "cart").sum() <= 1).all()
    assert (funnel.groupby([funnel["user_id"], visit])["event_type"].size() >= 2).all()


def test_no_events_while_churned(medium: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, truth = medium
    t = events.merge(truth[["user_id", "churn_time", "return_time", "returned"]], on="user_id")
    gone = t["churn_time"].notna() & (t["event_time"] >= t["churn_time"])
    gone &= ~t["returned"] | (t["event_time"] < t["return_time"])
    assert not gone.any()
    assert truth["churn_time"].notna().mean() > 0.3
    returned = truth[truth["returned"]]
    share = len(returned) / truth["churn_time"].notna().sum()
    assert 0.03 < share < 0.15
    # users who came back are active again from their return
    back = t[t["returned"] & (t["event_time"] >= t["return_time"])]
    assert set(back["user_id"]) == set(returned["user_id"])


def test_membership_follows_spend(medium: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, truth = medium
    members = events[events["event_type"] == "membership"]
    rising = members.groupby("user_id")["tier"].apply(lambda s: s.is_monotonic_increasing and s.is_unique)
    assert rising.all()
    top = members.groupby("user_id")["tier"].max().reindex(truth["user_id"]).fillna(0)
    assert (top.to_numpy() == truth["tier_at_end"].to_numpy()).all()
    spend = events[events["event_type"] == "purchase"].groupby("user_id")["amount"].sum()
    tiers = truth.set_index("user_id")["tier_at_end"]
    assert spend.groupby(tiers.reindex(spend.index)).median().is_monotonic_increasing


def _before_churn(events: pd.DataFrame, truth: pd.DataFrame, days: int) -> pd.DataFrame:
    """Events of churned users in the `days` before their churn, with their cause."""
    churned = truth.loc[truth["churn_time"].notna(), ["user_id", "churn_time", "cause"]]
    t = events.merge(churned, on="user_id")
    since = t["churn_time"] - pd.Timedelta(days=days)
    return t[(t["event_time"] < t["churn_time"]) & (t["event_time"] >= since)]


def test_planted_causes_are_visible_before_churn(medium: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, truth = medium
    counts = truth["cause"].value_counts()
    assert all(counts.get(c, 0) >= 15 for c in CAUSES), counts.to_dict()
    before = _before_churn(events, truth, 60)
    stayed = events[events["user_id"].isin(truth.loc[truth["churn_time"].isna(), "user_id"])]

    def role_mean(role: str, col: str) -> pd.Series:
        return before[before["event_type"] == role].groupby("cause")[col].mean()

    delay = role_mean("delivery", "delivery_delay_days")
    base_delay = stayed.loc[stayed["event_type"] == "delivery", "delivery_delay_days"].mean()
    assert delay["logistics"] > 3 * base_delay and delay["logistics"] == delay.max()

    rating = role_mean("review", "rating")
    base_rating = stayed.loc[stayed["event_type"] == "review", "rating"].mean()
    assert rating["satisfaction"] < base_rating - 1 and rating["satisfaction"] == rating.min()

    # service churners left with a ticket still open
    def open_share(g: pd.DataFrame) -> float:
        per_user = g.groupby("user_id")["event_type"].agg(
            lambda s: (s == "support").sum() - (s == "support_resolved").sum()
        )
        return float((per_user > 0).mean())

    opened = before.groupby("cause")[["user_id", "event_type"]].apply(open_share)
    assert opened["service"] > 0.5 and opened["service"] == opened.max()

    # promotion churners bought on coupons, and left once the promotions had ended
    purchases = events[events["event_type"] == "purchase"].merge(truth[["user_id", "cause"]], on="user_id")
    coupon_share = purchases.groupby("cause")["discount"].apply(lambda s: (s > 0).mean())
    assert coupon_share["promotion"] > 0.6 and coupon_share["promotion"] == coupon_share.max()
    promo_churn = truth.loc[truth["cause"] == "promotion", "churn_time"]
    assert (promo_churn >= pd.Timestamp(MEDIUM.promotions_end, tz="UTC")).all()


def test_fading_engagement_is_visible(medium: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    # sessions per day in the last month before churn vs months 2-4 before it, for users with that history
    events, truth = medium
    sessions = _before_churn(events[events["event_type"] == "session"], truth, 120)
    sessions = sessions.merge(truth[["user_id", "signup_time"]], on="user_id")
    sessions = sessions[sessions["churn_time"] - sessions["signup_time"] >= pd.Timedelta(days=120)]
    age = (sessions["churn_time"] - sessions["event_time"]) / pd.Timedelta(days=1)
    late = sessions[age < 30].groupby("cause").size() / 30
    early = sessions[age >= 60].groupby("cause").size() / 60
    ratio = (late / early).fillna(0)
    assert ratio["engagement"] < 0.5
    assert ratio["engagement"] < ratio.drop("engagement").min()


def test_no_promotion_churn_without_promotion_end() -> None:
    params = GenerateParams(users=400, seed=3, promotions_end=None)
    events, truth = generate_shop(params)
    assert "promotion" not in set(truth["cause"])
    purchases = events[events["event_type"] == "purchase"]
    late = purchases["event_time"] >= pd.Timestamp("2026-01-01", tz="UTC")
    assert (purchases.loc[late, "discount"] > 0).any()


def test_chunks_partition_users() -> None:
    params = GenerateParams(users=250, seed=1)
    chunks = list(iter_shop(params, chunk_users=100))
    assert [len(t) for _, t in chunks] == [100, 100, 50]
    ids = [t["user_id"] for _, t in chunks]
    assert pd.concat(ids).tolist() == [f"u{i:07d}" for i in range(1, 251)]
    for events, truth in chunks:
        assert set(events["user_id"]) == set(truth["user_id"])
    orders = pd.concat([e["order_id"] for e, _ in chunks]).dropna()
    assert orders[orders.str.len() > 0].str.fullmatch(r"o\d{7}-\d{4}").all()


def test_write_shop_round_trip(tmp_path: Path, small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ev_path, tr_path = tmp_path / "raw" / "events.parquet", tmp_path / "truth.parquet"
    counts = write_shop(SMALL, ev_path, tr_path)
    events, truth = small
    assert counts == {
        "users": SMALL.users,
        "events": len(events),
        "churned": int(truth["churn_time"].notna().sum()),
        "returned": int(truth["returned"].sum()),
        "purchases": int((events["event_type"] == "purchase").sum()),
    }
    schema = pq.read_schema(ev_path)
    assert schema.names == list(CANONICAL_COLUMNS)
    assert schema.field("user_id").type == pa.string()
    assert schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    table = pq.read_table(ev_path)
    # missing attributes are Parquet nulls, not NaN
    assert table["rating"].null_count == len(events) - events["rating"].notna().sum()
    pd.testing.assert_frame_equal(table.to_pandas(), events)
    pd.testing.assert_frame_equal(pd.read_parquet(tr_path), truth)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["events.parquet", "raw", "truth.parquet"]


def test_write_shop_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ev_path, tr_path = tmp_path / "events.parquet", tmp_path / "truth.parquet"
    ev_path.write_bytes(b"previous")
    real = synthetic._chunks

    def failing(params: GenerateParams, chunk_users: int, campaign=None) -> Iterator[tuple[pa.Table, pa.Table]]:
        yield from real(params, 20, campaign)  # two chunks written, then the run dies
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_chunks", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_shop(GenerateParams(users=40), ev_path, tr_path)
    assert ev_path.read_bytes() == b"previous"
    assert not tr_path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["events.parquet"]


def test_span_and_size_follow_params() -> None:
    params = GenerateParams(users=100, seed=2, start=dt.date(2023, 1, 1), end=dt.date(2024, 3, 31))
    events, truth = generate_shop(params)
    start, stop = _span(params)
    assert events["event_time"].between(start, stop, inclusive="left").all()
    assert len(truth) == 100 and events["user_id"].nunique() == 100


CONTACT_DAY = dt.date(2026, 3, 4)  # a Wednesday: the lowered hazard starts the next Monday
CONTACTED = frozenset(f"u{i:07d}" for i in range(1, SMALL.users + 1, 2))


def test_a_campaign_changes_nothing_before_the_contact_day(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    events, truth = small
    campaign = synthetic.Campaign(CONTACT_DAY, 0.8, CONTACTED)
    assert campaign.effective_from(SMALL) == dt.date(2026, 3, 9)
    treated, treated_truth = generate_shop(SMALL, campaign)
    cut = pd.Timestamp(CONTACT_DAY, tz="UTC")
    before = events[events["event_time"] < cut].reset_index(drop=True)
    pd.testing.assert_frame_equal(treated[treated["event_time"] < cut].reset_index(drop=True), before)
    assert not treated.equals(events)
    assert treated_truth["contacted"].tolist() == treated_truth["user_id"].isin(CONTACTED).tolist()
    # a campaign with no effect is the plain shop (common random numbers), with the contacted flag
    none, none_truth = generate_shop(SMALL, synthetic.Campaign(CONTACT_DAY, 0.0, CONTACTED))
    pd.testing.assert_frame_equal(none, events)
    pd.testing.assert_frame_equal(none_truth.drop(columns="contacted"), truth)


def test_contacted_users_churn_less_after_the_contact(medium: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, plain = medium
    contacted = frozenset(f"u{i:07d}" for i in range(1, MEDIUM.users + 1, 2))
    _, treated = generate_shop(MEDIUM, synthetic.Campaign(CONTACT_DAY, 0.8, contacted))
    start = pd.Timestamp("2026-03-09", tz="UTC")

    def gone(truth: pd.DataFrame) -> pd.Series:
        # left after the campaign started and not back by the end
        return (truth["churn_time"] >= start) & ~truth["returned"]

    mine = treated["contacted"].to_numpy()
    assert gone(treated)[mine].sum() < 0.5 * gone(plain)[mine].sum()
    # the others are simulated with the same churn draws: their churn hardly moves
    assert abs(gone(treated)[~mine].sum() - gone(plain)[~mine].sum()) <= 0.1 * gone(plain)[~mine].sum() + 3
    # contacted users who had left come back (win-back), the others only on their own
    left = (plain["churn_time"] < start) & ~plain["returned"]
    back = treated["returned"] & (treated["return_time"] >= start)
    assert back[mine & left].mean() > 0.6
    assert back[~mine & left].mean() < 0.1


def test_campaign_rejects_users_outside_the_shop() -> None:
    with pytest.raises(ValueError, match="not a user of this synthetic shop"):
        generate_shop(SMALL, synthetic.Campaign(CONTACT_DAY, 0.5, frozenset({"u9999999"})))
    with pytest.raises(ValueError, match="outside"):
        generate_shop(SMALL, synthetic.Campaign(dt.date(2027, 1, 1), 0.5, CONTACTED))
