"""Explanation fidelity counts only high-risk users who churned from a planted cause."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.fidelity import explanation_fidelity


def test_fidelity_counts_matches_among_high_risk_planted_churners() -> None:
    lst = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d", "e", "f"],
            "risk_tier": ["high", "high", "high", "high", "low", "high"],
            "driver_family": ["logistics", "service", "engagement", "logistics", "logistics", "promotion"],
        }
    )
    churned = pd.Series([1, 1, 1, 0, 1, 1], index=list("abcdef"))
    causes = pd.Series(["logistics", "logistics", "engagement", "logistics", "logistics", "none"], index=list("abcdef"))
    out = explanation_fidelity(lst, churned, causes)
    # d did not churn, e is not high risk, f churned for no planted reason: a, b and c are judged
    assert (out["users"], out["matches"]) == (3, 2)
    assert out["fidelity"] == pytest.approx(2 / 3)
    assert out["by_cause"] == {"engagement": {"users": 1, "matches": 1}, "logistics": {"users": 2, "matches": 1}}
    assert out["confusion"]["logistics"] == {"logistics": 1, "service": 1}
