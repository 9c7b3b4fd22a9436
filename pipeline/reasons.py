"""Plain-language reason codes per user from SHAP contributions and the feature catalogue."""

from __future__ import annotations

import math
from string import Formatter

import numpy as np
import pandas as pd

from features.catalogue import Feature

_FIELDS_CACHE: dict[str, set[str]] = {}


def _fields(template: str) -> set[str]:
    if template not in _FIELDS_CACHE:
        _FIELDS_CACHE[template] = {f for _, f, _, _ in Formatter().parse(template) if f}
    return _FIELDS_CACHE[template]


def reason_text(feature: Feature, row: dict[str, float]) -> str:
    """The first template of `feature` whose placeholders all have values in `row`."""
    value = row.get(feature.name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return feature.reason_missing or f"{feature.description}: unknown"
    known = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
    known["value"] = value
    one = round(value) == 1
    known |= {"s": "" if one else "s", "es": "" if one else "es", "ies": "y" if one else "ies"}
    for template in feature.reasons:
        if _fields(template) <= known.keys():
            return template.format(**known)
    return f"{feature.description}: {value:g}"


def top_reasons(
    contrib: np.ndarray, rows: pd.DataFrame, features: list[str], catalogue: dict[str, Feature], k: int = 3
) -> pd.DataFrame:
    """reason_1..k, their families and driver_family (reason_1's) per row, from SHAP contributions.

    Only explainable features with a known value are cited, and a driver only when the user's value
    shows it ("2 late deliveries", never "0 late deliveries"). Risk-raising drivers lead, strongest
    first, one per family; then risk-raising states (recency, volume: what every leaving user shares)
    of other families; then more of the same families; then, for users with few risk-raising
    features, the strongest of the rest. Identical sentences are never repeated. Ties are broken by
    the model's feature order, so the same row always gets the same reasons.
    """
    explainable = np.array([catalogue[f].explainable if f in catalogue else False for f in features])
    masked = np.where(explainable, contrib, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")
    # templates may cite any catalogue column of the row as a reference point, not only model features
    context = [c for c in rows.columns if c in catalogue]
    values = rows[context].astype("float64").to_numpy()
    out: dict[str, list[str]] = {f"reason_{i + 1}": [] for i in range(k)}
    out |= {f"reason_{i + 1}_family": [] for i in range(k)}
    for r in range(len(rows)):
        row = dict(zip(context, values[r].tolist(), strict=True))
        # (feature index, family, is a driver), strongest contribution first
        positive, weak = [], []
        for j in order[r]:
            if not explainable[j]:
                break
            feature = catalogue[features[j]]
            value = row.get(feature.name, math.nan)
            if feature.driver_if is not None and (math.isnan(value) or not feature.driver_if(value)):
                continue  # the user's value does not show this driver
            if math.isnan(value) and feature.reason_missing is None:
                continue  # "unknown" explains nothing
            (positive if contrib[r, j] > 0 else weak).append((j, feature.family, feature.driver_if is not None))
        ranked, families_seen = [], set()
        for want_driver in (True, False):
            for j, family, is_driver in positive:
                if is_driver == want_driver and family not in families_seen:
                    families_seen.add(family)
                    ranked.append((j, family))
        ranked += [(j, f) for j, f, _ in positive if (j, f) not in ranked] + [(j, f) for j, f, _ in weak]
        chosen, seen_texts = [], set()
        for j, family in ranked:
            text = reason_text(catalogue[features[j]], row)
            if text not in seen_texts:
                seen_texts.add(text)
                chosen.append((text, family))
                if len(chosen) == k:
                    break
        chosen += [("", "")] * (k - len(chosen))
        for i, (text, family) in enumerate(chosen):
            out[f"reason_{i + 1}"].append(text)
            out[f"reason_{i + 1}_family"].append(family)
    return pd.DataFrame({**out, "driver_family": out["reason_1_family"]}, index=rows.index)
