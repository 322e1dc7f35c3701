"""Monitoring: the scheduled monitor job, one alarm per silent-failure detector, the stream's
silence alarm, and the stage's CloudWatch dashboard.

The monitor job (``batch.monitor_handler.handler``, the batch bundle) checks the last
complete day of the prediction archive every day and publishes one metric per detector
kind (``models.contracts.MONITOR_ALARM_METRICS``); each has an alarm on the alarm topic.
Silence (records arriving on the stream, none scored) is a metric-math alarm on Kinesis'
``IncomingRecords`` and the scorer's ``Records_scored``, so it fires within minutes, not at
the next daily run. The dashboard puts every path side by side.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.constructs.alarms import notify, threshold_alarm
from infra.constructs.alarms import rtml_metric as _rtml
from infra.constructs.batch_scoring import BatchScoring
from infra.constructs.function import METRICS_NAMESPACE, RtmlFunction
from infra.constructs.predict_api import PredictApi
from infra.constructs.stream_scoring import StreamScoring
from infra.nag import acknowledge_function_versions
from infra.settings import EnvSettings
from models import contracts as c

MONITOR_HANDLER = "batch.monitor_handler.handler"
FIVE_MINUTES = cdk.Duration.minutes(5)


class Monitoring(Construct):
    """The monitor function, its schedule, the detectors' alarms and the dashboard."""

    function: RtmlFunction
    schedule: scheduler.Schedule
    hourly: scheduler.Schedule | None
    alarms: list[cloudwatch.Alarm]
    dashboard: cloudwatch.Dashboard

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EnvSettings,
        data_bucket: s3.IBucket,
        registry_bucket: s3.IBucket,
        alarm_topic: sns.ITopic,
        stream: StreamScoring,
        api: PredictApi,
        batch: BatchScoring,
    ) -> None:
        super().__init__(scope, construct_id)
        monitor = settings.monitor
        self.function = RtmlFunction(
            self,
            "Monitor",
            settings=settings,
            handler=MONITOR_HANDLER,
            service="rtml-monitor",
            description="Checks the prediction archive for drift, silent failure and decay",
            environment={
                c.ENV_DATA_BUCKET: data_bucket.bucket_name,
                c.ENV_DATA_TIME_ZONE: settings.data_time_zone,
                c.ENV_ARCHIVE_PREFIX: c.ARCHIVE_PREFIX,
                c.ENV_MONITOR_PREFIX: c.MONITOR_PREFIX,
                c.ENV_BATCH_PREFIX: settings.batch.prefix,
                c.ENV_REGISTRY: f"s3://{registry_bucket.bucket_name}/{c.REGISTRY_PREFIX}",
                c.ENV_MODEL_NAME: c.DEFAULT_MODEL_NAME,
                c.ENV_DECISION_THRESHOLD: str(settings.stream.decision_threshold),
                c.ENV_MONITOR_WINDOW_DAYS: str(monitor.window_days),
                c.ENV_MONITOR_THRESHOLDS: monitor.thresholds.model_dump_json(),
            },
            memory_mb=monitor.memory_mb,
            timeout_seconds=monitor.timeout_seconds,
            bundle="batch",
        )
        self.function.grant_registry_read(registry_bucket)
        # read the archive, the transactions, the batch runs' manifests and its own day
        # summaries (listing them too, so a missing one is a 404, not a 403); write reports
        self.function.grant_prefixes(
            data_bucket,
            read=[c.ARCHIVE_PREFIX, c.TRANSACTIONS_PREFIX, f"{settings.batch.prefix}/runs",
                  f"{c.MONITOR_PREFIX}/days"],
            write=[c.MONITOR_PREFIX],
        )  # fmt: skip
        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            description="Checks the previous day's predictions",
            schedule=scheduler.ScheduleExpression.expression(
                monitor.schedule, time_zone=cdk.TimeZone.of(monitor.timezone)
            ),
            enabled=monitor.schedule_enabled,
            target=targets.LambdaInvoke(
                self.function.function,
                input=scheduler.ScheduleTargetInput.from_object(
                    {"scheduled_time": scheduler.ContextAttribute.scheduled_time}
                ),
                retry_attempts=2,
            ),
        )
        self.hourly = None
        if monitor.hourly:
            self.hourly = scheduler.Schedule(
                self,
                "Hourly",
                description="Checks the day under way (label-free checks)",
                schedule=scheduler.ScheduleExpression.expression("cron(5 * * * ? *)"),
                enabled=monitor.schedule_enabled,
                target=targets.LambdaInvoke(
                    self.function.function,
                    input=scheduler.ScheduleTargetInput.from_object(
                        {
                            "scheduled_time": scheduler.ContextAttribute.scheduled_time,
                            "partial": True,
                        }
                    ),
                    retry_attempts=0,
                ),
            )
        # the scheduler's (stack-wide) target role may invoke the function's versions too
        acknowledge_function_versions(cdk.Stack.of(self), self.function.function)
        self.alarms = self._alarms(settings, stream, alarm_topic)
        self.dashboard = self._dashboard(settings, stream, api, batch)

    def _alarms(
        self, settings: EnvSettings, stream: StreamScoring, topic: sns.ITopic
    ) -> list[cloudwatch.Alarm]:
        day = cdk.Duration.days(1)
        alarms = [
            threshold_alarm(
                self,
                f"Detector{kind.title().replace('_', '')}",
                description=f"The monitor's {kind} detector fired (see the day's report)",
                metric=_rtml(metric, "monitor", cloudwatch.Stats.MAXIMUM, day),
            )
            for kind, metric in c.MONITOR_ALARM_METRICS.items()
        ]
        minutes = settings.monitor.silence_minutes
        incoming = stream.transactions.metric_incoming_records(
            period=FIVE_MINUTES, statistic=cloudwatch.Stats.SUM
        )
        # handled: scored, or refused on purpose (duplicates, poison records): a replay of
        # duplicates is not silence
        handled = {
            status: _rtml(f"Records_{status}", "stream", cloudwatch.Stats.SUM, FIVE_MINUTES)
            for status in ("scored", "duplicate", "dead_lettered")
        }
        silence = cloudwatch.MathExpression(
            expression=(
                "IF(FILL(incoming, 0) > 0 AND "
                "FILL(scored, 0) + FILL(duplicate, 0) + FILL(dead_lettered, 0) == 0, 1, 0)"
            ),
            using_metrics={"incoming": incoming, **handled},
            period=FIVE_MINUTES,
            label="records in, none scored",
        )
        alarms.append(
            threshold_alarm(
                self,
                "StreamSilent",
                description=(
                    f"Records arrive on the stream but none was scored for {minutes} minutes"
                ),
                metric=silence,
                threshold=1,
                evaluation_periods=max(1, minutes // 5),
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            )
        )
        # the monitor itself failing must not turn every detector off in silence
        alarms.append(
            threshold_alarm(
                self,
                "MonitorErrors",
                description="The monitor job failed (its detectors did not run)",
                metric=self.function.function.metric_errors(period=cdk.Duration.hours(1)),
            )
        )
        if settings.monitor.schedule_enabled:
            alarms.append(
                threshold_alarm(
                    self,
                    "MonitorMissing",
                    description="The monitor job has not reported for a day",
                    metric=_rtml("MonitorRuns", "monitor", cloudwatch.Stats.SUM, day),
                    threshold=1,
                    comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                    missing=cloudwatch.TreatMissingData.BREACHING,
                )
            )
        notify(alarms, topic)
        return alarms

    def _dashboard(
        self, settings: EnvSettings, stream: StreamScoring, api: PredictApi, batch: BatchScoring
    ) -> cloudwatch.Dashboard:
        scorer = stream.scorer.function
        predictor = api.function.function
        day = cdk.Duration.days(1)
        widgets: list[list[cloudwatch.IWidget]] = [
            [
                cloudwatch.GraphWidget(
                    title="Throughput per path",
                    left=[
                        _rtml("Records_scored", "stream", cloudwatch.Stats.SUM, FIVE_MINUTES).with_(
                            label="stream: scored"
                        ),
                        api.api.metric_count(period=FIVE_MINUTES).with_(label="api: requests"),
                        _rtml("BatchRows", "batch", cloudwatch.Stats.SUM, FIVE_MINUTES).with_(
                            label="batch: rows"
                        ),
                    ],
                    width=12,
                ),
                cloudwatch.GraphWidget(
                    title="Errors",
                    left=[
                        scorer.metric_errors(period=FIVE_MINUTES).with_(label="stream scorer"),
                        predictor.metric_errors(period=FIVE_MINUTES).with_(label="api predictor"),
                        api.api.metric_server_error(period=FIVE_MINUTES).with_(label="api 5xx"),
                        batch.state_machine.metric_failed(period=FIVE_MINUTES).with_(
                            label="batch runs failed"
                        ),
                    ],
                    width=12,
                ),
            ],
            [
                cloudwatch.GraphWidget(
                    title="Stream lag: iterator age and arrival-to-score (max)",
                    left=[
                        scorer.metric(
                            "IteratorAge", statistic=cloudwatch.Stats.MAXIMUM, period=FIVE_MINUTES
                        ).with_(label="iterator age (ms)"),
                    ],
                    right=[
                        _rtml(
                            "ArrivalLagMax", "stream", cloudwatch.Stats.MAXIMUM, FIVE_MINUTES
                        ).with_(label="arrival to score (s)"),
                    ],
                    width=12,
                ),
                cloudwatch.GraphWidget(
                    title="Latency percentiles",
                    left=[
                        api.api.metric_latency(period=FIVE_MINUTES, statistic="p50").with_(
                            label="api p50 (ms)"
                        ),
                        api.api.metric_latency(period=FIVE_MINUTES, statistic="p99").with_(
                            label="api p99 (ms)"
                        ),
                        scorer.metric_duration(period=FIVE_MINUTES, statistic="p99").with_(
                            label="stream batch p99 (ms)"
                        ),
                    ],
                    width=12,
                ),
            ],
            [
                cloudwatch.GraphWidget(
                    title="Score distribution (stream, tenths)",
                    left=[
                        _rtml(f"Score_{k}", "stream", cloudwatch.Stats.SUM, FIVE_MINUTES).with_(
                            label=f"{k / 10:.1f}-{(k + 1) / 10:.1f}"
                        )
                        for k in range(10)
                    ],
                    stacked=True,
                    width=12,
                ),
                cloudwatch.GraphWidget(
                    title="High-risk share (%) and mean score",
                    left=[_rtml("HighRiskShare", "stream", cloudwatch.Stats.AVERAGE, FIVE_MINUTES)],
                    right=[_rtml("ScoreMean", "stream", cloudwatch.Stats.AVERAGE, FIVE_MINUTES)],
                    width=12,
                ),
            ],
            [
                cloudwatch.GraphWidget(
                    title="Model version in service (predictions per version)",
                    left=[
                        cloudwatch.MathExpression(
                            expression=(
                                f'SEARCH(\'Namespace="{METRICS_NAMESPACE}" '
                                f"MetricName=\"Predictions\"', 'Sum', 300)"
                            ),
                            label="",
                            period=FIVE_MINUTES,
                        )
                    ],
                    width=12,
                ),
                cloudwatch.GraphWidget(
                    title="Dead letters and failed batches",
                    left=[
                        stream.dead_letters.metric_approximate_number_of_messages_visible(
                            period=FIVE_MINUTES
                        ).with_(label="poison records"),
                        stream.failed_batches.metric_approximate_number_of_messages_visible(
                            period=FIVE_MINUTES
                        ).with_(label="failed batches"),
                    ],
                    width=12,
                ),
            ],
            [
                cloudwatch.GraphWidget(
                    title="Batch runs",
                    left=[
                        batch.state_machine.metric_succeeded(period=day).with_(label="succeeded"),
                        batch.state_machine.metric_failed(period=day).with_(label="failed"),
                        batch.state_machine.metric_timed_out(period=day).with_(label="timed out"),
                    ],
                    width=8,
                ),
                cloudwatch.GraphWidget(
                    title="Largest PSI (monitor, batch)",
                    left=[
                        _rtml("MonitorMaxPsi", "monitor", cloudwatch.Stats.MAXIMUM, day),
                        _rtml("BatchMaxPsi", "batch", cloudwatch.Stats.MAXIMUM, day),
                    ],
                    left_annotations=[
                        cloudwatch.HorizontalAnnotation(
                            value=settings.monitor.thresholds.alarm, label="alarm"
                        )
                    ],
                    width=8,
                ),
                cloudwatch.GraphWidget(
                    title="Daily AP and CP@100 (labels a week late)",
                    left=[
                        _rtml("LabelledAP", "batch", cloudwatch.Stats.MAXIMUM, day),
                        _rtml("LabelledCP100", "batch", cloudwatch.Stats.MAXIMUM, day),
                    ],
                    left_annotations=[
                        cloudwatch.HorizontalAnnotation(
                            value=settings.monitor.thresholds.ap_floor, label="AP floor"
                        )
                    ],
                    width=8,
                ),
            ],
            [cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms), width=24)],
        ]
        return cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"rtml-{settings.stage_name}",
            widgets=widgets,
            default_interval=cdk.Duration.days(7),
        )
