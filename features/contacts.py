"""Which snapshot rows a retention contact may have changed: kept beside the label, never a feature."""

from __future__ import annotations

from ibis.expr.types import Table

from features.rollup import SECONDS_PER_DAY


def contacted_rows(contacts: Table, cutoffs: Table, horizon_days: int) -> Table:
    """(user_id, cutoff_day) pairs with a contact in [cutoff - horizon, cutoff + horizon).

    A contact on day t changes what the user does from t on, for a while: an offer stays valid, a
    resolved complaint keeps its goodwill. The rule assumes the effect lasts up to one label horizon,
    so a contact taints the label window of every cutoff in (t - horizon, t] (the contact falls inside
    the window) and of every cutoff in (t, t + horizon] (the window still feels it, and the features
    already show the treated behaviour). Days are whole UTC days from epoch seconds, like the rollup,
    so both engines agree on the boundaries.
    """
    c = contacts.mutate(contact_day=contacts.contacted_at.epoch_seconds().floor().cast("int64") // SECONDS_PER_DAY)
    j = c.join(
        cutoffs,
        (c.contact_day >= cutoffs.cutoff_day - horizon_days) & (c.contact_day < cutoffs.cutoff_day + horizon_days),
    )
    return j.select("user_id", "cutoff_day").distinct()
