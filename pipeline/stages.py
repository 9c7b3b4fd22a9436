"""Thin stage entry points: read params and inputs, call the logic, write outputs atomically."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features.catalogue import catalogue, catalogue_table
from features.kpis import churn_rate_per_cutoff, cohort_retention, retention_kpis
from features.labels import churn_labels
from features.windows import cutoff_table, day_number
from pipeline import drift, guards, io, publish, tracking
from pipeline.build import (
    activity,
    build_snapshots,
    data_span,
    events_span,
    labelable_cutoffs,
    read_snapshots,
    scoring_rollup,
    write_snapshots,
)
from pipeline.config import Params
from pipeline.engine import connect, engine_path, memory_errors, read_events, spark_session
from pipeline.errors import GuardError, InputError, ModelError, WinbackError
from pipeline.explain import family_totals, global_importance, plot_bar, plot_beeswarm, shap_values
from pipeline.metrics import calibration_figure, curves
from pipeline.paths import LIST_DIR, Paths
from pipeline.reasons import top_reasons
from pipeline.score import compare_lists, list_summary, winback_list
from pipeline.train import (
    LABEL,
    churn_probability,
    churn_scores,
    fit_churn_model,
    inner_booster,
    matrix,
    model_feature_names,
    rows_at,
)


def generate(params: Params, paths: Paths) -> dict:
    """Write the synthetic shop's events and, apart from them, its ground truth and its contact log."""
    from pipeline.campaign import simulate_campaign, write_plain_shop

    if params.generate.campaign is not None:
        counts = simulate_campaign(params, paths)
    else:
        counts = write_plain_shop(params, paths)
    io.write_json(counts, paths.metrics("generate"))
    return counts


def ingest(params: Params, paths: Paths) -> dict:
    """Validate, normalise and quarantine the configured source into canonical events."""
    from pipeline.contacts import contact_files, ingest_contacts
    from pipeline.ingest import ingest as run_ingest
    from pipeline.privacy import pseudonym_key

    key = pseudonym_key(params.privacy)  # a missing key fails before anything is read or written
    contact_log = contact_files(params.data, paths.raw_contacts)  # a missing log fails before anything is written
    spark = spark_session(params) if params.engine == "spark" else None
    outputs = (paths.events, paths.rejects, paths.contacts, paths.contact_rejects, paths.metrics("ingest"))
    # published as a set: a contact log that fails validation after the events were read leaves every
    # previous output in place, never new events beside the old contacts
    with io.atomic_paths(*outputs) as (events, rejects, contacts, contact_rejects, out_metrics):
        metrics = run_ingest(params.data, paths.raw_events, events, rejects, out_metrics, spark=spark, key=key)
        metrics["contacts"] = ingest_contacts(params.data, contact_log, events, contacts, contact_rejects, key=key)
        metrics["pseudonymised_user_ids"] = key is not None
        io.write_json(metrics, out_metrics)
    return metrics


def features(params: Params, paths: Paths) -> dict:
    """Labelled snapshots for every labelable cutoff."""
    con = connect(params)
    events = read_events(con, paths.events)
    first, end = events_span(con, events)
    cutoffs = labelable_cutoffs(first, end, params.features, params.labels)
    # built and written in user ranges (features.snapshot_part_rows), so memory does not grow with the data
    built = write_snapshots(con, events, cutoffs, params, paths.contacts, paths.snapshots)
    summary = {
        "data_first_day": first.isoformat(),
        "data_end": end.isoformat(),
        "cutoffs": len(cutoffs),
        **{k: built[k] for k in ("rows", "users", "base_rate", "contacted_rows")},
    }
    io.write_json(summary, paths.metrics("features"))
    # the snapshots' rows are the population at each cutoff, with its labels
    snaps = con.read_parquet(engine_path(paths.snapshots))
    labels = snaps.select(cutoff_day=snaps.cutoff.epoch_days(), churned=snaps.churned)
    io.write_csv(con.to_pandas(churn_rate_per_cutoff(labels)), paths.churn_rate_by_cutoff)
    return summary


def train(params: Params, paths: Paths) -> dict:
    """Fit LightGBM on closed labels, early-stop on a later slice, calibrate on a later one, log to MLflow."""
    snap = read_snapshots(paths.snapshots)
    candidates = [f.name for f in catalogue(params.features.windows)]
    tm = fit_churn_model(snap, candidates, params.labels.horizon_days, params.train, params.seed, params.threads)
    tracking.setup(params.mlflow)
    # what scoring runs compare their population with (PSI guards): the rows the model was fitted on
    fitted = matrix(snap[snap["cutoff"].isin(tm.split.train)], tm.features)
    reference = drift.profile(fitted, churn_probability(tm.model, fitted))
    run_id, info = tracking.log_training(tm, params, catalogue_table(params.features.windows), snap, reference)
    result = {
        "run_id": run_id,
        "model_uri": info.model_uri,
        "model_version": str(info.registered_model_version),
        "features": tm.features,
        "calibration_method": tm.calibration_method,
        "best_iteration": tm.best_iteration,
        "split": tm.split.as_dict(),
    }
    io.write_json(result, paths.train_info)
    summary = {
        "validation_roc_auc": tm.validation["roc_auc"],
        "features": len(tm.features),
        "train_rows": tm.train_rows,
        "best_iteration": tm.best_iteration,
        "contacted_rows": tm.contacted_rows,
    }
    io.write_json(summary, paths.metrics("train"))
    return result


def evaluate(params: Params, paths: Paths) -> dict:
    """Rolling-origin backtest of the model and every baseline; promote or not on the last cutoff."""
    from pipeline.backtest import run_backtest, summarise
    from pipeline.promotion import decide

    info = json.loads(paths.train_info.read_text())
    snap = read_snapshots(paths.snapshots)
    model = tracking.load_model(info["model_uri"])
    preds, long = run_backtest(snap, params, model)
    io.write_parquet(preds, paths.predictions)
    io.write_csv(long, paths.backtest_metrics)
    test_cutoff = dt.date.fromisoformat(info["split"]["test"])
    last = preds[preds["cutoff"] == test_cutoff]
    results = {
        name: grp.set_index("metric")["value"].to_dict()
        for name, grp in long[long["cutoff"] == test_cutoff].groupby("model")
    }
    scores = {c.removeprefix("p_"): last[c].to_numpy() for c in last.columns if c.startswith("p_")}
    results_curves = curves(last[LABEL].to_numpy(int), scores, params.evaluate.calibration_bins)
    for curve, df in results_curves.items():
        for model_name, part in df.groupby("model", sort=True):
            io.write_csv(part.drop(columns="model"), paths.plots / curve / f"{model_name}.csv")
    figure = calibration_figure(results_curves["calibration"])
    with io.atomic_path(paths.plots / "calibration.png") as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    tracking.setup(params.mlflow)
    decision = decide(params, info, rows_at(snap, test_cutoff), results, paths.audit_log)
    backtest = summarise(long)
    with mlflow.start_run(run_id=info["run_id"]):
        for name, metrics in results.items():
            mlflow.log_metrics({f"test_{name}_{k}": v for k, v in metrics.items()})
        for name, metrics in backtest["mean"].items():
            mlflow.log_metrics({f"backtest_{name}_{k}": v for k, v in metrics.items()})
        mlflow.set_tag("promotion", decision["decision"])
        mlflow.log_artifacts(str(paths.plots), artifact_path="plots")
    out = {"test_cutoff": test_cutoff.isoformat(), **results, "backtest": backtest}
    io.write_json(out, paths.metrics("evaluate"))
    io.write_json(decision, paths.champion_info)
    return {**out, "promotion": decision}


def explain(params: Params, paths: Paths, max_rows: int = 5000) -> dict:
    """Global SHAP importance (bar, beeswarm, per-family totals) on the test snapshot, logged to MLflow."""
    info = json.loads(paths.train_info.read_text())
    snap = read_snapshots(paths.snapshots)
    test = rows_at(snap, dt.date.fromisoformat(info["split"]["test"]))
    test = test.sample(n=min(max_rows, len(test)), random_state=params.seed).sort_index()
    model = tracking.load_model(info["model_uri"])
    X = matrix(test, info["features"])
    values = shap_values(inner_booster(model), X)
    cat = {f.name: f for f in catalogue(params.features.windows)}
    imp = global_importance(values, info["features"], cat)
    out_dir = paths.reports
    out_dir.mkdir(parents=True, exist_ok=True)
    io.write_csv(imp, out_dir / "shap_importance.csv")
    families = family_totals(imp)
    io.write_json(families, out_dir / "shap_families.json")
    with io.atomic_path(out_dir / "shap_bar.png") as tmp:
        plot_bar(imp, tmp)
    with io.atomic_path(out_dir / "shap_beeswarm.png") as tmp:
        plot_beeswarm(values, X, tmp)
    tracking.setup(params.mlflow)
    with mlflow.start_run(run_id=info["run_id"]):
        for name in ("shap_importance.csv", "shap_families.json", "shap_bar.png", "shap_beeswarm.png"):
            mlflow.log_artifact(str(out_dir / name), artifact_path="explain")
    return {"rows": len(X), "families": families, "top_features": imp["feature"].head(10).tolist()}


def score_population(model: Any, rows: pd.DataFrame, params: Params, as_of: dt.date, version: str) -> pd.DataFrame:
    """Probabilities, SHAP reasons and the ranked list for the population rows at `as_of`."""
    features = model_feature_names(model)
    X = matrix(rows, features)
    booster = inner_booster(model)
    cat = {f.name: f for f in catalogue(params.features.windows)}

    def explain(pos: np.ndarray) -> pd.DataFrame:
        return top_reasons(shap_values(booster, X.iloc[pos]), rows.iloc[pos], features, cat)

    # one pass for both, bit for bit booster.predict_proba(X, raw_score=True) and model.predict_proba(X)[:, 1]
    raw, proba = churn_scores(model, X)
    return winback_list(rows, proba, explain, params.score, params.labels.horizon_days, as_of, version, raw)


def score(params: Params, paths: Paths, as_of: dt.date | None = None, force: str | None = None) -> dict:
    """Score the population at `as_of` with @champion and publish outputs/winback/<as_of>/ atomically.

    Every file is written to a staging directory first and published all at once with a manifest
    (pipeline.publish); a failure or a kill leaves the previous list of that date, if any, as it was.
    `force`: the reason to publish although a guard failed (recorded in the manifest). Every run,
    published or refused, is appended to the run log (outputs/winback/runs.jsonl).
    """
    run: dict[str, Any] = {"as_of": as_of or params.score.as_of}  # _score fills in the date it resolves
    try:
        with memory_errors(params):  # logged below as the error it is, not as a bug
            return _score(params, paths, run, force)
    except WinbackError as exc:
        day = run["as_of"]
        entry = {"as_of": day.isoformat() if day else None, "error": str(exc), "exit_code": int(exc.exit_code)}
        publish.log_run(paths.lists_root, entry)
        raise


def _score(params: Params, paths: Paths, run: dict[str, Any], force: str | None) -> dict:
    client = tracking.setup(params.mlflow)
    name = params.mlflow.model_name
    version = tracking.alias_version(client, name, "champion")
    if version is None:
        raise ModelError(
            f"no model registered as {name}@champion in {tracking.tracking_uri(params.mlflow)}: "
            "run `dvc repro` (train + evaluate) first, or promote a version"
        )
    model = tracking.load_model(f"models:/{name}/{version}")
    con = connect(params)
    events = read_events(con, paths.events)
    rolled = activity(events)  # KPIs, cohorts and past lists' labels; the features read scoring_rollup
    first, end = data_span(con, rolled)
    as_of = run["as_of"] = run["as_of"] or end
    _check_as_of(as_of, first, end)
    lists = paths.lists_root
    with publish.exclusive_run(lists, as_of):
        publish.remove_stale_staging(lists, as_of)
        staging = publish.new_staging(lists, as_of)
        try:
            summary, rows, lst = _score_into(
                staging, con, events, rolled, model, name, version, params, paths, as_of, end
            )
            drift_reference = tracking.drift_reference(client, name, version)
            summary["guards"] = _guard(rows, lst, summary, drift_reference, params, paths, as_of, force)
            io.write_json(summary, staging / "summary.json")
            # the report is published with its list: re-scoring a date never leaves an older report beside it
            from pipeline.report import render_report

            io.write_text(render_report(paths, staging), staging / "report.html")
            manifest = {
                "as_of": as_of.isoformat(),
                "model": {"name": name, "version": version},
                "inputs": {
                    "events_sha256": publish.sha256_inputs(paths.events),
                    "contacts_sha256": publish.sha256_inputs(paths.contacts),
                },
                "params_sha256": hashlib.sha256(params.model_dump_json().encode()).hexdigest(),
                "forced": force,
            }
            published = publish.publish(staging, paths.winback_dir(as_of), manifest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    out_dir = paths.winback_dir(as_of)
    io.write_json({"as_of": as_of.isoformat(), "dir": str(out_dir), "model_version": version}, paths.latest_score)
    io.write_json({"as_of": as_of.isoformat(), "report": str(out_dir / "report.html")}, paths.latest_report)
    publish.log_run(lists, {"as_of": as_of.isoformat(), "published": published.name, "forced": force})
    return summary


def _check_as_of(as_of: dt.date, first: dt.date, end: dt.date) -> None:
    """Refuse a scoring date outside the data: before its first event, or after its end."""
    span = f"the data runs from {first} to {end} (the day after its last event)"
    if as_of > end:
        raise InputError(
            f"--as-of {as_of} is after the end of the data: {span}, so every user would look "
            f"{(as_of - end).days} day(s) more inactive than they are. Ingest newer events (winback ingest), "
            f"or score a date up to {end}"
        )
    if as_of <= first:
        raise InputError(f"--as-of {as_of} is before the first event: {span}; score a date after {first}")


def _guard(
    rows: pd.DataFrame,
    lst: pd.DataFrame,
    summary: dict,
    reference: dict | None,
    params: Params,
    paths: Paths,
    as_of: dt.date,
    force: str | None,
) -> dict:
    """Population and drift guards on the scored rows and list; raises GuardError (nothing published) unless forced."""
    gp = params.score.guards
    previous = paths.previous_list(as_of)
    prev_users = len(pd.read_parquet(previous, columns=["user_id"])) if previous else None
    population = guards.population_check(len(lst), prev_users, previous.parent.name if previous else None, gp)
    now = None
    if reference is not None:
        now = drift.compare(reference, rows, lst["churn_probability"].to_numpy())
    drifted = guards.drift_check(now, gp, summary["model_version"])
    failed = guards.failures(population, drifted)
    if failed and not force:
        raise GuardError(
            "nothing published: "
            + "; ".join(failed)
            + ". If the change is expected, publish anyway with `winback score --force 'REASON'` (recorded)"
        )
    return {"population": population, "drift": drifted, "failed": failed, "forced": force}


def _score_into(
    out_dir: Path,
    con: Any,
    events: Any,
    rolled: Any,
    model: Any,
    name: str,
    version: str,
    params: Params,
    paths: Paths,
    as_of: dt.date,
    end: dt.date,
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Build, score and write the list's files for `as_of` into `out_dir`: (summary, not yet written; rows; list).

    The features come from a rollup merged before their windows (scoring_rollup: the same values, a few
    rows per user); the KPIs, the cohort table and past lists' calibration read the daily activity `rolled`.
    """
    scoring = scoring_rollup(events, as_of, params)
    rows = build_snapshots(con, scoring, [as_of], params, labelled=False)
    if rows.empty:
        raise InputError(f"no user is in the population at {as_of} (lookback {params.labels.lookback_days} days)")
    features = model_feature_names(model)
    missing = sorted(set(features) - set(rows.columns))
    if missing:
        raise ModelError(
            f"the champion model v{version} needs features the data does not have: {missing}; "
            "retrain on this source (dvc repro) or check data.columns"
        )
    if params.engine == "spark":
        from pipeline.spark_scoring import score_population_spark

        lst = score_population_spark(con, scoring, model, f"models:/{name}/{version}", rows, params, as_of, version)
    else:
        lst = score_population(model, rows, params, as_of, version)
    # the scored users' features, so every reason can be checked against the user's own numbers
    io.write_parquet(rows.drop(columns=["churned", "future_revenue"], errors="ignore"), out_dir / "features.parquet")
    io.write_parquet(lst, out_dir / "winback.parquet")
    io.write_csv(lst, out_dir / "winback.csv")
    previous = paths.previous_list(as_of)
    kpis = con.to_pandas(retention_kpis(rolled, day_number(as_of))).iloc[0]
    summary = {
        "as_of": as_of.isoformat(),
        "model_version": version,
        "data_end": end.isoformat(),
        **list_summary(lst),
        "week_over_week": compare_lists(lst, pd.read_parquet(previous)) if previous else None,
        "kpis": {k: None if pd.isna(v) else float(v) for k, v in kpis.items()},
        "params": {
            "horizon_days": params.labels.horizon_days,
            "rank_by": params.score.rank_by,
            "holdout_fraction": params.score.holdout_fraction,
            "contact_capacity": params.score.contact_capacity,
            "budget": params.score.budget,
            "min_value_to_cost": params.score.min_value_to_cost,
        },
    }
    cohorts = con.to_pandas(cohort_retention(rolled, day_number(as_of)))
    io.write_csv(cohorts, out_dir / "cohort_retention.csv")
    summary["calibration_drift"] = past_list_calibration(con, rolled, params, paths, as_of, end)
    return summary, rows, lst


# past lists whose realised churn each run reports (the most recent ones whose horizon has passed)
PAST_LISTS = 6


def past_list_calibration(
    con: Any, rolled: Any, params: Params, paths: Paths, as_of: dt.date, end: dt.date
) -> list[dict]:
    """Realised churn against predicted probabilities for published lists whose horizon has passed by `end`."""
    lp = params.labels
    matured = [
        d
        for d in sorted(paths.lists_root.glob("*"))
        if LIST_DIR.fullmatch(d.name)
        and dt.date.fromisoformat(d.name) < as_of
        and dt.date.fromisoformat(d.name) + dt.timedelta(days=lp.horizon_days) <= end
        and (d / "winback.parquet").exists()
    ][-PAST_LISTS:]
    out = []
    for d in matured:
        day = dt.date.fromisoformat(d.name)
        at = churn_labels(rolled, cutoff_table([day]), lp.lookback_days, lp.horizon_days, lp.qualifying)
        labels = con.to_pandas(at)
        labels = pd.DataFrame({"user_id": labels["user_id"].astype(str), "churned": labels["churned"].astype(int)})
        lst = pd.read_parquet(d / "winback.parquet", columns=["user_id", "group", "churn_probability"])
        out.append({"as_of": d.name, **drift.realised_calibration(lst, labels)})
    return out


def report(params: Params, paths: Paths) -> Path:
    """Render report.html beside the latest win-back list (again: score publishes one with the list).

    In `dvc repro` order it renders from the same inputs as the score stage did, so the published file is
    unchanged; after `winback explain` or `evaluate` alone it brings the report up to date.
    """
    from pipeline.report import render_report

    latest = json.loads(paths.latest_score.read_text())
    out_dir = Path(latest["dir"])
    html = render_report(paths, out_dir)
    target = io.write_text(html, out_dir / "report.html")
    io.write_json({"as_of": latest["as_of"], "report": str(target)}, paths.latest_report)
    return target
