"""Self-contained HTML report for one scoring run (images inlined, no external requests)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from pipeline.paths import Paths

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("pipeline", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


def _image(path: Path) -> str | None:
    if not path.exists():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def render_report(paths: Paths, list_dir: Path, top: int = 50) -> str:
    """The report as one HTML string: summary cards, top of the list, drivers, model card, data quality."""
    lst = pd.read_parquet(list_dir / "winback.parquet")
    summary = _json(list_dir / "summary.json")
    evaluation = _json(paths.metrics("evaluate"))
    metric_names = ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top10", "recall_top10", "value_recall_at_k"]
    models = [m for m, v in evaluation.items() if isinstance(v, dict) and "roc_auc" in v]
    imp_path = paths.reports / "shap_importance.csv"
    cohorts_path = list_dir / "cohort_retention.csv"
    cohorts = pd.read_csv(cohorts_path) if cohorts_path.exists() else pd.DataFrame()
    if len(cohorts):
        # the last 12 cohorts, their first 12 months: a readable triangle
        cohorts = cohorts[cohorts["months_since"] <= 12]
        keep = sorted(cohorts["cohort_month"].unique())[-12:]
        cohorts = cohorts[cohorts["cohort_month"].isin(keep)].pivot(
            index="cohort_month", columns="months_since", values="retention"
        )
    probs = lst["churn_probability"].to_numpy(float)
    counts = np.histogram(probs, bins=10, range=(0.0, 1.0))[0]
    risk_bins = [
        {"label": f"{i / 10:.1f}-{(i + 1) / 10:.1f}", "users": int(n), "width": int(300 * n / max(counts.max(), 1))}
        for i, n in enumerate(counts)
    ]
    rates_path = paths.churn_rate_by_cutoff
    churn_rates = pd.read_csv(rates_path).tail(12).to_dict("records") if rates_path.exists() else []
    params = _json(list_dir / "summary.json").get("params", {})
    return _ENV.get_template("report.html.j2").render(
        risk_bins=risk_bins,
        churn_rates=churn_rates,
        horizon=params.get("horizon_days"),
        capacity=params.get("contact_capacity"),
        budget=params.get("budget"),
        calibration_png=_image(paths.plots / "calibration.png"),
        summary=summary,
        rows=lst.head(top).to_dict("records"),
        top=top,
        evaluation=evaluation,
        backtest=evaluation.get("backtest"),
        promotion=_json(paths.champion_info),
        metric_names=[m for m in metric_names if models and m in evaluation[models[0]]],
        models=models,
        families=_json(paths.reports / "shap_families.json"),
        importance=pd.read_csv(imp_path).head(15).to_dict("records") if imp_path.exists() else [],
        bar_png=_image(paths.reports / "shap_bar.png"),
        ingest=_json(paths.metrics("ingest")),
        cohorts=cohorts,
        features=_json(paths.metrics("features")),
    )
