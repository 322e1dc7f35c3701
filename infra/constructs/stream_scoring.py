"""The Kinesis scoring path: streams, the scorer, its mappings, sinks, grants and alarms.

Transactions and labels arrive on two streams (labels come a week late and are a different
producer; a stream each keeps their throughput and retention apart) and the same function
consumes both, because labels update the terminal state through the same idempotent store.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.constructs.function import RtmlFunction
from infra.constructs.tables import rtml_table
from infra.nag import acknowledge, acknowledge_object_prefix
from infra.settings import EnvSettings
from models import contracts as c

STREAM_HANDLER = "lambdas.stream.handler"
"""The scorer's handler, as the runtime imports it from the serving bundle."""

DEAD_LETTER_RETENTION = cdk.Duration.days(14)
"""SQS's longest retention: an operator has two weeks to inspect and replay."""


class StreamScoring(Construct):
    """Everything the stream path owns; the stack passes what it shares (tables, buckets)."""

    transactions: kinesis.Stream
    labels: kinesis.Stream
    scorer: RtmlFunction
    predictions: dynamodb.TableV2
    dead_letters: sqs.Queue
    """Poison records, sent by the function with their reason and raw payload."""
    failed_batches: sqs.Queue
    """The mappings' on-failure destination: metadata of batches out of retries or too old."""
    alerts: events.EventBus
    alarms: list[cloudwatch.Alarm]

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EnvSettings,
        feature_state: dynamodb.ITableV2,
        registry_bucket: s3.IBucket,
        data_bucket: s3.IBucket,
        alarm_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        stream = settings.stream
        removal = settings.cdk_removal_policy

        self.transactions = self._stream("Transactions", settings, shards=stream.shards)
        self.labels = self._stream("Labels", settings, shards=1 if stream.shards else None)
        self.predictions = rtml_table(
            self,
            "Predictions",
            partition_key=(c.PREDICTIONS_PK, "N"),
            ttl_attribute=c.PREDICTIONS_TTL,
            removal_policy=removal,
        )
        self.dead_letters = self._queue("DeadLetters", removal)
        self.failed_batches = self._queue("FailedBatches", removal)
        self.alerts = events.EventBus(self, "Alerts")

        environment = {
            c.ENV_FEATURE_STATE_TABLE: feature_state.table_name,
            c.ENV_PREDICTIONS_TABLE: self.predictions.table_name,
            c.ENV_REGISTRY: f"s3://{registry_bucket.bucket_name}/{c.REGISTRY_PREFIX}",
            c.ENV_MODEL_NAME: c.DEFAULT_MODEL_NAME,
            c.ENV_ALERT_BUS: self.alerts.event_bus_name,
            c.ENV_ARCHIVE_BUCKET: data_bucket.bucket_name,
            c.ENV_ARCHIVE_PREFIX: c.ARCHIVE_PREFIX,
            c.ENV_DEAD_LETTER_QUEUE_URL: self.dead_letters.queue_url,
            c.ENV_DECISION_THRESHOLD: str(stream.decision_threshold),
            c.ENV_AB_SHARE: str(stream.ab_share),
            c.ENV_MAX_AMOUNT: str(stream.max_amount),
            c.ENV_PREDICTION_TTL_DAYS: str(stream.prediction_ttl_days),
            c.ENV_ALIAS_RECHECK_SECONDS: str(stream.alias_recheck_seconds),
        }
        if stream.max_clock_skew_seconds is not None:
            environment[c.ENV_MAX_CLOCK_SKEW] = str(stream.max_clock_skew_seconds)
        self.scorer = RtmlFunction(
            self,
            "Scorer",
            settings=settings,
            handler=STREAM_HANDLER,
            service="rtml-stream",
            description="Scores transactions from Kinesis with fresh online features",
            environment=environment,
            memory_mb=stream.memory_mb,
            timeout_seconds=stream.timeout_seconds,
            reserved_concurrency=stream.reserved_concurrency,
        )
        self._grant(feature_state, registry_bucket, data_bucket)
        for source in (self.transactions, self.labels):
            self.scorer.function.add_event_source(
                sources.KinesisEventSource(
                    source,
                    starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                    batch_size=stream.batch_size,
                    max_batching_window=cdk.Duration.seconds(stream.batching_window_seconds),
                    parallelization_factor=stream.parallelization_factor,
                    bisect_batch_on_error=stream.bisect_on_error,
                    retry_attempts=stream.max_retries,
                    max_record_age=cdk.Duration.seconds(stream.max_record_age_seconds),
                    report_batch_item_failures=True,
                    on_failure=sources.SqsDlq(self.failed_batches),
                )
            )
        self.alarms = self._alarms(settings, alarm_topic)

    def _stream(self, name: str, settings: EnvSettings, *, shards: int | None) -> kinesis.Stream:
        stream = kinesis.Stream(
            self,
            name,
            stream_mode=(
                kinesis.StreamMode.ON_DEMAND if shards is None else kinesis.StreamMode.PROVISIONED
            ),
            shard_count=shards,
            # aws/kinesis: encrypted at rest with no per-consumer KMS cost (AwsSolutions-KDS3).
            encryption=kinesis.StreamEncryption.MANAGED,
            retention_period=cdk.Duration.hours(settings.stream.stream_retention_hours),
            removal_policy=settings.cdk_removal_policy,
        )
        return stream

    def _queue(self, name: str, removal: cdk.RemovalPolicy) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            name,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
            removal_policy=removal,
        )
        acknowledge(queue, "AwsSolutions-SQS3")
        return queue

    def _grant(
        self, feature_state: dynamodb.ITableV2, registry: s3.IBucket, data: s3.IBucket
    ) -> None:
        """Exactly the calls the scorer makes (models/features/dynamodb_store.py, aws_sinks.py,
        registry.py); no grant_* helper, since those add actions the code never calls."""
        role = self.scorer.role
        role.add_to_policy(
            iam.PolicyStatement(
                # TransactWriteItems is authorized as the PutItem of each of its items.
                actions=["dynamodb:BatchGetItem", "dynamodb:PutItem"],
                resources=[feature_state.table_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "dynamodb:BatchGetItem",
                    "dynamodb:BatchWriteItem",
                    "dynamodb:UpdateItem",
                ],
                resources=[self.predictions.table_arn],
            )
        )
        self.scorer.grant_registry_read(registry)
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[data.arn_for_objects(f"{c.ARCHIVE_PREFIX}/*")],
            )
        )
        acknowledge_object_prefix(role, data, c.ARCHIVE_PREFIX)
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["sqs:SendMessage"], resources=[self.dead_letters.queue_arn]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["events:PutEvents"], resources=[self.alerts.event_bus_arn])
        )

    def _alarms(self, settings: EnvSettings, topic: sns.ITopic) -> list[cloudwatch.Alarm]:
        function = self.scorer.function
        period = cdk.Duration.minutes(1)
        alarms = [
            cloudwatch.Alarm(
                self,
                "IteratorAge",
                alarm_description="The scorer is falling behind its streams",
                metric=function.metric(
                    "IteratorAge", statistic=cloudwatch.Stats.MAXIMUM, period=period
                ),
                threshold=settings.stream.iterator_age_alarm_seconds * 1000,
                evaluation_periods=5,
                datapoints_to_alarm=3,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            cloudwatch.Alarm(
                self,
                "Errors",
                alarm_description="Scorer invocations fail (whole batches retried)",
                metric=function.metric_errors(period=period),
                threshold=0,
                evaluation_periods=3,
                datapoints_to_alarm=2,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
        ]
        for name, queue, what in (
            ("DeadLetterDepth", self.dead_letters, "Poison records are waiting"),
            ("FailedBatchDepth", self.failed_batches, "Batches ran out of retries or age"),
        ):
            alarms.append(
                cloudwatch.Alarm(
                    self,
                    name,
                    alarm_description=f"{what} in {name}",
                    metric=queue.metric_approximate_number_of_messages_visible(
                        period=period, statistic=cloudwatch.Stats.MAXIMUM
                    ),
                    threshold=0,
                    evaluation_periods=1,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
        action = cloudwatch_actions.SnsAction(topic)
        for alarm in alarms:
            alarm.add_alarm_action(action)
        return alarms
