"""`engine: spark` scoring: the model runs in Spark tasks, the list is assembled on the driver.

What runs where:

* Spark: the feature rows at `as_of` (the Ibis expression build_snapshots collects, kept in Spark and
  persisted); probabilities from the registered MLflow model (`mlflow.pyfunc.spark_udf`, pyfunc
  predict = predict_proba); the LightGBM raw score (the ranking tie-break) and the SHAP reasons
  (`pred_contrib` + top_reasons) in `mapInPandas` with the booster broadcast to the executors.
  Reasons are computed only for the users the list asks for (`score.reasons_for`).
* Driver: `pipeline.score.winback_list` (ranking, holdout, segments, value, contact selection) over
  the rows frame build_snapshots already collected, plus the collected (user_id, probability, raw
  score) and the requested users' reasons.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from ibis.backends import BaseBackend
from ibis.expr.types import Table
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

from features.catalogue import catalogue
from pipeline.build import snapshot_table
from pipeline.config import Params
from pipeline.errors import WinbackError
from pipeline.explain import shap_values
from pipeline.reasons import top_reasons
from pipeline.score import REASON_COLUMNS, winback_list
from pipeline.train import inner_booster, matrix, model_feature_names

SCORES = StructType(
    [
        StructField("user_id", StringType(), False),
        StructField("churn_probability", DoubleType(), True),
        StructField("raw_score", DoubleType(), True),
    ]
)
REASONS = StructType(
    [StructField("user_id", StringType(), False)] + [StructField(c, StringType(), True) for c in REASON_COLUMNS]
)


def snapshot_frame(con: BaseBackend, rolled: Table, as_of: dt.date, params: Params, view: str) -> DataFrame:
    """The unlabelled feature rows at `as_of` as a Spark DataFrame: user_id and every feature column.

    The same Ibis expression build_snapshots(labelled=False) collects (population joined to the
    snapshot features), as the temporary view `view` (create_view also registers the in-memory
    cutoff table), read back as a pyspark DataFrame without leaving Spark.
    """
    snap = snapshot_table(rolled, [as_of], params, labelled=False).drop("cutoff_day", "churned", "future_revenue")
    snap = snap.mutate(user_id=snap.user_id.cast("string"))
    con.create_view(view, snap, overwrite=True)
    return con.raw_sql(f"SELECT * FROM `{view}`")


def ship(spark: SparkSession, obj: Any) -> tuple[Callable[[], Any], Callable[[], None]]:
    """(get on an executor, release) for `obj`: a broadcast variable on classic Spark.

    Spark Connect has no broadcast variables: there `obj` travels in the function's closure.
    """
    try:
        shipped = spark.sparkContext.broadcast(obj)
    except Exception:  # Spark Connect
        return (lambda: obj), (lambda: None)
    return (lambda: shipped.value), shipped.unpersist


def _raw_scores(get_booster: Callable[[], Any], features: list[str]) -> Callable[[Iterator[pd.DataFrame]], Iterator]:
    def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        booster = get_booster()
        for pdf in batches:
            raw = booster.predict_proba(matrix(pdf, features), raw_score=True)
            yield pd.DataFrame(
                {"user_id": pdf["user_id"], "churn_probability": pdf["churn_probability"], "raw_score": raw}
            )

    return apply


def _reasons(
    get_booster: Callable[[], Any], features: list[str], windows: list[int]
) -> Callable[[Iterator[pd.DataFrame]], Iterator]:
    def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        booster = get_booster()
        cat = {f.name: f for f in catalogue(windows)}
        for pdf in batches:
            pdf = pdf.reset_index(drop=True)
            part = top_reasons(shap_values(booster, matrix(pdf, features)), pdf, features, cat)
            yield pd.concat([pdf[["user_id"]], part[list(REASON_COLUMNS)]], axis=1)

    return apply


def score_population_spark(
    con: BaseBackend,
    rolled: Table,
    model: Any,
    model_uri: str,
    rows: pd.DataFrame,
    params: Params,
    as_of: dt.date,
    version: str,
) -> pd.DataFrame:
    """score_population on Spark: the same list, with the model applied in Spark tasks.

    `model` is the registered model at `model_uri` loaded on the driver (for its booster and
    feature order); `rows` is build_snapshots' frame at `as_of`, which the list is assembled over.
    """
    spark: SparkSession = con._session
    features = model_feature_names(model)
    view = f"winback_scoring_{uuid.uuid4().hex}"
    frame = snapshot_frame(con, rolled, as_of, params, view).persist()
    get_booster, release = ship(spark, inner_booster(model))
    try:
        predict = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=ArrayType(DoubleType()), env_manager="local")
        X = frame.select("user_id", *[F.col(f).cast("double").alias(f) for f in features])
        X = X.withColumn("churn_probability", predict(F.struct(*features))[1])
        scores = X.mapInPandas(_raw_scores(get_booster, features), SCORES).toPandas()
        user_ids = rows["user_id"].astype(str)
        scores = scores.set_index("user_id")
        if len(scores) != len(rows) or not scores.index.is_unique or not scores.index.isin(user_ids).all():
            raise WinbackError(
                f"the Spark feature rows at {as_of} ({len(scores)} users) are not the population "
                f"the list is built over ({len(rows)} users)"
            )
        scores = scores.loc[user_ids]
        explain_rows = _reasons(get_booster, features, params.features.windows)

        def explain(pos: np.ndarray) -> pd.DataFrame:
            wanted = user_ids.iloc[pos]
            part = frame
            if len(pos) < len(rows):
                ids = spark.createDataFrame([(u,) for u in wanted], "user_id string")
                part = frame.join(F.broadcast(ids), "user_id", "left_semi")
            got = part.mapInPandas(explain_rows, REASONS).toPandas().set_index("user_id").loc[wanted]
            # rebuilt from plain values, as top_reasons builds its frame (same dtypes as the pandas path)
            return pd.DataFrame({c: got[c].tolist() for c in REASON_COLUMNS})

        proba = scores["churn_probability"].to_numpy(float)
        raw = scores["raw_score"].to_numpy(float)
        return winback_list(rows, proba, explain, params.score, params.labels.horizon_days, as_of, version, raw)
    finally:
        frame.unpersist()
        spark.catalog.dropTempView(view)
        release()
