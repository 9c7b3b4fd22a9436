"""params.yaml validation: typos and bad values fail with the key's name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, Params, load_params

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_repo_params_yaml_is_valid() -> None:
    p = load_params(REPO / "params.yaml")
    assert p.data.source == "synthetic"
    assert p.mlflow.model_name == "winback-churn"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"trian": {"num_leaves": 3}}, "unknown key 'trian'"),
        ({"train": {"num_leave": 3}}, "unknown key 'train.num_leave'"),
        ({"labels": {"horizon_days": 0}}, "labels.horizon_days"),
        ({"labels": {"qualifying": ["purchse"]}}, "purchse"),
        ({"data": {"columns": {"user": "CustomerID"}}}, "user"),
        ({"score": {"tier_thresholds": {"high": 0.2, "medium": 0.5}}}, "tier_thresholds"),
        ({"generate": {"start": "2024-01-01", "end": "2024-06-01"}}, "12 months"),
    ],
)
def test_bad_params_are_rejected_with_the_key(tmp_path: Path, data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, data))
    assert needle in str(err.value)
    assert str(tmp_path / "params.yaml") in str(err.value)


def test_missing_and_unparseable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_windows_are_sorted_and_deduplicated() -> None:
    assert Params.model_validate({"features": {"windows": [30, 7, 30]}}).features.windows == [7, 30]
