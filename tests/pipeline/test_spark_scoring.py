"""`engine: spark` scoring (model applied in Spark tasks) writes exactly the list the pandas scorer writes.

A real model trained on the small synthetic shop, logged and registered in a real MLflow sqlite
store, scored at the end of the data from the same Spark feature rows by both paths.
"""

from __future__ import annotations

import importlib.util
import shutil

import mlflow
import pandas as pd
import pytest

from features.catalogue import catalogue, catalogue_table
from pipeline import score as score_module
from pipeline import tracking
from pipeline.build import build_snapshots, data_span, rollup
from pipeline.config import MlflowParams, Params
from pipeline.engine import connect, read_events
from pipeline.stages import score_population
from pipeline.train import fit_churn_model

if importlib.util.find_spec("pyspark") is None:
    pytest.skip("pyspark is not installed: pip install 'winback[spark]'", allow_module_level=True)
if shutil.which("java") is None:
    pytest.skip("Spark needs Java (17): no `java` on PATH", allow_module_level=True)

from pipeline.spark_scoring import score_population_spark  # after the skips: needs pyspark


@pytest.fixture(scope="module")
def champion(shop_snapshots, tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, str]:
    """The shop's model registered as <name>@champion in a sqlite store with artifacts under tmp."""
    params, snap, _ = shop_snapshots
    tmp = tmp_path_factory.mktemp("mlflow")
    params = params.model_copy(update={"mlflow": MlflowParams(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")})
    mlflow.set_tracking_uri(params.mlflow.tracking_uri)
    mlflow.create_experiment(params.mlflow.experiment, artifact_location=(tmp / "artifacts").as_uri())
    candidates = [f.name for f in catalogue(params.features.windows)]
    tm = fit_churn_model(snap, candidates, params.labels.horizon_days, params.train, params.seed, params.threads)
    client = tracking.setup(params.mlflow)
    _, info = tracking.log_training(tm, params, catalogue_table(params.features.windows), snap)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(params.mlflow.model_name, "champion", version)
    return params, version


@pytest.fixture(scope="module")
def spark_rows(shop_snapshots):
    """A local Spark session with the rolled-up events, and the population rows at the end of the data.

    The rows the list is assembled over come from DuckDB (identical to Spark's: test_engine_parity),
    which keeps the test short and checks that the Spark scorer's own feature rows match them.
    """
    params, _, events = shop_snapshots
    duck = connect(params)
    rolled = rollup(read_events(duck, events))
    _, end = data_span(duck, rolled)
    rows = build_snapshots(duck, rolled, [end], params, labelled=False)
    con = connect(Params(engine="spark", threads=2))
    yield con, rollup(read_events(con, events)), rows, end
    con._session.stop()


@pytest.mark.parametrize("reasons_for", ["contact_list", "all"])
def test_spark_scored_list_equals_the_pandas_scored_list(
    champion, spark_rows, reasons_for: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    params, version = champion
    con, rolled, rows, as_of = spark_rows
    tracking.setup(params.mlflow)
    # few first explained ranks and a small campaign: the contact list explains the top ranks in
    # several growing rounds (filtered Spark rows), below them reasons stay null
    monkeypatch.setattr(score_module, "FIRST_EXPLAINED", 40)
    sp = params.score.model_copy(update={"reasons_for": reasons_for, "contact_capacity": 30})
    params = params.model_copy(update={"engine": "spark", "threads": 2, "score": sp})
    uri = f"models:/{params.mlflow.model_name}@champion"
    model = tracking.load_model(uri)
    expected = score_population(model, rows, params, as_of, version)
    got = score_population_spark(con, rolled, model, uri, rows, params, as_of, version)
    pd.testing.assert_frame_equal(got, expected)
    explained = expected["reason_1"].notna()
    assert len(expected) == len(rows) > 300
    assert expected["contact"].sum() == 30
    if reasons_for == "all":
        assert explained.all()
    else:
        assert 60 <= explained.sum() < len(expected) and explained[: explained.sum()].all()
