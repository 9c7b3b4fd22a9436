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
    """reason_1..k and driver_family per row: explainable features by descending SHAP contribution.

    Features that raise the risk most come first; each reason comes from another driver family
    while there are enough families (so "1 ticket open" and "1 ticket in 90 days" do not both
    appear), and identical sentences are never repeated. Ties are broken by catalogue order, so the
    same row always gets the same reasons.
    """
    explainable = np.array([catalogue[f].explainable if f in catalogue else False for f in features])
    masked = np.where(explainable, contrib, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")
    values = rows[features].astype("float64").to_numpy()
    out = {f"reason_{i + 1}": [] for i in range(k)}
    families = []
    for r in range(len(rows)):
        row = dict(zip(features, values[r].tolist(), strict=True))
        # reasons that raise the risk, one per family first; then more of the same families; then,
        # for users with few risk-raising drivers, the strongest remaining ones
        first, same_family, weak = [], [], []
        families_seen: list[str] = []
        seen_texts: set[str] = set()
        for j in order[r]:
            if not explainable[j]:
                break
            feature = catalogue[features[j]]
            value = row.get(feature.name)
            if (value is None or math.isnan(value)) and feature.reason_missing is None:
                continue  # "unknown" explains nothing
            text = reason_text(feature, row)
            if text in seen_texts:
                continue
            seen_texts.add(text)
            if contrib[r, j] <= 0:
                weak.append((text, feature.family))
            elif feature.family in families_seen:
                same_family.append((text, feature.family))
            else:
                families_seen.append(feature.family)
                first.append((text, feature.family))
            if len(first) == k:
                break
        chosen = (first + same_family + weak)[:k]
        texts = [t for t, _ in chosen]
        family = chosen[0][1] if chosen else ""
        texts += [""] * (k - len(texts))
        for i in range(k):
            out[f"reason_{i + 1}"].append(texts[i])
        families.append(family)
    return pd.DataFrame({**out, "driver_family": families}, index=rows.index)
