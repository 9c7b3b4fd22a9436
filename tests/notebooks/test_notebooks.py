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
    cutoffs = labelable_cutoffs(*data_span(con, table), params.features, params.labels)
    snapshots = build_snapshots(con, rollup(table), cutoffs, params, labelled=True)
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
