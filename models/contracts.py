"""Names and schemas shared by runtime code and infra.

This module is deliberately light (stdlib and pydantic only at import time) so that the CDK
app may import it: table names, key schemas, env var names and Parquet schemas
are declared once here and used by both sides, so the two cannot drift apart.
Column types are written as Arrow type names; :func:`arrow_schema` turns a
column list into a ``pyarrow.Schema`` lazily, for the code that has pyarrow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)

if TYPE_CHECKING:
    import pyarrow as pa

Column = tuple[str, str]
"""A column: (name, Arrow type name). Type names: int8, int64, float64, timestamp[s], string."""

# --- Simulated transactions (the handbook's columns) ----------------------------------

TRANSACTIONS_COLUMNS: Final[tuple[Column, ...]] = (
    ("TRANSACTION_ID", "int64"),
    # timezone-naive (the book's local time); Parquet stores it in ms, readers cast to s
    ("TX_DATETIME", "timestamp[s]"),
    ("CUSTOMER_ID", "int64"),
    ("TERMINAL_ID", "int64"),
    ("TX_AMOUNT", "float64"),
    ("TX_TIME_SECONDS", "int64"),
    ("TX_TIME_DAYS", "int64"),
    ("TX_FRAUD", "int8"),
    ("TX_FRAUD_SCENARIO", "int8"),
)
"""Columns of the simulator's output, in file order."""

# --- Feature table: the simulator's columns + the baseline spec's 15 model inputs --------

BASELINE_FEATURES: Final[tuple[Column, ...]] = (
    ("TX_AMOUNT", "float64"),
    ("TX_DURING_WEEKEND", "float64"),
    ("TX_DURING_NIGHT", "float64"),
    ("CUSTOMER_ID_NB_TX_1DAY_WINDOW", "int64"),
    ("CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW", "float64"),
    ("CUSTOMER_ID_NB_TX_7DAY_WINDOW", "int64"),
    ("CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW", "float64"),
    ("CUSTOMER_ID_NB_TX_30DAY_WINDOW", "int64"),
    ("CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW", "float64"),
    ("TERMINAL_ID_NB_TX_1DAY_WINDOW", "int64"),
    ("TERMINAL_ID_RISK_1DAY_WINDOW", "float64"),
    ("TERMINAL_ID_NB_TX_7DAY_WINDOW", "int64"),
    ("TERMINAL_ID_RISK_7DAY_WINDOW", "float64"),
    ("TERMINAL_ID_NB_TX_30DAY_WINDOW", "int64"),
    ("TERMINAL_ID_RISK_30DAY_WINDOW", "float64"),
)
"""The model inputs of the baseline feature spec, in order (a test checks the spec agrees)."""

FEATURE_TABLE_COLUMNS: Final[tuple[Column, ...]] = TRANSACTIONS_COLUMNS + BASELINE_FEATURES[1:]
"""Columns of ``rtml features`` output: every transaction column, then the 14 features."""

PARTITION_KEY: Final = "date"
"""Hive partition key of every day-partitioned dataset: ``date=YYYY-MM-DD/``."""

PART_FILE_TEMPLATE: Final = "part-{chunk:05d}.parquet"
"""Name of a day partition's file number ``chunk`` (parallel writers never share a name)."""
PART_FILE_NAME: Final = PART_FILE_TEMPLATE.format(chunk=0)
"""The single part file of a day partition: a fixed name keeps output deterministic."""

DATASET_MANIFEST: Final = "_rtml_dataset.json"
"""Manifest at a dataset's root (parameters, counts); the leading ``_`` hides it from readers."""


def column_names(columns: tuple[Column, ...]) -> list[str]:
    """Names of a column list, in order."""
    return [name for name, _ in columns]


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    """The ``pyarrow.Schema`` of a column list (imports pyarrow on first use)."""
    import pyarrow as pa

    types = {
        "int8": pa.int8(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "timestamp[s]": pa.timestamp("s"),
        "string": pa.string(),
    }
    return pa.schema(
        [pa.field(name, types[type_name], nullable=False) for name, type_name in columns]
    )


# --- Stream events (Kinesis payloads; the online feature engine consumes them) -----------


MAX_ENTITY_ID: Final = 2**63 - 1
"""Ids are signed 64-bit everywhere downstream (Parquet int64, DynamoDB numbers)."""
DEFAULT_MAX_AMOUNT: Final = 1_000_000.0
"""An amount above this is refused as absurd (setting ``RTML_MAX_AMOUNT``)."""
MAX_RECORD_BYTES: Final = 1_048_576
"""Kinesis's limit on a record's data: a larger payload cannot be a producer's record."""


class _Event(BaseModel):
    """Fields every stream event carries. Strict: ``"1"`` or ``true`` is not a number.

    Validation context (optional, from the consumer's settings): ``max_amount`` (default
    :data:`DEFAULT_MAX_AMOUNT`) and ``not_after`` (a naive datetime: events dated later,
    e.g. in 2099, are refused rather than allowed to expire every real state; off when
    absent, as for replays of history).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    schema_version: Literal[1] = 1
    transaction_id: int = Field(ge=0, le=MAX_ENTITY_ID)
    tx_datetime: datetime = Field(description="Naive local time of the transaction.")
    customer_id: int = Field(ge=0, le=MAX_ENTITY_ID)
    terminal_id: int = Field(ge=0, le=MAX_ENTITY_ID)

    @field_validator("tx_datetime")
    @classmethod
    def _naive(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None:  # only a PredictionRequest may leave it out (then: now)
            return value
        if value.tzinfo is not None:
            raise ValueError("must be naive local time (no timezone)")
        not_after = (info.context or {}).get("not_after")
        if not_after is not None and value > not_after:
            raise ValueError(f"is later than {not_after.isoformat()} (clock skew limit)")
        return value


class TransactionEvent(_Event):
    """A card transaction to score and to fold into the online feature state."""

    event_type: Literal["transaction"] = "transaction"
    tx_amount: float = Field(ge=0)

    @field_validator("tx_amount")
    @classmethod
    def _sane(cls, value: float, info: ValidationInfo) -> float:
        if not math.isfinite(value):
            raise ValueError("must be finite")
        limit = (info.context or {}).get("max_amount", DEFAULT_MAX_AMOUNT)
        if value > limit:
            raise ValueError(f"{value} is above the maximum amount {limit}")
        return value


class LabelEvent(_Event):
    """A fraud label, known about a week after its transaction; carries its routing keys."""

    event_type: Literal["label"] = "label"
    tx_fraud: Literal[0, 1]


class PredictionRequest(TransactionEvent):
    """A transaction sent to the API: the stream's wire format and validation, except that
    ``transaction_id`` may be left out (scored, never stored) and ``tx_datetime`` defaults
    to the time of the request."""

    transaction_id: int | None = Field(default=None, ge=0, le=MAX_ENTITY_ID)  # type: ignore[assignment]
    tx_datetime: datetime | None = Field(  # type: ignore[assignment]
        default=None, description="Naive local time; the request's time when left out."
    )


MAX_BATCH_PREDICTIONS: Final = 100
"""Transactions one ``POST /v1/predictions:batch`` takes (one BatchGetItem round of 200
keys, well within Lambda's 6 MB payload)."""


class BatchPredictionRequest(BaseModel):
    """Transactions to score in one call; each is validated on its own, so one bad item
    is reported with its index while the others are scored."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    transactions: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH_PREDICTIONS)


class PredictionResponse(BaseModel):
    """What the API answers for one scored transaction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transaction_id: int | None
    customer_id: int
    terminal_id: int
    tx_datetime: datetime
    score: float
    decision: Literal["high_risk", "low_risk"]
    threshold: float
    model_name: str
    model_version: str
    challenger_score: float | None = None
    challenger_version: str | None = None
    stored: bool = Field(description="Whether the prediction was stored (it has an id).")
    features: dict[str, float] | None = Field(
        default=None, description="The model inputs, with ?explain=true."
    )
    scored_at: datetime


class CustomerScore(BaseModel):
    """A customer's latest batch score (``GET /v1/customers/{customer_id}/score``)."""

    model_config = ConfigDict(frozen=True)

    customer_id: int
    score: float
    transaction_id: int = Field(description="The customer's last transaction of that day.")
    tx_datetime: datetime
    day: str = Field(description="The day the batch run scored.")
    run_id: str
    model_version: str


class FieldProblem(BaseModel):
    """One refused field: where it is and what is wrong with it."""

    model_config = ConfigDict(frozen=True)

    field: str
    problem: str


class ErrorResponse(BaseModel):
    """Every error the API returns: a code, a message, the fields at fault, the request id."""

    model_config = ConfigDict(frozen=True)

    error: str
    message: str
    fields: list[FieldProblem] = Field(default_factory=list)
    request_id: str | None = None


class BatchItemResult(BaseModel):
    """One item of a batch: its prediction, or why it was refused."""

    model_config = ConfigDict(frozen=True)

    index: int
    prediction: PredictionResponse | None = None
    error: ErrorResponse | None = None


class BatchPredictionResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    results: list[BatchItemResult]
    scored: int
    refused: int


def _event_kind(value: Any) -> str:
    """A record without ``event_type`` is a transaction: producers need not send it."""
    if isinstance(value, dict):
        kind = value.get("event_type", "transaction")
        return kind if isinstance(kind, str) else repr(kind)
    return str(getattr(value, "event_type", "transaction"))


StreamEvent = Annotated[
    Annotated[TransactionEvent, Tag("transaction")] | Annotated[LabelEvent, Tag("label")],
    Discriminator(_event_kind),
]
"""Any event on an input stream, told apart by ``event_type`` ("transaction" if absent)."""


# --- Predictions (every path writes the same record) -------------------------------------

Decision = Literal["high_risk", "low_risk"]
ServingPath = Literal["stream", "api", "batch"]


class Prediction(BaseModel):
    """One scored transaction, as the predictions table, the alerts and the archive hold it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    transaction_id: int = Field(ge=0, le=MAX_ENTITY_ID)
    customer_id: int = Field(ge=0, le=MAX_ENTITY_ID)
    terminal_id: int = Field(ge=0, le=MAX_ENTITY_ID)
    tx_datetime: datetime = Field(description="The transaction's naive local time.")
    score: float = Field(ge=0, le=1)
    decision: Decision
    threshold: float = Field(ge=0, le=1)
    model_name: str
    model_version: str
    challenger_score: float | None = None
    """The score of the model run in shadow (the challenger; the champion when an A/B
    split lets the challenger decide), or None when only one model runs."""
    challenger_version: str | None = None
    features: dict[str, float] = Field(description="Model inputs, by name, as scored.")
    scored_at: datetime = Field(description="UTC time of scoring (timezone-aware).")
    path: ServingPath


PREDICTIONS_TABLE: Final = "rtml-predictions"
"""Base name of the predictions table (stages prefix it)."""
PREDICTIONS_PK: Final = "transaction_id"
"""Partition key (N): a transaction has one prediction; the first write wins."""
PREDICTIONS_TTL: Final = "expires_at"
"""TTL attribute (N, epoch seconds): scored_at + the retention setting."""

LATEST_SCORES_PK: Final = "customer_id"
"""Partition key (N) of the latest batch score per customer (written by the batch job, read by
``GET /v1/customers/{customer_id}/score``)."""

ENV_PREDICTIONS_TABLE: Final = "RTML_PREDICTIONS_TABLE"
ENV_DECISION_THRESHOLD: Final = "RTML_DECISION_THRESHOLD"
"""Score at or above which a decision is ``high_risk`` (and an alert is published)."""
ENV_MODEL_NAME: Final = "RTML_MODEL_NAME"
ENV_ALERT_BUS: Final = "RTML_ALERT_BUS"
ENV_ARCHIVE_BUCKET: Final = "RTML_ARCHIVE_BUCKET"
ENV_ARCHIVE_PREFIX: Final = "RTML_ARCHIVE_PREFIX"
ENV_DEAD_LETTER_QUEUE_URL: Final = "RTML_DEAD_LETTER_QUEUE_URL"
ENV_AB_SHARE: Final = "RTML_AB_SHARE"
"""Share of customers the challenger decides (stable hash of the customer id); 0: shadow."""
ENV_PREDICTION_TTL_DAYS: Final = "RTML_PREDICTION_TTL_DAYS"
DEFAULT_PREDICTION_TTL_DAYS: Final = 30
"""Days a stored prediction is kept in the predictions table (the S3 archive keeps all)."""
ENV_SAVE_WORKERS: Final = "RTML_SAVE_WORKERS"
ENV_ALIAS_RECHECK_SECONDS: Final = "RTML_ALIAS_RECHECK_SECONDS"
"""How often a serving function re-reads the model aliases (a promote is live after it)."""
ENV_MAX_AMOUNT: Final = "RTML_MAX_AMOUNT"
ENV_MAX_CLOCK_SKEW: Final = "RTML_MAX_CLOCK_SKEW_SECONDS"
"""Refuse events dated more than this after their arrival (unset: off, for replays)."""


# --- Online feature state (DynamoDB) --------------------------------------------------------

FEATURE_STATE_TABLE: Final = "rtml-feature-state"
"""Base name of the online feature-state table (stages prefix it)."""
FEATURE_STATE_PK: Final = "pk"
"""Partition key (S): ``<ENTITY>#<id>``, e.g. ``TERMINAL_ID#42``."""
FEATURE_STATE_SK: Final = "sk"
"""Sort key (S): ``S`` (an entity's whole state, the common case) or ``T#<tile>#<part>``
(raw events of a busy entity's sealed time tile)."""
FEATURE_STATE_TTL: Final = "expires_at"
"""TTL attribute (N, epoch seconds): processing time + horizon + a day (tile parts: + twice
the horizon), so that a replay of old data is not expired at once."""

ENV_FEATURE_STATE_TABLE: Final = "RTML_FEATURE_STATE_TABLE"
"""Env var naming the feature-state table in every function that reads or writes it."""


# --- Models and the registry ---------------------------------------------------------------

ModelFamily = Literal["logistic_regression", "decision_tree", "random_forest", "xgboost"]
"""Model families that training produces and an artifact can hold."""
MODEL_FAMILIES: Final[tuple[ModelFamily, ...]] = (
    "logistic_regression",
    "decision_tree",
    "random_forest",
    "xgboost",
)

DEFAULT_MODEL_NAME: Final = "fraud"
"""The registry name the serving functions load unless configured otherwise."""
REGISTRY_PREFIX: Final = "registry"
"""Key prefix of the model registry in the deployed artifacts bucket."""
ARCHIVE_PREFIX: Final = "predictions"
"""Key prefix of the prediction archive in the data bucket (day-partitioned JSON lines)."""
TRANSACTIONS_PREFIX: Final = "transactions"
"""Key prefix of the transactions in the data bucket, day-partitioned as the simulator writes
them (``transactions/date=YYYY-MM-DD/part-00000.parquet``): the batch path's source."""


class EnvSettings(BaseModel):
    """A function's environment as one validated model: fields carry the env var names
    (``alias``); a missing or malformed variable fails the cold start, naming it."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        source = os.environ if env is None else env
        names = {f.alias for f in cls.model_fields.values() if f.alias}
        return cls.model_validate({k: v for k, v in source.items() if k in names})


ENV_DATA_BUCKET: Final = "RTML_DATA_BUCKET"
"""The data bucket (transactions, batch outputs, the archive) of the batch functions."""
ENV_BATCH_PREFIX: Final = "RTML_BATCH_PREFIX"
ENV_SCORES_TABLE: Final = "RTML_SCORES_TABLE"
"""DynamoDB table of the latest batch score per customer."""
ENV_MAX_BYTES_PER_CHUNK: Final = "RTML_MAX_BYTES_PER_CHUNK"
ENV_DATA_TIME_ZONE: Final = "RTML_DATA_TIME_ZONE"
"""IANA zone of the transactions' naive local time: a day of the data is a day there."""


def time_zone(name: str) -> tzinfo:
    """An IANA time zone by name (the settings' and the scheduled functions' one check);
    a ValueError saying what is wrong otherwise. Lambda images may lack the system's zone
    files: the batch bundle ships ``tzdata``."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Paris)") from None


ENV_REGISTRY: Final = "RTML_REGISTRY"
"""Env var holding the registry URI (``s3://bucket/prefix`` or ``file://dir``)."""
ENV_ACTOR: Final = "RTML_ACTOR"
"""Env var naming who changes an alias (CI sets it); else the OS user."""

ENV_MONITOR_PREFIX: Final = "RTML_MONITOR_PREFIX"
"""Where the monitor job writes its reports in the data bucket."""
ENV_MONITOR_WINDOW_DAYS: Final = "RTML_MONITOR_WINDOW_DAYS"
ENV_MONITOR_THRESHOLDS: Final = "RTML_MONITOR_THRESHOLDS"
"""JSON of ``models.monitoring.MonitorThresholds`` (every detector's bound)."""
MONITOR_PREFIX: Final = "monitoring"

MONITOR_ALARM_METRICS: Final[dict[str, str]] = {
    "drift": "MonitorDriftAlarms",
    "constant": "MonitorConstantInputs",
    "missing": "MonitorMissingInputs",
    "high_risk_share": "MonitorHighRiskShareAlarm",
    "mean_score": "MonitorMeanScoreAlarm",
    "disagreement": "MonitorDisagreementAlarm",
    "volume": "MonitorVolumeAlarm",
    "ap_floor": "MonitorApFloorAlarm",
}
"""Detector kind (the part of a check's name before ':') -> the EMF metric the monitor job
publishes for the day it checks (the alarms in infra watch these names)."""


# --- monitoring thresholds (pure pydantic: infra settings validate them at synth) ------------

PSI_WARN: Final = 0.1
PSI_ALARM: Final = 0.2

Status = Literal["ok", "warn", "alarm"]


class DriftThresholds(BaseModel):
    """When a PSI is a warning or an alarm (settings; the defaults are the usual ones)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    warn: float = Field(default=PSI_WARN, gt=0)
    alarm: float = Field(default=PSI_ALARM, gt=0)
    missing_rate_alarm: float = Field(default=0.01, ge=0, le=1)
    """Share of missing (NaN or infinite) values of an input above which it alarms."""

    def status(self, psi: float) -> Status:
        return "alarm" if psi > self.alarm else "warn" if psi > self.warn else "ok"


class MonitorThresholds(DriftThresholds):
    """Every detector's bound (settings; the defaults are documented in the README)."""

    high_risk_factor: float = Field(default=3.0, gt=1)
    """Alarm when the share of high-risk decisions is this many times the reference's, or
    this many times smaller (a model stuck at 0 or 1 moves it at once)."""
    mean_score_factor: float = Field(default=2.0, gt=1)
    """The same bound on the mean score against the reference's mean."""
    mean_score_z: float = Field(default=3.0, ge=0)
    """Standard errors the window's mean must clear the bound by: a fraud score's mean over a
    few hundred rows moves by half with two frauds, so the bound applies to the mean's
    confidence interval, not the mean (a stuck score has no spread and alarms at once)."""
    disagreement_alarm: float = Field(default=0.6, ge=0, le=1)
    """Of the transactions either model flags high-risk, the share only one of them flags
    (1 - Jaccard): 0.2-0.4 between the baseline XGBoost and logistic regression on the
    book's data; a challenger stuck at 0 or 1 gives about 1."""
    min_flagged: int = Field(default=20, ge=1)
    """High-risk decisions (expected, or flagged by either model) below which the share and
    disagreement checks say ``insufficient``: a handful of rare events cannot be judged."""
    constant_probability: float = Field(default=1e-6, gt=0, lt=1)
    """A constant input alarms when the reference would give a window that constant with at
    most this probability (its largest bin's share to the power of the rows): an input that
    is 0 for 99% of the reference is often constant over a few hundred rows, and fine."""
    ap_floor: float = Field(default=0.3, ge=0, le=1)
    """Label-based average precision of a day below which the champion alarms."""
    min_frauds: int = Field(default=20, ge=1)
    """Frauds a labelled day needs before its AP is judged (the book has ~80 a day)."""
    volume_ratio_alarm: float = Field(default=0.99, ge=0, le=1)
    """Predictions per transaction in below which a path is losing records."""
    min_rows: int = Field(default=200, ge=1)
    """Fewer rows than this: distribution checks say ``insufficient``, never alarm."""
