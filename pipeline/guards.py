"""Checks a scored list must pass before it is published: population size and drift against the model."""

from __future__ import annotations

from typing import Any

from pipeline.config import GuardParams


def population_check(users: int, previous_users: int | None, previous_as_of: str | None, gp: GuardParams) -> dict:
    """The population's size against the last published list's; fails beyond max_population_change."""
    if not previous_users:
        return {"users": users, "previous_users": None, "change": None, "failed": None}
    change = users / previous_users - 1
    failed = None
    if abs(change) > gp.max_population_change:
        failed = (
            f"the population is {users:,} users, {change:+.0%} against the {previous_users:,} of the list of "
            f"{previous_as_of} (score.guards.max_population_change {gp.max_population_change:.0%}): "
            "check that the input is complete and the mapping unchanged"
        )
    return {
        "users": users,
        "previous_users": previous_users,
        "previous_as_of": previous_as_of,
        "change": round(change, 6),
        "failed": failed,
    }


def drift_check(drift: dict[str, Any] | None, gp: GuardParams, model_version: str) -> dict:
    """Score and feature PSI against the model's training rows; fails beyond max_score_psi / max_feature_psi."""
    if drift is None:
        return {
            "available": False,
            "note": f"model v{model_version} has no drift reference (trained before drift profiles): not checked",
            "failed": [],
        }
    failed = []
    if drift["score_psi"] > gp.max_score_psi:
        failed.append(
            f"the churn score's PSI against model v{model_version}'s training rows is {drift['score_psi']:.3f} "
            f"(score.guards.max_score_psi {gp.max_score_psi})"
        )
    over = [r for r in drift["feature_psi"] if r["psi"] > gp.max_feature_psi]
    if over:
        shown = ", ".join(f"{r['feature']} {r['psi']:.3f}" for r in over[:5])
        failed.append(
            f"{len(over)} feature(s) drifted beyond PSI {gp.max_feature_psi} (score.guards.max_feature_psi): "
            f"{shown}{' ...' if len(over) > 5 else ''}"
        )
    return {
        "available": True,
        **drift,
        "thresholds": {"max_score_psi": gp.max_score_psi, "max_feature_psi": gp.max_feature_psi},
        "failed": failed,
    }


def failures(population: dict, drift: dict) -> list[str]:
    """Every failed guard's message."""
    return ([population["failed"]] if population["failed"] else []) + drift["failed"]
