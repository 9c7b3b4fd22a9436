"""Every stage in order on one config, everything written under one output directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import stages
from pipeline.config import MlflowParams, Params
from pipeline.paths import Paths

STAGES: tuple[Callable[[Params, Paths], Any], ...] = (
    stages.generate,
    stages.ingest,
    stages.features,
    stages.train,
    stages.evaluate,
    stages.explain,
    stages.score,
    stages.report,
)


def params_for_output(params: Params, out: Path) -> Params:
    """Keep a relative sqlite tracking store inside the output directory, so runs do not mix."""
    uri = params.mlflow.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not Path(uri.removeprefix(prefix)).is_absolute():
        local = f"{prefix}{(out / uri.removeprefix(prefix)).resolve()}"
        return params.model_copy(
            update={"mlflow": MlflowParams(**{**params.mlflow.model_dump(), "tracking_uri": local})}
        )
    return params


def run_all(params: Params, out: Path, report: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """Run the pipeline; the synthetic shop is generated only when it is the configured source."""
    out.mkdir(parents=True, exist_ok=True)
    params = params_for_output(params, out)
    paths = Paths(out)
    results: dict[str, Any] = {}
    for stage in STAGES:
        if stage is stages.generate and params.data.source != "synthetic":
            continue
        results[stage.__name__] = stage(params, paths)
        if report:
            report(stage.__name__, results[stage.__name__])
    return results
