"""Guards before publishing: population change and drift, with messages that say what to do."""

from __future__ import annotations

from pipeline import guards
from pipeline.config import GuardParams

GP = GuardParams(max_population_change=0.5, max_score_psi=0.5, max_feature_psi=5.0)


def _psi(**values: float) -> list[dict]:
    return [{"feature": k, "psi": v} for k, v in values.items()]


def test_population_change_beyond_the_threshold_fails_naming_both_lists() -> None:
    assert guards.population_check(1400, 1000, "2026-06-01", GP)["failed"] is None
    out = guards.population_check(400, 1000, "2026-06-01", GP)
    assert out["change"] == -0.6
    assert "400 users, -60% against the 1,000 of the list of 2026-06-01" in out["failed"]
    assert "max_population_change" in out["failed"]
    assert guards.population_check(400, None, None, GP)["failed"] is None  # the first list has nothing to compare


def test_drift_fails_on_the_score_or_any_one_feature() -> None:
    calm = {"reference_rows": 10, "score_psi": 0.1, "feature_psi": _psi(a=0.3, b=0.0)}
    assert guards.drift_check(calm, GP, "3")["failed"] == []
    bad = {"reference_rows": 10, "score_psi": 0.7, "feature_psi": _psi(a=9.1, b=6.0, c=0.1)}
    failed = guards.drift_check(bad, GP, "3")["failed"]
    assert len(failed) == 2
    assert "PSI against model v3's training rows is 0.700" in failed[0]
    assert failed[1].startswith("2 feature(s) drifted beyond PSI 5.0") and "a 9.100, b 6.000" in failed[1]
    none = guards.drift_check(None, GP, "3")
    assert none["available"] is False and none["failed"] == [] and "no drift reference" in none["note"]
    pop = guards.population_check(400, 1000, "2026-06-01", GP)
    assert guards.failures(pop, guards.drift_check(bad, GP, "3")) == [pop["failed"], *failed]
