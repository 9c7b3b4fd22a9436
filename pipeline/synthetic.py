"""Synthetic e-commerce shop: behavioural events with planted, visible churn causes, plus ground truth.

Every user carries latent traits (activity rate, basket size, delivery bad luck, taste, coupon
dependence, a fading engagement). A week-by-week simulation, vectorised over users and days, turns
them into sessions and purchases; deliveries, reviews, refunds and support tickets follow the
purchases. Each user churns from a daily hazard whose planted causes are computed only from what that
user's own events already show (delivery delays, open tickets, bad ratings, coupon share once the
promotions stop, a fading activity), so a model can recover them; the same grievances make users
visit less before they leave. Ground truth (who churned, when, why) comes apart from the events and
must never feed features.

Randomness comes from three streams per chunk of users, so that a change from some day on (a simulated
campaign, see `Campaign`) leaves everything before that day identical: the weekly simulation draws in time
order; the churn, return and pause uniforms come from their own stream at a fixed number per user and week
(so two runs that differ in hazards from some week on share every user's churn draws: common random
numbers); and rendering draws each attribute from its own stream, in session (time) order or per user.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.events import CANONICAL_COLUMNS, ROLES
from pipeline.config import GenerateParams
from pipeline.io import atomic_path

# Causes recorded in the ground truth; "none" is background churn (and users who never churned).
CAUSES: tuple[str, ...] = ("none", "logistics", "service", "satisfaction", "promotion", "engagement")
CHUNK_USERS = 50_000  # users simulated together: ~7M events and ~2 GB peak per chunk

_DAY_US = 86_400_000_000
_SESSION, _VIEW, _SEARCH, _CART, _PURCHASE, _REFUND, _SUPPORT, _RESOLVED, _REVIEW, _DELIVERY, _MEMBERSHIP = (
    ROLES.index(r)
    for r in (
        "session",
        "view",
        "search",
        "cart",
        "purchase",
        "refund",
        "support",
        "support_resolved",
        "review",
        "delivery",
        "membership",
    )
)

# Every follow-up of a purchase lands within this many days of it, so the ring buffers that hold
# not-yet-observed effects never wrap onto a pending slot.
_RING = 64
_MAX_DELAY = 30.0  # days; keeps every follow-up well inside the ring
# Lifetime spend needed for tiers 1..3, and the hazard factor each tier gives (loyalty).
_TIER_SPEND = np.array([300.0, 900.0, 2200.0])
_TIER_HAZARD = np.array([1.0, 0.72, 0.52, 0.38])

# Hazard = base * tier factor * (background + sum of planted excesses); "none" is the background.
_BASE_HAZARD = 1 / 4000  # median daily hazard with no planted cause
_NEW_USER_EXCESS = 10.0  # newcomers leave more often (background, not a planted cause); 20-day decay
_W_LOGISTICS = 30.0  # per day of delivery delay seen recently (decayed)
_W_SERVICE = 150.0  # per support ticket still open
_W_SATISFACTION = 150.0  # per bad (<= 2) rating given recently (decayed)
_W_PROMOTION = 150.0  # times squared coupon share, once promotions have ended
_W_ENGAGEMENT = 150.0  # times the fraction of activity that has faded away
_WITHDRAWAL = 1 / 30  # activity divides by (1 + this * grievance excess)
_LOGISTICS_DECAY = 0.5 ** (1 / 30)
_SATISFACTION_DECAY = 0.5 ** (1 / 45)
_NEW_USER_DECAY = np.exp(-1 / 20)
_DISCOUNTS = np.array([0.1, 0.15, 0.2, 0.3])  # coupon value as a share of the order

# Alive users sometimes pause (holidays, busy weeks): silence alone must not mean churn.
_BREAK_P = 1 / 200
_BREAK_DAYS = (10, 70)
_RETURN_P = 0.1  # churned users who come back (some fall after the span, so ~6-8% are seen)
_SESSION_HOURS = np.array(  # session start hour weights; none after 21h so a session ends by midnight
    [0.25, 0.12, 0.06, 0.05, 0.05, 0.1, 0.3, 0.6, 0.8, 0.9, 1.0, 1.0, 1.1, 1.0, 0.9, 0.9, 1.0, 1.2, 1.5, 1.8, 2.0, 1.8]
)
_MAX_SESSION_S = 7200.0
_MIN_SESSION_GAP_S = 60.0


@dataclass(frozen=True)
class _Calendar:
    """Per-day factors of the span; day 0 is params.start."""

    n_days: int
    start_us: int
    activity: np.ndarray  # weekday x holiday factor on session rates
    buying: np.ndarray  # holiday factor on conversion
    promo: np.ndarray  # promotions running that day
    promo_over: np.ndarray  # 0 before promotions end, ramps to 1 over three weeks after


def _calendar(params: GenerateParams) -> _Calendar:
    n_days = (params.end - params.start).days + 1
    days = np.arange(n_days)
    dates = pd.date_range(params.start, periods=n_days, freq="D")
    weekday = np.array([0.92, 0.9, 0.92, 0.95, 1.02, 1.22, 1.3])[dates.day_of_week]
    month, dom = dates.month.to_numpy(), dates.day.to_numpy()
    holiday = np.ones(n_days)
    holiday[(month == 11) & (dom >= 20)] = 1.6  # Black Friday / Cyber Monday run-up
    holiday[(month == 12) & (dom <= 23)] = 1.45
    holiday[(month == 12) & (dom >= 27)] = 1.1
    holiday[(month == 1) & (dom <= 20)] = 0.88  # post-holiday lull
    buying = np.where(holiday > 1.2, 1.25, 1.0)
    if params.promotions_end is None:
        promo = np.ones(n_days, bool)
        promo_over = np.zeros(n_days)
    else:
        end_day = (params.promotions_end - params.start).days
        promo = days < end_day
        promo_over = np.clip((days - end_day) / 21.0, 0.0, 1.0)
    start_us = int(pd.Timestamp(params.start, tz="UTC").value // 1000)
    return _Calendar(n_days, start_us, weekday * holiday, buying, promo, promo_over)


@dataclass(frozen=True)
class _Users:
    """Latent per-user traits of one chunk; none of them is ever written out."""

    n: int
    signup_day: np.ndarray
    rate: np.ndarray  # sessions per day at full engagement
    p_cart: np.ndarray
    p_buy: np.ndarray  # purchase given a cart
    basket: np.ndarray  # typical order value
    views: np.ndarray  # mean product views per session
    promo_dependent: np.ndarray
    p_late: np.ndarray
    taste: np.ndarray  # expected rating of an on-time delivery
    p_resolve: np.ndarray  # chance a ticket of theirs is ever closed
    base_hazard: np.ndarray
    fade_start: np.ndarray  # day their engagement starts fading (inf: never)
    fade_days: np.ndarray  # e-folding time of the fade


def _draw_users(rng: np.random.Generator, n: int, cal: _Calendar) -> _Users:
    # Acquisition: a launch cohort, then a shop growing ~60% over the span, with holiday campaigns.
    weight = (1.0 + 0.6 * np.arange(cal.n_days) / cal.n_days) * np.sqrt(cal.activity)
    weight[: min(30, cal.n_days)] += 4.0
    signup_day = np.sort(rng.choice(cal.n_days, size=n, p=weight / weight.sum()))
    promo_dependent = rng.random(n) < np.where(cal.promo[signup_day], 0.22, 0.04)
    unlucky = rng.random(n) < 0.2
    mismatched = rng.random(n) < 0.15
    fader = rng.random(n) < 0.3
    fade_start = np.where(fader, signup_day + 14 + rng.exponential(160, n), np.inf)
    return _Users(
        n=n,
        signup_day=signup_day,
        rate=np.minimum(0.035 + rng.lognormal(np.log(0.07), 1.0, n), 2.5),
        p_cart=np.clip(rng.beta(4, 5, n), 0.02, 0.8),
        p_buy=np.clip(rng.beta(6, 3, n), 0.05, 0.95),
        basket=rng.lognormal(np.log(45), 0.55, n),
        views=1 + rng.lognormal(np.log(3.0), 0.5, n),
        promo_dependent=promo_dependent,
        p_late=np.where(unlucky, rng.uniform(0.3, 0.6, n), rng.uniform(0.02, 0.1, n)),
        taste=np.where(mismatched, rng.normal(2.6, 0.4, n), rng.normal(4.3, 0.35, n)),
        p_resolve=np.where(rng.random(n) < 0.2, 0.35, 0.92),
        base_hazard=_BASE_HAZARD * rng.lognormal(0.0, 0.7, n),
        fade_start=fade_start,
        fade_days=rng.uniform(10, 35, n),
    )


@dataclass
class _Log:
    """What the weekly loop decided; times within a day are filled in afterwards, vectorised."""

    # sessions (one row each), in (day, user) order
    s_user: np.ndarray
    s_day: np.ndarray
    s_cart: np.ndarray
    s_buy: np.ndarray
    # purchases, in the order of the sessions that made them
    quantity: np.ndarray
    amount: np.ndarray
    discount: np.ndarray
    delay: np.ndarray
    t_delivery: np.ndarray  # fractional days since start
    t_review: np.ndarray  # NaN: no review
    rating: np.ndarray
    t_refund: np.ndarray  # NaN: no refund
    refund: np.ndarray
    # support tickets, each tied to the session it stems from
    k_session: np.ndarray
    t_ticket: np.ndarray
    t_resolved: np.ndarray  # NaN: never resolved
    # tier upgrades, tied to the order whose spend crossed the threshold
    m_purchase: np.ndarray
    m_tier: np.ndarray
    # per user
    churn_day: np.ndarray  # -1: never
    return_day: np.ndarray  # -1: never (within the span)
    cause: np.ndarray
    tier: np.ndarray


class _Draws:
    """Uniform and standard-normal variates handed out in blocks.

    A week's few hundred purchases then cost one slice instead of a generator call per attribute.
    """

    def __init__(self, rng: np.random.Generator, uniforms: int, normals: int = 0, block: int = 1 << 15):
        self.rng, self.uniforms, self.normals, self.block = rng, uniforms, normals, block
        self.buf = np.empty((uniforms + normals, 0))
        self.pos = 0

    def take(self, m: int) -> np.ndarray:
        """(uniforms + normals, m) array of fresh variates."""
        if self.pos + m > self.buf.shape[1]:
            size = max(self.block, m)
            fresh = np.concatenate(
                [self.rng.random((self.uniforms, size)), self.rng.standard_normal((self.normals, size))]
            )
            self.buf = np.concatenate([self.buf[:, self.pos :], fresh], axis=1)
            self.pos = 0
        self.pos += m
        return self.buf[:, self.pos - m : self.pos]


def _geometric(uniform: np.ndarray, p: float | np.ndarray) -> np.ndarray:
    # inverse CDF of the number of trials up to the first success (>= 1)
    return np.maximum(np.ceil(np.log1p(-uniform) / np.log1p(-p)), 1.0)


@dataclass(frozen=True)
class Campaign:
    """A retention campaign on the synthetic shop: contacted users churn less from the contact day on.

    From the first simulated week that starts on or after `contact_day` (weeks start on generate.start's
    weekday; hazards are read once per week), so that nothing before the contact day changes:

    * contacted users still active: their churn hazard is multiplied by (1 - effect);
    * contacted users who had already left (a third of a typical win-back list: the population counts
      everyone active in the lookback) come back with probability `return_share` (None: `effect`),
      on a day within two weeks, as churned users who come back on their own do.

    Without the second part, a campaign on a win-back list barely moves the churn label: the 60-day
    hazard of the users still active is a few percent.
    """

    contact_day: dt.date
    effect: float
    user_ids: frozenset[str]
    return_share: float | None = None

    def __post_init__(self) -> None:
        for name in ("effect", "return_share"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"campaign {name} must be in [0, 1] (got {value})")

    @property
    def comeback(self) -> float:
        """Probability that a contacted user who had left comes back."""
        return self.effect if self.return_share is None else self.return_share

    def first_week(self, params: GenerateParams) -> int:
        """Index of the first simulated week whose hazard the campaign lowers."""
        offset = (self.contact_day - params.start).days
        if offset < 0 or self.contact_day > params.end:
            raise ValueError(f"campaign contact day {self.contact_day} is outside {params.start}..{params.end}")
        return -(-offset // 7)

    def effective_from(self, params: GenerateParams) -> dt.date:
        """The day the lowered hazard starts."""
        return params.start + dt.timedelta(days=7 * self.first_week(params))

    def treated(self, users: int) -> np.ndarray:
        """Boolean mask over the shop's users (index i is user u<i+1>)."""
        mask = np.zeros(users, bool)
        index = [_user_index(uid, users) for uid in self.user_ids]
        mask[np.asarray(index, np.int64)] = True
        return mask


def _user_index(user_id: str, users: int) -> int:
    digits = user_id[1:] if user_id.startswith("u") else ""
    if not digits.isdigit() or not 1 <= int(digits) <= users:
        raise ValueError(f"campaign user_id {user_id!r} is not a user of this synthetic shop (u1..u{users})")
    return int(digits) - 1


@dataclass(frozen=True)
class _Treatment:
    """A campaign as the weekly loop of one chunk sees it."""

    first_week: int
    contacted: np.ndarray  # per user of the chunk
    factor: np.ndarray  # hazard factor per user: 1 - effect when contacted, else 1
    comes_back: np.ndarray  # a contacted user who has left by then comes back ...
    back_after: np.ndarray  # ... this many days into the first campaign week (0..13)


def _simulate(
    rng: np.random.Generator,
    churn_rng: np.random.Generator,
    u: _Users,
    cal: _Calendar,
    treatment: _Treatment | None = None,
) -> _Log:
    n, n_days = u.n, cal.n_days
    fade_week = np.minimum(np.ceil(u.fade_start), n_days).astype(np.int64) // 7
    fade_step = np.exp(-1.0 / u.fade_days)
    coupon_p = np.where(u.promo_dependent, 0.85, 0.12)
    signups = np.searchsorted(u.signup_day, np.arange(0, n_days + 7, 7))
    never = n_days + 1

    at_risk = np.zeros(n, bool)  # signed up, never churned: truth records one churn per user
    active_from = np.full(n, never)  # active on days in [active_from, active_until) outside breaks
    active_until = np.full(n, never)
    break_from = np.zeros(n, np.int64)
    break_until = np.zeros(n, np.int64)
    churn_day = np.full(n, -1)
    return_day = np.full(n, -1)
    last_return = -1
    cause = np.zeros(n, np.int8)
    # what each user's own events have shown so far; the hazard reads only these
    newness = np.zeros(n)
    logistics = np.zeros(n)  # decayed sum of delivery delay days
    bad_ratings = np.zeros(n)  # decayed count of ratings <= 2
    open_tickets = np.zeros(n)
    n_bought = np.zeros(n)
    n_coupon = np.zeros(n)
    promo_risk = np.zeros(n)  # squared share of orders that used a coupon
    spend = np.zeros(n)
    tier = np.zeros(n, np.int64)
    base = u.base_hazard.copy()  # times the loyalty factor of the current tier
    fade = np.ones(n)
    fading = np.ones(n)  # daily factor on `fade`, < 1 once the user's engagement fades
    comeback = np.ones(n)
    drift = np.zeros(n)
    # effects of follow-ups (deliveries, reviews, tickets) count from the day they happen
    ring_delay = np.zeros((_RING, n))
    ring_bad = np.zeros((_RING, n))
    ring_open = np.zeros((_RING, n))
    per_session = _Draws(rng, 3)
    per_purchase = _Draws(rng, 17, 2)
    per_ticket = _Draws(rng, 2)

    out: dict[str, list[np.ndarray]] = {k: [] for k in _Log.__dataclass_fields__}
    n_sessions = n_purchases = 0
    # One step per week: states are read at the week's start, so what a user lives through this week
    # weighs on their hazard and mood from next week on.
    for week in range(-(-n_days // 7)):
        d0, d1 = 7 * week, min(7 * week + 7, n_days)
        days = np.arange(d0, d1)
        nd = d1 - d0

        # --- churn (and pauses), from what each user's events have shown so far
        grievance = _W_LOGISTICS * logistics + _W_SERVICE * open_tickets + _W_SATISFACTION * bad_ratings
        if cal.promo_over[d0] > 0:
            grievance += (_W_PROMOTION * cal.promo_over[d0]) * promo_risk
        hazard = base * (1.0 + newness + grievance + _W_ENGAGEMENT * (1.0 - fade))
        if treatment is not None and week >= treatment.first_week:
            hazard = hazard * treatment.factor
        p_churn = -np.expm1(-nd * hazard)
        # a fixed number of uniforms per user and week from a stream of their own: the churn, the return
        # (delay, whether) and the pause length of a user do not depend on what other users drew
        draw, u_back, u_return, u_pause = churn_rng.random((4, n))
        churned = np.flatnonzero(at_risk & (draw < p_churn))
        if churned.size:
            share = np.stack(
                [
                    1.0 + newness[churned],
                    _W_LOGISTICS * logistics[churned],
                    _W_SERVICE * open_tickets[churned],
                    _W_SATISFACTION * bad_ratings[churned],
                    _W_PROMOTION * cal.promo_over[d0] * promo_risk[churned],
                    _W_ENGAGEMENT * (1.0 - fade[churned]),
                ]
            )
            cause[churned] = share.argmax(axis=0)
            at_risk[churned] = False
            # the conditional draw is uniform on [0, 1): reuse it for the day within the week
            day = d0 + (draw[churned] / p_churn[churned] * nd).astype(np.int64)
            churn_day[churned] = active_until[churned] = day
            back = day + 30 + (u_back[churned] * 153).astype(np.int64)  # 30..182 days later
            comes_back = (u_return[churned] < _RETURN_P) & (back < n_days)
            return_day[churned[comes_back]] = back[comes_back]
            last_return = max(last_return, int(back[comes_back].max(initial=-1)))
        p_pause = nd * _BREAK_P
        pausing = np.flatnonzero((draw >= p_churn) & (draw < p_churn + p_pause) & (break_until <= d0))
        break_from[pausing] = d0 + ((draw[pausing] - p_churn[pausing]) / p_pause * nd).astype(np.int64)
        pause_days = _BREAK_DAYS[0] + (u_pause[pausing] * (_BREAK_DAYS[1] - _BREAK_DAYS[0])).astype(np.int64)
        break_until[pausing] = break_from[pausing] + pause_days

        if treatment is not None and week == treatment.first_week:
            gone = (churn_day >= 0) & (churn_day < d0) & ((return_day < 0) | (return_day >= d0))
            won = np.flatnonzero(gone & treatment.comes_back)
            day = np.minimum(d0 + treatment.back_after[won], n_days - 1)
            return_day[won] = np.where((return_day[won] < 0) | (return_day[won] > day), day, return_day[won])
            last_return = max(last_return, int(return_day[won].max(initial=-1)))
        returning = np.zeros(0, np.int64)
        if d0 <= last_return:
            returning = np.flatnonzero((return_day >= d0) & (return_day < d1))
        if returning.size:
            # a comeback forgives old grudges and settles at a lower, steady activity level (tickets
            # still open stay open: their resolutions may yet arrive and must not drive the count < 0)
            active_from[returning] = return_day[returning]
            active_until[returning] = never
            fading[returning] = fade[returning] = 1.0
            comeback[returning] = 0.6
            logistics[returning] = bad_ratings[returning] = 0.0
        new = np.arange(signups[week], signups[week + 1])
        active_from[new] = u.signup_day[new]
        starters = np.flatnonzero(fade_week == week)
        fading[starters] = np.where(comeback[starters] == 1.0, fade_step[starters], 1.0)

        # --- sessions, day by user; unhappy users stay away before they leave for good
        drift = 0.85 * drift + rng.normal(0.0, 0.2, n)
        promo = cal.promo[d0:d1, None]
        mood = np.where(u.promo_dependent, np.where(promo, 1.2, 0.45), 1.0)
        rate = u.rate * comeback * np.exp(drift) / (1.0 + _WITHDRAWAL * grievance)
        step = np.arange(nd)[:, None]
        col = days[:, None]
        on = (col >= active_from) & (col < active_until) & ((col < break_from) | (col >= break_until))
        lam = (rate * fade) * (mood * fading**step) * cal.activity[d0:d1, None] * on
        k = rng.poisson(lam)
        k[u.signup_day[new] - d0, new] = np.maximum(k[u.signup_day[new] - d0, new], 1)
        if returning.size:
            k[return_day[returning] - d0, returning] = np.maximum(k[return_day[returning] - d0, returning], 1)
        np.minimum(k, 12, out=k)
        sd, su = np.nonzero(k)
        reps = k[sd, su]
        su = np.repeat(su, reps)
        sd = np.repeat(sd + d0, reps).astype(np.int32)
        r = per_session.take(su.size)
        cart = r[0] < u.p_cart[su] * cal.buying[sd]
        dep = u.promo_dependent[su]
        conv = u.p_buy[su] * np.where(dep, np.where(cal.promo[sd], 1.2, 0.35), 1.0)
        buy = cart & (r[1] < conv)
        stray = np.flatnonzero(r[2] < 0.004)  # account or payment questions, unrelated to orders
        out["s_user"].append(su)
        out["s_day"].append(sd)
        out["s_cart"].append(cart)
        out["s_buy"].append(buy)

        # --- purchases and what follows them
        bought = np.flatnonzero(buy)
        pu, pd_ = su[bought], sd[bought]
        m = pu.size
        r = per_purchase.take(m)
        quantity = _geometric(r[0], 0.6)
        gross = u.basket[pu] * quantity**0.7 * np.exp(0.35 * r[17])
        coupon = cal.promo[pd_] & (r[1] < coupon_p[pu])
        share_off = _DISCOUNTS[(r[2] * _DISCOUNTS.size).astype(np.int64)]
        discount = np.where(coupon, np.round(gross * share_off, 2), 0.0)
        amount = np.round(gross, 2) - discount
        long_delay = (r[5] < 0.1) * (6.0 + np.floor(r[6] * 14.0))
        delay = (r[3] < u.p_late[pu]) * np.minimum(_geometric(r[4], 0.35) + long_delay, _MAX_DELAY)
        t_delivery = pd_ + 2.33 + np.floor(r[7] * 4.0) + delay + 0.5 * r[8]
        rating = np.clip(np.round(u.taste[pu] - 0.3 * delay + 0.6 * r[18]), 1.0, 5.0)
        bad = rating <= 2.0
        reviewed = r[9] < 0.22 + 0.2 * (delay > 2) + 0.2 * bad
        t_review = np.where(reviewed, t_delivery + 0.05 + 5.95 * r[10], np.nan)
        refunded = r[11] < 0.025 + 0.12 * (reviewed & bad) + 0.05 * (delay >= 5)
        t_refund = np.where(refunded, t_delivery + 1.0 + 13.0 * r[12], np.nan)
        refund = -np.round(amount * np.where(r[13] < 0.7, 1.0, 0.2 + 0.6 * r[14]), 2)
        ticket = r[15] < np.minimum(0.02 + (delay > 0) * (0.12 + 0.05 * delay) + 0.15 * bad, 0.85)
        for key, val in (
            ("quantity", quantity),
            ("amount", amount),
            ("discount", discount),
            ("delay", delay),
            ("t_delivery", t_delivery),
            ("t_review", t_review),
            ("rating", rating),
            ("t_refund", t_refund),
            ("refund", refund),
        ):
            out[key].append(val)
        late = delay > 0
        np.add.at(ring_delay, (t_delivery[late].astype(np.int64) % _RING, pu[late]), delay[late])
        bad &= reviewed
        np.add.at(ring_bad, (t_review[bad].astype(np.int64) % _RING, pu[bad]), 1.0)

        # --- support tickets: after (mostly late) deliveries, and now and then from any session
        k_session = np.concatenate([bought[ticket], stray])
        if k_session.size:
            tu = su[k_session]
            r = per_ticket.take(tu.size)
            n_after = int(ticket.sum())
            t_ticket = np.concatenate(
                [t_delivery[ticket] + 0.05 + 2.95 * r[0, :n_after], sd[stray] + 1.0 + r[0, n_after:]]
            )
            resolved = r[1] < u.p_resolve[tu]
            # r[1] / p_resolve is uniform again given `resolved`
            t_resolved = np.where(resolved, t_ticket + 0.5 + 6.5 * r[1] / u.p_resolve[tu], np.nan)
            np.add.at(ring_open, (t_ticket.astype(np.int64) % _RING, tu), 1.0)
            np.add.at(ring_open, (t_resolved[resolved].astype(np.int64) % _RING, tu[resolved]), -1.0)
            out["k_session"].append(k_session + n_sessions)
            out["t_ticket"].append(t_ticket)
            out["t_resolved"].append(t_resolved)

        if m:
            np.add.at(n_bought, pu, 1.0)
            np.add.at(n_coupon, pu, coupon)
            promo_risk[pu] = (n_coupon[pu] / (n_bought[pu] + 1.0)) ** 2
            # loyalty tiers follow lifetime spend; an upgrade is stamped on the order that crosses
            by_user = np.argsort(pu, kind="stable")
            pu_s, amount_s = pu[by_user], amount[by_user]
            total = np.cumsum(amount_s)
            group_start = np.flatnonzero(np.r_[True, pu_s[1:] != pu_s[:-1]])
            offset = np.repeat(total[group_start] - amount_s[group_start], np.diff(np.r_[group_start, m]))
            cum = spend[pu_s] + total - offset  # lifetime spend after each of this week's orders
            after = np.searchsorted(_TIER_SPEND, cum, side="right")
            up = after > np.searchsorted(_TIER_SPEND, cum - amount_s, side="right")
            if up.any():
                out["m_purchase"].append(by_user[up] + n_purchases)
                out["m_tier"].append(after[up].astype(float))
            last = np.r_[group_start[1:] - 1, m - 1]
            who = pu_s[last]
            spend[who] = cum[last]
            tier[who] = after[last]
            base[who] = u.base_hazard[who] * _TIER_HAZARD[tier[who]]

        # --- this week's follow-ups are now part of the users' history
        for day in range(d0, d1):
            slot = day % _RING
            logistics *= _LOGISTICS_DECAY
            logistics += ring_delay[slot]
            bad_ratings *= _SATISFACTION_DECAY
            bad_ratings += ring_bad[slot]
            open_tickets += ring_open[slot]
            ring_delay[slot] = ring_bad[slot] = ring_open[slot] = 0.0
        newness *= _NEW_USER_DECAY**nd
        newness[new] = _NEW_USER_EXCESS
        at_risk[new] = True
        fade *= fading**nd
        n_sessions += su.size
        n_purchases += m

    def cat(key: str, dtype: type) -> np.ndarray:
        return np.concatenate(out[key]) if out[key] else np.zeros(0, dtype)

    dtypes = {
        "s_user": np.int64,
        "s_day": np.int32,
        "s_cart": bool,
        "s_buy": bool,
        "k_session": np.int64,
        "m_purchase": np.int64,
    }
    per_user = {"churn_day": churn_day, "return_day": return_day, "cause": cause, "tier": tier}
    logged = {k: cat(k, dtypes.get(k, float)) for k in _Log.__dataclass_fields__ if k not in per_user}
    return _Log(**logged, **per_user)


def _session_times(uniforms: np.ndarray, log: _Log) -> np.ndarray:
    """Start of each session in microseconds since the span start, non-overlapping per user.

    `uniforms` has two per session (hour, time within the hour).
    """
    n = log.s_user.size
    cdf = np.cumsum(_SESSION_HOURS) / _SESSION_HOURS.sum()
    hours = np.minimum(np.searchsorted(cdf, uniforms[:, 0], side="right"), _SESSION_HOURS.size - 1)
    start = ((hours + uniforms[:, 1]) * 3.6e9).astype(np.int64)
    # sessions of one user on one day are contiguous in the log
    new_group = np.r_[True, (log.s_user[1:] != log.s_user[:-1]) | (log.s_day[1:] != log.s_day[:-1])]
    gid = np.cumsum(new_group) - 1
    start = start[np.lexsort((start, gid))]
    pos = np.arange(n) - np.flatnonzero(new_group)[gid]
    # keep a minute between starts: start_i = i*gap + running max of (start_j - j*gap) within the group;
    # a per-group offset of two days (more than any start can move) restarts the running max per group
    gap = int(_MIN_SESSION_GAP_S * 1e6)
    offset = gid * (2 * _DAY_US)
    start = pos * gap + np.maximum.accumulate(start - pos * gap + offset) - offset
    return log.s_day.astype(np.int64) * _DAY_US + start


def _days_to_us(t: np.ndarray) -> np.ndarray:
    return np.round(t * _DAY_US).astype(np.int64)


def _sparse_floats(n: int, positions: np.ndarray, values: np.ndarray) -> pa.Array:
    """float64 array of length n holding values at positions (< 0: dropped) and nulls elsewhere."""
    # nulls rather than NaN, so SQL engines reading the Parquet skip them in aggregates
    keep = positions >= 0
    data = np.zeros(n)
    data[positions[keep]] = values[keep]
    valid = np.zeros(n, bool)
    valid[positions[keep]] = True
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    nulls = n - int(keep.sum())
    return pa.Array.from_buffers(pa.float64(), n, [bitmap, pa.py_buffer(data)], null_count=nulls)


def _id_strings(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _id_width(params: GenerateParams) -> int:
    return max(7, len(str(params.users)))


def shop_user_ids(params: GenerateParams) -> list[str]:
    """Every user id of the shop `params` generates, in order."""
    return _id_strings("u", np.arange(1, params.users + 1), _id_width(params)).to_pylist()


def _build_tables(
    rng: np.random.Generator, u: _Users, log: _Log, cal: _Calendar, first_user: int, id_width: int
) -> tuple[pa.Table, pa.Table]:
    n_s = log.s_user.size
    # one stream per kind of draw, drawn in session (time) order or per user: what is rendered for the
    # first sessions does not depend on how many sessions follow them
    session_rng, step_rng, member_rng, churn_rng = rng.spawn(4)
    per_session = session_rng.random((n_s, 5))
    s_time = _session_times(per_session[:, :2], log)

    # --- funnel rows: session, searches, views, then cart and purchase when the session had them
    n_search = (per_session[:, 2] < 0.35) * (1 + (per_session[:, 3] < 0.3))
    n_view = _geometric(per_session[:, 4], 1.0 / u.views[log.s_user]).astype(np.int64)
    per = 1 + n_search + n_view + log.s_cart + log.s_buy
    sid = np.repeat(np.arange(n_s), per)
    first = np.cumsum(per) - per
    pos = np.arange(sid.size) - first[sid]
    after_search = (1 + n_search)[sid]
    after_view = after_search + n_view[sid]
    code = np.full(sid.size, _VIEW, np.int8)
    code[pos < after_search] = _SEARCH
    code[pos == 0] = _SESSION
    code[pos == after_view] = _CART
    code[pos == after_view + 1] = _PURCHASE
    step = 1.0 + step_rng.exponential(40.0, sid.size)
    step[first] = 0.0
    elapsed = np.cumsum(step)
    elapsed -= elapsed[first][sid]
    length = elapsed[first + per - 1]
    same_next = np.r_[np.diff(s_time) > 0, False] & np.r_[log.s_user[1:] == log.s_user[:-1], False]
    room = np.where(same_next, np.r_[np.diff(s_time), 0] / 1e6 - 1.0, _MAX_SESSION_S)
    scale = np.minimum(1.0, np.minimum(room, _MAX_SESSION_S) / length)
    f_time = s_time[sid] + np.round(elapsed * scale[sid] * 1e6).astype(np.int64)
    f_user = log.s_user[sid]
    is_purchase = code == _PURCHASE
    p_time = f_time[is_purchase]
    p_user = f_user[is_purchase]
    p_session_start = s_time[sid[is_purchase]]
    n_p = p_time.size
    f_order = np.full(sid.size, -1, np.int64)
    f_order[is_purchase] = np.arange(n_p)

    # --- follow-ups; `origin` is when the activity that caused the row began
    reviewed = ~np.isnan(log.t_review)
    refunded = ~np.isnan(log.t_refund)
    resolved = ~np.isnan(log.t_resolved)
    t_user = log.s_user[log.k_session]
    t_origin = s_time[log.k_session]
    m_time = p_time[log.m_purchase] + member_rng.integers(1_000_000, 30_000_000, log.m_purchase.size)
    p_idx = np.arange(n_p)
    blocks = [
        # user, time, origin, code, order, amount, quantity, discount, rating, delay, tier
        (f_user, f_time, s_time[sid], code, f_order),
        (p_user, _days_to_us(log.t_delivery), p_session_start, _DELIVERY, p_idx),
        (p_user[reviewed], _days_to_us(log.t_review[reviewed]), p_session_start[reviewed], _REVIEW, p_idx[reviewed]),
        (p_user[refunded], _days_to_us(log.t_refund[refunded]), p_session_start[refunded], _REFUND, p_idx[refunded]),
        (t_user, _days_to_us(log.t_ticket), t_origin, _SUPPORT, -1),
        (t_user[resolved], _days_to_us(log.t_resolved[resolved]), t_origin[resolved], _RESOLVED, -1),
        (p_user[log.m_purchase], m_time, p_session_start[log.m_purchase], _MEMBERSHIP, -1),
    ]
    user = np.concatenate([b[0] for b in blocks])
    time = np.concatenate([b[1] for b in blocks])
    origin = np.concatenate([b[2] for b in blocks])
    code = np.concatenate([np.broadcast_to(np.int8(b[3]), b[0].shape) for b in blocks])
    order = np.concatenate([np.broadcast_to(np.asarray(b[4], np.int64), b[0].shape) for b in blocks])
    n_rows = np.cumsum([0] + [b[0].size for b in blocks])
    purchase_rows = np.flatnonzero(is_purchase)
    sparse = {  # column -> (rows that carry a value, values)
        "amount": (
            np.r_[purchase_rows, n_rows[3] + np.arange(refunded.sum())],
            np.r_[log.amount, log.refund[refunded]],
        ),
        "quantity": (purchase_rows, log.quantity),
        "discount": (purchase_rows, log.discount),
        "rating": (n_rows[2] + np.arange(reviewed.sum()), log.rating[reviewed]),
        "delivery_delay_days": (n_rows[1] + np.arange(n_p), log.delay),
        "tier": (n_rows[6] + np.arange(log.m_tier.size), log.m_tier),
    }

    # --- churned users emit nothing from churn until their return (or ever again)
    inf = np.iinfo(np.int64).max
    churned = log.churn_day >= 0
    churn_us = np.full(u.n, inf)
    churn_us[churned] = log.churn_day[churned] * _DAY_US + churn_rng.integers(0, _DAY_US, u.n)[churned]
    signup_us = np.full(u.n, inf)
    np.minimum.at(signup_us, log.s_user, s_time)
    return_us = np.full(u.n, inf)
    came_back = log.s_day == log.return_day[log.s_user]
    np.minimum.at(return_us, log.s_user[came_back], s_time[came_back])
    keep = (time < cal.n_days * _DAY_US) & ((time < churn_us[user]) | (origin >= return_us[user]))

    idx = np.flatnonzero(keep)
    if u.n * cal.n_days < (1 << 62) // _DAY_US:
        idx = idx[np.argsort(user[idx] * (cal.n_days * _DAY_US) + time[idx], kind="stable")]
    else:
        idx = idx[np.lexsort((time[idx], user[idx]))]

    user_ids = _id_strings("u", np.arange(first_user + 1, first_user + u.n + 1), id_width)
    # order ids number each user's purchases in time order, which is the log order
    by_user = np.argsort(p_user, kind="stable")
    seq = np.empty(n_p, np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(p_user[by_user])) + 1]
    seq[by_user] = np.arange(n_p) - np.repeat(starts, np.diff(np.r_[starts, n_p]))
    order_ids = pc.binary_join_element_wise(
        _id_strings("o", first_user + 1 + p_user, id_width), _id_strings("", seq + 1, 4), "-"
    )
    order_sel = order[idx]
    # where each generated row lands in the output (-1: dropped), to place the sparse columns directly
    out_pos = np.full(user.size, -1, np.int64)
    out_pos[idx] = np.arange(idx.size)
    columns = {
        "user_id": user_ids.take(pa.array(user[idx])),
        "event_time": pa.array(cal.start_us + time[idx], pa.timestamp("us", tz="UTC")),
        "event_type": pa.array(ROLES, pa.string()).take(pa.array(code[idx])),
        "order_id": order_ids.take(pa.array(order_sel, mask=order_sel < 0)),
    }
    for name, (rows, values) in sparse.items():
        columns[name] = _sparse_floats(idx.size, out_pos[rows], values)
    events = pa.table({name: columns[name] for name in CANONICAL_COLUMNS})

    returned = return_us < inf
    ts = pa.timestamp("us", tz="UTC")
    truth = pa.table(
        {
            "user_id": user_ids,
            "signup_time": pa.array(cal.start_us + signup_us, ts),
            "churn_time": pa.array(cal.start_us + np.where(churned, churn_us, 0), ts, mask=~churned),
            "cause": pa.array(CAUSES, pa.string()).take(pa.array(np.where(churned, log.cause, 0))),
            "returned": pa.array(returned),
            "return_time": pa.array(cal.start_us + np.where(returned, return_us, 0), ts, mask=~returned),
            "tier_at_end": pa.array(log.tier),
        }
    )
    return events, truth


def _chunks(
    params: GenerateParams, chunk_users: int, campaign: Campaign | None = None
) -> Iterator[tuple[pa.Table, pa.Table]]:
    if chunk_users < 1:
        raise ValueError(f"chunk_users must be positive (got {chunk_users})")
    cal = _calendar(params)
    n_chunks = -(-params.users // chunk_users)
    treated = campaign.treated(params.users) if campaign is not None else None
    # child i depends only on the seed and i, so chunks are reproducible one by one
    rngs = np.random.default_rng(params.seed).spawn(n_chunks)
    id_width = _id_width(params)
    for i, rng in enumerate(rngs):
        first = i * chunk_users
        n = min(chunk_users, params.users - first)
        # children 0 and 1 are the same whatever is spawned after them
        churn_rng, render_rng, campaign_rng = rng.spawn(3)
        treatment = None
        if campaign is not None and treated is not None:
            mine = treated[first : first + n]
            u = campaign_rng.random((2, n))
            treatment = _Treatment(
                first_week=campaign.first_week(params),
                contacted=mine,
                factor=np.where(mine, 1.0 - campaign.effect, 1.0),
                comes_back=mine & (u[0] < campaign.comeback),
                back_after=(u[1] * 14).astype(np.int64),
            )
        users = _draw_users(rng, n, cal)
        log = _simulate(rng, churn_rng, users, cal, treatment)
        events, truth = _build_tables(render_rng, users, log, cal, first, id_width)
        if treatment is not None:
            truth = truth.append_column("contacted", pa.array(treatment.contacted))
        yield events, truth


def iter_shop(
    params: GenerateParams, chunk_users: int = CHUNK_USERS, campaign: Campaign | None = None
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Yield (events, truth) frames per chunk of users; the output depends on params and chunk_users only."""
    for events, truth in _chunks(params, chunk_users, campaign):
        yield events.to_pandas(), truth.to_pandas()


def generate_shop(params: GenerateParams, campaign: Campaign | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate the whole shop: (events sorted by user_id, event_time; ground truth per user)."""
    parts = list(iter_shop(params, campaign=campaign))
    events = pd.concat([p[0] for p in parts], ignore_index=True)
    truth = pd.concat([p[1] for p in parts], ignore_index=True)
    return events, truth


def write_shop(
    params: GenerateParams, events_path: str | Path, truth_path: str | Path, campaign: Campaign | None = None
) -> dict[str, int]:
    """Stream the shop into two Parquet files atomically and return row counts."""
    counts = {"users": 0, "events": 0, "churned": 0, "returned": 0, "purchases": 0}
    with atomic_path(events_path) as ev_tmp, atomic_path(truth_path) as tr_tmp:
        ev_writer = tr_writer = None
        try:
            for events, truth in _chunks(params, CHUNK_USERS, campaign):
                if ev_writer is None:
                    ev_writer = pq.ParquetWriter(ev_tmp, events.schema)
                    tr_writer = pq.ParquetWriter(tr_tmp, truth.schema)
                ev_writer.write_table(events)
                tr_writer.write_table(truth)
                counts["events"] += events.num_rows
                counts["users"] += truth.num_rows
                counts["churned"] += truth.num_rows - truth["churn_time"].null_count
                counts["returned"] += int(pc.sum(truth["returned"]).as_py() or 0)
                counts["purchases"] += int(pc.sum(pc.equal(events["event_type"], "purchase")).as_py() or 0)
        finally:
            for writer in (ev_writer, tr_writer):
                if writer is not None:
                    writer.close()
    return counts
