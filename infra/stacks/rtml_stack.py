"""The rtml stack: every resource of one environment, composed from constructs."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from infra.constructs.alarm_topic import AlarmTopic
from infra.constructs.artifacts_bucket import ArtifactsBucket
from infra.constructs.batch_scoring import BatchScoring
from infra.constructs.data_bucket import DataBucket
from infra.constructs.feature_state_table import FeatureStateTable
from infra.constructs.latest_scores_table import LatestScoresTable
from infra.constructs.monitoring import Monitoring
from infra.constructs.predict_api import PredictApi
from infra.constructs.stream_scoring import StreamScoring
from infra.settings import EnvSettings


class RtmlStack(cdk.Stack):
    """The same stack class in every stage; only its ``EnvSettings`` differ.

    Constructs own their resources; the stack shares what several paths use (the registry,
    the feature state, the data bucket, the alarm topic) and names the outputs operators and
    the local stack read.
    """

    artifacts: ArtifactsBucket
    """Model artifacts and the registry."""

    data: DataBucket
    """Datasets, the prediction archive, batch outputs."""

    feature_state: FeatureStateTable
    """Online feature state (per card and terminal)."""

    alarm_topic: AlarmTopic
    """Where every alarm notifies."""

    latest_scores: LatestScoresTable
    """The latest batch score per customer (the batch job writes, the API reads)."""

    stream: StreamScoring
    """The Kinesis scoring path."""

    predict_api: PredictApi
    """The on-demand path (REST API)."""

    batch: BatchScoring
    """The scheduled batch job (Step Functions)."""

    monitoring: Monitoring
    """The monitor job, the detectors' alarms and the dashboard."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: EnvSettings, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        removal = settings.cdk_removal_policy
        self.artifacts = ArtifactsBucket(
            self,
            "Artifacts",
            removal_policy=removal,
            access_log_retention=cdk.Duration.days(settings.log_retention_days),
        )
        self.data = DataBucket(
            self, "Data", access_logs=self.artifacts.access_logs_bucket, removal_policy=removal
        )
        self.feature_state = FeatureStateTable(self, "FeatureState", removal_policy=removal)
        self.alarm_topic = AlarmTopic(
            self, "Alarms", email=settings.alarm_email, removal_policy=removal
        )
        self.latest_scores = LatestScoresTable(self, "LatestScores", removal_policy=removal)
        self.stream = StreamScoring(
            self,
            "Stream",
            settings=settings,
            feature_state=self.feature_state.table,
            registry_bucket=self.artifacts.bucket,
            data_bucket=self.data.bucket,
            alarm_topic=self.alarm_topic.topic,
        )
        self.predict_api = PredictApi(
            self,
            "Api",
            settings=settings,
            feature_state=self.feature_state.table,
            predictions=self.stream.predictions,
            latest_scores=self.latest_scores.table,
            registry_bucket=self.artifacts.bucket,
            alarm_topic=self.alarm_topic.topic,
        )
        self.batch = BatchScoring(
            self,
            "Batch",
            settings=settings,
            data_bucket=self.data.bucket,
            registry_bucket=self.artifacts.bucket,
            latest_scores=self.latest_scores.table,
            alarm_topic=self.alarm_topic.topic,
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            settings=settings,
            data_bucket=self.data.bucket,
            registry_bucket=self.artifacts.bucket,
            alarm_topic=self.alarm_topic.topic,
            stream=self.stream,
            api=self.predict_api,
            batch=self.batch,
        )
        outputs = {
            "ArtifactsBucket": self.artifacts.bucket.bucket_name,
            "DataBucket": self.data.bucket.bucket_name,
            "FeatureStateTable": self.feature_state.table.table_name,
            "TransactionsStream": self.stream.transactions.stream_name,
            "LabelsStream": self.stream.labels.stream_name,
            "PredictionsTable": self.stream.predictions.table_name,
            "DeadLetterQueueUrl": self.stream.dead_letters.queue_url,
            "FailedBatchesQueueUrl": self.stream.failed_batches.queue_url,
            "AlertBus": self.stream.alerts.event_bus_name,
            "ScorerFunction": self.stream.scorer.function.function_name,
            "AlarmTopic": self.alarm_topic.topic.topic_arn,
            "LatestScoresTable": self.latest_scores.table.table_name,
            "ApiUrl": self.predict_api.api.url,
            "ApiFunction": self.predict_api.function.function.function_name,
            "BatchStateMachine": self.batch.state_machine.state_machine_arn,
            "BatchPrefix": settings.batch.prefix,
            "MonitorFunction": self.monitoring.function.function.function_name,
            "Dashboard": self.monitoring.dashboard.dashboard_name,
        }
        if self.predict_api.key is not None:  # the id only: the value never leaves API Gateway
            outputs["ApiKeyId"] = self.predict_api.key.key_id
        for name, value in outputs.items():
            cdk.CfnOutput(self, name, value=value)
