"""Notebooks run top to bottom on tiny real pipeline outputs, in a kernel of the interpreter running pytest."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from features.events import CANONICAL_COLUMNS
from pipeline.build import build_snapshots, data_span, labelable_cutoffs, rollup
from pipeline.config import FeatureParams, LabelParams, Params
from pipeline.engine import connect, read_events
from pipeline.paths import Paths

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPLORE = NOTEBOOKS / "01-explore-events.ipynb"
START = dt.date(2025, 1, 1)
DAYS = 120
ROLES_WRITTEN = ("session", "view", "search", "cart", "purchase", "refund", "support")
CHART_TAGS = ("event-types", "weekly-activity", "funnel", "churn-rate")
# appended to the in-memory copy only: which interpreter the kernel runs
PROBE = "import json, sys\nprint(json.dumps({'executable': sys.executable, 'prefix': sys.prefix}))"


def tiny_shop(users: int = 30, seed: int = 3) -> pd.DataFrame:
    """Canonical events of a small shop over ~4 months; a third of the users stop early, some never search or buy."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        first = int(rng.integers(0, 30))
        last = int(rng.integers(first + 20, 70)) if u % 3 == 0 else DAYS - 1
        for day in range(first, last + 1):
            if rng.random() > 0.3:
                continue
            t = pd.Timestamp(START + dt.timedelta(days=day), tz="UTC") + pd.Timedelta(
                minutes=int(rng.integers(0, 1380))
            )
            steps = ["session", *["view"] * int(rng.integers(1, 4))]
            if u % 2 == 0 and rng.random() < 0.4:  # only half of the users ever search
                steps.append("search")
            if rng.random() < 0.5:
                steps.append("cart")
                if u % 5 != 4 and rng.random() < 0.6:  # a fifth of the users never buy
                    steps.append("purchase")
            for i, role in enumerate(steps):
                purchase = role == "purchase"
                rows.append(
                    {
                        "user_id": f"u{u:02d}",
                        "event_time": t + pd.Timedelta(minutes=i),
                        "event_type": role,
                        "amount": round(float(rng.uniform(5, 80)), 2) if purchase else None,
                        "order_id": f"o{u:02d}-{day}" if purchase else None,
                    }
                )
            if rng.random() < 0.03:
                rows.append(
                    {
                        "user_id": f"u{u:02d}",
                        "event_time": t + pd.Timedelta(hours=1),
                        "event_type": "support",
                        "amount": None,
                        "order_id": None,
                    }
                )
    rows.append(
        {
            "user_id": "u00",
            "event_time": pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=40),
            "event_type": "refund",
            "amount": -12.5,
            "order_id": "o00-refund",
        }
    )
    df = pd.DataFrame(rows).sort_values("event_time", kind="stable").reset_index(drop=True)
    df["event_time"] = df["event_time"].astype("datetime64[us, UTC]")
    for col, dtype in CANONICAL_COLUMNS.items():
        if dtype == "float64":
            df[col] = df[col].astype("float64") if col in df else np.nan
        elif dtype == "string":
            df[col] = (df[col] if col in df else pd.Series([None] * len(df))).astype("str")
    return df[list(CANONICAL_COLUMNS)]


def write_inputs(root: Path) -> tuple[Params, pd.DataFrame, pd.DataFrame]:
    """Events, labelled snapshots (built by the pipeline's own code) and params.yaml under `root`."""
    params = Params().model_copy(
        update={
            "threads": 1,
            "duckdb_memory_limit": "512MB",
            "features": FeatureParams(frequency_days=14, windows=[7, 28]),
            "labels": LabelParams(horizon_days=28, lookback_days=28),
        }
    )
    paths = Paths(root)
    events = tiny_shop()
    paths.events.parent.mkdir(parents=True, exist_ok=True)
    events.to_parquet(paths.events, index=False)
    con = connect(params)
    table = read_events(con, paths.events)
    rolled = rollup(table)
    cutoffs = labelable_cutoffs(*data_span(con, rolled), params.features, params.labels)
    snapshots = build_snapshots(con, rolled, cutoffs, params, labelled=True)
    paths.snapshots.parent.mkdir(parents=True, exist_ok=True)
    snapshots.to_parquet(paths.snapshots, index=False)
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return params, events, snapshots


def run_notebook(path: Path, cwd: Path) -> nbformat.NotebookNode:
    """Execute a copy of the notebook (plus the interpreter probe) in `cwd`; raises on any cell error."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


@pytest.fixture(scope="module")
def kernel_env():
    """Kernel specs from this interpreter's prefix first (ipykernel installs python3 there), inline plots."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
        mp.delenv("MPLBACKEND", raising=False)
        spec = KernelSpecManager().get_kernel_spec("python3")
        # "python" in argv is replaced by sys.executable when the kernel is launched
        assert spec.argv[0] in {"python", "python3", sys.executable}, spec.argv
        yield mp


@pytest.fixture(scope="module")
def explored(tmp_path_factory, kernel_env):
    root = tmp_path_factory.mktemp("winback")
    _, events, snapshots = write_inputs(root)
    kernel_env.setenv("WINBACK_ROOT", str(root))
    kernel_env.setenv("WINBACK_PARAMS", str(root / "params.yaml"))
    nb = run_notebook(EXPLORE, NOTEBOOKS)
    kernel_env.delenv("WINBACK_ROOT")
    kernel_env.delenv("WINBACK_PARAMS")
    return {"root": root, "events": events, "snapshots": snapshots, "nb": nb}


def tagged(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def text_of(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def table_row(shown: str, key: str) -> list[str]:
    """Tokens of the one line of a printed table whose tokens include `key`."""
    lines = [line.split() for line in shown.splitlines() if key in line.split()]
    assert len(lines) == 1, f"expected one row for {key!r} in:\n{shown}"
    return lines[0]


def images(cell: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.outputs)


def test_saved_notebooks_have_no_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear outputs"


def test_kernel_runs_this_interpreter(explored):
    probe = json.loads(text_of(explored["nb"].cells[-1]))
    assert Path(probe["prefix"]).resolve() == Path(sys.prefix).resolve()
    assert Path(probe["executable"]).resolve() == Path(sys.executable).resolve()


def test_explore_runs_without_errors_on_the_given_root(explored):
    nb = explored["nb"]
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert f"root: {explored['root'].resolve()}" in text_of(tagged(nb, "setup"))


def test_every_chart_cell_draws_a_figure(explored):
    for tag in CHART_TAGS:
        assert images(tagged(explored["nb"], tag)) == 1, tag


def test_event_type_table_lists_every_role(explored):
    shown = text_of(tagged(explored["nb"], "event-types"))
    events = explored["events"]
    for role, group in events.groupby("event_type"):
        _, _, n_events, n_users = table_row(shown, role)
        assert (int(n_events), int(n_users)) == (len(group), group["user_id"].nunique())


def test_funnel_table_shows_steps_in_order(explored):
    shown = text_of(tagged(explored["nb"], "funnel"))
    events = explored["events"]
    users = events.groupby("event_type")["user_id"].nunique()
    steps = ("session", "view", "search", "cart", "purchase")
    for order, step in enumerate(steps, start=1):
        _, step_order, _, n_users, n_events, conversion = table_row(shown, step)
        assert (int(step_order), int(n_users), int(n_events)) == (order, users[step], (events.event_type == step).sum())
        if order > 1:
            assert float(conversion) == pytest.approx(users[step] / users[steps[order - 2]], abs=1e-6)


def test_churn_rate_per_cutoff_matches_the_snapshots(explored):
    cell = tagged(explored["nb"], "churn-rate")
    shown = text_of(cell)
    snapshots = explored["snapshots"]
    rates = snapshots.groupby("cutoff")["churned"].mean()
    assert len(rates) >= 3 and 0 < snapshots["churned"].mean() < 1  # the fixture has churners and stayers
    sizes = snapshots.groupby("cutoff").size()
    for cutoff, rate in rates.items():
        _, n_users, churn_rate = table_row(shown, cutoff.isoformat())
        assert int(n_users) == sizes[cutoff]
        assert float(churn_rate) == pytest.approx(rate, abs=1e-6)


def test_root_defaults_to_the_parent_of_the_notebook_folder(tmp_path, kernel_env):
    write_inputs(tmp_path)
    (tmp_path / "notebooks").mkdir()
    copy = tmp_path / "notebooks" / EXPLORE.name
    copy.write_bytes(EXPLORE.read_bytes())
    kernel_env.delenv("WINBACK_ROOT", raising=False)
    kernel_env.delenv("WINBACK_PARAMS", raising=False)
    nb = run_notebook(copy, copy.parent)
    setup = text_of(tagged(nb, "setup"))
    assert f"root: {tmp_path.resolve()}" in setup
    assert f"params: {tmp_path.resolve() / 'params.yaml'}" in setup
    assert images(tagged(nb, "churn-rate")) == 1


# --- 02-churn-drivers: run on a model trained by the real stages on a small synthetic shop ---

DRIVERS = NOTEBOOKS / "02-churn-drivers.ipynb"


def train_tiny_model(root: Path) -> tuple[Params, str]:
    """generate → ingest → features → train under `root` (MLflow in root/mlflow.db); params.yaml beside them."""
    import warnings

    from pipeline import stages

    uri = f"sqlite:///{root / 'mlflow.db'}"
    base = Params()
    params = base.model_copy(
        update={
            "threads": 1,
            "generate": base.generate.model_copy(update={"users": 600}),
            "train": base.train.model_copy(update={"n_estimators": 60}),
            "evaluate": base.evaluate.model_copy(update={"backtest_cutoffs": 1}),
            "mlflow": base.mlflow.model_copy(update={"tracking_uri": uri}),
        }
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    paths = Paths(root)
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        # mlflow's input-example check under pandas 3 (third-party noise)
        warnings.filterwarnings("ignore", "Operation with range is deprecated", module="mlflow")
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        for stage in (stages.generate, stages.ingest, stages.features, stages.train):
            stage(params, paths)
    return params, uri


def expected_drivers(params: Params, root: Path, uri: str) -> dict:
    """What the notebook should show, computed here from the same model and snapshots."""
    from features.catalogue import catalogue
    from pipeline import tracking
    from pipeline.explain import global_importance, shap_values
    from pipeline.reasons import top_reasons
    from pipeline.train import inner_booster, matrix, rows_at

    paths = Paths(root)
    info = json.loads(paths.train_info.read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        tracking.setup(params.mlflow)
        model = tracking.load_model(info["model_uri"])
    cutoff = dt.date.fromisoformat(info["split"]["test"])
    test = rows_at(pd.read_parquet(paths.snapshots), cutoff)
    X = matrix(test, info["features"])
    booster = inner_booster(model)
    values = shap_values(booster, X)
    cat = {f.name: f for f in catalogue(params.features.windows)}
    proba = model.predict_proba(X)[:, 1]
    pos = int(np.argmax(proba))
    return {
        "info": info,
        "cutoff": cutoff,
        "rows": len(X),
        "importance": global_importance(values, info["features"], cat),
        "user_id": test["user_id"].iloc[pos],
        "probability": float(proba[pos]),
        "log_odds": float(booster.predict_proba(X.iloc[[pos]], raw_score=True)[0]),
        "expected_value": float(booster.booster_.predict(X.iloc[[pos]], pred_contrib=True)[0, -1]),
        "reasons": top_reasons(values[[pos]], test.iloc[[pos]], info["features"], cat).iloc[0],
    }


@pytest.fixture(scope="module")
def drivers(tmp_path_factory, kernel_env):
    root = tmp_path_factory.mktemp("drivers")
    params, uri = train_tiny_model(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WINBACK_ROOT", str(root))
        mp.setenv("WINBACK_PARAMS", str(root / "params.yaml"))
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        nb = run_notebook(DRIVERS, NOTEBOOKS)
    return {"root": root, "params": params, "uri": uri, "nb": nb, **expected_drivers(params, root, uri)}


def errors(nb: nbformat.NotebookNode) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def test_every_notebook_is_checked_for_saved_outputs():
    checked = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert {EXPLORE.name, DRIVERS.name} <= checked


def test_drivers_runs_on_the_trained_model(drivers):
    assert not errors(drivers["nb"])
    setup = text_of(tagged(drivers["nb"], "setup"))
    assert f"root: {drivers['root'].resolve()}" in setup
    assert f"tracking: {drivers['uri']}" in setup
    assert f"model: {drivers['info']['model_uri']}" in setup
    n_features = len(drivers["info"]["features"])
    assert f"test cutoff: {drivers['cutoff']} ({drivers['rows']} users, {n_features} features)" in setup


def test_drivers_draws_bar_dependence_and_waterfall(drivers):
    nb = drivers["nb"]
    counts = {tag: images(tagged(nb, tag)) for tag in ("importance", "dependence", "waterfall")}
    assert counts == {"importance": 1, "dependence": 3, "waterfall": 1}
    assert sum(images(c) for c in nb.cells if c.cell_type == "code") >= 3


def test_importance_table_ranks_features_by_mean_abs_shap(drivers):
    shown = text_of(tagged(drivers["nb"], "importance"))
    expected = drivers["importance"]
    assert expected["mean_abs_shap"].iloc[0] > expected["mean_abs_shap"].iloc[3] > 0
    for rank, row in expected.head(5).iterrows():
        index, feature, family, mean_abs = table_row(shown, row["feature"])
        assert (int(index), feature, family) == (rank, row["feature"], row["family"])
        assert float(mean_abs) == pytest.approx(row["mean_abs_shap"], abs=1e-5)


def test_waterfall_is_for_the_highest_risk_user(drivers):
    shown = text_of(tagged(drivers["nb"], "waterfall"))
    assert (
        f"user {drivers['user_id']} at {drivers['cutoff']}: calibrated churn probability {drivers['probability']:.3f}, "
        f"log-odds {drivers['log_odds']:.3f} (expected value {drivers['expected_value']:.3f})"
    ) in shown


def test_reasons_are_the_chosen_users_plain_language_drivers(drivers):
    shown = text_of(tagged(drivers["nb"], "reasons")).splitlines()
    reasons = drivers["reasons"]
    assert reasons["reason_1"] and reasons["driver_family"]
    assert shown[0] == f"why user {drivers['user_id']} is at risk (driver family: {reasons['driver_family']}):"
    listed = [reasons[f"reason_{i}"] for i in (1, 2, 3) if reasons[f"reason_{i}"]]
    assert shown[1:] == [f"  {i}. {text}" for i, text in enumerate(listed, start=1)]


def test_drivers_loads_the_model_from_mlflow_tracking_uri(drivers, tmp_path, kernel_env):
    """MLFLOW_TRACKING_URI wins over params.yaml: a params file naming an empty store still finds the model."""
    params = drivers["params"]
    elsewhere = params.model_copy(
        update={"mlflow": params.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{tmp_path / 'empty.db'}"})}
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(elsewhere.model_dump(mode="json"), sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WINBACK_ROOT", str(drivers["root"]))
        mp.setenv("WINBACK_PARAMS", str(tmp_path / "params.yaml"))
        mp.setenv("MLFLOW_TRACKING_URI", drivers["uri"])
        nb = run_notebook(DRIVERS, NOTEBOOKS)
    assert not errors(nb)
    assert f"tracking: {drivers['uri']}" in text_of(tagged(nb, "setup"))
    assert text_of(tagged(nb, "reasons")) == text_of(tagged(drivers["nb"], "reasons"))
