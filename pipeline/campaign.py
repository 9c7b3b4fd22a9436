"""Win-back lists as campaigns: who was selected and contacted, and a simulated campaign on the synthetic shop.

`simulate_campaign` regenerates the synthetic shop so that, from the list's as_of (+ offset) on, the users
the list marks for contact churn less (their hazard x (1 - effect)); everything before the contact day is
unchanged (pipeline/synthetic.py keeps its random streams prefix-stable). It writes the contact log the
retention team would have kept, and the true effect: the same shop without the campaign (common random
numbers for every churn draw) gives each contacted user's counterfactual churn label, so the effect that
`winback measure` should recover is known.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import io
from pipeline.config import GenerateParams, Params
from pipeline.errors import WinbackError
from pipeline.paths import Paths

LIST_NEEDS = ("user_id", "group", "segment", "recommended_action", "as_of")
# contacts happen in office hours of the contact day (UTC)
_CONTACT_HOURS = (9, 17)


def list_path(paths: Paths, which: str | Path) -> Path:
    """A win-back list from a date (outputs/winback/<date>/winback.parquet) or a file path."""
    text = str(which)
    try:
        return paths.winback_dir(dt.date.fromisoformat(text)) / "winback.parquet"
    except ValueError:
        return Path(text)


def read_list(path: str | Path) -> pd.DataFrame:
    """A win-back list (Parquet or CSV) with boolean `selected` and `contact`.

    Lists from before those columns existed count every row as selected and every treatment row as a
    contact.
    """
    path = Path(path)
    if not path.is_file():
        raise WinbackError(f"{path}: no win-back list there; run `winback score --as-of DATE` first")
    lst = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"user_id": str})
    missing = [c for c in LIST_NEEDS if c not in lst.columns]
    if missing:
        raise WinbackError(f"{path}: not a win-back list, columns {missing} are missing")
    groups = set(lst["group"].astype(str))
    if not groups <= {"treatment", "holdout"}:
        raise WinbackError(f"{path}: column group has {sorted(groups)}, expected treatment / holdout")
    dates = lst["as_of"].astype(str).unique()
    if len(dates) != 1:
        raise WinbackError(f"{path}: column as_of should hold one date, has {sorted(dates)[:5]}")
    lst = lst.copy()
    lst.attrs["has_selected"] = "selected" in lst.columns
    lst["user_id"] = lst["user_id"].astype(str)
    lst["group"] = lst["group"].astype(str)
    selected = _as_bool(lst["selected"]) if "selected" in lst else pd.Series(True, index=lst.index)
    lst["selected"] = selected.to_numpy()
    treated = selected & (lst["group"] == "treatment")
    lst["contact"] = (_as_bool(lst["contact"]) & treated if "contact" in lst else treated).to_numpy()
    return lst


def _as_bool(values: pd.Series) -> pd.Series:
    """Booleans from a bool column or from CSV text ("True"/"False", "1"/"0")."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.fillna(False).astype(bool)
    return values.astype(str).str.strip().str.lower().isin(["true", "1", "yes"])


def list_as_of(lst: pd.DataFrame) -> dt.date:
    """The date a list was scored for."""
    return dt.date.fromisoformat(str(lst["as_of"].iloc[0])[:10])


def contact_log(lst: pd.DataFrame, contact_day: dt.date, seed: int) -> pd.DataFrame:
    """The log the team would keep: one contact per `contact` row, in office hours of the contact day."""
    rows = lst[lst["contact"]].sort_values("rank" if "rank" in lst else "user_id", kind="stable")
    rng = np.random.default_rng([seed, contact_day.toordinal()])
    lo, hi = _CONTACT_HOURS
    seconds = np.sort(rng.uniform(lo * 3600, hi * 3600, len(rows))).round()
    at = pd.Timestamp(contact_day, tz="UTC") + pd.to_timedelta(seconds, unit="s")
    return pd.DataFrame(
        {
            "user_id": rows["user_id"].to_numpy(),
            "contacted_at": pd.Series(at, dtype=pd.DatetimeTZDtype("us", "UTC")).to_numpy(),
            "action": rows["recommended_action"].astype(str).to_numpy(),
        }
    )


def write_plain_shop(params: Params, paths: Paths) -> dict[str, Any]:
    """The synthetic shop without a campaign, and an empty contact log beside it."""
    from pipeline.contacts import empty_contacts
    from pipeline.synthetic import write_shop

    counts = write_shop(params.generate, paths.raw_events, paths.truth)
    io.write_parquet(empty_contacts(), paths.raw_contacts)
    paths.campaign_truth.unlink(missing_ok=True)  # a plain shop has no campaign: no stale truth beside it
    return counts


def labels_at(params: Params, events_path: Path, as_of: dt.date) -> pd.DataFrame:
    """(user_id, churned) at cutoff `as_of` by the labels params, from a canonical events file."""
    from features.labels import churn_labels
    from features.windows import cutoff_table
    from pipeline.build import rollup
    from pipeline.engine import connect, read_events

    con = connect(params)
    lp = params.labels
    rolled = rollup(read_events(con, events_path))
    labels = con.to_pandas(
        churn_labels(rolled, cutoff_table([as_of]), lp.lookback_days, lp.horizon_days, lp.qualifying)
    )
    return pd.DataFrame({"user_id": labels["user_id"].astype(str), "churned": labels["churned"].astype(int)})


def _paired(with_: np.ndarray, without: np.ndarray) -> dict[str, Any]:
    n = len(with_)
    if n == 0:
        return {"users": 0}
    diff = with_.astype(float) - without.astype(float)
    rate_without = float(without.mean())
    return {
        "users": n,
        "churn_rate_with_campaign": float(with_.mean()),
        "churn_rate_without_campaign": rate_without,
        "effect": float(diff.mean()),
        "relative_effect": float(with_.mean() / rate_without - 1) if rate_without > 0 else None,
        # paired: the same users in both runs (their outcomes share everything up to the contact day)
        "standard_error": float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
    }


def true_effect(lst: pd.DataFrame, with_: pd.DataFrame, without: pd.DataFrame) -> dict[str, Any]:
    """Churn of the list's users with and without the campaign, for the contacted and the selected controls."""
    both = with_.merge(without, on="user_id", suffixes=("_with", "_without"))
    frame = lst.merge(both, on="user_id", how="inner")
    contacted = frame[frame["contact"]]
    controls = frame[frame["selected"] & (frame["group"] == "holdout")]
    out: dict[str, Any] = {
        "contacted": _paired(contacted["churned_with"].to_numpy(), contacted["churned_without"].to_numpy()),
        "selected_holdout": _paired(controls["churned_with"].to_numpy(), controls["churned_without"].to_numpy()),
        "by_action": {
            str(action): _paired(g["churned_with"].to_numpy(), g["churned_without"].to_numpy())
            for action, g in contacted.groupby("recommended_action", sort=True)
        },
        "by_segment": {
            str(seg): _paired(g["churned_with"].to_numpy(), g["churned_without"].to_numpy())
            for seg, g in contacted.groupby("segment", sort=True)
        },
    }
    out["true_effect"] = out["contacted"].get("effect")
    out["true_relative_effect"] = out["contacted"].get("relative_effect")
    return out


def _shop_ids(lst: pd.DataFrame, params: Params) -> pd.DataFrame:
    """The list with the synthetic shop's own user ids: a list scored with privacy.pseudonymise_user_ids names
    its users by pseudonym, while the shop is generated, and its contact log written, with the raw ids (ingest
    pseudonymises both again). Ids that are no pseudonym of a shop user are left as they are."""
    from pipeline.privacy import pseudonym_key, pseudonymise
    from pipeline.synthetic import shop_user_ids

    key = pseudonym_key(params.privacy)
    if key is None:
        return lst
    raw = pd.Series(shop_user_ids(params.generate), dtype="object")
    back = dict(zip(pseudonymise(raw, key), raw, strict=True))
    return lst.assign(user_id=[back.get(u, u) for u in lst["user_id"]])


def simulate_campaign(params: Params, paths: Paths) -> dict[str, Any]:
    """Regenerate the synthetic shop with `generate.campaign`, write the contact log and the true effect."""
    from pipeline.synthetic import Campaign, write_shop

    cp = params.generate.campaign
    if cp is None:
        raise WinbackError("generate.campaign is not set")
    if params.data.source != "synthetic":
        raise WinbackError(
            f"a campaign is simulated on the synthetic shop, but data.source is {params.data.source!r}: "
            "run it with params whose data.source is 'synthetic'"
        )
    lst = _shop_ids(read_list(cp.list_path), params)
    as_of = list_as_of(lst)
    contact_day = as_of + dt.timedelta(days=cp.contact_day_offset)
    log = contact_log(lst, contact_day, params.generate.seed)
    gp: GenerateParams = params.generate.model_copy(update={"campaign": None})
    try:
        campaign = Campaign(contact_day, cp.effect, frozenset(log["user_id"]), cp.return_share)
        effective_from = campaign.effective_from(gp)
        paths.raw_events.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=paths.raw_events.parent, prefix=".campaign-") as tmp:
            plain = Path(tmp) / "events.parquet"
            write_shop(gp, plain, Path(tmp) / "truth.parquet")
            without = labels_at(params, plain, as_of)
            treated_events, treated_truth = Path(tmp) / "treated.parquet", Path(tmp) / "treated_truth.parquet"
            counts = write_shop(gp, treated_events, treated_truth, campaign)
            with_ = labels_at(params, treated_events, as_of)
            truth = pd.read_parquet(treated_truth)
            for name, labels in (("churned_label", with_), ("churned_label_without_campaign", without)):
                truth[name] = truth["user_id"].map(labels.set_index("user_id")["churned"]).astype("Int8")
            effect = true_effect(lst, with_, without)
            io.write_parquet(truth, paths.truth)
            io.write_parquet(log, paths.raw_contacts)
            treated_events.replace(paths.raw_events)
    except ValueError as exc:  # users not in this shop, a contact day outside its span
        raise WinbackError(f"{cp.list_path}: cannot simulate this campaign: {exc}") from exc
    summary = {
        "list": str(cp.list_path),
        "as_of": as_of.isoformat(),
        "contact_day": contact_day.isoformat(),
        "effective_from": effective_from.isoformat(),
        "hazard_effect": cp.effect,
        "return_share": campaign.comeback,
        "contacts": len(log),
        "horizon_days": params.labels.horizon_days,
        **effect,
    }
    io.write_json(summary, paths.campaign_truth)
    return {**counts, "campaign": {k: summary[k] for k in ("as_of", "contacts", "hazard_effect", "true_effect")}}
