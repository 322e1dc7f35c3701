"""Kinesis stream scorer: a thin Powertools handler over ``models.stream.StreamScoring``.

One engine call per batch (one state read, one conditional write per touched entity),
then Powertools' partial-batch response: the record handler only looks up each record's
precomputed outcome and raises for the ones to retry, so Lambda redelivers from the
first of them. Settings come from one env-var model, validated at cold start; clients,
loaders and the engine are built once per execution environment.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import (
    KinesisStreamRecord,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from models import contracts as c
from models.stream import RecordOutcome, StreamRecord, StreamScoring

logger = Logger(service="rtml-stream")
metrics = Metrics(namespace="rtml", service="stream")
tracer = Tracer(service="rtml-stream")
processor = BatchProcessor(event_type=EventType.KinesisDataStreams)


class StreamSettings(c.EnvSettings):
    """The function's environment, validated once (names in models.contracts)."""

    feature_state_table: str = Field(alias=c.ENV_FEATURE_STATE_TABLE)
    predictions_table: str = Field(alias=c.ENV_PREDICTIONS_TABLE)
    registry: str = Field(alias=c.ENV_REGISTRY)
    model_name: str = Field(c.DEFAULT_MODEL_NAME, alias=c.ENV_MODEL_NAME)
    alert_bus: str = Field(alias=c.ENV_ALERT_BUS)
    archive_bucket: str = Field(alias=c.ENV_ARCHIVE_BUCKET)
    archive_prefix: str = Field(c.ARCHIVE_PREFIX, alias=c.ENV_ARCHIVE_PREFIX)
    dead_letter_queue_url: str = Field(alias=c.ENV_DEAD_LETTER_QUEUE_URL)
    threshold: float = Field(0.5, ge=0, le=1, alias=c.ENV_DECISION_THRESHOLD)
    max_amount: float = Field(c.DEFAULT_MAX_AMOUNT, gt=0, alias=c.ENV_MAX_AMOUNT)
    max_clock_skew_seconds: int | None = Field(None, ge=0, alias=c.ENV_MAX_CLOCK_SKEW)
    ab_share: float = Field(0.0, ge=0, le=1, alias=c.ENV_AB_SHARE)
    prediction_ttl_days: int = Field(
        c.DEFAULT_PREDICTION_TTL_DAYS, ge=1, alias=c.ENV_PREDICTION_TTL_DAYS
    )
    save_workers: int = Field(32, ge=1, le=64, alias=c.ENV_SAVE_WORKERS)
    alias_recheck_seconds: float = Field(60.0, ge=0, alias=c.ENV_ALIAS_RECHECK_SECONDS)


@cache
def scoring() -> StreamScoring:
    """Clients, loaders, engine and sinks, once per execution environment."""
    import boto3

    from models.aws_sinks import DynamoDBPredictions, EventBridgeAlerts, S3Archive, SQSDeadLetters
    from models.features.dynamodb_store import DynamoDBStateStore
    from models.features.online import OnlineFeatures
    from models.features.spec import SERVED
    from models.registry import open_registry
    from models.serving import ModelRouter

    settings = StreamSettings.from_env()
    dynamodb = boto3.client("dynamodb")
    registry = open_registry(settings.registry, s3_client=boto3.client("s3"))
    router = ModelRouter.from_registry(
        registry,
        settings.model_name,
        recheck_seconds=settings.alias_recheck_seconds,
        ab_share=settings.ab_share,
    )
    skew = settings.max_clock_skew_seconds
    return StreamScoring(
        engine=OnlineFeatures(
            # DynamoDB reports the units it bills: no sizing of every item on the hot path
            DynamoDBStateStore(dynamodb, settings.feature_state_table, size_items=False),
            SERVED,
            save_workers=settings.save_workers,
        ),
        router=router,
        predictions=DynamoDBPredictions(
            dynamodb, settings.predictions_table, ttl_seconds=settings.prediction_ttl_days * 86_400
        ),
        alerts=EventBridgeAlerts(boto3.client("events"), settings.alert_bus),
        archive=S3Archive(boto3.client("s3"), settings.archive_bucket, settings.archive_prefix),
        dead_letters=SQSDeadLetters(boto3.client("sqs"), settings.dead_letter_queue_url),
        threshold=settings.threshold,
        max_amount=settings.max_amount,
        max_clock_skew=None if skew is None else timedelta(seconds=skew),
    )


class RetryRecordError(Exception):
    """A record Lambda must deliver again (a transient failure; see models.stream)."""


def _record(raw: dict[str, Any]) -> StreamRecord:
    kinesis = raw["kinesis"]
    return StreamRecord(
        data=base64.b64decode(kinesis["data"]),
        shard_id=raw["eventID"].split(":")[0],
        sequence_number=kinesis["sequenceNumber"],
        arrival=datetime.fromtimestamp(float(kinesis["approximateArrivalTimestamp"]), UTC),
    )


def _emit_metrics(records: list[StreamRecord], outcomes: list[RecordOutcome]) -> None:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    metrics.add_metric("RecordsIn", MetricUnit.Count, len(records))
    for status, n in counts.items():
        metrics.add_metric(f"Records_{status}", MetricUnit.Count, n)
    predictions = [o.prediction for o in outcomes if o.prediction is not None]
    if not predictions:
        return
    high = sum(p.decision == "high_risk" for p in predictions)
    metrics.add_metric("HighRiskShare", MetricUnit.Percent, 100 * high / len(predictions))
    metrics.add_metric(
        "ScoreMean", MetricUnit.NoUnit, sum(p.score for p in predictions) / len(predictions)
    )
    buckets = [0] * 10  # the score distribution, for drift and stuck-score alarms
    for p in predictions:
        buckets[min(9, int(p.score * 10))] += 1
    for k, n in enumerate(buckets):
        metrics.add_metric(f"Score_{k}", MetricUnit.Count, n)
    now = datetime.now(UTC)
    metrics.add_metric(
        "ArrivalLagMax", MetricUnit.Seconds, max((now - r.arrival).total_seconds() for r in records)
    )
    per_version: dict[str, int] = {}
    for p in predictions:
        per_version[p.model_version] = per_version.get(p.model_version, 0) + 1
    for version, n in per_version.items():  # the model version in service, as a dimension
        with single_metric(
            name="Predictions", unit=MetricUnit.Count, value=n, namespace=metrics.namespace
        ) as metric:
            metric.add_dimension(name="ModelVersion", value=version)


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Score a Kinesis batch; report the records to deliver again."""
    records = [_record(r) for r in event["Records"]]
    outcomes = scoring().process(records)
    _emit_metrics(records, outcomes)
    by_sequence = {r.sequence_number: o for r, o in zip(records, outcomes, strict=True)}
    for record, outcome in zip(records, outcomes, strict=True):
        if outcome.status in ("dead_lettered", "retry"):
            logger.warning(
                "record %s", outcome.status,
                extra={"sequence_number": record.sequence_number, "reason": outcome.reason},
            )  # fmt: skip

    def record_handler(record: KinesisStreamRecord) -> None:
        outcome = by_sequence[record.kinesis.sequence_number]
        if outcome.status == "retry":
            raise RetryRecordError(outcome.reason or "retry")

    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
