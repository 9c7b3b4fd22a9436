"""params.yaml schema: every knob of the pipeline, validated by pydantic."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.events import ALL_ROLES, CANONICAL_COLUMNS
from pipeline.errors import ExitCode, WinbackError

# derived columns are added to each source frame under this prefix, which no real column uses
DERIVED_PREFIX = "=derived:"
# canonical columns of a retention contact log (data.contacts); action is optional
CONTACT_COLUMNS: tuple[str, ...] = ("user_id", "contacted_at", "action")
# a data.source of the form <scheme>://... is a warehouse connection URL (pipeline/warehouse.py)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# ${NAME}: taken from the environment when the source is read
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def is_warehouse_url(source: str) -> bool:
    """Whether data.source is a connection URL (read through Ibis) rather than files."""
    return bool(_URL.match(source))


class Strict(BaseModel):
    """Base model that rejects unknown keys, so a typo in params.yaml fails loudly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Strict):
    """Where the raw events are and how their columns and event types map to the canonical ones."""

    # "synthetic", a path or glob of Parquet/CSV files, "package:<pkg>/<path>" for a data file
    # shipped inside an installed Python package, or a warehouse connection URL read through Ibis
    # (e.g. "postgresql://analyst:${WINBACK_DB_PASSWORD}@db:5432/shop"; ${VAR} is taken from the
    # environment, so no password is written here) together with data.table
    source: str = "synthetic"
    # table of a warehouse source: "events", "schema.events" or "database.schema.events"
    table: str | None = None
    # canonical column -> source column (None: the source has no such column)
    columns: dict[str, str | None] = Field(default_factory=dict)
    # canonical column -> SQL expression over the source columns, evaluated by DuckDB per file,
    # e.g. {amount: "Quantity * UnitPrice"}; use it when no single source column holds the value
    derive: dict[str, str] = Field(default_factory=dict)
    # column names for CSV files without a header row (None: the first row is the header)
    csv_columns: list[str] | None = None
    # canonical role -> source event types that play it
    event_types: dict[str, list[str]] = Field(default_factory=dict)
    # role given to every row when the source has no event_type column (transactions-only)
    default_event_type: str = "purchase"
    timezone: str = "UTC"
    # how numeric dates such as 03/04/2024 are read: true = day first, false = month first, None = from
    # each file's unambiguous dates (a first number above 12 means day first); never guessed silently
    dayfirst: bool | None = None
    # rows later than (newest plausible time + this many days) are quarantined as far-future
    max_future_days: int = Field(1, ge=0)
    # events before this date are quarantined as too old (None: no bound)
    min_time: dt.date | None = None
    csv_delimiter: str = ","
    # optional log of retention contacts (user_id, contacted_at, action), ingested beside the events:
    # None (no log), "synthetic" (the log the generate stage writes for a simulated campaign), or a
    # Parquet/CSV file, directory or glob; read with data.timezone and data.max_future_days
    contacts: str | None = None
    # canonical contact column -> column of the log (None: the log has none; only action may be None)
    contact_columns: dict[str, str | None] = Field(default_factory=dict)

    @field_validator("contact_columns")
    @classmethod
    def _known_contact_columns(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        unknown = sorted(set(v) - set(CONTACT_COLUMNS))
        if unknown:
            raise ValueError(f"unknown contact column(s) {unknown} in data.contact_columns; known: {CONTACT_COLUMNS}")
        required = sorted(k for k in ("user_id", "contacted_at") if k in v and v[k] is None)
        if required:
            raise ValueError(f"data.contact_columns: {required} cannot be null, the contact log needs them")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"data.timezone {v!r} is not a known IANA time zone: use a name like 'UTC', 'Europe/London' or "
                "'America/New_York' (the zone the source's naive timestamps were recorded in)"
            ) from exc
        return v

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        unknown = sorted(set(v) - set(CANONICAL_COLUMNS))
        if unknown:
            raise ValueError(
                f"unknown canonical column(s) {unknown} in data.columns; known: {sorted(CANONICAL_COLUMNS)}"
            )
        return v

    @field_validator("derive")
    @classmethod
    def _known_derived(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(CANONICAL_COLUMNS))
        if unknown:
            raise ValueError(
                f"unknown canonical column(s) {unknown} in data.derive; known: {sorted(CANONICAL_COLUMNS)}"
            )
        return v

    @model_validator(mode="after")
    def _warehouse(self) -> DataParams:
        if not is_warehouse_url(self.source):
            if self.table is not None:
                raise ValueError(
                    f"data.table is set ({self.table!r}) but data.source {self.source!r} is not a connection URL: "
                    "set data.source to e.g. 'postgresql://user@host:5432/db', or remove data.table"
                )
            return self
        if not self.table or any(not part for part in self.table.split(".")) or self.table.count(".") > 2:
            raise ValueError(
                f"data.source is a connection URL, so data.table must name the events table as 'table', "
                f"'schema.table' or 'database.schema.table' (got {self.table!r})"
            )
        password = urlsplit(self.source).password
        if password and not ENV_REFERENCE.fullmatch(password):
            raise ValueError(
                "data.source holds a password in plain text; params files are versioned, so put the password in "
                "an environment variable and write its name in its place, e.g. "
                "'postgresql://user:${WINBACK_DB_PASSWORD}@host:5432/db' (or leave it out: libpq then reads "
                "PGPASSWORD or ~/.pgpass)"
            )
        return self

    @model_validator(mode="after")
    def _derive_or_map(self) -> DataParams:
        both = sorted(set(self.derive) & set(self.columns))
        if both:
            raise ValueError(f"column(s) {both} are in both data.columns and data.derive: keep one")
        if self.contacts == "synthetic" and self.source != "synthetic":
            raise ValueError(
                "data.contacts is 'synthetic' (the generated shop's contact log) but data.source is not: "
                "set data.contacts to null or to your contact log's path"
            )
        return self

    @field_validator("event_types")
    @classmethod
    def _known_roles(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(v) - set(ALL_ROLES))
        if unknown:
            raise ValueError(f"unknown event role(s) {unknown} in data.event_types; known: {list(ALL_ROLES)}")
        return v

    def source_column(self, canonical: str) -> str | None:
        """Source column that feeds a canonical column (identity when not mapped)."""
        if canonical in self.derive:
            return DERIVED_PREFIX + canonical
        return self.columns.get(canonical, canonical)


class CampaignParams(Strict):
    """A simulated retention campaign on the synthetic shop (`winback simulate-campaign`)."""

    # the win-back list (Parquet or CSV) whose `contact` rows (treatment rows when it has no such column)
    # are contacted
    list_path: str
    # contacted users' churn hazard is multiplied by (1 - effect) from the contact on
    effect: float = Field(0.5, ge=0, le=1)
    # share of contacted users who had already left that come back (None: the same as effect)
    return_share: float | None = Field(None, ge=0, le=1)
    # contacts happen this many days after the list's as_of
    contact_day_offset: int = Field(0, ge=0)


class GenerateParams(Strict):
    """Synthetic shop size and time span."""

    users: int = Field(5000, ge=10)
    start: dt.date = dt.date(2024, 7, 1)
    end: dt.date = dt.date(2026, 6, 30)
    seed: int = 7
    # promotions run until this date; promotion-dependent users then lose interest
    promotions_end: dt.date | None = dt.date(2025, 12, 1)
    # a simulated campaign from a win-back list (None: the plain shop)
    campaign: CampaignParams | None = None

    @model_validator(mode="after")
    def _span(self) -> GenerateParams:
        if (self.end - self.start).days < 365:
            raise ValueError(
                f"generate.end must be at least 12 months after generate.start (got {self.start}..{self.end})"
            )
        return self


class FeatureParams(Strict):
    """Cutoff schedule and window lengths of the snapshot features."""

    frequency_days: int = Field(7, ge=1)
    first_cutoff: dt.date | None = None
    last_cutoff: dt.date | None = None
    windows: list[int] = Field(default_factory=lambda: [7, 30, 90])
    # the training build (features stage) builds and writes the snapshots in parts of at most about this
    # many rows (contiguous user ranges, each from its own events), so its memory does not grow with the
    # data. 44 cutoffs over 20M events (benchmarks/speed.py --part-rows): 100k rows a part 46.1 s, peak RSS
    # 0.85 GB; 200k 39.8 s, 1.28 GB; 300k 39.5 s, 1.60 GB (each part plans its query again, ~0.2 s)
    snapshot_part_rows: int = Field(200_000, ge=1)

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[int]) -> list[int]:
        if not v or any(w < 1 for w in v):
            raise ValueError("features.windows must be a non-empty list of positive day counts")
        return sorted(set(v))


class LabelParams(Strict):
    """Churn definition (DESIGN 3.2)."""

    horizon_days: int = Field(60, ge=1)
    lookback_days: int = Field(90, ge=1)
    # "any" (any event qualifies) or a list of roles, e.g. [purchase]
    qualifying: Literal["any"] | list[str] = "any"

    @field_validator("qualifying")
    @classmethod
    def _roles(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            unknown = sorted(set(v) - set(ALL_ROLES))
            if unknown or not v:
                raise ValueError(
                    f"labels.qualifying: unknown role(s) {unknown}; use 'any' or roles from {list(ALL_ROLES)}"
                )
        return v


class TrainParams(Strict):
    """LightGBM, early stopping and calibration knobs."""

    num_leaves: int = Field(31, ge=2)
    learning_rate: float = Field(0.05, gt=0, le=1)
    n_estimators: int = Field(500, ge=1)
    min_child_samples: int = Field(50, ge=1)
    subsample: float = Field(0.8, gt=0, le=1)
    subsample_freq: int = Field(1, ge=0)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    early_stopping_rounds: int = Field(50, ge=1)
    # "auto": isotonic with >= isotonic_min_rows calibration rows, else sigmoid
    calibration: Literal["auto", "isotonic", "sigmoid"] = "auto"
    isotonic_min_rows: int = Field(1000, ge=1)
    # "cutoff": calibrate on the calibration cutoff alone; "gap": on every cutoff after the last
    # training cutoff up to it (all labelled by the test cutoff; includes the validation cutoff):
    # more rows and several seasons' worth of weeks, for short histories with seasonal churn
    calibration_span: Literal["cutoff", "gap"] = "cutoff"
    # most recent training cutoffs to use (None: all that are allowed)
    max_train_cutoffs: int | None = Field(None, ge=1)
    # snapshot rows whose outcome a retention contact may have changed (`contacted`, see
    # features/contacts.py): "exclude" them from training, early stopping and calibration (default:
    # their labels are the campaign's outcome, not the untreated risk the model ranks by), "weight"
    # them by contacted_weight, or "keep" them as they are
    contacted: Literal["exclude", "weight", "keep"] = "exclude"
    contacted_weight: float = Field(0.2, ge=0, le=1)


class EvaluateParams(Strict):
    """Out-of-time evaluation and promotion."""

    top_fraction: float = Field(0.1, gt=0, lt=1)
    calibration_bins: int = Field(10, ge=2)
    # a challenger must beat the champion's ROC-AUC by at least this much to replace it
    min_improvement: float = Field(0.0, ge=0)
    # and be calibrated: expected calibration error at its test cutoff at most this (the synthetic shop: 0.025)
    max_ece: float = Field(0.05, gt=0, le=1)
    # users the retention team can contact per campaign: precision / recall / value recall at K
    contact_capacity: int = Field(500, ge=1)
    # consecutive test cutoffs of the rolling-origin backtest (the last one is the promotion cutoff)
    backtest_cutoffs: int = Field(6, ge=1)


class GuardParams(Strict):
    """Checks before a list is published: a failure publishes nothing unless `winback score --force REASON`."""

    # refuse when the scored population's size differs from the last published list's by more than this share
    max_population_change: float = Field(0.5, gt=0)
    # refuse when the PSI of the churn score, or of any one feature, against the model's training rows exceeds
    # this. A healthy shop drifts too: the synthetic shop (2,500 users) scored 2026-07-01 against training rows
    # up to 2025-12-20 measures score PSI 0.38 and, after its promotions ended, 2.9 for
    # days_since_last_coupon_order; scored 2026-04-01, score PSI 0.62; `make run` (5,000 users) 0.69. A feature that
    # breaks (all null, or amounts x100) measures about 8 to 16 against 10 decile bins
    max_score_psi: float = Field(1.0, gt=0)
    max_feature_psi: float = Field(5.0, gt=0)


class ScoreParams(Strict):
    """Scoring date, holdout group, risk tiers, segments and actions."""

    as_of: dt.date | None = None  # None: the day after the last event
    holdout_fraction: float = Field(0.1, ge=0, lt=1)
    holdout_seed: int = 20261123
    tier_thresholds: dict[str, float] = Field(default_factory=lambda: {"high": 0.5, "medium": 0.25})
    rank_by: Literal["churn_probability", "value_at_risk"] = "churn_probability"
    # expected value over the horizon if retained behind value_at_risk (pipeline/value.py). bgnbd_gg (BG/NBD orders
    # if alive x Gamma-Gamma spend) won the backtest against the realised horizon revenue of retained users
    # (benchmarks/value.py, 6 cutoffs, ratios to history on synthetic / Online Retail / CDNOW): MAE 0.75 / 0.72 /
    # 0.92, RMSE 0.49 / 0.95 / 0.95, Spearman 1.09 / 1.16 / 1.01; recent beats it on Online Retail's MAE (0.69)
    # and RMSE (0.78) only. Where churn is "no purchase" every retained user bought, so all methods underestimate.
    value_model: Literal["history", "recent", "bgnbd_gg"] = "bgnbd_gg"
    new_user_days: int = Field(30, ge=1)
    lapsing_days: int = Field(30, ge=1)
    dormant_days: int = Field(60, ge=1)
    high_value_quantile: float = Field(0.9, gt=0, lt=1)
    # driver family -> segment -> action; "*" matches any segment
    actions: dict[str, dict[str, str]] = Field(default_factory=dict)
    default_action: str = "personalised recommendations"
    # cost of one action for one user, in the revenue's currency; every action above needs one
    action_costs: dict[str, float] = Field(default_factory=lambda: {"personalised recommendations": 0.5})
    # who is marked for contact: treatment users down the list until `contact_capacity` users or the
    # `budget` (total action cost; None: no limit) is used, skipping users whose value at risk is
    # below `min_value_to_cost` x their action's cost (0: contact regardless of value)
    contact_capacity: int = Field(500, ge=0)
    # who gets reason codes (SHAP is the costly part of scoring): the top ranks the contact selection
    # walks through (at least 1,000 or 2 x contact_capacity), or every user of the list
    reasons_for: Literal["contact_list", "all"] = "contact_list"
    budget: float | None = Field(None, ge=0)
    min_value_to_cost: float = Field(1.0, ge=0)
    # membership tier names by level; the level is the data's membership tier, or, when
    # `tier_spend_thresholds` is set, the number of thresholds the lifetime spend reaches
    tier_names: list[str] = Field(default_factory=lambda: ["none", "silver", "gold", "platinum"], min_length=1)
    tier_spend_thresholds: list[float] | None = None
    guards: GuardParams = Field(default_factory=GuardParams)

    @model_validator(mode="after")
    def _costs(self) -> ScoreParams:
        named = {a for by_segment in self.actions.values() for a in by_segment.values()} | {self.default_action}
        missing = sorted(named - set(self.action_costs))
        if missing:
            raise ValueError(f"score.action_costs has no cost for {missing}: add e.g. '{missing[0]}: 2.5'")
        if any(c < 0 for c in self.action_costs.values()):
            raise ValueError("score.action_costs must be >= 0")
        thresholds = self.tier_spend_thresholds
        if thresholds is not None and (thresholds != sorted(thresholds) or len(thresholds) >= len(self.tier_names)):
            raise ValueError("score.tier_spend_thresholds must be increasing, one fewer than score.tier_names at most")
        return self

    @field_validator("tier_thresholds")
    @classmethod
    def _tiers(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != {"high", "medium"} or not 0 < v["medium"] < v["high"] < 1:
            raise ValueError("score.tier_thresholds needs high and medium with 0 < medium < high < 1")
        return v


class PrivacyParams(Strict):
    """Pseudonymous user ids: every stage after ingest, every output and MLflow see only keyed hashes."""

    # replace user ids (events, contact log, quarantined rows) by an HMAC-SHA256 under the key in `key_env`
    pseudonymise_user_ids: bool = False
    key_env: str = Field("WINBACK_PSEUDONYM_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class MlflowParams(Strict):
    """Tracking store and registered model name."""

    tracking_uri: str = "sqlite:///mlflow.db"  # MLFLOW_TRACKING_URI overrides it
    experiment: str = "winback"
    model_name: str = "winback-churn"


class SparkParams(Strict):
    """Where `engine: spark` runs: a master URL (local[N] or a cluster) or a Spark Connect remote."""

    master: str = "local[2]"
    remote: str | None = None  # e.g. sc://host:15002 (Spark Connect); wins over master
    conf: dict[str, str] = Field(default_factory=dict)  # extra spark.* settings, e.g. spark.driver.memory


class Params(Strict):
    """Everything params.yaml may hold."""

    seed: int = 42
    threads: int = Field(2, ge=1)
    # what runs the feature and label build: the embedded DuckDB, or Spark from the same Ibis code
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark: SparkParams = SparkParams()
    duckdb_memory_limit: str = "4GB"
    # where DuckDB spills when a query outgrows duckdb_memory_limit (None: DuckDB's default,
    # <database>.tmp beside a database file, .tmp in the working directory for in-memory)
    duckdb_temp_directory: str | None = None
    data: DataParams = DataParams()
    generate: GenerateParams = GenerateParams()
    features: FeatureParams = FeatureParams()
    labels: LabelParams = LabelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    score: ScoreParams = ScoreParams()
    privacy: PrivacyParams = PrivacyParams()
    mlflow: MlflowParams = MlflowParams()

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _memory_size(cls, v: str) -> str:
        # DuckDB's own parser is the rule; its message ("Memory must have a number") names no key
        try:
            with duckdb.connect(config={"memory_limit": v}) as con:
                # a limit of 0 parses, then fails any query that allocates, as this one does
                con.execute("SELECT current_setting('memory_limit')").fetchall()
        except duckdb.Error as exc:
            raise ValueError(
                f"not a memory size DuckDB can start with ({str(exc).splitlines()[0]}): write e.g. '4GB', '1200MB' "
                "or '60%' (of the machine's memory)"
            ) from exc
        return v


class ConfigError(WinbackError, ValueError):
    """params.yaml is unreadable or invalid; the message says which key and how to fix it."""

    exit_code = ExitCode.CONFIG


def _describe(err: ValidationError, path: Path) -> str:
    lines = [f"{path}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}': check the spelling (see the documented keys in params.yaml)")
        else:
            lines.append(f"  - {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ConfigError naming any bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: not found; run from the project root or pass --params") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc
